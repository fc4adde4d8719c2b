"""Counting who sent a blob's bytes, from libtorrent's block alerts."""

from types import SimpleNamespace

from twisted.trial.unittest import TestCase

from eagle.swarm import AGENT_PEER_ID, BLOCK, SEEDER_PEER_ID, Swarm, _Torrent


def _pid(peer_id: str):
    return SimpleNamespace(to_bytes=lambda: peer_id.encode() + b"x" * 12)


class SenderCountTests(TestCase):
    def setUp(self):
        self.swarm = Swarm(reactor=None)
        # Two pieces of two blocks each; the last block is 100 bytes short.
        self.torrent = _Torrent(
            handle=None,
            blob="b",
            piece_length=2 * BLOCK,
            size=4 * BLOCK - 100,
            checked=set(),  # nothing was on disk
        )
        self.swarm._torrent_of = lambda alert: self.torrent

    def test_pieces_found_on_disk_not_counted(self):
        """Pieces libtorrent found on disk, which it reports as finished too,
        are not counted as received, nor those reported before the check."""
        self.torrent.on_piece = lambda piece: None
        self.torrent.handle = SimpleNamespace(flush_cache=lambda: None)
        self.torrent.checked = None
        self.swarm._on_piece_finished_alert(SimpleNamespace(piece_index=0))
        self.torrent.checked = {0}
        self.swarm._on_piece_finished_alert(SimpleNamespace(piece_index=0))
        self.assertEqual(self.torrent.received, {"seeder": 0, "peer": 0})
        self.assertEqual(self.torrent.unflushed, [])

    def test_blocks_nobody_sent_after_resume(self):
        """In a download added with resume data, blocks of a piece that nobody
        was asked for were in the file already: resumed, not received."""
        self.torrent.resumed = True
        self.swarm._on_block_downloading_alert(self.alert(0, 1, SEEDER_PEER_ID))
        self.swarm._count_piece(self.torrent, 0)
        self.assertEqual(
            self.torrent.received, {"seeder": BLOCK, "peer": 0, "resumed": BLOCK}
        )

    def alert(self, piece, block, peer_id):
        return SimpleNamespace(piece_index=piece, block_index=block, pid=_pid(peer_id))

    def test_counted_per_piece_by_sender(self):
        """A block counts for the peer that finished it, else the one it was last
        asked of; nothing counts before its piece passed; totals are the size."""
        swarm = self.swarm
        swarm._on_block_downloading_alert(self.alert(0, 0, SEEDER_PEER_ID))
        swarm._on_block_finished_alert(self.alert(0, 0, AGENT_PEER_ID))
        swarm._on_block_downloading_alert(self.alert(0, 0, SEEDER_PEER_ID))
        swarm._on_block_downloading_alert(self.alert(0, 1, AGENT_PEER_ID))
        swarm._on_block_downloading_alert(self.alert(0, 1, SEEDER_PEER_ID))
        swarm._on_block_downloading_alert(self.alert(1, 0, AGENT_PEER_ID))
        swarm._on_block_downloading_alert(self.alert(1, 1, SEEDER_PEER_ID))
        self.assertEqual(self.torrent.received, {"seeder": 0, "peer": 0})
        self.torrent.on_piece = lambda piece: None
        self.torrent.handle = SimpleNamespace(flush_cache=lambda: None)
        swarm._on_piece_finished_alert(SimpleNamespace(piece_index=0))
        self.assertEqual(self.torrent.received, {"seeder": BLOCK, "peer": BLOCK})
        swarm._on_piece_finished_alert(SimpleNamespace(piece_index=1))
        self.assertEqual(
            self.torrent.received, {"seeder": 2 * BLOCK - 100, "peer": 2 * BLOCK}
        )
        self.assertEqual(self.torrent.senders, {})
