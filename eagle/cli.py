"""The eagle command: tools for operators and developers beside the daemons."""

import argparse
import json
import os
import sys
import urllib.error
import urllib.request

from eagle import cli_preheat

_direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
TIMEOUT = 30


class CommandError(Exception):
    """What went wrong, for the operator: printed without a traceback."""


def _call(url: str, method: str = "GET", token: str | None = None) -> dict:
    """A JSON answer from a daemon; CommandError with its message otherwise."""
    request = urllib.request.Request(url, method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with _direct.open(request, timeout=TIMEOUT) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as e:
        try:
            error = json.loads(e.read())["errors"][0]
            message = error["message"] + (
                f" ({error['detail']})" if error.get("detail") else ""
            )
        except (ValueError, KeyError, IndexError, TypeError):
            message = e.reason
        raise CommandError(f"{e.code} {message}") from None
    except (OSError, ValueError) as e:
        raise CommandError(f"{url}: {e}") from None


def _console():
    from rich.console import Console

    return Console()


def _demo(args) -> int:
    from eagle import demo

    demo.run(agents=args.agents, workdir=args.workdir)
    return 0


def _status(args) -> int:
    stats = _call(args.url.rstrip("/") + "/eagle/stats")
    if args.json:
        print(json.dumps(stats, indent=2))
        return 0
    from rich.table import Table

    from eagle.status import human_bytes

    console = _console()
    role = stats.get("role", "tracker" if "announces" in stats else "node")
    console.print(f"[bold]{role}[/bold] at {args.url}")
    if role == "tracker":
        console.print(
            f"{stats['announces']} announces, {stats['store_failures']} peer store"
            f" failures, {len(stats.get('swarms', []))} swarms"
        )
        swarms = Table("blob", "size", "complete", "downloading", "peers")
        for swarm in stats.get("swarms", []):
            swarms.add_row(
                swarm["digest"] or swarm["infohash"],
                human_bytes(swarm["size"] or 0),
                str(swarm["complete"]),
                str(swarm["incomplete"]),
                str(len(swarm["peers"])),
            )
        console.print(swarms)
        return 0
    cache, received = stats["cache"], stats["received"]
    console.print(
        f"cache: {cache['blobs']} blobs, {human_bytes(cache['bytes'])}; served "
        f"{stats['served']['blobs']} blobs, {stats['served']['manifests']} manifests"
    )
    console.print(
        "received: "
        + ", ".join(
            f"{source} {human_bytes(received.get(source, 0))}"
            for source in ("origin", "seeder", "peer")
        )
    )
    if stats.get("swarms"):
        swarms = Table("blob", "state", "progress", "peers")
        for swarm in stats["swarms"]:
            swarms.add_row(
                swarm["digest"],
                swarm["state"],
                f"{swarm['progress']:.0%}",
                str(swarm["peers"]),
            )
        console.print(swarms)
    return 0


def _admin_url(args, path: str) -> str:
    return args.url.rstrip("/") + "/admin/cache" + path


def _cache_list(args) -> int:
    listing = _call(_admin_url(args, ""), token=args.token)
    if args.json:
        print(json.dumps(listing, indent=2))
        return 0
    from rich.table import Table

    from eagle.status import human_bytes

    table = Table(
        "blob", "size", "in use", "torrent", title="least recently used first"
    )
    for blob in listing["blobs"]:
        table.add_row(
            blob["digest"],
            human_bytes(blob["size"]),
            "yes" if blob["in_use"] else "",
            "yes" if blob["torrent"] else "",
        )
    console = _console()
    console.print(table)
    console.print(
        f"{len(listing['blobs'])} blobs, {human_bytes(listing['bytes'])} of "
        f"{human_bytes(listing['limit'])}"
    )
    return 0


def _cache_evict(args) -> int:
    from rich.progress import track

    digests = list(args.digests)
    if args.all:
        listing = _call(_admin_url(args, ""), token=args.token)
        digests += [b["digest"] for b in listing["blobs"] if not b["in_use"]]
    if not digests:
        raise CommandError("name blobs to evict, or --all")
    console = _console()
    failed = 0
    for digest in track(digests, description="evicting", console=console):
        try:
            _call(_admin_url(args, "/" + digest), "DELETE", args.token)
        except CommandError as e:
            failed += 1
            print(f"{digest}: {e}", file=sys.stderr)
    console.print(f"evicted {len(digests) - failed} of {len(digests)} blobs")
    return 1 if failed else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="eagle", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser(
        "demo",
        help="distribute a real image through a local Eagle cluster",
        description=(
            "Start Debian's docker-registry, a tracker, a seeder and N agents on "
            "loopback, push a Debian root file system image (built with "
            "debootstrap as root and cached in ~/.cache/eagle; without root, an "
            "image of Python packages), pull it through every agent with skopeo "
            "and show where the bytes came from. Needs about 1 GB in the work "
            "directory, removed at the end unless --workdir is given."
        ),
    )
    demo.add_argument(
        "--agents", type=int, default=5, help="number of agents (default: 5)"
    )
    demo.add_argument(
        "--workdir", help="keep state and logs in this directory after the run"
    )
    demo.set_defaults(run=_demo)

    status = commands.add_parser(
        "status",
        help="what a daemon holds and has moved",
        description=(
            "A tracker's swarms, or an agent's, proxy's or seeder's cache, bytes "
            "received by source and swarms. The same in a browser: URL/eagle/status."
        ),
    )
    status.add_argument(
        "url", help="any daemon's HTTP address, e.g. http://127.0.0.1:5050"
    )
    status.add_argument("--json", action="store_true", help="print the raw JSON")
    status.set_defaults(run=_status)

    cli_preheat.add_parser(commands)
    cache = commands.add_parser(
        "cache",
        help="list or evict an agent's, proxy's or seeder's cached blobs",
        description=(
            "Uses the daemon's /admin/ API: from the host itself (loopback), or "
            "with its admin_token (--token, or EAGLE_ADMIN_TOKEN)."
        ),
    )
    cache_commands = cache.add_subparsers(dest="cache_command", required=True)
    for name, run, text in [
        ("list", _cache_list, "the cached blobs, least recently used first"),
        ("evict", _cache_evict, "remove blobs from the cache now"),
    ]:
        command = cache_commands.add_parser(name, help=text, description=text)
        command.add_argument("url", help="the daemon, e.g. http://127.0.0.1:5050")
        command.add_argument(
            "--token",
            default=os.environ.get("EAGLE_ADMIN_TOKEN"),
            help="the daemon's admin_token (default: $EAGLE_ADMIN_TOKEN)",
        )
        command.set_defaults(run=run)
    cache_commands.choices["list"].add_argument(
        "--json", action="store_true", help="print the raw JSON"
    )
    evict = cache_commands.choices["evict"]
    evict.add_argument("digests", nargs="*", metavar="DIGEST", help="sha256:...")
    evict.add_argument(
        "--all", action="store_true", help="every blob not in use right now"
    )

    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except CommandError as e:
        print(f"eagle {args.command}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
