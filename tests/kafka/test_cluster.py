"""A two-process Bytewax cluster gives exactly the alerts and dead letters of one process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from novacron_ml.app.malformed import with_malformed
from novacron_ml.core.kafka import delete_topics, ensure_topics, produce, read_topic
from novacron_ml.core.simulator import FleetConfig, FleetSimulator

pytestmark = pytest.mark.kafka
RUN = [sys.executable, "-m", "bytewax.run", "dataflows.detect:flow"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_two_processes_match_one(kafka_bootstrap: str, kafka_topics: dict[str, str]) -> None:
    ensure_topics(kafka_bootstrap, [kafka_topics["metrics"]], partitions=4)
    start = int(time.time() // 3600 * 3_600_000) - 3 * 3_600_000
    sim = FleetSimulator(
        FleetConfig(
            hosts=6, duration_s=2 * 3600, start_ms=start, seed=3, anomalies_per_host_per_hour=1.0
        )
    )
    produce(
        kafka_bootstrap,
        kafka_topics["metrics"],
        with_malformed(sim.timed_messages("json"), 0.001, 3, lambda: int(time.time() * 1000)),
    )
    single = {"alerts": kafka_topics["alerts"] + ".one", "dlq": kafka_topics["dlq"] + ".one"}
    ensure_topics(kafka_bootstrap, [*single.values(), kafka_topics["alerts"], kafka_topics["dlq"]])
    base = dict(
        os.environ,
        NOVACRON_KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
        NOVACRON_KAFKA_TAIL="false",
        NOVACRON_TOPICS_METRICS=kafka_topics["metrics"],
    )
    one = subprocess.run(
        RUN,
        env=dict(base, NOVACRON_TOPICS_ALERTS=single["alerts"], NOVACRON_TOPICS_DLQ=single["dlq"]),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert one.returncode == 0, one.stderr
    addresses = f"127.0.0.1:{free_port()};127.0.0.1:{free_port()}"
    env = dict(
        base,
        NOVACRON_TOPICS_ALERTS=kafka_topics["alerts"],
        NOVACRON_TOPICS_INCIDENTS=kafka_topics["incidents"],
        NOVACRON_TOPICS_DLQ=kafka_topics["dlq"],
    )
    procs = [
        subprocess.Popen(
            [*RUN, "-i", str(i), "-a", addresses],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in (0, 1)
    ]
    for p in procs:
        _out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err

    def keys(topic: str) -> list[bytes | None]:
        return sorted(r.key or b"" for r in read_topic(kafka_bootstrap, topic))

    alerts = keys(kafka_topics["alerts"])
    assert alerts and alerts == keys(single["alerts"])
    assert (
        len(read_topic(kafka_bootstrap, kafka_topics["dlq"]))
        == len(read_topic(kafka_bootstrap, single["dlq"]))
        > 0
    )
    delete_topics(kafka_bootstrap, single.values())
