"""How exactly an agent holds its limits: ``python -m eagle.bench.limits``.

In the benchmark's network namespaces (root; `eagle.lab.netns`): an origin, a
tracker, a seeder and two agents, each host's link far faster than the limit L.
The seeder is warmed first (it has the blob and its torrent). Modes:

- ``swarm``, ``http``: a client on the agent's host pulls a blob big enough to
  last, through the swarm or over HTTP (``swarm_min_size`` above the blob),
  with ``download_limit: L``; the agent host's ``eth0`` receive counter counts.
- ``upload``: the agent pulls the blob first, then the seeder is held to 1
  byte/s and the agent to ``upload_limit: L`` (both with ``PUT
  /eagle/limits``), and a client on the other agent's host pulls the blob, from
  the agent; the agent host's ``eth0`` send counter counts.

The counter is sampled every 0.1 s; after a warm-up, the
mean rate over the next ``--seconds`` (10) and the highest rate over any 1 s
window within them are compared with L. The counter sees what crosses the wire,
headers included; with the offloads veth has on, a 64 KiB segment carries one
set of headers, so they add well under 1 % (the limits themselves count
payload and BitTorrent messages).

Results go to ``results/<timestamp>-limits/limits.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import threading
import time
import urllib.request
from datetime import datetime
from pathlib import Path

from eagle.bench import (
    BITTORRENT_PORT,
    NODE_PORT,
    REPOSITORY,
    TRACKER_PORT,
    NodeDaemon,
    OriginRegistry,
)
from eagle.config import parse_size
from eagle.lab.netns import Network, netns_unavailable

MiB = 1024**2
SAMPLE = 0.1
_direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def window_rates(samples: list[tuple[float, int]], start: float, end: float):
    """Mean rate over [start, end] and the highest over any 1 s window in it,
    from (time, counter) samples."""
    inside = [(t, c) for t, c in samples if start <= t <= end]
    if len(inside) < 2:
        raise ValueError("too few samples in the window")
    (t0, c0), (t1, c1) = inside[0], inside[-1]
    mean = (c1 - c0) / (t1 - t0)
    peak = 0.0
    j = 0
    for ta, ca in inside:
        while j < len(inside) and inside[j][0] - ta < 1.0:
            j += 1
        if j == len(inside):
            break
        tb, cb = inside[j]
        peak = max(peak, (cb - ca) / (tb - ta))
    return mean, peak or mean  # a window under 1 s has only its mean


class LimitRun:
    """One measurement: a fresh tracker, seeder and agent on the network."""

    def __init__(
        self, network, origin, digest, workdir, limit, mode, size, libtorrent=None
    ):
        self.network = network
        self.limit = limit
        self.mode = mode
        self.size = size
        self.digest = digest
        directory = workdir / mode
        registries = [{"host": origin.host, "url": origin.url}]
        tracker = network["tracker"]
        announce = f"http://{tracker.ip}:{TRACKER_PORT}/announce"
        self.tracker = NodeDaemon(
            tracker,
            directory / "tracker",
            "tracker",
            {"listen": f"tcp:{TRACKER_PORT}:interface={tracker.ip}", "interval": 5},
            TRACKER_PORT,
        )

        def node(host, kind, extra):
            config = {
                "listen": f"tcp:{NODE_PORT}:interface={host.ip}",
                "data_dir": str(directory / host.name / "data"),
                "registries": registries,
                "default_registry": origin.host,
                "trackers": [announce],
                "bittorrent_listen": f"{host.ip}:{BITTORRENT_PORT}",
                **extra,
            }
            return NodeDaemon(host, directory / host.name, kind, config, NODE_PORT)

        self.seeder = node(network["seeder"], "seeder", {"seeders": []})
        agent_config = {"seeders": [self.seeder.url], "swarm_timeout": 120}
        if libtorrent:
            agent_config["libtorrent"] = dict(libtorrent)
        if mode != "upload":
            agent_config["download_limit"] = limit
        if mode == "http":
            agent_config["swarm_min_size"] = 2 * size
        self.agent = node(network["agent"], "agent", agent_config)
        self.peer = node(network["peer"], "agent", agent_config)
        self.origin = origin

    def run(self, seconds: float, warmup: float) -> dict:
        daemons = [self.tracker, self.seeder, self.agent]
        if self.mode == "upload":
            daemons.append(self.peer)
        try:
            for daemon in daemons:
                daemon.start()
            self._warm_seeder()
            return self._measure(seconds, warmup)
        finally:
            for daemon in reversed(daemons):
                daemon.stop()
            for daemon in daemons:
                shutil.rmtree(daemon.state_dir / "data", ignore_errors=True)

    def _warm_seeder(self) -> None:
        url = (
            f"{self.seeder.url}/torrents/{self.digest}"
            f"?ns={self.origin.host}&repository={REPOSITORY}"
        )

        def fetch():
            with _direct.open(url, timeout=300) as response:
                response.read()

        self.seeder.node.call(fetch, timeout=310)

    def _blob_url(self, daemon) -> str:
        return f"{daemon.url}/v2/{REPOSITORY}/blobs/{self.digest}"

    def _prepare_upload(self) -> None:
        """The agent has the blob; the seeder all but stops; the agent's
        upload is limited."""

        def pull():
            with _direct.open(self._blob_url(self.agent), timeout=300) as response:
                while response.read(1 << 20):
                    pass

        self.agent.node.call(pull, timeout=310)
        put_limits(self.seeder, {"upload": 1})
        put_limits(self.agent, {"upload": self.limit})

    def _measure(self, seconds: float, warmup: float) -> dict:
        host, counter, puller = self.agent.node, "rx", self.agent
        if self.mode == "upload":
            self._prepare_upload()
            host, counter, puller = self.agent.node, "tx", self.peer
        url = self._blob_url(puller)
        received = {"bytes": 0, "error": None, "done": None}

        def pull():
            try:
                with _direct.open(url, timeout=600) as response:
                    while chunk := response.read(1 << 20):
                        received["bytes"] += len(chunk)
            except Exception as e:  # reported, and the run fails
                received["error"] = repr(e)
            received["done"] = time.monotonic()

        samples = [(time.monotonic(), host.counters()[counter])]
        client = threading.Thread(target=lambda: puller.node.call(pull, timeout=900))
        client.start()
        started = time.monotonic()
        end = started + warmup + seconds
        while time.monotonic() < end + SAMPLE and received["done"] is None:
            time.sleep(SAMPLE)
            samples.append((time.monotonic(), host.counters()[counter]))
        finished_early = received["done"] is not None
        client.join(900)
        if received["error"]:
            raise RuntimeError(f"the pull failed: {received['error']}")
        if finished_early:
            raise RuntimeError("the blob was complete before the window ended")
        rate, peak = window_rates(samples, started + warmup, end)
        limit = self.limit
        return {
            "mode": self.mode,
            "limit": limit,
            "seconds": seconds,
            "warmup": warmup,
            "counter": counter,
            "rate": rate,
            "peak_1s": peak,
            "ratio": rate / limit,
            "peak_ratio": peak / limit,
            "within_5_percent": abs(rate / limit - 1) <= 0.05,
            "never_above_5_percent": peak <= 1.05 * limit,
            "stats": self.agent.status(),
            "puller_stats": puller.status(),
        }


def put_limits(daemon, limits: dict) -> dict:
    """Change a daemon's limits, from inside its host (the endpoint is
    loopback-only, and the daemon listens on the host's address, so the call
    goes from the host itself)."""
    request = urllib.request.Request(
        daemon.url + "/eagle/limits",
        data=json.dumps(limits).encode(),
        method="PUT",
    )

    def put():
        with _direct.open(request, timeout=10) as response:
            return json.loads(response.read())

    return daemon.node.call(put, timeout=15)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", default="10MiB", help="L, bytes a second")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--warmup", type=float, default=3)
    parser.add_argument("--modes", default="swarm,http,upload")
    parser.add_argument(
        "--rate", type=int, default=1_000_000_000, help="each host's link, bit/s"
    )
    parser.add_argument("--out", default="results")
    parser.add_argument(
        "--libtorrent",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a libtorrent setting for the agents (integer values), repeatable",
    )
    options = parser.parse_args(argv)
    why = netns_unavailable()
    if why:
        parser.error(why)
    limit = int(parse_size(options.limit))
    libtorrent = {}
    for item in options.libtorrent:
        key, _, value = item.partition("=")
        libtorrent[key] = int(value)
    # Enough for warm-up, window and a margin at L.
    size = int(limit * (options.warmup + options.seconds + 6))
    workdir = Path(options.out) / (datetime.now().strftime("%Y%m%d-%H%M%S") + "-limits")
    workdir.mkdir(parents=True)
    names = ("origin", "tracker", "seeder", "agent", "peer")
    hosts = {name: options.rate for name in names}
    results = {
        "limit": limit,
        "size": size,
        "rate": options.rate,
        "libtorrent": libtorrent,
        "runs": [],
    }
    with Network(hosts) as network:
        origin = OriginRegistry(network["origin"], workdir / "origin")
        origin.start()
        try:
            digest = origin.push_blob(REPOSITORY, os.urandom(size))
            for mode in options.modes.split(","):
                run = LimitRun(
                    network, origin, digest, workdir, limit, mode, size, libtorrent
                )
                figures = run.run(options.seconds, options.warmup)
                results["runs"].append(figures)
                print(
                    f"{mode}: L {limit / MiB:.2f} MiB/s, over {options.seconds:g} s "
                    f"{figures['rate'] / MiB:.3f} MiB/s ({figures['ratio']:.4f} L), "
                    f"highest 1 s {figures['peak_ratio']:.4f} L",
                    flush=True,
                )
        finally:
            origin.stop()
            shutil.rmtree(origin.storage_dir, ignore_errors=True)
    (workdir / "limits.json").write_text(json.dumps(results, indent=1))
    print(f"results: {workdir / 'limits.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
