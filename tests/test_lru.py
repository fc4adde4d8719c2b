"""LRU accounting with pins: what the cache evicts to stay within its budget."""

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from eagle.lru import LRUAccounting


def evict(lru: LRUAccounting, incoming: int = 0) -> list[str]:
    """Remove the victims, as BlobCache does, and return them."""
    victims = lru.victims(incoming)
    for key in victims:
        lru.remove(key)
    return victims


class LRUTests(SynchronousTestCase):
    def test_total(self):
        """Adding, re-adding and removing keep the byte total right."""
        lru = LRUAccounting(100)
        lru.add("a", 10)
        lru.add("b", 20)
        self.assertEqual((lru.total, len(lru)), (30, 2))
        lru.add("a", 15)
        self.assertEqual((lru.total, len(lru)), (35, 2))
        lru.remove("b")
        lru.remove("b")
        lru.remove("never")
        self.assertEqual((lru.total, len(lru)), (15, 1))
        self.assertIn("a", lru)
        self.assertNotIn("b", lru)

    def test_within_budget(self):
        """Nothing is a victim while the total fits."""
        lru = LRUAccounting(100)
        lru.add("a", 50)
        lru.add("b", 50)
        self.assertEqual(lru.victims(), [])

    def test_least_recently_used_first(self):
        """Victims are the least recently used blobs, and only as many as needed."""
        lru = LRUAccounting(100)
        for key in "abcd":
            lru.add(key, 30)
        self.assertEqual(lru.victims(), ["a"])
        lru.touch("a")
        self.assertEqual(lru.victims(), ["b"])
        self.assertEqual(lru.victims(incoming=30), ["b", "c"])
        self.assertEqual(lru.keys(), ["b", "c", "d", "a"])

    def test_re_add_counts_as_use(self):
        """Adding a key again makes it the most recently used."""
        lru = LRUAccounting(60)
        lru.add("a", 30)
        lru.add("b", 30)
        lru.add("a", 30)
        lru.add("c", 30)
        self.assertEqual(lru.victims(), ["b"])

    def test_touch_unknown(self):
        """Touching a key that is not there adds nothing."""
        lru = LRUAccounting(10)
        lru.touch("x")
        self.assertEqual((len(lru), lru.total), (0, 0))

    def test_incoming(self):
        """Room is made for bytes about to arrive."""
        lru = LRUAccounting(100)
        lru.add("a", 40)
        lru.add("b", 40)
        self.assertEqual(lru.victims(incoming=20), [])
        self.assertEqual(lru.victims(incoming=21), ["a"])
        self.assertEqual(lru.victims(incoming=61), ["a", "b"])

    def test_pinned_never_victim(self):
        """A pinned blob is skipped, even when it is the least recently used."""
        lru = LRUAccounting(50)
        lru.add("a", 40)
        lru.add("b", 40)
        lru.pin("a")
        self.assertEqual(lru.victims(), ["b"])
        lru.pin("b")
        self.assertEqual(lru.victims(), [])

    def test_pins_count(self):
        """A blob pinned twice stays pinned until unpinned twice."""
        lru = LRUAccounting(0)
        lru.add("a", 1)
        lru.pin("a")
        lru.pin("a")
        lru.unpin("a")
        self.assertTrue(lru.pinned("a"))
        self.assertEqual(lru.victims(), [])
        lru.unpin("a")
        self.assertFalse(lru.pinned("a"))
        self.assertEqual(lru.victims(), ["a"])

    def test_pin_before_add(self):
        """A blob pinned while it downloads is protected once it is added."""
        lru = LRUAccounting(10)
        lru.pin("new")
        lru.add("old", 10)
        lru.add("new", 10)
        self.assertEqual(lru.victims(), ["old"])

    def test_unpin_unknown(self):
        """Unpinning a key never pinned leaves it unpinned, not negative."""
        lru = LRUAccounting(10)
        lru.unpin("x")
        lru.pin("x")
        self.assertTrue(lru.pinned("x"))

    @given(
        st.integers(0, 1000),
        st.lists(
            st.tuples(
                st.sampled_from(["add", "touch", "pin", "unpin", "remove", "evict"]),
                st.sampled_from("abcdefgh"),
                st.integers(0, 300),
            ),
            max_size=60,
        ),
    )
    def test_model(self, budget, operations):
        """Under any operations the total is the sum of sizes, victims are the least
        recently used unpinned blobs, as many as needed to fit the budget."""
        lru = LRUAccounting(budget)
        sizes, order, pins = {}, [], {}
        for op, key, size in operations:
            if op == "add":
                lru.add(key, size)
                sizes[key] = size
                order = [k for k in order if k != key] + [key]
            elif op == "touch":
                lru.touch(key)
                if key in sizes:
                    order = [k for k in order if k != key] + [key]
            elif op == "pin":
                lru.pin(key)
                pins[key] = pins.get(key, 0) + 1
            elif op == "unpin" and pins.get(key):
                lru.unpin(key)
                pins[key] -= 1
            elif op == "remove":
                lru.remove(key)
                sizes.pop(key, None)
                order = [k for k in order if k != key]
            elif op == "evict":
                before = lru.total
                victims = evict(lru, size)
                unpinned = [k for k in order if not pins.get(k)]
                self.assertEqual(victims, unpinned[: len(victims)])
                freed = [sizes.pop(victim) for victim in victims]
                order = [k for k in order if k not in victims]
                # Enough was taken: the budget holds, or every unpinned blob went.
                self.assertTrue(
                    lru.total + size <= budget or len(victims) == len(unpinned)
                )
                # No more than needed: without the last victim it would not hold.
                if victims:
                    self.assertGreater(before - sum(freed[:-1]) + size, budget)
            self.assertEqual(lru.total, sum(sizes.values()))
            self.assertEqual(lru.keys(), order)


class InUseTests(SynchronousTestCase):
    def test_in_use_spared(self):
        """A blob the caller says is in use is skipped like a pinned one, and
        only candidates are asked about."""
        lru = LRUAccounting(50)
        for key in "abc":
            lru.add(key, 20)
        asked = []

        def in_use(key):
            asked.append(key)
            return key == "a"

        self.assertEqual(lru.victims(0, in_use), ["b"])
        self.assertEqual(asked, ["a", "b"])
