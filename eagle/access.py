"""Who may have a blob: the origin decides, and Eagle remembers its answers.

A blob in a cache, or arriving through the swarm, came with somebody's
credentials, not necessarily the asking client's. So before serving it, Eagle asks
the origin whether this client may pull it (a HEAD with the client's credentials)
and remembers a yes for a minute. A yes given to no credentials at all makes the
blob public: anyone may then have it. When the origin cannot be reached, a yes
from the last day still counts, so that a cached image outlives its registry for
the clients that pulled it before. No I/O here.
"""

from collections import OrderedDict

from eagle.manifests import ANYONE

FRESH = 60
REMEMBERED = 24 * 3600
MAX_ENTRIES = 100_000


class AccessCache:
    """The origin's recent yeses, per (registry, repository, digest) and client."""

    def __init__(self, clock, fresh: float = FRESH, remembered: float = REMEMBERED):
        self.clock = clock
        self.fresh_for = fresh
        self.remembered_for = remembered
        self._yes: OrderedDict[tuple, float] = OrderedDict()

    def _age(self, key: tuple, who: bytes) -> float | None:
        times = [self._yes.get((key, w)) for w in (who, ANYONE)]
        times = [t for t in times if t is not None]
        return self.clock.seconds() - max(times) if times else None

    def fresh(self, key: tuple, who: bytes) -> bool:
        """The origin said yes to this client (or to anyone) within a minute."""
        age = self._age(key, who)
        return age is not None and age < self.fresh_for

    def known(self, key: tuple, who: bytes) -> bool:
        """The origin said yes within a day: enough while it cannot be asked."""
        age = self._age(key, who)
        return age is not None and age < self.remembered_for

    def confirm(self, key: tuple, who: bytes) -> None:
        self._yes[(key, who)] = self.clock.seconds()
        self._yes.move_to_end((key, who))
        while len(self._yes) > MAX_ENTRIES:
            self._yes.popitem(last=False)
