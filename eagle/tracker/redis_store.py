"""Swarms in Redis, shared by every tracker that points at the same Redis.

One hash per swarm, ``eagle:swarm:<infohash hex>``, maps ``ip|port`` to the peer's
last announce (JSON, with its expiry time). Each announce renews the key's own
expiry, so a swarm nobody announces to any more disappears from Redis by itself,
and expired peers are dropped whenever their swarm is read: the number of keys
follows the live swarms, and each key's size the live peers.

An announce is one round trip: a script records the peer, renews the expiry and
reads the swarm back as a single string, because txredisapi spends a reactor turn
on every element of a multi-bulk reply (measured: an HSET, EXPIRE and HGETALL of a
256-peer swarm answered about 800 announces/s on one core, the script about
2,000; ``docs/benchmark.rst``).

Known shortcoming: every announce reads the whole swarm to order its peers by
locality, which is O(peers) per announce; for swarms of many thousands of hosts a
sampled read would scale better, at some cost in locality.
"""

import functools
import json

from twisted.logger import Logger
from zope.interface import implementer

from eagle.tracker.peers import Peer
from eagle.tracker.store import IPeerStore, StoreUnavailable

PREFIX = "eagle:swarm:"
# Fields are "ip|port" and values one-line JSON: neither holds a newline.
_READ = "return table.concat(redis.call('HGETALL', KEYS[1]), '\\n')"
_ANNOUNCE = (
    "redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) "
    "redis.call('EXPIRE', KEYS[1], ARGV[3]) " + _READ
)


def _field(peer: Peer) -> str:
    return f"{peer.ip}|{peer.port}"


def _encode(peer: Peer, expires: float) -> str:
    return json.dumps(
        {
            "id": peer.peer_id.hex(),
            "complete": peer.complete,
            "seeder": peer.seeder,
            "labels": peer.labels,
            "expires": expires,
        }
    )


@functools.lru_cache(maxsize=65536)
def _decode(field: str, value: str) -> tuple[Peer, float]:
    # Cached: a peer's entry reads the same on every announce until it announces
    # again, and decoding whole swarms was most of an announce's time.
    ip, _, port = field.rpartition("|")
    data = json.loads(value)
    peer = Peer(
        peer_id=bytes.fromhex(data["id"]),
        ip=ip,
        port=int(port),
        complete=bool(data["complete"]),
        seeder=bool(data["seeder"]),
        labels=dict(data.get("labels") or {}),
    )
    return peer, float(data["expires"])


@implementer(IPeerStore)
class RedisPeerStore:
    log = Logger()

    def __init__(self, redis, clock):
        self.redis = redis
        self.clock = clock

    async def _call(self, method, *args):
        try:
            return await getattr(self.redis, method)(*args)
        except Exception as e:
            raise StoreUnavailable(f"redis {method}: {e}") from None

    async def announce(self, infohash: bytes, peer: Peer, ttl: float) -> list[Peer]:
        key = PREFIX + infohash.hex()
        expires = self.clock.seconds() + ttl
        args = [_field(peer), _encode(peer, expires), int(ttl) + 1]
        return await self._live(key, await self._call("eval", _ANNOUNCE, [key], args))

    async def leave(self, infohash: bytes, peer: Peer) -> None:
        await self._call("hdel", PREFIX + infohash.hex(), _field(peer))

    async def peers(self, infohash: bytes) -> list[Peer]:
        key = PREFIX + infohash.hex()
        return await self._live(key, await self._call("eval", _READ, [key], []))

    async def _live(self, key: str, swarm: str | bytes | None) -> list[Peer]:
        """The live peers in a swarm read back as ``field\\nvalue\\n..``; the
        expired ones are dropped from Redis."""
        if isinstance(swarm, bytes):
            swarm = swarm.decode("utf-8", "replace")
        items = swarm.split("\n") if swarm else []
        now = self.clock.seconds()
        live, expired = [], []
        for field, value in zip(items[::2], items[1::2], strict=False):
            try:
                peer, expires = _decode(field, value)
            except (ValueError, KeyError, TypeError):
                expired.append(field)  # not ours, or from an older version
                continue
            if expires > now:
                live.append(peer)
            else:
                expired.append(field)
        if expired:
            await self._call("hdel", key, expired)
        return live

    def purge(self) -> None:
        """Nothing to do: Redis expires abandoned swarms itself."""
