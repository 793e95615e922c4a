#!/usr/bin/env bash
# WAF cost (not part of CI). Usage: bench/waf.sh [--rounds 5] [--duration 5]
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/tools.sh
exec python3 bench/waf.py "$@"
