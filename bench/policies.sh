#!/usr/bin/env bash
# Portico with key_auth + rate_limit + transform + access log, and with jwt RS256 (a new token a request),
# against its own plain proxying (not part of CI). Usage: bench/policies.sh [--rounds 5] [--duration 5] [--tokens 150000]
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/tools.sh
python3 -c "import cryptography" 2>/dev/null || { sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"; $sudo_cmd apt-get install -y python3-cryptography; }
exec python3 bench/policies.py "$@"
