"""Peer optimal arithmetic: the order in which the tracker hands out peers. No I/O.

Hosts carry topology labels (region, zone, rack). Bytes that stay in a rack or a
zone are cheap and fast; bytes that cross zones are neither. So the tracker lists,
for each requester, the peers nearest to it first, and among equally near peers
those that have the whole blob before those that are still downloading. Within a
class the order is random, so that load spreads instead of piling onto one host.
Dedicated seeders come last: they are the source of last resort, and every byte a
peer can give instead is one a seeder does not have to send. Once enough other
hosts have the whole blob, seeders are left out altogether, so that a seeder's
upload stops growing with the number of hosts that pull. Should those hosts fail
the requester, their entries expire from the tracker and seeders are listed
again; meanwhile the agent's stall timeout finishes the blob over HTTP.
"""

import random
from dataclasses import dataclass, field

LEVELS = ("region", "zone", "rack")
# How many other hosts with the whole blob make seeders unnecessary: two, so that
# one slow or vanished host does not leave the requester with a single source.
ENOUGH_COMPLETE = 2


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


def order_peers(
    requester: Peer,
    candidates: list[Peer],
    numwant: int,
    rng: random.Random,
    enough_complete: int = ENOUGH_COMPLETE,
) -> list[Peer]:
    """Pick at most ``numwant`` peers for ``requester``, nearest and most complete
    first, never the requester itself, and no seeder once ``enough_complete``
    other hosts have the whole blob."""
    others = [p for p in candidates if p.key != requester.key]
    if sum(p.complete and not p.seeder for p in others) >= enough_complete:
        others = [p for p in others if not p.seeder]
    rng.shuffle(others)
    others.sort(
        key=lambda p: (p.seeder, distance(requester.labels, p.labels), not p.complete)
    )
    return others[: max(0, numwant)]
