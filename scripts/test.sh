#!/usr/bin/env bash
# Runs every test. The Redis tests start a real redis-server, so it is
# installed first from Debian's packages when missing; the tests fail loudly,
# never skip, without it.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v redis-server >/dev/null; then
  sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get install -y redis-server || { $sudo_cmd apt-get update && $sudo_cmd apt-get install -y redis-server; }
  # Debian starts a packaged Redis on 6379; the tests run their own.
  $sudo_cmd systemctl disable --now redis-server 2>/dev/null || $sudo_cmd pkill -x redis-server || true
fi
exec cargo test --locked "$@"
