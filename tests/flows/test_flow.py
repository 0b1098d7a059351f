"""The detect flow in-process (Bytewax run_main): routing, late data, counts, and the demo."""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import numpy as np
from bytewax.connectors.kafka import KafkaSourceMessage
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.testing import run_main

from dataflows.detect import build_flow
from dataflows.encode import feature_record
from dataflows.io import CallbackSink, MessageSource
from novacron_ml.app.demo import false_positive_windows, run_demo, summary
from novacron_ml.app.malformed import MALFORMED, with_malformed
from novacron_ml.core import metrics as obs
from novacron_ml.core.deadletter import DeadLetter, Reason
from novacron_ml.core.features import FEATURE_NAMES, FeatureWindow, SeriesEvicted
from novacron_ml.core.schema import Alert, Incident, MetricEvent, WireEvent
from novacron_ml.core.settings import DetectorSettings, Settings
from novacron_ml.core.simulator import FleetConfig, FleetSimulator
from operators.features.cross import HOST_FEATURE_NAMES, HostWindow

NOW = int(time.time() // 60 * 60_000)


def run_flow(messages: list[tuple[bytes, bytes]], settings: Settings | None = None) -> list[object]:
    out: list[object] = []
    flow = build_flow(
        settings or Settings(),
        MessageSource(lambda: iter(messages), 500),
        CallbackSink(out.extend),
        kafka_output=False,
    )
    run_main(flow)
    return out


def event(ts: int, value: float, metric: str = "cpu_util", host: str = "h1") -> tuple[bytes, bytes]:
    return b"k", msgspec.json.encode(WireEvent(ts, host, "c1", metric, value))


def test_late_event_goes_to_dead_letters_with_its_content() -> None:
    start = NOW - 3_600_000
    msgs = [event(start + i * 5000, 0.5) for i in range(240)]  # 20 minutes
    late_ts = start + 5 * 60_000 + 1234
    msgs.append(event(late_ts, 0.9))
    msgs += [event(start + 240 * 5000 + i * 5000, 0.5) for i in range(12)]
    out = run_flow(msgs)
    dead = [o for o in out if isinstance(o, DeadLetter)]
    assert [d.reason for d in dead] == [Reason.LATE_EVENT]
    assert msgspec.json.decode(dead[0].payload)["ts"] == late_ts
    assert dead[0].key == b"c1/h1/cpu_util"


def test_counts_add_up_and_every_bad_message_is_accounted_for() -> None:
    sim = FleetSimulator(
        FleetConfig(
            hosts=3,
            clusters=1,
            duration_s=2 * 3600,
            step_s=10,
            start_ms=NOW - 3 * 3_600_000,
            seed=3,
        )
    )
    injected: Counter[str] = Counter()
    msgs = list(
        with_malformed(
            sim.messages("json-array"),
            0.02,
            3,
            lambda: NOW,
            lambda r, _p: injected.update([r.value]),
        )
    )
    before = (obs.counter_value(obs.EVENTS), obs.counter_value(obs.WINDOWED_EVENTS))
    out = run_flow(msgs)
    parsed = obs.counter_value(obs.EVENTS) - before[0]
    windowed = obs.counter_value(obs.WINDOWED_EVENTS) - before[1]
    dead = Counter(o.reason.value for o in out if isinstance(o, DeadLetter))
    assert sum(injected.values()) > 10
    assert parsed == sim.n_events
    assert dead == injected
    assert windowed == parsed  # nothing late in an ordered stream


def test_all_three_formats_give_the_same_alerts() -> None:
    cfg = FleetConfig(
        hosts=4, clusters=2, duration_s=3 * 3600, step_s=10, start_ms=NOW - 4 * 3_600_000, seed=11
    )
    results = {}
    alerts: list[Alert] = []
    every_tier = Settings().model_copy(
        update={
            "detector": DetectorSettings(river=True, iforest_models="models/onnx"),
        }
    )
    for fmt in ("json", "json-array", "line"):
        out = run_flow(list(FleetSimulator(cfg).messages(fmt)), every_tier)
        alerts = [a for a in out if isinstance(a, Alert) and a.detector in {"robust_z", "novelty"}]
        incidents = [o for o in out if isinstance(o, Incident)]
        results[fmt] = sorted(a.alert_id for a in out if isinstance(a, Alert))
    assert results["json"], "the simulated anomalies should raise alerts"
    assert results["json"] == results["json-array"] == results["line"]
    # every tier (River and the forest switched on) reached the alert: the ONNX Isolation
    # Forest scored in the feature stage's micro-batches, the others in the per-series step
    tiers = {"robust_z", "iforest", "river", "spread"}
    assert alerts and all(a.tiers and tiers <= set(a.tiers) for a in alerts)
    assert any(a.tiers and "novelty" in a.tiers for a in alerts)
    assert all(a.explanation and 0 <= (a.probability or 0) <= 1 for a in alerts)
    # the decision's alerts are grouped per host: each in one of the incidents published
    by_id = {i.incident_id: i for i in incidents}
    assert all(a.incident_id in by_id and by_id[a.incident_id].host == a.host for a in alerts)
    assert all(i.probable_cause == i.causes[0].metric for i in incidents)
    # each decision alert dates its deviation, never after its own window; the incident's
    # causes keep both dates
    assert all(a.onset and a.onset <= a.window_start for a in alerts)
    assert all(c.first_alert and c.onset <= c.first_alert for i in incidents for c in i.causes)


def test_sliding_windows_score_each_event_in_every_window_it_falls_in() -> None:
    start = NOW - 3_600_000
    msgs = [event(start + i * 5000, 0.5) for i in range(120)]
    before = obs.counter_value(obs.WINDOWED_EVENTS)
    run_flow(msgs, Settings(window={"length_s": 60, "slide_s": 30}))
    assert obs.counter_value(obs.WINDOWED_EVENTS) - before == 2 * 120


def test_features_and_host_cross_features_are_published_when_enabled() -> None:
    cfg = FleetConfig(
        hosts=2, clusters=1, duration_s=1800, step_s=5, start_ms=NOW - 3_600_000, seed=2
    )
    sim = FleetSimulator(cfg)
    out = run_flow(list(sim.messages("json-array")), Settings(topics={"features": "feat"}))
    windows = [o for o in out if isinstance(o, FeatureWindow)]
    hosts = [o for o in out if isinstance(o, HostWindow)]
    assert len(windows) == 2 * 10 * 30  # 30 one-minute windows per series
    assert len(hosts) == 2 * 30
    assert all(np.isfinite(w.features).all() and w["count"] == 12 for w in windows)
    assert all(set(h.features) == set(HOST_FEATURE_NAMES) for h in hosts)
    record = feature_record(windows[0])
    assert list(record["features"]) == list(FEATURE_NAMES)
    off = run_flow(list(sim.messages("json-array")))
    assert not any(isinstance(o, (FeatureWindow, HostWindow)) for o in off)


def test_demo_detects_the_injected_anomalies() -> None:
    fleet = FleetConfig(hosts=6, clusters=2, duration_s=4 * 3600, step_s=10, seed=5)
    result = run_demo(Settings(), fleet, bad_rate=0.005, quiet=True)
    ev = result.evaluation
    assert result.events == FleetSimulator(fleet).n_events
    assert ev.labels >= 7
    assert ev.precision >= 0.9 and ev.recall >= 0.9, summary(result)
    assert false_positive_windows(result) <= 0.01 * result.windows  # the FP-rate bound
    assert result.dead_letters == result.injected_bad
    assert len(MALFORMED) >= 15


def test_a_demo_at_a_fixed_past_start_keeps_its_events() -> None:
    # a reproducible figure (`--start`) must not age out: twelve days back is past the
    # seven-day `ingest.max_event_age_s`, which the demo measures on its simulated clock
    fleet = FleetConfig(
        hosts=2, clusters=1, duration_s=1800, seed=3, start_ms=NOW - 12 * 86_400_000
    )
    result = run_demo(Settings(), fleet, bad_rate=0.2, quiet=True)
    assert result.events == FleetSimulator(fleet).n_events
    assert result.injected_bad[Reason.TS_PAST.value] > 0
    assert result.dead_letters == result.injected_bad  # the too-old injected ones still caught


class _PausingPartition(StatefulSourcePartition[object, int]):
    """Yields its batches with a pause in system time between them."""

    def __init__(self, batches: list[list[object]], pause_s: float) -> None:
        self._batches = batches
        self._pause = timedelta(seconds=pause_s)
        self._i = 0
        self._awake: datetime | None = None

    def next_batch(self) -> list[object]:
        if self._i >= len(self._batches):
            raise StopIteration
        batch = self._batches[self._i]
        self._i += 1
        self._awake = datetime.now(UTC) + self._pause
        return batch

    def next_awake(self) -> datetime | None:
        return self._awake

    def snapshot(self) -> int:
        return self._i


class _PausingSource(FixedPartitionedSource[object, int]):
    def __init__(self, batches: list[list[object]], pause_s: float) -> None:
        self._batches, self._pause = batches, pause_s

    def list_parts(self) -> list[str]:
        return ["0"]

    def build_part(
        self, step_id: str, for_part: str, resume_state: int | None
    ) -> _PausingPartition:
        return _PausingPartition(self._batches, self._pause)


def test_idle_series_is_closed_by_system_time_evicted_and_never_reopened() -> None:
    """The Bytewax 0.21 case, through Bytewax: all of a series' windows close, its state goes,
    then a late event arrives. It must be dead-lettered, not re-open and re-emit a window."""
    start = NOW - 3_600_000

    def msg(ts: int, value: float) -> KafkaSourceMessage[bytes, bytes]:
        return KafkaSourceMessage(
            b"k", msgspec.json.encode(WireEvent(ts, "h1", "c1", "cpu_util", value))
        )

    first = [msg(start + i * 5000, 0.5) for i in range(30)]  # 0..145 s: windows 0, 1 close, 2 open
    late = [msg(start + 1000, 0.9)]  # window 0, long emitted
    settings = Settings(features={"idle_ttl_s": 1.0}, topics={"features": "f"})
    out: list[object] = []
    evicted_before = obs.counter_value(obs.SERIES_EVICTED)
    source = _PausingSource([first, late], pause_s=3.0)
    run_main(build_flow(settings, source, CallbackSink(out.extend), kafka_output=False))
    assert obs.counter_value(obs.SERIES_EVICTED) - evicted_before == 1  # state really went
    windows = [o.start_ms - start for o in out if isinstance(o, FeatureWindow)]
    assert windows == [0, 60_000, 120_000]  # each once: window 0 was not re-opened
    dead = [o for o in out if isinstance(o, DeadLetter)]
    assert [d.reason for d in dead] == [Reason.LATE_EVENT]
    assert msgspec.json.decode(dead[0].payload)["value"] == 0.9


def test_dead_letters_too_large_for_kafka_are_cut_and_say_so() -> None:
    from dataflows.encode import DLQ_MAX_PAYLOAD_BYTES, to_kafka_message

    encode = to_kafka_message(Settings().topics)
    big = DeadLetter(Reason.BAD_JSON, "x", b"{" + b"a" * 1_000_000, b"k", "metrics:0:1")
    msg = encode(big)
    assert msg.topic == "metrics.dlq" and len(msg.value) == DLQ_MAX_PAYLOAD_BYTES
    assert dict(msg.headers)["novacron.truncated_from"] == b"1000001"
    small = encode(DeadLetter(Reason.BAD_JSON, "x", b"{oops", None))
    assert small.value == b"{oops" and "novacron.truncated_from" not in dict(small.headers)


def test_an_evicted_series_closes_its_open_episode_and_drops_its_detector_state() -> None:
    """A series that stops reporting mid-anomaly: when the feature stage evicts it, the detect
    step ends its episode with a `resolved` record and its per-series state goes too."""
    start = NOW - 3_600_000

    def msg(ts: int, value: float) -> KafkaSourceMessage[bytes, bytes]:
        return KafkaSourceMessage(
            b"k", msgspec.json.encode(WireEvent(ts, "h1", "c1", "cpu_util", value))
        )

    rng = np.random.default_rng(0)
    normal = [msg(start + i * 5000, 0.5 + rng.normal(0, 0.005)) for i in range(12 * 20)]
    spike = [msg(start + (12 * 20 + i) * 5000, 0.99) for i in range(24)]  # then silence
    settings = Settings(features={"idle_ttl_s": 1.0})
    out: list[object] = []
    source = _PausingSource([normal + spike], pause_s=3.0)
    run_main(build_flow(settings, source, CallbackSink(out.extend), kafka_output=False))
    alerts = [o for o in out if isinstance(o, Alert)]
    firing = [a for a in alerts if a.status != "resolved"]
    resolved = [a for a in alerts if a.status == "resolved"]
    assert firing and {a.episode_id for a in firing} == {firing[0].episode_id}
    # no window came after the spike: only the eviction can have ended the episode
    assert [a.episode_id for a in resolved] == [firing[0].episode_id]
    assert resolved[0].ends_at == firing[-1].window_end


def test_an_evicted_series_leaves_the_forecaster_too() -> None:
    """Eviction drops every per-series state together: the forecaster's history of the series
    goes in the same step as the feature engine's (and the detect step's, above)."""
    from dataflows.config import resolve
    from dataflows.steps import make_feature_builder

    settings = Settings(features={"idle_ttl_s": 1.0}, forecast={"enabled": True})
    logic = make_feature_builder(resolve(settings))(None)
    forecaster = logic.state.forecaster
    assert forecaster is not None
    now = int(time.time() * 1000)
    events = [
        MetricEvent(now - 600_000 + i * 5000, "h1", "c1", "cpu_util", 0.5) for i in range(100)
    ]
    logic.on_batch([events])
    logic.on_notify()
    assert "c1/h1/cpu_util" in forecaster.series  # closed windows reached the forecaster
    time.sleep(1.5)
    out, _ = logic.on_notify()
    assert any(isinstance(o, SeriesEvicted) and o.series == "c1/h1/cpu_util" for o in out)
    assert "c1/h1/cpu_util" not in forecaster.series


def test_the_parse_step_records_each_partitions_position_for_the_lag_gauges() -> None:
    from dataflows.steps import record_positions
    from novacron_ml.core.kafka import CONSUMED

    def m(partition: int, offset: int) -> KafkaSourceMessage[bytes, bytes]:
        return KafkaSourceMessage(
            b"k", b"{}", topic="lag.t", partition=partition, offset=offset, timestamp=(1, 7)
        )

    record_positions([m(0, 5), m(0, 6), m(0, 9)])  # one partition: its last message
    assert CONSUMED[("lag.t", 0)] == (9, 7)
    record_positions([m(1, 3), m(2, 40), m(1, 4)])  # mixed: walked, the last of each
    assert CONSUMED[("lag.t", 1)] == (4, 7) and CONSUMED[("lag.t", 2)] == (40, 7)
    from dataflows.io import MessageBatch  # what the flow's sources yield: its last offset

    record_positions([MessageBatch("lag.t", 3, [None] * 3, [b"{}"] * 3, [10, 11, 15], (1, 8))])
    assert CONSUMED[("lag.t", 3)] == (15, 8)


def test_a_run_without_recovery_state_skips_the_snapshots_and_decides_the_same(
    monkeypatch: Any,
) -> None:
    """Bytewax asks every touched key for a snapshot at each epoch's end, recovery or not:
    a run without recovery state returns none (3–6 % of a 10,000-series run), a
    run with it still gets real ones, and the outputs are the same either way."""
    from dataflows import steps
    from dataflows.inprocess import run_in_process

    taken: list[object] = []
    for logic in (steps.FeatureLogic, steps.DetectLogic):

        def spy(self: Any, keep: Any = logic.snapshot) -> object:
            taken.append(snap := keep(self))
            return snap

        monkeypatch.setattr(logic, "snapshot", spy)
    sim = FleetSimulator(FleetConfig(hosts=3, duration_s=3 * 3600, start_ms=NOW - 4 * 3_600_000))
    messages = list(sim.messages("json"))
    runs = {}
    for snapshots in (False, True):
        taken.clear()
        out = run_in_process(
            Settings(), MessageSource(lambda: iter(messages), 500), snapshots=snapshots
        )
        runs[snapshots] = [(a.alert_id, a.status, a.probability) for a in out.alerts]
        assert taken and all((snap is not None) is snapshots for snap in taken)
    assert runs[False] and runs[False] == runs[True]
