#!/usr/bin/env bash
# Runs every test. The Redis tests start a real redis-server, the docs page is
# loaded in a real headless Chromium, and the Core Rule Set engine needs
# libmodsecurity and the CRS files, so all are installed first from Debian's
# packages when missing; the tests fail loudly, never skip, without.
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
# The Core Rule Set engine (`--features crs`) links libmodsecurity and reads
# Debian's CRS files.
{ pkg-config --exists modsecurity && [ -d /usr/share/modsecurity-crs/rules ]; } ||
  install libmodsecurity-dev modsecurity-crs pkg-config
cargo test --locked "$@"
# Then the tests of the CRS engine, in a build with it.
exec cargo test --locked --features crs --lib --test gateway -- crs
