"""A pull is never worse than without Eagle: when the swarm cannot deliver, agents
finish blobs over HTTP. Real processes on loopback."""

from __future__ import annotations

import hashlib
import os
import socket
import time

from eagle.lab.cluster import Cluster
from eagle.lab.registry import Registry
from tests.test_lab import LabTestCase
from tests.test_seeder import get


class FallbackCase(LabTestCase):
    agent_config: dict = {}
    seeder_config: dict = {}

    def setUp(self):
        self.need("docker-registry")
        tmp = self.tmpdir()
        self.registry = self.start(Registry(tmp / "registry"))
        self.data = os.urandom(8 << 20)
        self.digest = self.registry.push_blob("eagle/fallback", self.data)
        self.cluster = Cluster(
            tmp / "cluster",
            self.registry.url,
            agents=1,
            agent_config={"swarm_timeout": 2, **self.agent_config},
            seeder_config=self.seeder_config,
        )
        self.agent = self.cluster.agents[0]
        self.adjust()
        self.start(self.cluster)
        self.url = f"{self.agent.url}/v2/eagle/fallback/blobs/{self.digest}"

    def adjust(self):
        """Change the cluster's parts before they start."""

    def assertFellBack(self, fallbacks: dict, phrase: str) -> None:
        """The agent counted these fallbacks and said so in its log."""
        self.assertEqual(self.agent.status()["fallbacks"], fallbacks)
        self.assertIn(phrase, self.agent.log_path.read_text())

    def assertBlob(self, status, body):
        self.assertEqual(status, 200)
        self.assertEqual("sha256:" + hashlib.sha256(body).hexdigest(), self.digest)


class FallbackTests(FallbackCase):
    def test_trackers_down(self):
        """With the tracker gone the swarm finds no peer; the seeder sends it over
        HTTP after the stall timeout."""
        self.cluster.tracker.stop()
        status, _, body = get(self.url)
        self.assertBlob(status, body)
        received = self.agent.status()["received"]
        self.assertEqual(received.get("seeder"), len(self.data))
        self.assertFellBack({"stalled": 1}, "finishing it over HTTP")

    def test_seeders_down(self):
        """With no seeder answering, the agent fetches from the origin itself."""
        for seeder in self.cluster.seeders:
            seeder.stop()
        status, _, body = get(self.url)
        self.assertBlob(status, body)
        self.assertEqual(self.agent.status()["received"].get("origin"), len(self.data))
        self.assertEqual(self.registry.blob_gets(self.digest), 1)
        self.assertFellBack({"no_torrent": 1, "origin": 1}, "fetching from the origin")

    def test_cached_blob_survives_everything_else_down(self):
        """A cached blob is served with the origin, seeder and tracker all gone."""
        self.assertBlob(*get(self.url)[::2])
        self.registry.stop()
        self.cluster.tracker.stop()
        for seeder in self.cluster.seeders:
            seeder.stop()
        self.assertBlob(*get(self.url)[::2])


class SilentSeederTests(FallbackCase):
    """The seeder accepts connections and never answers: after seeder_timeout
    for the torrent, and again for the blob, the origin sends it."""

    agent_config = {"seeder_timeout": 2}

    def adjust(self):
        self.silent = socket.socket()
        self.silent.bind(("127.0.0.1", 0))
        self.silent.listen(16)
        self.addCleanup(self.silent.close)
        port = self.silent.getsockname()[1]
        self.agent.config_path.write_text(
            self.agent.config_path.read_text().replace(
                self.cluster.seeders[0].url, f"http://127.0.0.1:{port}"
            )
        )

    def test_seeder_silent(self):
        started = time.monotonic()
        self.assertBlob(*get(self.url)[::2])
        self.assertLess(time.monotonic() - started, 30)
        self.assertEqual(self.agent.status()["received"], {"origin": len(self.data)})
        self.assertFellBack({"no_torrent": 1, "origin": 1}, "no torrent for")


class StalledSwarmTests(FallbackCase):
    """Tracker and seeder are up and the seeder is in the swarm, but it sends
    next to nothing (1 byte/s): no piece arrives for swarm_timeout, and the
    seeder sends the blob over HTTP instead."""

    seeder_config = {"libtorrent": {"upload_rate_limit": 1}}

    def test_swarm_makes_no_progress(self):
        self.assertBlob(*get(self.url)[::2])
        received = self.agent.status()["received"]
        self.assertEqual(received.get("seeder"), len(self.data))
        self.assertEqual(received.get("peer", 0), 0)
        self.assertFellBack({"stalled": 1}, "no progress for 2")
        self.assertEqual(self.registry.blob_gets(self.digest), 1)
