#!/bin/sh
# Set up this Debian machine, then run the distribution benchmark (needs root:
# network namespaces and tc). Arguments go to `python -m eagle.bench`, e.g.
#   sh scripts/bench.sh --scaling 2,4,8
# Results: results/<timestamp>/bench.json, bench.md, cdf.png.
#
# `sh scripts/bench.sh micro [serve|tracker]` runs the micro-benchmarks instead
# (`python -m eagle.bench.micro`): results/<timestamp>-micro/.
set -eu
cd "$(dirname "$0")/.."
sh scripts/setup-debian.sh
if [ "${1:-}" = micro ]; then
    shift
    exec .venv/bin/python -m eagle.bench.micro "$@"
fi
exec .venv/bin/python -m eagle.bench "$@"
