"""The tracker's HTTP face: BitTorrent announce and scrape, over a peer store."""

import functools
import hmac
import ipaddress
import json
import random
import struct

import libtorrent as lt
from klein import Klein
from twisted.application.internet import TimerService
from twisted.logger import Logger

from eagle.metrics import DETACHED, MetricsResource
from eagle.status import tracker_page
from eagle.tracker.peers import LEVELS, Peer, order_peers
from eagle.tracker.store import IPeerStore, StoreUnavailable
from eagle.tracker.view import SwarmView, WallClock, details

MAX_NUMWANT = 200
DEFAULT_NUMWANT = 50
MAX_LABEL_LENGTH = 64


class AnnounceError(ValueError):
    """An announce we cannot accept; its text goes back as the failure reason."""


def _one(args: dict, name: str, default: bytes | None = None) -> bytes:
    values = args.get(name.encode())
    if not values:
        if default is None:
            raise AnnounceError(f"missing {name}")
        return default
    return values[0]


def _number(args: dict, name: str, default: int | None = None) -> int:
    raw = _one(args, name, None if default is None else str(default).encode())
    if not raw.isdigit() or len(raw) > 20:
        raise AnnounceError(f"{name} must be a non-negative integer")
    return int(raw)


def parse_announce(args: dict, client_ip: str) -> tuple[bytes, Peer, str, int]:
    """Check an announce's query and return (infohash, peer, event, numwant)."""
    infohash = _one(args, "info_hash")
    if len(infohash) != 20:
        raise AnnounceError("info_hash must be 20 bytes")
    peer_id = _one(args, "peer_id")
    if len(peer_id) != 20:
        raise AnnounceError("peer_id must be 20 bytes")
    port = _number(args, "port")
    if not 0 < port < 65536:
        raise AnnounceError("port must be between 1 and 65535")
    left = _number(args, "left", 1)
    event = _one(args, "event", b"").decode("ascii", "replace")
    numwant = min(_number(args, "numwant", DEFAULT_NUMWANT), MAX_NUMWANT)
    labels = {}
    for level in LEVELS:
        value = args.get(level.encode())
        if value:
            if len(value[0]) > MAX_LABEL_LENGTH:
                raise AnnounceError(f"{level} label too long")
            labels[level] = value[0].decode("utf-8", "replace")
    peer = Peer(
        peer_id=peer_id,
        ip=client_ip,
        port=port,
        complete=left == 0,
        seeder=_one(args, "role", b"") == b"seeder",
        labels=labels,
    )
    return infohash, peer, event, numwant


@functools.lru_cache(maxsize=65536)
def _packed(ip: str, port: int) -> bytes:
    # Parsing addresses was a fifth of an announce's time; peers re-announce
    # the same address and port for as long as they live.
    return ipaddress.ip_address(ip).packed + struct.pack("!H", port)


def compact(peers: list[Peer]) -> tuple[bytes, bytes]:
    """BEP 23 and BEP 7 compact lists: (IPv4 peers, IPv6 peers)."""
    v4, v6 = [], []
    for peer in peers:
        packed = _packed(peer.ip, peer.port)
        (v4 if len(packed) == 6 else v6).append(packed)
    return b"".join(v4), b"".join(v6)


class Tracker:
    """Announce and scrape handlers. The peer store is shared by all trackers."""

    app = Klein()
    log = Logger()

    def __init__(
        self,
        store: IPeerStore,
        interval: int = 15,
        rng=None,
        announce_token: str | None = None,
        clock=None,
        metrics=DETACHED,
    ):
        self.store = store
        self.metrics = metrics
        self.swarms = SwarmView(clock or WallClock(), 3 * interval)
        self.interval = interval
        self.rng = rng or random.Random()
        self.announce_token = announce_token
        self.announces = 0
        self.failures = 0

    def _authorized(self, request) -> bool:
        """With a token configured, only hosts that know it may announce."""
        if not self.announce_token:
            return True
        given = (request.args.get(b"token") or [b""])[0]
        return hmac.compare_digest(given, self.announce_token.encode())

    @property
    def peer_ttl(self) -> int:
        # A peer that misses two announces in a row is gone.
        return 3 * self.interval

    def _reply(self, request, body: dict) -> bytes:
        request.setHeader(b"Content-Type", b"text/plain")
        return lt.bencode(body)

    @app.route("/announce", methods=["GET"])
    async def announce(self, request):
        try:
            infohash, peer, event, numwant = parse_announce(
                request.args, request.getClientAddress().host
            )
        except AnnounceError as e:
            self.metrics.announces_refused.labels("malformed").inc()
            return self._reply(request, {"failure reason": str(e)})
        if not self._authorized(request):
            self.metrics.announces_refused.labels("token").inc()
            return self._reply(request, {"failure reason": "announce token required"})
        self.announces += 1
        self.metrics.announces.labels(event or "update").inc()
        try:
            if event == "stopped":
                await self.store.leave(infohash, peer)
                self._heard(infohash, peer, event, request.args)
                return self._reply(request, {"interval": self.interval, "peers": b""})
            swarm = await self.store.announce(infohash, peer, self.peer_ttl)
            self._heard(infohash, peer, event, request.args)
        except StoreUnavailable as e:
            # Not a 200: libtorrent then moves on to the next tracker at once.
            self.failures += 1
            self.metrics.announces_refused.labels("store").inc()
            self.log.warn("peer store unavailable: {reason}", reason=str(e))
            request.setResponseCode(503)
            return self._reply(request, {"failure reason": "peer store unavailable"})
        chosen = order_peers(peer, swarm, numwant, self.rng, swarm=infohash)
        peers4, peers6 = compact(chosen)
        complete = sum(1 for p in swarm if p.complete)
        return self._reply(
            request,
            {
                "interval": self.interval,
                "min interval": max(1, self.interval // 3),
                "complete": complete,
                "incomplete": len(swarm) - complete,
                "peers": peers4,
                "peers6": peers6,
            },
        )

    def _heard(self, infohash: bytes, peer: Peer, event: str, args: dict) -> None:
        """Note an accepted announce for the status page; log a peer's arrival,
        completion and departure (periodic announces only count)."""
        about = details(args)
        self.swarms.announced(
            infohash,
            peer.key,
            seeder=peer.seeder,
            labels=peer.labels,
            event=event,
            **about,
        )
        if event in ("started", "completed", "stopped"):
            self.log.info(
                "{kind} {address} {event} swarm {infohash} of {digest}",
                kind="seeder" if peer.seeder else "agent",
                address=f"{peer.ip}:{peer.port}",
                event=event,
                infohash=infohash.hex(),
                digest=about["digest"],
                left=about["left"],
            )

    @app.route("/scrape", methods=["GET"])
    async def scrape(self, request):
        files = {}
        for infohash in request.args.get(b"info_hash", [])[:MAX_NUMWANT]:
            if len(infohash) != 20:
                return self._reply(request, {"failure reason": "bad info_hash"})
            try:
                swarm = await self.store.peers(infohash)
            except StoreUnavailable:
                request.setResponseCode(503)
                return self._reply(
                    request, {"failure reason": "peer store unavailable"}
                )
            complete = sum(1 for p in swarm if p.complete)
            files[infohash] = {
                "complete": complete,
                "incomplete": len(swarm) - complete,
                "downloaded": complete,
            }
        return self._reply(request, {"files": files})

    @app.route("/eagle/stats", methods=["GET"])
    def status(self, request):
        request.setHeader(b"Content-Type", b"application/json")
        stats = {
            "role": "tracker",
            "announces": self.announces,
            "store_failures": self.failures,
            **self.swarms.snapshot(),
        }
        return json.dumps(stats).encode()

    @app.route("/eagle/status", methods=["GET"])
    def status_page(self, request):
        request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
        stats = {
            "announces": self.announces,
            "store_failures": self.failures,
            **self.swarms.snapshot(),
        }
        return tracker_page(stats)

    @app.route("/metrics", methods=["GET"])
    def metrics_page(self, request):
        return MetricsResource(self.metrics)


def purge_service(store: IPeerStore, interval: float) -> TimerService:
    """Drop expired peers now and then, also from swarms nobody asks about."""
    return TimerService(interval, store.purge)
