#!/usr/bin/env bash
# Failover soak (not part of CI). Usage: bench/soak.sh [--duration 180] [--kill-every 10]
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
command -v wrk >/dev/null || need+=(wrk)
if [ ${#need[@]} -gt 0 ]; then
  sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get install -y "${need[@]}" || { $sudo_cmd apt-get update && $sudo_cmd apt-get install -y "${need[@]}"; }
  $sudo_cmd systemctl stop nginx 2>/dev/null || $sudo_cmd pkill -x nginx || true
fi
cargo build --release --locked
exec python3 bench/soak.py "$@"
