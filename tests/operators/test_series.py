"""The per-series step: alerts with deterministic ids, and the re-scored window guard."""

from __future__ import annotations

import msgspec
import numpy as np

from novacron_ml.core.deadletter import DeadLetter, Reason
from novacron_ml.core.features import FEATURE_INDEX, N_FEATURES, FeatureWindow
from novacron_ml.core.schema import Alert, alert_id_for, parse_rfc3339_ms
from operators.detection.robust_z import RobustZConfig
from operators.detection.series import detect_window, new_series_state

# the scale floored at 1 % of the level and not widened: scale 1 below, deviations in percent
CFG = RobustZConfig(min_history=5, history_windows=20, relative_floor=0.01, warmup=False)
SERIES = "c1/h1/latency_p99_ms"


def window(i: int, mean: float) -> FeatureWindow:
    f = np.zeros(N_FEATURES)
    f[FEATURE_INDEX["mean"]] = mean
    f[FEATURE_INDEX["count"]] = 12
    return FeatureWindow(SERIES, i * 60_000, (i + 1) * 60_000, f)


def run(values: list[float]) -> list[Alert | DeadLetter | None]:
    state = new_series_state(SERIES, CFG)
    return [detect_window(state, window(i, v)) for i, v in enumerate(values)]


def test_spike_alert_is_typed_and_bounded() -> None:
    out = run([100.0] * 10 + [400.0])
    alert = out[-1]
    assert isinstance(alert, Alert)
    assert alert.type == "latency_spike" and alert.metric == "latency_p99_ms"
    assert (alert.host, alert.cluster) == ("h1", "c1")
    assert parse_rfc3339_ms(alert.window_start) == 10 * 60_000
    assert parse_rfc3339_ms(alert.window_end) == 11 * 60_000
    assert alert.value == 400.0 and alert.expected == 100.0 and alert.score > 6
    assert alert.alert_id == alert_id_for(SERIES, 600_000, "latency_spike")
    assert out[:-1] == [None] * 10


def test_latency_drop_is_not_an_alert() -> None:
    assert run([100.0] * 10 + [10.0])[-1] is None


def test_alert_ids_are_deterministic_and_distinct() -> None:
    a = run([100.0] * 10 + [400.0, 400.0])
    b = run([100.0] * 10 + [400.0, 400.0])
    ids_a = [x.alert_id for x in a if isinstance(x, Alert)]
    assert ids_a == [x.alert_id for x in b if isinstance(x, Alert)]
    assert len(set(ids_a)) == 2


def test_window_seen_again_is_dead_lettered_not_scored_twice() -> None:
    state = new_series_state(SERIES, CFG)
    for i in range(10):
        detect_window(state, window(i, 100.0))
    out = detect_window(state, window(7, 900.0))
    assert isinstance(out, DeadLetter) and out.reason is Reason.LATE_WINDOW
    assert msgspec.json.decode(out.payload)["count"] == 12
    assert detect_window(state, window(10, 100.0)) is None  # baseline untouched


def test_alert_dates_the_deviation_it_belongs_to() -> None:
    # three windows drift below the alert bar (3-4 noise widths: scale 1 here) before the
    # level crosses it: the alert's onset is the drift's first window, not its own
    drift = run([100.0] * 10 + [103.0, 103.5, 104.0, 110.0])
    alert = drift[-1]
    assert isinstance(alert, Alert) and drift[10:13] == [None] * 3
    assert parse_rfc3339_ms(alert.onset or "") == 10 * 60_000
    # a jump is its own onset, and so is one after the series had settled again
    jump = run([100.0] * 10 + [110.0])[-1]
    assert isinstance(jump, Alert) and jump.onset == jump.window_start
    again = run([100.0] * 10 + [103.0, 103.5] + [100.0] * 6 + [110.0])[-1]
    assert isinstance(again, Alert) and again.onset == again.window_start
    # one noisy window above half the gate does not date an alert long after it
    lone = run([100.0] * 10 + [104.0, 100.0, 110.0])[-1]
    assert isinstance(lone, Alert) and lone.onset == lone.window_start
