"""Delivery-checked output on the real broker: records a topic refuses for their size are cut or
dead-lettered, a broker outage longer than the producer's timeout loses nothing, and a loss past
`kafka.delivery_timeout_s` is counted and logged (`novacron_ml.core.delivery`)."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from bytewax.testing import run_main
from confluent_kafka.admin import AdminClient, NewTopic

from dataflows.detect import kafka_flow
from novacron_ml.core import metrics as obs
from novacron_ml.core.delivery import CheckedProducer, OutRecord, SendReport
from novacron_ml.core.kafka import client_config, delete_topics, produce, read_topic, wait_ready
from novacron_ml.core.schema import Alert
from novacron_ml.core.settings import Settings
from novacron_ml.core.simulator import FleetConfig, FleetSimulator

pytestmark = pytest.mark.kafka
ROOT = Path(__file__).resolve().parents[2]
NOW = int(time.time() // 60 * 60_000)


def create_topics(bootstrap: str, limits: dict[str, int | None]) -> None:
    """Topics with their own `max.message.bytes` (None: the broker's default)."""
    admin = AdminClient(client_config(bootstrap))
    new = [
        NewTopic(name, 1, 1, config={} if limit is None else {"max.message.bytes": str(limit)})
        for name, limit in limits.items()
    ]
    for future in admin.create_topics(new).values():
        future.result()
    deadline = time.monotonic() + 30
    while not set(limits) <= set(admin.list_topics(timeout=10).topics):
        assert time.monotonic() < deadline, "topics not visible"
        time.sleep(0.1)


def test_records_too_large_for_their_topic_are_cut_or_dead_lettered_by_the_flow(
    kafka_bootstrap: str,
) -> None:
    suffix = uuid.uuid4().hex[:10]
    names = {
        "metrics": f"test.{suffix}.metrics",
        "alerts": f"test.{suffix}.alerts",
        "dlq": f"test.{suffix}.dlq",
        "incidents": f"test.{suffix}.incidents",
    }
    # No alert fits 200 bytes; a dead letter is cut to the DLQ's 6,000.
    create_topics(
        kafka_bootstrap,
        {
            names["metrics"]: None,
            names["alerts"]: 200,
            names["dlq"]: 6000,
            names["incidents"]: None,
        },
    )
    try:
        sim = FleetSimulator(
            FleetConfig(
                hosts=3,
                clusters=1,
                duration_s=2 * 3600,
                start_ms=NOW - 3 * 3_600_000,
                seed=5,
                anomalies_per_host_per_hour=1.0,
            )
        )
        big_bad = b"{" + os.urandom(20_000).hex().encode()  # bad JSON, ~40 KB, hard to compress
        produce(kafka_bootstrap, names["metrics"], [*sim.messages("json"), (b"big", big_bad)])
        failed_before = obs.counter_value(obs.DEAD_LETTERS, reason="delivery_failed")
        cut_before = obs.counter_value(obs.OUTPUT_CUT, topic=names["dlq"])
        run_main(
            kafka_flow(
                Settings(kafka={"bootstrap_servers": kafka_bootstrap, "tail": False}, topics=names)
            )
        )

        assert read_topic(kafka_bootstrap, names["alerts"]) == []
        letters = read_topic(kafka_bootstrap, names["dlq"])
        refused = [r for r in letters if r.headers["novacron.reason"] == b"delivery_failed"]
        alerts = [msgspec.json.decode(r.value, type=Alert) for r in refused]
        assert alerts and all(
            r.headers["novacron.source"] == f"output:{names['alerts']}".encode() for r in refused
        )
        assert all(b"MSG_SIZE_TOO_LARGE" in r.headers["novacron.detail"] for r in refused)
        assert len({a.alert_id for a in alerts if a.status == "firing"}) == sum(
            a.status == "firing" for a in alerts
        )
        assert obs.counter_value(obs.DEAD_LETTERS, reason="delivery_failed") - failed_before == len(
            refused
        )
        (cut,) = [r for r in letters if r.key == b"big"]
        assert cut.headers["novacron.reason"] == b"bad_json"
        assert cut.headers["novacron.truncated_from"] == str(len(big_bad)).encode()
        assert len(cut.value) < 6000 and big_bad.startswith(cut.value)
        assert obs.counter_value(obs.OUTPUT_CUT, topic=names["dlq"]) - cut_before == 1
        assert len(read_topic(kafka_bootstrap, names["incidents"])) > 0
    finally:
        delete_topics(kafka_bootstrap, names.values())


class Broker:
    """A second broker of our own (scripts/kafka.sh on free loopback ports), to stop and start
    without disturbing the session's broker."""

    def __init__(self, directory: Path) -> None:
        self.port = _free_port_pair()
        self.env = dict(
            os.environ,
            NOVACRON_BROKER_PORT=str(self.port),
            NOVACRON_BROKER_DIR=str(directory),
            NOVACRON_BROKER_HEAP="384m",
        )
        self.bootstrap = f"127.0.0.1:{self.port}"

    def _script(self, command: str) -> None:
        proc = subprocess.run(
            [str(ROOT / "scripts" / "kafka.sh"), command],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr

    def start(self) -> None:
        self._script("start")
        wait_ready(self.bootstrap, timeout_s=60)

    def stop(self) -> None:
        self._script("stop")


def _free_port_pair() -> int:
    """A port p with p, p+1 and p+2 free (the broker's client, controller and SASL ports)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        try:
            for offset in (1, 2):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port + offset))
        except OSError:
            continue
        return port
    raise RuntimeError("no two adjacent free ports")


@pytest.fixture(scope="module")
def own_broker(tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str) -> Iterator[Broker]:
    directory = tmp_path_factory.mktemp("broker")
    broker = Broker(directory)
    broker.start()
    yield broker
    broker.stop()
    shutil.rmtree(directory, ignore_errors=True)


def _send_during_outage(
    broker: Broker, delivery_timeout_s: float, outage_s: float, **config: str
) -> tuple[str, SendReport, float]:
    """Stop the broker, send 200 records, start the broker again after `outage_s`; the topic,
    what `send` reported and how long it blocked."""
    topic = f"test.outage.{uuid.uuid4().hex[:8]}"
    create_topics(broker.bootstrap, {topic: None, f"{topic}.dlq": None})
    producer = CheckedProducer(
        client_config(broker.bootstrap, **{"enable.idempotence": "true", **config}),
        f"{topic}.dlq",
        delivery_timeout_s=delivery_timeout_s,
        retry_pause_s=0.5,
    )
    producer.send([OutRecord(topic, b"before", b"k")])  # connected, with a producer id
    broker.stop()
    result: dict[str, SendReport] = {}
    records = [OutRecord(topic, b"r%d" % i, b"k") for i in range(200)]
    started = time.monotonic()
    sender = threading.Thread(target=lambda: result.update(report=producer.send(records)))
    sender.start()
    sender.join(outage_s)
    broker.start()
    sender.join(120)
    assert not sender.is_alive(), "send did not return after the broker came back"
    return topic, result["report"], time.monotonic() - started


def test_an_outage_within_the_delivery_bound_loses_nothing_and_keeps_the_order(
    own_broker: Broker,
) -> None:
    # librdkafka's own message.timeout.ms is the bound (60 s): it retries in order.
    topic, report, blocked_s = _send_during_outage(own_broker, delivery_timeout_s=60, outage_s=8)
    assert report.delivered[topic] == 200 and not report.lost
    assert blocked_s >= 8
    values = [r.value for r in read_topic(own_broker.bootstrap, topic)]
    assert values == [b"before", *(b"r%d" % i for i in range(200))]  # all, once, in order


def test_an_outage_longer_than_the_producer_timeout_loses_nothing(own_broker: Broker) -> None:
    # The producer gives each record up after 2 s (the case: an outage longer than
    # message.timeout.ms); the sink produces them again until the 60 s bound.
    retries_before = obs.counter_value(obs.OUTPUT_RETRIES, cause="_MSG_TIMED_OUT")
    topic, report, _ = _send_during_outage(
        own_broker, delivery_timeout_s=60, outage_s=8, **{"message.timeout.ms": "2000"}
    )
    assert report.delivered[topic] == 200 and not report.lost
    assert obs.counter_value(obs.OUTPUT_RETRIES, cause="_MSG_TIMED_OUT") - retries_before >= 200
    values = [r.value for r in read_topic(own_broker.bootstrap, topic)]
    assert sorted(values) == sorted([b"before", *(b"r%d" % i for i in range(200))])  # all, once


def test_a_loss_past_the_delivery_bound_is_counted_and_logged(
    own_broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="novacron.delivery")
    topic, report, blocked_s = _send_during_outage(own_broker, delivery_timeout_s=3, outage_s=8)
    delivered = len(read_topic(own_broker.bootstrap, topic)) - 1
    assert report.lost[topic] > 0
    assert report.lost[topic] + report.delivered[topic] == 200 == report.lost[topic] + delivered
    causes = ("_MSG_TIMED_OUT", "_PURGE_QUEUE", "_PURGE_INFLIGHT")
    counted = {c: obs.counter_value(obs.OUTPUT_LOST, topic=topic, cause=c) for c in causes}
    assert sum(counted.values()) == report.lost[topic]
    lost_lines = [r.getMessage() for r in caplog.records if "LOST" in r.getMessage()]
    # One line per cause, naming it: not one per record.
    assert sorted(c for c in causes if counted[c]) == sorted(
        c for c in causes if any(c in line for line in lost_lines)
    )
    assert len(lost_lines) == sum(1 for c in causes if counted[c])
    assert blocked_s < 60


def test_the_flow_loses_nothing_when_its_broker_stops_past_the_producer_timeout(
    own_broker: Broker,
) -> None:
    """The whole flow on a broker that goes away for 30 s mid-run, with the producer's
    message.timeout.ms at 3 s: every alert of an uninterrupted run is published, nothing is
    reported lost, and the run ends normally."""
    import sys

    suffix = uuid.uuid4().hex[:8]
    names = {k: f"outage.{suffix}.{k}" for k in ("metrics", "alerts", "dlq", "incidents")}
    create_topics(
        own_broker.bootstrap, {**dict.fromkeys(names.values()), f"{names['alerts']}.clean": None}
    )
    sim = FleetSimulator(
        FleetConfig(hosts=8, clusters=2, duration_s=6 * 3600, start_ms=NOW - 7 * 3_600_000,
                    seed=12, anomalies_per_host_per_hour=1.0)
    )  # fmt: skip
    produce(own_broker.bootstrap, names["metrics"], sim.timed_messages("json"))
    env = dict(
        os.environ,
        NOVACRON_KAFKA_BOOTSTRAP_SERVERS=own_broker.bootstrap,
        NOVACRON_KAFKA_PRODUCER_CONFIG='{"message.timeout.ms": "3000"}',
        NOVACRON_KAFKA_DELIVERY_TIMEOUT_S="120",
        NOVACRON_TOPICS_METRICS=names["metrics"],
        NOVACRON_TOPICS_DLQ=names["dlq"],
        NOVACRON_TOPICS_INCIDENTS=names["incidents"],
    )
    run = [sys.executable, "-m", "novacron_ml.cli", "run", "--once", "--no-recovery"]
    clean = subprocess.run(
        run, env=dict(env, NOVACRON_TOPICS_ALERTS=f"{names['alerts']}.clean"),
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert clean.returncode == 0, clean.stderr

    def ids(topic: str) -> set[bytes | None]:
        return {r.key for r in read_topic(own_broker.bootstrap, topic)}

    expected = ids(f"{names['alerts']}.clean")
    assert len(expected) >= 5
    flow = subprocess.Popen(
        run, env=dict(env, NOVACRON_TOPICS_ALERTS=names["alerts"]),
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    time.sleep(3)
    assert flow.poll() is None, "the run ended before the outage: nothing was tested"
    own_broker.stop()
    time.sleep(30)
    own_broker.start()
    _, err = flow.communicate(timeout=300)
    assert flow.returncode == 0, err
    assert "LOST" not in err
    assert ids(names["alerts"]) == expected
