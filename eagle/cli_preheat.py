"""``eagle preheat <registry>/<name>:<tag>``: warm the seeders with an image.

The first seeder that answers resolves the image (an index to all platforms, or
to ``--platform``'s); each blob then goes to its owning seeder, the one agents
will ask (rendezvous hashing on its digest), or the next when that one is down.
Progress comes from the seeders' preheat jobs, one bar per blob.
"""

import json
import sys
import time
import urllib.error
import urllib.request

from eagle.rendezvous import rank

_direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
POLL = 0.25  # seconds between progress polls


class PreheatError(Exception):
    pass


def add_parser(commands) -> None:
    preheat = commands.add_parser(
        "preheat",
        help="warm the seeders with an image before anyone pulls it",
        description=__doc__.split("\n\n")[1],
    )
    preheat.add_argument(
        "image",
        help="<registry>/<name>:<tag> or <registry>/<name>@<digest>; without a "
        "registry, the seeders' default one",
    )
    preheat.add_argument(
        "--seeder",
        action="append",
        dest="seeders",
        help="a seeder's HTTP address; repeat for each (default: "
        "http://127.0.0.1:7080)",
    )
    preheat.add_argument(
        "--platform", help="only this platform of an index, e.g. linux/arm64"
    )
    preheat.add_argument(
        "--timeout",
        type=float,
        default=3600,
        help="give up after this many seconds (default: 3600)",
    )
    preheat.set_defaults(run=run)


def parse_image(text: str) -> tuple[str | None, str, str]:
    """(registry or None, repository, tag or digest), as Docker reads a name."""
    first, _, rest = text.partition("/")
    registry = None
    if rest and ("." in first or ":" in first or first == "localhost"):
        registry, text = first, rest
    if "@" in text:
        name, _, reference = text.partition("@")
    else:
        name, _, reference = text.rpartition(":") if ":" in text else (text, "", "")
        reference = reference or "latest"
    if not name:
        raise PreheatError(f"no image name in {text!r}")
    return registry, name, reference


def _post(url: str, payload: dict, timeout: float = 60) -> dict:
    request = urllib.request.Request(
        url,
        data=json.dumps(payload).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    return _json(request, timeout)


def _json(request, timeout: float = 30) -> dict:
    try:
        with _direct.open(request, timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as e:
        raise PreheatError(_oci_message(e)) from None


def _oci_message(error: urllib.error.HTTPError) -> str:
    try:
        first = json.loads(error.read())["errors"][0]
        detail = f" ({first['detail']})" if first.get("detail") else ""
        return f"{first['code']}: {first['message']}{detail}"
    except (ValueError, KeyError, IndexError, TypeError):
        return f"HTTP {error.code}"


def run(args) -> int:
    from rich.console import Console

    console = Console(stderr=False)
    try:
        return _preheat(args, console)
    except PreheatError as e:
        console.print(f"eagle preheat: {e}", style="red", markup=False, soft_wrap=True)
        return 1


def _preheat(args, console) -> int:
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TransferSpeedColumn,
    )

    seeders = [s.rstrip("/") for s in (args.seeders or ["http://127.0.0.1:7080"])]
    registry, repository, reference = parse_image(args.image)
    request = {
        "registry": registry,
        "repository": repository,
        "reference": reference,
        "platform": args.platform,
    }
    started = time.monotonic()
    blobs = _resolve(seeders, request)
    jobs = _start_jobs(seeders, request, blobs)
    deadline = started + args.timeout
    states = {}
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=console,
    ) as progress:
        tasks = {
            b["digest"]: progress.add_task(b["digest"][:19], total=b["size"] or 1)
            for b in blobs
        }
        while True:
            finished = True
            for seeder, job in jobs:
                answer = _json(f"{seeder}/preheat/jobs/{job}")
                finished &= answer["finished"]
                for blob in answer["blobs"]:
                    states[blob["digest"]] = blob
                    done = blob["size"] if blob["state"] == "done" else blob["done"]
                    progress.update(tasks[blob["digest"]], completed=done or 0)
            if finished:
                break
            if time.monotonic() > deadline:
                raise PreheatError(f"not done after {args.timeout:.0f}s")
            time.sleep(POLL)
    failed = [b for b in states.values() if b["state"] == "failed"]
    cached = [b for b in states.values() if b.get("cached")]
    for blob in failed:
        console.print(
            f"{blob['digest']}: {blob.get('error')}",
            style="red",
            markup=False,
            soft_wrap=True,
        )
    size = sum(b["size"] for b in blobs)
    console.print(
        f"{args.image}: {len(blobs)} blobs, {size} bytes on {len(jobs)} seeder(s): "
        f"{len(blobs) - len(cached) - len(failed)} fetched, {len(cached)} already "
        f"there, {len(failed)} failed, in {time.monotonic() - started:.1f}s",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    return 1 if failed else 0


def _resolve(seeders: list[str], request: dict) -> list[dict]:
    """The image's blobs, from the first seeder that answers."""
    reasons = []
    for seeder in seeders:
        try:
            return _post(f"{seeder}/preheat/images", {**request, "blobs": []})["blobs"]
        except OSError as e:
            reasons.append(f"{seeder}: {getattr(e, 'reason', e)}")
    raise PreheatError("no seeder answered: " + "; ".join(reasons))


def _start_jobs(seeders, request, blobs) -> list[tuple[str, str]]:
    """A job on each owning seeder for its blobs; a seeder that is down hands
    its blobs to the next in their order."""
    pending = {b["digest"]: rank(b["digest"].partition(":")[2], seeders) for b in blobs}
    jobs = []
    while pending:
        by_owner = {}
        for digest, order in pending.items():
            if not order:
                raise PreheatError(f"no seeder would take {digest}")
            by_owner.setdefault(order[0], []).append(digest)
        for seeder, digests in by_owner.items():
            try:
                answer = _post(
                    f"{seeder}/preheat/images", {**request, "blobs": digests}
                )
            except OSError as e:
                print(
                    f"eagle preheat: {seeder} is down ({getattr(e, 'reason', e)}); "
                    "its blobs go to the next seeder",
                    file=sys.stderr,
                )
                for digest in digests:
                    pending[digest] = pending[digest][1:]
                continue
            jobs.append((seeder, answer["job"]))
            for digest in digests:
                del pending[digest]
    return jobs
