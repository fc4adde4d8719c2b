"""HTTP fetches from origins and seeders: manifests passed through, blobs streamed
into the cache with their digest checked before they count as cached."""

import hashlib
import os
import secrets

from treq.client import HTTPClient
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.web.client import ResponseDone
from twisted.web.http_headers import Headers

from eagle import errors
from eagle.cache import BlobCache
from eagle.transfer import Transfer

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


def receive_body(response, collector, reactor) -> Deferred:
    """Deliver a response body to ``collector`` chunk by chunk; fire when it is
    complete, fail if it is cut short, if the sender stays silent for too long, or
    if the collector raises (which also drops the connection)."""
    finished = Deferred()
    response.deliverBody(_BodyReceiver(collector, finished, reactor))
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
            self._collector(data)
        except Exception as e:
            self._fail(e)

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


async def open_blob(
    http: HTTPClient,
    reactor,
    url: str,
    headers: Headers,
    cache: BlobCache,
    digest: str,
    source: str,
) -> Transfer:
    """GET a blob; once the headers say it is there, return its Transfer while the
    body streams into the cache in the background."""
    hex_ = digest.split(":", 1)[1]
    try:
        response = await http.get(
            url, headers=headers, unbuffered=True, timeout=CONNECT_TIMEOUT
        )
    except Exception as e:
        raise errors.upstream_unavailable(source, str(e)[:200]) from None
    if response.code != 200:
        await _raise_for(response, reactor, digest, source)
    length = response.length
    if not isinstance(length, int):
        # Without a length we cannot promise one to our client before the body.
        # FIXME: spool such blobs fully before answering; registries send one.
        discard(response)
        raise errors.upstream_bad_reply(source, "blob without Content-Length")
    cache.reserve(length)
    path = cache.incoming_path(hex_, secrets.token_hex(4))
    transfer = Transfer(digest, length, path, source)
    Deferred.fromCoroutine(
        _receive(response, reactor, transfer, cache, hex_)
    ).addErrback(lambda f: log.failure("receiving {digest}", f, digest=digest))
    return transfer


async def _receive(response, reactor, transfer: Transfer, cache, hex_: str) -> None:
    sha256 = hashlib.sha256()
    written = 0
    f = open(transfer.path, "wb")

    def write(data: bytes) -> None:
        nonlocal written
        if written + len(data) > transfer.size:
            raise BadReply("more bytes than Content-Length")
        f.write(data)
        sha256.update(data)
        written += len(data)
        f.flush()
        transfer.advance(written)

    try:
        try:
            await receive_body(response, write, reactor)
        finally:
            f.close()
        if written != transfer.size:
            raise BadReply(f"got {written} of {transfer.size} bytes")
        if sha256.hexdigest() != hex_:
            raise BadReply("blob does not match its digest")
    except Exception as e:
        _remove(transfer.path)
        log.warn(
            "fetch of {digest} from {source} failed: {reason}",
            digest=transfer.digest,
            source=transfer.source,
            reason=str(e) or type(e).__name__,
        )
        transfer.fail(e)
        return
    transfer.succeed(cache.commit(hex_, transfer.path))


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


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
