"""Structured logs: twist writes JSON when its output is not a terminal, and one
blob's journey can be followed by its digest across agent, seeder and tracker."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from twisted.logger import eventFromJSON, formatEvent

from eagle.lab.cluster import Cluster
from eagle.lab.registry import Registry
from tests.test_lab import LabTestCase
from tests.test_seeder import get


def events(path: Path) -> list[dict]:
    """The log records in a file twist wrote as JSON text sequences (each record
    a line, after an ASCII record separator)."""
    records = []
    # Not splitlines(): it takes the record separator for a line break too.
    lines = path.read_text().split("\n")
    for number, line in enumerate(filter(None, lines), 1):
        try:
            records.append(eventFromJSON(line.lstrip("\x1e")))
        except ValueError:
            error = f"{path}:{number} is not JSON: {line[:300]!r}"
            raise AssertionError(error) from None
    return records


class JSONLogTests(LabTestCase):
    def test_follow_a_blob_by_its_digest(self):
        """With standard output in a file, every daemon's log is JSON, and the
        agent, the seeder and the tracker each log events about the pulled blob
        with its digest as a field."""
        self.need("docker-registry")
        tmp = self.tmpdir()
        registry = self.start(Registry(tmp / "registry"))
        data = os.urandom(3 << 20)
        digest = registry.push_blob("eagle/logs", data)
        cluster = Cluster(tmp / "cluster", registry.url, agents=1)
        for daemon in cluster.daemons:
            daemon.json_logs = True
        self.start(cluster)
        agent = cluster.agents[0]
        status, _, body = get(f"{agent.url}/v2/eagle/logs/blobs/{digest}")
        self.assertEqual(status, 200)
        self.assertEqual("sha256:" + hashlib.sha256(body).hexdigest(), digest)
        cluster.stop()  # logs flushed and complete

        journey = {}
        for daemon in cluster.daemons:
            records = events(daemon.log_path)  # fails on any line not JSON
            self.assertTrue(records, daemon.name)
            for record in records:
                self.assertIn("log_level", record)
                formatEvent(record)  # the text an operator would read
            journey[daemon.name] = [
                formatEvent(r) for r in records if r.get("digest") == digest
            ]
        agent_lines = "\n".join(journey["agent0"])
        self.assertIn("to download", agent_lines)
        self.assertIn("through the swarm", agent_lines)
        self.assertIn("served", agent_lines)
        seeder_lines = "\n".join(journey["seeder0"])
        self.assertIn("from the origin over HTTP", seeder_lines)
        self.assertIn("made torrent", seeder_lines)
        self.assertIn("to seed", seeder_lines)
        tracker_lines = "\n".join(journey["tracker"])
        self.assertIn("agent 127.0.0.1:", tracker_lines)
        self.assertIn("seeder 127.0.0.1:", tracker_lines)
        self.assertIn("started swarm", tracker_lines)
