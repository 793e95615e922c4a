#!/usr/bin/env bash
# 1 vs 1,000 vs 10,000 routes and 10,000 consumers: throughput, RSS, validate, start and reload
# times (not part of CI). Usage: bench/scale.sh [--rounds 3] [--duration 5] [--sizes 1,1000,10000]
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/tools.sh
exec python3 bench/scale.py "$@"
