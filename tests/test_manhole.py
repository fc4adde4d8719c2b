"""The manhole: a Python shell in a running daemon over SSH, on loopback only,
for the configured keys only."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519
from twisted.conch.ssh import keys
from twisted.trial.unittest import SynchronousTestCase

from eagle import config
from eagle.lab import free_port
from eagle.lab.cluster import Cluster
from eagle.lab.registry import Registry
from eagle.manhole import authorized_keys, host_key
from tests.test_lab import LabTestCase

SSH_TIMEOUT = 30


def make_key(path) -> keys.Key:
    """An Ed25519 key pair: the private key at ``path`` (0600), the public beside."""
    key = keys.Key(ed25519.Ed25519PrivateKey.generate())
    path.write_bytes(key.toString("OPENSSH"))
    path.chmod(0o600)
    path.with_suffix(".pub").write_bytes(key.public().toString("OPENSSH") + b"\n")
    return key


def ssh(port: int, key, commands: str, user: str = "eagle"):
    """Run ``commands`` in the manhole with the ssh client; (exit code, output)."""
    argv = [
        "ssh", "-F", "/dev/null", "-tt", "-p", str(port), "-i", str(key),
        "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
        "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
        "-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR",
        f"{user}@127.0.0.1",
    ]  # fmt: skip
    done = subprocess.run(
        argv,
        input=commands.encode(),  # the end of input ends the session
        capture_output=True,
        timeout=SSH_TIMEOUT,
    )
    return done.returncode, (done.stdout + done.stderr).decode(errors="replace")


class KeyFileTests(SynchronousTestCase):
    def setUp(self):
        self.dir = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, self.dir, True)

    def test_authorized_keys(self):
        """Keys are read, comments and blank lines skipped; junk is an error."""
        key = make_key(self.dir / "id")
        path = self.dir / "authorized_keys"
        path.write_bytes(
            b"# operators\n\n" + key.public().toString("OPENSSH") + b" ops@host\n"
        )
        self.assertEqual(authorized_keys(str(path)), [key.public()])
        path.write_bytes(b"ssh-ed25519 not-base64!\n")
        self.assertRaises(ValueError, authorized_keys, str(path))
        path.write_bytes(b"# nobody\n")
        self.assertRaises(ValueError, authorized_keys, str(path))

    def test_host_key_made_once(self):
        """The host key is made on first use, private to its owner, then kept."""
        path = str(self.dir / "host_key")
        first = host_key(path)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        self.assertEqual(host_key(path), first)

    def test_config(self):
        """The manhole is off by default; a port out of range is refused."""
        self.assertIsNone(config.from_dict({}, config.NodeConfig).manhole)
        self.assertIsNone(config.from_dict({}, config.TrackerConfig).manhole)
        bad = {"manhole": {"port": 0, "authorized_keys": "k", "host_key": "h"}}
        self.assertRaises(config.ConfigError, config.from_dict, bad, config.NodeConfig)


class ManholeTests(LabTestCase):
    def test_ssh_into_agent_and_tracker(self):
        """The configured key opens a Python shell in the running agent and
        tracker, which listen on 127.0.0.1 only; another key and passwords are
        refused."""
        self.need("docker-registry", "ssh", "ss")
        tmp = self.tmpdir()
        key, wrong = make_key(tmp / "id"), make_key(tmp / "wrong")
        self.assertNotEqual(key, wrong)
        ports = {"agent": free_port(), "tracker": free_port()}

        def manhole(name):
            return {
                "manhole": {
                    "port": ports[name],
                    "authorized_keys": str(tmp / "id.pub"),
                    "host_key": str(tmp / f"{name}_host_key"),
                }
            }

        registry = self.start(Registry(tmp / "registry"))
        cluster = self.start(
            Cluster(
                tmp / "cluster",
                registry.url,
                agents=1,
                agent_config=manhole("agent"),
                tracker_config=manhole("tracker"),
            )
        )
        for name, probe in [
            ("agent", "type(swarm).__name__ + 'OK', cache.list()"),
            ("tracker", "type(tracker).__name__ + 'OK', tracker.interval"),
        ]:
            listening = subprocess.run(
                ["ss", "-ltnH", f"sport = :{ports[name]}"],
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout.split()
            self.assertIn(f"127.0.0.1:{ports[name]}", listening, name)
            code, output = ssh(ports[name], tmp / "id", probe + "\n")
            self.assertEqual(code, 0, output)
            expected = "('SwarmOK', [])" if name == "agent" else "('TrackerOK', 5)"
            self.assertIn(expected, output)

            code, output = ssh(ports[name], tmp / "wrong", "1\n")
            self.assertEqual(code, 255, output)
            self.assertIn("Permission denied (publickey)", output)
            code, output = ssh(ports[name], tmp / "id", "1\n", user="root")
            self.assertEqual(code, 255, output)
        self.assertTrue(all(d.running for d in cluster.daemons))
