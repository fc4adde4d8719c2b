"""A scripted origin registry, for the replies a real registry will not give.

`ScriptedRegistry` serves blobs and manifests it is handed, on 127.0.0.1:<free
port>, from threads of the calling process, and can be told at any moment to
misbehave the way real origins do:

- ``reset_after = N``: manifest and blob GETs send their headers and at most N
  body bytes (never all of them), then reset the connection;
- ``ignore_range = True``: Range is ignored, the whole blob comes as a 200;
- ``token = "t"``: every registry request without ``Authorization: Bearer t`` is
  a 401 with a Bearer challenge whose realm is this server's ``/token``;
- ``retry_after = S``: every registry request is a 429 with ``Retry-After: S``;
- ``redirect_to = other``: blob GETs and HEADs are a 307 to the same path on
  ``other``, another ScriptedRegistry (another origin) that holds the same blobs
  and, made with ``storage=True``, answers like object storage: without the
  registry's headers (no Docker-Content-Digest);
- ``cookie = "name=value"``: every answer sets that cookie.

It keeps every request it got (method, path with query, headers) in `requests`,
so tests can assert what the origin saw. Like the other lab parts it has
``start``, ``stop`` and ``url``; unlike them it needs no external tool.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import re
import socket
import struct
import threading
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from eagle.lab import LabError

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"

_ROUTE = re.compile(r"/v2/(?P<name>.+)/(?P<kind>manifests|blobs)/(?P<ref>[^/]+)")
_TAGS = re.compile(r"/v2/(?P<name>.+)/tags/list")
_RANGE = re.compile(r"bytes=(\d+)-(\d*)")


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def descriptor(media_type: str, data: bytes, **extra) -> dict:
    found = {"mediaType": media_type, "digest": digest_of(data), "size": len(data)}
    return found | extra


def image_manifest(
    config: bytes,
    layers: list[bytes],
    media_type: str = OCI_MANIFEST,
    declare_type: bool = True,
) -> bytes:
    """A schema-2 or OCI image manifest; ``declare_type=False`` leaves out the
    optional top-level ``mediaType`` field, as some registries' manifests do."""
    docker = media_type == DOCKER_MANIFEST
    document = {"schemaVersion": 2}
    if declare_type:
        document["mediaType"] = media_type
    document["config"] = descriptor(DOCKER_CONFIG if docker else OCI_CONFIG, config)
    document["layers"] = [
        descriptor(DOCKER_LAYER if docker else OCI_LAYER, layer) for layer in layers
    ]
    return json.dumps(document, indent=3).encode()


def artifact_manifest(artifact_type: str, files: list[bytes]) -> bytes:
    """An OCI artifact: an image manifest with an ``artifactType``, the empty
    config ``{}`` and its files as layers of their own type."""
    document = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": descriptor(OCI_EMPTY, b"{}"),
        "layers": [descriptor("application/octet-stream", f) for f in files],
    }
    return json.dumps(document, indent=3).encode()


def image_index(children: list[tuple[str, bytes, str]], media_type=OCI_INDEX) -> bytes:
    """An OCI index (or Docker manifest list) of (media type, manifest, arch)."""
    manifests = [
        descriptor(kind, body, platform={"architecture": arch, "os": "linux"})
        for kind, body, arch in children
    ]
    document = {"schemaVersion": 2, "mediaType": media_type, "manifests": manifests}
    return json.dumps(document, indent=3).encode()


@dataclass(frozen=True)
class Seen:
    """One request as the scripted registry received it."""

    method: str
    path: str  # with the query string
    headers: dict[str, str]  # names in lower case


class ScriptedRegistry:
    """A registry on loopback whose content and faults a test sets."""

    name = "scripted"

    def __init__(self, blobs: dict[str, bytes] | None = None, storage: bool = False):
        # Shared, not copied: a redirect target may serve the origin's blobs.
        self.blobs: dict[str, bytes] = {} if blobs is None else blobs
        self.storage = storage
        self.manifests: dict[tuple[str, str], tuple[str, bytes]] = {}
        self.tags: dict[str, list[str]] = {}
        self.requests: list[Seen] = []
        self.reset_after: int | None = None
        self.ignore_range = False
        self.token: str | None = None
        self.retry_after: int | None = None
        self.redirect_to: ScriptedRegistry | None = None
        self.cookie: str | None = None
        self._server: _Server | None = None
        self._lock = threading.Lock()
        self.port = 0

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def add_blob(self, data: bytes) -> str:
        digest = digest_of(data)
        self.blobs[digest] = data
        return digest

    def add_manifest(self, name: str, body: bytes, media_type: str, *tags: str) -> str:
        """Serve ``body`` as ``name``'s manifest by digest and by each tag."""
        digest = digest_of(body)
        for reference in (digest, *tags):
            self.manifests[(name, reference)] = (media_type, body)
        self.tags.setdefault(name, [])
        self.tags[name] = sorted(set(self.tags[name]) | set(tags))
        return digest

    def seen(self, method: str | None = None, path: str = "") -> list[Seen]:
        """The requests received so far whose path starts with ``path``."""
        with self._lock:
            requests = list(self.requests)
        return [
            r
            for r in requests
            if (method is None or r.method == method) and r.path.startswith(path)
        ]

    def start(self) -> ScriptedRegistry:
        if self._server is not None:
            return self
        self._server = _Server(self)
        self.port = self._server.server_address[1]
        threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"scripted-registry-{self.port}",
            daemon=True,
        ).start()
        return self

    def stop(self) -> None:
        """Stop listening and drop every open connection, so that clients with
        persistent connections cannot reach it any more either."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
            server.drop_connections()

    @property
    def running(self) -> bool:
        return self._server is not None

    def _record(self, seen: Seen) -> None:
        with self._lock:
            self.requests.append(seen)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, registry: ScriptedRegistry):
        self.registry = registry
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)

    def process_request(self, request, client_address):
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def drop_connections(self) -> None:
        with self._connections_lock:
            connections, self._connections = self._connections, set()
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request, client_address):
        pass  # a client that went away, or a connection we reset on purpose


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # persistent connections, as registries keep
    timeout = 60
    server: _Server

    def log_message(self, *args):
        pass

    def do_GET(self):
        self._answer()

    def do_HEAD(self):
        self._answer()

    @property
    def registry(self) -> ScriptedRegistry:
        return self.server.registry

    def _answer(self) -> None:
        registry = self.registry
        headers = {name.lower(): value for name, value in self.headers.items()}
        registry._record(Seen(self.command, self.path, headers))
        parts = urlsplit(self.path)
        path, query = parts.path, parse_qs(parts.query)
        if path == "/token":
            token = registry.token or "anonymous"
            return self._json(200, {"token": token, "access_token": token})
        if not path.startswith("/v2/"):
            return self._error(404, "NOT_FOUND", "no such endpoint")
        if registry.retry_after is not None:
            extra = {"Retry-After": str(registry.retry_after)}
            return self._error(429, "TOOMANYREQUESTS", "slow down", None, extra)
        if registry.token is not None:
            if headers.get("authorization") != f"Bearer {registry.token}":
                return self._challenge(path)
        if path == "/v2/":
            return self._json(200, {})
        if path == "/v2/_catalog":
            return self._page("repositories", sorted(registry.tags), query, path)
        match = _TAGS.fullmatch(path)
        if match:
            name = match["name"]
            if name not in registry.tags:
                return self._error(404, "NAME_UNKNOWN", "repository unknown", name)
            tags = registry.tags[name]
            return self._page("tags", tags, query, path, {"name": name})
        match = _ROUTE.fullmatch(path)
        if match is None:
            return self._error(404, "NOT_FOUND", "no such endpoint")
        if match["kind"] == "manifests":
            return self._manifest(match["name"], match["ref"])
        return self._blob(path, match["ref"])

    def _manifest(self, name: str, reference: str) -> None:
        found = self.registry.manifests.get((name, reference))
        if found is None:
            return self._error(404, "MANIFEST_UNKNOWN", "manifest unknown", reference)
        media_type, body = found
        digest = digest_of(body)
        headers = {
            "Content-Type": media_type,
            "Docker-Content-Digest": digest,
            "Etag": f'"{digest}"',
        }
        self._send(200, headers, body, self.registry.reset_after)

    def _blob(self, path: str, digest: str) -> None:
        registry = self.registry
        data = registry.blobs.get(digest)
        if data is None:
            return self._error(404, "BLOB_UNKNOWN", "blob unknown", digest)
        if registry.redirect_to is not None:
            location = f"{registry.redirect_to.url}{path}?signature=scripted"
            return self._send(307, {"Location": location}, b"")
        headers = {"Content-Type": "application/octet-stream", "Accept-Ranges": "bytes"}
        if not registry.storage:
            headers["Docker-Content-Digest"] = digest
        status, body = 200, data
        match = _RANGE.fullmatch(self.headers.get("Range", ""))
        if match and not registry.ignore_range:
            first = int(match[1])
            last = min(int(match[2]), len(data) - 1) if match[2] else len(data) - 1
            if first >= len(data) or last < first:
                headers = {"Content-Range": f"bytes */{len(data)}"}
                return self._error(416, "RANGE_INVALID", "bad range", None, headers)
            status, body = 206, data[first : last + 1]
            headers["Content-Range"] = f"bytes {first}-{last}/{len(data)}"
        self._send(status, headers, body, registry.reset_after)

    def _page(self, key, items, query, path, extra=None) -> None:
        """A paginated list, as registries page catalogs and tag lists."""
        try:
            n = int(query.get("n", ["100"])[0])
        except ValueError:
            return self._error(400, "PAGINATION_NUMBER_INVALID", "bad n")
        last = query.get("last", [""])[0]
        items = [item for item in items if item > last]
        page, more = items[: max(n, 0)], len(items) > max(n, 0)
        headers = {}
        if more and page:
            headers["Link"] = f'<{path}?last={page[-1]}&n={n}>; rel="next"'
        self._json(200, {**(extra or {}), key: page}, headers)

    def _challenge(self, path: str) -> None:
        registry = self.registry
        challenge = f'Bearer realm="{registry.url}/token",service="scripted"'
        match = _ROUTE.fullmatch(path) or _TAGS.fullmatch(path)
        if match:
            challenge += f',scope="repository:{match["name"]}:pull"'
        elif path == "/v2/_catalog":
            challenge += ',scope="registry:catalog:*"'
        detail = [{"Type": "repository", "Action": "pull"}]
        headers = {"WWW-Authenticate": challenge}
        self._error(401, "UNAUTHORIZED", "authentication required", detail, headers)

    def _error(self, status, code, message, detail=None, headers=None) -> None:
        error = {"code": code, "message": message, "detail": detail}
        self._json(status, {"errors": [error]}, headers)

    def _json(self, status: int, document, headers=None) -> None:
        headers = {"Content-Type": "application/json", **(headers or {})}
        self._send(status, headers, json.dumps(document).encode())

    def _send(self, status: int, headers: dict, body: bytes, cut=None) -> None:
        self.send_response(status)
        if not self.registry.storage:
            headers = {"Docker-Distribution-API-Version": "registry/2.0", **headers}
        if self.registry.cookie:
            headers["Set-Cookie"] = f"{self.registry.cookie}; Path=/"
        headers["Content-Length"] = str(len(body))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command == "HEAD":
            return
        if cut is None or not body:
            self.wfile.write(body)
            return
        self.wfile.write(body[: min(cut, len(body) - 1)])
        self.wfile.flush()
        self._reset()

    def _reset(self) -> None:
        """Close with a TCP reset, not a clean end: the body is cut short."""
        self.close_connection = True
        try:
            self.connection.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
            self.connection.close()
        except OSError as e:
            raise LabError(f"could not reset the connection: {e}") from e
