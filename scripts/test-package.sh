#!/usr/bin/env bash
# Builds the Debian package from the test build's binary, installs it on this
# machine with dpkg, and checks what a user gets: the binary on PATH, the
# `portico` user, a config that validates as that user, a systemd unit that
# passes `systemd-analyze verify`, and a logrotate snippet logrotate accepts.
# The package is removed again unless it was installed before. Needs root (or
# sudo) and dpkg; cargo-deb is installed by scripts/test.sh when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo -n"
fail() { echo "test-package: $*" >&2; exit 1; }

# The release profile takes minutes of LTO; the test build's binary is the
# same program (stripped, without the debug-symbol package, which only takes
# time here). cargo-deb warns that dev profiles are meant for testing, which
# is what this is.
cargo build --locked --bin portico
rm -rf target/debian && mkdir -p target/debian
cargo deb --no-build --profile dev --no-dbgsym --strip -o target/debian/ >target/debian/build.log 2>&1 ||
  { cat target/debian/build.log >&2; fail "cargo deb failed"; }
deb=$(echo target/debian/portico_*.deb)
[ -f "$deb" ] || fail "cargo deb made no package"

installed_before=""; dpkg-query -W -f='${Status}' portico 2>/dev/null | grep -q "install ok installed" && installed_before=yes
cleanup() { [ -n "$installed_before" ] || $sudo_cmd dpkg --purge portico >/dev/null; }
trap cleanup EXIT

$sudo_cmd dpkg -i "$deb"
[ "$(command -v portico)" = /usr/bin/portico ] || fail "portico is not /usr/bin/portico on PATH"
getent passwd portico >/dev/null || fail "the package did not create the portico user"
[ "$(stat -c '%U:%G %a' /etc/portico/portico.yaml)" = "root:portico 640" ] ||
  fail "/etc/portico/portico.yaml should be root:portico 640, is $(stat -c '%U:%G %a' /etc/portico/portico.yaml)"
# As the service would: the unprivileged user reads its config and checks it.
$sudo_cmd runuser -u portico -- portico validate --config /etc/portico/portico.yaml
if command -v systemd-analyze >/dev/null; then
  # `verify` reads the unit as systemd would and names any bad directive.
  out=$(systemd-analyze verify /usr/lib/systemd/system/portico.service 2>&1) || fail "systemd-analyze verify: $out"
  [ -z "$out" ] || fail "systemd-analyze verify warned: $out"
else
  echo "test-package: systemd-analyze is not installed; the unit was not verified" >&2
fi
if command -v logrotate >/dev/null; then
  logrotate --debug /etc/logrotate.d/portico >/dev/null 2>&1 || fail "logrotate refuses /etc/logrotate.d/portico"
fi
echo "test-package: $deb installs, and its config validates"
