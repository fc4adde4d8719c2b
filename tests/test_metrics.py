"""Prometheus metrics: each family counts its events, every daemon serves its own
registry at /metrics, and a pull through real processes shows in the counters."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlencode

import treq
from prometheus_client.parser import text_string_to_metric_families
from treq.client import HTTPClient
from treq.testing import StubTreq
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock, deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource

from eagle import config
from eagle.blobs import Blobs, SwarmSource, Traffic
from eagle.cache import BlobCache
from eagle.digest import blob_digest
from eagle.lab.cluster import Cluster
from eagle.lab.registry import Registry
from eagle.metrics import Metrics, route
from eagle.swarm import Swarm
from eagle.taps import _node
from eagle.torrent import Metainfo, make_torrent
from eagle.tracker.server import Tracker
from eagle.tracker.store import MemoryPeerStore
from eagle.transfer import Transfer
from eagle.upstream import BlobRef, Upstream
from eagle.web import site
from tests.test_lab import LabTestCase
from tests.test_seeder import get

_direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
UPSTREAM = Upstream("registry.test", "http://registry.test")


def value(metrics: Metrics, name: str, **labels) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def ref_of(data: bytes) -> BlobRef:
    digest = blob_digest("sha256:" + hashlib.sha256(data).hexdigest())
    return BlobRef(UPSTREAM, "library/x", digest)


def scrape(url: str) -> dict:
    """The samples at ``url``/metrics: {(name, sorted label items): value}."""
    with _direct.open(url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


class RouteTests(SynchronousTestCase):
    def test_fixed_label_values(self):
        """Paths map to a few route names, never to the path itself."""
        self.assertEqual(route(b"/v2/library/x/blobs/sha256:ab"), "blobs")
        self.assertEqual(route(b"/v2/a/b/manifests/latest?ns=x"), "manifests")
        self.assertEqual(route(b"/v2/a/tags/list"), "tags")
        self.assertEqual(route(b"/v2/"), "v2")
        self.assertEqual(route(b"/announce?info_hash=x"), "announce")
        self.assertEqual(route(b"/torrents/sha256:ab"), "torrents")
        self.assertEqual(route(b"/eagle/stats"), "eagle")
        self.assertEqual(route(b"/preheat/x"), "preheat")
        self.assertEqual(route(b"/../../etc/passwd"), "other")
        self.assertEqual(route(b""), "other")


class _Request:
    """What Metrics.watch reads of a request."""

    def __init__(self, path: bytes):
        self.path = path
        self.code = 200
        self.sentLength = 0
        self.responseHeaders = Headers()
        self.finished = Deferred()

    def notifyFinish(self):
        return self.finished


class RequestFamilyTests(SynchronousTestCase):
    def test_answer_observed(self):
        """A finished answer counts its code, its bytes and its duration."""
        clock = Clock()
        metrics = Metrics(clock=clock.seconds)
        request = _Request(b"/v2/a/blobs/sha256:00")
        metrics.watch(request)
        clock.advance(0.3)
        request.code, request.sentLength = 206, 1234
        request.finished.callback(None)
        self.assertEqual(
            value(metrics, "eagle_http_responses_total", route="blobs", code="206"), 1
        )
        self.assertEqual(
            value(metrics, "eagle_http_sent_bytes_total", route="blobs"), 1234
        )
        self.assertEqual(
            value(
                metrics,
                "eagle_http_request_duration_seconds_bucket",
                route="blobs",
                le="0.25",
            ),
            0,
        )
        self.assertEqual(
            value(
                metrics,
                "eagle_http_request_duration_seconds_bucket",
                route="blobs",
                le="0.5",
            ),
            1,
        )

    def test_gone_after_every_byte(self):
        """A client that hangs up once it has every byte it was promised, before
        a streamed answer ends on our side, was answered: it counts its code."""
        metrics = Metrics(clock=Clock().seconds)
        request = _Request(b"/v2/a/blobs/sha256:00")
        request.responseHeaders.setRawHeaders(b"content-length", [b"10"])
        request.sentLength = 10
        metrics.watch(request)
        request.finished.errback(ConnectionError("gone"))
        self.assertEqual(
            value(metrics, "eagle_http_responses_total", route="blobs", code="200"), 1
        )

    def test_aborted(self):
        """A client gone before the end counts as aborted, not as its code."""
        metrics = Metrics(clock=Clock().seconds)
        request = _Request(b"/v2/a/manifests/1")
        metrics.watch(request)
        request.finished.errback(ConnectionError("gone"))
        labels = {"route": "manifests", "code": "aborted"}
        self.assertEqual(value(metrics, "eagle_http_responses_total", **labels), 1)
        self.assertIsNone(
            value(metrics, "eagle_http_responses_total", route="manifests", code="200")
        )


class _Hello(Resource):
    isLeaf = True

    def render_GET(self, request):
        return b"hello"


class SiteTests(TestCase):
    async def test_metrics_served_and_requests_counted(self):
        """A site with metrics serves them at /metrics and counts each answer,
        404s included; two sites keep separate registries."""
        metrics, other = Metrics(), Metrics()
        port = reactor.listenTCP(
            0, site({b"eagle": _Hello()}, metrics=metrics), interface="127.0.0.1"
        )
        self.addCleanup(port.stopListening)
        url = f"http://127.0.0.1:{port.getHost().port}"
        http = HTTPClient(Agent(reactor, pool=HTTPConnectionPool(reactor, False)))
        response = await http.get(url + "/eagle/stats")
        self.assertEqual(await response.content(), b"hello")
        response = await http.get(url + "/v2/x/blobs/nothing")
        await response.content()
        response = await http.get(url + "/metrics")
        text = (await response.content()).decode()
        self.assertIn("text/plain", response.headers.getRawHeaders("content-type")[0])
        self.assertIn('eagle_http_responses_total{code="200",route="eagle"} 1.0', text)
        self.assertIn('eagle_http_responses_total{code="404",route="blobs"} 1.0', text)
        self.assertIn('eagle_http_sent_bytes_total{route="eagle"} 5.0', text)
        self.assertIsNone(
            value(other, "eagle_http_responses_total", route="eagle", code="200")
        )


class _Source:
    """A blob source that hands out what it was given (pure Blobs logic)."""

    def __init__(self, transfer):
        self.transfer = transfer

    async def start(self, ref):
        return self.transfer


class CacheFamilyTests(TestCase):
    def cache(self, size=1 << 20) -> BlobCache:
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory, True)
        return BlobCache(directory, size)

    async def test_hits_and_misses(self):
        """A cached blob is a hit, a fetched one a miss; the empty blob neither."""
        cache = self.cache()
        data = b"cached blob"
        ref = ref_of(data)
        path = cache.incoming_path(ref.hex, "t")
        Path(path).write_bytes(data)
        cache.commit(ref.hex, path)
        missing = ref_of(b"missing")
        transfer = Transfer(str(missing.digest), 7, os.devnull, "origin")
        transfer.succeed(os.devnull)
        blobs = Blobs(cache, _Source(transfer))
        blobs.metrics = metrics = Metrics()
        await blobs.open(ref)
        await blobs.open(ref)
        await blobs.open(missing)
        await blobs.open(ref_of(b""))
        self.assertEqual(value(metrics, "eagle_cache_hits_total"), 2)
        self.assertEqual(value(metrics, "eagle_cache_misses_total"), 1)


class NodeFamilyTests(SynchronousTestCase):
    def node(self, role="proxy", **settings):
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory, True)
        cfg = config.from_dict(
            {"data_dir": directory, "bittorrent_listen": "127.0.0.1:0", **settings},
            config.NodeConfig,
        )
        return _node(cfg, role, reactor=Clock())

    def test_cache_bytes_and_evictions(self):
        """Cache bytes, blobs and budget are read at scrape; evictions counted."""
        node = self.node(cache_size=100)
        cache = node.blobs.cache
        for data in (b"a" * 60, b"b" * 60):
            ref = ref_of(data)
            path = cache.incoming_path(ref.hex, "t")
            Path(path).write_bytes(data)
            cache.commit(ref.hex, path)
        metrics = node.metrics
        self.assertEqual(value(metrics, "eagle_cache_bytes"), 60)
        self.assertEqual(value(metrics, "eagle_cache_blobs"), 1)
        self.assertEqual(value(metrics, "eagle_cache_limit_bytes"), 100)
        self.assertEqual(value(metrics, "eagle_cache_evictions_total"), 1)

    def test_received_and_served(self):
        """Bytes received by source and blobs/manifests served are exposed."""
        node = self.node()
        node.blobs.source.traffic.add("origin", 1000)
        node.blobs.source.traffic.add("peer", 24)
        node.mirror.served["blobs"] += 3
        metrics = node.metrics
        self.assertEqual(
            value(metrics, "eagle_received_bytes_total", source="origin"), 1000
        )
        self.assertEqual(
            value(metrics, "eagle_received_bytes_total", source="peer"), 24
        )
        self.assertEqual(
            value(metrics, "eagle_received_bytes_total", source="seeder"), 0
        )
        self.assertEqual(value(metrics, "eagle_served_total", kind="blob"), 3)
        self.assertEqual(value(metrics, "eagle_served_total", kind="manifest"), 0)

    def test_exposition(self):
        """/metrics is in the node's site, in Prometheus' text format."""
        node = self.node()
        text = node.metrics.exposition().decode()
        self.assertIn("# TYPE eagle_cache_bytes gauge", text)
        self.assertIn("# TYPE eagle_received_bytes_total counter", text)


class _NoSeeders:
    seeders = []
    reactor = None
    http = None

    def __init__(self):
        self.started = []
        self.traffic = Traffic()

    async def start(self, ref):
        self.started.append(ref)
        return "over http"


class FallbackFamilyTests(TestCase):
    async def test_no_torrent(self):
        """No seeder hands out a torrent: the fetch goes over HTTP, counted."""
        http = _NoSeeders()
        source = SwarmSource(swarm=None, http_source=http, min_size=0)
        source.metrics = metrics = Metrics()
        self.assertEqual(await source.start(ref_of(b"x")), "over http")
        self.assertEqual(
            value(metrics, "eagle_fallbacks_total", reason="no_torrent"), 1
        )
        self.assertEqual(http.traffic.fallbacks, {"no_torrent": 1})


async def stats_posted(swarm: Swarm) -> None:
    """Wait (at most 10 s) until libtorrent answered a request for its session
    stats: its network thread is then past starting, and the counters the
    metrics read are filled in."""
    before = swarm._payload
    swarm.payload_totals()
    for _ in range(100):
        if swarm._payload is not before:
            return
        await deferLater(reactor, 0.1)
    raise AssertionError("libtorrent posted no session stats within 10 s")


class SwarmFamilyTests(TestCase):
    async def test_seeding_swarm(self):
        """A seeded blob shows as one seeding swarm with no peers yet; the
        session's payload counters come from libtorrent's stats alerts."""
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory, True)
        data = os.urandom(300 * 1024)
        hex_ = hashlib.sha256(data).hexdigest()
        Path(directory, hex_).write_bytes(data)
        metainfo = Metainfo.parse(make_torrent(os.path.join(directory, hex_)), hex_)
        swarm = Swarm(reactor)
        swarm.startService()
        self.addCleanup(swarm.stopService)
        swarm.seed(metainfo, directory)
        metrics = Metrics()
        cache = BlobCache(os.path.join(directory, "cache"), 1 << 20)
        metrics.watch_node(Traffic(), _Served(), cache, swarm)
        await stats_posted(swarm)
        self.assertEqual(value(metrics, "eagle_swarms", state="seeding"), 1)
        self.assertEqual(value(metrics, "eagle_swarms", state="downloading"), 0)
        self.assertEqual(value(metrics, "eagle_swarm_peers"), 0)
        self.assertEqual(
            value(metrics, "eagle_swarm_payload_bytes_total", direction="upload"), 0
        )


class _Served:
    served = {"blobs": 0, "manifests": 0}


class _IdleSwarm:
    """A running swarm session with nothing in it, for the names it exposes."""

    session = object()

    def status(self):
        return []

    def payload_totals(self):
        return {"download": 0, "upload": 0}


def announce(tracker, port: int, event: str = "", **extra):
    query = {
        "info_hash": b"\x01" * 20,
        "peer_id": b"-EA0100-" + b"%012d" % port,
        "port": port,
        "left": 0,
        **extra,
    }
    if event:
        query["event"] = event
    http = StubTreq(tracker.app.resource())
    return http.get("http://tracker.test/announce?" + urlencode(query))


class TrackerFamilyTests(SynchronousTestCase):
    def tracker(self):
        self.clock = Clock()
        metrics = Metrics()
        tracker = Tracker(
            MemoryPeerStore(self.clock), clock=self.clock, metrics=metrics
        )
        metrics.watch_tracker(tracker)
        return tracker, metrics

    def test_announces_by_event(self):
        """Announces count by event; the live swarms and peers are gauges."""
        tracker, metrics = self.tracker()
        self.successResultOf(announce(tracker, 1000, "started"))
        self.successResultOf(announce(tracker, 1001, "started"))
        self.successResultOf(announce(tracker, 1000))
        self.assertEqual(
            value(metrics, "eagle_tracker_announces_total", event="started"), 2
        )
        self.assertEqual(
            value(metrics, "eagle_tracker_announces_total", event="update"), 1
        )
        self.assertEqual(value(metrics, "eagle_tracker_swarms"), 1)
        self.assertEqual(value(metrics, "eagle_tracker_peers"), 2)
        self.clock.advance(tracker.peer_ttl + 1)
        self.assertEqual(value(metrics, "eagle_tracker_swarms"), 0)

    def test_refused(self):
        """Malformed announces and those without the token are counted apart."""
        tracker, metrics = self.tracker()
        tracker.announce_token = "secret"
        self.successResultOf(
            StubTreq(tracker.app.resource()).get("http://t.test/announce?port=1")
        )
        self.successResultOf(announce(tracker, 1000))
        self.assertEqual(
            value(metrics, "eagle_tracker_announces_refused_total", reason="malformed"),
            1,
        )
        self.assertEqual(
            value(metrics, "eagle_tracker_announces_refused_total", reason="token"), 1
        )

    def test_metrics_route(self):
        """The tracker serves its registry at /metrics."""
        tracker, _ = self.tracker()
        self.successResultOf(announce(tracker, 1000, "started"))
        http = StubTreq(tracker.app.resource())
        response = self.successResultOf(http.get("http://tracker.test/metrics"))
        text = self.successResultOf(treq.content(response)).decode()
        self.assertIn('eagle_tracker_announces_total{event="started"} 1.0', text)


class ClusterMetricsTests(LabTestCase):
    def test_pull_shows_in_metrics(self):
        """A blob pulled by two agents through real twist processes: the seeder
        counts the origin's bytes, agents the swarm's, hits and misses, and the
        tracker the announces of the blob's swarm."""
        self.need("docker-registry")
        tmp = self.tmpdir()
        registry = self.start(Registry(tmp / "registry"))
        data = os.urandom(6 << 20)
        digest = registry.push_blob("eagle/metrics", data)
        cluster = self.start(Cluster(tmp / "cluster", registry.url, agents=2))
        first, second = cluster.agents
        for agent in (first, second, first):
            status, _, body = get(f"{agent.url}/v2/eagle/metrics/blobs/{digest}")
            self.assertEqual(
                (status, hashlib.sha256(body).hexdigest()), (200, digest.split(":")[1])
            )

        seeder = scrape(cluster.seeders[0].url)
        self.assertEqual(
            seeder[("eagle_received_bytes_total", (("source", "origin"),))],
            len(data),
        )
        for agent in (first, second):
            samples = scrape(agent.url)
            swarm_bytes = sum(
                samples[("eagle_received_bytes_total", (("source", s),))]
                for s in ("seeder", "peer")
            )
            self.assertGreater(swarm_bytes, 0, agent.name)
            # libtorrent posts its session stats when a scrape asks for them:
            # the next scrape shows them.
            key = ("eagle_swarm_payload_bytes_total", (("direction", "download"),))
            deadline = time.monotonic() + 10
            while samples[key] < len(data) and time.monotonic() < deadline:
                time.sleep(0.2)
                samples = scrape(agent.url)
            self.assertGreaterEqual(samples[key], len(data), agent.name)
            self.assertEqual(samples[("eagle_cache_bytes", ())], len(data))
            self.assertEqual(samples[("eagle_swarms", (("state", "seeding"),))], 1)
        # A streamed answer ends (and is counted) once the blob is committed,
        # which can be just after the client has read its last byte.
        answered = ("eagle_http_responses_total", (("code", "200"), ("route", "blobs")))
        samples = scrape(first.url)
        deadline = time.monotonic() + 10
        while samples.get(answered, 0) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
            samples = scrape(first.url)
        self.assertEqual(samples[("eagle_served_total", (("kind", "blob"),))], 2)
        self.assertEqual(samples[("eagle_cache_misses_total", ())], 1)
        self.assertEqual(samples[("eagle_cache_hits_total", ())], 1)
        self.assertEqual(samples[answered], 2)
        self.assertEqual(
            samples[
                ("eagle_http_request_duration_seconds_count", (("route", "blobs"),))
            ],
            2,
        )

        tracker = scrape(cluster.tracker.url)
        self.assertGreaterEqual(
            tracker[("eagle_tracker_announces_total", (("event", "started"),))], 3
        )
        self.assertEqual(tracker[("eagle_tracker_swarms", ())], 1)
        with _direct.open(cluster.tracker.url + "/eagle/stats", timeout=10) as r:
            swarms = json.loads(r.read())["swarms"]
        self.assertEqual([s["digest"] for s in swarms], [digest])
        self.assertEqual(swarms[0]["size"], len(data))


def exposed_names(metrics: Metrics) -> set[str]:
    """Every sample name a registry can expose, labelled families included."""
    suffixes = {
        "counter": ("_total",),
        "histogram": ("_bucket", "_count", "_sum"),
        "gauge": ("",),
    }
    return {
        family.name + suffix
        for family in metrics.registry.collect()
        for suffix in suffixes[family.type]
    }


class DashboardTests(TestCase):
    def test_dashboard_names_real_metrics(self):
        """etc/grafana-dashboard.json is valid JSON whose every query names
        metrics that the daemons expose."""
        path = Path(__file__).parent.parent / "etc" / "grafana-dashboard.json"
        dashboard = json.loads(path.read_text())
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory, True)
        node = Metrics()
        cache = BlobCache(directory, 1 << 20)
        node.watch_node(Traffic(), _Served(), cache, _IdleSwarm())
        tracker = Metrics()
        tracker.watch_tracker(Tracker(MemoryPeerStore(Clock()), clock=Clock()))
        known = exposed_names(node) | exposed_names(tracker)
        used = set()
        for panel in dashboard["panels"]:
            self.assertTrue(panel["title"])
            for target in panel["targets"]:
                used |= set(re.findall(r"\beagle_[a-z_]+", target["expr"]))
        self.assertGreater(len(used), 15)
        self.assertEqual(used - known, set())
        for name in ("eagle_received_bytes_total", "eagle_fallbacks_total"):
            self.assertIn(name, used)
