"""How long one blob takes to reach N hosts, against the physical limit S/B.

The set-up (`eagle.lab.netns`): emulated hosts in network namespaces on one bridge,
each at rate B both ways: ``origin`` (Debian's docker-registry), ``tracker``,
``seeder`` and ``host0``..``host<N-1>``, each host running a real ``twist
eagle-agent`` (or ``eagle-proxy`` for the baseline). A random blob of S bytes is
pushed to the origin once; then, per *round* (a mode and a number of hosts), fresh
daemons start, the seeder is warmed (it fetches the blob from the origin and makes
its torrent, as a push notification or preheat would; ``cold`` skips that), and all
hosts GET the blob through their own agent at the same moment, with a small client
(`eagle.bench.client`) inside each host that times the first byte and the last and
checks the sha256.

Each round reports per-host times, p50/p90/p99/max (nearest rank) also as ratios
to S/B, origin and seeder bytes per S, CPU seconds per GB, and how busy the
machine's cores were. `run` writes JSON, a Markdown table and a CDF plot.

A mode is what runs on the hosts: ``agent`` (P2P) or ``proxy`` (P2P off, blobs
over HTTP from the seeder: the baseline).

Locality (``zones`` > 1): the hosts are dealt round-robin into zones ``a``, ``b``,
.. (origin, tracker and seeder in ``a``), each zone on its own bridge, the zones
joined by a slower path (``zone_rate``, default B/4). Agents then pull twice, once
with topology labels (``region: r, zone: <its zone>``, for the tracker's choice
of peers) and once without, and each round also reports the bytes that crossed
the inter-zone path, per S.
"""

from __future__ import annotations

import itertools
import json
import os
import selectors
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

from eagle.lab import LabError
from eagle.lab.cluster import Daemon
from eagle.lab.netns import SUBNET, Host, Network
from eagle.lab.registry import Registry

MiB = 1024**2
MODES = ("agent", "proxy")
REPOSITORY = "bench/blob"
ORIGIN_PORT = 5000
TRACKER_PORT = 7070
NODE_PORT = 5050
BITTORRENT_PORT = 6881
PERCENTILES = (50, 90, 99)
REGION = "r"
#: Seconds a client has to start and say it is ready.
CLIENT_START_TIMEOUT = 60.0

_direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass
class Options:
    """What to measure; the defaults fit a 2-core machine."""

    hosts: int = 8
    size: int = 128 * MiB  # S, bytes
    rate: int = 100_000_000  # B, bits per second, each host both ways
    origin_rate: int | None = None  # None: B
    seeder_rate: int | None = None  # None: B
    scaling: list[int] = field(default_factory=list)  # several N; empty: [hosts]
    modes: tuple[str, ...] = MODES
    cold: bool = False  # include the seeder's fetch from the origin in the timing
    timeout: float | None = None  # per round; None: 60 s + 3 N S/B
    libtorrent: dict = field(default_factory=dict)  # passed to agents and seeder
    node: dict = field(default_factory=dict)  # config keys for every node daemon
    zones: int = 1  # hosts dealt into this many zones; 1: one flat network
    zone_rate: int | None = None  # the inter-zone path's rate; None: B/4
    subnet: str = SUBNET
    results: str = "results"
    workdir: str | None = None  # logs and data; None: a new temp directory
    keep_data: bool = False  # keep the blobs the daemons stored

    @property
    def counts(self) -> list[int]:
        """The numbers of hosts to run, in order."""
        return sorted(set(self.scaling)) if self.scaling else [self.hosts]

    @property
    def zone_names(self) -> list[str]:
        """The zones' names, ``a`` (origin, tracker, seeder) first."""
        return [chr(ord("a") + i) for i in range(self.zones)]

    @property
    def bound(self) -> float:
        """S/B in seconds: the least time any host needs to receive the blob."""
        return self.size * 8 / self.rate

    def round_timeout(self, hosts: int) -> float:
        """How long a round may take: enough for the seeder to send the blob to
        every host by itself (the baseline's case), three times over."""
        if self.timeout:
            return self.timeout
        seeder_rate = self.seeder_rate or self.rate
        return 60 + 3 * hosts * self.size * 8 / seeder_rate


class OriginRegistry(Registry):
    """Debian's docker-registry serving on ``host``'s address."""

    def __init__(self, host: Host, state_dir: str | os.PathLike):
        super().__init__(state_dir)
        self.node = host
        self.port = ORIGIN_PORT

    @property
    def host(self) -> str:
        return f"{self.node.ip}:{self.port}"

    def argv(self) -> list[str]:
        return self.node.argv(super().argv())

    def ready(self) -> bool:
        return self.node.call(super().ready, timeout=10)

    def push_blob(self, name: str, data: bytes) -> str:
        return self.node.call(super().push_blob, name, data)


class NodeDaemon(Daemon):
    """An Eagle daemon listening on ``host``'s address, run inside the host."""

    def __init__(self, host: Host, state_dir, kind: str, config: dict, port: int):
        super().__init__(state_dir, kind, host.name, config, port)
        self.node = host
        self.url = f"http://{host.ip}:{port}"

    def argv(self) -> list[str]:
        return self.node.argv(super().argv())

    def status(self) -> dict:
        return self.node.call(super().status, timeout=10)

    def ready(self) -> bool:
        try:
            self.status()
        except OSError as e:
            self.not_ready = e
            return False
        return True

    def start(self) -> NodeDaemon:
        self.not_ready: OSError | None = None
        try:
            super().start()
        except LabError as e:
            raise LabError(f"{e}\nlast readiness check: {self.not_ready!r}") from e
        return self

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time of the daemon so far (``ip netns exec`` execs, so the process
        is the ``twist`` itself): all threads, and the main (reactor) thread."""
        if self.process is None:
            return {"total": 0.0, "system": 0.0, "reactor": 0.0}
        pid = self.process.pid
        user, system = process_cpu(f"/proc/{pid}/stat")
        reactor = sum(process_cpu(f"/proc/{pid}/task/{pid}/stat"))
        return {"total": user + system, "system": system, "reactor": reactor}


def process_cpu(stat_path: str) -> tuple[float, float]:
    """(user, system) seconds in a ``/proc/<pid>/stat`` (or a thread's)."""
    with open(stat_path) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def machine_cpu() -> dict[str, float]:
    """Core-seconds of all cores so far, from /proc/stat: ``total``, ``busy``
    (not idle nor waiting for I/O) and ``interrupts`` (irq and softirq: the
    kernel's packet work for veths, bridge and tc happens there)."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = values[:8]
    total = user + nice + system + idle + iowait + irq + softirq + steal
    tick = os.sysconf("SC_CLK_TCK")
    return {
        "total": total / tick,
        "busy": (total - idle - iowait) / tick,
        "interrupts": (irq + softirq) / tick,
    }


def percentile(values: list[float], p: float) -> float:
    """The nearest-rank percentile: the smallest value with p% at or below it."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))  # ceil
    return ordered[int(rank) - 1]


class Testbed:
    """The network, the origin and the blob that every round shares."""

    def __init__(self, options: Options, workdir: Path):
        self.options = options
        self.workdir = workdir
        rate = options.rate
        hosts = {
            "origin": options.origin_rate or rate,
            "tracker": rate,
            "seeder": options.seeder_rate or rate,
        }
        hosts.update({f"host{i}": rate for i in range(max(options.counts))})
        zones = None
        if options.zones > 1:
            names = options.zone_names
            zones = {name: names[0] for name in hosts}
            zones.update(
                {f"host{i}": names[i % len(names)] for i in range(max(options.counts))}
            )
        self.network = Network(
            hosts,
            zones=zones,
            zone_rate=options.zone_rate or rate // 4,
            subnet=options.subnet,
        )
        self.registry = OriginRegistry(self.network["origin"], workdir / "origin")
        self.digest = ""

    def __enter__(self) -> Testbed:
        self.network.__enter__()
        try:
            self.registry.start()
            data = os.urandom(self.options.size)
            self.digest = self.registry.push_blob(REPOSITORY, data)
        except BaseException:
            self.__exit__(*sys.exc_info())
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        try:
            self.registry.stop()
        finally:
            self.network.__exit__(*exc_info)
            if not self.options.keep_data:
                shutil.rmtree(self.registry.storage_dir, ignore_errors=True)

    def hosts(self, count: int) -> list[Host]:
        return [self.network[f"host{i}"] for i in range(count)]


class Round:
    """One mode on N hosts: fresh daemons, one synchronized pull, the figures.

    With ``labels`` the seeder and the hosts give the tracker their zone."""

    def __init__(self, testbed: Testbed, mode: str, count: int, labels: bool = False):
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; choose from {MODES}")
        self.testbed = testbed
        self.options = testbed.options
        self.mode = mode
        self.count = count
        self.labels = labels
        suffix = "-labels" if labels else ""
        self.directory = testbed.workdir / f"{mode}-n{count}{suffix}"
        net = testbed.network
        origin = testbed.registry
        self.registries = [{"host": origin.host, "url": origin.url}]
        tracker = net["tracker"]
        self.announce = f"http://{tracker.ip}:{TRACKER_PORT}/announce"
        self.tracker = NodeDaemon(
            tracker,
            self.directory / "tracker",
            "tracker",
            {"listen": f"tcp:{TRACKER_PORT}:interface={tracker.ip}", "interval": 5},
            TRACKER_PORT,
        )
        self.seeder = self._node(net["seeder"], "seeder", [])
        self.nodes = [
            self._node(host, mode, [self.seeder.url]) for host in testbed.hosts(count)
        ]

    def _node(self, host: Host, kind: str, seeders: list[str]) -> NodeDaemon:
        directory = self.directory / host.name
        config = {
            "listen": f"tcp:{NODE_PORT}:interface={host.ip}",
            "data_dir": str(directory / "data"),
            "registries": self.registries,
            "default_registry": self.registries[0]["host"],
            "trackers": [self.announce],
            "seeders": seeders,
            "bittorrent_listen": f"{host.ip}:{BITTORRENT_PORT}",
        }
        if self.labels:
            config["labels"] = {"region": REGION, "zone": host.zone}
        config.update(self.options.node)
        if self.options.libtorrent and kind != "proxy":
            config["libtorrent"] = dict(self.options.libtorrent)
        return NodeDaemon(host, directory, kind, config, NODE_PORT)

    @property
    def daemons(self) -> list[NodeDaemon]:
        return [self.tracker, self.seeder, *self.nodes]

    def run(self) -> dict:
        """Start the daemons, pull, measure, stop; the round's figures."""
        try:
            self._start()
            return self._measure()
        finally:
            for daemon in reversed(self.daemons):
                daemon.stop()
            if not self.options.keep_data:
                for daemon in self.daemons:
                    shutil.rmtree(daemon.state_dir / "data", ignore_errors=True)

    def _start(self) -> None:
        self.tracker.start()
        others = [self.seeder, *self.nodes]
        with ThreadPoolExecutor(len(others)) as pool:
            for future in [pool.submit(daemon.start) for daemon in others]:
                future.result()

    def _warm_seeder(self) -> None:
        """Have the seeder fetch the blob and make its torrent, as a preheat does."""
        origin = self.testbed.registry
        url = (
            f"{self.seeder.url}/torrents/{self.testbed.digest}"
            f"?ns={origin.host}&repository={REPOSITORY}"
        )
        timeout = 60 + 3 * self.options.size * 8 / (
            self.options.origin_rate or self.options.rate
        )

        def fetch():
            with _direct.open(url, timeout=timeout) as response:
                response.read()

        self.seeder.node.call(fetch, timeout=timeout)

    def _measure(self) -> dict:
        options, testbed = self.options, self.testbed
        digest = testbed.digest
        origin_before = testbed.registry.blob_bytes(digest)
        origin_host = testbed.registry.node
        origin_tx = origin_host.counters()
        if not options.cold:
            self._warm_seeder()
        clients = [self._client(node) for node in self.nodes]
        try:
            self._wait_ready(clients)
            seeder_host = self.seeder.node
            seeder_tx = seeder_host.counters()
            cpu = {daemon.name: daemon.cpu_seconds() for daemon in self.daemons}
            machine = machine_cpu()
            load = os.getloadavg()[0]
            zones_before = testbed.network.zone_counters()
            sampler = LinkSampler(testbed.network).start()
            start = time.monotonic()
            for client in clients:
                client.stdin.write("go\n")
                client.stdin.flush()
            results = self._wait_done(
                clients, start + options.round_timeout(len(clients))
            )
            ended = time.monotonic()
            samples = sampler.stop()
            zones_after = testbed.network.zone_counters()
            cpu = {
                daemon.name: {
                    key: value - cpu[daemon.name][key]
                    for key, value in daemon.cpu_seconds().items()
                }
                for daemon in self.daemons
            }
            machine_after = machine_cpu()
            seeder_sent = seeder_host.counters()["tx"] - seeder_tx["tx"]
            origin_sent = origin_host.counters()["tx"] - origin_tx["tx"]
        finally:
            for client in clients:
                if client.poll() is None:
                    client.kill()
                client.wait()
        origin_bytes = testbed.registry.blob_bytes(digest) - origin_before
        stats = [self._stats(node) for node in self.nodes]
        hosts = []
        for node, result, received in zip(self.nodes, results, stats, strict=True):
            done = result.get("done")
            first = result.get("first_byte")
            hosts.append(
                {
                    "host": node.name,
                    "ip": node.node.ip,
                    "zone": node.node.zone,
                    "seconds": None if done is None else done - start,
                    "first_byte": None if first is None else first - start,
                    "bytes": result.get("bytes", 0),
                    "verified": bool(result.get("verified")),
                    "error": result.get("error"),
                    "received": received,
                    "client_cpu": result.get("cpu"),
                }
            )
        links = _links(samples, start, [h["host"] for h in hosts], self.seeder.name)
        for host in hosts:
            host.update(links[host["host"]])
        return self._figures(
            hosts,
            links=links,
            timeline=_timeline(samples, start, [h["host"] for h in hosts]),
            cpu=cpu,
            wall=ended - start,
            machine={k: machine_after[k] - machine[k] for k in machine},
            load=load,
            origin_bytes=origin_bytes,
            origin_sent=origin_sent,
            seeder_sent=seeder_sent,
            crossed={
                zone: {
                    way: count - zones_before[zone][way]
                    for way, count in counters.items()
                }
                for zone, counters in zones_after.items()
            },
        )

    def _client(self, node: NodeDaemon) -> subprocess.Popen:
        url = f"{node.url}/v2/{REPOSITORY}/blobs/{self.testbed.digest}"
        argv = [sys.executable, "-m", "eagle.bench.client", url, self.testbed.digest]
        argv += ["--timeout", str(self.options.round_timeout(self.count))]
        log = open(self.directory / f"client-{node.name}.log", "w")  # noqa: SIM115
        try:
            return node.node.popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                cwd=Path(__file__).resolve().parents[2],
            )
        finally:
            log.close()

    def _wait_ready(self, clients: list[subprocess.Popen]) -> None:
        deadline = time.monotonic() + CLIENT_START_TIMEOUT
        for client in clients:
            line = _readline(client, deadline)
            if line.strip() != "ready":
                raise LabError(f"a client did not start: {line!r}")

    def _wait_done(self, clients: list[subprocess.Popen], deadline: float) -> list:
        results = []
        for client in clients:
            try:
                line = _readline(client, deadline)
                results.append(json.loads(line))
            except (LabError, ValueError) as e:
                results.append({"error": f"no result: {e}"})
        return results

    def _stats(self, node: NodeDaemon) -> dict:
        try:
            received = node.status().get("received", {})
        except (OSError, ValueError):
            return {}
        return {kind: received.get(kind, 0) for kind in ("origin", "seeder", "peer")}

    def _figures(self, hosts: list[dict], **measured) -> dict:
        options = self.options
        size, bound = options.size, options.bound
        times = [
            h["seconds"] for h in hosts if h["seconds"] is not None and h["verified"]
        ]
        first = [h["first_byte"] for h in hosts if h["first_byte"] is not None]
        failed = [h["host"] for h in hosts if not h["verified"]]
        summary = {}
        if times and not failed:
            for p in PERCENTILES:
                summary[f"p{p}"] = percentile(times, p)
            summary["max"] = max(times)
            summary["min"] = min(times)
        ratios = {key: value / bound for key, value in summary.items()}
        payload = {
            kind: sum(h["received"].get(kind, 0) for h in hosts)
            for kind in ("origin", "seeder", "peer")
        }
        delivered = len(hosts) * size
        cpu = measured["cpu"]
        node_cpu = sum(cpu[node.name]["total"] for node in self.nodes)
        node_reactor = sum(cpu[node.name]["reactor"] for node in self.nodes)
        node_system = sum(cpu[node.name]["system"] for node in self.nodes)
        seeder_cpu = cpu[self.seeder.name]["total"]
        client_cpu = sum(h["client_cpu"] or 0 for h in hosts)
        machine = measured["machine"]
        ours = node_cpu + seeder_cpu + client_cpu + cpu[self.tracker.name]["total"]
        seeder_sent = measured["seeder_sent"]
        crossed = measured["crossed"]
        cross_bytes = sum(sum(ways.values()) for ways in crossed.values())
        return {
            "mode": self.mode,
            "labels": self.labels,
            "hosts": len(hosts),
            "bound": bound,
            "times": summary,
            "ratios": ratios,
            "first_byte": {"p50": percentile(first, 50)} if first else {},
            "failed": failed,
            "wall": measured["wall"],
            "origin": {
                "blob_bytes": measured["origin_bytes"],
                "per_size": measured["origin_bytes"] / size,
                "interface_tx": measured["origin_sent"],
            },
            "seeder": {
                "interface_tx": seeder_sent,
                "per_size": seeder_sent / size,
                "payload": payload["seeder"],
                "payload_per_size": payload["seeder"] / size,
            },
            "received": payload,
            "cpu": {
                "nodes_seconds": node_cpu,
                "nodes_per_gb": node_cpu / (delivered / 1e9),
                "seeder_seconds": seeder_cpu,
                "seeder_per_gb": seeder_cpu / (seeder_sent / 1e9)
                if seeder_sent
                else None,
                "nodes_reactor_seconds": node_reactor,
                "nodes_system_seconds": node_system,
                "tracker_seconds": cpu[self.tracker.name]["total"],
                "clients_seconds": client_cpu,
                "machine_busy": machine["busy"] / machine["total"],
                "machine_busy_cores": machine["busy"] / measured["wall"],
                "interrupt_cores": machine["interrupts"] / measured["wall"],
                "bench_processes_cores": ours / measured["wall"],
                "load_average_before": measured["load"],
                "cores": os.cpu_count(),
            },
            "links": {
                "download_utilization": sum(h["download_mbit"] for h in hosts)
                / len(hosts)
                / (options.rate / 1e6),
                "nodes_upload_mbit": sum(h["upload_mbit"] for h in hosts) / len(hosts),
                "seeder_upload_mbit": measured["links"][self.seeder.name][
                    "upload_mbit"
                ],
            },
            "zones": {
                "count": options.zones,
                "rate": self.testbed.network.zone_rate if crossed else None,
                "cross_bytes": cross_bytes,
                "cross_per_size": cross_bytes / size,
                "per_zone": crossed,
            },
            "per_host": hosts,
            "timeline": measured["timeline"],
            "logs": str(self.directory),
        }


class LinkSampler:
    """Reads every host's link counters twice a second on a thread."""

    interval = 0.5

    def __init__(self, network: Network):
        self.network = network
        self.samples: list[tuple[float, dict]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> LinkSampler:
        self._sample()
        self._thread.start()
        return self

    def _sample(self) -> None:
        self.samples.append((time.monotonic(), self.network.link_counters()))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._sample()
            except (LabError, ValueError):
                pass

    def stop(self) -> list[tuple[float, dict]]:
        """Stop sampling; every sample, the last one taken now."""
        self._stop.set()
        self._thread.join(10)
        self._sample()
        return self.samples


def _links(samples, start: float, hosts: list[str], seeder: str) -> dict:
    """Each host's mean download rate until it had all its bytes and mean upload
    rate over the round, in Mbit/s, from the link samples."""
    first_t, first = samples[0]
    last_t, last = samples[-1]
    links = {}
    for name in [*hosts, seeder]:
        total_rx = last[name]["rx"] - first[name]["rx"]
        # The first sample by which the host had received 99% of its bytes.
        done_t = next(
            t
            for t, c in samples
            if c[name]["rx"] - first[name]["rx"] >= 0.99 * total_rx
        )
        links[name] = {
            "download_mbit": total_rx * 8 / 1e6 / max(done_t - start, 1e-3),
            "upload_mbit": (last[name]["tx"] - first[name]["tx"])
            * 8
            / 1e6
            / max(last_t - start, 1e-3),
        }
    return links


def _timeline(samples, start: float, hosts: list[str]) -> dict:
    """Mean download rate of the pulling hosts per sample interval (Mbit/s)."""
    times, rates = [], []
    for (t0, c0), (t1, c1) in itertools.pairwise(samples):
        received = sum(c1[h]["rx"] - c0[h]["rx"] for h in hosts)
        times.append(round(t1 - start, 3))
        rates.append(received * 8 / 1e6 / max(t1 - t0, 1e-3) / len(hosts))
    return {"seconds": times, "mean_download_mbit": rates}


def _readline(process: subprocess.Popen, deadline: float) -> str:
    """The next line of a process's stdout, waiting until ``deadline`` at most."""
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not selector.select(remaining):
            raise LabError("timed out waiting for a client")
    line = process.stdout.readline()
    if not line:
        raise LabError(f"a client exited {process.wait()} without a result")
    return line


def run(options: Options, progress=print, command: str | None = None) -> dict:
    """Run every round; write the results; return them with ``"directory"``.

    ``command`` is the command line to record with the results."""
    if options.hosts < 1 or any(n < 1 for n in options.counts):
        raise ValueError("the number of hosts must be at least 1")
    if not 1 <= options.zones <= min(options.counts):
        raise ValueError("the number of zones must be between 1 and N")
    workdir = Path(options.workdir or tempfile.mkdtemp(prefix="eagle-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    results = {
        "command": command or f"eagle.bench.run({options!r})",
        "started": stamp,
        "options": asdict(options),
        "bound": options.bound,
        "machine": {"cores": os.cpu_count(), "kernel": os.uname().release},
        "code": code_version(),
        "workdir": str(workdir),
        "rounds": [],
    }
    progress(
        f"S={options.size / MiB:g} MiB, B={options.rate / 1e6:g} Mbit/s, "
        f"S/B={options.bound:.2f}s, N={options.counts}, modes={list(options.modes)}"
        + (f", zones={options.zone_names}" if options.zones > 1 else "")
    )
    with Testbed(options, workdir) as testbed:
        results["digest"] = testbed.digest
        for count in options.counts:
            for mode, labels in rounds(options):
                progress(f"{mode}{' with labels' if labels else ''}, {count} hosts ...")
                figures = Round(testbed, mode, count, labels).run()
                results["rounds"].append(figures)
                progress(summary_line(figures))
    directory = Path(options.results) / stamp
    write(results, directory)
    results["directory"] = str(directory)
    progress(f"results in {directory}")
    return results


def rounds(options: Options) -> list[tuple[str, bool]]:
    """(mode, labels) of the rounds for each N: with zones, agents once with
    labels and once without (proxies ask no tracker, so once)."""
    if options.zones < 2:
        return [(mode, False) for mode in options.modes]
    return [
        (mode, labels)
        for mode in options.modes
        for labels in ((True, False) if mode == "agent" else (False,))
    ]


def _name(figures: dict) -> str:
    """A round's mode, and whether it had labels."""
    return figures["mode"] + (" +labels" if figures.get("labels") else "")


def code_version() -> dict:
    """The checkout the daemons run from: its commit and the files that differ
    from it (the daemons import the working tree)."""
    root = Path(__file__).resolve().parents[2]
    version = {"commit": None, "changed": []}
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        status = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", "eagle", "twisted"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return version
    if commit.returncode == 0:
        version["commit"] = commit.stdout.strip()
        version["changed"] = [line[3:] for line in status.stdout.splitlines()]
    return version


def summary_line(figures: dict) -> str:
    """One line per round for the console."""
    if figures["failed"]:
        return f"  FAILED on {', '.join(figures['failed'])}"
    t, r = figures["times"], figures["ratios"]
    zones = figures["zones"]
    return (
        f"  p50 {t['p50']:.2f}s ({r['p50']:.2f}x)  p99 {t['p99']:.2f}s "
        f"({r['p99']:.2f}x)  origin {figures['origin']['per_size']:.2f} S  "
        f"seeder {figures['seeder']['per_size']:.2f} S  "
        + (f"cross-zone {zones['cross_per_size']:.2f} S  " if zones["rate"] else "")
        + f"busy {figures['cpu']['machine_busy']:.0%}"
    )


def write(results: dict, directory: Path) -> None:
    """``bench.json``, ``bench.md``, ``cdf.png`` and ``throughput.png`` in
    ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "bench.json").write_text(json.dumps(results, indent=1) + "\n")
    (directory / "bench.md").write_text(markdown(results))
    plot(results, directory / "cdf.png")
    plot_throughput(results, directory / "throughput.png")


def _cell(seconds: float | None, ratio: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds:.1f} ({ratio:.2f}x)"


def _code(code: dict | None) -> str:
    if not code or not code.get("commit"):
        return "unknown"
    changed = code.get("changed") or []
    return code["commit"][:10] + (f" + {len(changed)} changed files" if changed else "")


def markdown(results: dict) -> str:
    """The figures as a Markdown table, one row per round."""
    options = results["options"]
    lines = [
        f"S = {options['size'] / MiB:g} MiB, B = {options['rate'] / 1e6:g} Mbit/s, "
        f"S/B = {results['bound']:.2f} s; "
        f"{'cold seeder' if options['cold'] else 'seeder warmed before the clock'}; "
        f"`{results['command']}`; code {_code(results.get('code'))}",
        "",
        "| mode | N | p50 s (x S/B) | p90 | p99 | max | first byte p50 | "
        "origin / S | seeder / S (payload) | node CPU s/GB (reactor) | "
        "seeder CPU s/GB | cores busy: all (bench, irq) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results["rounds"]:
        t, q = r["times"], r["ratios"]
        first = r["first_byte"].get("p50")
        c = r["cpu"]
        seeder_cpu = c["seeder_per_gb"]
        cells = [
            _name(r) + (" FAILED " + ",".join(r["failed"]) if r["failed"] else ""),
            str(r["hosts"]),
            *(_cell(t.get(k), q.get(k)) for k in ("p50", "p90", "p99", "max")),
            "-" if first is None else f"{first:.2f}",
            f"{r['origin']['per_size']:.2f}",
            f"{r['seeder']['per_size']:.2f} ({r['seeder']['payload_per_size']:.2f})",
            f"{c['nodes_per_gb']:.1f} "
            f"({c['nodes_reactor_seconds'] / max(c['nodes_seconds'], 1e-9):.0%})",
            "-" if seeder_cpu is None else f"{seeder_cpu:.1f}",
            f"{c['machine_busy_cores']:.2f} of {c['cores']} "
            f"({c['bench_processes_cores']:.2f}, {c['interrupt_cores']:.2f})",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    if options.get("zones", 1) > 1:
        lines += locality_table(results)
    return "\n".join(lines)


def locality_table(results: dict) -> list[str]:
    """Lines of a Markdown table of the rounds' completion times and the bytes
    that crossed the inter-zone path, per S."""
    zone_rate = results["rounds"][0]["zones"]["rate"] if results["rounds"] else 0
    lines = [
        f"Zones: {results['options']['zones']}, inter-zone path "
        f"{zone_rate / 1e6:g} Mbit/s each way.",
        "",
        "| mode | N | p50 s (x S/B) | p99 | cross-zone / S | per zone: in, out / S |",
        "|---|---:|---:|---:|---:|---|",
    ]
    size = results["options"]["size"]
    for r in results["rounds"]:
        t, q, zones = r["times"], r["ratios"], r["zones"]
        per_zone = ", ".join(
            f"{zone}: {ways['in'] / size:.2f}, {ways['out'] / size:.2f}"
            for zone, ways in zones["per_zone"].items()
        )
        cells = [
            _name(r) + (" FAILED" if r["failed"] else ""),
            str(r["hosts"]),
            _cell(t.get("p50"), q.get("p50")),
            _cell(t.get("p99"), q.get("p99")),
            f"{zones['cross_per_size']:.2f}",
            per_zone,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    return lines


def plot(results: dict, path: Path) -> None:
    """Completion-time CDFs, one panel per N, one line per mode, S/B marked."""
    try:
        import matplotlib
    except ImportError:
        print("matplotlib is not installed: no plot", file=sys.stderr)
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = sorted({r["hosts"] for r in results["rounds"]})
    figure, axes = plt.subplots(
        1, len(counts), figsize=(5 * len(counts), 4), squeeze=False, sharey=True
    )
    bound = results["bound"]
    for ax, count in zip(axes[0], counts, strict=True):
        for r in results["rounds"]:
            if r["hosts"] != count:
                continue
            times = sorted(
                h["seconds"] for h in r["per_host"] if h["seconds"] is not None
            )
            if not times:
                continue
            shares = [(i + 1) / len(times) for i in range(len(times))]
            ax.step([0.0, *times], [0.0, *shares], where="post", label=_name(r))
        for factor, style in ((1, "-"), (1.2, ":"), (1.5, "--")):
            ax.axvline(bound * factor, color="grey", linestyle=style, linewidth=0.8)
        ax.set_title(f"N = {count}: S/B = {bound:.1f} s, 1.2x dotted, 1.5x dashed")
        ax.set_xlabel("completion time (s)")
        ax.set_xlim(left=0)
        ax.legend(loc="lower right")
    axes[0][0].set_ylabel("share of hosts done")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_throughput(results: dict, path: Path) -> None:
    """The pulling hosts' mean download rate over time, one panel per N."""
    try:
        import matplotlib
    except ImportError:
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = sorted({r["hosts"] for r in results["rounds"]})
    figure, axes = plt.subplots(
        1, len(counts), figsize=(5 * len(counts), 4), squeeze=False, sharey=True
    )
    rate = results["options"]["rate"] / 1e6
    for ax, count in zip(axes[0], counts, strict=True):
        for r in results["rounds"]:
            if r["hosts"] == count:
                timeline = r["timeline"]
                ax.plot(
                    timeline["seconds"], timeline["mean_download_mbit"], label=_name(r)
                )
        ax.axhline(rate, color="grey", linewidth=0.8)
        ax.set_title(f"N = {count}: mean download per host, B = {rate:g} Mbit/s")
        ax.set_xlabel("time since the pulls began (s)")
        ax.set_xlim(left=0)
        ax.set_ylim(bottom=0)
        ax.legend(loc="upper right")
    axes[0][0].set_ylabel("Mbit/s")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


__all__ = ["Options", "Round", "Testbed", "markdown", "percentile", "plot", "run"]
