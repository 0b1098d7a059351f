#!/usr/bin/env bash
# The third-party programs the tests talk to, from Debian's packages, installed when missing:
#   prometheus-alertmanager   Alertmanager and amtool (tests/app/test_alertmanager.py)
#   prometheus                promtool: alert rules and metrics (tests/app/test_prometheus_rules.py),
#                             and the server that scrapes a running flow (tests/kafka/test_prometheus_scrape.py)
#   kcat                      an operator's Kafka client: writes dwcp.config, reads optimizer.actions
#                             (tests/kafka/test_tune_kafka.py)
#   prometheus-pushgateway    where a one-shot capacity plan pushes its gauges
#                             (tests/app/test_capacity_push.py)
# Needs root (apt-get) only when something is missing; prints what it installs.
set -euo pipefail
declare -A wanted=([prometheus-alertmanager]=prometheus-alertmanager [amtool]=prometheus-alertmanager
  [promtool]=prometheus [prometheus]=prometheus [kcat]=kcat
  [prometheus-pushgateway]=prometheus-pushgateway)
missing=()
for program in "${!wanted[@]}"; do
  command -v "$program" >/dev/null 2>&1 || missing+=("${wanted[$program]}")
done
((${#missing[@]})) || exit 0
mapfile -t packages < <(printf '%s\n' "${missing[@]}" | sort -u)
if [[ $(id -u) -ne 0 ]]; then
  echo "tools.sh: the tests need ${packages[*]}: run as root, or: sudo apt-get install ${packages[*]}" >&2
  exit 1
fi
echo "tools.sh: installing ${packages[*]} from Debian (30-150 MB)" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
# the package enables a service; the tests start their own Alertmanager on a free loopback port
