"""Two micro-benchmarks, each beside an existing tool in the same run, on loopback.

``serve``: an agent serving a blob from its cache to one local client, against
Debian's ``docker-registry`` serving the same blob from its filesystem storage.
Both are read with ``curl`` into ``/dev/null``; the figures are the client's MB/s
and the server's CPU seconds per GB (from ``/proc``), the median of a few reads
taken in turns, so that both see the same machine.

``tracker``: announces per second that one tracker process pinned to one core
answers, with latency percentiles, under a bounded load from ``wrk`` pinned to
the other core: Eagle's tracker on its in-memory store, on Redis, and Debian's
``opentracker`` (C, the tracker most public swarms ran on). The load is a fixed
set of swarms and peers announcing at random (``left`` half zero, numwant 50),
for a fixed time over a fixed number of connections; every answer is checked to
be a 200 without a failure reason.

``python -m eagle.bench.micro [serve|tracker]`` writes ``micro.json`` and
``micro.md`` under ``results/<timestamp>-micro/``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from eagle.bench import code_version, process_cpu
from eagle.config import parse_size
from eagle.lab import LabError, Service, free_port, unavailable
from eagle.lab.cluster import Cluster, Daemon
from eagle.lab.redis import RedisServer
from eagle.lab.registry import Registry

MiB = 1024**2
REPOSITORY = "bench/micro"
#: Swarms and peers per swarm that the announce load draws from.
SWARMS = 64
PEERS = 256
#: Each reading's bound: a read slower than 10 MB/s has something wrong.
READ_TIMEOUT_PER_GB = 100


def cpu_seconds(pid: int) -> float:
    return sum(process_cpu(f"/proc/{pid}/stat"))


def random_file(path: Path, size: int) -> str:
    """Write ``size`` random bytes to ``path``; return their digest."""
    sha = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            chunk = os.urandom(min(8 * MiB, left))
            sha.update(chunk)
            f.write(chunk)
            left -= len(chunk)
    return "sha256:" + sha.hexdigest()


def curl_read(url: str, timeout: float) -> dict:
    """One GET of ``url`` into /dev/null: seconds, bytes, MB/s, sha256 skipped
    (the servers verify; the client must cost as little as it can)."""
    argv = ["curl", "-sS", "--fail", "--noproxy", "*", "-o", "/dev/null"]
    argv += ["--max-time", str(int(timeout)), "-w", "%{size_download} %{time_total}"]
    done = subprocess.run(
        [*argv, url], capture_output=True, text=True, timeout=timeout + 10
    )
    if done.returncode != 0:
        raise LabError(f"curl {url} exited {done.returncode}: {done.stderr.strip()}")
    size, seconds = done.stdout.split()
    return {"bytes": int(size), "seconds": float(seconds)}


def serve(workdir: Path, size: int, reads: int, progress=print) -> dict:
    """The agent's cache against docker-registry's filesystem, same blob."""
    reason = unavailable("docker-registry", "curl")
    if reason:
        raise LabError(reason)
    registry = Registry(workdir / "origin")
    with registry:
        blob = workdir / "blob"
        progress(f"serve: writing and pushing a {size / MiB:.0f} MiB blob")
        digest = random_file(blob, size)
        registry.push_blob(REPOSITORY, blob)
        blob.unlink()
        cluster = Cluster(workdir / "cluster", registry.url, agents=1)
        with cluster:
            agent = cluster.agents[0]
            path = f"/v2/{REPOSITORY}/blobs/{digest}"
            timeout = READ_TIMEOUT_PER_GB * max(1.0, size / 1e9)
            # The first read fills the agent's cache (through the seeder's swarm).
            first = curl_read(agent.url + path, timeout)
            if first["bytes"] != size:
                raise LabError(f"agent sent {first['bytes']} of {size} bytes")
            servers = {
                "eagle-agent (cache)": (agent.url, agent.process.pid),
                "docker-registry (filesystem)": (registry.url, registry.process.pid),
            }
            readings = {name: [] for name in servers}
            for i in range(reads):
                for name, (url, pid) in servers.items():
                    before = cpu_seconds(pid)
                    reading = curl_read(url + path, timeout)
                    reading["cpu"] = cpu_seconds(pid) - before
                    if reading["bytes"] != size:
                        raise LabError(f"{name} sent {reading['bytes']} of {size}")
                    readings[name].append(reading)
                    progress(
                        f"serve: {name} read {i + 1}: "
                        f"{size / reading['seconds'] / 1e6:.0f} MB/s"
                    )
    rows = []
    for name, taken in readings.items():
        rows.append(
            {
                "server": name,
                "reads": taken,
                "mb_per_s": statistics.median(size / r["seconds"] / 1e6 for r in taken),
                "cpu_s_per_gb": statistics.median(
                    r["cpu"] / (size / 1e9) for r in taken
                ),
            }
        )
    return {"size": size, "digest": digest, "servers": rows}


class PinnedDaemon(Daemon):
    """An Eagle daemon held to some cores (``taskset``)."""

    def __init__(self, *args, cores: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.cores = cores

    def argv(self) -> list[str]:
        return ["taskset", "-c", self.cores, *super().argv()]


class OpenTracker(Service):
    """Debian's ``opentracker`` on 127.0.0.1, allowing only ``infohashes``
    (Debian builds it with a whitelist), held to ``cores``."""

    name = "opentracker"

    def __init__(self, state_dir, infohashes: list[bytes], cores: str):
        super().__init__(state_dir)
        self.port = free_port()
        self.cores = cores
        (self.state_dir / "whitelist").write_text(
            "".join(h.hex() + "\n" for h in infohashes)
        )

    def argv(self) -> list[str]:
        # It chroots into -d when it can, and reads the whitelist from in there.
        return [
            "taskset", "-c", self.cores, "opentracker", "-i", "127.0.0.1",
            "-p", str(self.port), "-P", str(self.port),
            "-d", str(self.state_dir), "-w", "/whitelist" if os.geteuid() == 0
            else str(self.state_dir / "whitelist"),
        ]  # fmt: skip

    def ready(self) -> bool:
        import socket

        try:
            socket.create_connection(("127.0.0.1", self.port), 1).close()
            return True
        except OSError:
            return False


_WRK_SCRIPT = """
local hashes = {%(hashes)s}
local threads = {}
failures = 0
function setup(thread) table.insert(threads, thread) end
function request()
  local s = math.random(#hashes)
  local p = math.random(%(peers)d)
  local path = string.format(
    "/announce?info_hash=%%s&peer_id=-BENCH-%%06d%%07d&port=%%d&left=%%d" ..
    "&uploaded=0&downloaded=0&numwant=50&compact=1",
    hashes[s], s, p, 1024 + p, (p %% 2) * 1048576)
  return wrk.format("GET", path)
end
function response(status, headers, body)
  if status ~= 200 or string.find(body, "failure reason", 1, true) then
    failures = failures + 1
  end
end
function done(summary, latency, requests)
  local failed = 0
  for _, t in ipairs(threads) do failed = failed + t:get("failures") end
  local e = summary.errors
  io.write(string.format(
    "RESULT {\\"requests\\": %%d, \\"seconds\\": %%.3f, \\"failed\\": %%d, " ..
    "\\"socket_errors\\": %%d, \\"p50_ms\\": %%.3f, \\"p90_ms\\": %%.3f, " ..
    "\\"p99_ms\\": %%.3f, \\"max_ms\\": %%.3f}\\n",
    summary.requests, summary.duration / 1e6, failed,
    e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50) / 1e3, latency:percentile(90) / 1e3,
    latency:percentile(99) / 1e3, latency.max / 1e3))
end
"""


def wrk_script(infohashes: list[bytes]) -> str:
    escaped = ", ".join('"' + "".join(f"%{b:02X}" for b in h) + '"' for h in infohashes)
    return _WRK_SCRIPT % {"hashes": escaped, "peers": PEERS}


def wrk(url: str, script: Path, seconds: float, connections: int, core: str) -> dict:
    """``wrk`` against ``url`` for ``seconds`` over ``connections``: its RESULT."""
    argv = ["taskset", "-c", core, "wrk", "-t1", f"-c{connections}"]
    argv += [f"-d{seconds:g}s", "--timeout", "5s", "-s", str(script), url]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30)
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    raise LabError(f"wrk gave no result:\n{done.stdout}\n{done.stderr}")


def tracker(workdir: Path, seconds: float, connections: int, progress=print) -> dict:
    """Announces per second: Eagle on memory, Eagle on Redis, opentracker."""
    reason = unavailable("wrk", "taskset", "opentracker", "redis-server")
    if reason:
        raise LabError(reason)
    server_core, load_core = ("0", "1") if os.cpu_count() > 1 else ("0", "0")
    infohashes = [hashlib.sha1(b"swarm %d" % i).digest() for i in range(SWARMS)]
    script = workdir / "announce.lua"
    script.write_text(wrk_script(infohashes))
    rows = []
    redis = RedisServer(workdir / "redis")
    with redis:
        trackers = {
            "eagle-tracker, memory": {},
            "eagle-tracker, Redis": {
                "redis": {"url": f"redis://127.0.0.1:{redis.port}"}
            },
        }
        candidates = []
        for name, extra in trackers.items():
            port = free_port()
            config = {"listen": f"tcp:{port}:interface=127.0.0.1", **extra}
            directory = workdir / name.replace(", ", "-").replace(" ", "-")
            candidates.append(
                (name, lambda d=directory, c=config, p=port: PinnedDaemon(
                    d, "tracker", "tracker", c, p, cores=server_core))
            )  # fmt: skip
        candidates.append(
            ("opentracker", lambda: OpenTracker(
                workdir / "opentracker", infohashes, server_core))
        )  # fmt: skip
        for name, make in candidates:
            server = make()
            with server:
                url = f"http://127.0.0.1:{server.port}"
                wrk(url, script, 2, connections, load_core)  # fill the swarms
                before = cpu_seconds(server.process.pid)
                result = wrk(url, script, seconds, connections, load_core)
                result["cpu"] = cpu_seconds(server.process.pid) - before
            result["server"] = name
            result["per_s"] = result["requests"] / result["seconds"]
            rows.append(result)
            progress(
                f"tracker: {name}: {result['per_s']:.0f} announces/s, "
                f"p50 {result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms, "
                f"{result['failed']} failed"
            )
    return {
        "seconds": seconds,
        "connections": connections,
        "swarms": SWARMS,
        "peers_per_swarm": PEERS,
        "servers": rows,
    }


def markdown(results: dict) -> str:
    commit = str(results["code"].get("commit"))[:10]
    lines = [f"`{results['command']}`, commit {commit}"]
    if "serve" in results:
        s = results["serve"]
        lines += [
            "",
            f"Serving a cached {s['size'] / MiB:.0f} MiB blob to one curl client:",
            "",
            "| server | MB/s | server CPU s/GB |",
            "|---|---|---|",
        ]
        for row in s["servers"]:
            mb, cpu = row["mb_per_s"], row["cpu_s_per_gb"]
            lines.append(f"| {row['server']} | {mb:.0f} | {cpu:.2f} |")
    if "tracker" in results:
        t = results["tracker"]
        lines += [
            "",
            f"Announces on one core, wrk {t['connections']} connections for "
            f"{t['seconds']:g} s, {t['swarms']} swarms x {t['peers_per_swarm']} "
            "peers, numwant 50:",
            "",
            "| tracker | announces/s | p50 ms | p90 ms | p99 ms | max ms | "
            "CPU s | failed | socket errors |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in t["servers"]:
            lines.append(
                f"| {r['server']} | {r['per_s']:.0f} | {r['p50_ms']:.2f} | "
                f"{r['p90_ms']:.2f} | {r['p99_ms']:.2f} | {r['max_ms']:.1f} | "
                f"{r['cpu']:.1f} | {r['failed']} | {r['socket_errors']} |"
            )
        lines += [
            "",
            "*failed*: answers that were not a 200 without a failure reason. "
            "*socket errors*: as wrk counts them; a server that closes every "
            "connection after its answer (opentracker) shows one per request.",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m eagle.bench.micro", description=__doc__)
    p.add_argument("which", nargs="*", help="serve, tracker (both)")
    p.add_argument("--size", default="1GiB", help="the served blob (1GiB)")
    p.add_argument("--reads", type=int, default=3, help="reads per server (3)")
    p.add_argument("--seconds", type=float, default=10, help="load per tracker (10)")
    p.add_argument("--connections", type=int, default=32, help="wrk's (32)")
    p.add_argument("--results", default="results")
    args = p.parse_args(argv)
    which = args.which or ["serve", "tracker"]
    if set(which) - {"serve", "tracker"}:
        p.error(f"choose from serve, tracker, not {' '.join(which)}")
    command = shlex.join(["python", "-m", "eagle.bench.micro", *(argv or sys.argv[1:])])
    results = {"command": command, "code": code_version(), "started": time.time()}
    try:
        with tempfile.TemporaryDirectory(prefix="eagle-micro-") as tmp:
            workdir = Path(tmp)
            if "serve" in which:
                (workdir / "serve").mkdir()
                size = int(parse_size(args.size))
                results["serve"] = serve(workdir / "serve", size, args.reads)
            if "tracker" in which:
                (workdir / "tracker").mkdir()
                results["tracker"] = tracker(
                    workdir / "tracker", args.seconds, args.connections
                )
    except LabError as e:
        print(f"eagle.bench.micro: {e}", file=sys.stderr)
        return 1
    out = Path(args.results) / (datetime.now().strftime("%Y%m%d-%H%M%S") + "-micro")
    out.mkdir(parents=True, exist_ok=True)
    (out / "micro.json").write_text(json.dumps(results, indent=1) + "\n")
    (out / "micro.md").write_text(markdown(results))
    print(markdown(results))
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
