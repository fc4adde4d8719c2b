"""Status pages: the tracker's swarms and peers and the agents' own, with a
throughput plot, rendered by the daemons and checked in headless Chromium."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time

from PIL import Image
from twisted.trial.unittest import SynchronousTestCase

from eagle.lab import offline_env
from eagle.lab.cluster import Cluster, get_json
from eagle.lab.registry import Registry
from eagle.status import History, human_bytes, node_page, plot, tracker_page
from tests.test_lab import LabTestCase
from tests.test_seeder import get

DIGEST = "sha256:" + "ab" * 32
BROWSER_TIMEOUT = 90


class HistoryTests(SynchronousTestCase):
    def test_rates(self):
        """Rates are the growth between samples over the time between them."""
        history = History(maxlen=3)
        history.add(0, {"in": 0})
        history.add(2, {"in": 100})
        history.add(4, {"in": 100})
        history.add(5, {"in": 400})
        self.assertEqual(history.rates(), [(4, {"in": 0}), (5, {"in": 300})])

    def test_counter_reset(self):
        """A total that went down (a restart) gives zero, not a negative rate."""
        history = History()
        history.add(0, {"in": 500})
        history.add(1, {"in": 100})
        self.assertEqual(history.rates(), [(1, {"in": 0})])


class PageTests(SynchronousTestCase):
    def test_plot(self):
        """One line per series, scaled to the peak, with a legend."""
        svg = plot([(0, {"a": 0, "b": 10}), (10, {"a": 5, "b": 20})], "T")
        self.assertEqual(svg.count("<polyline"), 2)
        self.assertIn(">a</text>", svg)
        self.assertIn("20 B/s", svg)
        self.assertIn("collecting samples", plot([], "T"))

    def test_tracker_page(self):
        """Swarms with their blob, peers with progress; text is escaped."""
        stats = {
            "announces": 3,
            "swarms": [
                {
                    "infohash": "cd" * 20,
                    "digest": DIGEST,
                    "size": 4_000_000,
                    "complete": 1,
                    "incomplete": 1,
                    "uploaded": {"seeder": 3_000_000, "agent": 1_000_000},
                    "peers": [
                        {
                            "kind": "agent",
                            "address": "10.0.0.1:6881",
                            "labels": {"zone": "<a>"},
                            "progress": 0.5,
                            "uploaded": 0,
                            "downloaded": 2_000_000,
                        }
                    ],
                }
            ],
            "uploaded": {"seeder": 3_000_000, "agent": 1_000_000},
            "history": [[0, 0, 0], [5, 3_000_000, 1_000_000], [10, 3_000_000, 2e6]],
        }
        page = tracker_page(stats).decode()
        self.assertIn(f'data-digest="{DIGEST}"', page)
        self.assertIn("zone=&lt;a&gt;", page)
        self.assertNotIn("<a>", page)
        self.assertIn("width:50%", page)
        self.assertIn("<polyline", page)
        self.assertIn(human_bytes(4_000_000), page)

    def test_node_page(self):
        """A node's page shows bytes by source and its swarms."""
        stats = {
            "role": "agent",
            "received": {"peer": 2048},
            "swarms": [
                {
                    "digest": DIGEST,
                    "state": "seeding",
                    "progress": 1.0,
                    "peers": 2,
                    "download_rate": 0,
                    "upload_rate": 1000,
                }
            ],
        }
        page = node_page(stats, History()).decode()
        self.assertIn("Eagle agent", page)
        self.assertIn(f'data-digest="{DIGEST}"', page)
        self.assertIn("2.0 KB", page)


def chromium(url: str, out, *args: str) -> subprocess.CompletedProcess:
    """Headless Chromium on ``url`` with a fresh profile, offline but for
    loopback, bounded in time."""
    profile = out / f"profile-{time.monotonic_ns()}"
    argv = [
        "chromium",
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        *args,
        url,
    ]
    env = offline_env()
    env["HOME"] = str(out)
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=BROWSER_TIMEOUT, env=env
    )


class StatusPageTests(LabTestCase):
    def test_pages_in_chromium(self):
        """After two agents pull a blob, the tracker's page shows its swarm and
        a throughput plot, and the agent's page its swarm, in Chromium's DOM and
        in a screenshot that is not blank."""
        self.need("docker-registry", "chromium")
        tmp = self.tmpdir()
        registry = self.start(Registry(tmp / "registry"))
        data = os.urandom(8 << 20)
        digest = registry.push_blob("eagle/status", data)
        cluster = self.start(Cluster(tmp / "cluster", registry.url, agents=2))
        for agent in cluster.agents:
            status, _, body = get(f"{agent.url}/v2/eagle/status/blobs/{digest}")
            self.assertEqual(status, 200)
            self.assertEqual("sha256:" + hashlib.sha256(body).hexdigest(), digest)

        # The plot needs samples a few seconds apart (peers announce every 5 s).
        deadline = time.monotonic() + 30
        while True:
            stats = get_json(cluster.tracker.url + "/eagle/stats")
            if len(stats["history"]) >= 3 or time.monotonic() > deadline:
                break
            time.sleep(1)
        swarms = {s["digest"]: s for s in stats["swarms"]}
        self.assertIn(digest, swarms, json.dumps(stats)[:2000])
        self.assertGreaterEqual(len(swarms[digest]["peers"]), 3)

        pages = [
            (cluster.tracker.url, "tracker"),
            (cluster.agents[0].url, "agent"),
        ]
        for url, name in pages:
            page = f"{url}/eagle/status"
            done = chromium(page, tmp, "--dump-dom")
            self.assertEqual(done.returncode, 0, done.stderr[-2000:])
            dom = done.stdout
            self.assertIn(f"Eagle {name}", dom)
            self.assertIn(f'data-digest="{digest}"', dom)
            self.assertIn("<svg", dom)
            if name == "tracker":
                self.assertIn("<polyline", dom)
            shot = tmp / f"{name}.png"
            done = chromium(page, tmp, f"--screenshot={shot}", "--window-size=1000,800")
            self.assertTrue(shot.exists(), done.stderr[-2000:])
            with Image.open(shot) as image:
                self.assertEqual(image.size, (1000, 800))
                colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
            self.assertGreater(len(colours), 20, name)  # text, bars, lines
