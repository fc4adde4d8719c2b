"""A host's speed limits: one download and one upload budget for all its traffic.

Peer traffic is limited by libtorrent's session (all peers are in its global
peer class, local ones too); blob fetches over HTTP (fallback, small blobs,
origin) by a token bucket here. libtorrent keeps its own bucket, so the two
cannot draw on one: the download budget is split instead. While HTTP fetches
and swarm downloads run at the same time each gets half; otherwise the one
running gets all of it. The split changes when a fetch starts or ends, before
its first byte, so together they stay within the budget (each bucket allows a
burst of ``BURST`` seconds' worth). Uploads are the swarm's only: an agent's
HTTP answers go to the engines on its own host.

Optional per-blob limits apply to each swarm download (libtorrent's
per-torrent limits) and each HTTP fetch (a bucket of its own). No I/O here.
"""

from collections.abc import Callable
from dataclasses import dataclass

# A bucket holds at most this many seconds of its rate: short enough that a
# 10 s measurement stays within a few percent of the limit.
BURST = 0.1
MIN_BURST = 64 * 1024


class TokenBucket:
    """``rate`` bytes a second (0: no limit), lent in advance: taking more than
    there is gives the delay after which the debt is paid."""

    def __init__(self, clock, rate: int = 0):
        self.clock = clock
        self.rate = rate
        self._tokens = 0.0
        self._when = clock.seconds()

    def set_rate(self, rate: int) -> None:
        self._refill()
        self.rate = rate
        self._tokens = min(self._tokens, self.burst)

    @property
    def burst(self) -> float:
        return max(self.rate * BURST, MIN_BURST)

    def _refill(self) -> None:
        now = self.clock.seconds()
        if self.rate:
            self._tokens = min(
                self.burst, self._tokens + (now - self._when) * self.rate
            )
        self._when = now

    def take(self, count: int) -> float:
        """Spend ``count`` bytes; return the seconds to wait before the next."""
        if not self.rate:
            return 0.0
        self._refill()
        self._tokens -= count
        return -self._tokens / self.rate if self._tokens < 0 else 0.0


@dataclass
class Limits:
    """Bytes a second; 0 is no limit."""

    download: int = 0
    upload: int = 0
    blob_download: int = 0
    blob_upload: int = 0


def download_shares(limit: int, http: bool, swarm: bool) -> tuple[int, int]:
    """How a download limit splits between (HTTP, swarm), by who is running."""
    if not limit or not (http and swarm):
        return limit, limit
    half = limit // 2
    return half, limit - half


class HostLimits:
    """The host's limits, applied to the HTTP bucket and, through ``apply_swarm``
    (download, upload, blob download, blob upload), to libtorrent."""

    def __init__(
        self,
        clock,
        limits: Limits,
        apply_swarm: Callable[[int, int, int, int], None] = lambda *a: None,
        swarm_downloading: Callable[[], bool] = lambda: False,
    ):
        self.clock = clock
        self.limits = limits
        self.apply_swarm = apply_swarm
        self.swarm_downloading = swarm_downloading
        self.http = TokenBucket(clock)
        self.http_fetches = 0
        self._applied = None
        self.rebalance()

    def set(self, limits: Limits) -> None:
        self.limits = limits
        self._applied = None
        self.rebalance()

    def rebalance(self) -> None:
        """Split the download budget for who is running now."""
        http, swarm = download_shares(
            self.limits.download, self.http_fetches > 0, self.swarm_downloading()
        )
        self.http.set_rate(http)
        applied = (
            swarm,
            self.limits.upload,
            self.limits.blob_download,
            self.limits.blob_upload,
        )
        if applied != self._applied:
            self._applied = applied
            self.apply_swarm(*applied)

    def http_fetch(self) -> "HTTPThrottle":
        """The throttle of one HTTP fetch, to be closed when it ends."""
        self.http_fetches += 1
        self.rebalance()
        return HTTPThrottle(self)


class HTTPThrottle:
    """One HTTP fetch's draw on the host bucket (and its own per-blob bucket)."""

    def __init__(self, host: HostLimits):
        self.host = host
        self.blob = TokenBucket(host.clock, host.limits.blob_download)
        self.closed = False

    @property
    def rate(self) -> int:
        """The stricter of the rates this fetch is held to (0: none)."""
        rates = [r for r in (self.host.http.rate, self.blob.rate) if r]
        return min(rates, default=0)

    def take(self, count: int) -> float:
        self.blob.set_rate(self.host.limits.blob_download)
        return max(self.host.http.take(count), self.blob.take(count))

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.host.http_fetches -= 1
            self.host.rebalance()
