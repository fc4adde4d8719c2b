"""Where seeders keep blobs for good: a small interface, several backends.

A backend is a plain blocking class with five methods (``IBlobStorage``); it never
sees the reactor. ``Storage`` runs its calls in a thread pool the daemon owns and
does the parts every backend would otherwise repeat: checking names, verifying
sha256 on the way in and on the way out, and copying to and from local files in
chunks, so that no blob is ever held in memory whole.

Backends: ``FileStorage`` (a directory), ``S3Storage`` (boto3) and
``MemoryStorage`` (a dict, for tests and as the example of a new backend).
"""

import hashlib
import os
import re
import secrets
from collections.abc import Callable, Iterable, Iterator

from twisted.internet.defer import Deferred
from zope.interface import Interface

CHUNK = 1024 * 1024
_HEX = re.compile(r"[0-9a-f]{64}")


class StorageError(Exception):
    """The storage failed; the message says what and where."""


class StorageUnavailable(StorageError):
    """The storage cannot be reached or answers with its own errors."""


class BlobNotFound(StorageError, KeyError):
    """The storage has no such blob."""

    def __str__(self) -> str:
        return f"no blob sha256:{self.args[0]} in storage"


class DigestMismatch(StorageError, ValueError):
    """The bytes given for a blob do not hash to its digest."""


class IBlobStorage(Interface):
    """Blobs by sha256 hex. Blocking: ``Storage`` calls these in threads."""

    def stat(hex_: str) -> int | None:
        """The blob's size, or None when it is not stored."""

    def open(hex_: str, first: int, length: int | None):
        """A stream (``read(n)``, ``close()``) of ``length`` bytes of the blob
        from byte ``first`` (to its end when None); BlobNotFound if absent."""

    def write(hex_: str, chunks: Iterable[bytes]) -> None:
        """Store the blob made of ``chunks``. Nothing becomes visible before the
        iteration ended; if it raises (a failing stream, a digest mismatch), the
        backend removes what it wrote and lets the exception through."""

    def delete(hex_: str) -> None:
        """Remove the blob; nothing happens if it is not stored."""

    def list() -> Iterator[str]:
        """The hex digests of every stored blob."""


def check_hex(hex_: str) -> str:
    """Only a sha256 hex ever becomes part of a key or a file name."""
    if not isinstance(hex_, str) or not _HEX.fullmatch(hex_):
        raise ValueError(f"not a sha256 hex digest: {str(hex_)[:80]!r}")
    return hex_


def verified(chunks: Iterable[bytes], hex_: str) -> Iterator[bytes]:
    """Pass ``chunks`` through and raise DigestMismatch at their end if they do
    not hash to ``hex_``; a backend's write then never commits them."""
    sha256 = hashlib.sha256()
    for chunk in chunks:
        sha256.update(chunk)
        yield chunk
    if sha256.hexdigest() != hex_:
        raise DigestMismatch(
            f"bytes given for sha256:{hex_} hash to {sha256.hexdigest()}"
        )


def file_chunks(f, size: int = CHUNK) -> Iterator[bytes]:
    while chunk := f.read(size):
        yield chunk


class RangeReader:
    """At most ``length`` bytes of a file object from where it stands."""

    def __init__(self, f, length: int | None):
        self._f = f
        self._left = length

    def read(self, n: int = -1) -> bytes:
        if self._left is None:
            return self._f.read(n)
        n = self._left if n is None or n < 0 else min(n, self._left)
        data = self._f.read(n)
        self._left -= len(data)
        return data

    def close(self) -> None:
        self._f.close()


class Storage:
    """A backend seen from the reactor: every call runs in ``run_in_thread``
    (``f, *args -> Deferred``) and answers with a Deferred."""

    def __init__(self, backend: IBlobStorage, run_in_thread, call_from_thread):
        self.backend = backend
        self._run = run_in_thread
        self._call_from_thread = call_from_thread

    def stat(self, hex_: str) -> Deferred:
        return self._run(self.backend.stat, check_hex(hex_))

    def store(self, hex_: str, path: str) -> Deferred:
        """Copy the local file ``path`` into storage as blob ``hex_``; fails with
        DigestMismatch, storing nothing, if the file is not that blob."""
        return self._run(_store, self.backend, check_hex(hex_), path)

    def fetch(
        self, hex_: str, path: str, progress: Callable[[int], None] = lambda n: None
    ) -> Deferred:
        """Copy blob ``hex_`` from storage into the new local file ``path``,
        calling ``progress(bytes written)`` on the reactor thread as it goes.
        Fires with the size; on a digest mismatch or any failure the file is
        removed and the Deferred fails."""

        def report(n: int) -> None:
            self._call_from_thread(progress, n)

        return self._run(_fetch, self.backend, check_hex(hex_), path, report)

    def delete(self, hex_: str) -> Deferred:
        return self._run(self.backend.delete, check_hex(hex_))

    def list(self) -> Deferred:
        return self._run(lambda: sorted(self.backend.list()))


def _store(backend: IBlobStorage, hex_: str, path: str) -> None:
    with open(path, "rb") as f:
        backend.write(hex_, verified(file_chunks(f), hex_))


def _fetch(backend: IBlobStorage, hex_: str, path: str, progress) -> int:
    sha256 = hashlib.sha256()
    written = 0
    try:
        stream = backend.open(hex_, 0, None)
        try:
            with open(path, "xb") as f:
                for chunk in file_chunks(stream):
                    f.write(chunk)
                    sha256.update(chunk)
                    written += len(chunk)
                    f.flush()
                    progress(written)
        finally:
            stream.close()
        if sha256.hexdigest() != hex_:
            # The storage lost or changed bytes: never hand them on as the blob.
            raise DigestMismatch(
                f"storage's sha256:{hex_} hashes to {sha256.hexdigest()}"
            )
    except BaseException:
        _remove(path)
        raise
    return written


def incoming_name(directory: str, hex_: str) -> str:
    return os.path.join(directory, f"{hex_}.{secrets.token_hex(4)}")


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
