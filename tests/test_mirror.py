"""The registry API of agents and proxies, against the real registry as origin.

Each test runs a Debian docker-registry with a small image pushed to it, and a
local cluster (tracker, seeder, one agent or proxy) as real processes.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
from pathlib import Path

from eagle.lab.cluster import Cluster
from eagle.lab.image import push, small_image
from eagle.lab.registry import Registry
from tests.test_lab import LabTestCase

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
TIMEOUT = 30
NAME = "eagle/mirror"


def request(
    port: int, method: str, path: str, headers: dict | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One request to 127.0.0.1:port, the path sent exactly as given."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    try:
        conn.request(method, path, headers=headers or {})
        response = conn.getresponse()
        body = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, body
    finally:
        conn.close()


def files_under(*roots: Path) -> set[str]:
    found = set()
    for root in roots:
        for top, _, names in os.walk(root):
            found.update(os.path.join(top, name) for name in names)
    return found


class MirrorCase(LabTestCase):
    """A registry holding ``eagle/mirror:1`` (and ``library/eagle-mirror:1``),
    with one ``kind`` daemon in front of it."""

    kind = "agent"

    def setUp(self):
        self.need("docker-registry", "skopeo")
        self.tmp = self.tmpdir()
        self.registry = self.start(Registry(self.tmp / "registry"))
        self.image = small_image(self.tmp / "layout", layers=2, size=3 << 20)
        push(self.image, self.registry.url, NAME, "1")
        push(self.image, self.registry.url, "library/eagle-mirror", "1")
        self.cluster = self.start(
            Cluster(
                self.tmp / "cluster",
                self.registry.url,
                agents=1,
                kind=self.kind,
                aliases=("docker.io",),
                # Every blob through the swarm, however small, on agents.
                agent_config={"swarm_min_size": 0} if self.kind == "agent" else {},
            )
        )
        self.node = self.cluster.agents[0]
        self.layer = self.image.layers[0]
        self.blob = self.image.blob(self.layer.digest).read_bytes()

    def get(self, path: str, headers: dict | None = None, method: str = "GET"):
        return request(self.node.port, method, path, headers)

    def origin(self, path: str, headers: dict | None = None, method: str = "GET"):
        return request(self.registry.port, method, path, headers)

    def blob_path(self, digest: str | None = None, name: str = NAME) -> str:
        return f"/v2/{name}/blobs/{digest or self.layer.digest}"


class RegistryAPI:
    """What engines see of the registry API, for agents and proxies alike."""

    def test_base(self):
        """GET /v2/ is 200 JSON with the API version header."""
        status, headers, body = self.get("/v2/")
        self.assertEqual(status, 200)
        self.assertEqual(headers["content-type"], "application/json")
        self.assertEqual(headers["docker-distribution-api-version"], "registry/2.0")
        self.assertEqual(json.loads(body), {})

    def test_manifest_pass_through(self):
        """Manifest GET and HEAD, by tag and by digest, with only the OCI type in
        Accept, are byte-identical to the origin's with the same Content-Type and
        Docker-Content-Digest (M1)."""
        accept = {"Accept": OCI_MANIFEST}
        for ref in ["1", self.image.manifest]:
            path = f"/v2/{NAME}/manifests/{ref}"
            for method in ["GET", "HEAD"]:
                mine = self.get(path, accept, method)
                theirs = self.origin(path, accept, method)
                self.assertEqual(mine[0], 200, (method, ref, mine[2][:200]))
                self.assertEqual(mine[2], theirs[2])
                for header in ["content-type", "docker-content-digest"]:
                    self.assertEqual(mine[1][header], theirs[1][header], header)
                self.assertEqual(mine[1]["content-length"], theirs[1]["content-length"])
                self.assertEqual(mine[1]["content-type"], OCI_MANIFEST)
                self.assertEqual(mine[1]["docker-content-digest"], self.image.manifest)
        body = self.get(f"/v2/{NAME}/manifests/1", accept)[2]
        self.assertEqual(
            "sha256:" + hashlib.sha256(body).hexdigest(), self.image.manifest
        )

    def test_manifest_refusals_pass_through(self):
        """An Accept without the manifest's type, or an unknown tag, gets the
        origin's own answer, not one made up by the mirror."""
        for path, accept in [
            (f"/v2/{NAME}/manifests/1", DOCKER_MANIFEST),
            (f"/v2/{NAME}/manifests/absent", OCI_MANIFEST),
        ]:
            mine = self.get(path, {"Accept": accept})
            theirs = self.origin(path, {"Accept": accept})
            self.assertEqual((mine[0], mine[2]), (theirs[0], theirs[2]), path)

    def test_docker_hub_names(self):
        """alpine?ns=docker.io and library/alpine?ns=docker.io are one repository
        (N2); without ns= the default registry is used (N1)."""
        want = self.origin(
            "/v2/library/eagle-mirror/manifests/1", {"Accept": OCI_MANIFEST}
        )
        for path in [
            "/v2/eagle-mirror/manifests/1?ns=docker.io",
            "/v2/library/eagle-mirror/manifests/1?ns=docker.io",
            "/v2/library/eagle-mirror/manifests/1",
        ]:
            status, _, body = self.get(path, {"Accept": OCI_MANIFEST})
            self.assertEqual((status, body), (200, want[2]), path)

    def test_blob(self):
        """A whole blob comes with its length, digest and type, and verifies."""
        status, headers, body = self.get(self.blob_path())
        self.assertEqual(status, 200)
        self.assertEqual(body, self.blob)
        self.assertEqual(headers["content-length"], str(len(self.blob)))
        self.assertEqual(headers["docker-content-digest"], self.layer.digest)
        self.assertEqual(headers["content-type"], "application/octet-stream")
        self.assertEqual(self.registry.blob_gets(self.layer.digest), 1)
        # Served again from the cache: the origin is not asked twice.
        self.assertEqual(self.get(self.blob_path())[2], self.blob)
        self.assertEqual(self.registry.blob_gets(self.layer.digest), 1)

    def test_ranges(self):
        """Range bytes=100- and bytes=0-0 get 206 with Content-Range, on a cold
        cache and a warm one; a range past the end gets 416 (R1)."""
        size = len(self.blob)
        for _ in range(2):
            status, headers, body = self.get(self.blob_path(), {"Range": "bytes=100-"})
            self.assertEqual(status, 206)
            self.assertEqual(body, self.blob[100:])
            self.assertEqual(headers["content-range"], f"bytes 100-{size - 1}/{size}")
            self.assertEqual(headers["content-length"], str(size - 100))
            status, headers, body = self.get(self.blob_path(), {"Range": "bytes=0-0"})
            self.assertEqual((status, body), (206, self.blob[:1]))
            self.assertEqual(headers["content-range"], f"bytes 0-0/{size}")
            status, headers, body = self.get(self.blob_path(), {"Range": "bytes=-10"})
            self.assertEqual((status, body), (206, self.blob[-10:]))
            for past in [f"bytes={size}-", f"bytes={size + 5}-{size + 10}"]:
                answer = self.get(self.blob_path(), {"Range": past})
                self.assertOCIError(answer, 416, "RANGE_INVALID")
                self.assertEqual(answer[1]["content-range"], f"bytes */{size}")
            status, _, body = self.get(self.blob_path(), {"Range": "bytes=oops"})
            self.assertEqual((status, body), (200, self.blob))

    def test_head_uncached_blob(self):
        """HEAD on a blob not cached yet is 200 with its length and digest, and
        fetches nothing (B1)."""
        status, headers, body = self.get(self.blob_path(), method="HEAD")
        self.assertEqual(status, 200)
        self.assertEqual(body, b"")
        self.assertEqual(headers["content-length"], str(len(self.blob)))
        self.assertEqual(headers["docker-content-digest"], self.layer.digest)
        self.assertEqual(self.registry.blob_gets(), {})
        self.assertEqual(self.node.status()["cache"]["blobs"], 0)

    def test_empty_blob(self):
        """The empty blob is served without a fetch (it has no torrent)."""
        empty = "sha256:" + hashlib.sha256(b"").hexdigest()
        status, headers, body = self.get(self.blob_path(empty))
        self.assertEqual((status, body), (200, b""))
        self.assertEqual(headers["content-length"], "0")
        self.assertEqual(headers["docker-content-digest"], empty)

    def test_unknown_blob(self):
        """A blob the origin does not have is 404 BLOB_UNKNOWN in OCI JSON; a HEAD
        of it is a 404 too, and nothing is cached."""
        path = self.blob_path("sha256:" + "0" * 64)
        self.assertOCIError(self.get(path), 404, "BLOB_UNKNOWN")
        self.assertEqual(self.get(path, method="HEAD")[0], 404)
        self.assertEqual(self.node.status()["cache"]["blobs"], 0)

    def test_unknown_registry(self):
        """ns= naming a registry that is not configured is 404 NAME_UNKNOWN, and
        the origin is not asked."""
        before = len(self.registry.requests())
        for path in [
            f"/v2/{NAME}/manifests/1?ns=evil.example",
            self.blob_path() + "?ns=evil.example",
            self.blob_path() + "?ns=127.0.0.1:1",
        ]:
            self.assertOCIError(self.get(path), 404, "NAME_UNKNOWN")
        self.assertEqual(len(self.registry.requests()), before)

    def test_read_only(self):
        """PUT, POST, PATCH, DELETE and other methods are 405 UNSUPPORTED."""
        for method, path in [
            ("PUT", f"/v2/{NAME}/manifests/2"),
            ("POST", f"/v2/{NAME}/blobs/uploads/"),
            ("PATCH", f"/v2/{NAME}/blobs/uploads/x"),
            ("DELETE", self.blob_path()),
            ("DELETE", f"/v2/{NAME}/manifests/{self.image.manifest}"),
            ("OPTIONS", self.blob_path()),
            ("PUT", "/v2/"),
        ]:
            self.assertOCIError(self.get(path, method=method), 405, "UNSUPPORTED")
        # Nothing reached the origin's manifests.
        status, _, _ = self.origin(f"/v2/{NAME}/manifests/2")
        self.assertEqual(status, 404)

    def test_manifests_outlive_the_origin(self):
        """Once fetched, a manifest by tag and by digest is still served,
        byte-identical, when the origin is down."""
        accept = {"Accept": OCI_MANIFEST}
        by_tag = self.get(f"/v2/{NAME}/manifests/1", accept)
        digest = by_tag[1]["docker-content-digest"]
        by_digest = self.get(f"/v2/{NAME}/manifests/{digest}", accept)
        self.registry.stop()
        for path, before in (
            (f"/v2/{NAME}/manifests/1", by_tag),
            (f"/v2/{NAME}/manifests/{digest}", by_digest),
        ):
            status, headers, body = self.get(path, accept)
            self.assertEqual((status, body), (200, before[2]))
            for name in ("content-type", "docker-content-digest"):
                self.assertEqual(headers[name], before[1][name])

    def test_origin_down(self):
        """With the origin stopped, a manifest is 503 UNAVAILABLE in OCI JSON, an
        uncached blob a 5xx in OCI JSON, and a cached blob is still served."""
        self.assertEqual(self.get(self.blob_path())[2], self.blob)
        self.registry.stop()
        answer = self.get(f"/v2/{NAME}/manifests/1")
        self.assertOCIError(answer, 503, "UNAVAILABLE")
        other = self.image.layers[1].digest
        status = self.get(self.blob_path(other))[0]
        self.assertOCIError(self.get(self.blob_path(other)), status)
        self.assertTrue(500 <= status < 600, status)
        self.assertEqual(self.get(self.blob_path())[2], self.blob)


class AgentRegistryAPITests(RegistryAPI, MirrorCase):
    kind = "agent"


class ProxyRegistryAPITests(RegistryAPI, MirrorCase):
    kind = "proxy"


class BadInputTests(MirrorCase):
    """Malformed requests get clear 4xx answers and touch no file."""

    def bad_requests(self) -> list[tuple[str, dict, int, str | None]]:
        """(path, headers, status, code) of requests an agent must refuse."""
        digest = self.layer.digest
        hex_ = digest.split(":", 1)[1]
        invalid_name = 400, "NAME_INVALID"
        invalid_digest = 400, "DIGEST_INVALID"
        return [
            ("/v2/Eagle/Mirror/manifests/1", {}, *invalid_name),
            (f"/v2/eagle//mirror/blobs/{digest}", {}, *invalid_name),
            (f"/v2/{'a' * 256}/blobs/{digest}", {}, *invalid_name),
            (f"/v2/eagle/../../etc/blobs/{digest}", {}, *invalid_name),
            (f"/v2/../../../../etc/passwd/blobs/{digest}", {}, *invalid_name),
            (f"/v2/eagle/%2e%2e/%2e%2e/etc/blobs/{digest}", {}, *invalid_name),
            (f"/v2/eagle/%2E%2E/blobs/{digest}", {}, *invalid_name),
            (f"/v2/eagle%2f..%2f..%2fetc/blobs/{digest}", {}, *invalid_name),
            (f"/v2/eagle/mirror%00/blobs/{digest}", {}, *invalid_name),
            (f"/v2/eagle/%ff/blobs/{digest}", {}, *invalid_name),
            (f"/v2/eagle/caf%C3%A9/blobs/{digest}", {}, *invalid_name),
            (f"/v2/{NAME}/blobs/sha256:xyz", {}, *invalid_digest),
            (f"/v2/{NAME}/blobs/md5:{'0' * 32}", {}, *invalid_digest),
            (f"/v2/{NAME}/blobs/sha256:{hex_[:-1]}", {}, *invalid_digest),
            (f"/v2/{NAME}/blobs/sha256:{hex_}0", {}, *invalid_digest),
            (f"/v2/{NAME}/blobs/sha256:{hex_.upper()}", {}, *invalid_digest),
            (f"/v2/{NAME}/blobs/sha512:{hex_ * 2}", {}, *invalid_digest),
            (f"/v2/{NAME}/blobs/sha256:{hex_[:-1]}%00", {}, *invalid_digest),
            (f"/v2/{NAME}/blobs/sha256:..%2f..%2f{hex_[:-6]}", {}, 404, "NOT_FOUND"),
            (f"/v2/{NAME}/blobs/sha256:{hex_[:-2]}%2e%2e", {}, *invalid_digest),
            (f"/v2/{NAME}/manifests/sha256:xyz", {}, *invalid_digest),
            (f"/v2/{NAME}/manifests/.hidden", {}, 400, "MANIFEST_INVALID"),
            (f"/v2/{NAME}/manifests/{'t' * 129}", {}, 400, "MANIFEST_INVALID"),
            (f"/v2/{NAME}/manifests/..", {}, 400, "MANIFEST_INVALID"),
            (f"/v2/{NAME}/manifests/..%2f..%2fetc", {}, 404, "NOT_FOUND"),
            (f"/v2/{NAME}/blobs/{digest}?ns=%ff", {}, 400, "UNSUPPORTED"),
            (f"/v2/{NAME}/{'x' * 5000}", {}, 414, "UNSUPPORTED"),
            (f"/v2/{NAME}/wat/{digest}", {}, 404, "NOT_FOUND"),
            (
                self.blob_path(),
                {"Authorization": "Bearer " + "x" * 9000},
                400,
                "UNSUPPORTED",
            ),
        ]

    def test_bad_requests(self):
        """Malformed names, digests, references, path tricks and oversized input
        get OCI JSON 4xx errors; the origin and the file system are not touched."""
        outside = [self.tmp, Path(os.getcwd())]
        data_dir = self.node.state_dir / "data"
        before = files_under(*outside)
        origin_before = len(self.registry.requests())
        for path, headers, status, code in self.bad_requests():
            for method in ["GET", "HEAD"]:
                got, answer_headers, body = self.get(path, headers, method)
                self.assertEqual(got, status, (method, path[:100], body[:200]))
                self.assertEqual(answer_headers["content-type"], "application/json")
                if method == "GET":
                    self.assertOCIError((got, answer_headers, body), status, code)
        self.assertEqual(len(self.registry.requests()), origin_before)
        new = files_under(*outside) - before
        self.assertEqual({f for f in new if not f.startswith(str(data_dir))}, set())
        self.assertEqual(files_under(data_dir / "blobs", data_dir / "incoming"), set())
        self.assertFalse(Path("/etc/blobs").exists())

    def test_still_serving(self):
        """After a burst of bad requests the agent serves a good one."""
        for path, headers, _, _ in self.bad_requests():
            self.get(path, headers)
        self.assertEqual(self.get(self.blob_path())[2], self.blob)

    def test_client_leaves_mid_blob(self):
        """A client that drops its connection mid-blob leaves no error in the log,
        and the blob is still served whole afterwards."""
        conn = http.client.HTTPConnection("127.0.0.1", self.node.port, timeout=TIMEOUT)
        conn.request("GET", self.blob_path())
        response = conn.getresponse()
        self.assertEqual(response.status, 200)
        response.read(10)
        conn.close()
        self.assertEqual(self.get(self.blob_path())[2], self.blob)
        self.node.stop()
        log = (self.node.state_dir / f"{self.node.name}.log").read_text()
        self.assertNotIn("Traceback", log)
        self.assertNotIn("unexpected error", log)
