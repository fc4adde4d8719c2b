"""Run trial over the test suite and end with one plain line for CI:
``N passed, M failed`` (and ``, K skipped``). Exits non-zero on any failure."""

import re
import subprocess
import sys


def main(argv: list[str]) -> int:
    tests = argv or ["tests"]
    trial = [sys.executable, "-m", "twisted.trial"]
    process = subprocess.Popen(
        [*trial, *tests], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    summary = ""
    for line in process.stdout:
        sys.stdout.write(line)
        if line.startswith(("PASSED", "FAILED")):
            summary = line
    code = process.wait()
    counts = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", summary)}
    passed = counts.get("successes", 0)
    failed = sum(
        counts.get(k, 0) for k in ("failures", "errors", "unexpectedSuccesses")
    )
    if code != 0 and failed == 0:
        failed = 1  # trial itself failed, e.g. a module that does not import
    line = f"{passed} passed, {failed} failed"
    if counts.get("skips"):
        line += f", {counts['skips']} skipped"
    print(line)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
