"""The statistical tier: robust z-scores, direction, anomaly filtering and adaptation."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from operators.detection.robust_z import (
    RobustZConfig,
    RobustZDetector,
    score_many,
    severity_for,
    warmup_widening,
)

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


def test_without_a_relative_floor_a_flat_series_is_floored_at_a_share_of_its_level() -> None:
    # relative_floor 0: the resolution floor, and none is seen while every value is the same
    det = RobustZDetector(RobustZConfig(min_history=5, history_windows=20, relative_floor=0.0))
    for _ in range(20):
        det.observe(50.0)
    assert det.observe(50.2).anomalous is False  # type: ignore[union-attr]
    assert det.observe(60.0).anomalous is True  # type: ignore[union-attr]


def test_without_a_relative_floor_a_series_that_rounds_is_floored_at_its_resolution() -> None:
    # window means on a 0.1 grid, mostly one value: the MAD is 0, the scale one step (0.1)
    rng = np.random.default_rng(5)
    det = RobustZDetector(RobustZConfig(history_windows=30, relative_floor=0.0))
    for v in rng.choice([49.9, 50.0, 50.0, 50.0, 50.0, 50.1], 30):
        det.learn(float(v), anomalous=False)
    score = det.score(50.3)
    assert score is not None and score.anomalous is False and score.z == pytest.approx(3.0)
    assert det.score(50.7).anomalous is True  # type: ignore[union-attr]


def test_the_relative_floor_hides_a_move_of_a_few_widths_on_a_quiet_series() -> None:
    # memory at half full, noise 0.2 % of its level: a 1.5 % shift is 7.5 of its widths.
    # The default floor (1 % of the level) reads it as 1.5 widths; the resolution does not.
    values = np.random.default_rng(1).normal(0.5, 0.001, 60)
    shipped = RobustZDetector(RobustZConfig())
    resolution = RobustZDetector(RobustZConfig(relative_floor=0.0))
    for det in (shipped, resolution):
        for v in values:
            det.learn(float(v), anomalous=False)
    assert shipped.score(0.5075).anomalous is False  # type: ignore[union-attr]
    assert resolution.score(0.5075).anomalous is True  # type: ignore[union-attr]


def test_warming_baseline_is_widened_until_full() -> None:
    widen = warmup_widening(6.0, 60)
    assert widen[12] == pytest.approx(2.58, abs=0.01) and widen[60] == 1.0
    assert np.all(np.diff(widen[12:]) < 0)  # less with every window
    values = np.random.default_rng(2).normal(100.0, 1.0, 60)
    det = RobustZDetector(RobustZConfig())
    for v in values[:12]:
        det.learn(float(v), anomalous=False)
    warming = det.score(110.0)
    for v in values[12:]:
        det.learn(float(v), anomalous=False)
    full = det.score(110.0)
    assert warming is not None and full is not None
    assert warming.anomalous is False and full.anomalous is True
    # the batched path widens the same way: the same floats as one by one
    assert score_many([det] * 4, [110.0] * 4) == [full] * 4


def test_pickle_round_trip_keeps_state() -> None:
    det = warmed()
    clone = pickle.loads(pickle.dumps(det))
    assert clone.score(110.0) == det.score(110.0)


@pytest.mark.parametrize(
    ("z", "band"), [(6.5, "low"), (-10.0, "medium"), (16.0, "high"), (30.0, "critical")]
)
def test_severity_bands(z: float, band: str) -> None:
    assert severity_for(z, 6.0) == band


@pytest.mark.parametrize("relative_floor", [0.0, 0.01])
def test_batched_scale_is_the_one_by_one_scale(relative_floor: float) -> None:
    # warming and full baselines, continuous and rounded, flat: the same floats either way
    cfg = RobustZConfig(history_windows=30, relative_floor=relative_floor)
    rng = np.random.default_rng(9)
    dets = []
    for i, fill in enumerate([12, 17, 30, 30, 25, 30]):
        det = RobustZDetector(cfg, direction=i % 3 - 1)
        values = rng.normal(10.0, 0.5, fill)
        if i == 3:
            values = np.round(values)  # a MAD of 0 or 1 step
        if i == 4:
            values = np.full(fill, 7.0)  # flat
        for v in values:
            det.learn(float(v), anomalous=False)
        dets.append(det)
    now = [11.5, 8.0, 13.0, 12.0, 7.3, 10.0]
    assert score_many(dets, now) == [d.score(v) for d, v in zip(dets, now, strict=True)]
