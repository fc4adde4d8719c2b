"""Speed limits applied to an agent's traffic: real registry, tracker, seeder and
agent processes on loopback. Loopback moves gigabytes a second, so the time a
pull takes is the limit's work; the bounds are generous, for a busy machine
(the benchmark measures accuracy, docs/benchmark.rst)."""

from __future__ import annotations

import io
import json
import os
import time
import urllib.error
import urllib.request

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase
from twisted.web.test.requesthelper import DummyRequest

from eagle.lab.cluster import Cluster, get_json
from eagle.lab.registry import Registry
from eagle.ratelimit import HostLimits, Limits
from eagle.taps import _LimitsResource
from tests.test_lab import LabTestCase
from tests.test_seeder import get

MiB = 1 << 20
REPO = "eagle/limits"
_direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def put_limits(agent, body) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(
        agent.url + "/eagle/limits", data=data, method="PUT"
    )
    try:
        with _direct.open(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


class LimitsTests(LabTestCase):
    def cluster(self, agents: int = 1, **agent_config) -> None:
        self.need("docker-registry")
        tmp = self.tmpdir()
        self.registry = self.start(Registry(tmp / "registry"))
        self.blobs = [os.urandom(8 * MiB) for _ in range(2)]
        self.digests = [self.registry.push_blob(REPO, b) for b in self.blobs]
        self.cluster_ = cluster = self.start(
            Cluster(
                tmp / "cluster",
                self.registry.url,
                agents=agents,
                agent_config={"swarm_timeout": 60, **agent_config},
            )
        )
        self.agent = cluster.agents[0]

    def pull(self, i: int) -> float:
        """Seconds to pull blob ``i`` through the agent."""
        started = time.monotonic()
        status, _, body = get(f"{self.agent.url}/v2/{REPO}/blobs/{self.digests[i]}")
        elapsed = time.monotonic() - started
        self.assertEqual((status, body == self.blobs[i]), (200, True))
        return elapsed

    def test_swarm_download_limited_and_changed_at_runtime(self):
        """2 MiB/s from the config: 8 MiB through the swarm take about 4 s; PUT
        /eagle/limits raises it to 16 MiB/s, and the next 8 MiB go faster."""
        self.cluster(download_limit="2MiB")
        self.assertEqual(
            get_json(self.agent.url + "/eagle/limits")["download"], 2 * MiB
        )
        slow = self.pull(0)
        self.assertGreater(slow, 3.0)
        self.assertLess(slow, 12)
        status, limits = put_limits(self.agent, {"download": "16MiB"})
        self.assertEqual((status, limits["download"]), (200, 16 * MiB))
        # 0.5 s at the limit, plus the seeder's fetch and hashing of the blob.
        fast = self.pull(1)
        self.assertLess(fast, slow * 0.7)
        self.assertGreater(fast, 0.4)
        received = self.agent.status()["received"]
        self.assertEqual(received.get("seeder"), 16 * MiB)

    def test_http_download_limited(self):
        """Blobs that come over HTTP (here all: swarm_min_size is above them)
        draw on the same budget: 8 MiB at 2 MiB/s take about 4 s."""
        self.cluster(download_limit="2MiB", swarm_min_size="1GiB")
        elapsed = self.pull(0)
        self.assertGreater(elapsed, 3.0)
        self.assertLess(elapsed, 12)
        self.assertEqual(self.agent.status()["received"], {"seeder": 8 * MiB})

    def test_per_blob_limit(self):
        """A per-blob limit alone holds each blob to it: 8 MiB at 4 MiB/s take
        about 2 s, in the swarm and over HTTP alike."""
        self.cluster(blob_download_limit="4MiB")
        elapsed = self.pull(0)
        self.assertGreater(elapsed, 1.4)
        self.assertLess(elapsed, 8)
        put_limits(self.agent, {"blob_download": "2MiB"})
        elapsed = self.pull(1)
        self.assertGreater(elapsed, 3.0)

    def test_upload_limited(self):
        """An agent's upload limit holds what peers get from it: with the seeder
        held to 1 byte/s, a second agent takes 8 MiB from the first, limited
        to 2 MiB/s at runtime, in about 4 s."""
        self.cluster(agents=2)
        self.pull(0)
        seeder = self.cluster_.seeders[0]
        first, second = self.cluster_.agents
        self.assertEqual(put_limits(seeder, {"upload": 1})[0], 200)
        self.assertEqual(put_limits(first, {"upload": "2MiB"})[0], 200)
        self.agent = second
        elapsed = self.pull(0)
        self.assertGreater(elapsed, 3.0)
        self.assertLess(elapsed, 15)
        received = second.status()["received"]
        self.assertGreater(received.get("peer", 0), 7 * MiB, received)

    def test_bad_limits_refused(self):
        """Unknown keys, sizes that are not sizes, and non-objects get 400 and
        change nothing."""
        self.cluster(download_limit="2MiB")
        for body in [{"downlaod": 5}, {"upload": "fast"}, b"[1]", b"{"]:
            status, answer = put_limits(self.agent, body)
            self.assertEqual(status, 400, answer)
            self.assertIn("error", answer)
        limits = get_json(self.agent.url + "/eagle/limits")
        self.assertEqual(limits["download"], 2 * MiB)
        self.assertEqual(limits["upload"], 0)


class AdminAccessTests(TestCase):
    def test_only_from_this_host(self):
        """PUT /eagle/limits from another address gets 403 and changes nothing;
        from loopback, or from the address the daemon listens on, it applies."""
        host = HostLimits(Clock(), Limits(download=MiB))
        resource = _LimitsResource(host)
        for client, server, status, value in [
            ("10.1.2.3", "10.1.2.4", 403, 7),
            ("10.1.2.3", "127.0.0.1", 403, 7),
            ("127.0.0.1", "127.0.0.1", 200, 5),
            ("::1", "::1", 200, 6),
            ("10.1.2.4", "10.1.2.4", 200, 8),
        ]:
            request = DummyRequest([])
            request.method = b"PUT"
            request.client = _address(client)
            request.getHost = lambda server=server: _address(server)
            request.content = io.BytesIO(json.dumps({"download": value}).encode())
            resource.render(request)
            self.assertEqual(request.responseCode or 200, status, (client, server))
            if status == 200:
                self.assertEqual(host.limits.download, value)
        self.assertEqual(host.limits.download, 8)


def _address(host: str):
    kind = IPv6Address if ":" in host else IPv4Address
    return kind("TCP", host, 4242)
