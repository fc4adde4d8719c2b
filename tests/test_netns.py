"""Emulated hosts in network namespaces, and a tiny run of the benchmark on them.

Needs root, ``ip`` and ``tc`` (and docker-registry for the benchmark); skips with
the reason without them, unless EAGLE_REQUIRE_ALL is set.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time

from eagle.bench import Options, micro, run
from eagle.lab.netns import Network
from tests.test_lab import LabTestCase

PORT = 9000
MB = 10**6


def _namespaces() -> str:
    return subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True
    ).stdout


def _blackholes() -> str:
    """The root namespace's blackhole routes, as ``ip route`` lists them."""
    return subprocess.run(
        ["ip", "route", "show", "type", "blackhole"], capture_output=True, text=True
    ).stdout


def _receive_all(listener: socket.socket, into: dict) -> None:
    """Accept one connection and count its bytes until the peer closes."""
    connection, _ = listener.accept()
    with connection:
        connection.settimeout(10)
        while chunk := connection.recv(1 << 16):
            into["bytes"] = into.get("bytes", 0) + len(chunk)
        into["done"] = time.monotonic()


class NetworkTests(LabTestCase):
    def setUp(self):
        self.need("ip", "tc", root=True)

    def test_hosts_reach_each_other_at_their_rate_and_vanish_after(self):
        """Two hosts at 20 Mbit/s: 2 MB takes at least 0.8 s at that rate, so
        more than 0.6 s; the root namespace cannot reach them; nothing is left."""
        with Network({"a": 20_000_000, "b": 20_000_000}) as network:
            a, b = network["a"], network["b"]
            names = network.namespaces()
            self.assertEqual(len(names), 3)  # the switch and two hosts
            listener = b.call(socket.create_server, (b.ip, PORT))
            received: dict = {}
            receiver = threading.Thread(
                target=_receive_all, args=(listener, received), daemon=True
            )
            receiver.start()

            def send() -> float:
                started = time.monotonic()
                with socket.create_connection((b.ip, PORT), timeout=10) as sock:
                    sock.sendall(b"\0" * (2 * MB))
                return started

            started = a.call(send, timeout=30)
            receiver.join(30)
            listener.close()
            self.assertEqual(received.get("bytes"), 2 * MB)
            self.assertGreaterEqual(received["done"] - started, 0.6)
            self.assertGreaterEqual(a.counters()["tx"], 2 * MB)
            # The root namespace routes the hosts' subnet nowhere (asked of the
            # routing table, without sending anything).
            route = subprocess.run(
                ["ip", "route", "get", b.ip], capture_output=True, text=True
            )
            self.assertNotEqual(route.returncode, 0, route.stdout)
            self.assertIn(network.subnet, _blackholes())
        listed = _namespaces()
        for name in names:
            self.assertNotIn(name, listed)
        self.assertNotIn(f"metric {os.getpid()} ", _blackholes() + " ")

    def test_two_zones_meet_at_the_inter_zone_rate_and_vanish_after(self):
        """Hosts at 200 Mbit/s in two zones joined at 20 Mbit/s: 2 MB from one
        zone to the other takes at least 0.8 s at that rate, so more than 0.6 s,
        and the inter-zone path counts it; nothing is left after."""
        with Network(
            {"a": 200_000_000, "b": 200_000_000},
            zones={"a": "a", "b": "b"},
            zone_rate=20_000_000,
        ) as network:
            a, b = network["a"], network["b"]
            names = network.namespaces()
            self.assertEqual(network.zones, ["a", "b"])
            listener = b.call(socket.create_server, (b.ip, PORT))
            received: dict = {}
            receiver = threading.Thread(
                target=_receive_all, args=(listener, received), daemon=True
            )
            receiver.start()

            def send() -> float:
                started = time.monotonic()
                with socket.create_connection((b.ip, PORT), timeout=10) as sock:
                    sock.sendall(b"\0" * (2 * MB))
                return started

            started = a.call(send, timeout=30)
            receiver.join(30)
            listener.close()
            self.assertEqual(received.get("bytes"), 2 * MB)
            self.assertGreaterEqual(received["done"] - started, 0.6)
            crossed = network.zone_counters()["b"]
            self.assertGreaterEqual(crossed["in"], 2 * MB)
            self.assertLess(crossed["out"], MB)  # acknowledgements only
        listed = _namespaces()
        for name in names:
            self.assertNotIn(name, listed)
        self.assertNotIn(f"metric {os.getpid()} ", _blackholes() + " ")

    def test_teardown_after_an_exception(self):
        class Boom(Exception):
            pass

        network = Network({"a": None})
        with self.assertRaises(Boom):
            with network:
                network["a"].run(["true"])
                raise Boom()
        self.assertNotIn(network.run_id, _namespaces())

    def test_processes_in_hosts_are_ended_at_teardown(self):
        with Network({"a": None}) as network:
            sleeper = network["a"].popen(["sleep", "600"])
        self.assertIsNotNone(sleeper.wait(10))

    def test_sigterm_and_sigint_tear_down(self):
        """A process killed with SIGTERM or Ctrl-C inside the block cleans up."""
        script = (
            "import sys, time\n"
            "from eagle.lab.netns import Network\n"
            "with Network({'a': None}, prefix='eaglesig') as network:\n"
            "    print(network.run_id, flush=True)\n"
            "    time.sleep(60)\n"
        )
        for signum in (signal.SIGTERM, signal.SIGINT):
            child = subprocess.Popen(
                [sys.executable, "-c", script],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            run_id = child.stdout.readline().strip()
            self.assertTrue(run_id.startswith("eaglesig-"), run_id)
            self.assertIn(run_id, _namespaces())
            child.send_signal(signum)
            child.wait(30)
            child.stdout.close()
            self.assertNotIn(run_id, _namespaces())

    def test_leftovers_of_dead_runs_are_removed(self):
        """Namespaces named after a pid that is gone go when a network starts."""
        dead = subprocess.Popen(["true"])
        dead.wait()
        stale = f"eaglestale-{dead.pid}-0-a"
        subprocess.run(["ip", "netns", "add", stale], check=True)
        self.addCleanup(
            subprocess.run, ["ip", "netns", "delete", stale], capture_output=True
        )
        with Network({"a": None}, prefix="eaglestale"):
            self.assertNotIn(stale, _namespaces())


class BenchmarkSmokeTests(LabTestCase):
    def test_tiny_run(self):
        """N=2, S=8 MiB, B=200 Mbit/s, both modes: every field is there and
        every host got the blob, verified."""
        self.need("ip", "tc", "docker-registry", root=True)
        tmp = self.tmpdir()
        options = Options(
            hosts=2,
            size=8 * 1024**2,
            rate=200_000_000,
            results=str(tmp / "results"),
            workdir=str(tmp / "work"),
        )
        results = run(options, progress=lambda line: None)
        self.assertEqual([r["mode"] for r in results["rounds"]], ["agent", "proxy"])
        for r in results["rounds"]:
            self.assertEqual(r["failed"], [])
            self.assertEqual(r["hosts"], 2)
            self.assertEqual(set(r["times"]), {"p50", "p90", "p99", "max", "min"})
            self.assertEqual(set(r["ratios"]), set(r["times"]))
            for host in r["per_host"]:
                self.assertTrue(host["verified"], host)
                self.assertEqual(host["bytes"], options.size)
                self.assertGreater(host["seconds"], 0)
            # The origin sent the blob once (to the seeder) and no more.
            self.assertEqual(r["origin"]["per_size"], 1.0)
            self.assertGreater(r["seeder"]["interface_tx"], 0)
            for key in ("nodes_per_gb", "seeder_per_gb", "machine_busy"):
                self.assertIn(key, r["cpu"])
        proxy = results["rounds"][1]
        self.assertEqual(proxy["received"]["seeder"], 2 * options.size)
        directory = tmp / "results"
        written = {p.name for p in next(directory.iterdir()).iterdir()}
        self.assertEqual(
            written, {"bench.json", "bench.md", "cdf.png", "throughput.png"}
        )

    def test_tiny_locality_run(self):
        """Two zones of two agents, with labels and without: every host got the
        blob, and the inter-zone path carried at least the copy zone ``b``
        needed, counted into ``b``."""
        self.need("ip", "tc", "docker-registry", root=True)
        tmp = self.tmpdir()
        options = Options(
            hosts=4,
            size=8 * 1024**2,
            rate=200_000_000,
            zones=2,
            modes=("agent",),
            results=str(tmp / "results"),
            workdir=str(tmp / "work"),
        )
        results = run(options, progress=lambda line: None)
        rounds = results["rounds"]
        self.assertEqual([r["labels"] for r in rounds], [True, False])
        for r in rounds:
            self.assertEqual(r["failed"], [])
            self.assertEqual(
                sorted(h["zone"] for h in r["per_host"]), ["a", "a", "b", "b"]
            )
            self.assertTrue(all(h["verified"] for h in r["per_host"]))
            into_b = r["zones"]["per_zone"]["b"]["in"]
            self.assertGreater(into_b, 0.9 * options.size)
            self.assertGreaterEqual(r["zones"]["cross_per_size"], 0.9)


class MicroBenchmarkSmokeTests(LabTestCase):
    """The two micro-benchmarks, tiny: they run and their figures add up."""

    def test_serve(self):
        """A cached 16 MiB blob read from the agent and from docker-registry:
        both sent every byte, at a positive rate."""
        self.need("docker-registry", "curl")
        size = 16 * 1024**2
        figures = micro.serve(self.tmpdir(), size, reads=1, progress=lambda _: None)
        servers = [row["server"] for row in figures["servers"]]
        self.assertEqual(
            servers, ["eagle-agent (cache)", "docker-registry (filesystem)"]
        )
        for row in figures["servers"]:
            self.assertEqual([r["bytes"] for r in row["reads"]], [size])
            self.assertGreater(row["mb_per_s"], 0)

    def test_tracker(self):
        """One second of announces against each tracker: every answer was a
        peer list, and each tracker answered some."""
        self.need("wrk", "taskset", "opentracker", "redis-server")
        figures = micro.tracker(self.tmpdir(), 1, 4, progress=lambda _: None)
        names = [row["server"] for row in figures["servers"]]
        self.assertEqual(
            names, ["eagle-tracker, memory", "eagle-tracker, Redis", "opentracker"]
        )
        for row in figures["servers"]:
            self.assertGreater(row["requests"], 10, row)
            self.assertEqual(row["failed"], 0, row)
        table = micro.markdown({"command": "", "code": {}, "tracker": figures})
        self.assertIn("| opentracker |", table)
