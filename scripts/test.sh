#!/usr/bin/env bash
# Runs every test. The Redis tests start a real redis-server, and the docs
# page is loaded in a real headless Chromium, so both are installed first from
# Debian's packages when missing; the tests fail loudly, never skip, without.
set -euo pipefail
cd "$(dirname "$0")/.."
sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
install() {
  $sudo_cmd apt-get install -y "$@" || { $sudo_cmd apt-get update && $sudo_cmd apt-get install -y "$@"; }
}
if ! command -v redis-server >/dev/null; then
  install redis-server
  # Debian starts a packaged Redis on 6379; the tests run their own.
  $sudo_cmd systemctl disable --now redis-server 2>/dev/null || $sudo_cmd pkill -x redis-server || true
fi
command -v chromium >/dev/null || install chromium
exec cargo test --locked "$@"
