"""The detect flow in-process (Bytewax run_main): routing, late data, counts, and the demo."""

from __future__ import annotations

import time
from collections import Counter

import msgspec
import numpy as np
from bytewax.testing import run_main

from dataflows.detect import build_flow, feature_record
from novacron_ml import observability as obs
from novacron_ml.demo import run_demo, summary
from novacron_ml.malformed import MALFORMED, with_malformed
from novacron_ml.schema import Alert, WireEvent
from novacron_ml.settings import Settings
from novacron_ml.simulator import FleetConfig, FleetSimulator
from novacron_ml.sources import CallbackSink, MessageSource
from operators.cross import HOST_FEATURE_NAMES, HostWindow
from operators.deadletter import DeadLetter, Reason
from operators.features import FEATURE_NAMES, FeatureWindow

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
    for fmt in ("json", "json-array", "line"):
        out = run_flow(list(FleetSimulator(cfg).messages(fmt)))
        results[fmt] = sorted(a.alert_id for a in out if isinstance(a, Alert))
    assert results["json"], "the simulated anomalies should raise alerts"
    assert results["json"] == results["json-array"] == results["line"]


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
    assert result.dead_letters == result.injected_bad
    assert len(MALFORMED) >= 15
