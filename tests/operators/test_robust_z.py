"""The statistical tier: robust z-scores, direction, anomaly filtering and adaptation."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from operators.detection.robust_z import RobustZConfig, RobustZDetector, severity_for

CFG = RobustZConfig(z_threshold=6.0, history_windows=30, min_history=10, relative_floor=0.0)


def warmed(direction: int = 0, seed: int = 0) -> RobustZDetector:
    det = RobustZDetector(CFG, direction)
    for v in np.random.default_rng(seed).normal(100.0, 1.0, 30):
        det.observe(float(v))
    return det


def test_silent_while_warming_up() -> None:
    det = RobustZDetector(CFG)
    assert [det.observe(1000.0 * i) for i in range(CFG.min_history)] == [None] * CFG.min_history
    assert det.observe(1.0) is not None


def test_score_matches_median_mad_reference() -> None:
    history = np.random.default_rng(3).normal(100.0, 2.0, 30)
    det = RobustZDetector(CFG)
    for v in history:
        det.learn(float(v), anomalous=False)
    med = np.median(history)
    mad = np.median(np.abs(history - med))
    score = det.score(120.0)
    assert score is not None
    assert score.expected == pytest.approx(med)
    assert score.z == pytest.approx((120.0 - med) / (1.4826 * mad))


@pytest.mark.parametrize(
    ("direction", "value", "anomalous"),
    [
        (0, 130.0, True),
        (0, 70.0, True),
        (0, 102.0, False),
        (1, 130.0, True),
        (1, 70.0, False),
        (-1, 70.0, True),
        (-1, 130.0, False),
    ],
)
def test_direction(direction: int, value: float, anomalous: bool) -> None:
    score = warmed(direction).observe(value)
    assert score is not None and score.anomalous is anomalous


def test_anomalies_are_kept_out_of_the_baseline_until_the_level_moves() -> None:
    cfg = RobustZConfig(z_threshold=6.0, history_windows=30, min_history=10, adapt_after_windows=5)
    det = RobustZDetector(cfg)
    for v in np.random.default_rng(0).normal(100.0, 1.0, 30):
        det.observe(float(v))
    flags = [det.observe(200.0).anomalous for _ in range(40)]  # type: ignore[union-attr]
    assert flags[:5] == [True] * 5  # filtered from learning at first
    assert flags[-1] is False  # ...then the new level is learned


def test_relative_floor_ignores_rounding_noise_on_flat_series() -> None:
    det = RobustZDetector(RobustZConfig(min_history=5, relative_floor=0.01))
    for _ in range(20):
        det.observe(50.0)
    assert det.observe(50.2).anomalous is False  # type: ignore[union-attr]
    assert det.observe(60.0).anomalous is True  # type: ignore[union-attr]


def test_pickle_round_trip_keeps_state() -> None:
    det = warmed()
    clone = pickle.loads(pickle.dumps(det))
    assert clone.score(110.0) == det.score(110.0)


@pytest.mark.parametrize(
    ("z", "band"), [(6.5, "low"), (-10.0, "medium"), (16.0, "high"), (30.0, "critical")]
)
def test_severity_bands(z: float, band: str) -> None:
    assert severity_for(z, 6.0) == band
