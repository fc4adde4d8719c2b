"""Trackers sharing swarms in real Redis, through a Sentinel failover."""

from __future__ import annotations

import hashlib
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import libtorrent as lt
import txredisapi
from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from eagle.lab.cluster import Cluster
from eagle.lab.redis import RedisSentinel, RedisServer
from eagle.lab.registry import Registry
from eagle.tracker.peers import Peer
from eagle.tracker.redis_store import PREFIX, RedisPeerStore
from tests.test_lab import LabTestCase
from tests.test_seeder import get

_direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
INFOHASH = bytes(range(20))


def announce(tracker_url: str, port: int, **extra) -> tuple[int, dict]:
    """One announce as an agent makes it; (status, decoded reply)."""
    query = urllib.parse.urlencode(
        {
            "info_hash": INFOHASH,
            "peer_id": b"-EA0100-%012d" % port,
            "port": port,
            "left": 0,
            "compact": 1,
            **extra,
        }
    )
    try:
        with _direct.open(f"{tracker_url}/announce?{query}", timeout=5) as response:
            return response.status, lt.bdecode(response.read())
    except urllib.error.HTTPError as e:
        return e.code, lt.bdecode(e.read())
    except OSError:
        return 0, {}


def scrape(tracker_url: str, infohash: bytes) -> int:
    """How many peers with the whole blob a tracker knows of (0 if it fails)."""
    query = urllib.parse.urlencode({"info_hash": infohash})
    try:
        with _direct.open(f"{tracker_url}/scrape?{query}", timeout=5) as response:
            files = lt.bdecode(response.read()).get(b"files", {})
    except OSError:
        return 0
    return files.get(infohash, {}).get(b"complete", 0)


class RedisStoreTests(LabTestCase, TestCase):
    def setUp(self):
        self.need("redis-server")
        self.redis = self.start(RedisServer(self.tmpdir()))
        self.connection = txredisapi.lazyConnection(
            "127.0.0.1", self.redis.port, replyTimeout=3
        )
        self.addCleanup(self.connection.disconnect)
        self.store = RedisPeerStore(self.connection, reactor)

    def peer(self, port: int, complete=False) -> Peer:
        return Peer(b"-EA0100-%012d" % port, "127.0.0.1", port, complete)

    async def test_announce_and_leave(self):
        """Announced peers are listed with their state; a peer that leaves is not."""
        await self.store.announce(INFOHASH, self.peer(1, complete=True), 30)
        await self.store.announce(INFOHASH, self.peer(2), 30)
        peers = sorted(await self.store.peers(INFOHASH), key=lambda p: p.port)
        self.assertEqual([(p.port, p.complete) for p in peers], [(1, True), (2, False)])
        await self.store.leave(INFOHASH, self.peer(1))
        self.assertEqual([p.port for p in await self.store.peers(INFOHASH)], [2])

    async def test_keys_stay_bounded(self):
        """Expired peers are dropped on read, and a swarm's key expires by itself."""
        await self.store.announce(INFOHASH, self.peer(1), 0.01)
        time.sleep(0.05)
        self.assertEqual(await self.store.peers(INFOHASH), [])
        key = PREFIX + INFOHASH.hex()
        self.assertEqual(await self.connection.hlen(key), 0)
        await self.store.announce(INFOHASH, self.peer(2), 1)
        ttl = await self.connection.ttl(key)
        self.assertTrue(0 < ttl <= 2, ttl)


class SentinelFailoverTests(LabTestCase):
    """One master, one replica, three sentinels, two trackers, and agents."""

    def setUp(self):
        self.need("redis-server", "redis-sentinel", "docker-registry")
        tmp = self.tmp = self.tmpdir()
        self.master = self.start(RedisServer(tmp / "master", name="master"))
        self.replica = self.start(
            RedisServer(tmp / "replica", replica_of=self.master.port, name="replica")
        )
        self.sentinels = [
            self.start(RedisSentinel(tmp / f"s{i}", self.master.port, name=f"s{i}"))
            for i in range(3)
        ]
        self.registry = self.start(Registry(tmp / "registry"))
        redis = {"sentinels": [s.address for s in self.sentinels], "master": "eagle"}
        self.cluster = Cluster(
            tmp / "cluster",
            self.registry.url,
            agents=0,
            trackers=2,
            tracker_config={"redis": redis},
        )
        self.start(self.cluster)

    def test_trackers_share_swarms(self):
        """A peer announced to one tracker is handed out by the other."""
        first, second = self.cluster.trackers
        self.assertEqual(announce(first.url, 1001)[0], 200)
        status, reply = announce(second.url, 1002)
        self.assertEqual(status, 200)
        self.assertEqual(len(reply[b"peers"]), 6)  # one compact IPv4 peer

    def test_master_failover(self):
        """Killing the Redis master stops announces only until Sentinel promotes
        the replica; the tracker follows without a restart."""
        tracker = self.cluster.trackers[0]
        self.assertEqual(announce(tracker.url, 1001)[0], 200)
        self.master.stop()
        started, failed_for, deadline = time.monotonic(), 0.0, time.monotonic() + 60
        while time.monotonic() < deadline:
            status, _ = announce(tracker.url, 1002)
            if status == 200:
                break
            failed_for = time.monotonic() - started
            time.sleep(0.2)
        self.assertEqual(status, 200, f"announces still failing after {failed_for}s")
        self.assertEqual(self.replica.role(), "master")
        print(f"\nannounces failed for {failed_for:.1f}s during the failover")


class FailoverDuringDownloadTests(LabTestCase):
    def test_downloads_survive_master_and_tracker_loss(self):
        """Kill the Redis master and one tracker while agents download: every
        download completes, and an agent started afterwards still finds peers."""
        self.need("redis-server", "redis-sentinel", "docker-registry")
        tmp = self.tmpdir()
        master = self.start(RedisServer(tmp / "master", name="master"))
        self.start(RedisServer(tmp / "replica", replica_of=master.port, name="replica"))
        sentinels = [
            self.start(RedisSentinel(tmp / f"s{i}", master.port, name=f"s{i}"))
            for i in range(3)
        ]
        registry = self.start(Registry(tmp / "registry"))
        data = os.urandom(64 << 20)
        digest = registry.push_blob("eagle/ha", data)
        redis = {"sentinels": [s.address for s in sentinels], "master": "eagle"}
        # Slow agents down so that the faults land mid-download.
        limit = {"download_rate_limit": 8 << 20}
        cluster = Cluster(
            tmp / "cluster",
            registry.url,
            agents=4,
            trackers=2,
            tracker_config={"redis": redis, "interval": 2},
            agent_config={"libtorrent": limit, "swarm_timeout": 60},
        )
        self.start(cluster)
        first, rest = cluster.agents[:3], cluster.agents[3]

        def pull(agent):
            status, _, body = get(f"{agent.url}/v2/eagle/ha/blobs/{digest}")
            return status, hashlib.sha256(body).hexdigest()

        with ThreadPoolExecutor(3) as pool:
            pulls = [pool.submit(pull, agent) for agent in first]
            time.sleep(2)
            master.stop()
            cluster.trackers[0].stop()
            results = [p.result(timeout=120) for p in pulls]
        self.assertEqual(results, [(200, digest[7:])] * 3)
        for agent in first:
            self.assertNotIn("over HTTP", agent.log_path.read_text())
        # The finished agents re-announce to the surviving tracker and land in
        # the new master; once they are there, a new agent gets them as peers.
        torrent = get(
            f"{cluster.seeders[0].url}/torrents/{digest}?repository=eagle/ha"
        )[2]
        infohash = lt.torrent_info(lt.bdecode(torrent)).info_hashes().v2.to_bytes()
        survivor = cluster.trackers[1]
        deadline = time.monotonic() + 30
        while scrape(survivor.url, infohash[:20]) < 3:
            self.assertLess(time.monotonic(), deadline, "agents never re-announced")
            time.sleep(0.5)
        self.assertEqual(pull(rest), (200, digest[7:]))
        received = rest.status()["received"]
        self.assertGreater(received.get("peer", 0), 0, (received, rest.log_tail()))
