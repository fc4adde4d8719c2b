"""Private images: the real docker-registry with htpasswd auth, and with token
auth from the lab's token server; real tracker, seeder and two agents. A client
without credentials gets the origin's 401 through an agent, one with them gets
the blob through the swarm, and an agent that has the blob cached still refuses
a client without credentials (or with another user's)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import urllib.parse

from eagle.lab.cluster import Cluster
from eagle.lab.registry import Registry
from eagle.lab.tokens import TokenServer
from tests.test_lab import LabTestCase
from tests.test_seeder import get

MiB = 1 << 20
REPO = "eagle/private"
OTHER = "eagle/other"  # a repository the token user may not pull
USER, PASSWORD = "puller", "s3cret-pw"
# The seeder uploads slowly, so the second agent takes most bytes from the first.
SEEDER_UPLOAD = 1 * MiB


def basic(user: str, password: str) -> dict:
    pair = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {pair}"}


def header(headers: dict, name: str) -> str | None:
    lowered = {k.lower(): v for k, v in headers.items()}
    return lowered.get(name.lower())


class PrivateCases:
    """A blob in a registry that asks for credentials, behind two agents."""

    def registry_auth(self, tmp) -> dict:
        raise NotImplementedError

    def credentials(self, agent_url: str, repository: str) -> dict:
        """The Authorization header a client with the right credentials sends."""
        raise NotImplementedError

    def setUp(self):
        self.need("docker-registry")
        tmp = self.tmpdir()
        storage = tmp / "storage"
        # Push without auth, then serve the same storage with auth on.
        with Registry(tmp / "push", storage_dir=storage) as open_registry:
            self.data = os.urandom(6 * MiB)
            self.digest = open_registry.push_blob(REPO, self.data)
            open_registry.push_blob(OTHER, self.data)
        self.registry = self.start(
            Registry(tmp / "registry", storage_dir=storage, **self.registry_auth(tmp))
        )
        self.cluster = self.start(
            Cluster(
                tmp / "cluster",
                self.registry.url,
                agents=2,
                agent_config={"swarm_timeout": 60},
                seeder_config={"libtorrent": {"upload_rate_limit": SEEDER_UPLOAD}},
            )
        )

    def blob_url(self, agent, repository: str = REPO) -> str:
        return f"{agent.url}/v2/{repository}/blobs/{self.digest}"

    def assertRefused(self, answer) -> None:
        status, headers, body = answer
        self.assertEqual(status, 401, body[:300])
        self.assertIsNotNone(header(headers, "WWW-Authenticate"))
        self.assertNotIn(self.data[:64], body)
        self.assertEqual(json.loads(body)["errors"][0]["code"], "UNAUTHORIZED")

    def test_private_blob_through_the_swarm(self):
        first, second = self.cluster.agents
        self.assertRefused(get(self.blob_url(first)))
        for agent in (first, second):
            status, _, body = get(
                self.blob_url(agent), self.credentials(agent.url, REPO)
            )
            self.assertEqual(status, 200, body[:300])
            self.assertEqual(hashlib.sha256(body).hexdigest(), self.digest[7:])
        received = second.status()["received"]
        self.assertGreater(received.get("peer", 0), 0, received)
        self.assertEqual(set(received) - {"seeder", "peer"}, set(), received)
        self.assertEqual(sum(received.values()), len(self.data))
        # Cached on both agents now, and still refused without credentials.
        for agent in (first, second):
            self.assertEqual(agent.status()["cache"]["blobs"], 1)
            self.assertRefused(get(self.blob_url(agent)))
            self.assertRefused(get(self.blob_url(agent), basic(USER, "wrong-password")))
        self.assertEqual(self.registry.blob_gets(self.digest), 1)


class HtpasswdTests(PrivateCases, LabTestCase):
    def registry_auth(self, tmp) -> dict:
        return {"auth": {"user": USER, "password": PASSWORD}}

    def credentials(self, agent_url, repository) -> dict:
        return basic(USER, PASSWORD)


class TokenTests(PrivateCases, LabTestCase):
    def registry_auth(self, tmp) -> dict:
        self.tokens = TokenServer(
            tmp / "tokens", {USER: (PASSWORD, [REPO]), "other": ("pw", [OTHER])}
        ).start()
        self.addCleanup(self.tokens.stop)
        return {"auth_config": self.tokens.registry_auth("eagle-lab-registry")}

    def credentials(self, agent_url, repository) -> dict:
        return self.bearer(agent_url, repository, USER, PASSWORD)

    def bearer(self, agent_url, repository, user, password) -> dict:
        """Log in as a client does: the challenge from the agent's version
        check, a token from its realm for the repository."""
        status, headers, _ = get(agent_url + "/v2/")
        self.assertEqual(status, 401)
        params = dict(
            re.findall(r'(\w+)="([^"]*)"', header(headers, "WWW-Authenticate"))
        )
        query = urllib.parse.urlencode(
            {"service": params["service"], "scope": f"repository:{repository}:pull"}
        )
        status, _, body = get(f"{params['realm']}?{query}", basic(user, password))
        self.assertEqual(status, 200)
        return {"Authorization": "Bearer " + json.loads(body)["token"]}

    def test_token_for_another_repository_refused(self):
        """A token good for another repository gets no blob of this one, even
        from an agent that has it cached."""
        first, _ = self.cluster.agents
        mine = self.credentials(first.url, REPO)
        status, _, _ = get(self.blob_url(first), mine)
        self.assertEqual(status, 200)
        theirs = self.bearer(first.url, OTHER, "other", "pw")
        # The same blob is theirs to pull in their repository...
        status, _, body = get(self.blob_url(first, OTHER), theirs)
        self.assertEqual((status, len(body)), (200, len(self.data)))
        # ...but not in this one.
        status, _, body = get(self.blob_url(first), theirs)
        self.assertIn(status, (401, 403), body[:300])
        self.assertNotIn(self.data[:64], body)
