#!/usr/bin/env bash
# WAF cost (not part of CI). Usage: bench/waf.sh [--rounds 5] [--duration 5] [--crs]
set -euo pipefail
cd "$(dirname "$0")/.."
# --crs needs the Core Rule Set engine built in.
for arg in "$@"; do [ "$arg" = "--crs" ] && export PORTICO_FEATURES=crs; done
source bench/tools.sh
exec python3 bench/waf.py "$@"
