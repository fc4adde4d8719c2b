"""Case C1 of ../shared/cases/registry-cases.md: eviction while blobs are in use,
and blobs shared between repositories, against the real registry and real daemons.

An agent with a cache of a few MiB pulls repository A, then repository B, which
shares a layer with A, while two of B's big blobs are read by clients so slow that
the cache has to go over its limit to keep serving them.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import socket
import threading
import time
from pathlib import Path

from eagle.cache import BlobCache
from eagle.lab.cluster import Cluster, get_json
from eagle.lab.registry import Registry
from tests.test_lab import LabTestCase
from tests.test_mirror import TIMEOUT

MiB = 1 << 20
CACHE_SIZE = 12 * MiB
REPO_A = "eagle/evict-a"
REPO_B = "eagle/evict-b"
# A slow client: a tiny receive buffer, 8 KiB every 25 ms (about 320 KiB/s).
SLOW_CHUNK = 8192
SLOW_PAUSE = 0.025


def send_buffer_max() -> int:
    """How much of a response the kernel may hold for a slow client on loopback:
    the sender's blob is still being read only while more than this is unsent."""
    with open("/proc/sys/net/ipv4/tcp_wmem") as f:
        return int(f.read().split()[2])


def _hex(digest: str) -> str:
    return digest.partition(":")[2]


def fetch(port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    """GET a path; fail if a 200 body is shorter (or longer) than Content-Length."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        headers = {k.lower(): v for k, v in response.getheaders()}
        try:
            body = response.read()
        except http.client.IncompleteRead as e:
            raise AssertionError(
                f"{path}: {response.status} with {len(e.partial)} of "
                f"{headers.get('content-length')} bytes"
            ) from None
        return response.status, headers, body
    finally:
        conn.close()


class SlowReader(threading.Thread):
    """Reads one blob through a raw socket with a small buffer, slowly, and keeps
    the status, the Content-Length and every body byte it received."""

    def __init__(self, port: int, path: str, deadline: float = 60):
        super().__init__(daemon=True)
        self.port, self.path, self.deadline = port, path, deadline
        self.headers_in = threading.Event()
        self.hurry = threading.Event()  # read at full speed from now on
        self.status = None
        self.length = None
        self.body = bytearray()
        self.error: BaseException | None = None

    def run(self):
        try:
            self._read()
        except BaseException as e:  # reported by the test
            self.error = e
        finally:
            self.headers_in.set()

    def _read(self):
        end = time.monotonic() + self.deadline
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.settimeout(TIMEOUT)
            sock.connect(("127.0.0.1", self.port))
            sock.sendall(
                f"GET {self.path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                "Connection: close\r\n\r\n".encode()
            )
            received = b""
            while b"\r\n\r\n" not in received:
                data = sock.recv(4096)
                if not data:
                    raise ConnectionError(f"closed before headers: {received!r}")
                received += data
            head, _, rest = received.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            self.status = int(lines[0].split()[1])
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    self.length = int(value.strip())
            self.body += rest
            self.headers_in.set()
            while time.monotonic() < end:
                data = sock.recv(SLOW_CHUNK)
                if not data:
                    return
                self.body += data
                if not self.hurry.is_set():
                    time.sleep(SLOW_PAUSE)
            raise TimeoutError(f"{self.path} not read within {self.deadline}s")


class EvictionTests(LabTestCase):
    """A small agent cache under pressure from two repositories sharing a layer."""

    def setUp(self):
        self.need("docker-registry")
        self.tmp = self.tmpdir()
        self.registry = self.start(Registry(self.tmp / "registry"))
        self.blobs = {
            "shared": os.urandom(1 * MiB),
            "a": os.urandom(1 * MiB),
            # Both bigger than the kernel's socket buffers can hold (see
            # send_buffer_max), so the agent is still reading them from its cache.
            "large": os.urandom(8 * MiB),
            "medium": os.urandom(6 * MiB),
        }
        self.digests = {}
        for key, data in self.blobs.items():
            repos = {"shared": (REPO_A, REPO_B), "a": (REPO_A,)}.get(key, (REPO_B,))
            for repo in repos:
                self.digests[key] = self.registry.push_blob(repo, data)
        self.cluster = self.start(
            Cluster(
                self.tmp / "cluster",
                self.registry.url,
                agents=1,
                agent_config={"cache_size": CACHE_SIZE, "swarm_min_size": 0},
            )
        )
        self.agent = self.cluster.agents[0]
        self.blob_dir = self.cluster.state_dir / "agent0" / "data" / "blobs"

    def path(self, repo: str, key: str) -> str:
        return f"/v2/{repo}/blobs/{self.digests[key]}"

    def get_blob(self, repo: str, key: str) -> None:
        """GET one blob through the agent: 200, every byte, the right digest."""
        status, headers, body = fetch(self.agent.port, self.path(repo, key))
        self.assertEqual(status, 200, body[:300])
        self.assertEqual(int(headers["content-length"]), len(body))
        self.assertEqual(body, self.blobs[key], key)

    def stored(self) -> dict[str, int]:
        """The agent's blob files and their sizes."""
        return {e.name: e.stat().st_size for e in os.scandir(self.blob_dir)}

    def wait_stored(self, key: str, timeout: float = TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while _hex(self.digests[key]) not in self.stored():
            if time.monotonic() > deadline:
                self.fail(f"{key} not in the agent's cache after {timeout}s")
            time.sleep(0.05)

    def log(self) -> str:
        return Path(self.agent.state_dir / "agent0.log").read_text(errors="replace")

    def evicted(self, key: str) -> bool:
        """Whether the agent logged evicting this blob."""
        return f"evicted blob {self.digests[key]}" in self.log()

    def test_in_use_blobs_survive_pressure(self):
        """Blobs being read slowly are neither evicted nor cut short while the cache
        must go over its limit; a shared layer is stored once; once nothing is in
        use the cache is back within its size."""
        self.get_blob(REPO_A, "shared")
        self.get_blob(REPO_A, "a")
        readers = {
            key: SlowReader(self.agent.port, self.path(REPO_B, key))
            for key in ("large", "medium")
        }
        for reader in readers.values():
            reader.start()
            self.addCleanup(reader.join, 5)
        for key, reader in readers.items():
            self.assertTrue(reader.headers_in.wait(TIMEOUT), key)
            self.assertIsNone(reader.error, key)
            self.assertEqual(reader.status, 200, key)
            self.assertEqual(reader.length, len(self.blobs[key]), key)
            self.wait_stored(key)
        # The cache is at its limit with both slow blobs in it: pulling B's shared
        # layer and A's own one again needs room that only the slow ones could give.
        self.get_blob(REPO_B, "shared")
        self.get_blob(REPO_A, "a")
        self.get_blob(REPO_B, "shared")
        for key, reader in readers.items():
            unsent = len(self.blobs[key]) - len(reader.body)
            self.assertGreater(
                unsent,
                send_buffer_max() + 256 * 1024,
                f"{key}: too little left unread for the agent to be still sending",
            )
            self.assertFalse(
                self.evicted(key), f"{key} evicted while being read:\n{self.log()}"
            )
            self.assertIn(_hex(self.digests[key]), self.stored(), key)
        for key, reader in readers.items():
            reader.hurry.set()
            reader.join(60)
            self.assertFalse(reader.is_alive(), f"{key} still reading after 60s")
            self.assertIsNone(reader.error, key)
            self.assertEqual(len(reader.body), reader.length, key)
            self.assertEqual(
                hashlib.sha256(reader.body).hexdigest(), _hex(self.digests[key]), key
            )
        # Stored once, whichever repository asked; accounting matches the disk.
        stored = self.stored()
        self.assertLessEqual(set(stored), {_hex(d) for d in self.digests.values()})
        stats = self.settled_stats()
        self.assertEqual(stats["cache"]["blobs"], len(stored))
        self.assertEqual(stats["cache"]["bytes"], sum(stored.values()))
        self.assertLessEqual(
            stats["cache"]["bytes"],
            CACHE_SIZE,
            f"nothing is in use, yet the cache holds {sorted(stored.values())}",
        )
        incoming = self.cluster.state_dir / "agent0" / "data" / "incoming"
        self.assertEqual(os.listdir(incoming), [])

    def test_shared_layer_stored_once(self):
        """A layer pulled through two repositories is fetched from the origin once
        and is one file in the agent's cache."""
        for repo in (REPO_A, REPO_B, REPO_A, REPO_B):
            self.get_blob(repo, "shared")
        shared = _hex(self.digests["shared"])
        self.assertEqual(list(self.stored()), [shared])
        self.assertEqual(self.registry.blob_gets(self.digests["shared"]), 1)
        seeder_blobs = self.cluster.state_dir / "seeder0" / "data" / "blobs"
        self.assertEqual(os.listdir(seeder_blobs), [shared])

    def settled_stats(self, timeout: float = 10) -> dict:
        """The agent's stats once its cache stopped changing (or after timeout)."""
        deadline = time.monotonic() + timeout
        last = None
        while True:
            stats = get_json(self.agent.url + "/eagle/stats")
            if stats["cache"] == (last or {}).get("cache") or (
                time.monotonic() > deadline
            ):
                return stats
            last = stats
            time.sleep(0.3)


class UnpinTests(LabTestCase):
    """The cache's own accounting, without daemons."""

    def test_unpin_evicts_what_the_pin_held_over_budget(self):
        """A blob committed over budget while pinned goes once it is unpinned."""
        cache = BlobCache(str(self.tmpdir()), 10)
        for hex_, size in [("a" * 64, 6), ("b" * 64, 6)]:
            path = cache.incoming_path(hex_, "test")
            Path(path).write_bytes(b"x" * size)
            cache.pin(hex_)
            cache.commit(hex_, path)
        self.assertEqual(cache.lru.total, 12)
        cache.unpin("a" * 64)
        self.assertEqual((cache.list(), cache.lru.total), (["b" * 64], 6))
        self.assertFalse(os.path.exists(cache.blob_path("a" * 64)))
