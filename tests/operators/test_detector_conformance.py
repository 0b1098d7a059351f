"""One conformance check for every registered detector (`operators.detection.base.DETECTORS`),
as River's estimator checks do: pickle round-trip, the same output when resumed from a
snapshot, a batch equals the same windows one by one, bounded state."""

from __future__ import annotations

import pickle
from typing import Any

import pytest

from novacron_ml.core.features import FeatureConfig, FeatureWindow
from novacron_ml.core.manifest import REGISTRY
from novacron_ml.core.simulator import FleetConfig, FleetSimulator
from operators.detection.base import Detector
from operators.detection.iforest import IsolationForestTier
from operators.detection.novelty import NoveltyConfig, NoveltyTier
from operators.detection.registry import DETECTORS
from operators.detection.river import RiverConfig, RiverTier
from operators.detection.robust_z import RobustZConfig, RobustZTier
from operators.features.engine import FeatureEngine

SMALL: dict[str, Detector] = {
    # small histories, so warm-up ends and the rings wrap within the test's windows
    "robust_z": RobustZTier(RobustZConfig(history_windows=20, min_history=5)),
    "novelty": NoveltyTier(NoveltyConfig(history=60, min_history=10)),
    "river": RiverTier(RiverConfig(n_trees=3, height=4, window_size=20)),
    "iforest": IsolationForestTier(str(REGISTRY)),
}


def test_every_registered_detector_is_checked() -> None:
    assert set(DETECTORS) == set(SMALL)
    for name, detector in SMALL.items():
        assert type(detector) is DETECTORS[name] and detector.name == name


@pytest.fixture(scope="module")
def series_windows() -> dict[str, list[FeatureWindow]]:
    """Three series' windows from the simulator (6 h of 60 s windows), with anomalies."""
    sim = FleetSimulator(
        FleetConfig(hosts=1, clusters=1, duration_s=6 * 3600.0, anomalies_per_host_per_hour=1.0)
    )
    engine = FeatureEngine(FeatureConfig())
    events = list(sim.events())
    windows, late = engine.ingest(events, events[-1].ts_ms)
    windows += engine.flush()
    assert not late
    by_series: dict[str, list[FeatureWindow]] = {}
    for w in windows:
        by_series.setdefault(w.series, []).append(w)
    wanted = ("latency_p99_ms", "throughput_mbps", "cpu_util")
    return {s: ws for s, ws in sorted(by_series.items()) if s.endswith(wanted)}


def _run(
    detector: Detector, states: list[Any], steps: list[list[FeatureWindow]]
) -> list[list[Any]]:
    """Score then learn each step's batch (one window per state); the scores per step."""
    out = []
    for batch in steps:
        scores = detector.score_batch(states, batch)
        flagged = [False] * len(batch)
        detector.learn_batch(states, batch, scores, flagged)
        out.append(scores)
    return out


def _steps(series_windows: dict[str, list[FeatureWindow]]) -> list[list[FeatureWindow]]:
    n = min(len(ws) for ws in series_windows.values())
    return [[ws[i] for ws in series_windows.values()] for i in range(n)]


def _same(a: Any, b: Any) -> bool:
    return pickle.dumps(a) == pickle.dumps(b)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_scores_before_learning_change_nothing(
    name: str, series_windows: dict[str, list[FeatureWindow]]
) -> None:
    detector = SMALL[name]
    states = [detector.new_state(s) for s in series_windows]
    steps = _steps(series_windows)
    _run(detector, states, steps[:100])
    before = pickle.dumps(states)
    first = detector.score_batch(states, steps[100])
    assert pickle.dumps(states) == before  # score_batch is pure
    assert _same(first, detector.score_batch(states, steps[100]))


@pytest.mark.parametrize("name", sorted(SMALL))
def test_resumed_from_a_snapshot_gives_the_same_scores(
    name: str, series_windows: dict[str, list[FeatureWindow]]
) -> None:
    detector = SMALL[name]
    steps = _steps(series_windows)
    states = [detector.new_state(s) for s in series_windows]
    straight = _run(detector, states, steps)
    resumed_states = [detector.new_state(s) for s in series_windows]
    head = _run(detector, resumed_states, steps[:150])
    resumed_states = pickle.loads(pickle.dumps(resumed_states))  # the recovery snapshot
    tail = _run(detector, resumed_states, steps[150:])
    assert _same(straight, head + tail)
    scored = [detector.raw(s) for batch in straight[150:] for s in batch]
    assert any(r is not None and r != 0.0 for r in scored)  # it really scored something


@pytest.mark.parametrize("name", sorted(SMALL))
def test_a_batch_equals_the_same_windows_one_by_one(
    name: str, series_windows: dict[str, list[FeatureWindow]]
) -> None:
    detector = SMALL[name]
    steps = _steps(series_windows)
    together = [detector.new_state(s) for s in series_windows]
    alone = [detector.new_state(s) for s in series_windows]
    batched = _run(detector, together, steps)
    single = [
        [_run(detector, [state], [[w]])[0][0] for state, w in zip(alone, batch, strict=True)]
        for batch in steps
    ]
    assert _same(batched, single)
    assert _same(together, alone)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_state_stays_bounded(name: str, series_windows: dict[str, list[FeatureWindow]]) -> None:
    detector = SMALL[name]
    series, windows = next(iter(series_windows.items()))
    state = detector.new_state(series)
    sizes = []
    for i in range(0, len(windows), 60):
        _run(detector, [state], [[w] for w in windows[i : i + 60]])
        sizes.append(len(pickle.dumps(state)))
    # after the histories filled (a fifth of the run), the state no longer grows
    settled = sizes[len(sizes) // 5]
    assert max(sizes) <= settled * 1.05 + 256, sizes
