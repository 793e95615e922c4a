#!/usr/bin/env bash
# Reload and binary-upgrade soaks (not part of CI).
# Usage: bench/ops_soak.sh [--mode reload|upgrade] [--duration 60] [--reloads 100] [--upgrades 10]
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/tools.sh
exec python3 bench/ops_soak.py "$@"
