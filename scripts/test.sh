#!/bin/sh
# Set up this Debian machine, check formatting and lint, run the whole test suite.
# Ends with one line "N passed, M failed[, K skipped]"; exits non-zero on a failure.
# EAGLE_REQUIRE_ALL=1 turns skips for a missing tool or root into failures (CI).
set -eu
cd "$(dirname "$0")/.."
sh scripts/setup-debian.sh
status=0
.venv/bin/ruff format --check eagle tests twisted scripts || status=1
.venv/bin/ruff check eagle tests twisted scripts || status=1
.venv/bin/python scripts/run_tests.py "$@" || status=1
if [ "$status" -ne 0 ]; then
    echo "test.sh: failed (see above)" >&2
fi
exit "$status"
