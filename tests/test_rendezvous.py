"""Rendezvous hashing: every agent agrees on a blob's seeder, and a seeder that
leaves moves only its own blobs."""

from collections import Counter

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from eagle.rendezvous import rank

SEEDERS = [f"http://seeder{i}:7080" for i in range(5)]
KEYS = [f"{i:064x}" for i in range(2000)]

urls = st.lists(st.text(min_size=1, max_size=20), min_size=1, max_size=8, unique=True)


class RankTests(SynchronousTestCase):
    def test_permutation(self):
        """The ranking holds every node once."""
        self.assertEqual(sorted(rank("abc", SEEDERS)), sorted(SEEDERS))
        self.assertEqual(rank("abc", []), [])

    def test_input_order_irrelevant(self):
        """Hosts that list the seeders in another order agree on the ranking."""
        self.assertEqual(rank("abc", SEEDERS), rank("abc", list(reversed(SEEDERS))))

    def test_spread(self):
        """Owners are spread over the seeders, none with far more than its share."""
        owners = Counter(rank(key, SEEDERS)[0] for key in KEYS)
        self.assertEqual(set(owners), set(SEEDERS))
        share = len(KEYS) / len(SEEDERS)
        for count in owners.values():
            self.assertTrue(0.8 * share < count < 1.2 * share, owners)

    def test_leaving_moves_only_its_blobs(self):
        """When a seeder leaves, only the blobs it owned get a new owner, and
        that owner is the one next in line."""
        gone = SEEDERS[2]
        rest = [s for s in SEEDERS if s != gone]
        for key in KEYS[:500]:
            before = rank(key, SEEDERS)
            after = rank(key, rest)
            self.assertEqual(after, [s for s in before if s != gone])

    def test_joining_takes_a_fair_share(self):
        """A new seeder takes over about 1/N of the blobs, from every seeder."""
        new = "http://seeder9:7080"
        moved = [key for key in KEYS if rank(key, [*SEEDERS, new])[0] == new]
        share = len(KEYS) / (len(SEEDERS) + 1)
        self.assertTrue(0.8 * share < len(moved) < 1.2 * share, len(moved))

    @given(st.text(max_size=70), urls, st.randoms())
    def test_any_order(self, key, nodes, rng):
        """For any key and nodes, the ranking does not depend on the input order."""
        shuffled = list(nodes)
        rng.shuffle(shuffled)
        self.assertEqual(rank(key, nodes), rank(key, shuffled))

    @given(st.text(max_size=70), urls, st.data())
    def test_any_removal(self, key, nodes, data):
        """Removing any node keeps the order of the others."""
        gone = data.draw(st.sampled_from(nodes))
        rest = [n for n in nodes if n != gone]
        self.assertEqual(rank(key, rest), [n for n in rank(key, nodes) if n != gone])
