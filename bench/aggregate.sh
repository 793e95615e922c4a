#!/usr/bin/env bash
# Aggregation cost (not part of CI). Usage: bench/aggregate.sh [--rounds 5] [--duration 5]
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/tools.sh
exec python3 bench/aggregate.py "$@"
