"""Seeder storage backends: the same contract for the file system, memory and a
real S3-compatible server (moto), and the adapter that verifies blobs both ways."""

from __future__ import annotations

import hashlib
import os
import time

from twisted.internet.defer import maybeDeferred
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from eagle.lab.s3 import S3Server, moto_server
from eagle.storage import (
    BlobNotFound,
    DigestMismatch,
    IBlobStorage,
    Storage,
    StorageUnavailable,
    verified,
)
from eagle.storage.filesystem import FileStorage
from eagle.storage.memory import MemoryStorage
from eagle.storage.s3 import MIN_PART_SIZE, S3Storage
from tests.test_lab import LabTestCase

MiB = 1 << 20


def blob(size: int) -> tuple[str, bytes]:
    data = os.urandom(size)
    return hashlib.sha256(data).hexdigest(), data


def chunked(data: bytes, size: int = 256 * 1024):
    for i in range(0, len(data), size):
        yield data[i : i + size]


def failing_after(data: bytes, count: int):
    """A stream that breaks after ``count`` chunks, like a dropped connection."""
    for i, chunk in enumerate(chunked(data, MiB)):
        if i == count:
            raise ConnectionError("stream cut short")
        yield chunk


def read_all(stream) -> bytes:
    try:
        parts = []
        while chunk := stream.read(64 * 1024):
            parts.append(chunk)
        return b"".join(parts)
    finally:
        stream.close()


class ContractMixin:
    """What every backend must do; ``make()`` gives a fresh one and
    ``leftovers()`` whatever a failed write could have left behind."""

    def test_interface(self):
        """The backend provides IBlobStorage."""
        self.assertTrue(verifyObject(IBlobStorage, self.make()))

    def test_round_trip(self):
        """A blob written is stat'ed, listed, read whole and in ranges, deleted."""
        storage = self.make()
        hex_, data = blob(3 * MiB + 17)
        self.assertIsNone(storage.stat(hex_))
        storage.write(hex_, verified(chunked(data), hex_))
        self.assertEqual(storage.stat(hex_), len(data))
        self.assertEqual(list(storage.list()), [hex_])
        self.assertEqual(read_all(storage.open(hex_, 0, None)), data)
        self.assertEqual(read_all(storage.open(hex_, 100, None)), data[100:])
        self.assertEqual(read_all(storage.open(hex_, 5, 1000)), data[5:1005])
        storage.delete(hex_)
        storage.delete(hex_)  # deleting what is gone is no error
        self.assertIsNone(storage.stat(hex_))
        self.assertEqual(list(storage.list()), [])

    def test_absent_blob(self):
        """Opening a blob that is not stored raises BlobNotFound."""
        self.assertRaises(BlobNotFound, self.make().open, "0" * 64, 0, None)

    def test_digest_mismatch_stores_nothing(self):
        """Bytes that do not match the digest are refused and leave nothing."""
        storage = self.make()
        hex_, data = blob(MiB)
        wrong = data[:-1] + bytes([data[-1] ^ 1])
        with self.assertRaises(DigestMismatch):
            storage.write(hex_, verified(chunked(wrong), hex_))
        self.assertIsNone(storage.stat(hex_))
        self.assertEqual(list(storage.list()), [])
        self.assertEqual(self.leftovers(), [])

    def test_interrupted_write_stores_nothing(self):
        """A stream that fails part way leaves no blob and nothing pending."""
        storage = self.make()
        hex_, data = blob(3 * MiB)
        with self.assertRaises(ConnectionError):
            storage.write(hex_, verified(failing_after(data, 2), hex_))
        self.assertIsNone(storage.stat(hex_))
        self.assertEqual(self.leftovers(), [])


class MemoryStorageTests(ContractMixin, SynchronousTestCase):
    def make(self):
        return MemoryStorage()

    def leftovers(self):
        return []


class FileStorageTests(ContractMixin, LabTestCase):
    def make(self):
        self.directory = self.tmpdir()
        return FileStorage(str(self.directory))

    def leftovers(self):
        return os.listdir(self.directory / "incoming")

    def test_names_are_checked(self):
        """Only sha256 hex names reach the file system."""
        storage = self.make()
        for bad in ("../../etc/passwd", "A" * 64, "0" * 63):
            self.assertRaises(ValueError, storage.stat, bad)
            self.assertRaises(ValueError, storage.write, bad, [b"x"])


class S3StorageTests(ContractMixin, LabTestCase):
    """Against moto's S3 server, started for each test."""

    def setUp(self):
        if moto_server() is None:
            self.need("moto_server")
        self.server = self.start(S3Server(self.tmpdir() / "s3"))
        self.bucket = self.server.create_bucket("eagle-blobs")

    def make(self, part_size: int = MIN_PART_SIZE):
        return S3Storage(self.server.client(), self.bucket, "seeders/", part_size)

    def leftovers(self):
        return self.server.pending_uploads(self.bucket)

    def test_multipart(self):
        """A blob over the part size goes up in parts and reads back whole; its
        key is under the prefix."""
        storage = self.make()
        hex_, data = blob(2 * MIN_PART_SIZE + 3 * MiB)
        storage.write(hex_, verified(chunked(data), hex_))
        self.assertEqual(storage.stat(hex_), len(data))
        key = f"seeders/blobs/sha256/{hex_}"
        self.assertEqual(self.server.keys(self.bucket), [key])
        etag = self.server.client().head_object(Bucket=self.bucket, Key=key)["ETag"]
        self.assertTrue(etag.strip('"').endswith("-3"), etag)  # three parts
        self.assertEqual(read_all(storage.open(hex_, 0, None)), data)
        self.assertEqual(self.leftovers(), [])

    def test_interrupted_multipart_leaves_nothing(self):
        """A multipart upload cut short after parts went up is aborted: no object
        and no pending upload stay behind; nor for a digest mismatch."""
        storage = self.make()
        hex_, data = blob(3 * MIN_PART_SIZE)
        with self.assertRaises(ConnectionError):
            storage.write(hex_, verified(failing_after(data, 11), hex_))
        self.assertEqual((self.server.keys(self.bucket), self.leftovers()), ([], []))
        with self.assertRaises(DigestMismatch):
            storage.write(hex_, verified(chunked(data + b"x"), hex_))
        self.assertEqual((self.server.keys(self.bucket), self.leftovers()), ([], []))

    def test_storage_down(self):
        """With the S3 server gone every call fails soon with StorageUnavailable
        naming the bucket."""
        storage = self.make()
        hex_, data = blob(1000)
        self.server.stop()
        for call in (
            lambda: storage.stat(hex_),
            lambda: storage.open(hex_, 0, None),
            lambda: storage.write(hex_, verified([data], hex_)),
            lambda: list(storage.list()),
        ):
            started = time.monotonic()
            with self.assertRaises(StorageUnavailable) as caught:
                call()
            self.assertIn("eagle-blobs", str(caught.exception))
            self.assertLess(time.monotonic() - started, 10)

    def test_missing_bucket(self):
        """A bucket that does not exist is a StorageUnavailable, not a crash."""
        storage = S3Storage(self.server.client(), "no-such-bucket")
        with self.assertRaises(StorageUnavailable):
            storage.write("0" * 64, [b""])


class StorageAdapterTests(SynchronousTestCase):
    """``Storage`` over the memory backend, with calls run inline."""

    def setUp(self):
        self.backend = MemoryStorage()
        self.storage = Storage(self.backend, maybeDeferred, lambda f, *a: f(*a))
        self.directory = self.mktemp()
        os.makedirs(self.directory)

    def path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def test_store_and_fetch(self):
        """A local file goes into storage and comes back, with progress reports."""
        hex_, data = blob(3 * MiB)
        with open(self.path("in"), "wb") as f:
            f.write(data)
        self.successResultOf(self.storage.store(hex_, self.path("in")))
        self.assertEqual(self.successResultOf(self.storage.stat(hex_)), len(data))
        seen = []
        size = self.successResultOf(
            self.storage.fetch(hex_, self.path("out"), seen.append)
        )
        self.assertEqual(size, len(data))
        self.assertEqual(seen[-1], len(data))
        with open(self.path("out"), "rb") as f:
            self.assertEqual(f.read(), data)
        self.assertEqual(self.successResultOf(self.storage.list()), [hex_])

    def test_store_refuses_wrong_file(self):
        """A file that is not the blob named is not stored."""
        hex_, _ = blob(10)
        with open(self.path("in"), "wb") as f:
            f.write(b"something else")
        self.failureResultOf(self.storage.store(hex_, self.path("in")), DigestMismatch)
        self.assertEqual(self.backend.blobs, {})

    def test_fetch_of_corrupt_blob(self):
        """A blob the storage changed fails its check and leaves no local file."""
        hex_, data = blob(1000)
        self.backend.blobs[hex_] = data[:-1]
        self.failureResultOf(self.storage.fetch(hex_, self.path("out")), DigestMismatch)
        self.assertFalse(os.path.exists(self.path("out")))

    def test_fetch_of_absent_blob(self):
        """An absent blob fails with BlobNotFound and leaves no local file."""
        self.failureResultOf(
            self.storage.fetch("0" * 64, self.path("out")), BlobNotFound
        )
        self.assertFalse(os.path.exists(self.path("out")))

    def test_bad_names(self):
        """Names that are not sha256 hex are refused before any backend call."""
        for call in (self.storage.stat, self.storage.delete):
            self.assertRaises(ValueError, call, "../x")
