"""``eagle demo``: a real image distributed through a small local Eagle cluster.

The origin is Debian's docker-registry, the image a Debian root file system (or,
without root, this interpreter's Python packages) cut into layers. The pulls go
as a rolling deployment does: two canary hosts one after the other, then the rest
of the fleet at once. The summary shows where each agent's bytes came from.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from rich.console import Console
from rich.table import Table

from eagle.lab import unavailable
from eagle.lab.cluster import Cluster
from eagle.lab.engines import skopeo_pull
from eagle.lab.image import push, real_image
from eagle.lab.registry import Registry

MB = 1e6


def run(agents: int = 5, workdir: str | None = None, console: Console | None = None):
    """Run the demo; return the summary rows. Raises LabError if a part fails."""
    console = console or Console()
    reason = unavailable("docker-registry", "skopeo")
    if reason:
        raise SystemExit(f"eagle demo: {reason} (run scripts/setup-debian.sh)")
    work = Path(workdir or tempfile.mkdtemp(prefix="eagle-demo-"))
    try:
        return _run(agents, work, console)
    finally:
        if workdir is None:
            shutil.rmtree(work, ignore_errors=True)
        else:
            console.print(f"logs and data: {work}")


def _run(agents: int, work: Path, console: Console) -> list[dict]:
    with console.status("building the image (cached after the first run)"):
        image = real_image()
    console.print(
        f"image: {len(image.layers)} layers, {image.size / MB:.1f} MB, "
        f"from {image.layout}"
    )
    with Registry(work / "registry") as registry:
        with console.status("pushing it to the origin registry"):
            push(image, registry.url, "eagle/demo", "1")
        with console.status(f"starting tracker, seeder and {agents} agents"):
            cluster = Cluster(work / "cluster", registry.url, agents=agents).start()
        try:
            timings = _pull_all(cluster, work, console)
            rows = _summary(cluster, registry, image, timings)
        finally:
            cluster.stop()
    _print(console, rows, registry_bytes=rows[-1], size=image.size)
    return rows


def _pull_all(cluster: Cluster, work: Path, console: Console) -> dict[str, float]:
    def pull(agent) -> tuple[str, float]:
        start = time.monotonic()
        ref = f"127.0.0.1:{agent.port}/eagle/demo:1"
        skopeo_pull(ref, work / "pulled" / agent.name)
        return agent.name, time.monotonic() - start

    canaries, rest = cluster.agents[:2], cluster.agents[2:]
    timings = {}
    for canary in canaries:
        with console.status(f"canary {canary.name} pulls"):
            name, seconds = pull(canary)
            timings[name] = seconds
    if rest:
        with console.status(f"the other {len(rest)} agents pull at once"):
            with ThreadPoolExecutor(len(rest)) as pool:
                timings.update(pool.map(pull, rest))
    return timings


def _summary(cluster, registry, image, timings) -> list[dict]:
    rows = []
    for agent in cluster.agents:
        received = agent.status()["received"]
        rows.append(
            {
                "agent": agent.name,
                "seconds": timings[agent.name],
                "origin": received.get("origin", 0),
                "seeder": received.get("seeder", 0),
                "peers": received.get("peer", 0),
            }
        )
    layer_digests = [layer.digest for layer in image.layers]
    rows.append(
        {
            "agent": "origin registry sent",
            "seconds": None,
            "origin": sum(registry.blob_bytes(d) for d in layer_digests),
            "seeder": None,
            "peers": None,
        }
    )
    return rows


def _print(console: Console, rows, registry_bytes, size: int) -> None:
    table = Table(title="Where each agent's layer bytes came from (MB)")
    for column in ("agent", "pull time", "origin", "seeder", "peers"):
        table.add_column(column, justify="left" if column == "agent" else "right")

    def mb(value):
        return "" if value is None else f"{value / MB:.1f}"

    for row in rows:
        seconds = "" if row["seconds"] is None else f"{row['seconds']:.2f}s"
        table.add_row(
            row["agent"],
            seconds,
            mb(row["origin"]),
            mb(row["seeder"]),
            mb(row["peers"]),
        )
    console.print(table)
    agents = rows[:-1]
    peers = sum(r["peers"] for r in agents)
    total = sum(r["origin"] + r["seeder"] + r["peers"] for r in agents)
    console.print(
        f"the origin sent {registry_bytes['origin'] / size:.2f}x the image's layers; "
        f"{peers / max(total, 1):.0%} of the agents' layer bytes came from peers"
    )
