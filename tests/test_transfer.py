"""A blob on its way in: the complete prefix of its pieces, readers waiting, and
the bytes streamed to a client."""

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http import Request
from twisted.web.test.requesthelper import DummyChannel

from eagle.streaming import send_body
from eagle.transfer import PieceProgress, Transfer


class PieceProgressTests(SynchronousTestCase):
    def test_in_order(self):
        """Pieces in order extend the prefix one piece length at a time."""
        progress = PieceProgress(size=40, piece_length=10)
        self.assertEqual(progress.num_pieces, 4)
        self.assertEqual([progress.add(i) for i in range(4)], [10, 20, 30, 40])
        self.assertTrue(progress.complete)

    def test_out_of_order(self):
        """A piece after a gap adds nothing until the gap is filled."""
        progress = PieceProgress(size=40, piece_length=10)
        self.assertEqual(progress.add(2), 0)
        self.assertEqual(progress.add(3), 0)
        self.assertEqual(progress.add(0), 10)
        self.assertFalse(progress.complete)
        self.assertEqual(progress.add(1), 40)
        self.assertTrue(progress.complete)

    def test_last_short_piece(self):
        """The last piece may be short; the prefix never passes the size."""
        progress = PieceProgress(size=25, piece_length=10)
        self.assertEqual(progress.num_pieces, 3)
        progress.add(0)
        progress.add(1)
        self.assertEqual(progress.add(2), 25)
        self.assertTrue(progress.complete)

    def test_repeats_and_strangers(self):
        """A piece reported twice, or a piece number out of range, changes nothing."""
        progress = PieceProgress(size=30, piece_length=10)
        progress.add(0)
        self.assertEqual(progress.add(0), 10)
        self.assertEqual(progress.add(-1), 10)
        self.assertEqual(progress.add(3), 10)
        self.assertEqual(progress.add(99), 10)

    def test_empty(self):
        """An empty blob has no pieces and is complete at once."""
        progress = PieceProgress(size=0, piece_length=10)
        self.assertEqual((progress.num_pieces, progress.available), (0, 0))
        self.assertTrue(progress.complete)

    @given(st.integers(1, 5000), st.integers(1, 600), st.randoms())
    def test_any_order(self, size, piece_length, rng):
        """In any order, the prefix is the longest run of pieces from 0 on."""
        progress = PieceProgress(size, piece_length)
        pieces = list(range(progress.num_pieces))
        rng.shuffle(pieces)
        have = set()
        for piece in pieces:
            have.add(piece)
            run = 0
            while run in have:
                run += 1
            self.assertEqual(progress.add(piece), min(run * piece_length, size))
        self.assertTrue(progress.complete)
        self.assertEqual(progress.available, size)


class TransferTests(SynchronousTestCase):
    def transfer(self, size: int = 100) -> Transfer:
        return Transfer("sha256:" + "0" * 64, size, "/nonexistent/part", "test")

    def test_last_byte_waits_for_verification(self):
        """Readers may have all bytes but the last until the digest matched."""
        transfer = Transfer("sha256:" + "0" * 64, 10, "/nowhere", "origin")
        transfer.advance(10)
        self.assertEqual((transfer.available, transfer.readable), (10, 9))
        d = transfer.wait(9)
        self.assertNoResult(d)
        transfer.succeed("/nowhere")
        self.assertEqual(self.successResultOf(d), 10)

    def test_wait_for_bytes(self):
        """A reader waiting past an offset hears when bytes beyond it arrive."""
        transfer = self.transfer()
        d = transfer.wait(10)
        self.assertNoResult(d)
        transfer.advance(10)
        self.assertNoResult(d)
        transfer.advance(11)
        self.assertEqual(self.successResultOf(d), 11)

    def test_already_there(self):
        """Waiting for bytes that have arrived fires at once."""
        transfer = self.transfer()
        transfer.advance(50)
        self.assertEqual(self.successResultOf(transfer.wait(0)), 50)
        self.assertEqual(self.successResultOf(transfer.wait(49)), 50)
        self.assertNoResult(transfer.wait(50))

    def test_advance_never_shrinks(self):
        """A smaller or equal report leaves the available length alone; a report
        past the size is cut to the size."""
        transfer = self.transfer()
        transfer.advance(60)
        transfer.advance(30)
        self.assertEqual(transfer.available, 60)
        transfer.advance(1000)
        self.assertEqual(transfer.available, 100)
        self.assertFalse(transfer.ended)

    def test_several_waiters(self):
        """Each waiter fires when its own offset is passed, and only then."""
        transfer = self.transfer()
        early, late = transfer.wait(5), transfer.wait(50)
        transfer.advance(20)
        self.assertEqual(self.successResultOf(early), 20)
        self.assertNoResult(late)
        transfer.advance(51)
        self.assertEqual(self.successResultOf(late), 51)

    def test_end_waits_for_verification(self):
        """All bytes present is not the end: ended_deferred fires on success only."""
        transfer = self.transfer()
        ended = transfer.ended_deferred()
        transfer.advance(100)
        self.assertNoResult(ended)
        self.assertNoResult(transfer.wait(100))
        transfer.succeed("/cache/blobs/x")
        self.assertEqual(self.successResultOf(ended), 100)
        self.assertTrue(transfer.verified and transfer.ended)
        self.assertEqual(transfer.path, "/cache/blobs/x")

    def test_success_releases_everyone(self):
        """On success every waiter fires with the full size, and so do later ones."""
        transfer = self.transfer()
        waiters = [transfer.wait(0), transfer.wait(99), transfer.wait(100)]
        transfer.succeed("/cache/blobs/x")
        for d in waiters:
            self.assertEqual(self.successResultOf(d), 100)
        self.assertEqual(self.successResultOf(transfer.wait(500)), 100)
        self.assertEqual(self.successResultOf(transfer.ended_deferred()), 100)

    def test_failure(self):
        """On failure every waiter errbacks with the reason, and so do later ones."""
        transfer = self.transfer()
        transfer.advance(10)
        waiting, ended = transfer.wait(50), transfer.ended_deferred()
        transfer.fail(ValueError("digest mismatch"))
        self.assertTrue(transfer.ended)
        self.assertFalse(transfer.verified)
        for d in [waiting, ended, transfer.wait(0), transfer.ended_deferred()]:
            self.failureResultOf(d, ValueError)

    def test_first_failure_wins(self):
        """A second failure, or one after success, changes nothing."""
        transfer = self.transfer()
        transfer.fail(ValueError("first"))
        transfer.fail(KeyError("second"))
        failure = self.failureResultOf(transfer.wait(0), ValueError)
        self.assertEqual(str(failure.value), "first")
        done = self.transfer()
        done.succeed("/cache/blobs/x")
        done.fail(ValueError("late"))
        self.assertIsNone(done.failure)
        self.assertEqual(self.successResultOf(done.ended_deferred()), 100)

    def test_empty_blob(self):
        """An empty blob's readers wait for its verification, then get 0."""
        transfer = self.transfer(size=0)
        ended = transfer.ended_deferred()
        self.assertNoResult(ended)
        transfer.succeed("/cache/blobs/empty")
        self.assertEqual(self.successResultOf(ended), 0)


class SendBodyTests(SynchronousTestCase):
    """Streaming a transfer to a client (eagle.streaming), on Twisted's Request."""

    def setUp(self):
        self.data = bytes(range(100))
        self.path = self.mktemp()
        with open(self.path, "wb") as f:
            f.write(self.data)
        self.transfer = Transfer("sha256:" + "0" * 64, 100, self.path, "test")
        self.channel = DummyChannel()
        self.aborted = []
        self.channel.transport.abortConnection = lambda: self.aborted.append(True)
        self.request = Request(self.channel)
        self.request.setHeader(b"Content-Length", b"100")

    def send(self, first: int = 0, last: int = 99) -> Deferred:
        return Deferred.fromCoroutine(
            send_body(self.request, self.transfer, first, last)
        )

    def body(self) -> bytes:
        return self.channel.transport.written.getvalue().split(b"\r\n\r\n", 1)[-1]

    def test_streams_as_bytes_arrive(self):
        """Bytes go out as they arrive, but the last only after verification,
        when the response ends: no client holds a whole unverified blob."""
        d = self.send()
        self.transfer.advance(40)
        self.assertEqual(self.body(), self.data[:40])
        self.transfer.advance(100)
        self.assertEqual(self.body(), self.data[:99])
        self.assertNoResult(d)
        self.transfer.succeed(self.path)
        self.assertEqual(self.body(), self.data)
        self.successResultOf(d)
        self.assertIsNone(self.request.producer)
        self.assertEqual(self.aborted, [])

    def test_file_being_moved(self):
        """A reader that arrives while the finished blob is being moved into the
        cache (its old name already gone) waits for the new name."""
        self.transfer.path = self.path + ".moving"  # not there any more
        self.transfer.advance(100)
        d = self.send()
        self.assertEqual(self.aborted, [])
        self.transfer.succeed(self.path)
        self.successResultOf(d)
        self.assertEqual(self.body(), self.data)
        self.assertEqual(self.aborted, [])

    def test_range(self):
        """Only the asked-for bytes are sent."""
        self.transfer.succeed(self.path)
        self.successResultOf(self.send(10, 19))
        self.assertEqual(self.body(), self.data[10:20])

    def test_failure_aborts(self):
        """A transfer that fails mid-way drops the client's connection."""
        d = self.send()
        self.transfer.advance(40)
        self.transfer.fail(ValueError("digest mismatch"))
        self.successResultOf(d)
        self.assertEqual(self.aborted, [True])
        self.assertIsNone(self.request.producer)

    def test_client_gone(self):
        """A client that leaves mid-blob ends the sending quietly, whatever the
        transfer does next."""
        d = self.send()
        self.transfer.advance(40)
        self.request.producer.stopProducing()
        self.request.connectionLost(Failure(ConnectionDone()))
        self.transfer.advance(100)
        self.successResultOf(d)
        self.transfer.succeed(self.path)

    def test_client_gone_while_verifying(self):
        """A client that leaves after the last byte, while the blob is still being
        verified, cancels the wait without an error of ours."""
        d = self.send()
        self.transfer.advance(100)
        self.request.connectionLost(Failure(ConnectionDone()))
        d.cancel()
        self.assertIsNone(self.successResultOf(d))
        self.transfer.succeed(self.path)
