"""End to end on the real Apache Kafka broker: simulator -> `metrics` -> detect flow -> topics.

The flow runs through `kafka_flow` (Bytewax's Kafka source and sink) in bounded mode
(`tail=False`), so each run stops at the end of the input topic.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import msgspec
import pytest
from bytewax.testing import run_main

from dataflows.detect import kafka_flow
from novacron_ml.app.evaluation import evaluate
from novacron_ml.app.malformed import MALFORMED
from novacron_ml.core import metrics as obs
from novacron_ml.core.features import FEATURE_NAMES
from novacron_ml.core.kafka import produce, read_topic
from novacron_ml.core.labels import read_labels
from novacron_ml.core.schema import Alert, Incident, WireEvent
from novacron_ml.core.settings import Settings
from novacron_ml.core.simulator import FleetConfig, FleetSimulator
from operators.ingest.parse import OVERSIZED_KEEP_BYTES

pytestmark = pytest.mark.kafka

NOW = int(time.time() // 60 * 60_000)
ALERT = msgspec.json.Decoder(Alert)


def settings_for(bootstrap: str, topics: dict[str, str]) -> Settings:
    return Settings(
        kafka={"bootstrap_servers": bootstrap, "tail": False},
        topics=topics,
    )


def run_flow(settings: Settings) -> None:
    run_main(kafka_flow(settings))


def test_alerts_match_labels_and_every_bad_message_reaches_the_dlq(
    kafka_bootstrap: str, kafka_topics: dict[str, str]
) -> None:
    sim = FleetSimulator(
        FleetConfig(
            hosts=6,
            clusters=2,
            duration_s=3 * 3600,
            step_s=10,
            start_ms=NOW - 4 * 3_600_000,
            seed=21,
            anomalies_per_host_per_hour=1.0,
        )
    )
    sim_msgs = list(sim.messages("json"))
    bad = [(b"bad-%d" % i, build(NOW)) for i, (_reason, build) in enumerate(MALFORMED)]
    # Late events: valid samples for existing series, 30 minutes behind the stream's end.
    late_ts = sim.start_ms + sim.n_ticks * sim.step_ms - 30 * 60_000
    late = [
        (b"late", msgspec.json.encode(WireEvent(late_ts + i, host, cluster, "cpu_util", 0.42)))
        for i, (cluster, host) in enumerate(sim.hosts)
    ]
    # Interleave the bad messages through the valid stream, late ones at the end.
    step = len(sim_msgs) // (len(bad) + 1)
    messages: list[tuple[bytes, bytes]] = []
    for i, bad_msg in enumerate(bad):
        messages.extend(sim_msgs[i * step : (i + 1) * step])
        messages.append(bad_msg)
    messages.extend(sim_msgs[len(bad) * step :])
    messages.extend(late)
    produce(kafka_bootstrap, kafka_topics["metrics"], messages)

    events_before = obs.counter_value(obs.EVENTS)
    windowed_before = obs.counter_value(obs.WINDOWED_EVENTS)
    windows_before = obs.counter_value(obs.WINDOWS)
    run_flow(settings_for(kafka_bootstrap, kafka_topics))
    n_windows = obs.counter_value(obs.WINDOWS) - windows_before
    parsed = obs.counter_value(obs.EVENTS) - events_before
    windowed = obs.counter_value(obs.WINDOWED_EVENTS) - windowed_before

    dlq = read_topic(kafka_bootstrap, kafka_topics["dlq"])
    by_reason = Counter(r.headers["novacron.reason"].decode() for r in dlq)
    late_dl = [r for r in dlq if r.headers["novacron.reason"] == b"late_event"]
    bad_dl = [r for r in dlq if r.headers["novacron.reason"] != b"late_event"]

    # every malformed message is in the DLQ, byte for byte (oversized ones truncated), with the
    # reason it must get
    expected = sorted((k, v[:OVERSIZED_KEEP_BYTES]) for k, v in bad)
    assert sorted((r.key, r.value) for r in bad_dl) == expected
    for r in bad_dl:
        index = int(r.key.split(b"-")[1])  # type: ignore[union-attr]
        assert r.headers["novacron.reason"].decode() == MALFORMED[index][0].value
        assert r.headers["novacron.source"].startswith(kafka_topics["metrics"].encode())
    assert by_reason["late_event"] == len(late)
    assert sorted(msgspec.json.decode(r.value)["ts"] for r in late_dl) == [
        late_ts + i for i in range(len(late))
    ]

    # counts add up: valid in = parsed = windowed + late; invalid in = DLQ
    assert parsed == sim.n_events + len(late)
    assert windowed + len(late_dl) == parsed
    assert len(bad_dl) == len(bad)

    # alerts: schema'd JSON keyed by alert_id, and they match the injected anomalies
    records = read_topic(kafka_bootstrap, kafka_topics["alerts"])
    alerts = [ALERT.decode(r.value) for r in records]
    assert all(r.key == a.alert_id.encode() for r, a in zip(records, alerts, strict=True))
    assert len({a.alert_id for a in alerts}) == len(alerts)
    ev = evaluate(alerts, sim.labels)
    assert ev.labels >= 7
    assert ev.recall >= 0.9, ev.missed
    assert ev.precision >= 0.9, ev.false_alerts[:5]
    assert ev.type_accuracy >= 0.9

    # incidents: keyed by incident_id; every decision alert names one of its host's
    records = read_topic(kafka_bootstrap, kafka_topics["incidents"])
    incidents = [msgspec.json.decode(r.value, type=Incident) for r in records]
    assert all(r.key == i.incident_id.encode() for r, i in zip(records, incidents, strict=True))
    hosts = {i.incident_id: i.host for i in incidents}
    decided = [a for a in alerts if a.episode_id is not None]
    assert decided and all(hosts.get(a.incident_id or "") == a.host for a in decided)
    assert {i.status for i in incidents} == {"open", "resolved"}

    # features: one record per closed series window, plus host cross features
    feats = [
        msgspec.json.decode(r.value) for r in read_topic(kafka_bootstrap, kafka_topics["features"])
    ]
    series_recs = [f for f in feats if f["kind"] == "series"]
    assert len(series_recs) == n_windows > 0
    assert all(list(f["features"]) == list(FEATURE_NAMES) for f in series_recs)
    assert sum(f["features"]["count"] for f in series_recs) == windowed
    assert {f["host"] for f in feats if f["kind"] == "host"} == {h for _, h in sim.hosts}


def test_same_input_gives_the_same_alert_ids_via_the_cli(
    kafka_bootstrap: str, kafka_topics: dict[str, str], tmp_path: Path
) -> None:
    env = dict(
        os.environ,
        NOVACRON_KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
        NOVACRON_TOPICS_METRICS=kafka_topics["metrics"],
        NOVACRON_TOPICS_ALERTS=kafka_topics["alerts"],
        NOVACRON_TOPICS_INCIDENTS=kafka_topics["incidents"],
        NOVACRON_TOPICS_DLQ=kafka_topics["dlq"],
        NOVACRON_RECOVERY_DIR=str(tmp_path / "recovery"),
    )
    labels = tmp_path / "labels.jsonl"
    cli = [sys.executable, "-m", "novacron_ml.cli"]
    start = str(NOW - 4 * 3_600_000)
    produced = subprocess.run(
        [
            *cli,
            "produce",
            "--hosts",
            "4",
            "--clusters",
            "2",
            "--hours",
            "3",
            "--step",
            "10",
            "--seed",
            "9",
            "--start",
            start,
            "--format",
            "line",
            "--anomaly-rate",
            "1",
            "--labels",
            str(labels),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert produced.returncode == 0, produced.stderr

    def alert_ids() -> list[str]:
        return sorted(
            ALERT.decode(r.value).alert_id
            for r in read_topic(kafka_bootstrap, kafka_topics["alerts"])
        )

    first = subprocess.run(
        [*cli, "run", "--once"], env=env, capture_output=True, text=True, timeout=300
    )
    assert first.returncode == 0, first.stderr
    ids_first = alert_ids()
    # The summary's count of written records is the broker's: every output was delivered.
    written = sum(
        len(read_topic(kafka_bootstrap, kafka_topics[t])) for t in ("alerts", "incidents", "dlq")
    )
    assert f" {written:,} records written in " in first.stderr, first.stderr
    # every host has its cpu_util: the load tier found its proxy and scored windows
    assert re.search(r"load tier scored [1-9][\d,]* of [\d,]+ fitted windows", first.stderr)
    assert "no_proxy" not in first.stderr
    resumed = subprocess.run(
        [*cli, "run", "--once"], env=env, capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming where it stopped" in resumed.stderr
    assert alert_ids() == ids_first  # recovery on by default: nothing re-published
    again = subprocess.run(
        [*cli, "run", "--once", "--from-beginning"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 0, again.stderr
    ids_both = alert_ids()

    assert ids_first, "the injected anomalies should raise alerts"
    assert ids_both == sorted(ids_first * 2)  # the replay re-published exactly the same ids
    label_list = read_labels(str(labels))
    assert len(label_list) >= 4
    ev = evaluate(
        [ALERT.decode(r.value) for r in read_topic(kafka_bootstrap, kafka_topics["alerts"])],
        label_list,
    )
    assert ev.recall >= 0.9


def test_telegrafs_default_output_through_the_broker_leaves_no_dead_letter(
    kafka_bootstrap: str, kafka_topics: dict[str, str]
) -> None:
    """Every fixture line of every Telegraf input plugin, one line per Kafka message as
    Telegraf's Kafka output sends them, restamped to now (the flow's wall-clock bounds)."""
    fixtures = Path(__file__).resolve().parents[1] / "fixtures" / "telegraf"
    now_ns = NOW * 1_000_000
    messages = []
    for path in sorted(fixtures.glob("*.lp")):
        for line in path.read_bytes().splitlines():
            head, _, _ts = line.rpartition(b" ")
            messages.append((b"web01", head + b" %d\n" % now_ns))
    produce(kafka_bootstrap, kafka_topics["metrics"], messages)
    events_before = obs.counter_value(obs.EVENTS)
    run_flow(settings_for(kafka_bootstrap, kafka_topics))
    assert read_topic(kafka_bootstrap, kafka_topics["dlq"], timeout_s=5) == []
    assert obs.counter_value(obs.EVENTS) - events_before > 150  # the numeric fields, as events
    assert obs.counter_value(obs.FIELDS_SKIPPED, reason="string_field") > 0
