#!/usr/bin/env bash
# Failover soak (not part of CI). Usage: bench/soak.sh [--duration 180] [--kill-every 10] [--errors-log FILE]
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/tools.sh
exec python3 bench/soak.py "$@"
