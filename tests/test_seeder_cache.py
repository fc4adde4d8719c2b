"""A seeder's small cache in front of its storage, under pressure while an agent
pulls through the swarm: real registry, real seeder and agent processes."""

from __future__ import annotations

import os
import time
from pathlib import Path

import yaml

from eagle.lab.cluster import Cluster, get_json
from eagle.lab.registry import Registry
from tests.test_eviction import SlowReader, fetch
from tests.test_lab import LabTestCase
from tests.test_mirror import TIMEOUT

MiB = 1 << 20
CACHE_SIZE = 12 * MiB
REPO = "eagle/seeder-cache"
# The seeder uploads to peers this fast, so that a pull lasts a few seconds.
UPLOAD_RATE = 2 * MiB


class SeederCacheTests(LabTestCase):
    def setUp(self):
        self.need("docker-registry")
        self.tmp = self.tmpdir()
        self.registry = self.start(Registry(self.tmp / "registry"))
        self.large = os.urandom(10 * MiB)
        self.fillers = [os.urandom(3 * MiB) for _ in range(4)]
        self.large_digest = self.registry.push_blob(REPO, self.large)
        self.filler_digests = [self.registry.push_blob(REPO, f) for f in self.fillers]
        self.storage = self.tmp / "storage"
        self.cluster = self.start(
            Cluster(
                self.tmp / "cluster",
                self.registry.url,
                agents=1,
                agent_config={"swarm_min_size": 0, "swarm_timeout": 60},
                seeder_config={
                    "cache_size": CACHE_SIZE,
                    "storage": {
                        "backend": "filesystem",
                        "directory": str(self.storage),
                    },
                    "libtorrent": {"upload_rate_limit": UPLOAD_RATE},
                },
            )
        )
        self.seeder = self.cluster.seeders[0]
        self.agent = self.cluster.agents[0]

    def seeder_log(self) -> str:
        return Path(self.seeder.state_dir / "seeder0.log").read_text(errors="replace")

    def agent_log(self) -> str:
        return Path(self.agent.state_dir / "agent0.log").read_text(errors="replace")

    def seeder_cache(self) -> dict[str, int]:
        blobs = self.seeder.state_dir / "data" / "blobs"
        return {e.name: e.stat().st_size for e in os.scandir(blobs)}

    def get_from_seeder(self, digest: str, data: bytes) -> None:
        status, _, body = fetch(self.seeder.port, f"/v2/{REPO}/blobs/{digest}")
        self.assertEqual(status, 200, body[:300])
        self.assertEqual(body, data)

    def test_seeded_blob_survives_pressure_and_evicted_come_from_storage(self):
        """While an agent pulls a blob from the seeder through the swarm, other
        blobs fill the seeder's cache past its limit: the seeded blob stays and
        the pull finishes in the swarm; evicted blobs come back from storage, not
        the origin; after a restart with a smaller limit the limit holds."""
        reader = SlowReader(self.agent.port, f"/v2/{REPO}/blobs/{self.large_digest}")
        reader.hurry.set()  # the seeder's upload limit sets the pace
        reader.start()
        self.addCleanup(reader.join, 5)
        self.assertTrue(reader.headers_in.wait(TIMEOUT))
        self.assertIsNone(reader.error)
        self.assertEqual(reader.status, 200)
        deadline = time.monotonic() + TIMEOUT
        while len(reader.body) < 512 * 1024:  # pieces flow from the seeder
            self.assertLess(time.monotonic(), deadline, "no bytes from the swarm")
            self.assertIsNone(reader.error)
            time.sleep(0.05)
        for digest, data in zip(self.filler_digests, self.fillers, strict=True):
            self.get_from_seeder(digest, data)
        self.assertLess(
            len(reader.body), len(self.large), "the pull ended before the pressure"
        )
        large_hex = self.large_digest.partition(":")[2]
        self.assertIn(large_hex, self.seeder_cache())
        reader.join(TIMEOUT)
        self.assertFalse(reader.is_alive())
        self.assertIsNone(reader.error)
        self.assertEqual(bytes(reader.body), self.large)
        self.assertNotIn(f"evicted blob {self.large_digest}", self.seeder_log())
        self.assertNotIn("finishing it over HTTP", self.agent_log())
        self.assertIn("evicted blob", self.seeder_log())
        # Everything is in storage; evicted blobs come back from there.
        stored = set(os.listdir(self.storage / "blobs"))
        wanted = {
            d.partition(":")[2] for d in [self.large_digest, *self.filler_digests]
        }
        self.assertEqual(stored, wanted)
        for digest, data in zip(self.filler_digests, self.fillers, strict=True):
            self.get_from_seeder(digest, data)
        self.assertIn("from storage", self.seeder_log())
        for digest in [self.large_digest, *self.filler_digests]:
            self.assertEqual(self.registry.blob_gets(digest), 1, digest)
        self.assertLessEqual(sum(self.seeder_cache().values()), CACHE_SIZE)
        # A restart with a smaller limit: the cache shrinks to it and still serves.
        self.seeder.stop()
        config = yaml.safe_load(self.seeder.config_path.read_text())
        config["cache_size"] = 4 * MiB
        self.seeder.config_path.write_text(yaml.safe_dump(config))
        self.seeder.start()
        self.assertLessEqual(sum(self.seeder_cache().values()), 4 * MiB)
        stats = get_json(self.seeder.url + "/eagle/stats")
        self.assertLessEqual(stats["cache"]["bytes"], 4 * MiB)
        self.get_from_seeder(self.large_digest, self.large)
        self.assertEqual(self.registry.blob_gets(self.large_digest), 1)
        # A client has every byte before the seeder's last check of the blob ends
        # and moves it out of incoming/: give that a moment.
        incoming = self.seeder.state_dir / "data" / "incoming"
        deadline = time.monotonic() + 10
        while os.listdir(incoming) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual(os.listdir(incoming), [], self.seeder_log()[-4000:])
