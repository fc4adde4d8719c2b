"""A pull is never worse than without Eagle: when the swarm cannot deliver, agents
finish blobs over HTTP. Real processes on loopback."""

from __future__ import annotations

import hashlib
import os

from eagle.lab.cluster import Cluster
from eagle.lab.registry import Registry
from tests.test_lab import LabTestCase
from tests.test_seeder import get


class FallbackTests(LabTestCase):
    def setUp(self):
        self.need("docker-registry")
        tmp = self.tmpdir()
        self.registry = self.start(Registry(tmp / "registry"))
        self.data = os.urandom(8 << 20)
        self.digest = self.registry.push_blob("eagle/fallback", self.data)
        self.cluster = self.start(
            Cluster(
                tmp / "cluster",
                self.registry.url,
                agents=1,
                agent_config={"swarm_timeout": 2},
            )
        )
        self.agent = self.cluster.agents[0]
        self.url = f"{self.agent.url}/v2/eagle/fallback/blobs/{self.digest}"

    def assertBlob(self, status, body):
        self.assertEqual(status, 200)
        self.assertEqual("sha256:" + hashlib.sha256(body).hexdigest(), self.digest)

    def test_trackers_down(self):
        """With the tracker gone the swarm finds no peer; the seeder sends it over
        HTTP after the stall timeout."""
        self.cluster.tracker.stop()
        status, _, body = get(self.url)
        self.assertBlob(status, body)
        received = self.agent.status()["received"]
        self.assertEqual(received.get("seeder"), len(self.data))
        self.assertIn("finishing it over HTTP", self.agent.log_path.read_text())

    def test_seeders_down(self):
        """With no seeder answering, the agent fetches from the origin itself."""
        for seeder in self.cluster.seeders:
            seeder.stop()
        status, _, body = get(self.url)
        self.assertBlob(status, body)
        self.assertEqual(self.agent.status()["received"].get("origin"), len(self.data))
        self.assertEqual(self.registry.blob_gets(self.digest), 1)

    def test_cached_blob_survives_everything_else_down(self):
        """A cached blob is served with the origin, seeder and tracker all gone."""
        self.assertBlob(*get(self.url)[::2])
        self.registry.stop()
        self.cluster.tracker.stop()
        for seeder in self.cluster.seeders:
            seeder.stop()
        self.assertBlob(*get(self.url)[::2])
