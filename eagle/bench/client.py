"""One host's blob download, run inside the host: ``python -m eagle.bench.client``.

Prints ``ready`` once started, waits for a ``go`` line on stdin (so that all hosts
start at once), GETs the blob, hashes it as it arrives and prints one JSON line::

    {"start": .., "first_byte": .., "done": .., "bytes": .., "sha256": ..,
     "verified": true, "status": 200, "cpu": .., "error": null}

Times are ``time.monotonic()`` readings, which all processes of a machine share,
so the benchmark can set them against the moment it said ``go``. Standard library
only, and no proxies: the request goes straight to the URL given.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
import urllib.error
import urllib.request

CHUNK = 1024 * 1024


def fetch(url: str, digest: str, timeout: float) -> dict:
    """GET ``url`` and check the body against ``digest`` (``sha256:<hex>``)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    cpu = os.times()
    result = {"start": time.monotonic(), "first_byte": None, "done": None}
    result.update(bytes=0, sha256=None, verified=False, status=None, error=None)
    sha256 = hashlib.sha256()
    try:
        with opener.open(url, timeout=timeout) as response:
            result["status"] = response.status
            while chunk := response.read1(CHUNK):
                if result["first_byte"] is None:
                    result["first_byte"] = time.monotonic()
                sha256.update(chunk)
                result["bytes"] += len(chunk)
        result["done"] = time.monotonic()
        result["sha256"] = "sha256:" + sha256.hexdigest()
        result["verified"] = result["sha256"] == digest
        if not result["verified"]:
            result["error"] = "the body does not match the digest"
    except urllib.error.HTTPError as e:
        result["status"] = e.code
        result["error"] = f"HTTP {e.code}: {e.read(500).decode(errors='replace')}"
    except (OSError, ValueError) as e:
        result["error"] = f"{type(e).__name__}: {e}"
    used = os.times()
    result["cpu"] = (used.user - cpu.user) + (used.system - cpu.system)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="the blob's URL on this host's agent or proxy")
    parser.add_argument("digest", help="sha256:<hex> the body must match")
    parser.add_argument("--timeout", type=float, default=300, help="socket timeout")
    args = parser.parse_args(argv)
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return 1
    print(json.dumps(fetch(args.url, args.digest, args.timeout)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
