"""The eagle command: tools for operators and developers beside the daemons."""

import argparse
import json
import sys
import urllib.request

from eagle import cli_preheat

_direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _demo(args) -> int:
    from eagle import demo

    demo.run(agents=args.agents, workdir=args.workdir)
    return 0


def _status(args) -> int:
    try:
        url = args.url.rstrip("/") + "/eagle/stats"
        with _direct.open(url, timeout=10) as response:
            print(json.dumps(json.loads(response.read()), indent=2))
    except OSError as e:
        print(f"eagle status: {args.url}: {e}", file=sys.stderr)
        return 1
    return 0


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

    status = commands.add_parser("status", help="what a daemon has moved, as JSON")
    status.add_argument(
        "url", help="any daemon's HTTP address, e.g. http://127.0.0.1:5050"
    )
    status.set_defaults(run=_status)

    cli_preheat.add_parser(commands)

    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
