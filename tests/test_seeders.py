"""Several seeders: agents pick a blob's seeder by rendezvous hashing and fail
over to the next; seeders sharing S3 take a blob from there, not from the origin.
Real registry, moto S3 server and twist processes."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from treq.client import HTTPClient
from twisted.internet.defer import Deferred
from twisted.web.client import Agent, HTTPConnectionPool

from eagle.blobs import HTTPSource, Traffic
from eagle.cache import BlobCache
from eagle.digest import Digest
from eagle.lab.cluster import Cluster
from eagle.lab.registry import Registry
from eagle.lab.s3 import S3Server, moto_server
from eagle.lab.scripted import ScriptedRegistry
from eagle.rendezvous import rank
from eagle.transfer import Transfer
from eagle.upstream import BlobRef, Upstream
from tests.test_eviction import SlowReader
from tests.test_lab import LabTestCase
from tests.test_mirror import TIMEOUT

MiB = 1 << 20
REPO = "eagle/seeders"
BUCKET = "eagle-seeders"


def log_of(daemon) -> str:
    return Path(daemon.state_dir / f"{daemon.name}.log").read_text(errors="replace")


def start_origin_and_s3(case: LabTestCase, repo: str, bucket: str, size: int):
    """A real registry holding one random blob of ``size`` bytes in ``repo``, and
    a moto S3 server with an empty ``bucket``, both on ``case``: sets its
    ``registry``, ``s3``, ``data``, ``digest`` and ``hex``; returns its tmpdir."""
    case.need("docker-registry")
    if moto_server() is None:
        case.need("moto_server")
    tmp = case.tmpdir()
    case.registry = case.start(Registry(tmp / "registry"))
    case.s3 = case.start(S3Server(tmp / "s3"))
    case.s3.create_bucket(bucket)
    case.data = os.urandom(size)
    case.digest = case.registry.push_blob(repo, case.data)
    case.hex = case.digest.partition(":")[2]
    return tmp


class SharedStorageTests(LabTestCase):
    def setUp(self):
        tmp = start_origin_and_s3(self, REPO, BUCKET, 12 * MiB)
        self.cluster = self.start(
            Cluster(
                tmp / "cluster",
                self.registry.url,
                agents=1,
                seeders=2,
                agent_config={"swarm_min_size": 0, "swarm_timeout": 3},
                seeder_config={
                    "storage": self.s3.config(BUCKET, multipart_threshold="5MiB"),
                    # Slow enough that the pull is still going when we strike.
                    "libtorrent": {"upload_rate_limit": MiB},
                },
            )
        )
        self.agent = self.cluster.agents[0]

    def wait_in_s3(self) -> None:
        key = f"blobs/sha256/{self.hex}"
        deadline = time.monotonic() + TIMEOUT
        while key not in self.s3.keys(BUCKET):
            self.assertLess(time.monotonic(), deadline, "blob never reached S3")
            time.sleep(0.1)

    def test_owner_killed_during_pull(self):
        """The owning seeder is killed mid-pull: the agent finishes from the other
        seeder, which takes the blob from S3; the origin sent it once."""
        by_url = {s.url: s for s in self.cluster.seeders}
        owner, other = (by_url[url] for url in rank(self.hex, list(by_url)))
        reader = SlowReader(self.agent.port, f"/v2/{REPO}/blobs/{self.digest}")
        reader.hurry.set()
        reader.start()
        self.addCleanup(reader.join, 5)
        self.assertTrue(reader.headers_in.wait(TIMEOUT))
        self.assertEqual((reader.status, reader.error), (200, None))
        deadline = time.monotonic() + TIMEOUT
        while len(reader.body) < MiB:
            self.assertLess(time.monotonic(), deadline, "no bytes from the swarm")
            self.assertIsNone(reader.error)
            time.sleep(0.05)
        self.wait_in_s3()
        # The agent's own download must still be under way, not just the reader.
        states = [s["state"] for s in self.agent.status()["swarms"]]
        self.assertIn("downloading", states, "pulled before the kill")
        owner.process.kill()
        owner.stop()
        reader.join(TIMEOUT)
        self.assertFalse(reader.is_alive())
        self.assertIsNone(reader.error)
        self.assertEqual(bytes(reader.body), self.data)
        self.assertEqual(self.registry.blob_gets(self.digest), 1)
        self.assertIn(f"fetched {self.digest}", log_of(other))
        self.assertIn("from storage", log_of(other))
        self.assertIn("finishing it over HTTP", log_of(self.agent))
        self.assertEqual(self.s3.pending_uploads(BUCKET), [])


class SilentSeederTests(LabTestCase):
    def test_silent_seeder_skipped(self):
        """A seeder that takes connections but never answers is given up after
        seeder_timeout, and the next seeder serves the blob."""
        self.need("docker-registry")
        tmp = self.tmpdir()
        registry = self.start(Registry(tmp / "registry"))
        data = os.urandom(2 * MiB)
        digest = registry.push_blob(REPO, data)
        cluster = Cluster(
            tmp / "cluster",
            registry.url,
            agents=1,
            agent_config={"swarm_min_size": 0, "seeder_timeout": 2},
        )
        seeder, agent = cluster.seeders[0], cluster.agents[0]
        silent = self.silent_listener(digest.partition(":")[2], seeder.url)
        config = agent.config_path.read_text()
        agent.config_path.write_text(
            config.replace(f"- {seeder.url}", f"- {silent}\n- {seeder.url}")
        )
        self.assertIn(silent, agent.config_path.read_text())
        self.start(cluster)
        started = time.monotonic()
        reader = SlowReader(agent.port, f"/v2/{REPO}/blobs/{digest}")
        reader.hurry.set()
        reader.run()
        self.assertIsNone(reader.error)
        self.assertEqual(bytes(reader.body), data)
        self.assertLess(time.monotonic() - started, 20)
        self.assertIn(silent, log_of(agent))

    def silent_listener(self, hex_: str, other: str) -> str:
        """The URL of a socket that accepts connections and says nothing, chosen
        so that it ranks before ``other`` for this blob."""
        for _ in range(40):
            sock = socket.socket()
            self.addCleanup(sock.close)
            sock.bind(("127.0.0.1", 0))
            sock.listen(16)
            url = f"http://127.0.0.1:{sock.getsockname()[1]}"
            if rank(hex_, [url, other])[0] == url:
                return url
            # Left open till the end, so the next try gets another port.
        self.fail("no port ranked first in 40 tries")


class SeederCutShortTests(LabTestCase):
    """In this process: HTTPSource against scripted seeders and origin, where a
    seeder stops part way through a blob's body."""

    def setUp(self):
        from twisted.internet import reactor

        self.reactor = reactor
        self.data = os.urandom(2 * MiB)
        self.seeders = [self.start(ScriptedRegistry()) for _ in range(2)]
        self.origin = self.start(ScriptedRegistry())
        for registry in (*self.seeders, self.origin):
            self.digest = registry.add_blob(self.data)
        urls = [s.url for s in self.seeders]
        order = rank(self.digest.partition(":")[2], urls)
        self.first, self.second = (self.seeders[urls.index(u)] for u in order)
        pool = HTTPConnectionPool(reactor, persistent=True)
        self.addCleanup(pool.closeCachedConnections)
        self.http = HTTPClient(Agent(reactor, pool=pool))
        self.cache = BlobCache(str(self.tmpdir() / "cache"), 1 << 30)
        self.traffic = Traffic()
        self.source = HTTPSource(self.http, reactor, self.cache, urls, self.traffic)

    async def pull(self) -> Transfer:
        upstream = Upstream(self.origin.host, self.origin.url)
        ref = BlobRef(upstream, REPO, Digest.parse(self.digest))
        transfer = await self.source.start(ref)
        try:
            await transfer.ended_deferred()
        except Exception:
            pass
        return transfer

    def assertPulled(self, transfer: Transfer) -> None:
        self.assertIsNone(transfer.failure)
        with open(transfer.path, "rb") as f:
            self.assertEqual(f.read(), self.data)
        self.assertEqual(os.listdir(self.cache.incoming), [])

    async def _next_seeder_finishes(self):
        self.first.reset_after = 900_000
        transfer = await self.pull()
        self.assertPulled(transfer)
        self.assertEqual(len(self.second.seen("GET")), 1)
        self.assertEqual(self.origin.seen("GET"), [])
        self.assertEqual(self.traffic.received["seeder"], len(self.data))

    def test_next_seeder_finishes(self):
        """The owner cut short: the next seeder sends the rest, the origin
        nothing."""
        return Deferred.fromCoroutine(self._next_seeder_finishes())

    async def _origin_finishes(self):
        self.first.reset_after = self.second.reset_after = 600_000
        transfer = await self.pull()
        self.assertPulled(transfer)
        self.assertEqual(len(self.origin.seen("GET")), 1)

    def test_origin_finishes(self):
        """Every seeder cut short: the origin sends the rest."""
        return Deferred.fromCoroutine(self._origin_finishes())

    async def _all_cut(self):
        for registry in (*self.seeders, self.origin):
            registry.reset_after = 500_000
        transfer = await self.pull()
        self.assertIsNotNone(transfer.failure)
        self.assertFalse(self.cache.has(self.digest.partition(":")[2]))
        self.assertEqual(os.listdir(self.cache.incoming), [])
        self.assertEqual(len(self.origin.seen("GET")), 1)

    def test_all_cut(self):
        """Seeders and origin all cut short: the fetch fails after one try at
        each, and nothing is kept."""
        return Deferred.fromCoroutine(self._all_cut())
