"""Run one call per key at a time; concurrent callers share its result."""

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure


class SingleFlight:
    def __init__(self):
        self._waiting: dict[object, list[Deferred]] = {}

    def run(self, key, start) -> Deferred:
        """``start()`` returns a coroutine or Deferred; it runs unless a call for
        ``key`` is already running, in which case this waits for that one."""
        if key in self._waiting:
            d = Deferred()
            self._waiting[key].append(d)
            return d
        self._waiting[key] = []
        first = Deferred.fromCoroutine(_await(start()))

        def share(result):
            for d in self._waiting.pop(key):
                if isinstance(result, Failure):
                    d.errback(result)
                else:
                    d.callback(result)
            return result

        return first.addBoth(share)


async def _await(awaitable):
    return await awaitable
