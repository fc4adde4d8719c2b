"""Seeders as real processes in front of the real registry."""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import libtorrent as lt

from eagle.lab.cluster import Cluster
from eagle.lab.image import push, small_image
from eagle.lab.registry import Registry
from tests.test_lab import LabTestCase

_direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def get(url: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with _direct.open(request, timeout=60) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


class SeederTests(LabTestCase):
    def setUp(self):
        self.need("docker-registry", "skopeo")
        tmp = self.tmpdir()
        self.registry = self.start(Registry(tmp / "registry"))
        self.image = small_image(tmp / "layout", layers=2, size=4 << 20)
        push(self.image, self.registry.url, "eagle/seeded", "1")
        self.cluster = self.start(
            Cluster(tmp / "cluster", self.registry.url, agents=0, seeders=2)
        )
        self.layer = max(self.image.layers, key=lambda layer: layer.size)

    def torrent_url(self, seeder) -> str:
        return f"{seeder.url}/torrents/{self.layer.digest}?repository=eagle/seeded"

    def test_concurrent_requests_share_one_fetch(self):
        """Twenty agents asking a seeder at once make the origin send the blob once."""
        seeder = self.cluster.seeders[0]
        with ThreadPoolExecutor(20) as pool:
            answers = list(pool.map(get, [self.torrent_url(seeder)] * 20))
        self.assertEqual({status for status, _, _ in answers}, {200})
        self.assertEqual(len({body for _, _, body in answers}), 1)
        self.assertEqual(self.registry.blob_gets(self.layer.digest), 1)

    def test_torrents_are_the_same_on_every_seeder(self):
        """Two seeders fetching the same blob make byte-identical v2 torrents."""
        bodies = [get(self.torrent_url(s))[2] for s in self.cluster.seeders]
        self.assertEqual(bodies[0], bodies[1])
        info = lt.torrent_info(lt.bdecode(bodies[0]))
        self.assertEqual(info.name(), self.layer.digest.split(":")[1])
        self.assertFalse(info.info_hashes().v2.is_all_zeros())
        self.assertTrue(info.info_hashes().v1.is_all_zeros())

    def test_blob_over_http_with_range(self):
        """The seeder serves the verified blob over HTTP, whole and in ranges."""
        seeder = self.cluster.seeders[0]
        url = f"{seeder.url}/v2/eagle/seeded/blobs/{self.layer.digest}"
        status, headers, body = get(url)
        self.assertEqual(status, 200)
        self.assertEqual(
            "sha256:" + hashlib.sha256(body).hexdigest(), self.layer.digest
        )
        self.assertEqual(headers["Docker-Content-Digest"], self.layer.digest)
        status, headers, part = get(url, {"Range": "bytes=100-"})
        self.assertEqual(status, 206)
        self.assertEqual(part, body[100:])
        self.assertEqual(
            headers["Content-Range"], f"bytes 100-{len(body) - 1}/{len(body)}"
        )

    def test_unknown_blob(self):
        """A blob the origin does not have is BLOB_UNKNOWN, and nothing is stored."""
        seeder = self.cluster.seeders[0]
        digest = "sha256:" + "0" * 64
        status, headers, body = get(
            f"{seeder.url}/torrents/{digest}?repository=eagle/seeded"
        )
        self.assertEqual(status, 404)
        self.assertEqual(headers["Content-Type"], "application/json")
        self.assertIn(b"BLOB_UNKNOWN", body)
        self.assertEqual(seeder.status()["cache"]["blobs"], 0)

    def test_bad_input(self):
        """Malformed digests and names, and unknown registries, are OCI 4xx errors."""
        seeder = self.cluster.seeders[0]
        cases = {
            "/torrents/sha256:xyz?repository=eagle/seeded": b"DIGEST_INVALID",
            "/torrents/md5:" + "0" * 32 + "?repository=a": b"DIGEST_INVALID",
            f"/torrents/{self.layer.digest}?repository=../etc": b"NAME_INVALID",
            f"/torrents/{self.layer.digest}": b"NAME_INVALID",
            f"/torrents/{self.layer.digest}?repository=a&ns=x.example": b"NAME_UNKNOWN",
        }
        for path, code in cases.items():
            status, headers, body = get(seeder.url + path)
            self.assertTrue(400 <= status < 500, (path, status, body))
            self.assertIn(code, body, path)
            self.assertEqual(headers["Content-Type"], "application/json")

    def test_origin_down(self):
        """With the origin gone, the seeder answers 503 UNAVAILABLE in OCI JSON."""
        self.registry.stop()
        status, headers, body = get(self.torrent_url(self.cluster.seeders[0]))
        self.assertEqual(status, 503)
        self.assertIn(b"UNAVAILABLE", body)
        self.assertNotIn(b"Traceback", body)
