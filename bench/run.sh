#!/usr/bin/env bash
# Portico vs nginx vs HAProxy vs direct, side by side. Usage: bench/run.sh [--rounds N] [--duration S] [--access-log]
# Everything stays on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/tools.sh
exec python3 bench/bench.py "$@"
