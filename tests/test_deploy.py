"""Deployment files in etc/: systemd units, Kubernetes manifests and engine
snippets parse, validate, and carry configs that Eagle accepts."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import kubernetes_validate
import yaml
from twisted.trial.unittest import TestCase

from eagle import config
from tests.test_lab import LabTestCase

ETC = Path(__file__).parent.parent / "etc"
KUBERNETES_VERSION = "1.30.0"
ROLES = ("agent", "seeder", "tracker", "proxy")


def kind_of(role: str) -> type:
    return config.TrackerConfig if role == "tracker" else config.NodeConfig


class SystemdTests(LabTestCase):
    def test_units_verify(self):
        """Each unit passes systemd-analyze verify without a warning, with the
        install prefix pointed at this checkout's virtualenv."""
        self.need("systemd-analyze")
        venv = Path(sys.executable).parent.parent
        tmp = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, tmp, True)
        for role in ROLES:
            text = (ETC / "systemd" / f"eagle-{role}.service").read_text()
            self.assertIn(
                f"ExecStart=/opt/eagle/venv/bin/twist eagle-{role} "
                f"--config /etc/eagle/{role}.yaml",
                text,
            )
            unit = tmp / f"eagle-{role}.service"
            unit.write_text(text.replace("/opt/eagle/venv", str(venv)))
            done = subprocess.run(
                ["systemd-analyze", "verify", "--man=no", str(unit)],
                capture_output=True,
                text=True,
                timeout=60,
            )
            self.assertEqual((done.returncode, done.stderr), (0, ""), role)

    def test_verify_catches_mistakes(self):
        """The check above fails on a misspelt key: it is not silent."""
        self.need("systemd-analyze")
        tmp = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, tmp, True)
        unit = tmp / "broken.service"
        unit.write_text("[Service]\nTpye=simple\nExecStart=/bin/true\n")
        done = subprocess.run(
            ["systemd-analyze", "verify", "--man=no", str(unit)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertIn("Unknown key", done.stderr)


def manifests() -> list[dict]:
    documents = []
    for path in sorted((ETC / "kubernetes").glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document is not None:
                document["__file__"] = path.name
                documents.append(document)
    return documents


def find(documents, kind: str, name: str) -> dict:
    for document in documents:
        if document["kind"] == kind and document["metadata"]["name"] == name:
            return document
    raise AssertionError(f"no {kind} {name}")


def pod_spec(workload: dict) -> dict:
    return workload["spec"]["template"]["spec"]


class KubernetesTests(TestCase):
    def setUp(self):
        self.documents = manifests()

    def test_schema(self):
        """Every manifest is valid for Kubernetes (strict: no unknown fields)."""
        self.assertGreater(len(self.documents), 8)
        for document in self.documents:
            resource = {k: v for k, v in document.items() if k != "__file__"}
            where = f"{document['__file__']}: {document['kind']}"
            try:
                kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)
            except kubernetes_validate.ValidationError as e:
                self.fail(f"{where}: {e.message} at {list(e.path)}")
            self.assertEqual(document["metadata"].get("namespace", "eagle"), "eagle")

    def test_schema_check_catches_mistakes(self):
        """The check above fails on an unknown field."""
        daemonset = find(self.documents, "DaemonSet", "eagle-agent")
        broken = json.loads(json.dumps({**daemonset, "__file__": None}))
        del broken["__file__"]
        broken["spec"]["template"]["spec"]["hostNetwrok"] = True
        self.assertRaises(
            kubernetes_validate.ValidationError,
            kubernetes_validate.validate,
            broken,
            KUBERNETES_VERSION,
            True,
        )

    def test_shapes(self):
        """Agents: a DaemonSet on the host network with the cache on the host;
        seeders: a StatefulSet with a disk each; trackers: a Deployment with
        Redis through Sentinel; Redis: servers and Sentinels."""
        agent = pod_spec(find(self.documents, "DaemonSet", "eagle-agent"))
        self.assertTrue(agent["hostNetwork"])
        self.assertEqual(agent["dnsPolicy"], "ClusterFirstWithHostNet")
        cache = [v for v in agent["volumes"] if v["name"] == "cache"][0]
        self.assertEqual(cache["hostPath"]["path"], "/var/lib/eagle")
        seeder = find(self.documents, "StatefulSet", "eagle-seeder")
        self.assertEqual(seeder["spec"]["serviceName"], "eagle-seeder")
        self.assertTrue(seeder["spec"]["volumeClaimTemplates"])
        find(self.documents, "Deployment", "eagle-tracker")
        find(self.documents, "Service", "eagle-tracker")
        redis = pod_spec(find(self.documents, "StatefulSet", "eagle-redis"))
        commands = [" ".join(c["command"]) for c in redis["containers"]]
        self.assertTrue(any("start-sentinel" in c for c in commands))
        scripts = find(self.documents, "ConfigMap", "eagle-redis")["data"]
        self.assertIn("sentinel monitor eagle", scripts["start-sentinel.sh"])
        tracker = self.configs()["tracker.yaml"]
        self.assertEqual(tracker.redis.master, "eagle")
        self.assertEqual(len(tracker.redis.sentinels), 3)

    def configs(self) -> dict:
        data = find(self.documents, "ConfigMap", "eagle-config")["data"]
        kinds = {f"{role}.yaml": kind_of(role) for role in ROLES}
        return {
            key: config.from_dict(yaml.safe_load(text), kinds[key], key)
            for key, text in data.items()
        }

    def test_configs_are_eagle_configs(self):
        """Each daemon's config in the ConfigMap is one Eagle accepts, and each
        container runs twist with a config file its volumes provide; the names
        the agents are given (seeders, trackers, Redis) are the names the
        manifests create."""
        configs = self.configs()
        for kind, name in [
            ("DaemonSet", "eagle-agent"),
            ("StatefulSet", "eagle-seeder"),
            ("Deployment", "eagle-tracker"),
        ]:
            spec = pod_spec(find(self.documents, kind, name))
            container = spec["containers"][0]
            argv = container["command"]
            self.assertEqual(argv[:2], ["twist", name])
            path = Path(argv[argv.index("--config") + 1])
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            volume = mounts[str(path.parent)]
            source = [v for v in spec["volumes"] if v["name"] == volume][0]
            self.assertEqual(source["configMap"]["name"], "eagle-config")
            self.assertIn(path.name, configs)
        agent = configs["agent.yaml"]
        seeders = find(self.documents, "StatefulSet", "eagle-seeder")["spec"]
        self.assertEqual(
            agent.seeders,
            [
                f"http://eagle-seeder-{i}.eagle-seeder.eagle.svc.cluster.local:7080"
                for i in range(seeders["replicas"])
            ],
        )
        self.assertEqual(
            agent.trackers,
            ["http://eagle-tracker.eagle.svc.cluster.local:7070/announce"],
        )
        redis = find(self.documents, "StatefulSet", "eagle-redis")["spec"]
        self.assertEqual(
            configs["tracker.yaml"].redis.sentinels,
            [
                f"eagle-redis-{i}.eagle-redis.eagle.svc.cluster.local:26379"
                for i in range(redis["replicas"])
            ],
        )

    def test_scripts_parse(self):
        """The Redis start scripts are valid shell (sh -n)."""
        scripts = find(self.documents, "ConfigMap", "eagle-redis")["data"]
        for name, text in scripts.items():
            done = subprocess.run(
                ["sh", "-n"], input=text, capture_output=True, text=True, timeout=10
            )
            self.assertEqual((done.returncode, done.stderr), (0, ""), name)


def agent_port() -> int:
    listen = config.load(str(ETC / "agent.yaml"), config.NodeConfig).listen
    return int(re.match(r"tcp:(\d+)", listen).group(1))


class EngineSnippetTests(TestCase):
    def test_containerd_hosts_toml(self):
        """containerd's hosts.toml names the agent as a pull and resolve host."""
        hosts = tomllib.loads((ETC / "engines" / "containerd-hosts.toml").read_text())
        self.assertEqual(hosts["server"], "https://registry-1.docker.io")
        mirror = hosts["host"][f"http://127.0.0.1:{agent_port()}"]
        self.assertEqual(sorted(mirror["capabilities"]), ["pull", "resolve"])

    def test_docker_daemon_json(self):
        """Docker's daemon.json lists the agent as its registry mirror."""
        daemon = json.loads((ETC / "engines" / "docker-daemon.json").read_text())
        self.assertEqual(
            daemon, {"registry-mirrors": [f"http://127.0.0.1:{agent_port()}"]}
        )

    def test_podman_registries_conf(self):
        """registries.conf makes the agent docker.io's mirror, over plain HTTP."""
        text = (ETC / "engines" / "podman-registries.conf").read_text()
        registries = tomllib.loads(text)["registry"]
        self.assertEqual([r["location"] for r in registries], ["docker.io"])
        self.assertEqual(
            registries[0]["mirror"],
            [{"location": f"127.0.0.1:{agent_port()}", "insecure": True}],
        )


class ExampleConfigTests(TestCase):
    def test_example_configs(self):
        """The example configs in etc/ are configs Eagle accepts."""
        for path in ETC.glob("*.yaml"):
            role = path.stem.split("-")[0]
            if role in ROLES:
                config.load(str(path), kind_of(role))

    def test_supervisord_commands(self):
        """supervisord.conf runs each daemon with one of the example configs."""
        text = (ETC / "supervisord.conf").read_text()
        for role in ROLES:
            command = re.search(rf"command = (.*eagle-{role} .*)", text).group(1)
            self.assertIn(f"--config %(here)s/{role}.yaml", command)
            self.assertTrue(shlex.split(command))
