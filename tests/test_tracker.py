"""The tracker: peer order by topology, the peer store, announce and scrape."""

import random
import struct
from urllib.parse import urlencode

import libtorrent as lt
import treq
from hypothesis import given
from hypothesis import strategies as st
from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from eagle.tracker.peers import (
    FEEDERS,
    Peer,
    distance,
    feeders,
    gateways,
    order_peers,
    reachable,
)
from eagle.tracker.server import (
    MAX_NUMWANT,
    AnnounceError,
    Tracker,
    compact,
    parse_announce,
)
from eagle.tracker.store import IPeerStore, MemoryPeerStore, StoreUnavailable

HERE = {"region": "eu", "zone": "eu-1", "rack": "r1"}


def peer(port: int, labels=None, complete=False, seeder=False, ip="10.0.0.1"):
    return Peer(
        peer_id=b"-EA0100-" + b"%012d" % port,
        ip=ip,
        port=port,
        complete=complete,
        seeder=seeder,
        labels=labels or {},
    )


def rank_of(requester: Peer, p: Peer) -> tuple:
    """The class of ``p`` for ``requester``: lower is handed out first."""
    return (p.seeder, distance(requester.labels, p.labels), not p.complete)


class DistanceTests(SynchronousTestCase):
    def test_levels(self):
        """Same rack 0, same zone 1, same region 2, else 3."""
        self.assertEqual(distance(HERE, dict(HERE)), 0)
        self.assertEqual(distance(HERE, {**HERE, "rack": "r2"}), 1)
        self.assertEqual(distance(HERE, {**HERE, "zone": "eu-2", "rack": "x"}), 2)
        self.assertEqual(distance(HERE, {"region": "us"}), 3)
        self.assertEqual(distance({}, {}), 3)

    def test_rack_needs_zone(self):
        """Rack r1 in two zones is not the same rack."""
        other = {"region": "eu", "zone": "eu-2", "rack": "r1"}
        self.assertEqual(distance(HERE, other), 2)
        self.assertEqual(distance({"rack": "r1"}, {"rack": "r1"}), 3)


class OrderPeersTests(SynchronousTestCase):
    def test_never_the_requester(self):
        """The requester is left out, matched by address and port."""
        me = peer(1, HERE)
        swarm = [peer(1, HERE, complete=True), peer(2)]
        self.assertEqual(
            [p.port for p in order_peers(me, swarm, 10, random.Random(0))], [2]
        )

    def test_numwant(self):
        """At most numwant peers come back; zero or less gives none."""
        me = peer(0)
        swarm = [peer(i) for i in range(1, 20)]
        self.assertEqual(len(order_peers(me, swarm, 5, random.Random(0))), 5)
        self.assertEqual(order_peers(me, swarm, 0, random.Random(0)), [])
        self.assertEqual(order_peers(me, swarm, -3, random.Random(0)), [])
        self.assertEqual(len(order_peers(me, swarm, 100, random.Random(0))), 19)

    def test_nearest_first(self):
        """Same rack, then same zone, then same region, then the others (in a
        zone too small for gateways)."""
        me = peer(0, HERE)
        far = peer(1, {"region": "us"})
        region = peer(2, {"region": "eu", "zone": "eu-2"})
        zone = peer(3, {**HERE, "rack": "r9"})
        rack = peer(4, dict(HERE))
        swarm = [far, region, zone, rack]
        ordered = order_peers(me, swarm, 10, random.Random(0), enough_local=3)
        self.assertEqual([p.port for p in ordered], [4, 3, 2, 1])

    def test_complete_before_partial(self):
        """Within a class, peers with the whole blob come first."""
        me = peer(0, HERE)
        partial = peer(1, HERE)
        complete = peer(2, HERE, complete=True)
        far_complete = peer(3, {"region": "us"}, complete=True)
        ordered = order_peers(
            me, [partial, far_complete, complete], 10, random.Random()
        )
        self.assertEqual([p.port for p in ordered], [2, 1, 3])

    def test_seeders_last(self):
        """Dedicated seeders come after every other peer, even far partial ones."""
        me = peer(0, HERE)
        seeder = peer(1, dict(HERE), complete=True, seeder=True)
        far = peer(2, {"region": "us"})
        ordered = order_peers(me, [seeder, far], 10, random.Random())
        self.assertEqual([p.port for p in ordered], [2, 1])

    def test_seeders_left_out_once_two_hosts_have_the_blob(self):
        """Two other complete hosts make seeders unnecessary; one does not."""
        me = peer(0, HERE)
        seeder = peer(1, dict(HERE), complete=True, seeder=True)
        first = peer(2, {"region": "us"}, complete=True)
        second = peer(3, {"region": "us"}, complete=True)
        one = order_peers(me, [seeder, first], 10, random.Random())
        self.assertEqual([p.port for p in one], [2, 1])
        two = order_peers(me, [seeder, first, second], 10, random.Random())
        self.assertEqual(sorted(p.port for p in two), [2, 3])

    def test_seeders_feed_few_hosts(self):
        """A seeder is handed to its feeders only, the partial hosts nearest to
        it, and handed those only; complete hosts free a feeder's place."""
        seeder = peer(1, dict(HERE), complete=True, seeder=True)
        near = [peer(i, dict(HERE)) for i in (2, 3, 4)]
        far = [peer(i, {"region": "us"}) for i in (5, 6)]
        swarm = [seeder, *near, *far]
        fed = feeders(seeder, swarm, b"s")
        self.assertEqual(len(fed), FEEDERS)
        self.assertLessEqual(fed, {p.key for p in near})
        for host in near + far:
            got = order_peers(host, swarm, 50, random.Random(), swarm=b"s")
            self.assertEqual(seeder in got, host.key in fed, host)
        fed_peers = order_peers(seeder, swarm, 50, random.Random(), swarm=b"s")
        self.assertEqual({p.key for p in fed_peers}, fed)
        # The feeders complete: the next partial hosts take their place.
        done = [
            peer(p.port, dict(HERE), complete=True) if p.key in fed else p
            for p in swarm
        ]
        self.assertEqual(len(feeders(seeder, done, b"s") & fed), 0)

    def test_zones_meet_through_gateways(self):
        """With enough hosts in its zone, a host trades only within it unless it
        is a gateway; gateways get other zones' gateways, complete hosts and
        seeders, never other zones' partial hosts."""
        zone_a = {"region": "eu", "zone": "a"}
        zone_b = {"region": "eu", "zone": "b"}
        a = [peer(i, zone_a) for i in range(1, 6)]
        b = [peer(i, zone_b) for i in range(10, 15)]
        done_b = peer(20, zone_b, complete=True)
        seeder = peer(30, zone_b, complete=True, seeder=True)
        swarm = [*a, *b, done_b, seeder]
        key = b"\x01" * 20
        doors_a = gateways(a, key)
        doors_b = gateways([*b, done_b], key)
        self.assertEqual(len(doors_a), 1)
        for me in a:
            handed = order_peers(me, swarm, 50, random.Random(0), swarm=key)
            remote = {p.key for p in handed if p.labels == zone_b}
            if me.key in doors_a:
                self.assertTrue(remote)
                self.assertLessEqual(remote, doors_b | {done_b.key, seeder.key})
            else:
                self.assertEqual(remote, set())

    def test_no_labels_no_gateways(self):
        """Hosts without zone labels may all meet each other."""
        swarm = [peer(i) for i in range(1, 8)]
        handed = order_peers(peer(0), swarm, 50, random.Random(0), swarm=b"x")
        self.assertEqual(len(handed), 7)

    def test_random_within_class(self):
        """Equal peers come in varying order, so load spreads."""
        me = peer(0, HERE)
        swarm = [peer(i, HERE, complete=True) for i in range(1, 9)]
        firsts = {
            order_peers(me, swarm, 1, random.Random(seed))[0].port for seed in range(50)
        }
        self.assertGreater(len(firsts), 3)

    @given(
        st.lists(
            st.tuples(
                st.sampled_from(["eu", "us", None]),
                st.sampled_from(["eu-1", "z2", None]),
                st.sampled_from(["r1", "r2", None]),
                st.booleans(),
                st.booleans(),
            ),
            max_size=30,
        ),
        st.integers(0, 40),
        st.randoms(),
    )
    def test_property(self, specs, numwant, rng):
        """Never the requester, at most numwant, no seeder once two hosts have the
        blob, and never a peer of a farther or worse class while a nearer or better
        one is left out."""
        me = peer(0, HERE)
        swarm = [me]
        for port, (region, zone, rack, complete, seeder) in enumerate(specs, 1):
            labels = {
                k: v
                for k, v in [("region", region), ("zone", zone), ("rack", rack)]
                if v is not None
            }
            swarm.append(peer(port, labels, complete, seeder))
        chosen = order_peers(me, swarm, numwant, rng)
        others = [
            p
            for p in reachable(me, [p for p in swarm if p.key != me.key], b"")
            if not p.seeder or me.key in feeders(p, swarm, b"")
        ]
        if sum(p.complete and not p.seeder for p in others) >= 2:
            others = [p for p in others if not p.seeder]
        self.assertNotIn(me.key, [p.key for p in chosen])
        self.assertEqual(len(chosen), min(numwant, len(others)))
        self.assertEqual(len({p.key for p in chosen}), len(chosen))
        ranks = [rank_of(me, p) for p in chosen]
        self.assertEqual(ranks, sorted(ranks))
        left_out = [p for p in others if p not in chosen]
        if chosen and left_out:
            self.assertLessEqual(max(ranks), min(rank_of(me, p) for p in left_out))


class MemoryPeerStoreTests(SynchronousTestCase):
    infohash = b"\x01" * 20

    def setUp(self):
        self.clock = Clock()
        self.store = MemoryPeerStore(self.clock)

    def peers(self, infohash=infohash):
        return self.successResultOf(_deferred(self.store.peers(infohash)))

    def announce(self, p, ttl=30, infohash=infohash):
        self.successResultOf(_deferred(self.store.announce(infohash, p, ttl)))

    def test_interface(self):
        """The memory store provides the peer store interface."""
        self.assertTrue(verifyObject(IPeerStore, self.store))

    def test_announce(self):
        """Announced peers are listed; a re-announce replaces the old entry."""
        self.announce(peer(1))
        self.announce(peer(2))
        self.announce(peer(1, complete=True))
        listed = {p.port: p.complete for p in self.peers()}
        self.assertEqual(listed, {1: True, 2: False})
        self.assertEqual(self.peers(b"\x02" * 20), [])

    def test_expiry(self):
        """A peer is gone once its time to live has passed, unless it announced."""
        self.announce(peer(1), ttl=30)
        self.announce(peer(2), ttl=30)
        self.clock.advance(20)
        self.announce(peer(2), ttl=30)
        self.clock.advance(10)
        self.assertEqual([p.port for p in self.peers()], [2])
        self.clock.advance(30)
        self.assertEqual(self.peers(), [])
        self.assertEqual(self.store.swarm_count(), 0)

    def test_leave(self):
        """A peer that leaves is dropped, and the swarm with its last peer."""
        self.announce(peer(1))
        self.announce(peer(2))
        self.successResultOf(_deferred(self.store.leave(self.infohash, peer(1))))
        self.assertEqual([p.port for p in self.peers()], [2])
        self.successResultOf(_deferred(self.store.leave(self.infohash, peer(2))))
        self.assertEqual(self.store.swarm_count(), 0)
        self.successResultOf(_deferred(self.store.leave(b"\x09" * 20, peer(3))))
        self.assertEqual(self.store.swarm_count(), 0)

    def test_reading_keeps_no_empty_swarm(self):
        """Asking about a swarm nobody joined does not create it."""
        self.assertEqual(self.peers(b"\x07" * 20), [])
        self.assertEqual(self.store.swarm_count(), 0)

    def test_purge(self):
        """Purge drops expired peers and empty swarms nobody asks about."""
        self.announce(peer(1), ttl=10, infohash=b"a" * 20)
        self.announce(peer(2), ttl=100, infohash=b"b" * 20)
        self.assertEqual(self.store.swarm_count(), 2)
        self.clock.advance(50)
        self.store.purge()
        self.assertEqual(self.store.swarm_count(), 1)
        self.assertEqual([p.port for p in self.peers(b"b" * 20)], [2])


def _deferred(coroutine) -> Deferred:
    return Deferred.fromCoroutine(coroutine)


def announce_args(**overrides) -> dict:
    args = {
        b"info_hash": [b"\xaa" * 20],
        b"peer_id": [b"-EA0100-" + b"0" * 12],
        b"port": [b"6881"],
        b"left": [b"100"],
    }
    for name, value in overrides.items():
        if value is None:
            args.pop(name.encode(), None)
        else:
            args[name.encode()] = [value]
    return args


class ParseAnnounceTests(SynchronousTestCase):
    def test_valid(self):
        """A full announce gives the swarm, the peer with its labels and numwant."""
        infohash, p, event, numwant = parse_announce(
            announce_args(
                event=b"started",
                numwant=b"7",
                region=b"eu",
                zone=b"eu-1",
                rack=b"r1",
                role=b"seeder",
                left=b"0",
            ),
            "10.1.2.3",
        )
        self.assertEqual(infohash, b"\xaa" * 20)
        self.assertEqual(
            (p.ip, p.port, p.complete, p.seeder), ("10.1.2.3", 6881, True, True)
        )
        self.assertEqual(p.labels, HERE)
        self.assertEqual((event, numwant), ("started", 7))

    def test_defaults(self):
        """Without left, event, numwant and labels: partial, no event, 50 peers."""
        _, p, event, numwant = parse_announce(announce_args(left=None), "10.0.0.1")
        self.assertEqual((p.complete, p.seeder, p.labels), (False, False, {}))
        self.assertEqual((event, numwant), ("", 50))

    def test_numwant_capped(self):
        """A client cannot ask for more than the tracker's maximum."""
        _, _, _, numwant = parse_announce(announce_args(numwant=b"100000"), "::1")
        self.assertEqual(numwant, MAX_NUMWANT)

    def test_bad(self):
        """Bad lengths, ports, missing fields and non-numbers are AnnounceErrors."""
        for overrides in [
            {"info_hash": b"\xaa" * 19},
            {"info_hash": b"\xaa" * 21},
            {"info_hash": b""},
            {"info_hash": None},
            {"peer_id": b"short"},
            {"peer_id": None},
            {"port": None},
            {"port": b"0"},
            {"port": b"65536"},
            {"port": b"-1"},
            {"port": b"http"},
            {"port": b"1" * 30},
            {"port": b"\xd9\xa1"},  # an Arabic-Indic digit
            {"left": b"lots"},
            {"left": b"-5"},
            {"numwant": b"1e3"},
            {"numwant": b" 5"},
            {"zone": b"z" * 65},
        ]:
            self.assertRaises(
                AnnounceError, parse_announce, announce_args(**overrides), "10.0.0.1"
            )

    @given(
        st.dictionaries(
            st.sampled_from(
                [b"info_hash", b"peer_id", b"port", b"left", b"numwant", b"event"]
                + [b"region", b"zone", b"rack", b"role"]
            ),
            st.lists(st.binary(max_size=30), max_size=2),
        )
    )
    def test_any_query(self, args):
        """Any query parses or raises AnnounceError, nothing else."""
        try:
            infohash, p, _, numwant = parse_announce(args, "10.0.0.1")
        except AnnounceError:
            return
        self.assertEqual((len(infohash), len(p.peer_id)), (20, 20))
        self.assertTrue(0 < p.port < 65536)
        self.assertTrue(0 <= numwant <= MAX_NUMWANT)


class CompactTests(SynchronousTestCase):
    def test_compact(self):
        """IPv4 peers pack to 6 bytes each, IPv6 peers to 18, in separate lists."""
        v4, v6 = compact([peer(80, ip="127.0.0.1"), peer(443, ip="::1")])
        self.assertEqual(v4, bytes([127, 0, 0, 1]) + struct.pack("!H", 80))
        self.assertEqual(v6, b"\0" * 15 + b"\1" + struct.pack("!H", 443))


class TrackerAppTests(SynchronousTestCase):
    """The klein app, driven in memory; every request comes from 127.0.0.1."""

    infohash = b"\xbb" * 20

    def setUp(self):
        self.clock = Clock()
        self.store = MemoryPeerStore(self.clock)
        self.tracker = Tracker(self.store, interval=15, rng=random.Random(0))
        self.http = StubTreq(self.tracker.app.resource())

    def get(self, path: str, args: dict | list) -> tuple[int, bytes]:
        url = f"http://tracker.test{path}?{urlencode(args, doseq=True)}"
        response = self.successResultOf(self.http.get(url))
        body = self.successResultOf(treq.content(response))
        return response.code, body

    def announce(self, port: int, **extra) -> dict:
        args = {
            "info_hash": self.infohash,
            "peer_id": b"-EA0100-" + b"%012d" % port,
            "port": port,
            "left": 1000,
            **extra,
        }
        code, body = self.get("/announce", args)
        self.assertEqual(code, 200)
        return lt.bdecode(body)

    def ports(self, compact_peers: bytes) -> list[int]:
        return [
            struct.unpack("!H", compact_peers[i + 4 : i + 6])[0]
            for i in range(0, len(compact_peers), 6)
        ]

    def test_announce_token(self):
        """With a token configured, announces without it get a failure reason."""
        self.tracker.announce_token = "sesame"
        self.assertIn(b"failure reason", self.announce(1))
        self.assertEqual(
            self.successResultOf(_deferred(self.store.peers(self.infohash))), []
        )
        self.assertIn(b"interval", self.announce(1, token="sesame"))

    def test_store_unavailable(self):
        """A peer store that cannot be reached gives 503, not a 500 or a hang."""

        class Down(MemoryPeerStore):
            async def announce(self, *args):
                raise StoreUnavailable("redis is down")

        self.tracker.store = Down(self.clock)
        args = {
            "info_hash": self.infohash,
            "peer_id": b"-EA0100-" + b"%012d" % 1,
            "port": 1,
        }
        code, body = self.get("/announce", args)
        self.assertEqual(code, 503)
        self.assertIn(b"failure reason", lt.bdecode(body))

    def test_announce(self):
        """An announce gets the interval and the other peers as compact bytes."""
        first = self.announce(1001)
        self.assertEqual(first[b"interval"], 15)
        self.assertEqual(first[b"peers"], b"")
        self.announce(1002, left=0)
        reply = self.announce(1003)
        self.assertEqual(sorted(self.ports(reply[b"peers"])), [1001, 1002])
        self.assertEqual(reply[b"peers"][:4], bytes([127, 0, 0, 1]))
        self.assertEqual((reply[b"complete"], reply[b"incomplete"]), (1, 2))
        self.assertEqual(reply[b"peers6"], b"")
        self.assertEqual(self.tracker.announces, 3)

    def test_announce_orders_by_labels(self):
        """Peers in the requester's rack come first, seeders last."""
        self.announce(2001, role="seeder", left=0, **HERE)
        self.announce(2002, region="us")
        self.announce(2003, **HERE)
        self.announce(2004, region="eu", zone="eu-2")
        reply = self.announce(2005, numwant=10, **HERE)
        self.assertEqual(self.ports(reply[b"peers"]), [2003, 2004, 2002, 2001])
        reply = self.announce(2005, numwant=2, **HERE)
        self.assertEqual(self.ports(reply[b"peers"]), [2003, 2004])

    def test_stopped(self):
        """A stopped event takes the peer out of the swarm."""
        self.announce(3001)
        self.announce(3002, event="stopped")
        self.announce(3001, event="stopped")
        self.assertEqual(self.store.swarm_count(), 0)

    def test_expired_peers_not_handed_out(self):
        """A peer that stopped announcing is not handed out after its TTL."""
        self.announce(4001)
        self.clock.advance(self.tracker.peer_ttl)
        self.assertEqual(self.announce(4002)[b"peers"], b"")

    def test_bad_announce(self):
        """Bad input gets a bencoded failure reason with status 200, not a 500."""
        cases = [
            {"info_hash": b"short", "peer_id": b"x" * 20, "port": 1},
            {"info_hash": b"x" * 20, "peer_id": b"x" * 20, "port": 0},
            {"info_hash": b"x" * 20, "peer_id": b"x" * 20},
            {"info_hash": b"x" * 20, "peer_id": b"x" * 20, "port": "abc"},
            {"info_hash": b"x" * 20, "peer_id": b"x" * 20, "port": 1, "left": "?"},
            {
                "info_hash": b"x" * 20,
                "peer_id": b"\xff" * 20,
                "port": 1,
                "zone": "z" * 99,
            },
            {},
        ]
        for args in cases:
            code, body = self.get("/announce", args)
            self.assertEqual(code, 200, args)
            reply = lt.bdecode(body)
            self.assertIn(b"failure reason", reply, args)
        self.assertEqual(self.store.swarm_count(), 0)
        self.assertEqual(self.tracker.announces, 0)

    def test_scrape(self):
        """Scrape counts complete and incomplete peers per swarm asked about."""
        self.announce(5001, left=0)
        self.announce(5002)
        other = b"\xcc" * 20
        code, body = self.get(
            "/scrape", [("info_hash", self.infohash), ("info_hash", other)]
        )
        self.assertEqual(code, 200)
        files = lt.bdecode(body)[b"files"]
        self.assertEqual(
            files[self.infohash],
            {b"complete": 1, b"incomplete": 1, b"downloaded": 1},
        )
        self.assertEqual(files[other][b"incomplete"], 0)

    def test_bad_scrape(self):
        """A scrape with a malformed info_hash gets a failure reason, status 200."""
        code, body = self.get("/scrape", {"info_hash": b"bad"})
        self.assertEqual(code, 200)
        self.assertIn(b"failure reason", lt.bdecode(body))
