"""HTTP fetches from origins and seeders: manifests passed through, blobs streamed
into the cache with their digest checked before they count as cached."""

import re
import socket
from dataclasses import dataclass

from treq.client import HTTPClient
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.web.client import ResponseDone
from twisted.web.http_headers import Headers

from eagle import errors

MANIFEST_LIMIT = 4 * 1024 * 1024
CONNECT_TIMEOUT = 30
SILENCE_TIMEOUT = 60

# Response headers of a manifest (or an error) that a client needs to see.
MANIFEST_HEADERS = (
    b"content-type",
    b"docker-content-digest",
    b"etag",
    b"www-authenticate",
    b"retry-after",
    b"docker-distribution-api-version",
    b"link",
    b"last-modified",
)

log = Logger()


class BadReply(Exception):
    """The other side answered, but not with what we asked for."""


def reason(error: Exception) -> str:
    """Why a request failed, readable: Twisted wraps the cause (a refused
    connection, a certificate that did not verify) in lists of Failures."""
    causes = getattr(error, "reasons", None)
    if causes:
        return "; ".join(cause.getErrorMessage() for cause in causes)[:300]
    return (str(error) or type(error).__name__)[:300]


def header(response, name: bytes) -> bytes | None:
    values = response.headers.getRawHeaders(name)
    return values[0] if values else None


async def read_limited(response, limit: int, reactor) -> bytes:
    """The whole body of a response that must be small."""
    length = response.length
    if isinstance(length, int) and length > limit:
        discard(response)
        raise BadReply(f"body of {length} bytes is over the {limit} byte limit")
    chunks, size = [], 0

    def collect(data: bytes) -> None:
        nonlocal size
        size += len(data)
        if size > limit:
            raise BadReply(f"body over the {limit} byte limit")
        chunks.append(data)

    await receive_body(response, collect, reactor)
    return b"".join(chunks)


def receive_body(response, collector, reactor, buffer: int = 0) -> Deferred:
    """Deliver a response body to ``collector`` chunk by chunk; fire when it is
    complete, fail if it is cut short, if the sender stays silent for too long, or
    if the collector raises (which also drops the connection). A collector that
    returns a number of seconds gets no more data for that long."""
    finished = Deferred()
    receiver = _BodyReceiver(collector, finished, reactor)
    response.deliverBody(receiver)
    if buffer:
        receiver.limit_buffer(buffer)
    return finished


class _Discard(Protocol):
    def connectionMade(self):
        self.transport.stopProducing()


def discard(response) -> None:
    """Drop a response's body unread, closing its connection."""
    response.deliverBody(_Discard())


class _BodyReceiver(Protocol):
    def __init__(self, collector, finished: Deferred, reactor):
        self._collector = collector
        self._finished = finished
        self._reactor = reactor
        self._timer = None

    def connectionMade(self):
        self._timer = self._reactor.callLater(SILENCE_TIMEOUT, self._silent)

    def limit_buffer(self, size: int) -> None:
        """Hold the kernel's receive buffer to ``size`` bytes, so that under a
        speed limit the sender cannot run megabytes ahead of our reads (the
        wire would burst over the limit while the mean held)."""
        handle = getattr(getattr(self.transport, "_producer", None), "socket", None)
        if handle is not None:
            try:
                handle.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
            except OSError:
                pass

    def _silent(self):
        self._fail(BadReply(f"no data for {SILENCE_TIMEOUT}s"))

    def _fail(self, reason: Exception) -> None:
        if not self._finished.called:
            self._finished.errback(reason)
        self.transport.stopProducing()

    def dataReceived(self, data: bytes):
        if self._finished.called:
            return
        self._timer.reset(SILENCE_TIMEOUT)
        try:
            delay = self._collector(data)
        except Exception as e:
            return self._fail(e)
        if delay:
            # Over the speed limit: read nothing until the debt is paid, and
            # TCP slows the sender down. The pause is not the sender's silence.
            self._timer.reset(SILENCE_TIMEOUT + delay)
            self.transport.pauseProducing()
            self._reactor.callLater(delay, self._resume)

    def _resume(self):
        if not self._finished.called:
            self.transport.resumeProducing()

    def connectionLost(self, reason=connectionDone):
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        if self._finished.called:
            return
        if reason.check(ResponseDone):
            self._finished.callback(None)
        else:
            self._finished.errback(BadReply(f"body cut short: {reason.value}"))


def request_headers(authorization: bytes | None, accept: list[bytes] = ()) -> Headers:
    headers = Headers({b"User-Agent": [b"eagle/0.1"]})
    if authorization:
        headers.setRawHeaders(b"Authorization", [authorization])
    if accept:
        headers.setRawHeaders(b"Accept", list(accept))
    return headers


@dataclass
class BlobBody:
    """A blob response whose body is about to be read."""

    response: object
    source: str
    size: int  # of the whole blob
    skip: int  # leading body bytes to drop: the sender ignored our Range
    seeder: str | None = None  # which seeder sends it, if one does


async def request_blob(
    http: HTTPClient,
    reactor,
    url: str,
    headers: Headers,
    digest: str,
    source: str,
    offset: int = 0,
    login=None,
    timeout: float = CONNECT_TIMEOUT,
) -> BlobBody:
    """GET a blob, from byte ``offset`` on; return once the headers are in.

    ``timeout`` bounds the wait for the answer's headers.
    ``login(challenge)``, if given, answers an origin's 401 with our own
    credentials (see eagle.auth); the request is then made once more.
    """
    headers = headers.copy()
    if offset:
        headers.setRawHeaders(b"Range", [f"bytes={offset}-".encode()])
    try:
        response = await http.get(
            url, headers=headers, unbuffered=True, timeout=timeout
        )
        if response.code == 401 and login is not None:
            answer = await login(header(response, b"www-authenticate"))
            if answer is not None:
                discard(response)
                headers.setRawHeaders(b"Authorization", [answer])
                response = await http.get(
                    url, headers=headers, unbuffered=True, timeout=timeout
                )
    except Exception as e:
        raise errors.upstream_unavailable(source, reason(e)) from None
    if response.code == 206 and offset:
        first, size = _content_range(header(response, b"content-range"))
        if first != offset:
            discard(response)
            raise errors.upstream_bad_reply(source, "Content-Range does not match")
        return BlobBody(response, source, size, 0)
    if response.code != 200:
        await _raise_for(response, reactor, digest, source)
    if not isinstance(response.length, int):
        # Without a length we cannot promise one to our client before the body.
        # FIXME(issue 4): spool such blobs before answering; registries send one.
        discard(response)
        raise errors.upstream_bad_reply(source, "blob without Content-Length")
    # A 200 to a Range request carries the whole blob: drop what we have.
    return BlobBody(response, source, response.length, offset)


def _content_range(value: bytes | None) -> tuple[int, int]:
    match = re.fullmatch(rb"bytes (\d+)-(\d+)/(\d+)", value or b"")
    if not match:
        raise errors.upstream_bad_reply("upstream", "206 without a valid Content-Range")
    return int(match[1]), int(match[3])


async def receive_blob(
    reactor, body: BlobBody, path: str, offset: int, sha256, advance, throttle=None
) -> None:
    """Write a blob's body into ``path`` from ``offset`` on, extending ``sha256``
    and calling ``advance(bytes in the file)`` as it goes. Fails if the body is
    cut short or longer than the blob. ``throttle``, if given, holds the reads
    to its ``rate``: ``throttle.take(bytes)`` says how long to wait for more."""
    position = offset
    skip = body.skip

    def write(data: bytes) -> None:
        nonlocal position, skip
        if skip:
            dropped, data = data[:skip], data[skip:]
            skip -= len(dropped)
        if position + len(data) > body.size:
            raise BadReply("more bytes than the blob's size")
        f.write(data)
        f.flush()
        sha256.update(data)
        position += len(data)
        advance(position)
        return throttle.take(len(data)) if throttle else 0

    with open(path, "r+b" if offset else "wb") as f:
        f.seek(offset)
        # Under a limit, a receive buffer of 50 ms of it (see limit_buffer).
        rate = throttle.rate if throttle else 0
        buffer = max(64 * 1024, rate // 20) if rate else 0
        await receive_body(body.response, write, reactor, buffer)
    if position != body.size:
        raise BadReply(f"got {position} of {body.size} bytes")


async def _raise_for(response, reactor, digest: str, source: str) -> None:
    """Turn an upstream's refusal into the error our client should see."""
    try:
        body = await read_limited(response, 64 * 1024, reactor)
    except Exception:
        body = b""
    if response.code in (401, 403, 429):
        raise errors.UpstreamAnswer(response.code, pass_headers(response), body)
    if response.code == 404:
        raise errors.blob_unknown(digest)
    raise errors.upstream_bad_reply(source, f"status {response.code}")


def pass_headers(response) -> list[tuple[bytes, list[bytes]]]:
    return [
        (name, response.headers.getRawHeaders(name))
        for name in MANIFEST_HEADERS
        if response.headers.hasHeader(name)
    ]
