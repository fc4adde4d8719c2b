"""Least-recently-used accounting for a cache of blobs, with pins. No I/O."""

from collections import Counter, OrderedDict
from collections.abc import Callable


class LRUAccounting:
    """Tracks blob sizes in use order and decides what to evict to stay in budget.

    A pinned blob (being read, downloaded, written to storage or having its
    torrent made) is never chosen, nor one the caller says is in use.
    """

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.total = 0
        self._sizes: OrderedDict[str, int] = OrderedDict()
        self._pins: Counter[str] = Counter()

    def __contains__(self, key: str) -> bool:
        return key in self._sizes

    def __len__(self) -> int:
        return len(self._sizes)

    def add(self, key: str, size: int) -> None:
        if key in self._sizes:
            self.total -= self._sizes.pop(key)
        self._sizes[key] = size
        self.total += size

    def size(self, key: str) -> int:
        return self._sizes[key]

    def remove(self, key: str) -> None:
        self.total -= self._sizes.pop(key, 0)

    def touch(self, key: str) -> None:
        if key in self._sizes:
            self._sizes.move_to_end(key)

    def pin(self, key: str) -> None:
        self._pins[key] += 1

    def unpin(self, key: str) -> None:
        self._pins[key] -= 1
        if self._pins[key] <= 0:
            del self._pins[key]

    def pinned(self, key: str) -> bool:
        return self._pins[key] > 0

    def victims(
        self, incoming: int = 0, in_use: Callable[[str], bool] = lambda key: False
    ) -> list[str]:
        """The least recently used unpinned blobs whose removal brings the total,
        plus ``incoming`` bytes about to arrive, within the budget (or as close as
        the pins allow).

        ``in_use(key)`` is asked only about candidates, in order: a way to spare
        blobs that are busy in a way nobody pinned, such as peers downloading them.
        """
        excess = self.total + incoming - self.max_bytes
        chosen = []
        for key, size in self._sizes.items():
            if excess <= 0:
                break
            if not self.pinned(key) and not in_use(key):
                chosen.append(key)
                excess -= size
        return chosen

    def keys(self) -> list[str]:
        return list(self._sizes)
