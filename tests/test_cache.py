"""The on-disk blob cache: commits, rebuild after a restart, eviction with pins."""

import hashlib
import os
import time

from twisted.trial.unittest import SynchronousTestCase

from eagle.cache import PARTIAL_MAX_AGE, BlobCache


def hex_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class BlobCacheTests(SynchronousTestCase):
    def setUp(self):
        self.directory = self.mktemp()
        self.evicted = []

    def cache(self, max_bytes: int = 1000) -> BlobCache:
        return BlobCache(self.directory, max_bytes, on_evict=self.evicted.append)

    def put(self, cache: BlobCache, data: bytes, torrent: bytes | None = None) -> str:
        """Write a blob into incoming/ and commit it, as a fetch does."""
        hex_ = hex_of(data)
        path = cache.incoming_path(hex_, "part")
        with open(path, "wb") as f:
            f.write(data)
        if torrent is not None:
            cache.save_torrent(hex_, torrent)
        self.assertEqual(cache.commit(hex_, path), cache.blob_path(hex_))
        return hex_

    def files(self, *parts: str) -> list[str]:
        return sorted(os.listdir(os.path.join(self.directory, *parts)))

    def test_layout(self):
        """A new cache makes its four directories and holds nothing."""
        cache = self.cache()
        self.assertEqual(self.files(), ["blobs", "incoming", "partial", "torrents"])
        self.assertEqual((cache.list(), cache.lru.total), ([], 0))

    def test_commit(self):
        """A committed blob moves from incoming/ to blobs/ and is accounted."""
        cache = self.cache()
        hex_ = self.put(cache, b"x" * 100)
        self.assertTrue(cache.has(hex_))
        self.assertEqual(cache.size(hex_), 100)
        self.assertEqual(cache.lru.total, 100)
        self.assertEqual(self.files("blobs"), [hex_])
        self.assertEqual(self.files("incoming"), [])
        with open(cache.blob_path(hex_), "rb") as f:
            self.assertEqual(f.read(), b"x" * 100)

    def test_stored_once(self):
        """The same blob committed twice is one file, counted once."""
        cache = self.cache()
        hex_ = self.put(cache, b"shared layer")
        self.assertEqual(self.put(cache, b"shared layer"), hex_)
        self.assertEqual(cache.list(), [hex_])
        self.assertEqual(cache.lru.total, len(b"shared layer"))

    def test_committed_in_place(self):
        """A blob another component moved into blobs/ is accounted."""
        cache = self.cache()
        hex_ = hex_of(b"moved")
        with open(cache.blob_path(hex_), "wb") as f:
            f.write(b"moved")
        cache.committed_in_place(hex_)
        self.assertEqual((cache.list(), cache.lru.total), ([hex_], 5))

    def test_torrents(self):
        """A saved torrent reads back; a missing one reads as None."""
        cache = self.cache()
        cache.save_torrent("ab" * 32, b"d4:infodee")
        self.assertEqual(cache.load_torrent("ab" * 32), b"d4:infodee")
        self.assertIsNone(cache.load_torrent("cd" * 32))
        self.assertEqual(self.files("incoming"), [])

    def test_rebuild(self):
        """After a restart the cache holds what is on disk, oldest access first."""
        cache = self.cache()
        old = self.put(cache, b"a" * 100)
        new = self.put(cache, b"b" * 200)
        os.utime(cache.blob_path(old), (1000, 1000))
        os.utime(cache.blob_path(new), (2000, 2000))
        again = self.cache()
        self.assertEqual(again.list(), [old, new])
        self.assertEqual(again.lru.total, 300)
        self.assertEqual(again.size(new), 200)
        self.assertEqual(self.evicted, [])

    def test_incoming_emptied(self):
        """Partial files left in incoming/ by a crash are removed at start."""
        cache = self.cache()
        for name in ["dead.part", "beef.torrent"]:
            with open(os.path.join(cache.incoming, name), "wb") as f:
                f.write(b"partial")
        again = self.cache()
        self.assertEqual(self.files("incoming"), [])
        self.assertEqual(again.list(), [])

    def test_partial_kept_until_stale(self):
        """Partial swarm downloads and their resume data survive a restart; they
        go once a day old, or once their blob is complete, and are never blobs."""
        cache = self.cache()
        fresh, old, done = "aa" * 32, "bb" * 32, hex_of(b"done")
        for hex_ in (fresh, old):
            with open(cache.partial_path(hex_), "wb") as f:
                f.write(b"some pieces")
            cache.save_resume(hex_, b"d6:piecese")
        with open(cache.partial_path(done), "wb") as f:
            f.write(b"do")
        self.put(cache, b"done")
        day_ago = time.time() - PARTIAL_MAX_AGE - 10
        for name in (old, old + ".resume"):
            os.utime(os.path.join(cache.partial, name), (day_ago, day_ago))
        again = self.cache()
        self.assertEqual(self.files("partial"), [fresh, fresh + ".resume"])
        self.assertEqual(again.load_resume(fresh), b"d6:piecese")
        self.assertEqual(again.load_resume(old), b"")
        self.assertEqual(again.list(), [done])
        again.drop_partial(fresh)
        self.assertEqual(self.files("partial"), [])

    def test_eviction(self):
        """Going over budget evicts the least recently used blob: its file and
        torrent go, and on_evict hears of it first."""
        cache = self.cache(max_bytes=250)
        first = self.put(cache, b"1" * 100, torrent=b"t1")
        second = self.put(cache, b"2" * 100, torrent=b"t2")
        cache.touch(first)
        third = self.put(cache, b"3" * 100)
        self.assertEqual(self.evicted, [second])
        self.assertFalse(cache.has(second))
        self.assertEqual(cache.list(), [first, third])
        self.assertEqual(self.files("blobs"), sorted([first, third]))
        self.assertEqual(self.files("torrents"), [first])
        self.assertEqual(cache.lru.total, 200)

    def test_on_evict_before_removal(self):
        """on_evict runs while the file is still there, so a seed can stop first."""
        seen = []
        cache = BlobCache(
            self.directory,
            100,
            on_evict=lambda hex_: seen.append(os.path.exists(cache.blob_path(hex_))),
        )
        self.put(cache, b"a" * 100)
        self.put(cache, b"b" * 100)
        self.assertEqual(seen, [True])

    def test_pinned_survives(self):
        """A pinned blob is not evicted; the next one in line goes instead."""
        cache = self.cache(max_bytes=250)
        first = self.put(cache, b"1" * 100)
        second = self.put(cache, b"2" * 100)
        cache.pin(first)
        self.put(cache, b"3" * 100)
        self.assertEqual(self.evicted, [second])
        self.assertTrue(cache.has(first))
        self.assertTrue(os.path.exists(cache.blob_path(first)))
        cache.unpin(first)
        self.put(cache, b"4" * 100)
        self.assertEqual(self.evicted, [second, first])

    def test_all_pinned(self):
        """When everything is pinned the cache goes over budget rather than evict."""
        cache = self.cache(max_bytes=100)
        first = self.put(cache, b"1" * 100)
        cache.pin(first)
        cache.pin(hex_of(b"2" * 100))
        self.put(cache, b"2" * 100)
        self.assertEqual(self.evicted, [])
        self.assertEqual(cache.lru.total, 200)

    def test_reserve(self):
        """Reserving room for an incoming blob evicts ahead of the download."""
        cache = self.cache(max_bytes=300)
        first = self.put(cache, b"1" * 100)
        self.put(cache, b"2" * 100)
        cache.reserve(100)
        self.assertEqual(self.evicted, [])
        cache.reserve(101)
        self.assertEqual(self.evicted, [first])

    def test_rebuild_over_budget(self):
        """A cache restarted with a smaller budget evicts its oldest blobs."""
        cache = self.cache()
        old = self.put(cache, b"a" * 100)
        new = self.put(cache, b"b" * 100)
        os.utime(cache.blob_path(old), (1000, 1000))
        os.utime(cache.blob_path(new), (2000, 2000))
        again = self.cache(max_bytes=150)
        self.assertEqual(self.evicted, [old])
        self.assertEqual(again.list(), [new])
        self.assertEqual(self.files("blobs"), [new])

    def test_in_use_spared(self):
        """A blob peers are downloading (in_use) is passed over for the next in
        line, and goes at the first eviction after they left."""
        busy = set()
        cache = BlobCache(
            self.directory, 250, on_evict=self.evicted.append, in_use=busy.__contains__
        )
        first = self.put(cache, b"1" * 100)
        busy.add(first)
        second = self.put(cache, b"2" * 100)
        third = self.put(cache, b"3" * 100)
        self.assertEqual(self.evicted, [second])
        busy.clear()
        cache.lru.max_bytes = 150
        cache.evict()
        self.assertEqual(self.evicted, [second, first])
        self.assertEqual(cache.list(), [third])

    def test_use_order_survives_restart(self):
        """A blob used lately is kept over an older one after a restart."""
        cache = self.cache()
        old = self.put(cache, b"a" * 100)
        new = self.put(cache, b"b" * 100)
        for hex_ in (old, new):
            os.utime(cache.blob_path(hex_), (1000, 1000))
        cache.touch(old)
        again = self.cache(max_bytes=150)
        self.assertEqual(self.evicted, [new])
        self.assertEqual(again.list(), [old])
