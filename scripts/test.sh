#!/usr/bin/env bash
# Second README command: install everything the tests need into .venv, then run the whole
# suite. The pytest session starts the local Apache Kafka broker (scripts/kafka.sh, jars from
# Maven Central, Java 17) unless KAFKA_BOOTSTRAP_SERVERS points at one, and stops it after.
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/_python.sh
venv="$(ensure_venv "[dev,train]")"
scripts/kafka.sh fetch
scripts/tools.sh
"$venv/bin/ruff" check .
"$venv/bin/mypy"
"$venv/bin/lint-imports"
exec "$venv/bin/python" -m pytest "$@"
