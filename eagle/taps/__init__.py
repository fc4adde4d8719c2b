"""The daemons, each built from its YAML config as a tree of services, for
``twist eagle-tracker|eagle-seeder|eagle-agent|eagle-proxy``."""

import ipaddress
import json
from dataclasses import asdict, dataclass, replace
from http.cookiejar import CookieJar, DefaultCookiePolicy
from urllib.parse import urlencode, urlsplit, urlunsplit

import txredisapi
from treq.client import HTTPClient
from twisted.application import strports
from twisted.application.internet import TimerService
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.python import usage
from twisted.python.threadpool import ThreadPool
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.iweb import IAgent
from twisted.web.resource import Resource
from zope.interface import implementer

from eagle import config, manhole
from eagle.admin import AdminAPI
from eagle.auth import Credentials
from eagle.blobs import Blobs, HTTPSource, SwarmSource, Traffic
from eagle.cache import BlobCache
from eagle.metrics import Metrics
from eagle.mirror import Mirror
from eagle.preheat import PreheatAPI, Warmer
from eagle.ratelimit import HostLimits, Limits
from eagle.seeder import Seeder, SeederAPI, StoredSource
from eagle.status import History, node_page
from eagle.storage import Storage
from eagle.swarm import AGENT_PEER_ID, SEEDER_PEER_ID, Swarm
from eagle.tls import RegistryTLSPolicy, load_ca
from eagle.torrent import Metainfo
from eagle.tracker.redis_store import RedisPeerStore
from eagle.tracker.server import Tracker, purge_service
from eagle.tracker.store import MemoryPeerStore
from eagle.upstream import Upstream, Upstreams
from eagle.web import site

# Seconds between checks that the cache is within its limit: blobs that peers
# were downloading may have stayed over it.
EVICTION_SWEEP = 30


class Options(usage.Options):
    optParameters = [["config", "c", None, "YAML configuration file"]]

    def postOptions(self):
        if not self["config"]:
            raise usage.UsageError("--config is required")


SAMPLE_EVERY = 5  # seconds between samples for the status page's plot


def _reactor():
    from twisted.internet import reactor

    return reactor


def tracker_urls(
    trackers: list[str], labels: dict, seeder: bool = False, token: str | None = None
) -> list[str]:
    """Announce URLs carrying this host's topology labels (and the trackers'
    announce token) in their query."""
    extra = dict(labels)
    if seeder:
        extra["role"] = "seeder"
    if token:
        extra["token"] = token
    urls = []
    for url in trackers:
        parts = urlsplit(url)
        query = "&".join(q for q in (parts.query, urlencode(extra)) if q)
        urls.append(urlunsplit(parts._replace(query=query)))
    return urls


class _ThreadPoolService(Service):
    """A thread pool that lives exactly as long as its daemon."""

    def __init__(self, reactor, size: int, name: str):
        self.pool = ThreadPool(minthreads=0, maxthreads=size, name=name)
        self.reactor = reactor

    def startService(self):
        super().startService()
        self.pool.start()

    def stopService(self):
        super().stopService()
        self.pool.stop()

    def run(self, f, *args):
        return deferToThreadPool(self.reactor, self.pool, f, *args)


class _LimitsResource(Resource):
    """``/eagle/limits``: the host's speed limits, in bytes a second (0: none).

    GET shows them; PUT with a JSON object of any of ``download``, ``upload``,
    ``blob_download`` and ``blob_upload`` (numbers, or sizes like ``"10MiB"``)
    changes them at once. Only from this host (loopback, or the address the
    daemon listens on): others get 403.
    """

    isLeaf = True
    KEYS = ("download", "upload", "blob_download", "blob_upload")

    def __init__(self, limits: HostLimits):
        super().__init__()
        self._limits = limits

    def _answer(self, request, status: int, body: dict) -> bytes:
        request.setResponseCode(status)
        request.setHeader(b"Content-Type", b"application/json")
        return json.dumps(body).encode()

    def render_GET(self, request):
        return self._answer(request, 200, asdict(self._limits.limits))

    def render_PUT(self, request):
        if not _from_this_host(request):
            return self._answer(request, 403, {"error": "only from this host"})
        try:
            changes = json.loads(request.content.read(64 * 1024))
            if not isinstance(changes, dict):
                raise ValueError("expected a JSON object")
            unknown = set(changes) - set(self.KEYS)
            if unknown:
                raise ValueError("unknown limits: " + ", ".join(sorted(unknown)))
            values = {k: int(config.parse_size(v)) for k, v in changes.items()}
        except ValueError as e:
            return self._answer(request, 400, {"error": str(e)})
        self._limits.set(replace(self._limits.limits, **values))
        return self._answer(request, 200, asdict(self._limits.limits))


def _from_this_host(request) -> bool:
    """Whether a request comes from this host: from a loopback address, or
    from the very address it reached us on (a daemon listening on the host's
    own address, asked by a program on the host)."""
    try:
        client = ipaddress.ip_address(request.getClientAddress().host)
        ours = ipaddress.ip_address(request.getHost().host)
    except (AttributeError, ValueError):
        return False  # a unix socket or something stranger: not ours to trust
    return client.is_loopback or client == ours


class _StatusResource(Resource):
    """``/eagle/stats``: what this daemon has moved, as JSON."""

    isLeaf = True

    def __init__(self, stats):
        super().__init__()
        self._stats = stats

    def render_GET(self, request):
        request.setHeader(b"Content-Type", b"application/json")
        return json.dumps(self._stats(), indent=1).encode()


def _http_client(reactor, cfg: config.NodeConfig) -> HTTPClient:
    unverified = {urlsplit(r.url).netloc for r in cfg.registries if not r.tls_verify}
    private_cas = {}
    for r in cfg.registries:
        if r.ca_file:
            try:
                private_cas[urlsplit(r.url).netloc] = load_ca(r.ca_file)
            except ValueError as e:
                raise config.ConfigError(f"registry {r.host}: ca_file: {e}") from None
    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = 16
    policy = RegistryTLSPolicy(unverified, private_cas)
    agent = Agent(reactor, contextFactory=policy, pool=pool)
    # One client serves every engine on the host: it must keep no cookies, or an
    # origin's cookie for one client would go out with another's requests.
    no_cookies = CookieJar(DefaultCookiePolicy(allowed_domains=[]))
    return HTTPClient(_Identity(agent), cookiejar=no_cookies)


@implementer(IAgent)
class _Identity:
    """Asks origins for bytes as stored, never compressed in transit.

    treq asks for gzip on every request; an origin or CDN that obliged would
    change a blob's length and a manifest's bytes on the way, which a mirror that
    promises Content-Length up front and exact manifests cannot accept.
    """

    def __init__(self, agent):
        self._agent = agent

    def request(self, method, uri, headers=None, bodyProducer=None):
        if headers is not None:
            headers = headers.copy()
            headers.removeHeader(b"accept-encoding")
        return self._agent.request(method, uri, headers, bodyProducer)


def _upstreams(cfg: config.NodeConfig) -> Upstreams:
    return Upstreams(
        [
            Upstream(r.host, r.url.rstrip("/"), r.username, r.secret())
            for r in cfg.registries
        ],
        cfg.default_registry,
    )


def _storage_backend(cfg: config.StorageConfig):
    if cfg.backend == "s3":
        from eagle.storage import s3

        client = s3.client(
            cfg.s3.endpoint_url,
            cfg.s3.region,
            cfg.s3.access_key_id,
            cfg.s3.secret(),
            cfg.s3.timeout,
        )
        return s3.S3Storage(
            client, cfg.s3.bucket, cfg.s3.prefix, cfg.s3.multipart_threshold
        )
    from eagle.storage.filesystem import FileStorage

    return FileStorage(cfg.directory)


def _node(cfg: config.NodeConfig, role: str, reactor=None) -> "_Node":
    """The parts agents, proxies and seeders share."""
    reactor = reactor or _reactor()
    top = MultiService()
    swarm = None
    if role != "proxy":
        swarm = Swarm(
            reactor,
            listen=cfg.bittorrent_listen,
            peer_id=SEEDER_PEER_ID if role == "seeder" else AGENT_PEER_ID,
            trackers=tracker_urls(
                cfg.trackers, cfg.labels, role == "seeder", cfg.tracker_token
            ),
            settings=cfg.libtorrent,
            super_seeding=cfg.super_seeding and role == "seeder",
            resume_interval=cfg.resume_interval,
        )
        swarm.setServiceParent(top)
    metrics = Metrics()

    def evicted(hex_: str) -> None:
        metrics.evictions.inc()
        if swarm is not None:
            swarm.remove_blob(hex_)

    # A blob that peers are downloading from us stays until they leave; seeding
    # stops when a blob is evicted. What stayed over the limit goes at the next
    # cache change or sweep.
    cache = BlobCache(
        cfg.data_dir,
        cfg.cache_size,
        on_evict=evicted,
        in_use=swarm.uploading if swarm else lambda hex_: False,
    )
    TimerService(EVICTION_SWEEP, cache.evict).setServiceParent(top)
    http = _http_client(reactor, cfg)
    traffic = Traffic()
    seeders = [] if role == "seeder" else cfg.seeders
    credentials = Credentials(http, reactor)
    limits = HostLimits(
        reactor,
        Limits(
            cfg.download_limit,
            cfg.upload_limit,
            cfg.blob_download_limit,
            cfg.blob_upload_limit,
        ),
        swarm.set_limits if swarm else lambda *a: None,
        lambda: bool(swarm and swarm.running and swarm.counts()["downloading"]),
    )
    if swarm:
        swarm.downloads_changed = limits.rebalance
    http_source = HTTPSource(
        http,
        reactor,
        cache,
        seeders,
        traffic,
        credentials=credentials,
        seeder_timeout=cfg.seeder_timeout,
        limits=limits,
    )
    source = http_source
    stored = None
    if role == "seeder" and cfg.storage is not None:
        threads = _ThreadPoolService(reactor, cfg.storage.threads, "eagle-storage")
        threads.setServiceParent(top)
        storage = Storage(
            _storage_backend(cfg.storage), threads.run, reactor.callFromThread
        )
        source = stored = StoredSource(storage, http_source, cache, reactor)
    if role == "agent":
        source = SwarmSource(
            swarm,
            http_source,
            cfg.swarm_min_size,
            cfg.swarm_timeout,
            cfg.stream_window,
        )
    blobs = Blobs(cache, source)
    blobs.metrics = http_source.metrics = source.metrics = metrics
    mirror = Mirror(_upstreams(cfg), blobs, http, reactor, credentials)
    metrics.watch_node(traffic, mirror, cache, swarm)

    def stats():
        return {
            "role": role,
            "received": dict(traffic.received),
            "resumed": traffic.resumed,
            "fallbacks": dict(traffic.fallbacks),
            "served": mirror.served,
            "cache": {"blobs": len(cache.lru), "bytes": cache.lru.total},
            "fetching": blobs.running,
            "torrents": swarm.counts() if running() else None,
            "bittorrent_port": swarm.listen_port if running() else None,
            "swarms": swarm.status() if running() else [],
        }

    def running() -> bool:
        return swarm is not None and swarm.session is not None

    history = History()

    def sample():
        """Byte counts for the status page's throughput plot."""
        sent = ("eagle_http_sent_bytes_total", {"route": "blobs"})
        totals = {"HTTP out": metrics.registry.get_sample_value(*sent) or 0}
        if running():
            payload = swarm.payload_totals()
            totals["swarm in"] = payload["download"]
            totals["swarm out"] = payload["upload"]
        history.add(reactor.seconds(), totals)

    TimerService(SAMPLE_EVERY, sample).setServiceParent(top)
    children = {
        b"v2": mirror.resource(),
        b"eagle": _status_tree(stats, history, limits),
        b"admin": AdminAPI(cache, cfg.admin_token).resource(),
    }
    return _Node(top, swarm, blobs, mirror, children, reactor, metrics, stored)


@dataclass
class _Node:
    """An agent, proxy or seeder being assembled."""

    services: MultiService
    swarm: Swarm | None
    blobs: Blobs
    mirror: Mirror
    children: dict[bytes, Resource]  # the HTTP site's top-level resources
    reactor: object
    metrics: Metrics
    stored: StoredSource | None = None  # a seeder's storage, when it has one

    def serve(self, listen: str, manhole_cfg=None) -> MultiService:
        """Add the HTTP site (and the manhole), and seed the cache once running;
        the finished tree."""
        http = site(self.children, metrics=self.metrics)
        strports.service(listen, http).setServiceParent(self.services)
        if manhole_cfg is not None:
            names = {
                "node": self,
                "swarm": self.swarm,
                "blobs": self.blobs,
                "cache": self.blobs.cache,
                "mirror": self.mirror,
                "metrics": self.metrics,
                "reactor": self.reactor,
            }
            manhole.service(manhole_cfg, names).setServiceParent(self.services)
        if self.swarm is not None:
            self.reactor.callWhenRunning(_seed_cache, self.swarm, self.blobs.cache)
        if self.stored is not None:
            self.reactor.callWhenRunning(
                lambda: Deferred.fromCoroutine(self.stored.keep_all())
            )
        return self.services


def _status_tree(stats, history: History, limits: HostLimits) -> Resource:
    tree = Resource()
    tree.putChild(b"stats", _StatusResource(stats))
    tree.putChild(b"status", _StatusPage(lambda: node_page(stats(), history)))
    tree.putChild(b"limits", _LimitsResource(limits))
    return tree


class _StatusPage(Resource):
    """``/eagle/status``: the daemon's status page."""

    isLeaf = True

    def __init__(self, render):
        super().__init__()
        self._render = render

    def render_GET(self, request):
        request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
        return self._render()


def _peer_store(cfg: config.TrackerConfig, reactor):
    """Swarms in memory (one tracker), or in Redis shared by several."""
    if cfg.redis is None:
        return MemoryPeerStore(reactor)
    redis = cfg.redis
    options = {"password": redis.password, "replyTimeout": 3, "connectTimeout": 3}
    if redis.sentinels:
        addresses = [_host_port(s, 26379) for s in redis.sentinels]
        sentinel = txredisapi.Sentinel(addresses, **options)
        connection = sentinel.master_for(redis.master, dbid=redis.db, poolsize=4)
    else:
        parts = urlsplit(redis.url or "redis://127.0.0.1:6379")
        connection = txredisapi.lazyConnectionPool(
            parts.hostname or "127.0.0.1",
            parts.port or 6379,
            dbid=int(parts.path.strip("/") or redis.db),
            poolsize=4,
            **{**options, "password": parts.password or redis.password},
        )
    return RedisPeerStore(connection, reactor)


def _host_port(text: str, default_port: int) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return (host, int(port)) if host else (text, default_port)


def make_tracker(options) -> MultiService:
    cfg = config.load(options["config"], config.TrackerConfig)
    reactor = _reactor()
    store = _peer_store(cfg, reactor)
    metrics = Metrics()
    tracker = Tracker(
        store,
        interval=cfg.interval,
        announce_token=cfg.announce_token,
        clock=reactor,
        metrics=metrics,
    )
    metrics.watch_tracker(tracker)
    top = MultiService()
    http = site(root=tracker.app.resource(), metrics=metrics)
    strports.service(cfg.listen, http).setServiceParent(top)
    purge_service(store, cfg.interval).setServiceParent(top)
    if cfg.manhole is not None:
        names = {"tracker": tracker, "store": store, "metrics": metrics}
        manhole.service(cfg.manhole, names).setServiceParent(top)
    return top


def make_seeder(options) -> MultiService:
    cfg = config.load(options["config"], config.NodeConfig)
    node = _node(cfg, "seeder")
    threads = _ThreadPoolService(node.reactor, 2, "eagle-seeder-hashing")
    threads.setServiceParent(node.services)
    seeder = Seeder(node.blobs, node.swarm, _upstreams(cfg), threads.run)
    node.children[b"torrents"] = SeederAPI(seeder, node.mirror).resource()
    warmer = Warmer(seeder, node.mirror.http, node.reactor, node.mirror.credentials)
    node.children[b"preheat"] = PreheatAPI(warmer, node.mirror.upstreams).resource()
    return node.serve(cfg.listen, cfg.manhole)


def _make_node(options, role: str) -> MultiService:
    cfg = config.load(options["config"], config.NodeConfig)
    return _node(cfg, role).serve(cfg.listen, cfg.manhole)


def _seed_cache(swarm: Swarm, cache: BlobCache) -> None:
    """Seed every cached blob whose torrent we have, e.g. after a restart."""
    for hex_ in cache.list():
        data = cache.load_torrent(hex_)
        if data is not None:
            swarm.seed(Metainfo.parse(data, hex_), cache.blobs)


def make_agent(options) -> MultiService:
    return _make_node(options, "agent")


def make_proxy(options) -> MultiService:
    return _make_node(options, "proxy")
