"""Peers that cannot serve what they announced (registry case P1): a peer that
sends corrupt blocks, one that stalls, and an address where nobody listens, each
announced to the real tracker as having the whole blob. Real processes on
loopback: docker-registry, tracker, seeder, an agent, and the bad peer."""

from __future__ import annotations

import hashlib
import os
import re
import time
from urllib.parse import urlencode

import libtorrent as lt
from twisted.trial.unittest import SynchronousTestCase

from eagle.blobs import BAN_GRACE
from eagle.lab.badpeer import BadPeer, bitfield, corrupt_piece, handshake
from eagle.lab.cluster import Cluster
from eagle.lab.registry import Registry
from tests.test_lab import LabTestCase
from tests.test_seeder import get

NAME = "eagle/badpeer"
SIZE = 24 << 20
# Long enough that a swarm which recovers from a bad peer is seen to do so
# without the HTTP fallback.
SLOW_TIMEOUT = 20
FAST_TIMEOUT = 3


class WireTests(SynchronousTestCase):
    """The bad peer's few messages, byte by byte."""

    def test_handshake(self):
        """68 bytes: protocol, the v2 reserved bit, info-hash and peer id."""
        message = handshake(b"i" * 20, b"p" * 20)
        self.assertEqual(len(message), 68)
        self.assertEqual(message[:20], b"\x13BitTorrent protocol")
        self.assertEqual(message[27], 0x10)  # BEP 52: speaks v2
        self.assertEqual(message[28:], b"i" * 20 + b"p" * 20)

    def test_bitfield_clears_spare_bits(self):
        """Every piece set, and no bit past the last piece."""
        self.assertEqual(bitfield(8), b"\xff")
        self.assertEqual(bitfield(10), b"\xff\xc0")
        self.assertEqual(bitfield(1), b"\x80")

    def test_corrupt_piece_has_the_requested_length(self):
        """The answer names the requested piece and offset, with as many bytes."""
        answer = corrupt_piece(bytes.fromhex("00000003 00004000 00004000"))
        self.assertEqual(int.from_bytes(answer[:4], "big"), 9 + 16384)
        self.assertEqual(answer[4:13], bytes.fromhex("07 00000003 00004000"))


class MisbehavingPeerTests(LabTestCase):
    """An agent pulls a blob while a bad peer is in its swarm."""

    def setUp(self):
        self.need("docker-registry")
        self.tmp = self.tmpdir()
        self.registry = self.start(Registry(self.tmp / "registry"))
        self.data = os.urandom(SIZE)
        self.digest = self.registry.push_blob(NAME, self.data)

    def cluster(self, swarm_timeout: float, seeder_in_swarm: bool = True):
        """One seeder and one agent; a seeder out of the swarm still answers
        HTTP (torrents, blobs) but announces to no tracker."""
        cluster = self.start(
            Cluster(
                self.tmp / "cluster",
                self.registry.url,
                agents=1,
                agent_config={"swarm_timeout": swarm_timeout},
                seeder_config={} if seeder_in_swarm else {"trackers": []},
            )
        )
        self.agent = cluster.agents[0]
        return cluster

    def bad_peer(self, cluster, mode: str) -> BadPeer:
        """The bad peer, announced to the cluster's tracker as a complete peer.

        Fetching the torrent from the seeder also has the seeder seed the blob."""
        seeder = cluster.seeders[0]
        url = (
            f"{seeder.url}/torrents/{self.digest}"
            f"?ns={self.registry.host}&repository={NAME}"
        )
        status, _, torrent = get(url)
        self.assertEqual(status, 200, torrent[:300])
        announce = [f"{t.url}/announce" for t in cluster.trackers]
        return self.start(BadPeer(self.tmp / f"bad-{mode}", torrent, announce, mode))

    def pull(self) -> float:
        """GET the blob through the agent, check it; return the seconds it took."""
        started = time.monotonic()
        status, headers, body = get(f"{self.agent.url}/v2/{NAME}/blobs/{self.digest}")
        elapsed = time.monotonic() - started
        self.assertEqual(status, 200, body[:300])
        self.assertEqual(int(headers["Content-Length"]), SIZE)
        self.assertEqual("sha256:" + hashlib.sha256(body).hexdigest(), self.digest)
        cached = self.tmp / "cluster" / self.agent.name / "data" / "blobs"
        self.assertEqual(os.listdir(cached), [self.digest.split(":")[1]])
        return elapsed

    def assertComplete(self, cluster, peer: BadPeer) -> None:
        """The tracker lists the bad peer as one with the whole blob, so it hands
        it to the agent."""
        query = urlencode({"info_hash": peer.infohash})
        status, _, body = get(f"{cluster.tracker.url}/scrape?{query}")
        self.assertEqual(status, 200)
        files = lt.bdecode(body)[b"files"]
        self.assertGreaterEqual(files[peer.infohash][b"complete"], 1)

    def agent_log(self) -> str:
        return self.agent.log_path.read_text(errors="replace")

    def assertBanned(self, peer: BadPeer) -> None:
        log = self.agent_log()
        self.assertIn("piece failed its hash check", log)
        banned = [line for line in log.splitlines() if "banned peer" in line]
        self.assertTrue(
            any(f":{peer.port}" in line for line in banned),
            f"no ban of port {peer.port} in: {banned}",
        )

    def assertThroughSwarm(self) -> None:
        self.assertNotIn("over HTTP", self.agent_log())
        received = self.agent.status()["received"]
        self.assertGreater(received.get("seeder", 0), 0, received)

    def assertFellBack(self, elapsed: float, why: str, after: float) -> None:
        """The swarm gave up (``why``) after ``after`` seconds without progress,
        and the seeder sent the blob over HTTP."""
        found = re.search(
            rf"\({re.escape(why)}\); finishing it over HTTP from byte (\d+)",
            self.agent_log(),
        )
        self.assertIsNotNone(found, f"no fallback ({why}) in the agent's log")
        self.assertGreaterEqual(elapsed, after)
        # Then one HTTP fetch of a few MiB over loopback.
        self.assertLess(elapsed, after + 10)
        # The seeder sent the rest over HTTP, and perhaps pieces before that.
        received = self.agent.status()["received"].get("seeder", 0)
        self.assertGreaterEqual(received, SIZE - int(found[1]))

    # With the seeder in the swarm: the swarm itself gets past the bad peer.

    def test_corrupt_peer_is_banned_and_the_blob_completes(self):
        """Corrupt blocks fail the hash checks, the peer that sent them is banned,
        and the blob completes within seconds: through the swarm, or, when
        libtorrent banned the seeder along with the bad peer (it cannot always
        tell them apart), over HTTP BAN_GRACE seconds after the ban."""
        cluster = self.cluster(SLOW_TIMEOUT)
        peer = self.bad_peer(cluster, "corrupt")
        elapsed = self.pull()
        self.assertGreater(peer.count("sent corrupt block"), 0)
        self.assertBanned(peer)
        if "over HTTP" in self.agent_log():
            why = f"no progress for {BAN_GRACE}s since a peer was banned"
            self.assertFellBack(elapsed, why, BAN_GRACE)
        else:
            self.assertThroughSwarm()
        self.assertLess(elapsed, BAN_GRACE + 10)

    def test_stalling_peer_is_worked_around(self):
        """Requests a peer accepts and never answers go to the seeder instead,
        with no HTTP fallback."""
        cluster = self.cluster(SLOW_TIMEOUT)
        peer = self.bad_peer(cluster, "stall")
        elapsed = self.pull()
        self.assertGreater(peer.count("ignored request"), 0)
        self.assertThroughSwarm()
        self.assertLess(elapsed, SLOW_TIMEOUT)

    def test_gone_peer_is_skipped(self):
        """An announced address where nobody listens costs nothing."""
        cluster = self.cluster(SLOW_TIMEOUT)
        self.assertComplete(cluster, self.bad_peer(cluster, "gone"))
        elapsed = self.pull()
        self.assertThroughSwarm()
        self.assertLess(elapsed, SLOW_TIMEOUT)

    # With only the bad peer in the swarm: the agent falls back to HTTP.

    def test_only_a_corrupt_peer(self):
        """Banned, the corrupt peer leaves an empty swarm: BAN_GRACE seconds
        later, well before swarm_timeout, the agent fetches the blob from the
        seeder over HTTP."""
        cluster = self.cluster(SLOW_TIMEOUT, seeder_in_swarm=False)
        peer = self.bad_peer(cluster, "corrupt")
        elapsed = self.pull()
        self.assertGreater(peer.count("sent corrupt block"), 0)
        self.assertBanned(peer)
        why = f"no progress for {BAN_GRACE}s since a peer was banned"
        self.assertFellBack(elapsed, why, BAN_GRACE)

    def test_only_a_stalling_peer(self):
        """A swarm whose one peer never answers falls back after swarm_timeout."""
        cluster = self.cluster(FAST_TIMEOUT, seeder_in_swarm=False)
        peer = self.bad_peer(cluster, "stall")
        elapsed = self.pull()
        self.assertGreater(peer.count("ignored request"), 0)
        self.assertFellBack(elapsed, f"no progress for {FAST_TIMEOUT}s", FAST_TIMEOUT)

    def test_only_a_gone_peer(self):
        """A swarm whose one peer is gone falls back after swarm_timeout."""
        cluster = self.cluster(FAST_TIMEOUT, seeder_in_swarm=False)
        self.assertComplete(cluster, self.bad_peer(cluster, "gone"))
        elapsed = self.pull()
        self.assertFellBack(elapsed, f"no progress for {FAST_TIMEOUT}s", FAST_TIMEOUT)
