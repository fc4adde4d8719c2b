"""``python -m eagle.bench``: distribute one blob to N emulated hosts and compare
with the physical limit S/B. Needs root (network namespaces, tc)."""

from __future__ import annotations

import argparse
import re
import shlex
import sys

import yaml

from eagle.bench import MODES, Options, run
from eagle.config import parse_size
from eagle.lab import LabError
from eagle.lab.netns import SUBNET, netns_unavailable

_RATE_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9}


def parse_rate(text: str) -> int:
    """Bits per second from ``100Mbit``, ``1gbit``, ``250M`` or ``1e8``."""
    match = re.fullmatch(
        r"\s*(\d+(?:\.\d+)?(?:e\d+)?)\s*([kmg]?)(?:bit|b|bps)?\s*", text.lower()
    )
    if not match:
        raise argparse.ArgumentTypeError(f"not a rate: {text!r} (e.g. 100Mbit)")
    return int(float(match[1]) * _RATE_UNITS[match[2]])


def parse_bytes(text: str) -> int:
    try:
        return int(parse_size(text))
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def parse_counts(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"not a list of host counts: {text!r}")
    return counts


def parse_setting(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, not {text!r}")
    return key.strip(), yaml.safe_load(value)


def parse_modes(text: str) -> tuple[str, ...]:
    modes = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = set(modes) - set(MODES)
    if not modes or unknown:
        raise argparse.ArgumentTypeError(f"modes are {','.join(MODES)}, not {text!r}")
    return modes


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m eagle.bench",
        description=__doc__,
    )
    p.add_argument("-n", "--hosts", type=int, default=8, help="N, hosts that pull (8)")
    p.add_argument(
        "-s",
        "--size",
        type=parse_bytes,
        default="128MiB",
        help="S, the blob's size (128MiB)",
    )
    p.add_argument(
        "-b",
        "--rate",
        type=parse_rate,
        default="100Mbit",
        help="B, each host's rate (100Mbit)",
    )
    p.add_argument("--origin-rate", type=parse_rate, help="the origin's rate (B)")
    p.add_argument("--seeder-rate", type=parse_rate, help="the seeder's rate (B)")
    p.add_argument(
        "--scaling",
        type=parse_counts,
        help="several N in one run, e.g. 2,4,8 (instead of -n)",
    )
    p.add_argument(
        "--modes",
        type=parse_modes,
        default=",".join(MODES),
        help="what the hosts run (agent,proxy)",
    )
    p.add_argument(
        "--cold",
        action="store_true",
        help="do not warm the seeder: time includes its fetch from the origin",
    )
    p.add_argument(
        "--timeout", type=float, help="seconds per round (default 60 + 3 N S/B)"
    )
    p.add_argument(
        "--libtorrent",
        type=parse_setting,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="libtorrent setting for agents and seeder (repeatable)",
    )
    p.add_argument(
        "--node",
        type=parse_setting,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a daemon config key for agents, proxies and seeder (repeatable)",
    )
    p.add_argument(
        "--zones",
        type=int,
        default=1,
        help="deal the hosts into this many zones; agents pull with labels and "
        "without (1)",
    )
    p.add_argument(
        "--zone-rate", type=parse_rate, help="the path between zones' rate (B/4)"
    )
    p.add_argument(
        "--subnet", default=SUBNET, help=f"the hosts' private subnet ({SUBNET})"
    )
    p.add_argument(
        "--results", default="results", help="write <timestamp>/ in here (results)"
    )
    p.add_argument("--workdir", help="logs and data (a new temp directory)")
    p.add_argument(
        "--keep-data", action="store_true", help="keep the daemons' stored blobs"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    reason = netns_unavailable()
    if reason:
        print(f"eagle.bench: {reason}", file=sys.stderr)
        return 2
    options = Options(
        hosts=args.hosts,
        size=args.size,
        rate=args.rate,
        origin_rate=args.origin_rate,
        seeder_rate=args.seeder_rate,
        scaling=args.scaling or [],
        modes=args.modes,
        cold=args.cold,
        timeout=args.timeout,
        libtorrent=dict(args.libtorrent),
        node=dict(args.node),
        zones=args.zones,
        zone_rate=args.zone_rate,
        subnet=args.subnet,
        results=args.results,
        workdir=args.workdir,
        keep_data=args.keep_data,
    )
    try:
        command = shlex.join(["python", "-m", "eagle.bench", *(argv or sys.argv[1:])])
        results = run(options, command=command)
    except LabError as e:
        print(f"eagle.bench: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("eagle.bench: interrupted; everything was torn down", file=sys.stderr)
        return 130
    failed = [r for r in results["rounds"] if r["failed"]]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
