#!/usr/bin/env bash
# Local single-node Apache Kafka 4.x broker (KRaft, no ZooKeeper, no Docker) for development
# and tests. The official jars are resolved from Maven Central with Maven into a cache
# directory and run on the machine's Java 17.
#
#   scripts/kafka.sh start    resolve jars if needed, format storage, start, wait until ready
#   scripts/kafka.sh stop     stop cleanly (SIGTERM, then SIGKILL after a grace period)
#   scripts/kafka.sh status   print whether it runs and where
#   scripts/kafka.sh fetch    only resolve the jars into the cache
#   scripts/kafka.sh logs     print the path of the broker log
#   scripts/kafka.sh reset    stop and delete the broker's data directory
#
# Settings (environment):
#   NOVACRON_BROKER_VERSION   Kafka version to resolve (default 4.1.1)
#   NOVACRON_BROKER_CACHE     jar cache (default ~/.cache/novacron-ml/kafka)
#   NOVACRON_BROKER_DIR       data, config, pid and log directory (default /tmp/novacron-kafka)
#   NOVACRON_BROKER_PORT      client port on 127.0.0.1 (default 9092; controller uses port+1;
#                             port+2 is a SASL_PLAINTEXT listener with SCRAM-SHA-256/512, whose
#                             users are created through the admin API, as tests/kafka/test_sasl.py does)
#   NOVACRON_BROKER_HEAP      JVM heap (default 768m)
#   NOVACRON_BROKER_WAIT_S    readiness timeout in seconds (default 90)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VERSION="${NOVACRON_BROKER_VERSION:-4.1.1}"
CACHE="${NOVACRON_BROKER_CACHE:-$HOME/.cache/novacron-ml/kafka}"
LIBS="$CACHE/$VERSION/libs"
DIR="${NOVACRON_BROKER_DIR:-/tmp/novacron-kafka}"
PORT="${NOVACRON_BROKER_PORT:-9092}"
CPORT="$((PORT + 1))"
SPORT="$((PORT + 2))"
HEAP="${NOVACRON_BROKER_HEAP:-768m}"
WAIT_S="${NOVACRON_BROKER_WAIT_S:-90}"
PIDFILE="$DIR/kafka.pid"
LOG="$DIR/logs/server.log"
CONSOLE="$DIR/logs/console.log"
JAVA="${JAVA_HOME:+$JAVA_HOME/bin/}java"

say() { echo "kafka.sh: $*" >&2; }

fetch() {
  if [[ -f "$LIBS/.complete" ]]; then return 0; fi
  command -v mvn >/dev/null || { say "Maven (mvn) is required to resolve the Kafka jars"; exit 1; }
  say "resolving org.apache.kafka:kafka_2.13:$VERSION and its dependencies into $LIBS"
  mkdir -p "$LIBS"
  mvn -B -q -f "$HERE/kafka/pom.xml" -Dkafka.version="$VERSION" \
    dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$LIBS" \
    >"$CACHE/mvn-$VERSION.log" 2>&1 || { say "Maven failed, see $CACHE/mvn-$VERSION.log"; exit 1; }
  touch "$LIBS/.complete"
}

running() { [[ -f "$PIDFILE" ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

write_config() {
  mkdir -p "$DIR/data" "$DIR/logs"
  cat >"$DIR/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CPORT
listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CPORT,SASL_PLAINTEXT://127.0.0.1:$SPORT
advertised.listeners=PLAINTEXT://127.0.0.1:$PORT,SASL_PLAINTEXT://127.0.0.1:$SPORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT
sasl.enabled.mechanisms=SCRAM-SHA-256,SCRAM-SHA-512
listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
log.dirs=$DIR/data
num.partitions=1
auto.create.topics.enable=true
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.retention.hours=168
log.segment.bytes=67108864
message.max.bytes=2097152
PROPS
}

start() {
  if running; then say "already running (pid $(cat "$PIDFILE")) on 127.0.0.1:$PORT"; return 0; fi
  if port_open "$PORT"; then say "port $PORT is taken by another process; set NOVACRON_BROKER_PORT"; exit 1; fi
  if port_open "$SPORT"; then say "port $SPORT (SASL listener, port+2) is taken; set NOVACRON_BROKER_PORT"; exit 1; fi
  command -v "$JAVA" >/dev/null || { say "Java 17+ is required"; exit 1; }
  fetch
  write_config
  local cp="$LIBS/*"
  if [[ ! -f "$DIR/data/meta.properties" ]]; then
    local cluster_id
    cluster_id="$("$JAVA" -cp "$cp" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -1)"
    "$JAVA" -cp "$cp" -Dlog4j2.configurationFile="$HERE/kafka/log4j2.properties" \
      -Dkafka.logs.file="$LOG" kafka.tools.StorageTool format \
      -t "$cluster_id" -c "$DIR/server.properties" >"$DIR/logs/format.log" 2>&1 \
      || { say "storage format failed, see $DIR/logs/format.log"; exit 1; }
  fi
  say "starting Kafka $VERSION on 127.0.0.1:$PORT (logs: $LOG)"
  # setsid: the broker outlives this script and ignores the caller's terminal signals.
  setsid "$JAVA" -Xms256m -Xmx"$HEAP" -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$HERE/kafka/log4j2.properties" -Dkafka.logs.file="$LOG" \
    -cp "$cp" kafka.Kafka "$DIR/server.properties" >"$CONSOLE" 2>&1 < /dev/null &
  echo $! >"$PIDFILE"
  local deadline=$((SECONDS + WAIT_S))
  until grep -q "Kafka Server started" "$LOG" 2>/dev/null && port_open "$PORT"; do
    if ! running; then say "broker exited during start-up; last log lines:"; tail -n 30 "$LOG" "$CONSOLE" >&2 || true; rm -f "$PIDFILE"; exit 1; fi
    if (( SECONDS > deadline )); then say "not ready after ${WAIT_S}s, see $LOG"; stop; exit 1; fi
    sleep 0.5
  done
  say "ready on 127.0.0.1:$PORT (pid $(cat "$PIDFILE"))"
}

stop() {
  if ! running; then rm -f "$PIDFILE"; say "not running"; return 0; fi
  local pid; pid="$(cat "$PIDFILE")"
  kill -TERM "$pid"
  for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  if kill -0 "$pid" 2>/dev/null; then say "no clean exit after 30s, killing"; kill -KILL "$pid" || true; fi
  rm -f "$PIDFILE"
  say "stopped"
}

status() {
  if running; then echo "running pid=$(cat "$PIDFILE") bootstrap=127.0.0.1:$PORT dir=$DIR"; else echo "stopped"; return 3; fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  fetch) fetch ;;
  logs) echo "$LOG" ;;
  reset) stop; rm -rf "$DIR"; say "removed $DIR" ;;
  *) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
