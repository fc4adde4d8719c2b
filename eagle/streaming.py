"""Sending a blob to a registry client from a Transfer, as its bytes arrive.

Headers go out first with the full Content-Length; the body follows at the pace of
both the transfer and the client (Twisted's producer flow control). If the blob
cannot be completed or fails its digest, the connection is aborted, so the client
sees a broken download, never a short or wrong one that looks finished.
"""

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from zope.interface import implementer

from eagle.transfer import Transfer

CHUNK = 256 * 1024
log = Logger()


@implementer(IPushProducer)
class _Pace:
    """Tells the sending loop when the client's connection can take more."""

    def __init__(self):
        self._resume: Deferred | None = None
        self.stopped = False

    def pauseProducing(self):
        if self._resume is None:
            self._resume = Deferred()

    def resumeProducing(self):
        resume, self._resume = self._resume, None
        if resume is not None:
            resume.callback(None)

    def stopProducing(self):
        self.stopped = True
        self.resumeProducing()

    async def ready(self) -> None:
        if self._resume is not None:
            await self._resume


async def send_body(request, transfer: Transfer, first: int, last: int) -> None:
    """Write bytes ``first..last`` (inclusive) of the transfer's blob to ``request``.

    Headers must be set already. Verified bytes are final; bytes of a transfer still
    running are sent as they land, and the response ends only once the whole blob
    has verified, so a digest mismatch can still abort it.
    """
    pace = _Pace()
    request.registerProducer(pace, True)
    f = opened = None
    try:
        position = first
        while position <= last and not pace.stopped:
            await transfer.wait(position)
            if opened != transfer.path:
                # First read, or the transfer moved on to another file (a swarm
                # download finished over HTTP).
                if f is not None:
                    f.close()
                opened, f = await _open(transfer)
                f.seek(position)
            end = min(transfer.readable, last + 1)
            while position < end and not pace.stopped:
                data = f.read(min(CHUNK, end - position))
                if not data:
                    raise OSError(f"{transfer.path} ended at {position}")
                request.write(data)
                position += len(data)
                await pace.ready()
        if not pace.stopped:
            await transfer.ended_deferred()
    except Exception as e:
        log.warn(
            "aborting response for {digest}: {reason}",
            digest=transfer.digest,
            reason=str(e) or type(e).__name__,
        )
        _unregister(request)
        abort(request)
        return
    finally:
        if f is not None:
            f.close()
    _unregister(request)


async def _open(transfer: Transfer):
    """Open the transfer's file, wherever it is by now: a finished swarm download
    is being moved into the cache, and its old name may already be gone."""
    while True:
        path = transfer.path
        try:
            return path, open(path, "rb")
        except FileNotFoundError:
            if transfer.path != path:
                continue
            if transfer.ended:
                raise
            await transfer.ended_deferred()  # the move ends with its new name


def _unregister(request) -> None:
    # Once the client has gone, Twisted has dropped the request's channel, and
    # unregisterProducer would raise AttributeError.
    if request.channel is not None:
        request.unregisterProducer()


def abort(request) -> None:
    """Drop the client's connection so that the response cannot look complete."""
    transport = request.channel.transport if request.channel else None
    if transport is not None:
        transport.abortConnection()
