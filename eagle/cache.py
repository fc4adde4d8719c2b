"""The on-disk blob cache shared by agents, proxies and seeders.

Layout under the cache directory::

    blobs/<sha256 hex>      verified blobs only: a file here is always complete
    torrents/<sha256 hex>   the blob's torrent metainfo, when it has one
    incoming/               blobs being fetched over HTTP; emptied at start
    partial/<hex>           a swarm download's file, pieces verified by libtorrent
    partial/<hex>.resume    its libtorrent resume data: the pieces it has

A blob is stored once, whatever repositories refer to it, since it is keyed by
digest alone. Files reach ``blobs/`` by an atomic rename after verification, so a
crash leaves at worst a stray file in ``incoming/``, and a partial swarm download
in ``partial/``, which is never served from there: a later download of the blob
goes on from it, and only the whole blob, checked against its digest, moves on.
"""

import errno
import os
import shutil
import time
from collections.abc import Callable

from twisted.logger import Logger

from eagle.lru import LRUAccounting

# Partial swarm downloads nobody asked for again in this long are dropped.
PARTIAL_MAX_AGE = 24 * 3600


class BlobCache:
    log = Logger()

    def __init__(
        self,
        directory: str,
        max_bytes: int,
        on_evict: Callable[[str], None] = lambda hex_: None,
        in_use: Callable[[str], bool] = lambda hex_: False,
    ):
        """``on_evict(hex)`` is told of each blob evicted (to stop seeding it);
        ``in_use(hex)`` spares blobs busy beyond the pins (peers downloading)."""
        self.directory = directory
        self.blobs = os.path.join(directory, "blobs")
        self.torrents = os.path.join(directory, "torrents")
        self.incoming = os.path.join(directory, "incoming")
        self.partial = os.path.join(directory, "partial")
        self.lru = LRUAccounting(max_bytes)
        self.on_evict = on_evict
        self.in_use = in_use
        for path in (self.blobs, self.torrents, self.incoming, self.partial):
            os.makedirs(path, exist_ok=True)
        self._load()

    def _load(self) -> None:
        """Rebuild the accounting from disk, oldest access first."""
        shutil.rmtree(self.incoming)
        os.makedirs(self.incoming)
        self._prune_partial()
        entries = []
        for entry in os.scandir(self.blobs):
            if entry.is_file():
                st = entry.stat()
                entries.append((st.st_atime, entry.name, st.st_size))
        for _, hex_, size in sorted(entries):
            self.lru.add(hex_, size)
        self.log.info(
            "cache {directory} holds {count} blobs, {total} bytes",
            directory=self.directory,
            count=len(self.lru),
            total=self.lru.total,
        )
        self.evict()

    def _prune_partial(self) -> None:
        """Drop partial downloads left too long, and those of blobs we have.

        Known shortcoming: the partial downloads kept do not count against
        ``max_bytes`` until they are asked for again (then they are reserved)."""
        now = time.time()
        kept = 0
        for entry in os.scandir(self.partial):
            hex_ = entry.name.split(".", 1)[0]
            stale = now - entry.stat().st_mtime > PARTIAL_MAX_AGE
            if stale or os.path.exists(self.blob_path(hex_)):
                _remove(entry.path)
            elif "." not in entry.name:
                kept += 1
        if kept:
            self.log.info("{count} partial swarm downloads kept to resume", count=kept)

    def partial_path(self, hex_: str) -> str:
        return os.path.join(self.partial, hex_)

    def load_resume(self, hex_: str) -> bytes:
        """A partial download's resume data; empty when there is none."""
        try:
            with open(self.partial_path(hex_) + ".resume", "rb") as f:
                return f.read()
        except FileNotFoundError:
            return b""

    def save_resume(self, hex_: str, data: bytes) -> None:
        path = self.partial_path(hex_) + ".resume"
        with open(path + ".tmp", "wb") as f:
            f.write(data)
        os.replace(path + ".tmp", path)

    def drop_partial(self, hex_: str) -> None:
        """Forget a partial download: its resume data, and its file if left."""
        for suffix in ("", ".resume", ".resume.tmp"):
            _remove(self.partial_path(hex_) + suffix)

    def blob_path(self, hex_: str) -> str:
        return os.path.join(self.blobs, hex_)

    def torrent_path(self, hex_: str) -> str:
        return os.path.join(self.torrents, hex_)

    def incoming_path(self, hex_: str, suffix: str) -> str:
        return os.path.join(self.incoming, f"{hex_}.{suffix}")

    def has(self, hex_: str) -> bool:
        return hex_ in self.lru

    def size(self, hex_: str) -> int:
        return os.path.getsize(self.blob_path(hex_))

    def touch(self, hex_: str) -> None:
        if hex_ in self.lru:
            self.lru.touch(hex_)
            # The access time orders the rebuild after a restart (file systems
            # mounted noatime or relatime would not keep it for us).
            try:
                path = self.blob_path(hex_)
                os.utime(path, (time.time(), os.stat(path).st_mtime))
            except OSError:
                pass

    def pin(self, hex_: str) -> None:
        self.lru.pin(hex_)

    def unpin(self, hex_: str) -> None:
        self.lru.unpin(hex_)
        self.evict()  # what the pin held over budget may go now

    def commit(self, hex_: str, path: str) -> str:
        """Move a verified blob from ``path`` into the cache and return its path."""
        final = self.blob_path(hex_)
        if os.path.abspath(path) != final:
            os.replace(path, final)
        self.lru.add(hex_, os.path.getsize(final))
        self.evict()
        return final

    def committed_in_place(self, hex_: str) -> None:
        """Account a blob that another component (libtorrent) moved into place."""
        self.lru.add(hex_, os.path.getsize(self.blob_path(hex_)))
        self.evict()

    def save_torrent(self, hex_: str, data: bytes) -> None:
        tmp = self.incoming_path(hex_, "torrent")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, self.torrent_path(hex_))
        except OSError:
            _remove(tmp)
            raise

    def load_torrent(self, hex_: str) -> bytes | None:
        try:
            with open(self.torrent_path(hex_), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def reserve(self, size: int) -> None:
        """Make room for ``size`` bytes about to be written; raise DiskFull if
        the disk has not that much free space even so.

        Known shortcoming: fetches already under way are not counted, so two at
        once may each pass and one run out of space part way; that one fails,
        and its file goes."""
        self.evict(size)
        free = self.free_bytes()
        if free < size:
            raise DiskFull(size, free)

    def free_bytes(self) -> int:
        """Free space for us on the cache's file system."""
        st = os.statvfs(self.directory)
        return st.f_bavail * st.f_frsize

    def evict(self, incoming: int = 0) -> None:
        for hex_ in self.lru.victims(incoming, self.in_use):
            self._drop(hex_)

    def evict_blob(self, hex_: str) -> bool:
        """Evict one cached blob now, unless it is in use (then False)."""
        if self.lru.pinned(hex_) or self.in_use(hex_):
            return False
        if hex_ in self.lru:
            self._drop(hex_)
        return True

    def _drop(self, hex_: str) -> None:
        self.lru.remove(hex_)
        self.on_evict(hex_)
        _remove(self.blob_path(hex_))
        _remove(self.torrent_path(hex_))
        self.log.info("evicted blob {digest}", digest="sha256:" + hex_)

    def list(self) -> list[str]:
        return self.lru.keys()


class DiskFull(OSError):
    """Not enough free disk space for a blob."""

    def __init__(self, needed: int, free: int):
        super().__init__(errno.ENOSPC, f"{needed} bytes needed, {free} free")
        self.needed = needed
        self.free = free


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
