#!/usr/bin/env bash
# Cache hits (not part of CI). Usage: bench/cache.sh [--rounds 5] [--duration 5]
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/tools.sh
exec python3 bench/cache.py "$@"
