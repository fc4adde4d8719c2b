"""The registry cases a real registry cannot produce, against a scripted origin.

Each case of ../shared/cases/registry-cases.md that needs an origin reply Debian's
docker-registry never gives (a reset mid-body, Range ignored, a Bearer challenge,
a 429, a redirect to another host, manifests without ``mediaType``, an OCI index)
runs here through a real agent and a real eagle-proxy: tracker, seeder and the
node as real processes on loopback, in front of a `ScriptedRegistry` in this
process. The tests are named after their case.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import socket
import string
import time
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from treq.client import HTTPClient
from twisted.internet.defer import Deferred
from twisted.web.client import Agent, HTTPConnectionPool

from eagle.blobs import HTTPSource, Traffic
from eagle.cache import BlobCache
from eagle.digest import Digest
from eagle.fetch import receive_blob, request_blob, request_headers
from eagle.lab.cluster import Cluster
from eagle.lab.engines import skopeo_pull
from eagle.lab.scripted import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    ScriptedRegistry,
    artifact_manifest,
    digest_of,
    image_index,
    image_manifest,
)
from eagle.manifests import TAG_TTL
from eagle.transfer import Transfer
from eagle.upstream import BlobRef, Upstream
from tests.test_lab import LabTestCase
from tests.test_mirror import TIMEOUT, files_under, request

NAME = "eagle/scripted"
TOKEN = "scripted-token"
ACCEPT = {"Accept": ", ".join([OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST])}
BEARER = {"Authorization": f"Bearer {TOKEN}"}
# Through the swarm on agents, however small the blob; a stall ends soon.
AGENT_CONFIG = {"swarm_min_size": 0, "swarm_timeout": 5}
# The headers of an answer that must be the origin's own.
ORIGIN_HEADERS = (
    "content-type",
    "docker-content-digest",
    "content-length",
    "etag",
    "www-authenticate",
    "retry-after",
    "link",
)


def config_blob(architecture: str) -> bytes:
    document = {
        "architecture": architecture,
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": []},
    }
    return json.dumps(document).encode()


def stream(port: int, path: str, headers: dict | None = None):
    """GET ``path`` and read its body for as long as the server sends it:
    (status, headers, bytes received, the error that ended the read or None)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        got = {k.lower(): v for k, v in response.getheaders()}
        body, error = b"", None
        try:
            while chunk := response.read1(1 << 16):
                body += chunk
            if response.length:  # http.client counts down what is still due
                error = http.client.IncompleteRead(body, response.length)
        except (http.client.HTTPException, OSError) as e:
            error = e
        return response.status, got, body, error
    finally:
        conn.close()


class ScriptedCase(LabTestCase):
    """A scripted origin holding ``eagle/scripted`` (manifests of every kind,
    with and without ``mediaType``) and ``eagle/other``, and one ``kind`` daemon
    in front of it."""

    kind = "agent"

    def setUp(self):
        self.tmp = self.tmpdir()
        origin = self.origin = self.start(ScriptedRegistry())
        self.config = config_blob("amd64")
        self.layer = os.urandom(2 << 20)  # several pieces
        self.small = os.urandom(300 << 10)
        for blob in (self.config, self.layer, self.small):
            origin.add_blob(blob)
        # M2: schema 2 and OCI manifests with no top-level mediaType.
        self.plain = image_manifest(self.config, [self.layer, self.small])
        origin.add_manifest(NAME, self.plain, OCI_MANIFEST, "plain")
        self.docker = image_manifest(
            self.config, [self.layer], DOCKER_MANIFEST, declare_type=False
        )
        origin.add_manifest(NAME, self.docker, DOCKER_MANIFEST, "docker")
        self.bare = image_manifest(self.config, [self.small], declare_type=False)
        origin.add_manifest(NAME, self.bare, OCI_MANIFEST, "bare")
        # M3: an OCI index whose children exist by digest only.
        arm = config_blob("arm64")
        origin.add_blob(arm)
        self.children = [
            image_manifest(self.config, [self.small]),
            image_manifest(arm, [self.layer]),
        ]
        for child in self.children:
            origin.add_manifest(NAME, child, OCI_MANIFEST)
        self.index = image_index(
            [(OCI_MANIFEST, self.children[0], "amd64")]
            + [(OCI_MANIFEST, self.children[1], "arm64")]
        )
        origin.add_manifest(NAME, self.index, OCI_INDEX, "multi")
        # Docker's manifest list of schema-2 children, and an OCI artifact.
        docker_children = [
            (DOCKER_MANIFEST, self.docker, "amd64"),
            (
                DOCKER_MANIFEST,
                image_manifest(arm, [self.small], DOCKER_MANIFEST),
                "arm",
            ),
        ]
        for _, child, _ in docker_children:
            origin.add_manifest(NAME, child, DOCKER_MANIFEST)
        self.docker_list = image_index(docker_children, DOCKER_LIST)
        origin.add_manifest(NAME, self.docker_list, DOCKER_LIST, "docker-list")
        origin.add_blob(b"{}")
        self.artifact = artifact_manifest("application/vnd.eagle.test", [self.small])
        origin.add_manifest(NAME, self.artifact, OCI_MANIFEST, "artifact")
        origin.add_manifest("eagle/other", self.bare, OCI_MANIFEST, "1")
        self.cluster = self.start(
            Cluster(
                self.tmp / "cluster",
                origin.url,
                agents=1,
                kind=self.kind,
                agent_config=AGENT_CONFIG if self.kind == "agent" else {},
            )
        )
        self.node = self.cluster.agents[0]

    def get(self, path: str, headers: dict | None = None, method: str = "GET"):
        return request(self.node.port, method, path, headers)

    def direct(self, path: str, headers: dict | None = None, method: str = "GET"):
        """The origin's own answer, asked without Eagle in between."""
        return request(self.origin.port, method, path, headers)

    def blob_path(self, blob: bytes) -> str:
        return f"/v2/{NAME}/blobs/{digest_of(blob)}"

    def manifest_path(self, reference: str | bytes) -> str:
        if isinstance(reference, bytes):
            reference = digest_of(reference)
        return f"/v2/{NAME}/manifests/{reference}"

    def data_dirs(self) -> list[Path]:
        return [d.state_dir / "data" for d in (self.node, *self.cluster.seeders)]

    def assertSameAnswer(self, mine, theirs, what="") -> None:
        """Status, body and the origin's headers exactly as the origin sent them."""
        self.assertEqual(mine[0], theirs[0], (what, mine[2][:120]))
        self.assertEqual(mine[2], theirs[2], what)
        for name in ORIGIN_HEADERS:
            self.assertEqual(mine[1].get(name), theirs[1].get(name), (what, name))

    def assertNoPartialBlobs(self) -> None:
        for data in self.data_dirs():
            self.assertEqual(files_under(data / "blobs"), set(), data)
            self.assertEqual(files_under(data / "incoming"), set(), data)


class RegistryCases:
    """The cases, for agents and proxies alike."""

    def test_m2_manifest_without_media_type(self):
        """Schema-2 and OCI manifests without a top-level mediaType come back as
        the origin sent them, by tag and by digest, GET and HEAD (M2)."""
        for reference in ["docker", "bare", self.docker, self.bare]:
            path = self.manifest_path(reference)
            for method in ["GET", "HEAD"]:
                mine = self.get(path, ACCEPT, method)
                self.assertEqual(mine[0], 200, (path, method, mine[2][:120]))
                theirs = self.direct(path, ACCEPT, method)
                self.assertSameAnswer(mine, theirs, (path, method))

    def test_m1_every_manifest_type(self):
        """Docker schema 2, a Docker manifest list, an OCI manifest, an OCI index
        and an OCI artifact, each asked for with only its own type in Accept, by
        tag and by digest, GET and HEAD, come back exactly as the origin sent
        them (M1)."""
        for tag, body, media_type in [
            ("docker", self.docker, DOCKER_MANIFEST),
            ("docker-list", self.docker_list, DOCKER_LIST),
            ("plain", self.plain, OCI_MANIFEST),
            ("multi", self.index, OCI_INDEX),
            ("artifact", self.artifact, OCI_MANIFEST),
        ]:
            accept = {"Accept": media_type}
            for path in [self.manifest_path(tag), self.manifest_path(body)]:
                for method in ["GET", "HEAD", "GET"]:  # the last from the cache
                    mine = self.get(path, accept, method)
                    self.assertEqual(mine[1].get("content-type"), media_type, path)
                    theirs = self.direct(path, accept, method)
                    self.assertSameAnswer(mine, theirs, (path, method))
                for seen in self.origin.seen(path=path):
                    self.assertEqual(seen.headers.get("accept"), media_type, path)

    def test_m3_index_by_tag_digest_and_children(self):
        """An OCI index by tag and by digest, and each child by digest, are
        byte-identical with the origin's type and digest, fetched and then
        from the cache with the origin gone (M3)."""
        paths = [self.manifest_path("multi"), self.manifest_path(self.index)]
        paths += [self.manifest_path(child) for child in self.children]
        theirs = {path: self.direct(path, ACCEPT) for path in paths}
        self.assertEqual(theirs[paths[0]][1]["content-type"], OCI_INDEX)
        for path in paths:
            self.assertSameAnswer(self.get(path, ACCEPT), theirs[path], path)
        self.origin.stop()
        for path in paths:
            self.assertSameAnswer(self.get(path, ACCEPT), theirs[path], path)
            head = self.get(path, ACCEPT, "HEAD")
            self.assertSameAnswer(head, theirs[path][:2] + (b"",), path)

    def test_b2_f1_origin_resets_mid_body(self):
        """When the origin resets mid-blob, the client's response is aborted after
        its headers, no cache keeps any of it, and the next pull succeeds (B2, F1);
        a manifest cut short is a 502 in OCI JSON."""
        self.origin.reset_after = 64 << 10
        status, headers, body, error = stream(
            self.node.port, self.blob_path(self.layer)
        )
        self.assertEqual(status, 200)
        self.assertEqual(headers["content-length"], str(len(self.layer)))
        self.assertEqual(headers["docker-content-digest"], digest_of(self.layer))
        self.assertIsNotNone(error, "a short body ended cleanly")
        self.assertLess(len(body), len(self.layer))
        self.assertOCIError(self.get(self.manifest_path("plain"), ACCEPT), 502)
        self.assertNoPartialBlobs()

        self.origin.reset_after = None
        status, _, body = self.get(self.blob_path(self.layer))
        self.assertEqual((status, body == self.layer), (200, True))
        hex_ = hashlib.sha256(self.layer).hexdigest()
        for data in self.data_dirs():
            self.assertEqual((data / "blobs" / hex_).read_bytes(), self.layer, data)
        self.assertEqual(self.get(self.manifest_path("plain"), ACCEPT)[0], 200)

    def test_a1_challenge_reaches_the_client(self):
        """Without a token, the origin's 401 with its Bearer challenge and OCI body
        reaches the client unchanged: on the version check (where clients learn
        the challenge), a manifest, a tag list and a blob (A1)."""
        self.origin.token = TOKEN
        for path in [
            "/v2/",
            self.manifest_path("plain"),
            f"/v2/{NAME}/tags/list",
            self.blob_path(self.layer),
        ]:
            mine, theirs = self.get(path, ACCEPT), self.direct(path, ACCEPT)
            self.assertEqual(theirs[0], 401)
            self.assertSameAnswer(mine, theirs, path)
        self.assertNoPartialBlobs()

    def test_a1_token_is_forwarded(self):
        """With the token, the client's Authorization reaches the origin on the
        manifest GET and on the blob fetch (made by the seeder or the node), and
        the blob verifies (A1)."""
        self.origin.token = TOKEN
        manifest = self.manifest_path("plain")
        mine = self.get(manifest, {**ACCEPT, **BEARER})
        self.assertSameAnswer(mine, self.direct(manifest, {**ACCEPT, **BEARER}))
        seen = self.origin.seen("GET", manifest)
        self.assertEqual(seen[0].headers.get("authorization"), BEARER["Authorization"])
        status, _, body = self.get(self.blob_path(self.layer), BEARER)
        self.assertEqual((status, body == self.layer), (200, True))
        gets = self.origin.seen("GET", self.blob_path(self.layer))
        self.assertGreaterEqual(len(gets), 1)
        for seen in gets:
            self.assertEqual(seen.headers.get("authorization"), BEARER["Authorization"])

    def test_a1_cached_blob_still_needs_credentials(self):
        """A blob cached for a client with the token is not handed to a client
        without one: that client gets the origin's 401, as without Eagle (A1)."""
        self.origin.token = TOKEN
        path = self.blob_path(self.small)
        status, _, body = self.get(path, BEARER)
        self.assertEqual((status, body == self.small), (200, True))
        for method in ["GET", "HEAD"]:
            mine, theirs = (
                self.get(path, method=method),
                self.direct(path, method=method),
            )
            self.assertEqual(theirs[0], 401)
            self.assertSameAnswer(mine, theirs, method)

    def test_a1_skopeo_logs_in_through_the_node(self):
        """skopeo, given credentials, learns the Bearer challenge from the node's
        version check, fetches its token and pulls through the node (A1)."""
        self.need("skopeo")
        self.origin.token = TOKEN
        ref = f"127.0.0.1:{self.node.port}/{NAME}:plain"
        pulled = skopeo_pull(ref, self.tmp / "plain", creds="user:secret")
        layers = [self.layer, self.small]
        self.assertEqual(pulled, [digest_of(b) for b in layers])
        # An OCI index: skopeo picks this machine's child (amd64, or else arm64).
        ref = f"127.0.0.1:{self.node.port}/{NAME}:multi"
        pulled = skopeo_pull(ref, self.tmp / "multi", creds="user:secret")
        self.assertIn(
            pulled,
            [[digest_of(self.small)], [digest_of(self.layer)]],
        )
        token_requests = self.origin.seen("GET", "/token")
        self.assertIn(
            f"repository%3A{NAME.replace('/', '%2F')}%3Apull", str(token_requests)
        )

    def test_429_passes_retry_after(self):
        """With nothing cached, a 429 from the origin reaches the client as a 429
        with its Retry-After, for a manifest and for a blob."""
        self.origin.retry_after = 7
        for path in [self.manifest_path("plain"), self.blob_path(self.layer)]:
            mine, theirs = self.get(path, ACCEPT), self.direct(path, ACCEPT)
            self.assertEqual((mine[0], mine[1].get("retry-after")), (429, "7"), path)
            self.assertSameAnswer(mine, theirs, path)

    def test_429_serves_the_stale_tag(self):
        """A tag fetched earlier and no longer fresh is served stale, as the
        origin sent it, when the origin answers 429."""
        path = self.manifest_path("plain")
        before = self.get(path, ACCEPT)
        self.assertEqual(before[0], 200)
        time.sleep(TAG_TTL + 0.5)
        self.origin.retry_after = 7
        asked = len(self.origin.seen("GET", path))
        self.assertSameAnswer(self.get(path, ACCEPT), before)
        self.assertEqual(len(self.origin.seen("GET", path)), asked + 1)

    def test_redirect_to_another_host(self):
        """A blob HEAD and GET answered with a 307 to another host (object storage
        that knows no digests) are followed; that host does not get the
        registry's Authorization, the HEAD has the blob's length and digest, and
        the blob verifies."""
        storage = self.start(ScriptedRegistry(self.origin.blobs, storage=True))
        self.origin.redirect_to = storage
        self.origin.token = TOKEN
        status, headers, _ = self.get(self.blob_path(self.layer), BEARER, "HEAD")
        self.assertEqual(status, 200)
        self.assertEqual(headers["content-length"], str(len(self.layer)))
        digest = digest_of(self.layer)
        self.assertEqual(headers["docker-content-digest"], digest)
        status, headers, body = self.get(self.blob_path(self.layer), BEARER)
        self.assertEqual(headers["docker-content-digest"], digest)
        self.assertEqual((status, body == self.layer), (200, True))
        redirected = self.origin.seen("GET", self.blob_path(self.layer))
        self.assertGreaterEqual(len(redirected), 1)
        self.assertTrue(all("authorization" in r.headers for r in redirected))
        followed = storage.seen(path=self.blob_path(self.layer))
        self.assertEqual({seen.method for seen in followed}, {"GET", "HEAD"})
        for seen in followed:
            self.assertNotIn("authorization", seen.headers)
            self.assertIn("signature=scripted", seen.path)

    def test_catalog_and_tags_list_pass_through(self):
        """_catalog and tags/list answer as the origin does, pages and Link
        headers included, with the client's query (less ns) sent on."""
        for path in [
            "/v2/_catalog",
            "/v2/_catalog?n=1",
            "/v2/_catalog?n=1&last=eagle/other",
            "/v2/_catalog?n=oops",
            f"/v2/{NAME}/tags/list",
            f"/v2/{NAME}/tags/list?n=2",
            f"/v2/{NAME}/tags/list?n=2&last=docker",
            "/v2/eagle/absent/tags/list",
        ]:
            self.assertSameAnswer(self.get(path), self.direct(path), path)
        self.assertIn("link", self.get("/v2/_catalog?n=1")[1])
        self.get(f"/v2/_catalog?ns={self.origin.host}&n=1&last=a")
        self.assertEqual(
            self.origin.seen(path="/v2/_catalog")[-1].path.split("?")[1], "n=1&last=a"
        )

    def test_cookies_stay_with_their_client(self):
        """A cookie the origin sets in answer to one client is not sent to the
        origin with another client's requests."""
        self.origin.cookie = "session=first-client"
        self.origin.token = TOKEN
        self.assertEqual(
            self.get(self.manifest_path("plain"), {**ACCEPT, **BEARER})[0], 200
        )
        self.origin.token = None
        self.assertEqual(self.get(self.manifest_path("docker"), ACCEPT)[0], 200)
        self.get(self.blob_path(self.small))
        sent = [r for r in self.origin.seen() if "cookie" in r.headers]
        self.assertEqual(sent, [])

    def test_no_compression_asked(self):
        """Eagle never asks the origin to compress: lengths and bytes must arrive
        as stored."""
        self.get(self.manifest_path("plain"), ACCEPT)
        self.get(self.blob_path(self.small))
        asked = [r for r in self.origin.seen() if "accept-encoding" in r.headers]
        self.assertEqual(asked, [])


class AgentRegistryCasesTests(RegistryCases, ScriptedCase):
    kind = "agent"


class ProxyRegistryCasesTests(RegistryCases, ScriptedCase):
    kind = "proxy"


class OriginIgnoresRangeTests(LabTestCase):
    """R1, in this process: the HTTP fetcher against a scripted origin that does
    or does not honour Range, from an offset as when a swarm download is finished
    over HTTP."""

    def setUp(self):
        from twisted.internet import reactor

        self.reactor = reactor
        self.origin = self.start(ScriptedRegistry())
        self.data = os.urandom(1 << 20)
        self.digest = self.origin.add_blob(self.data)
        self.url = f"{self.origin.url}/v2/{NAME}/blobs/{self.digest}"
        pool = HTTPConnectionPool(reactor, persistent=True)
        self.addCleanup(pool.closeCachedConnections)
        self.http = HTTPClient(Agent(reactor, pool=pool))
        self.offset = 300_000

    def test_r1_request_blob_skips_an_ignored_range(self):
        """request_blob sees the 200 to its Range request and receive_blob drops
        the bytes already held, so the file verifies (R1)."""
        self.origin.ignore_range = True
        return Deferred.fromCoroutine(self._receive(skip=self.offset))

    def test_r1_request_blob_honoured_range(self):
        """With Range honoured, the 206 body continues the file, which verifies."""
        return Deferred.fromCoroutine(self._receive(skip=0))

    async def _receive(self, skip: int):
        path = str(self.tmpdir() / "blob")
        with open(path, "wb") as f:
            f.write(self.data[: self.offset])
        sha256 = hashlib.sha256(self.data[: self.offset])
        body = await request_blob(
            self.http,
            self.reactor,
            self.url,
            request_headers(None),
            self.digest,
            "origin",
            self.offset,
        )
        self.assertEqual((body.size, body.skip), (len(self.data), skip))
        progress = []
        await receive_blob(
            self.reactor, body, path, self.offset, sha256, progress.append
        )
        self.assertEqual(sha256.hexdigest(), self.digest.split(":")[1])
        with open(path, "rb") as f:
            self.assertEqual(f.read(), self.data)
        self.assertEqual(progress[-1], len(self.data))
        (seen,) = self.origin.seen("GET")
        self.assertEqual(seen.headers["range"], f"bytes={self.offset}-")

    def test_r1_resume_from_an_origin_that_ignores_range(self):
        """HTTPSource.resume (the swarm's fallback) commits a verified blob when
        the origin ignores Range, and counts every byte the origin sent (R1)."""
        self.origin.ignore_range = True
        return Deferred.fromCoroutine(self._resume(len(self.data)))

    def test_r1_resume_with_range(self):
        """HTTPSource.resume continues from its offset with a honoured Range."""
        return Deferred.fromCoroutine(self._resume(len(self.data) - self.offset))

    async def _resume(self, origin_bytes: int):
        cache = BlobCache(str(self.tmpdir() / "cache"), 1 << 30)
        traffic = Traffic()
        source = HTTPSource(self.http, self.reactor, cache, [], traffic)
        upstream = Upstream(self.origin.host, self.origin.url)
        ref = BlobRef(upstream, NAME, Digest.parse(self.digest))
        path = cache.incoming_path(ref.hex, "http")
        with open(path, "wb") as f:
            f.write(self.data[: self.offset])
        transfer = Transfer(self.digest, len(self.data), path, "swarm")
        transfer.advance(self.offset)
        sha256 = hashlib.sha256(self.data[: self.offset])
        await source.resume(ref, transfer, self.offset, sha256)
        self.assertIsNone(transfer.failure)
        self.assertTrue(transfer.verified)
        with open(cache.blob_path(ref.hex), "rb") as f:
            self.assertEqual(f.read(), self.data)
        self.assertEqual(os.listdir(cache.incoming), [])
        self.assertEqual(traffic.received["origin"], origin_bytes)


# Pieces of request paths that have broken registries and mirrors before.
_TRICKY = [
    "..",
    ".",
    "%2e%2e",
    "%2E%2e",
    "%2e",
    "%00",
    "%ff",
    "%2f",
    "%2F..",
    "%5c",
    "%25",
    "%",
    "%zz",
    "~",
    "_catalog",
    "library",
    "eagle",
    "scripted",
    "manifests",
    "blobs",
    "tags",
    "list",
    "uploads",
    "127.0.0.1:5000",
    "docker.io",
    "caf%C3%A9",
    "a" * 300,
    "a" * 5000,
]
# What may appear in a request target: visible ASCII but for '#' and '?'.
_URL_CHARS = "".join(c for c in string.printable[:94] if c not in "#?")
_HEX = "0123456789abcdef"


def _digests(real: list[str]):
    hexes = st.text(alphabet=_HEX + "ABCDEFxyz%.", min_size=0, max_size=140)
    return st.one_of(
        st.sampled_from(real),
        st.builds(lambda h: f"sha256:{h}", hexes),
        st.builds(
            lambda algorithm, h: f"{algorithm}:{h}",
            st.sampled_from(["sha512", "md5", "SHA256", "sha256+b64", "", "blake3"]),
            hexes,
        ),
        st.builds(lambda d: d[:-1] + "%00", st.sampled_from(real)),
    )


def _requests(digests: list[str], tags: list[str], origin: str):
    """(method, request target, Range or None), mostly close to a valid request
    so that most reach the origin, each with something odd in it."""
    tricky = st.sampled_from(_TRICKY)
    component = st.from_regex(r"[a-z0-9]+([._-][a-z0-9]+)*", fullmatch=True)
    segment = st.one_of(
        tricky,
        component,
        st.text(alphabet=_URL_CHARS.replace("/", ""), min_size=1, max_size=40),
    )
    known = [NAME, "eagle/other", "eagle/absent", "single", f"{origin}/{NAME}"]
    name = st.one_of(
        st.sampled_from(known + [f"docker.io/{NAME}", f"{NAME}/..", f"../{NAME}"]),
        st.lists(component, min_size=1, max_size=3).map("/".join),
        st.lists(segment, min_size=1, max_size=4).map("/".join),
        st.builds("{}/{}".format, st.sampled_from(known), tricky),
        st.builds("{}/{}".format, tricky, st.sampled_from(known)),
    )
    query_item = st.one_of(
        st.sampled_from(["ns=docker.io", "ns=127.0.0.1:1", "ns=%ff", "ns=", "n=1"]),
        st.sampled_from(["n=-1", "n=99999999999999999999", "last=%00", "%00=%00"]),
        st.just(f"ns={origin}"),
        st.text(alphabet=_URL_CHARS, max_size=30),
    )
    query = st.one_of(
        st.just(""),
        st.lists(query_item, min_size=1, max_size=3).map(lambda q: "?" + "&".join(q)),
    )
    reference = st.one_of(_digests(digests), st.sampled_from(tags), segment)
    path = st.one_of(
        st.builds("/v2/{}/blobs/{}{}".format, name, _digests(digests), query),
        st.builds("/v2/{}/manifests/{}{}".format, name, reference, query),
        st.builds("/v2/{}/tags/list{}".format, name, query),
        st.builds("/v2/_catalog{}".format, query),
        st.builds("/v2/{}/{}/{}{}".format, name, segment, reference, query),
        st.builds("/{}{}".format, st.text(alphabet=_URL_CHARS, max_size=60), query),
    )
    ranges = st.one_of(
        st.none(),
        st.sampled_from(
            [
                "bytes=0-0",
                "bytes=100-",
                "bytes=-10",
                "bytes=-0",
                "bytes=5-1",
                "bytes=0-99999999999999999999999",
                "bytes=0-1,5-6",
                "bytes=--1",
                "bytes=१-२",
                "items=0-1",
                "bytes=",
                "bytes=%00-",
            ]
        ),
        st.text(alphabet=string.printable[:95], max_size=40),
    )
    method = st.sampled_from(["GET", "HEAD"])
    return st.tuples(method, path, ranges)


def raw_request(port: int, method: str, target: str, headers: dict):
    """Send a request line exactly as given (http.client would check it)."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines += ["Connection: close", "", ""]
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall("\r\n".join(lines).encode("utf-8"))
        response = http.client.HTTPResponse(sock, method=method)
        response.begin()
        body = response.read()
        got = {k.lower(): v for k, v in response.getheaders()}
        return response.status, got, body


class BadInputPropertyTests(ScriptedCase):
    """Random paths, queries, digests and ranges against a running agent."""

    kind = "agent"

    def test_random_requests(self):
        """Whatever the path, query or Range, an agent answers 2xx, 3xx or 4xx,
        never 5xx; every error it sends has an OCI JSON body; and no file appears
        outside its data directories."""
        data_dirs = [str(d) for d in self.data_dirs()]
        outside = [self.tmp, Path(os.getcwd())]
        before = files_under(*outside)
        digests = [digest_of(b) for b in (self.layer, self.small)]
        digests.append(digest_of(self.index))
        tags = ["plain", "multi", "docker", "bare", "absent"]

        @settings(
            max_examples=200,
            deadline=None,
            database=None,
            derandomize=False,
            suppress_health_check=[HealthCheck.too_slow],
        )
        @given(_requests(digests, tags, self.origin.host))
        def check(case):
            method, target, range_ = case
            headers = {"Range": range_} if range_ is not None else {}
            status, got, body = raw_request(self.node.port, method, target, headers)
            self.assertLess(status, 500, (method, target[:300], range_, body[:300]))
            if status >= 400 and method == "GET":
                self.assertEqual(got.get("content-type"), "application/json", target)
                error = json.loads(body)["errors"][0]
                self.assertIsInstance(error["code"], str)
                self.assertIsInstance(error["message"], str)

        check()
        new = files_under(*outside) - before
        stray = {f for f in new if not f.startswith(tuple(data_dirs))}
        self.assertEqual(stray, set())
        self.assertFalse(Path("/etc/blobs").exists())
        log = self.node.log_path.read_text()
        self.assertNotIn("Traceback", log)
        self.assertNotIn("unexpected error", log)


class OwnCredentialsTests(LabTestCase):
    def test_configured_credentials_used_when_the_client_brings_none(self):
        """With a user configured for the registry, agent and seeder trade it at
        the token service for a Bearer token and fetch as that user."""
        origin = self.start(ScriptedRegistry())
        layer = os.urandom(2 << 20)
        origin.add_blob(layer)
        manifest = image_manifest(config_blob("amd64"), [layer])
        origin.add_manifest(NAME, manifest, OCI_MANIFEST, "1")
        origin.token = TOKEN
        cluster = self.start(
            Cluster(
                self.tmpdir() / "cluster",
                origin.url,
                agents=1,
                agent_config=AGENT_CONFIG,
                registry_options={"username": "eagle", "password": "pw"},
            )
        )
        port = cluster.agents[0].port
        status, _, body = request(port, "GET", f"/v2/{NAME}/manifests/1", ACCEPT)
        self.assertEqual((status, body), (200, manifest))
        status, _, body = request(port, "GET", f"/v2/{NAME}/blobs/{digest_of(layer)}")
        self.assertEqual((status, body), (200, layer))
        logins = origin.seen(path="/token")
        self.assertTrue(logins)
        expected = "Basic " + base64.b64encode(b"eagle:pw").decode()
        self.assertEqual({r.headers.get("authorization") for r in logins}, {expected})
