"""Prometheus metrics of one daemon, served at ``/metrics`` on its HTTP port.

Every daemon has a registry of its own (not prometheus-client's global one), so
that tests can run several daemons in one process. Counts that the daemons keep
anyway (bytes by source, blobs served, cache size, swarm state, announces) are
read when Prometheus scrapes; events nobody counted before (cache hits, fallbacks,
evictions, HTTP answers) are prometheus-client counters, incremented by one line
where they happen. ``docs/operations.rst`` lists the metrics; the Grafana
dashboard in ``etc/grafana-dashboard.json`` draws them.
"""

from __future__ import annotations

import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from twisted.web.resource import Resource

# A ``_created`` sample beside every counter doubles the output for a value that
# Prometheus does not need (it sees resets in the counters themselves).
disable_created_metrics()

# From a manifest answered out of memory to a large blob through a slow swarm.
LATENCY_BUCKETS = (
    0.001,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    120,
    300,
)

# Label values of ``route``: few and fixed, whatever paths clients send.
_V2_KINDS = (b"blobs", b"manifests", b"tags")
_TOP = (b"torrents", b"announce", b"scrape", b"eagle", b"metrics", b"admin", b"preheat")


def route(path: bytes) -> str:
    """The kind of request a path is, for labels: never the path itself."""
    parts = path.split(b"?", 1)[0].split(b"/")
    top = parts[1] if len(parts) > 1 else b""
    if top == b"v2":
        for kind in _V2_KINDS:
            if kind in parts[2:]:
                return kind.decode()
        return "v2"
    if top in _TOP:
        return top.decode()
    return "other"


class Metrics:
    """The metric families of one daemon, in its own registry."""

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self.registry = registry = CollectorRegistry(auto_describe=True)
        # Every daemon: its HTTP answers.
        self.request_seconds = Histogram(
            "eagle_http_request_duration_seconds",
            "Time from a request's arrival to the end of its answer, by route",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.responses = Counter(
            "eagle_http_responses",
            "HTTP answers by route and status code (aborted: the connection was"
            " lost before the answer ended)",
            ["route", "code"],
            registry=registry,
        )
        self.sent = Counter(
            "eagle_http_sent_bytes",
            "Body bytes sent over HTTP, by route",
            ["route"],
            registry=registry,
        )
        # Agents, proxies and seeders.
        self.cache_hits = Counter(
            "eagle_cache_hits", "Blob requests served from the cache", registry=registry
        )
        self.cache_misses = Counter(
            "eagle_cache_misses",
            "Blob requests not in the cache (a fetch started or joined)",
            registry=registry,
        )
        self.evictions = Counter(
            "eagle_cache_evictions",
            "Blobs evicted from the cache to stay within cache_size",
            registry=registry,
        )
        self.fallbacks = Counter(
            "eagle_fallbacks",
            "Fetches that left their first path: no_torrent (no seeder handed"
            " out a torrent), swarm (the swarm failed or stalled), origin (no"
            " seeder served the blob over HTTP)",
            ["reason"],
            registry=registry,
        )
        # Trackers.
        self.announces = Counter(
            "eagle_tracker_announces",
            "Announces accepted, by event (update: a periodic one)",
            ["event"],
            registry=registry,
        )
        self.announces_refused = Counter(
            "eagle_tracker_announces_refused",
            "Announces refused: malformed, without the token, or the store away",
            ["reason"],
            registry=registry,
        )

    def watch(self, request) -> None:
        """Observe one HTTP request until its answer ends or its client goes."""
        started = self.clock()
        kind = route(request.path)

        def done(result, code=None):
            self.request_seconds.labels(kind).observe(self.clock() - started)
            self.responses.labels(kind, code or str(request.code)).inc()
            self.sent.labels(kind).inc(request.sentLength)

        def gone(failure):
            # A client may hang up once it has read every byte it was promised,
            # before a streamed answer ends on our side: that one was answered.
            length = request.responseHeaders.getRawHeaders(b"content-length", [None])
            whole = length[0] is not None and request.sentLength >= int(length[0])
            done(None, None if whole else "aborted")

        request.notifyFinish().addCallbacks(done, gone)

    def watch_node(self, traffic, mirror, cache, swarm=None) -> None:
        """Read what an agent, proxy or seeder counts anyway at each scrape."""
        self.registry.register(_NodeCollector(traffic, mirror, cache, swarm))

    def watch_tracker(self, tracker) -> None:
        self.registry.register(_TrackerCollector(tracker))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


# Counts into a registry nobody serves: for parts built outside a daemon, as in
# unit tests. Daemons give each part their own Metrics.
DETACHED = Metrics()


class _NodeCollector:
    def __init__(self, traffic, mirror, cache, swarm):
        self.traffic = traffic
        self.mirror = mirror
        self.cache = cache
        self.swarm = swarm

    def collect(self):
        received = CounterMetricFamily(
            "eagle_received_bytes",
            "Blob bytes received, by source: origin and seeder (HTTP), seeder and"
            " peer (swarm); counted when a blob is complete or falls back",
            labels=["source"],
        )
        for source in ("origin", "seeder", "peer"):
            received.add_metric([source], self.traffic.received.get(source, 0))
        yield received
        served = CounterMetricFamily(
            "eagle_served", "Blobs and manifests answered over HTTP", labels=["kind"]
        )
        for kind in ("blobs", "manifests"):
            served.add_metric([kind[:-1]], self.mirror.served.get(kind, 0))
        yield served
        lru = self.cache.lru
        yield GaugeMetricFamily(
            "eagle_cache_bytes", "Bytes of verified blobs in the cache", lru.total
        )
        yield GaugeMetricFamily(
            "eagle_cache_blobs", "Verified blobs in the cache", len(lru)
        )
        yield GaugeMetricFamily(
            "eagle_cache_limit_bytes", "The cache's budget (cache_size)", lru.max_bytes
        )
        if self.swarm is not None and self.swarm.session is not None:
            yield from _swarm_families(self.swarm)


def _swarm_families(swarm):
    swarms = GaugeMetricFamily(
        "eagle_swarms", "Blobs in the swarm session, by state", labels=["state"]
    )
    peers = GaugeMetricFamily("eagle_swarm_peers", "Peers connected, over all swarms")
    counts = {"downloading": 0, "seeding": 0}
    connected = 0
    for blob in swarm.status():
        counts[blob["state"]] += 1
        connected += blob["peers"]
    for state, count in counts.items():
        swarms.add_metric([state], count)
    peers.add_metric([], connected)
    yield swarms
    yield peers
    totals = swarm.payload_totals()
    payload = CounterMetricFamily(
        "eagle_swarm_payload_bytes",
        "Blob bytes moved over BitTorrent by this host's session, by direction"
        " (as libtorrent last posted them, at most one scrape or 5 s old)",
        labels=["direction"],
    )
    payload.add_metric(["download"], totals["download"])
    payload.add_metric(["upload"], totals["upload"])
    yield payload


class _TrackerCollector:
    def __init__(self, tracker):
        self.tracker = tracker

    def collect(self):
        swarms, peers = self.tracker.swarms.totals()
        yield GaugeMetricFamily(
            "eagle_tracker_swarms", "Swarms announced to this tracker lately", swarms
        )
        yield GaugeMetricFamily(
            "eagle_tracker_peers", "Peers in those swarms, as last announced", peers
        )


class MetricsResource(Resource):
    """``/metrics``: the daemon's registry in Prometheus' text format."""

    isLeaf = True

    def __init__(self, metrics: Metrics):
        super().__init__()
        self.metrics = metrics

    def render_GET(self, request):
        request.setHeader(b"Content-Type", CONTENT_TYPE_LATEST.encode())
        return self.metrics.exposition()
