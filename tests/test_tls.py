"""TLS towards the origin: Debian's docker-registry serving HTTPS with a
certificate from a throwaway CA made by the openssl CLI, and an eagle-proxy (or a
seeder and an agent) in front of it: verifying against the system's CAs by
default, against the registry's own CA with ``ca_file``, or not at all with
``tls_verify: false``.
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from eagle import config
from eagle.lab import LabError
from eagle.lab.cluster import Cluster
from eagle.lab.registry import Registry
from eagle.tls import load_ca
from tests.test_lab import LabTestCase
from tests.test_mirror import TIMEOUT, files_under, request

NAME = "eagle/tls"


def make_certificates(directory: Path) -> dict[str, Path]:
    """A CA, and a server certificate it signed for IP 127.0.0.1 (and localhost)."""
    files = {
        name: directory / f"{name}.pem"
        for name in ("ca", "ca-key", "server", "server-key", "server-csr")
    }
    extensions = directory / "server.ext"
    extensions.write_text(
        "basicConstraints=CA:FALSE\n"
        "keyUsage=digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
    )
    commands = [
        ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"]
        + ["-keyout", files["ca-key"], "-out", files["ca"]]
        + ["-subj", "/CN=Eagle test CA"],
        ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", files["server-key"]]
        + ["-out", files["server-csr"], "-subj", "/CN=127.0.0.1"],
        ["x509", "-req", "-in", files["server-csr"], "-CA", files["ca"]]
        + ["-CAkey", files["ca-key"], "-CAcreateserial", "-days", "2"]
        + ["-extfile", extensions, "-out", files["server"]],
    ]
    for argv in commands:
        subprocess.run(
            ["openssl", *map(str, argv)],
            check=True,
            capture_output=True,
            timeout=60,
        )
    return files


class TLSRegistry(Registry):
    """The lab registry on HTTPS, with the test CA's server certificate."""

    name = "registry"

    def __init__(self, state_dir, certificates: dict[str, Path], **options):
        super().__init__(state_dir, **options)
        self.certificates = certificates
        self.context = ssl.create_default_context(cafile=str(certificates["ca"]))
        self.opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}),
            urllib.request.HTTPSHandler(context=self.context),
        )

    @property
    def url(self) -> str:
        return f"https://{self.host}"

    def config(self) -> dict:
        config = super().config()
        config["http"]["tls"] = {
            "certificate": str(self.certificates["server"]),
            "key": str(self.certificates["server-key"]),
        }
        return config


class TLSOriginTests(LabTestCase):
    """An eagle-proxy (no seeder: it fetches from the origin itself) in front of
    the HTTPS registry."""

    def setUp(self):
        self.need("docker-registry", "openssl")
        self.tmp = self.tmpdir()
        certificates = make_certificates(self.tmp)
        self.registry = self.start(TLSRegistry(self.tmp / "registry", certificates))
        self.blob = os.urandom(256 * 1024)
        self.digest = self.registry.push_blob(NAME, self.blob)

    def proxy(self, registry_options: dict | None = None):
        cluster = Cluster(
            self.tmp / "cluster",
            self.registry.url,
            agents=1,
            seeders=0,
            kind="proxy",
            registry_options=registry_options,
        )
        return self.start(cluster).agents[0]

    def blob_get(self, proxy):
        return request(proxy.port, "GET", f"/v2/{NAME}/blobs/{self.digest}")

    def test_registry_serves_https(self):
        """The lab registry answers over TLS to a client trusting the test CA, and
        a client with the system's CAs refuses it."""
        with self.registry.opener.open(
            f"{self.registry.url}/v2/{NAME}/blobs/{self.digest}", timeout=TIMEOUT
        ) as response:
            self.assertEqual(response.read(), self.blob)
        system = urllib.request.build_opener(
            urllib.request.ProxyHandler({}),
            urllib.request.HTTPSHandler(context=ssl.create_default_context()),
        )
        error = self.assertRaises(
            urllib.error.URLError, system.open, self.registry.url + "/v2/", None, 10
        )
        self.assertIsInstance(error.reason, ssl.SSLCertVerificationError)

    def test_verified_by_default(self):
        """With the default tls_verify an untrusted origin certificate is a 5xx OCI
        error naming the cause, logged, and nothing is fetched or cached."""
        proxy = self.proxy()
        status, headers, body = self.blob_get(proxy)
        self.assertGreaterEqual(status, 500, body[:300])
        self.assertLess(status, 600)
        self.assertEqual(headers.get("content-type"), "application/json")
        error = json.loads(body)["errors"][0]
        self.assertIn(error["code"], ("UNAVAILABLE", "UNKNOWN"))
        self.assertIn("certificate verify failed", json.dumps(error))
        self.assertNotIn(b"Traceback", body)
        self.assertNotIn("NOT verified", self.log_of(proxy, "NOT verified", 0))
        self.assertEqual(self.registry.blob_gets(), {})
        data = self.tmp / "cluster" / proxy.name / "data"
        self.assertEqual(files_under(data / "blobs", data / "incoming"), set())

    def test_verification_failure_logged(self):
        """An origin whose certificate fails verification is logged with the
        cause, so that the operator sees why pulls fail."""
        proxy = self.proxy()
        self.assertEqual(self.blob_get(proxy)[0], 503)
        log = self.log_of(proxy, "certificate verify failed")
        self.assertIn("certificate verify failed", log)

    def test_verification_off(self):
        """With tls_verify: false the blob is fetched and verified by digest, and
        the proxy warns that the origin's certificates are NOT verified."""
        proxy = self.proxy({"tls_verify": False})
        status, headers, body = self.blob_get(proxy)
        self.assertEqual(status, 200, body[:300])
        self.assertEqual(int(headers["content-length"]), len(body))
        self.assertEqual(body, self.blob)
        self.assertEqual(self.registry.blob_gets(self.digest), 1)
        warning = f"{self.registry.host} are NOT verified"
        self.assertIn(warning, self.log_of(proxy, warning))

    def test_private_ca_trusted(self):
        """With ca_file naming the registry's CA, its certificate is verified
        against that CA: the blob comes, and nothing says it is unverified."""
        proxy = self.proxy({"ca_file": str(self.registry.certificates["ca"])})
        status, headers, body = self.blob_get(proxy)
        self.assertEqual(status, 200, body[:300])
        self.assertEqual(body, self.blob)
        self.assertEqual(self.registry.blob_gets(self.digest), 1)
        self.assertNotIn("NOT verified", self.log_of(proxy, "NOT verified", 0))

    def test_private_ca_through_seeder_and_swarm(self):
        """Seeder and agent both trust the registry's CA from ca_file: the
        seeder fetches a big blob over TLS and the agent gets it by the swarm."""
        big = os.urandom(3 << 20)  # over swarm_min_size, so through the swarm
        digest = self.registry.push_blob(NAME, big)
        cluster = self.start(
            Cluster(
                self.tmp / "cluster",
                self.registry.url,
                agents=1,
                registry_options={"ca_file": str(self.registry.certificates["ca"])},
            )
        )
        agent = cluster.agents[0]
        status, _, body = request(agent.port, "GET", f"/v2/{NAME}/blobs/{digest}")
        self.assertEqual(status, 200, body[:300])
        self.assertEqual(body, big)
        self.assertEqual(self.registry.blob_gets(digest), 1)  # by the seeder
        self.assertGreater(agent.status()["received"].get("seeder", 0), 0)
        self.assertNotIn("over HTTP", self.log_of(agent, "through the swarm"))
        self.assertIn("through the swarm", self.log_of(agent, "through the swarm"))

    def test_other_ca_refused(self):
        """A ca_file with another CA does not make the registry trusted: 503 in
        OCI JSON, the cause logged, nothing fetched."""
        other = make_certificates(self.tmpdir())["ca"]
        proxy = self.proxy({"ca_file": str(other)})
        status, headers, body = self.blob_get(proxy)
        self.assertEqual(status, 503, body[:300])
        self.assertEqual(headers.get("content-type"), "application/json")
        self.assertIn("certificate verify failed", body.decode())
        self.assertIn("certificate verify failed", self.log_of(proxy, "verify"))
        self.assertEqual(self.registry.blob_gets(), {})

    def test_bad_ca_file_stops_the_daemon(self):
        """A ca_file that is missing or holds no certificate is a config error at
        start naming the registry and the file; the daemon does not run."""
        garbage = self.tmp / "garbage.pem"
        garbage.write_text("not a certificate\n")
        for path, why in [
            (self.tmp / "missing.pem", "cannot read"),
            (garbage, "holds no PEM certificate"),
        ]:
            cluster = Cluster(
                self.tmp / f"cluster-{path.stem}",
                self.registry.url,
                agents=1,
                seeders=0,
                kind="proxy",
                registry_options={"ca_file": str(path)},
            )
            self.addCleanup(cluster.stop)
            error = self.assertRaises(LabError, cluster.start)
            self.assertIn("ConfigError", str(error))
            self.assertIn(f"registry {self.registry.host}: ca_file", str(error))
            self.assertIn(why, str(error))

    def log_of(self, daemon, expected: str, timeout: float = 5) -> str:
        """The daemon's log, once it mentions ``expected`` or after ``timeout``."""
        path = Path(daemon.state_dir) / f"{daemon.name}.log"
        deadline = time.monotonic() + timeout
        while True:
            text = path.read_text(errors="replace") if path.exists() else ""
            if expected in text or time.monotonic() > deadline:
                return text
            time.sleep(0.1)


class CAFileTests(SynchronousTestCase):
    """Reading a registry's CA file, and the config key."""

    def test_load_ca_errors(self):
        """A missing file, a directory and a file without a PEM certificate are
        ValueErrors that say what is wrong."""
        directory = self.mktemp()
        os.mkdir(directory)
        garbage = os.path.join(directory, "garbage.pem")
        with open(garbage, "w") as f:
            f.write("-----BEGIN CERTIFICATE-----\nnot base64\n")
        for path, words in [
            (os.path.join(directory, "missing.pem"), "cannot read"),
            (directory, "cannot read"),
            (garbage, "no PEM certificate"),
        ]:
            error = self.assertRaises(ValueError, load_ca, path)
            self.assertIn(words, str(error))

    def test_ca_file_without_verification_is_an_error(self):
        """ca_file with tls_verify: false is a contradiction, not a silent choice."""
        data = {
            "registries": [
                {"host": "r", "url": "https://r", "ca_file": "/x", "tls_verify": False}
            ]
        }
        error = self.assertRaises(
            config.ConfigError, config.from_dict, data, config.NodeConfig
        )
        self.assertIn("contradict", str(error))
