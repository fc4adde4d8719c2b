"""Peer optimal arithmetic: the order in which the tracker hands out peers. No I/O.

Hosts carry topology labels (region, zone, rack). Bytes that stay in a rack or a
zone are cheap and fast; bytes that cross zones are neither. So the tracker lists,
for each requester, the peers nearest to it first, and among equally near peers
those that have the whole blob before those that are still downloading. Within a
class the order is random, so that load spreads instead of piling onto one host.
Dedicated seeders come last: they are the source of last resort, and every byte a
peer can give instead is one a seeder does not have to send. A seeder feeds only
a few hosts of each swarm, its *feeders*, and the others get the blob from them
and from each other: a seeder that serves every host sends the same piece to
several hosts that ask for it at once, while feeders that see each other's pieces
ask it for each piece about once. Once enough other
hosts have the whole blob, seeders are left out altogether, so that a seeder's
upload stops growing with the number of hosts that pull. Should those hosts fail
the requester, their entries expire from the tracker and seeders are listed
again; meanwhile the agent's stall timeout finishes the blob over HTTP.
"""

import hashlib
import random
from dataclasses import dataclass, field

LEVELS = ("region", "zone", "rack")
# How many other hosts with the whole blob make seeders unnecessary: two, so that
# one slow or vanished host does not leave the requester with a single source.
ENOUGH_COMPLETE = 2
# A zone with this many other hosts in a swarm trades with other zones through
# GATEWAYS of its hosts only: one, so that each piece crosses about once; when it
# leaves, its entry expires and another host takes over.
ENOUGH_LOCAL = 2
GATEWAYS = 1
# Hosts a seeder serves in a swarm: two, so that one slow feeder does not halve
# how fast the blob enters the swarm, and few, so that each piece leaves the
# seeder about once. Known shortcoming: feeders are not chosen by speed, so two
# slow ones hold back the swarm (until hosts fall back to HTTP).
FEEDERS = 2


@dataclass(frozen=True)
class Peer:
    """A host in a blob's swarm, as it last announced itself."""

    peer_id: bytes
    ip: str
    port: int
    complete: bool = False
    seeder: bool = False
    labels: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def key(self) -> tuple[str, int]:
        return (self.ip, self.port)


def distance(a: dict, b: dict) -> int:
    """0 for the same rack, 1 same zone, 2 same region, 3 otherwise.

    A level counts as shared only if both hosts name it and every level above it is
    shared too: rack "r1" in two different zones is not the same rack.
    """
    shared = 0
    for level in LEVELS:
        value = a.get(level)
        if value is None or value != b.get(level):
            break
        shared += 1
    return len(LEVELS) - shared


def zone(peer: Peer) -> tuple | None:
    """The (region, zone) a peer names, or None if it names no zone."""
    region, name = peer.labels.get("region"), peer.labels.get("zone")
    return (region, name) if name is not None else None


def gateways(members: list[Peer], swarm: bytes, count: int = GATEWAYS) -> set:
    """The members of a zone that carry its traffic with other zones: the same
    ones on every announce (a hash of the swarm and each peer's id), so each
    piece crosses between zones about once; a new one takes over when one
    leaves the swarm."""
    hosts = [p for p in members if not p.seeder]
    hosts.sort(key=lambda p: _rank(swarm, p))
    return {p.key for p in hosts[:count]}


def _rank(swarm: bytes, peer: Peer) -> bytes:
    return hashlib.sha256(swarm + peer.peer_id).digest()


def feeders(seeder: Peer, hosts: list[Peer], swarm: bytes, count: int = FEEDERS):
    """The hosts ``seeder`` serves: partial hosts nearest to it, then by a hash of
    swarm and peer id, so the same ones on every announce; when one completes or
    leaves the swarm, the next takes its place."""
    partial = [p for p in hosts if not p.seeder and not p.complete]
    partial.sort(key=lambda p: (distance(seeder.labels, p.labels), _rank(swarm, p)))
    return {p.key for p in partial[:count]}


def reachable(
    requester: Peer, others: list[Peer], swarm: bytes, enough_local: int = ENOUGH_LOCAL
) -> list[Peer]:
    """The peers that ``requester`` may be handed, by zone.

    Other zones are met only through their gateways, seeders and hosts with the
    whole blob; and once its zone has ``enough_local`` other members, only the
    zone's gateway meets other zones at all, everyone else trades within the
    zone (and with seeders that name no zone). Without zone labels every host
    may meet every other.
    """
    home = zone(requester)
    if home is None:
        return others
    # A seeder that names no zone serves every zone (the last resort for all).
    local = [p for p in others if zone(p) == home or (p.seeder and zone(p) is None)]
    lonely = len([p for p in local if not p.seeder]) < enough_local
    if not lonely and requester.key not in gateways([requester, *local], swarm):
        return local
    # A gateway, or a host with too few neighbours yet to trade with: other zones
    # through their gateways only. Hosts keep the connections they make, so even
    # the first hosts of a zone, which arrive before their neighbours, must not
    # meet every host of every other zone.
    by_zone: dict = {}
    for peer in others:
        if peer not in local:
            by_zone.setdefault(zone(peer), []).append(peer)
    remote = [
        p
        for members in by_zone.values()
        for p in members
        if p.seeder or p.complete or p.key in gateways(members, swarm)
    ]
    return local + remote


def order_peers(
    requester: Peer,
    candidates: list[Peer],
    numwant: int,
    rng: random.Random,
    enough_complete: int = ENOUGH_COMPLETE,
    swarm: bytes = b"",
    enough_local: int = ENOUGH_LOCAL,
    feeders_count: int = FEEDERS,
) -> list[Peer]:
    """Pick at most ``numwant`` peers for ``requester``, nearest and most complete
    first, never the requester itself, other zones only through gateways,
    seeders only to their feeders and feeders only to seeders among hosts, and no
    seeder once ``enough_complete`` other hosts have the whole blob."""
    others = [p for p in candidates if p.key != requester.key]
    everyone = [requester, *others]
    if requester.seeder:
        fed = feeders(requester, everyone, swarm, feeders_count)
        return [p for p in others if p.key in fed][: max(0, numwant)]
    others = [
        p
        for p in reachable(requester, others, swarm, enough_local)
        if not p.seeder or requester.key in feeders(p, everyone, swarm, feeders_count)
    ]
    if sum(p.complete and not p.seeder for p in others) >= enough_complete:
        others = [p for p in others if not p.seeder]
    rng.shuffle(others)
    others.sort(
        key=lambda p: (p.seeder, distance(requester.labels, p.labels), not p.complete)
    )
    return others[: max(0, numwant)]
