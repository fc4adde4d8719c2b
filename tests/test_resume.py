"""An agent stopped half way through a swarm download, by SIGKILL or by a clean
stop, goes on from the pieces it had once started again: real registry, tracker,
seeder and agent processes on loopback, the seeder's uploads slowed so that the
stop lands mid-way."""

from __future__ import annotations

import hashlib
import http.client
import os
import signal

from eagle.lab.cluster import Cluster
from eagle.lab.registry import Registry
from tests.test_lab import LabTestCase
from tests.test_seeder import get

MiB = 1 << 20
SIZE = 24 * MiB
REPO = "eagle/resume"
# The seeder uploads this fast: the blob takes some 12 s through the swarm.
UPLOAD_RATE = 2 * MiB


class ResumeTests(LabTestCase):
    def setUp(self):
        self.need("docker-registry")
        tmp = self.tmpdir()
        self.registry = self.start(Registry(tmp / "registry"))
        self.data = os.urandom(SIZE)
        self.digest = self.registry.push_blob(REPO, self.data)
        self.hex = self.digest.split(":", 1)[1]
        self.cluster = self.start(
            Cluster(
                tmp / "cluster",
                self.registry.url,
                agents=1,
                agent_config={"swarm_timeout": 60, "resume_interval": 1},
                seeder_config={"libtorrent": {"upload_rate_limit": UPLOAD_RATE}},
            )
        )
        self.agent = self.cluster.agents[0]
        self.data_dir = self.agent.state_dir / "data"
        self.path = f"/v2/{REPO}/blobs/{self.digest}"

    def read_part(self, count: int) -> int:
        """Stream the blob from the agent until ``count`` bytes came; return how
        many did (the connection is dropped)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.agent.port, timeout=60)
        try:
            conn.request("GET", self.path)
            response = conn.getresponse()
            self.assertEqual(response.status, 200)
            received = 0
            while received < count:
                chunk = response.read1(256 * 1024)
                self.assertTrue(chunk, "the stream ended early")
                received += len(chunk)
            return received
        finally:
            conn.close()

    def assertWhole(self):
        status, _, body = get(self.agent.url + self.path)
        self.assertEqual(status, 200)
        self.assertEqual(hashlib.sha256(body).hexdigest(), self.hex)

    def restart_after(self, kill: bool) -> int:
        """Stop the agent half way through the blob and start it again; return
        how many bytes its client had before the stop."""
        # The client's stream lags the swarm (pieces come rarest first): at
        # 2 MiB of it, some 5 s in, the swarm has about a third of the blob.
        had = self.read_part(2 * MiB)
        if kill:
            process, self.agent.process = self.agent.process, None
            process.send_signal(signal.SIGKILL)
            process.wait(10)
        else:
            self.agent.stop()
        # Nothing of the blob reached the blobs, only the partial download.
        self.assertFalse((self.data_dir / "blobs" / self.hex).exists())
        self.assertTrue((self.data_dir / "partial" / self.hex).exists())
        self.assertTrue((self.data_dir / "partial" / (self.hex + ".resume")).exists())
        self.agent.start()
        return had

    def assertResumed(self, at_least: int) -> None:
        stats = self.agent.status()
        received = stats["received"]
        swarm = received.get("seeder", 0) + received.get("peer", 0)
        self.assertEqual(set(received) - {"seeder", "peer"}, set(), received)
        # Bytes found on disk and bytes received add up to the blob exactly.
        self.assertEqual(stats["resumed"] + swarm, SIZE, stats)
        self.assertGreaterEqual(stats["resumed"], at_least, stats)
        self.assertLess(swarm, SIZE)
        self.assertGreater(swarm, 0)
        log = self.agent.log_path.read_text()
        self.assertIn("resuming the swarm download", log)
        self.assertNotIn("finishing it over HTTP", log)
        # The partial download is gone once the blob is complete.
        self.assertEqual(list((self.data_dir / "partial").iterdir()), [])

    def test_resume_after_sigkill(self):
        """Killed with SIGKILL half way, the agent goes on from the pieces of its
        last periodic save; after another restart the complete blob comes from
        its cache, not fetched again."""
        self.restart_after(kill=True)
        self.assertWhole()
        self.assertResumed(at_least=2 * MiB)
        self.agent.stop()
        self.agent.start()
        self.assertWhole()
        stats = self.agent.status()
        self.assertEqual(stats["received"], {})
        self.assertEqual(stats["resumed"], 0)
        self.assertEqual(self.registry.blob_gets(self.digest), 1)

    def test_resume_after_clean_stop(self):
        """Stopped cleanly half way, the agent saves resume data for every piece
        it has: at least what its client had read goes on from disk."""
        had = self.restart_after(kill=False)
        self.assertWhole()
        self.assertResumed(at_least=had)

    def test_partial_file_without_resume_data_is_checked(self):
        """A partial file with no resume data (a crash before the first save) is
        hash-checked by libtorrent: its good pieces count, a corrupt one is
        fetched again, and the blob comes out whole."""
        self.agent.stop()
        partial = self.data_dir / "partial"
        partial.mkdir(parents=True, exist_ok=True)
        damaged = bytearray(self.data[: SIZE // 2])
        damaged[100] ^= 0xFF  # piece 0 is bad
        (partial / self.hex).write_bytes(bytes(damaged) + bytes(SIZE // 2))
        self.agent.start()
        self.assertWhole()
        stats = self.agent.status()
        swarm = sum(stats["received"].values())
        self.assertEqual(stats["resumed"] + swarm, SIZE, stats)
        self.assertGreater(stats["resumed"], SIZE // 4)
        self.assertLess(stats["resumed"], SIZE // 2)
