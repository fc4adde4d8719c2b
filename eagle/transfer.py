"""A blob on its way into the cache, readable while its bytes arrive.

A source (the swarm, or HTTP from a seeder or the origin) writes the blob's bytes
into a file and reports how long the verified-to-be-written prefix is; clients
stream that prefix as it grows. Only when the whole blob's digest has been checked
does the transfer succeed; until then no reader may finish its response cleanly.
"""

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure


class PieceProgress:
    """Which pieces of a blob are complete, and the contiguous prefix they give."""

    def __init__(self, size: int, piece_length: int):
        self.size = size
        self.piece_length = piece_length
        self.num_pieces = -(-size // piece_length)
        self._have = bytearray(self.num_pieces)
        self._prefix = 0  # number of complete pieces from piece 0 on

    def add(self, piece: int) -> int:
        """Mark ``piece`` complete and return how many leading bytes are complete."""
        if 0 <= piece < self.num_pieces:
            self._have[piece] = 1
        while self._prefix < self.num_pieces and self._have[self._prefix]:
            self._prefix += 1
        return self.available

    @property
    def available(self) -> int:
        return min(self._prefix * self.piece_length, self.size)

    @property
    def complete(self) -> bool:
        return self._prefix == self.num_pieces


class Transfer:
    """The shared state of one blob being fetched, for every client waiting on it."""

    def __init__(self, digest: str, size: int, path: str, source: str):
        self.digest = digest
        self.size = size
        self.path = path
        self.source = source
        self.available = 0
        self.failure: Failure | None = None
        self.verified = False
        self._waiters: list[tuple[int, Deferred]] = []

    @property
    def ended(self) -> bool:
        return self.verified or self.failure is not None

    @property
    def readable(self) -> int:
        """What readers may send on: all that is in the file but the last byte
        until the digest has matched, so that no client holds a whole blob, and
        takes it for good, before it is verified (and counted, and logged)."""
        if self.verified:
            return self.size
        return min(self.available, max(self.size - 1, 0))

    def advance(self, available: int) -> None:
        """Record that the first ``available`` bytes are in the file."""
        if available <= self.available:
            return
        self.available = min(available, self.size)
        waiting, self._waiters = self._waiters, []
        for offset, d in waiting:
            if self.readable > offset:
                d.callback(self.readable)
            else:
                self._waiters.append((offset, d))

    def succeed(self, path: str) -> None:
        """The whole blob is in ``path`` and its digest matched."""
        self.path = path
        self.available = self.size
        self.verified = True
        self._release()

    def fail(self, reason: Exception | Failure) -> None:
        if self.ended:
            return
        self.failure = reason if isinstance(reason, Failure) else Failure(reason)
        self._release()

    def wait(self, offset: int) -> Deferred:
        """Fire with the readable length once more than ``offset`` bytes may be
        read, or once the transfer ended; fail if it failed."""
        if self.failure is not None:
            return _failed(self.failure)
        if self.readable > offset or self.verified:
            d = Deferred()
            d.callback(self.readable)
            return d
        d = Deferred()
        self._waiters.append((offset, d))
        return d

    def ended_deferred(self) -> Deferred:
        """Fire when the transfer has succeeded; fail if it failed."""
        return self.wait(self.size)

    def _release(self) -> None:
        waiting, self._waiters = self._waiters, []
        for offset, d in waiting:
            if self.failure is not None:
                d.errback(self.failure)
            elif self.readable > offset or self.verified:
                d.callback(self.readable)
            else:
                self._waiters.append((offset, d))


def _failed(failure: Failure) -> Deferred:
    d = Deferred()
    d.errback(failure)
    return d
