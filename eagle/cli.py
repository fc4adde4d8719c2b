"""The ``eagle`` command: operators' and developers' tools beside the daemons."""

import argparse
import json
import sys
import urllib.request

_direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _demo(args) -> int:
    from eagle import demo

    demo.run(agents=args.agents, workdir=args.workdir)
    return 0


def _status(args) -> int:
    path = "/status" if args.tracker else "/eagle/stats"
    try:
        with _direct.open(args.url.rstrip("/") + path, timeout=10) as response:
            print(json.dumps(json.loads(response.read()), indent=2))
    except OSError as e:
        print(f"eagle status: {args.url}: {e}", file=sys.stderr)
        return 1
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="eagle", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser(
        "demo", help="distribute a real image through a local Eagle cluster"
    )
    demo.add_argument("--agents", type=int, default=5, help="number of agents")
    demo.add_argument(
        "--workdir", help="keep state and logs here (default: a temp dir)"
    )
    demo.set_defaults(run=_demo)

    status = commands.add_parser("status", help="what a daemon has moved, as JSON")
    status.add_argument(
        "url", help="the daemon's HTTP address, e.g. http://127.0.0.1:5050"
    )
    status.add_argument("--tracker", action="store_true", help="the URL is a tracker's")
    status.set_defaults(run=_status)

    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
