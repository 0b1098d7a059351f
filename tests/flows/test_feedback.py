"""Operator feedback: parsed strictly, applied to the alert's series, end to end on Kafka."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import msgspec
import numpy as np
import pytest
from bytewax.testing import run_main

from dataflows.detect import kafka_flow
from novacron_ml.core import metrics as obs
from novacron_ml.core.deadletter import DeadLetter, Reason
from novacron_ml.core.kafka import ensure_topics, produce, read_topic
from novacron_ml.core.schema import Alert
from novacron_ml.core.settings import Settings
from novacron_ml.core.simulator import FleetConfig, FleetSimulator
from operators.detection.feedback import (
    MAX_SCALE,
    Feedback,
    Verdict,
    apply_feedback,
    parse_feedback,
)
from operators.detection.robust_z import RobustZConfig, RobustZDetector

FP = b'{"alert_id":"a1","verdict":"false_positive","series":"c1/h1/cpu_util","value":130.0}'


@pytest.mark.parametrize(
    ("payload", "ok"),
    [
        (FP, True),
        (b'{"alert_id":"a1","verdict":"true_positive","series":"c1/h1/cpu_util"}', True),
        (b'{"alert_id":"a1","verdict":"maybe","series":"c1/h1/cpu_util"}', False),
        (b'{"alert_id":"a1","verdict":"false_positive","series":"no-slashes"}', False),
        (b'{"alert_id":"a1"}', False),
        (b"not json", False),
    ],
)
def test_feedback_is_parsed_strictly(payload: bytes, ok: bool) -> None:
    got = parse_feedback(payload, b"k", "fb:0:1")
    if ok:
        assert isinstance(got, Feedback)
    else:
        assert isinstance(got, DeadLetter) and got.reason is Reason.BAD_FEEDBACK


def test_false_positives_stop_a_level_from_alerting_and_true_positives_restore() -> None:
    det = RobustZDetector(
        RobustZConfig(z_threshold=6.0, min_history=10, history_windows=60, relative_floor=0.0), 1
    )
    for v in np.random.default_rng(0).normal(100.0, 1.0, 60):
        det.observe(float(v))
    assert det.score(110.0).anomalous  # type: ignore[union-attr]
    fp = msgspec.json.decode(FP, type=Feedback)
    for _ in range(3):
        apply_feedback(det, msgspec.structs.replace(fp, value=110.0))
    assert det.threshold_scale == pytest.approx(1.25**3)
    assert not det.score(110.0).anomalous  # type: ignore[union-attr]
    for _ in range(20):
        apply_feedback(det, fp)
    assert det.threshold_scale == MAX_SCALE
    tp = msgspec.structs.replace(fp, verdict=Verdict.TRUE_POSITIVE)
    for _ in range(20):
        apply_feedback(det, tp)
    assert det.threshold_scale == 1.0


@pytest.mark.kafka
def test_feedback_topic_end_to_end(kafka_bootstrap: str, kafka_topics: dict[str, str]) -> None:
    feedback_topic = kafka_topics["metrics"] + ".feedback"
    ensure_topics(kafka_bootstrap, [feedback_topic])
    start = int(time.time() // 3600 * 3_600_000) - 3 * 3_600_000
    sim = FleetSimulator(
        FleetConfig(
            hosts=3, duration_s=2 * 3600, start_ms=start, seed=8, anomalies_per_host_per_hour=1.0
        )
    )
    produce(kafka_bootstrap, kafka_topics["metrics"], sim.timed_messages("json-array"))
    settings = Settings(
        kafka={"bootstrap_servers": kafka_bootstrap, "tail": False},
        topics={**kafka_topics, "feedback": feedback_topic},
    )
    run_main(kafka_flow(settings))
    alerts = [
        msgspec.json.decode(r.value, type=Alert)
        for r in read_topic(kafka_bootstrap, kafka_topics["alerts"])
    ]
    assert alerts
    # the operator's CLI looks the alert up and publishes the verdict
    env = dict(
        os.environ,
        NOVACRON_KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
        NOVACRON_TOPICS_ALERTS=kafka_topics["alerts"],
        NOVACRON_TOPICS_INCIDENTS=kafka_topics["incidents"],
        NOVACRON_TOPICS_FEEDBACK=feedback_topic,
    )
    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "novacron_ml.cli",
            "alerts",
            "feedback",
            alerts[0].alert_id,
            "--false-positive",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cli.returncode == 0, cli.stderr
    stray = b'{"alert_id":"x9","verdict":"false_positive","series":"c9/nohost/cpu_util"}'
    produce(kafka_bootstrap, feedback_topic, [(b"bad", b'{"verdict":"nope"}'), (b"x9", stray)])
    records = read_topic(kafka_bootstrap, feedback_topic)
    verdict = msgspec.json.decode(records[0].value, type=Feedback)
    assert verdict.alert_id == alerts[0].alert_id and verdict.verdict is Verdict.FALSE_POSITIVE
    assert verdict.series == f"{alerts[0].cluster}/{alerts[0].host}/{alerts[0].metric}"
    # a fresh run reads the verdicts (before the windows of their series): one applied when
    # its series arrives, one malformed, one for a series the input never has
    applied = obs.counter_value(obs.FEEDBACK, verdict="false_positive")
    dlq_before = len(read_topic(kafka_bootstrap, kafka_topics["dlq"]))
    run_main(kafka_flow(settings))
    assert obs.counter_value(obs.FEEDBACK, verdict="false_positive") - applied == 1
    dlq = read_topic(kafka_bootstrap, kafka_topics["dlq"])[dlq_before:]
    by_reason = {r.headers["novacron.reason"]: r for r in dlq}
    assert sorted(by_reason) == [b"bad_feedback", b"unknown_series"] and len(dlq) == 2
    assert by_reason[b"bad_feedback"].value == b'{"verdict":"nope"}'
    assert msgspec.json.decode(by_reason[b"unknown_series"].value, type=Feedback).alert_id == "x9"
