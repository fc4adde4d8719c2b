"""Peer stores: where the tracker keeps each swarm's members."""

from zope.interface import Interface, implementer

from eagle.tracker.peers import Peer


class StoreUnavailable(Exception):
    """The shared store cannot be reached; the tracker tells agents to try another."""


class IPeerStore(Interface):
    """The swarm membership that trackers share."""

    def announce(infohash: bytes, peer: Peer, ttl: float):
        """Record ``peer`` in the swarm for ``ttl`` seconds: awaitable, giving
        the swarm's live peers then (``peer`` among them), as `peers` would."""

    def leave(infohash: bytes, peer: Peer):
        """Drop ``peer`` from the swarm. Awaitable."""

    def peers(infohash: bytes):
        """The swarm's live peers: awaitable, giving a list of Peer."""

    def purge():
        """Drop every expired peer and empty swarm."""


@implementer(IPeerStore)
class MemoryPeerStore:
    """Swarms in this process's memory: the default for a single tracker.

    Expired peers are dropped when their swarm is read or written, and a swarm
    without peers is dropped with its last peer, so memory follows the live peers.
    """

    def __init__(self, clock):
        self._clock = clock
        self._swarms: dict[bytes, dict[tuple, tuple[Peer, float]]] = {}

    def _live(self, infohash: bytes) -> dict:
        swarm = self._swarms.get(infohash, {})
        now = self._clock.seconds()
        for key in [k for k, (_, expiry) in swarm.items() if expiry <= now]:
            del swarm[key]
        if not swarm:
            self._swarms.pop(infohash, None)
        return swarm

    async def announce(self, infohash: bytes, peer: Peer, ttl: float) -> list[Peer]:
        swarm = self._live(infohash)
        swarm[peer.key] = (peer, self._clock.seconds() + ttl)
        self._swarms[infohash] = swarm
        return [peer for peer, _ in swarm.values()]

    async def leave(self, infohash: bytes, peer: Peer) -> None:
        self._live(infohash).pop(peer.key, None)
        self._live(infohash)

    async def peers(self, infohash: bytes) -> list[Peer]:
        return [peer for peer, _ in self._live(infohash).values()]

    def purge(self) -> None:
        for infohash in list(self._swarms):
            self._live(infohash)

    def swarm_count(self) -> int:
        return len(self._swarms)
