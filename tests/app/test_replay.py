"""Replay on the real broker: exactly the requested hour is processed and reported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import pytest

from novacron_ml.core.kafka import produce, read_topic
from novacron_ml.core.labels import write_labels
from novacron_ml.core.schema import Alert, parse_rfc3339_ms, rfc3339_ms
from novacron_ml.core.simulator import FleetConfig, FleetSimulator

pytestmark = pytest.mark.kafka
CLI = [sys.executable, "-m", "novacron_ml.cli"]
HOUR = 3_600_000


def replay(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "replay", *args], env=env, capture_output=True, text=True, timeout=300
    )


def test_replay_processes_exactly_the_middle_hour_and_scores_it(
    kafka_bootstrap: str, kafka_topics: dict[str, str], tmp_path: Path
) -> None:
    start = int(time.time() // 3600 * HOUR) - 4 * HOUR
    sim = FleetSimulator(
        FleetConfig(
            hosts=4,
            clusters=2,
            duration_s=2 * 3600,
            start_ms=start,
            seed=13,
            anomalies_per_host_per_hour=2.0,
            warmup_s=1800,
        )
    )
    produce(kafka_bootstrap, kafka_topics["metrics"], sim.timed_messages("json"))
    labels = tmp_path / "labels.jsonl"
    write_labels(sim.labels, str(labels))
    env = dict(os.environ, NOVACRON_KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap)
    t1, t2 = start + HOUR // 2, start + 3 * HOUR // 2 - 1
    out, figures, plots = tmp_path / "alerts.jsonl", tmp_path / "report.json", tmp_path / "r.html"
    result = replay(
        env,
        "--topic",
        kafka_topics["metrics"],
        "--from",
        str(t1),
        "--to",
        str(t2),
        "--labels",
        str(labels),
        "--out",
        str(out),
        "--json",
        str(figures),
        "--plots",
        str(plots),
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(figures.read_text())
    # exactly the hour: 4 hosts x 10 metrics x 720 samples, each stamped with its event time
    in_range = sum(1 for e in sim.events() if t1 <= e.ts_ms <= t2)
    assert report["messages"] == report["events"] == in_range == 4 * 10 * 720
    alerts = [msgspec.json.decode(line, type=Alert) for line in out.read_bytes().splitlines()]
    assert alerts, "anomalies in the hour should alert"
    assert all(t1 <= parse_rfc3339_ms(a.window_start) < t2 for a in alerts)
    # the report's figures against the labels, recomputed here
    scoped = [lb for lb in sim.labels if lb.start_ms <= t2 and lb.end_ms >= t1]
    hit = [
        lb
        for lb in scoped
        if any(
            a.host == lb.host
            and parse_rfc3339_ms(a.window_start) < lb.end_ms
            and lb.start_ms < parse_rfc3339_ms(a.window_end)
            for a in alerts
        )
    ]
    assert report["labels_in_range"] == len(scoped) >= 2
    assert report["detected"] == len(hit)
    assert report["recall"] == pytest.approx(len(hit) / len(scoped))
    assert "precision" in result.stdout and "detection delay" in result.stdout
    assert set(report["nab"]) == {"standard", "reward_low_FP_rate", "reward_low_FN_rate"}
    assert all(0 <= v <= 100 for v in report["nab"].values())
    # the alerts' own NAB (what users get) is positive when they found the anomalies; it
    # printed 0.0 beside recall 1.000 when it scored the probability, which decides nothing
    assert report["nab"]["standard"] > 0 and "NAB score of the alerts" in result.stdout
    assert set(report["nab_probability"]) == set(report["nab"])
    published = replay(
        env,
        "--topic",
        kafka_topics["metrics"],
        "--from",
        str(t1),
        "--to",
        str(t2),
        "--out-topic",
        kafka_topics["alerts"],
    )
    assert published.returncode == 0, published.stderr
    records = read_topic(kafka_bootstrap, kafka_topics["alerts"])
    assert sorted(r.key for r in records) == sorted(a.alert_id.encode() for a in alerts)
    page = plots.read_text()
    alerted = {f"{a.cluster}/{a.host}/{a.metric}" for a in alerts}
    assert all(series in page for series in alerted)
    assert page.count("<svg") >= len(alerted) and page.count("<circle") == len(alerts)


def test_replay_refuses_bad_requests_with_one_line(
    kafka_bootstrap: str, kafka_topics: dict[str, str]
) -> None:
    env = dict(os.environ, NOVACRON_KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap)
    missing = replay(env, "--topic", "no.such.topic", "--from", "now-1h", "--to", "now")
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    inverted = replay(env, "--topic", kafka_topics["metrics"], "--from", "now", "--to", "now-1h")
    assert inverted.returncode == 2 and "is after" in inverted.stderr
    empty = replay(env, "--topic", kafka_topics["metrics"], "--from", "now-2h", "--to", "now-1h")
    assert empty.returncode == 0 and "no records in this range" in empty.stdout


def test_replay_says_when_retention_deleted_the_start_of_its_range(
    kafka_bootstrap: str, kafka_topics: dict[str, str]
) -> None:
    """Kafka's offsets_for_times answers with the oldest kept record when older ones were
    deleted, so a range that began before them would be replayed short without a word."""
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import AdminClient

    topic = kafka_topics["metrics"]
    start = int(time.time() // 3600 * HOUR) - 2 * HOUR
    event = '{{"ts": {}, "host": "h1", "cluster": "c", "metric": "cpu_util", "value": 0.5}}'
    stamps = [start + i * 60_000 for i in range(40)]
    produce(kafka_bootstrap, topic, [(b"h1", event.format(t).encode(), t) for t in stamps])
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    for future in admin.delete_records([TopicPartition(topic, 0, 10)]).values():
        future.result(timeout=30)  # as retention would: the first 10 records are gone
    env = dict(os.environ, NOVACRON_KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap)
    cut = replay(env, "--topic", topic, "--from", str(start), "--to", str(start + HOUR))
    assert cut.returncode == 0, cut.stderr
    assert (
        f"partition 0: its records before offset 10 were deleted (the topic's retention), so "
        f"the replay starts at the oldest one kept, stamped {rfc3339_ms(stamps[10])}"
    ) in cut.stderr
    assert "up to 30 records" in cut.stderr
    later = replay(env, "--topic", topic, "--from", str(stamps[20]), "--to", str(start + HOUR))
    assert later.returncode == 0 and "were deleted" not in later.stderr, later.stderr
