#!/usr/bin/env bash
# Fuzzes the request head as Portico takes it in (framing watch, httparse,
# the canonical request) for a fixed budget. Usage: bench/fuzz.sh [SECONDS] [SEED]
# Not part of CI: the budget is minutes, and a failure prints its input.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo run --release --example fuzz_head -- "${1:-300}" ${2:+"$2"}
