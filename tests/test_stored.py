"""A seeder's blobs from its storage, else the origin and then into storage: the
logic of ``StoredSource``, over memory storage, with a fake clock and origin."""

import hashlib
import os

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from eagle.blobs import Blobs
from eagle.cache import BlobCache
from eagle.digest import Digest
from eagle.seeder import STORE_RETRIES, StoredSource
from eagle.storage import Storage, StorageUnavailable
from eagle.storage.memory import MemoryStorage
from eagle.transfer import Transfer
from eagle.upstream import BlobRef, Upstream

DATA = os.urandom(300_000)
HEX = hashlib.sha256(DATA).hexdigest()
REF = BlobRef(Upstream("origin.test", "http://origin.test"), "r", Digest("sha256", HEX))


class FlakyStorage(MemoryStorage):
    """Memory storage that can be made unreachable, counting writes tried."""

    def __init__(self):
        super().__init__()
        self.down = False
        self.writes = 0

    def stat(self, hex_):
        if self.down:
            raise StorageUnavailable("storage down")
        return super().stat(hex_)

    def write(self, hex_, chunks):
        self.writes += 1
        if self.down:
            raise StorageUnavailable("storage down")
        super().write(hex_, chunks)


class FakeOrigin:
    """Hands out transfers that the test completes."""

    def __init__(self, cache: BlobCache):
        self.cache = cache
        self.transfers = []

    async def start(self, ref):
        path = self.cache.incoming_path(ref.hex, "origin")
        transfer = Transfer(str(ref.digest), len(DATA), path, "origin")
        self.transfers.append(transfer)
        return transfer

    def finish(self):
        transfer = self.transfers[-1]
        with open(transfer.path, "wb") as f:
            f.write(DATA)
        transfer.succeed(self.cache.commit(HEX, transfer.path))


class StoredSourceTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.cache = BlobCache(self.mktemp(), 10 * len(DATA))
        self.backend = FlakyStorage()
        storage = Storage(self.backend, maybeDeferred, lambda f, *a: f(*a))
        self.origin = FakeOrigin(self.cache)
        self.source = StoredSource(storage, self.origin, self.cache, self.clock)
        self.blobs = Blobs(self.cache, self.source)

    def open(self) -> Transfer:
        return self.successResultOf(Deferred.fromCoroutine(self.blobs.open(REF)))

    def test_from_storage(self):
        """A blob in storage comes from there, verified, and the origin is not
        asked."""
        self.backend.blobs[HEX] = DATA
        transfer = self.open()
        self.assertTrue(transfer.verified)
        self.assertEqual(transfer.source, "storage")
        self.assertEqual(self.origin.transfers, [])
        with open(self.cache.blob_path(HEX), "rb") as f:
            self.assertEqual(f.read(), DATA)

    def test_from_origin_then_stored(self):
        """A blob storage lacks comes from the origin and then goes into storage."""
        transfer = self.open()
        self.assertEqual(transfer.source, "origin")
        self.origin.finish()
        self.assertEqual(self.backend.blobs, {HEX: DATA})
        self.assertFalse(self.cache.lru.pinned(HEX))

    def test_corrupt_storage(self):
        """Bytes in storage that do not match the digest fail the transfer and
        leave nothing in the cache."""
        self.backend.blobs[HEX] = DATA[:-1] + b"x"
        transfer = self.open()
        self.assertIsNotNone(transfer.failure)
        self.assertFalse(self.cache.has(HEX))
        self.assertEqual(os.listdir(self.cache.incoming), [])

    def test_storage_down(self):
        """With the storage down the origin serves; storing is retried a bounded
        number of times, the blob pinned meanwhile, then given up and unpinned."""
        self.backend.down = True
        self.open()
        self.origin.finish()
        self.assertTrue(self.cache.has(HEX))
        self.assertTrue(self.cache.lru.pinned(HEX))
        for delay in STORE_RETRIES:
            self.clock.advance(delay)
        self.assertEqual(self.backend.writes, 0)  # stat failed first each time
        self.assertFalse(self.cache.lru.pinned(HEX))
        self.assertEqual(self.source.storing, set())
        self.clock.advance(3600)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_storage_back(self):
        """A storage that comes back during the retries gets the blob."""
        self.backend.down = True
        self.open()
        self.origin.finish()
        self.clock.advance(STORE_RETRIES[0])
        self.backend.down = False
        self.clock.advance(STORE_RETRIES[1])
        self.assertEqual(self.backend.blobs, {HEX: DATA})
        self.assertFalse(self.cache.lru.pinned(HEX))

    def test_keep_all(self):
        """After a restart, cached blobs that storage lacks are stored."""
        self.backend.blobs[HEX] = DATA
        self.open()
        self.backend.blobs.clear()
        self.successResultOf(Deferred.fromCoroutine(self.source.keep_all()))
        self.assertEqual(self.backend.blobs, {HEX: DATA})
