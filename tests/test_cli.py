"""The eagle command and the admin API behind ``eagle cache``: status of a
component, cache listing and eviction, loopback or token only."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import treq
from treq.testing import StubTreq
from twisted.trial.unittest import SynchronousTestCase

from eagle.admin import AdminAPI, allowed
from eagle.cache import BlobCache
from eagle.lab.cluster import Cluster
from eagle.lab.registry import Registry
from tests.test_lab import LabTestCase
from tests.test_seeder import get

EAGLE = Path(sys.executable).with_name("eagle")


class AllowedTests(SynchronousTestCase):
    def test_loopback_without_token(self):
        """Without a token only loopback clients get in."""
        self.assertTrue(allowed("127.0.0.1", None, None))
        self.assertTrue(allowed("::1", None, None))
        self.assertFalse(allowed("10.0.0.7", None, None))
        self.assertFalse(allowed("", None, None))

    def test_token(self):
        """With a token, exactly that Bearer token, from anywhere."""
        self.assertTrue(allowed("10.0.0.7", b"Bearer s3cret", "s3cret"))
        self.assertFalse(allowed("127.0.0.1", None, "s3cret"))
        self.assertFalse(allowed("127.0.0.1", b"Bearer wrong", "s3cret"))
        self.assertFalse(allowed("127.0.0.1", b"s3cret", "s3cret"))


class AdminAPITests(SynchronousTestCase):
    def setUp(self):
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory, True)
        self.cache = BlobCache(directory, 1 << 20)
        self.hexes = []
        for data in (b"first blob", b"second blob"):
            hex_ = hashlib.sha256(data).hexdigest()
            path = self.cache.incoming_path(hex_, "t")
            Path(path).write_bytes(data)
            self.cache.commit(hex_, path)
            self.hexes.append(hex_)
        self.http = StubTreq(AdminAPI(self.cache, "s3cret").resource())

    def call(self, method, path, token="s3cret"):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        response = self.successResultOf(
            self.http.request(method, "http://agent.test" + path, headers=headers)
        )
        return response.code, json.loads(self.successResultOf(treq.content(response)))

    def test_list(self):
        """Blobs come least recently used first, with size, use and torrent."""
        self.cache.pin(self.hexes[1])
        code, listing = self.call("GET", "/cache")
        self.assertEqual(code, 200)
        self.assertEqual(
            listing["blobs"],
            [
                {"digest": "sha256:" + self.hexes[0], "size": 10, "in_use": False,
                 "torrent": False},
                {"digest": "sha256:" + self.hexes[1], "size": 11, "in_use": True,
                 "torrent": False},
            ],
        )  # fmt: skip
        self.assertEqual((listing["bytes"], listing["limit"]), (21, 1 << 20))

    def test_evict(self):
        """A blob is evicted; one in use is not (409); unknown 404, bad 400."""
        self.cache.pin(self.hexes[1])
        code, _ = self.call("DELETE", f"/cache/sha256:{self.hexes[0]}")
        self.assertEqual(code, 200)
        self.assertFalse(self.cache.has(self.hexes[0]))
        self.assertFalse(Path(self.cache.blob_path(self.hexes[0])).exists())
        code, body = self.call("DELETE", f"/cache/sha256:{self.hexes[1]}")
        self.assertEqual((code, body["errors"][0]["code"]), (409, "DENIED"))
        self.assertTrue(self.cache.has(self.hexes[1]))
        code, body = self.call("DELETE", f"/cache/sha256:{self.hexes[0]}")
        self.assertEqual((code, body["errors"][0]["code"]), (404, "BLOB_UNKNOWN"))
        code, body = self.call("DELETE", "/cache/sha256:..")
        self.assertEqual((code, body["errors"][0]["code"]), (400, "DIGEST_INVALID"))
        code, body = self.call("DELETE", "/cache/..%2f..%2fetc%2fpasswd")
        self.assertEqual((code, body["errors"][0]["code"]), (404, "NOT_FOUND"))
        code, body = self.call("PUT", "/cache")
        self.assertEqual(code, 405)

    def test_denied(self):
        """No token or a wrong one: 403, and nothing changes."""
        for token in (None, "wrong"):
            code, body = self.call("DELETE", f"/cache/sha256:{self.hexes[0]}", token)
            self.assertEqual((code, body["errors"][0]["code"]), (403, "DENIED"))
            code, _ = self.call("GET", "/cache", token)
            self.assertEqual(code, 403)
        self.assertTrue(self.cache.has(self.hexes[0]))


def eagle(*args: str, env=None) -> tuple[int, str]:
    done = subprocess.run(
        [str(EAGLE), *args], capture_output=True, text=True, timeout=60, env=env
    )
    return done.returncode, done.stdout + done.stderr


class CommandTests(LabTestCase):
    def test_status_and_cache(self):
        """eagle status summarises an agent and the tracker; eagle cache lists
        and evicts the agent's blobs with its admin token, and refuses without."""
        self.need("docker-registry")
        tmp = self.tmpdir()
        registry = self.start(Registry(tmp / "registry"))
        digests = [
            registry.push_blob("eagle/cli", f"blob {i}".encode() * 100_000)
            for i in range(3)
        ]
        cluster = self.start(
            Cluster(
                tmp / "cluster",
                registry.url,
                agents=1,
                agent_config={"admin_token": "s3cret"},
            )
        )
        agent = cluster.agents[0]
        for digest in digests:
            self.assertEqual(get(f"{agent.url}/v2/eagle/cli/blobs/{digest}")[0], 200)

        code, out = eagle("status", agent.url)
        self.assertEqual(code, 0, out)
        self.assertIn("cache: 3 blobs", out)
        code, out = eagle("status", "--json", agent.url)
        self.assertEqual(json.loads(out)["served"]["blobs"], 3)
        code, out = eagle("status", cluster.tracker.url)
        self.assertEqual(code, 0, out)
        self.assertIn("announces", out)

        code, out = eagle("cache", "list", agent.url)
        self.assertEqual(code, 1)
        self.assertIn("403 admin access denied", out)
        code, out = eagle("cache", "list", "--json", "--token", "s3cret", agent.url)
        self.assertEqual(code, 0, out)
        listed = [b["digest"] for b in json.loads(out)["blobs"]]
        self.assertEqual(sorted(listed), sorted(digests))

        code, out = eagle("cache", "evict", "--token", "s3cret", agent.url, digests[0])
        self.assertEqual(code, 0, out)
        self.assertIn("evicted 1 of 1 blobs", out)
        code, out = eagle("cache", "evict", "--token", "s3cret", agent.url, digests[0])
        self.assertEqual(code, 1)
        self.assertIn("404 blob unknown", out)
        env = {"EAGLE_ADMIN_TOKEN": "s3cret", "PATH": "/usr/bin:/bin"}
        code, out = eagle("cache", "evict", "--all", agent.url, env=env)
        self.assertEqual(code, 0, out)
        self.assertIn("evicted 2 of 2 blobs", out)
        self.assertEqual(agent.status()["cache"]["blobs"], 0)
        code, out = eagle("status", "http://127.0.0.1:9")
        self.assertEqual(code, 1)
        self.assertIn("eagle status:", out)
        self.assertNotIn("Traceback", out)
