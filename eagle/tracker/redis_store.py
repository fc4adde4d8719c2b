"""Swarms in Redis, shared by every tracker that points at the same Redis.

One hash per swarm, ``eagle:swarm:<infohash hex>``, maps ``ip|port`` to the peer's
last announce (JSON, with its expiry time). Each announce renews the key's own
expiry, so a swarm nobody announces to any more disappears from Redis by itself,
and expired peers are dropped whenever their swarm is read: the number of keys
follows the live swarms, and each key's size the live peers.

Known shortcoming: every announce reads the whole swarm (HGETALL) to order its
peers by locality, which is O(peers) per announce; for swarms of many thousands of
hosts a sampled read would scale better, at some cost in locality.
"""

import json

from twisted.logger import Logger
from zope.interface import implementer

from eagle.tracker.peers import Peer
from eagle.tracker.store import IPeerStore, StoreUnavailable

PREFIX = "eagle:swarm:"


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


def _decode(field: str, value: str) -> tuple[Peer, float]:
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

    async def announce(self, infohash: bytes, peer: Peer, ttl: float) -> None:
        key = PREFIX + infohash.hex()
        expires = self.clock.seconds() + ttl
        await self._call("hset", key, _field(peer), _encode(peer, expires))
        await self._call("expire", key, int(ttl) + 1)

    async def leave(self, infohash: bytes, peer: Peer) -> None:
        await self._call("hdel", PREFIX + infohash.hex(), _field(peer))

    async def peers(self, infohash: bytes) -> list[Peer]:
        key = PREFIX + infohash.hex()
        swarm = await self._call("hgetall", key)
        now = self.clock.seconds()
        live, expired = [], []
        for field, value in (swarm or {}).items():
            try:
                peer, expires = _decode(field, value)
            except (ValueError, KeyError, TypeError):
                expired.append(field)  # not ours, or from an older version
                continue
            (live if expires > now else expired).append(
                peer if expires > now else field
            )
        if expired:
            await self._call("hdel", key, expired)
        return live

    def purge(self) -> None:
        """Nothing to do: Redis expires abandoned swarms itself."""
