#!/usr/bin/env bash
# Rate-limit cost and memory (not part of CI). Usage: bench/limits.sh [--rounds 5] [--duration 5] [--keys 1000000]
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/tools.sh
command -v redis-server >/dev/null || { sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"; $sudo_cmd apt-get install -y redis-server; $sudo_cmd systemctl disable --now redis-server 2>/dev/null || true; }
exec python3 bench/limits.py "$@"
