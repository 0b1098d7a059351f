"""Training series from a Kafka replay, on the real broker: the same window means the flow's
simulator series have, bad records counted and skipped, the range respected, forecast-train
end to end."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from novacron_ml.core.kafka import ReplayError, produce
from novacron_ml.core.schema import rfc3339_ms
from novacron_ml.core.simulator import FleetConfig, FleetSimulator
from training.kafka_dataset import kafka_series

pytestmark = pytest.mark.kafka
HOUR = 3_600_000


def _fleet(start_ms: int) -> FleetConfig:
    # exactly what training.features.simulator_series builds for 2 hosts, 1.5 h, seed 5
    return FleetConfig(
        hosts=2, clusters=2, step_s=5.0, duration_s=1.5 * 3600, seed=5,
        anomalies_per_host_per_hour=0.0, start_ms=start_ms,
    )  # fmt: skip


@pytest.fixture
def replayed(kafka_bootstrap: str, kafka_topics: dict[str, str]) -> tuple[str, int]:
    """1.5 h of 2 simulated hosts on the metrics topic, with two bad records in the middle."""
    start = int(time.time() // 3600 * HOUR) - 3 * HOUR
    topic = kafka_topics["metrics"]
    produce(kafka_bootstrap, topic, FleetSimulator(_fleet(start)).timed_messages("json"))
    bad = [
        (b"x", b"not json at all", start + HOUR // 2),
        (b"x", b'{"ts": 1, "host": "h", "cluster": "c", "metric": "m", "value": "NaN!"}',
         start + HOUR // 2),
    ]  # fmt: skip
    produce(kafka_bootstrap, topic, bad)
    return topic, start


def test_replay_gives_the_flows_window_means_and_counts_bad_records(
    kafka_bootstrap: str, replayed: tuple[str, int]
) -> None:
    pytest.importorskip("pandas")  # training series (series_io) are pandas-backed
    from training.features import simulator_series

    topic, start = replayed
    data = kafka_series(kafka_bootstrap, topic, start, start + 2 * HOUR, 60.0)
    expected = simulator_series(1.5, 2, 5, 60.0, rfc3339_ms(start))
    assert data.records == 2 * 10 * 1080 + 2 and data.events == 2 * 10 * 1080
    assert sum(data.dead_letters.values()) == 2 and data.outside_range == 0
    assert [s.name for s in data.series] == sorted(s.name for s in expected)
    by_name = {s.name: s for s in expected}
    for got in data.series:
        want = by_name[got.name]
        np.testing.assert_array_equal(got.t_s, want.t_s)
        np.testing.assert_allclose(got.values, want.values, rtol=1e-12)
        assert got.step_s == 60.0 and got.absolute_time and not got.warnings
    assert "2 bad records skipped" in data.line()


def test_replay_reads_only_the_range(kafka_bootstrap: str, replayed: tuple[str, int]) -> None:
    topic, start = replayed
    t1, t2 = start + HOUR // 2, start + HOUR - 1  # windows 30..59 of the data
    data = kafka_series(kafka_bootstrap, topic, t1, t2, 60.0)
    assert len(data.series) == 20
    for s in data.series:
        assert len(s) == 30 and s.t_s[0] == t1 / 1000 and s.t_s[-1] == (t2 + 1) / 1000 - 60
    # 30 minutes of 5 s samples per series (records are selected by Kafka timestamp)
    assert data.events == 20 * 360
    with pytest.raises(ReplayError, match="does not exist"):
        kafka_series(kafka_bootstrap, "no.such.topic.here", t1, t2, 60.0)
    with pytest.raises(ReplayError, match="is after"):
        kafka_series(kafka_bootstrap, topic, t2, t1, 60.0)


def test_forecast_train_from_a_kafka_replay(
    kafka_bootstrap: str,
    replayed: tuple[str, int],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pytest.importorskip("torch")
    from novacron_ml.cli import main
    from novacron_ml.core.manifest import read_manifest
    from operators.forecast.model import OnnxForecaster

    topic, start = replayed
    monkeypatch.setenv("NOVACRON_KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    args = [
        "forecast-train", "--out", str(tmp_path), "--name", "replayed", "--sim-hours", "0",
        "--kafka-topic", topic, "--from", str(start), "--to", str(start + 2 * HOUR),
        "--input-len", "16", "--horizon", "4", "--hidden", "8", "--layers", "1",
        "--epochs", "1",
    ]  # fmt: skip
    assert main(args) == 0
    m = read_manifest(tmp_path / "replayed" / "1" / "manifest.json")
    kafka = m.training_data["kafka"]
    assert kafka["topic"] == topic and kafka["series"] == 20 and kafka["records"] == 21_602
    # neither JSON nor line protocol; a string where the value is a number
    assert kafka["dead_letters"] == {"bad_line_protocol": 1, "wrong_type": 1}
    assert m.training_data["simulator"] is None and m.training_data["series"] == 20
    assert OnnxForecaster(tmp_path / "replayed" / "1" / "manifest.json").horizon == 4
    assert "21,602 records" in capsys.readouterr().err
    # a missing topic is one line and exit 2, not a traceback
    assert main([*args[:7], "--kafka-topic", "no.such.topic", "--from", str(start)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    want = f"topic 'no.such.topic' does not exist on {kafka_bootstrap}"
    assert err[-1] == f"novacron-ml forecast-train: {want}"


def test_iforest_train_on_the_features_topic_the_flow_wrote(
    kafka_bootstrap: str,
    kafka_topics: dict[str, str],
    replayed: tuple[str, int],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The detect flow publishes its windows' feature vectors; iforest-train --kafka-topic
    learns the forests from exactly those (the fleet's own data, issue 22 item 5)."""
    pytest.importorskip("sklearn")
    import json
    import os
    import subprocess
    import sys

    from novacron_ml.cli import main
    from novacron_ml.core import registry
    from novacron_ml.core.features import FEATURE_VERSION
    from novacron_ml.core.manifest import read_manifest
    from operators.detection.iforest import OnnxIsolationForest
    from operators.features.scale_free import iforest_inputs
    from training.kafka_dataset import kafka_feature_windows

    topic, start = replayed
    features = kafka_topics["features"]
    env = dict(
        os.environ,
        NOVACRON_KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
        NOVACRON_TOPICS_METRICS=topic,
        NOVACRON_TOPICS_ALERTS=kafka_topics["alerts"],
        NOVACRON_TOPICS_DLQ=kafka_topics["dlq"],
        NOVACRON_TOPICS_FEATURES=features,
        NOVACRON_INGEST_MAX_EVENT_AGE_S="0",
        NOVACRON_RECOVERY_ENABLED="false",
    )
    run = subprocess.run(
        [sys.executable, "-m", "novacron_ml.cli", "run", "--once"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    junk = [
        (b"k", b"{not json"),
        (b"k", json.dumps({"kind": "series", "feature_version": FEATURE_VERSION + 1}).encode()),
    ]
    produce(kafka_bootstrap, features, junk)
    # the flow's records carry the time they were written (now), their windows event time
    now = int(time.time() * 1000)
    data = kafka_feature_windows(kafka_bootstrap, features, start, now)
    # every closed window of the 20 series (90 one-minute windows each, the last few may be
    # flushed at end of input), host records and the junk counted, not used
    assert len({w.series for w in data.windows}) == 20
    assert 20 * 85 <= len(data.windows) <= 20 * 90
    assert data.skipped["bad_json"] == 1 and data.skipped["feature_version"] == 1
    assert data.skipped["host"] > 0
    monkeypatch.setenv("NOVACRON_KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    out = tmp_path / "registry"
    args = [
        "iforest-train", "--out", str(out), "--kafka-topic", features, "--from", str(start),
        "--estimators", "10", "--eval-hours", "0.5", "--sim-hosts", "2", "--quiet",
    ]  # fmt: skip
    assert main(args) == 0
    folder = out / "iforest_generic"
    manifest = read_manifest(registry.version_manifest(folder, "1"))
    kafka = manifest.training_data["kafka"]
    assert kafka["topic"] == features and kafka["windows"] == len(data.windows)
    assert manifest.training_data["windows"] == len(data.windows)
    assert "--kafka-topic" in manifest.command  # train all reruns it on the topic
    # the drift reference is the fleet's own distribution: the training windows sit on it
    x = iforest_inputs(np.stack([w.features for w in data.windows]))
    assert manifest.reference is not None
    forest = OnnxIsolationForest(registry.version_manifest(folder, "1"))
    assert forest.raw_scores(x).shape == (len(data.windows),)
    # fewer than 100 windows of a family: left out, said so; an empty range is one line
    capsys.readouterr()
    assert main([*args, "--to", str(start + 4 * 60_000)]) != 0
    assert "fewer than 100" in capsys.readouterr().err


def test_a_range_cut_by_retention_is_noted(kafka_bootstrap: str, replayed: tuple[str, int]) -> None:
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import AdminClient

    topic, start = replayed
    whole = kafka_series(kafka_bootstrap, topic, start, start + 2 * HOUR, 60.0)
    assert not any("were deleted" in note for note in whole.notes)
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    for future in admin.delete_records([TopicPartition(topic, 0, 100)]).values():
        future.result(timeout=30)  # as the topic's retention would
    cut = kafka_series(kafka_bootstrap, topic, start, start + 2 * HOUR, 60.0)
    assert cut.records == whole.records - 100
    assert cut.notes[0].startswith("partition 0: its records before offset 100 were deleted")
