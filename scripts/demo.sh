#!/bin/sh
# The main job: set up this Debian machine, then distribute a real image through a
# local Eagle cluster (registry, tracker, seeder, agents) and show where bytes came from.
set -eu
cd "$(dirname "$0")/.."
sh scripts/setup-debian.sh
exec .venv/bin/eagle demo "$@"
