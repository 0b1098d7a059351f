#!/usr/bin/env bash
# First README command: install the streaming runtime into .venv and run the demo on the
# embedded fleet simulator (no Kafka, no Docker, no torch). Extra arguments go to the demo.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/_python.sh
venv="$(ensure_venv "")"
exec "$venv/bin/novacron-ml" demo "$@"
