"""The registry API (OCI distribution, read side) that container engines pull from.

Agents and proxies serve it to engines; seeders serve its blob part to agents.
Manifests and tag lists pass through to the origin untouched; blobs come from the
cache or from one shared fetch. Every error this code makes is OCI JSON.
"""

import re

from klein import Klein
from klein.resource import KleinResource
from twisted.logger import Logger
from werkzeug.exceptions import MethodNotAllowed, NotFound

from eagle import digest as names
from eagle import errors
from eagle.access import AccessCache
from eagle.blobs import EMPTY_SHA256, Blobs
from eagle.fetch import (
    MANIFEST_LIMIT,
    BadReply,
    discard,
    pass_headers,
    read_limited,
    reason,
    request_headers,
)
from eagle.manifests import ManifestCache, credential
from eagle.ranges import parse_range
from eagle.streaming import send_body
from eagle.upstream import BlobRef, Upstream, Upstreams

_ROUTE = re.compile(r"(?P<name>.+)/(?P<kind>manifests|blobs|tags)/(?P<ref>[^/]+)")
MAX_URI = 4096
# The origin's answers that refuse a client a blob, passed on as they are.
REFUSALS = (401, 403, 429)
# Clients wait on the version check before anything else: do not hang on an origin.
PING_TIMEOUT = 5
MAX_HEADER_VALUE = 8192


def query(request, name: str) -> str | None:
    values = request.args.get(name.encode())
    if not values:
        return None
    try:
        return values[0].decode("ascii")
    except UnicodeDecodeError:
        raise errors.RegistryError(
            400, "UNSUPPORTED", f"{name} must be ASCII"
        ) from None


def write_error(request, error: errors.RegistryError) -> bytes:
    request.setResponseCode(error.status)
    request.setHeader(b"Content-Type", b"application/json")
    for name, value in error.headers:
        request.setHeader(name.encode(), value.encode())
    return b"" if request.method == b"HEAD" else error.body()


def write_upstream(request, answer: errors.UpstreamAnswer) -> bytes:
    request.setResponseCode(answer.status)
    for name, values in answer.headers:
        request.responseHeaders.setRawHeaders(name, values)
    if not request.responseHeaders.hasHeader(b"content-length"):
        request.setHeader(b"Content-Length", str(len(answer.body)).encode())
    return answer.body


class Mirror:
    """Registry API v2 routes over a set of upstreams and a blob store."""

    app = Klein()
    log = Logger()

    def __init__(
        self, upstreams: Upstreams, blobs: Blobs, http, reactor, credentials=None
    ):
        self.credentials = credentials  # eagle.auth.Credentials
        self.upstreams = upstreams
        self.blobs = blobs
        self.http = http
        self.reactor = reactor
        self.manifests = ManifestCache(reactor)
        self.access = AccessCache(reactor)
        self.served = {"blobs": 0, "manifests": 0}

    def resource(self):
        return _Resource(self.app)

    @app.handle_errors(MethodNotAllowed, NotFound)
    def routing_error(self, request, failure):
        # werkzeug would answer in HTML; registry clients expect OCI JSON.
        if failure.check(MethodNotAllowed):
            error = errors.unsupported("this registry is a read-only mirror")
        else:
            error = errors.RegistryError(404, "NOT_FOUND", "no such endpoint")
        return write_error(request, error)

    @app.route("/", methods=["GET", "HEAD"])
    async def base(self, request):
        """The version check, which is also where clients learn how to log in:
        they take the registry's credentials challenge from this answer only, so
        the origin's is passed on, unless Eagle logs in there itself."""
        request.setHeader(b"Docker-Distribution-API-Version", b"registry/2.0")
        code = None
        try:
            upstream = self.upstreams.select(query(request, "ns"))
            if not upstream.username:
                code, headers, body = await self.ask_origin(
                    request, f"{upstream.url}/v2/", upstream, timeout=PING_TIMEOUT
                )
        except errors.RegistryError:
            pass  # the origin is away: what is cached can still be served
        if code in (401, 403):
            return answer(request, code, headers, body)
        request.setHeader(b"Content-Type", b"application/json")
        return b"{}"

    @app.route(
        "/<path:rest>", methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
    )
    async def v2(self, request, rest):
        """Everything under ``/v2/``: this resource is mounted there."""
        request.setHeader(b"Docker-Distribution-API-Version", b"registry/2.0")
        try:
            return await self._dispatch(request, rest)
        except errors.RegistryError as e:
            if e.status >= 500:  # the origin or a seeder failed: say which and why
                self.log.warn(
                    "{method} {path}: {status} {message}: {detail}",
                    method=request.method.decode(),
                    path=rest[:200],
                    status=e.status,
                    message=e.message,
                    detail=e.detail,
                )
            return write_error(request, e)
        except errors.UpstreamAnswer as e:
            return write_upstream(request, e)
        except Exception:
            self.log.failure("unexpected error serving {uri}", uri=request.uri[:200])
            return write_error(
                request, errors.RegistryError(500, "UNKNOWN", "internal error")
            )

    async def _dispatch(self, request, path: str):
        if len(request.uri) > MAX_URI:
            raise errors.RegistryError(414, "UNSUPPORTED", "request URI too long")
        if request.method not in (b"GET", b"HEAD"):
            raise errors.unsupported("this registry is a read-only mirror")
        if path == "_catalog":
            upstream = self.upstreams.select(query(request, "ns"))
            url = f"{upstream.url}/v2/_catalog{origin_query(request)}"
            return await self.forward(request, url, upstream)
        match = _ROUTE.fullmatch(path)
        if match is None:
            raise errors.RegistryError(404, "NOT_FOUND", "no such endpoint", path[:200])
        ns = query(request, "ns")
        upstream, name = (
            self.upstreams.split(match["name"]) if ns is None else (None, match["name"])
        )
        upstream = upstream or self.upstreams.select(ns)
        repository = upstream.repository(names.repository(name))
        kind, ref = match["kind"], match["ref"]
        if kind == "blobs":
            ref = BlobRef(
                upstream, repository, names.blob_digest(ref), authorization(request)
            )
            return await self.blob(request, ref)
        if kind == "manifests":
            self.served["manifests"] += 1
            return await self.manifest(
                request, upstream, repository, names.reference(ref)
            )
        if ref == "list":
            url = f"{upstream.url}/v2/{repository}/tags/list{origin_query(request)}"
        else:
            raise errors.RegistryError(404, "NOT_FOUND", "no such endpoint", path[:200])
        return await self.forward(request, url, upstream)

    async def manifest(self, request, upstream, repository: str, reference: str):
        """A manifest from the cache when it may be, else from the origin, whose
        answer is remembered; a stale one when the origin fails or rate-limits."""
        key = (upstream.host, repository, reference)
        accept = request.requestHeaders.getRawHeaders(b"Accept", [])
        who = credential(authorization(request))
        cached = self.manifests.lookup(key, accept, who)
        if cached is not None:
            return answer(request, 200, cached.headers, cached.body)
        url = upstream.manifest_url(repository, reference)
        failure = None
        try:
            code, headers, body = await self.ask_origin(request, url, upstream)
        except errors.RegistryError as e:  # the origin is unreachable
            code, headers, body, failure = None, [], b"", e
        if code == 200 and request.method == b"GET":
            self.manifests.store(key, body, headers, who)
            digest = dict(headers).get(b"docker-content-digest")
            if digest and names.is_digest(digest[0].decode("ascii", "replace")):
                digest_key = (upstream.host, repository, digest[0].decode("ascii"))
                self.manifests.store(digest_key, body, headers, who)
        elif code is None or code == 429 or code >= 500:
            stale = self.manifests.lookup(key, accept, who, stale=True)
            if stale is not None:
                self.log.warn(
                    "origin {registry} answered {status} for {repository}:{reference};"
                    " serving the manifest it gave before",
                    registry=upstream.host,
                    status=code or "nothing",
                    repository=repository,
                    reference=reference,
                )
                return answer(request, 200, stale.headers, stale.body)
            if failure is not None:
                raise failure
        return answer(request, code, headers, body)

    async def forward(self, request, url: str, upstream: Upstream):
        """Pass a small request (a tag list, a HEAD) to the origin and its answer
        back byte for byte."""
        return answer(request, *await self.ask_origin(request, url, upstream))

    async def ask_origin(
        self,
        request,
        url: str,
        upstream: Upstream,
        method: bytes | None = None,
        timeout: float = 30,
    ):
        """Send the client's request on to the origin with its content negotiation
        and credentials; return (status, headers to pass back, body)."""
        accept = request.requestHeaders.getRawHeaders(b"Accept", [])
        client = authorization(request)
        headers = request_headers(client, accept)
        method = (method or request.method).decode()
        try:
            response = await self.http.request(
                method, url, headers=headers, timeout=timeout
            )
            if response.code == 401 and client is None and self.credentials:
                # The client brought no credentials: log in as the registry's
                # configured user, if there is one.
                challenge = response.headers.getRawHeaders(b"www-authenticate")
                answer = await self.credentials.answer(
                    upstream, challenge[0] if challenge else None
                )
                if answer is not None:
                    discard(response)
                    headers.setRawHeaders(b"Authorization", [answer])
                    response = await self.http.request(
                        method, url, headers=headers, timeout=timeout
                    )
        except Exception as e:
            raise errors.upstream_unavailable(upstream.host, reason(e)) from None
        try:
            body = await read_limited(response, MANIFEST_LIMIT, self.reactor)
        except BadReply as e:  # cut short, silent, or too big: nothing to pass on
            raise errors.upstream_bad_reply(upstream.host, str(e)[:200]) from None
        passed = pass_headers(response)
        length = response.headers.getRawHeaders(b"Content-Length")
        if request.method == b"HEAD" and length:
            passed.append((b"content-length", length[:1]))
        return response.code, passed, body

    async def check_access(self, request, ref: BlobRef) -> None:
        """Go on only if this client may pull the blob from the origin: ask the
        origin (a HEAD with the client's credentials) unless it said yes lately.

        Raises the origin's refusal for the client to see."""
        if ref.hex == EMPTY_SHA256:
            return  # nothing to protect, and registries need not store it
        key = (ref.upstream.host, ref.repository, ref.hex)
        who = credential(ref.authorization)
        if self.access.fresh(key, who):
            return
        url = ref.upstream.blob_url(ref.repository, ref.digest)
        try:
            code, headers, _ = await self.ask_origin(
                request, url, ref.upstream, b"HEAD"
            )
        except errors.RegistryError:
            if self.access.known(key, who):
                return  # the origin is away; it said yes to this client before
            raise
        if code == 200:
            self.access.confirm(key, who)
            return
        if code == 404:
            raise errors.blob_unknown(str(ref.digest))
        if code in REFUSALS:
            body = b""
            if request.method == b"GET":
                # A HEAD's refusal has no body, and the client must see the
                # origin's own answer: ask again as the client did. A refused GET
                # carries only the error, never the blob.
                code, headers, body = await self.ask_origin(request, url, ref.upstream)
            raise errors.UpstreamAnswer(code, headers, body)
        raise errors.upstream_bad_reply(ref.upstream.host, f"status {code}")

    async def blob(self, request, ref: BlobRef):
        if request.method == b"HEAD" and not self.blobs.cache.has(ref.hex):
            # A miss is resolved upstream: ask the origin, fetch nothing yet.
            url = ref.upstream.blob_url(ref.repository, ref.digest)
            code, headers, body = await self.ask_origin(request, url, ref.upstream)
            answer(request, code, headers, body)
            if code == 200:
                self.access.confirm(
                    (ref.upstream.host, ref.repository, ref.hex),
                    credential(ref.authorization),
                )
                # The object storage a registry may redirect to knows no digests.
                request.setHeader(b"Content-Type", b"application/octet-stream")
                request.setHeader(b"Docker-Content-Digest", str(ref.digest).encode())
            return body
        await self.check_access(request, ref)
        transfer = await self.blobs.open(ref)
        size = transfer.size
        span = parse_range(request.getHeader(b"Range"), size)
        first, last = span if span else (0, size - 1)
        request.setHeader(b"Content-Type", b"application/octet-stream")
        request.setHeader(b"Docker-Content-Digest", str(ref.digest).encode())
        request.setHeader(b"Accept-Ranges", b"bytes")
        request.setHeader(b"Content-Length", str(last - first + 1).encode())
        if span:
            request.setResponseCode(206)
            request.setHeader(b"Content-Range", f"bytes {first}-{last}/{size}".encode())
        if request.method == b"HEAD" or size == 0:
            if not transfer.ended:
                await transfer.ended_deferred()
            return b""
        self.served["blobs"] += 1
        self.blobs.cache.pin(ref.hex)
        try:
            await send_body(request, transfer, first, last)
        finally:
            self.blobs.cache.unpin(ref.hex)
        self.log.info(
            "served {digest} ({length} bytes, {source}) to {client}",
            digest=str(ref.digest),
            length=last - first + 1,
            source=transfer.source,
            client=request.getClientAddress().host,
            repository=ref.repository,
        )
        return None


class _Resource(KleinResource):
    def render(self, request):
        # klein refuses a path that is not UTF-8 in plain text, before any route.
        try:
            b"/".join(request.postpath).decode("utf-8")
        except UnicodeDecodeError:
            error = errors.name_invalid("request path is not UTF-8")
            return write_error(request, error)
        return super().render(request)


def answer(request, code: int, headers, body: bytes) -> bytes:
    request.setResponseCode(code)
    for name, values in headers:
        request.responseHeaders.setRawHeaders(name, values)
    if not request.responseHeaders.hasHeader(b"content-length"):
        request.setHeader(b"Content-Length", str(len(body)).encode())
    return body


def origin_query(request) -> str:
    """The client's query string for the origin, as sent, less Eagle's ``ns``."""
    _, _, raw = request.uri.partition(b"?")
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise errors.RegistryError(400, "UNSUPPORTED", "query must be ASCII") from None
    kept = [item for item in text.split("&") if item.split("=")[0] != "ns"]
    return "?" + "&".join(kept) if raw and kept else ""


def authorization(request) -> bytes | None:
    value = request.getHeader(b"Authorization")
    if value is not None and len(value) > MAX_HEADER_VALUE:
        raise errors.RegistryError(400, "UNSUPPORTED", "Authorization header too long")
    return value
