#!/usr/bin/env bash
# Portico vs nginx vs direct, side by side. Usage: bench/run.sh [--rounds N] [--duration S]
# Installs nginx and wrk from Debian's packages when missing, builds Portico in
# release mode, then runs bench/bench.py. Everything stays on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
command -v wrk >/dev/null || need+=(wrk)
if [ ${#need[@]} -gt 0 ]; then
  sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get install -y "${need[@]}" || { $sudo_cmd apt-get update && $sudo_cmd apt-get install -y "${need[@]}"; }
  # Debian starts the packaged nginx on port 80; the benchmark runs its own.
  $sudo_cmd systemctl stop nginx 2>/dev/null || $sudo_cmd pkill -x nginx || true
fi
cargo build --release --locked
exec python3 bench/bench.py "$@"
