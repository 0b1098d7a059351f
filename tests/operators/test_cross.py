"""Cross-metric host features: joined across a host's series, emitted once per window."""

from __future__ import annotations

import numpy as np
import pytest

from novacron_ml.core.features import FEATURE_INDEX, N_FEATURES, FeatureWindow
from operators.features.cross import HOST_FEATURE_NAMES, CrossMetricJoiner, cross_features

MEANS = {
    "latency_p50_ms": 10.0,
    "latency_p99_ms": 40.0,
    "throughput_mbps": 500.0,
    "error_rate": 0.002,
    "cpu_util": 0.5,
}


def window(metric: str, mean: float, start: int = 0, host: str = "h1") -> FeatureWindow:
    f = np.zeros(N_FEATURES)
    f[FEATURE_INDEX["mean"]] = mean
    return FeatureWindow(f"c1/{host}/{metric}", start, start + 60_000, f)


def test_formulas() -> None:
    got = cross_features(MEANS)
    assert got == pytest.approx(
        {
            "latency_x_throughput": 5000.0,
            "errors_per_mbit": 0.002 / 500,
            "cpu_per_mbit": 0.001,
            "latency_tail_ratio": 4.0,
        }
    )
    assert set(got) == set(HOST_FEATURE_NAMES)
    assert cross_features({**MEANS, "throughput_mbps": 0.0})["cpu_per_mbit"] == 0.0


def test_emits_once_all_metrics_of_the_host_window_arrived() -> None:
    joiner = CrossMetricJoiner(60_000)
    items = [window(m, v) for m, v in MEANS.items()] + [window("memory_util", 0.3)]
    assert joiner.add(items[:3]) == []
    out = joiner.add(items[3:])
    assert len(out) == 1 and out[0].host == "h1" and out[0].start_ms == 0
    assert out[0].features["latency_tail_ratio"] == pytest.approx(4.0)
    assert joiner.pending == {}


def test_incomplete_windows_are_emitted_partially_once_the_host_moved_on() -> None:
    joiner = CrossMetricJoiner(60_000)
    assert joiner.add([window("latency_p50_ms", 10.0), window("latency_p99_ms", 30.0)]) == []
    out = joiner.add([window("cpu_util", 0.4, start=120_000)])
    assert [(w.start_ms, sorted(w.features)) for w in out] == [(0, ["latency_tail_ratio"])]
    assert list(joiner.pending) == [("c1", "h1", 120_000)]
