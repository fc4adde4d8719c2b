"""``eagle preheat``: the command against real seeders and the real registry,
for an image and for an index with one platform chosen."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request

from eagle.cli_preheat import parse_image
from eagle.lab.cluster import Cluster
from eagle.lab.image import push, small_image
from eagle.lab.registry import Registry
from eagle.rendezvous import rank
from tests.test_lab import LabTestCase

_direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def _hex(digest: str) -> str:
    return digest.partition(":")[2]


class PreheatTests(LabTestCase):
    def setUp(self):
        self.need("docker-registry", "skopeo")
        self.tmp = self.tmpdir()
        self.registry = self.start(Registry(self.tmp / "registry"))
        self.cluster = self.start(
            Cluster(self.tmp / "cluster", self.registry.url, agents=0, seeders=2)
        )
        self.urls = [s.url for s in self.cluster.seeders]

    def preheat(self, image: str, *options: str) -> tuple[int, str]:
        argv = [sys.executable, "-m", "eagle.cli", "preheat", image]
        for url in self.urls:
            argv += ["--seeder", url]
        done = subprocess.run(
            [*argv, *options], capture_output=True, text=True, timeout=120
        )
        return done.returncode, done.stdout + done.stderr

    def on_owner(self, digest: str) -> bool:
        """Whether the blob and its torrent are on the seeder that owns it."""
        owner = rank(_hex(digest), self.urls)[0]
        seeder = self.cluster.seeders[self.urls.index(owner)]
        data = seeder.state_dir / "data"
        return all(
            _hex(digest) in os.listdir(data / kind) for kind in ("blobs", "torrents")
        )

    def image(self, name: str, tag: str, size: int):
        image = small_image(self.tmp / f"layout-{tag}", layers=2, size=size)
        push(image, self.registry.url, name, tag)
        return image

    def test_image_twice_and_unknown_tag(self):
        """Every blob lands on its owning seeder, fetched once; a second run finds
        them all there; an unknown tag is a clear error."""
        image = self.image("eagle/pre", "1", 2 << 20)
        blobs = [image.config, *(layer.digest for layer in image.layers)]
        code, output = self.preheat(f"{self.registry.host}/eagle/pre:1")
        self.assertEqual(code, 0, output)
        self.assertIn("3 blobs", output)
        self.assertIn("3 fetched, 0 already there, 0 failed", output)
        for digest in blobs:
            self.assertTrue(self.on_owner(digest), digest)
        code, output = self.preheat(f"{self.registry.host}/eagle/pre:1")
        self.assertEqual(code, 0, output)
        self.assertIn("0 fetched, 3 already there, 0 failed", output)
        for digest in blobs:
            self.assertEqual(self.registry.blob_gets(digest), 1, digest)
        code, output = self.preheat(f"{self.registry.host}/eagle/pre:nope")
        self.assertEqual(code, 1)
        self.assertIn("MANIFEST_UNKNOWN", output)
        self.assertNotIn("Traceback", output)

    def test_index_with_platform(self):
        """With --platform only that platform's blobs are warmed; a platform the
        index lacks is a clear error; without it, all are."""
        amd = self.image("eagle/multi", "amd", 1 << 20)
        arm = self.image("eagle/multi", "arm", 2 << 20)
        index = {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": image.manifest,
                    "size": image.blob(image.manifest).stat().st_size,
                    "platform": {"os": "linux", "architecture": arch},
                }
                for image, arch in ((amd, "amd64"), (arm, "arm64"))
            ],
        }
        request = urllib.request.Request(
            f"{self.registry.url}/v2/eagle/multi/manifests/multi",
            data=json.dumps(index).encode(),
            method="PUT",
            headers={"Content-Type": OCI_INDEX},
        )
        _direct.open(request, timeout=30).close()
        name = f"{self.registry.host}/eagle/multi:multi"
        code, output = self.preheat(name, "--platform", "linux/arm64")
        self.assertEqual(code, 0, output)
        for layer in arm.layers:
            self.assertTrue(self.on_owner(layer.digest))
        for layer in amd.layers:
            self.assertFalse(self.on_owner(layer.digest))
        code, output = self.preheat(name, "--platform", "linux/s390x")
        self.assertEqual(code, 1)
        self.assertIn("no manifest for platform linux/s390x", output)
        code, output = self.preheat(name)
        self.assertEqual(code, 0, output)
        for layer in amd.layers:
            self.assertTrue(self.on_owner(layer.digest))


class ParseTests(LabTestCase):
    def test_parse_image(self):
        """Image names are read as Docker reads them."""
        self.assertEqual(
            parse_image("127.0.0.1:5000/team/app:1"),
            ("127.0.0.1:5000", "team/app", "1"),
        )
        self.assertEqual(parse_image("team/app"), (None, "team/app", "latest"))
        digest = "sha256:" + "a" * 64
        self.assertEqual(
            parse_image(f"quay.io/app@{digest}"), ("quay.io", "app", digest)
        )
