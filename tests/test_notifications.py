"""Registry push notifications: the real registry posts its events to a real
seeder, which fetches and seeds the pushed image's blobs before anyone pulls."""

from __future__ import annotations

import http.client
import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path

from eagle.images import EVENTS_TYPE
from eagle.lab.cluster import Cluster
from eagle.lab.image import push, small_image
from eagle.lab.registry import Registry
from tests.test_lab import LabTestCase
from tests.test_mirror import TIMEOUT

_direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def post(url: str, body: bytes, content_type: str = EVENTS_TYPE):
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": content_type}
    )
    try:
        with _direct.open(request, timeout=30) as response:
            return response.status, dict(response.headers.items()), response.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def envelope(host: str, repository: str, digest: str, **target) -> bytes:
    event = {
        "id": "1",
        "action": "push",
        "target": {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "repository": repository,
            "digest": digest,
            **target,
        },
        "request": {"host": host, "method": "PUT"},
    }
    return json.dumps({"events": [event]}).encode()


class NotificationTests(LabTestCase):
    def setUp(self):
        self.need("docker-registry", "skopeo")
        tmp = self.tmpdir()
        self.registry = Registry(tmp / "registry")
        self.cluster = Cluster(tmp / "cluster", self.registry.url, agents=0)
        self.seeder = self.cluster.seeders[0]
        self.webhook = f"{self.seeder.url}/preheat/notifications"
        self.registry.notifications = self.webhook
        self.start(self.registry)
        self.start(self.cluster)
        self.image = small_image(tmp / "layout", layers=2, size=2 << 20)

    def seeder_files(self, kind: str) -> set[str]:
        return set(os.listdir(self.seeder.state_dir / "data" / kind))

    def log(self) -> str:
        return Path(self.seeder.state_dir / "seeder0.log").read_text(errors="replace")

    def test_push_warms_the_seeder(self):
        """After a push, the image's layers and config are in the seeder's cache
        with their torrents, fetched once each, before any pull."""
        push(self.image, self.registry.url, "eagle/pushed", "1")
        wanted = {layer.digest.partition(":")[2] for layer in self.image.layers}
        wanted.add(self.image.config.partition(":")[2])
        deadline = time.monotonic() + TIMEOUT
        while not wanted <= self.seeder_files("blobs") & self.seeder_files("torrents"):
            self.assertLess(time.monotonic(), deadline, self.log()[-3000:])
            time.sleep(0.2)
        for digest in [layer.digest for layer in self.image.layers]:
            self.assertEqual(self.registry.blob_gets(digest), 1)
        self.assertIn("after a push", self.log())

    def test_bad_bodies(self):
        """Bodies that are not envelopes, unknown registries, wrong types and huge
        bodies get a clear 4xx in OCI JSON and a log line; nothing is fetched."""
        digest = "sha256:" + "a" * 64
        cases = [
            (b"not json", EVENTS_TYPE, 400),
            (b'{"events": "none"}', EVENTS_TYPE, 400),
            (b'{"events": [{"action": "push"}]}', EVENTS_TYPE, 400),
            (envelope(self.registry.host, "../x", digest), EVENTS_TYPE, 400),
            (envelope("elsewhere.example:5000", "a/b", digest), EVENTS_TYPE, 404),
            (envelope(self.registry.host, "a/b", digest), "text/plain", 415),
        ]
        for body, content_type, status in cases:
            answer = post(self.webhook, body, content_type)
            self.assertOCIError(answer, status)
        self.assertOCIError(self.post_announcing(2 << 20), 413)
        self.assertEqual(self.log().count("refused a notification"), len(cases))
        self.assertEqual(self.log().count("refused a request body"), 1)
        self.assertEqual(self.registry.blob_gets(), {})

    def post_announcing(self, length: int):
        """POST headers announcing a body of ``length`` bytes, none sent: the
        answer must come before the body is read."""
        conn = http.client.HTTPConnection("127.0.0.1", self.seeder.port, timeout=30)
        try:
            conn.putrequest("POST", "/preheat/notifications")
            conn.putheader("Content-Type", EVENTS_TYPE)
            conn.putheader("Content-Length", str(length))
            conn.endheaders()
            response = conn.getresponse()
            headers = {k.lower(): v for k, v in response.getheaders()}
            return response.status, headers, response.read()
        finally:
            conn.close()

    def test_unknown_manifest_is_logged(self):
        """An event for a manifest the origin does not have is accepted, and the
        failure to fetch it is logged, not retried."""
        digest = "sha256:" + "b" * 64
        status, _, body = post(
            self.webhook, envelope(self.registry.host, "eagle/none", digest)
        )
        self.assertEqual(status, 202, body)
        deadline = time.monotonic() + 10
        while "could not warm" not in self.log():
            self.assertLess(time.monotonic(), deadline)
            time.sleep(0.1)
        self.assertIn(
            "MANIFEST_UNKNOWN",
            self.log().replace("manifest unknown", "MANIFEST_UNKNOWN"),
        )
        self.assertNotIn("retrying", self.log())

    def test_pulls_and_blob_pushes_ignored(self):
        """Events that are not manifest pushes warm nothing."""
        digest = "sha256:" + "c" * 64
        pull = json.loads(envelope(self.registry.host, "a/b", digest))
        pull["events"][0]["action"] = "pull"
        blob = json.loads(
            envelope(
                self.registry.host, "a/b", digest, mediaType="application/octet-stream"
            )
        )
        for body in (pull, blob):
            status, _, answer = post(self.webhook, json.dumps(body).encode())
            self.assertEqual(status, 202)
            self.assertEqual(json.loads(answer), {"warming": 0})
