#!/usr/bin/env bash
# TLS termination (not part of CI). Usage: bench/tls.sh [--rounds 5] [--duration 5]
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/tools.sh
exec python3 bench/tls.py "$@"
