"""What one tracker heard lately of each swarm, for its status page and metrics.

No I/O. Peers tell the tracker in every announce how far along they are (``left``)
and how much they uploaded and downloaded; agents also name the blob (``digest``)
and its ``size`` in their announce URLs, so the page can say which blob a swarm
is. Each tracker sees only the announces it answers: with several trackers behind
one Redis, each page shows a share of the traffic.
"""

from __future__ import annotations

import re
import time
from collections import deque
from dataclasses import dataclass, field

# Bounds, so that memory stays small whatever announces arrive.
MAX_SWARMS = 2000
MAX_PEERS = 2000
HISTORY = 360  # samples of the bytes uploaded: 30 minutes at one per 5 s
SAMPLE_EVERY = 5.0
_DIGEST = re.compile("sha256:[0-9a-f]{64}")


@dataclass
class PeerState:
    kind: str  # "seeder" or "agent"
    address: str
    labels: dict
    left: int
    uploaded: int
    downloaded: int
    seen: float


@dataclass
class SwarmState:
    infohash: str  # hex of the 20 bytes in announces
    digest: str | None = None
    size: int | None = None
    peers: dict = field(default_factory=dict)  # (ip, port) -> PeerState
    seen: float = 0.0

    def progress(self, peer: PeerState) -> float | None:
        if not self.size:
            return 1.0 if peer.left == 0 else None
        return max(0.0, min(1.0, 1 - peer.left / self.size))

    def summary(self) -> dict:
        peers = sorted(self.peers.values(), key=lambda p: (p.kind, p.address))
        uploaded = {"seeder": 0, "agent": 0}
        for peer in peers:
            uploaded[peer.kind] += peer.uploaded
        return {
            "infohash": self.infohash,
            "digest": self.digest,
            "size": self.size,
            "complete": sum(1 for p in peers if p.left == 0),
            "incomplete": sum(1 for p in peers if p.left > 0),
            "uploaded": uploaded,
            "peers": [
                {
                    "kind": p.kind,
                    "address": p.address,
                    "labels": p.labels,
                    "progress": self.progress(p),
                    "uploaded": p.uploaded,
                    "downloaded": p.downloaded,
                }
                for p in peers
            ],
        }


class SwarmView:
    """The swarms and peers announced to this tracker within ``ttl`` seconds."""

    def __init__(self, clock, ttl: float):
        self.clock = clock
        self.ttl = ttl
        self.swarms: dict[str, SwarmState] = {}
        # Bytes uploaded over all swarms, by kind of uploader, since start: peers
        # report totals, so each announce adds what grew since the last one.
        self.uploaded = {"seeder": 0, "agent": 0}
        self.history: deque = deque(maxlen=HISTORY)
        self._last_sample = None

    def announced(
        self,
        infohash: bytes,
        key: tuple,
        *,
        seeder: bool,
        labels: dict,
        left: int,
        uploaded: int,
        downloaded: int,
        event: str,
        digest: str | None = None,
        size: int | None = None,
    ) -> None:
        now = self.clock.seconds()
        name = infohash.hex()
        swarm = self.swarms.get(name)
        if swarm is None:
            if len(self.swarms) >= MAX_SWARMS:
                self.expire()
                if len(self.swarms) >= MAX_SWARMS:
                    oldest = min(self.swarms.values(), key=lambda s: s.seen)
                    del self.swarms[oldest.infohash]
            swarm = self.swarms[name] = SwarmState(name)
        swarm.seen = now
        swarm.digest = digest or swarm.digest
        swarm.size = size or swarm.size
        kind = "seeder" if seeder else "agent"
        before = swarm.peers.get(key)
        if before is not None:
            self.uploaded[kind] += max(0, uploaded - before.uploaded)
        else:
            self.uploaded[kind] += uploaded
        if event == "stopped":
            swarm.peers.pop(key, None)
        elif before is not None or len(swarm.peers) < MAX_PEERS:
            address = f"{key[0]}:{key[1]}"
            swarm.peers[key] = PeerState(
                kind, address, dict(labels), left, uploaded, downloaded, now
            )
        self.sample(now)

    def sample(self, now: float) -> None:
        if self._last_sample is None or now - self._last_sample >= SAMPLE_EVERY:
            self._last_sample = now
            self.history.append((now, self.uploaded["seeder"], self.uploaded["agent"]))

    def expire(self) -> None:
        now = self.clock.seconds()
        for name, swarm in list(self.swarms.items()):
            for key in [k for k, p in swarm.peers.items() if now - p.seen > self.ttl]:
                del swarm.peers[key]
            if not swarm.peers:
                del self.swarms[name]

    def totals(self) -> tuple[int, int]:
        """(swarms, peers) live now."""
        self.expire()
        return len(self.swarms), sum(len(s.peers) for s in self.swarms.values())

    def snapshot(self) -> dict:
        self.expire()
        self.sample(self.clock.seconds())
        swarms = sorted(self.swarms.values(), key=lambda s: -s.seen)
        return {
            "swarms": [s.summary() for s in swarms],
            "uploaded": dict(self.uploaded),
            "history": [list(h) for h in self.history],
        }


class WallClock:
    """The clock a tracker built without one uses (tests pass a ``Clock``)."""

    @staticmethod
    def seconds() -> float:
        return time.time()


def _count(args: dict, name: str) -> int:
    raw = (args.get(name.encode()) or [b"0"])[0]
    return int(raw) if raw.isdigit() and len(raw) <= 20 else 0


def details(args: dict) -> dict:
    """What an accepted announce says beyond its peer: progress, totals, blob.

    The blob's ``digest`` and ``size`` are Eagle's own additions to the announce
    URL; a value that is not well formed is dropped, never an error."""
    digest = (args.get(b"digest") or [b""])[0].decode("ascii", "replace")
    return {
        "left": _count(args, "left"),
        "uploaded": _count(args, "uploaded"),
        "downloaded": _count(args, "downloaded"),
        "digest": digest if _DIGEST.fullmatch(digest) else None,
        "size": _count(args, "size") or None,
    }
