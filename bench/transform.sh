#!/usr/bin/env bash
# Transform and validation cost (not part of CI). Usage: bench/transform.sh [--rounds 5] [--duration 5]
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/tools.sh
exec python3 bench/transform.py "$@"
