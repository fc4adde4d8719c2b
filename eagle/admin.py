"""``/admin/``: what operators change on a running agent, proxy or seeder (the
``eagle cache`` commands). Loopback clients only, or, when ``admin_token`` is
configured, only clients that send it as a Bearer token."""

from __future__ import annotations

import hmac
import ipaddress
import json

from klein import Klein
from twisted.logger import Logger
from werkzeug.exceptions import MethodNotAllowed, NotFound

from eagle import digest as names
from eagle import errors
from eagle.cache import BlobCache


def allowed(client_host: str, authorization: bytes | None, token: str | None) -> bool:
    """Whether an admin request may go on: with a token configured, exactly that
    Bearer token; without one, a loopback client."""
    if token:
        expected = b"Bearer " + token.encode()
        return hmac.compare_digest(authorization or b"", expected)
    try:
        return ipaddress.ip_address(client_host).is_loopback
    except ValueError:  # a unix socket or something else without an address
        return False


def _json(request, status: int, body) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", b"application/json")
    return json.dumps(body).encode()


def _error(request, error: errors.RegistryError) -> bytes:
    request.setResponseCode(error.status)
    request.setHeader(b"Content-Type", b"application/json")
    return error.body()


class AdminAPI:
    app = Klein()
    log = Logger()

    def __init__(self, cache: BlobCache, token: str | None = None):
        self.cache = cache
        self.token = token

    def resource(self):
        return self.app.resource()

    @app.handle_errors(MethodNotAllowed, NotFound)
    def routing_error(self, request, failure):
        if failure.check(MethodNotAllowed):
            error = errors.unsupported("method not allowed here")
        else:
            error = errors.RegistryError(404, "NOT_FOUND", "no such endpoint")
        return _error(request, error)

    def _check(self, request) -> None:
        host = getattr(request.getClientAddress(), "host", "")
        if not allowed(host, request.getHeader(b"Authorization"), self.token):
            raise errors.RegistryError(403, "DENIED", "admin access denied")

    @app.route("/cache", methods=["GET"])
    def cache_list(self, request):
        """The cached blobs, least recently used first."""
        try:
            self._check(request)
        except errors.RegistryError as e:
            return _error(request, e)
        cache = self.cache
        blobs = [
            {
                "digest": "sha256:" + hex_,
                "size": cache.lru.size(hex_),
                "in_use": cache.lru.pinned(hex_),
                "torrent": cache.load_torrent(hex_) is not None,
            }
            for hex_ in cache.list()
        ]
        return _json(
            request,
            200,
            {"blobs": blobs, "bytes": cache.lru.total, "limit": cache.lru.max_bytes},
        )

    @app.route("/cache/<digest>", methods=["DELETE"])
    def cache_evict(self, request, digest):
        """Evict one blob now; 409 while it is being read or fetched."""
        try:
            self._check(request)
            hex_ = names.blob_digest(digest).hex
            if not self.cache.has(hex_):
                raise errors.blob_unknown(digest)
            if not self.cache.evict_blob(hex_):
                raise errors.RegistryError(409, "DENIED", "blob in use", digest)
        except errors.RegistryError as e:
            return _error(request, e)
        self.log.info(
            "evicted {digest} on request from {client}",
            digest=digest,
            client=getattr(request.getClientAddress(), "host", "?"),
        )
        return _json(request, 200, {"evicted": digest})
