"""Deterministic v2 torrents of blobs, and the checks on torrents from seeders."""

import hashlib
import os

import libtorrent as lt
from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from eagle.torrent import (
    MAX_PIECE_LENGTH,
    MIN_PIECE_LENGTH,
    TARGET_PIECES,
    Metainfo,
    make_torrent,
    piece_length,
)

KiB, MiB, GiB = 1024, 1024**2, 1024**3


class PieceLengthTests(SynchronousTestCase):
    def test_small(self):
        """Blobs up to 256 MiB get the smallest pieces."""
        for size in [0, 1, MIN_PIECE_LENGTH, 256 * MiB]:
            self.assertEqual(piece_length(size), MIN_PIECE_LENGTH, size)

    def test_doubles(self):
        """Just past a threshold the piece length doubles."""
        self.assertEqual(piece_length(256 * MiB + 1), 512 * KiB)
        self.assertEqual(piece_length(1 * GiB), 1 * MiB)
        self.assertEqual(piece_length(1 * GiB + 1), 2 * MiB)

    def test_huge(self):
        """Huge blobs stop at 16 MiB pieces and then get more pieces."""
        self.assertEqual(piece_length(16 * GiB), MAX_PIECE_LENGTH)
        self.assertEqual(piece_length(1000 * GiB), MAX_PIECE_LENGTH)

    @given(st.integers(0, 2**45))
    def test_rule(self, size):
        """A power of two within bounds, at most TARGET_PIECES pieces unless at
        the top, and the smallest such length."""
        length = piece_length(size)
        self.assertEqual(length & (length - 1), 0)
        self.assertTrue(MIN_PIECE_LENGTH <= length <= MAX_PIECE_LENGTH)
        if length < MAX_PIECE_LENGTH:
            self.assertLessEqual(-(-size // length), TARGET_PIECES)
        if length > MIN_PIECE_LENGTH:
            self.assertGreater(-(-size // (length // 2)), TARGET_PIECES)

    @given(st.integers(0, 2**44), st.integers(0, 2**44))
    def test_monotonic(self, a, b):
        """A bigger blob never gets smaller pieces."""
        small, big = sorted([a, b])
        self.assertLessEqual(piece_length(small), piece_length(big))


class MakeTorrentTests(SynchronousTestCase):
    def blob(self, data: bytes, directory: str | None = None) -> str:
        directory = directory or self.mktemp()
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, hashlib.sha256(data).hexdigest())
        with open(path, "wb") as f:
            f.write(data)
        return path

    def test_deterministic(self):
        """The same bytes in two directories give the same torrent bytes and
        info-hash."""
        data = os.urandom(MIN_PIECE_LENGTH * 2 + 12345)
        first = make_torrent(self.blob(data))
        second = make_torrent(self.blob(data))
        self.assertEqual(first, second)
        hex_ = hashlib.sha256(data).hexdigest()
        self.assertEqual(
            Metainfo.parse(first, hex_).infohash, Metainfo.parse(second, hex_).infohash
        )

    def test_other_bytes(self):
        """Different bytes give a different info-hash."""
        a, b = b"a" * 1000, b"b" * 1000
        self.assertNotEqual(
            Metainfo.parse(make_torrent(self.blob(a)), hashlib.sha256(a).hexdigest()),
            Metainfo.parse(make_torrent(self.blob(b)), hashlib.sha256(b).hexdigest()),
        )

    def test_parse(self):
        """The metainfo describes the blob: size, piece length, pieces, v2 hash."""
        data = os.urandom(MIN_PIECE_LENGTH * 3 + 1)
        path = self.blob(data)
        metainfo = Metainfo.parse(make_torrent(path), os.path.basename(path))
        self.assertEqual(metainfo.size, len(data))
        self.assertEqual(metainfo.piece_length, MIN_PIECE_LENGTH)
        self.assertEqual(metainfo.num_pieces, 4)
        self.assertRegex(metainfo.infohash, r"\A[0-9a-f]{64}\Z")

    def test_info_has_nothing_else(self):
        """The info dictionary holds no trackers, dates or other host details."""
        path = self.blob(b"layer bytes")
        info = lt.bdecode(make_torrent(path))[b"info"]
        self.assertEqual(
            sorted(info), [b"file tree", b"meta version", b"name", b"piece length"]
        )
        self.assertEqual(info[b"name"], os.path.basename(path).encode())

    def test_garbage(self):
        """Bytes that are not a torrent are a ValueError."""
        for data in [
            b"",
            b"garbage",
            b"i5e",
            b"de",
            b"d4:infod4:name1:xee",
            b"\0" * 64,
        ]:
            self.assertRaises(ValueError, Metainfo.parse, data, "x")

    def test_other_name(self):
        """A torrent of another blob (another name) is refused."""
        path = self.blob(b"one blob")
        data = make_torrent(path)
        error = self.assertRaises(ValueError, Metainfo.parse, data, "0" * 64)
        self.assertIn("exactly the one blob", str(error))

    def test_v1_refused(self):
        """A BitTorrent v1 torrent of the right file is refused."""
        path = self.blob(b"old style" * 1000)
        directory, name = os.path.split(path)
        creator = lt.create_torrent(
            [lt.create_file_entry(name, os.path.getsize(path))],
            MIN_PIECE_LENGTH,
            lt.create_torrent.v1_only,
        )
        lt.set_piece_hashes(creator, directory)
        data = lt.bencode(creator.generate())
        error = self.assertRaises(ValueError, Metainfo.parse, data, name)
        self.assertIn("v2", str(error))

    def v2_torrent(self, directory: str, files: dict[str, bytes]) -> bytes:
        """A v2 torrent of ``files`` (path inside the torrent: bytes)."""
        entries = []
        for name, data in files.items():
            path = os.path.join(directory, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(data)
            entries.append(lt.create_file_entry(name, len(data)))
        creator = lt.create_torrent(
            entries, MIN_PIECE_LENGTH, lt.create_torrent.v2_only
        )
        lt.set_piece_hashes(creator, directory)
        return lt.bencode(creator.generate())

    def test_several_files(self):
        """A torrent with more than the one blob in it is refused."""
        hex_ = hashlib.sha256(b"first").hexdigest()
        data = self.v2_torrent(
            self.mktemp(), {f"{hex_}/{hex_}": b"first", f"{hex_}/extra": b"second"}
        )
        self.assertRaises(ValueError, Metainfo.parse, data, hex_)
