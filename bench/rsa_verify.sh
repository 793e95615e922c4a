#!/usr/bin/env bash
# One RS256 signature check by jsonwebtoken's rust_crypto backend and by ring
# (not part of CI). Usage: bench/rsa_verify.sh [CHECKS]
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo run --release --example rsa_verify -- "${1:-2000}"
