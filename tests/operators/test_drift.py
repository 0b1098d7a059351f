"""Drift monitors (operators/drift.py): quiet on a stationary stream, firing on a shifted one;
input drift on a served Isolation Forest's real inputs against the reference its export
wrote into the manifest."""

from __future__ import annotations

from pathlib import Path

import msgspec
import numpy as np

from novacron_ml.core import metrics, registry
from novacron_ml.core.manifest import read_manifest
from operators import drift
from operators.detection.iforest import IsolationForestTier
from operators.features.scale_free import IFOREST_INPUTS, iforest_inputs
from tests.operators.test_registry import add_version
from training.features import simulated_windows


def test_psi_is_quiet_on_the_training_distribution_and_fires_on_a_shift() -> None:
    rng = np.random.default_rng(0)
    ref = drift.reference_of(rng.normal(size=(20_000, 3)), ["a", "b", "c"])
    assert [len(p) for p in ref.proportions] == [10, 10, 10]
    assert np.allclose([sum(p) for p in ref.proportions], 1.0)
    monitor = drift.InputDrift(ref)
    assert monitor.add(rng.normal(size=(500, 3))) == []  # below min_rows: no figure yet
    quiet = monitor.add(rng.normal(size=(5_000, 3)))
    assert max(quiet) < 0.02
    shifted = rng.normal(size=(5_000, 3))
    shifted[:, 1] += 0.5  # half a standard deviation on one input
    values = monitor.add(shifted)  # the window now holds only shifted rows
    assert values[1] > 0.15 and max(values[0], values[2]) < 0.02
    # a small batch bins its rows but the PSI waits for `every` (500) more rows
    assert monitor.add(rng.normal(size=(10, 3))) is values and monitor.n == 10_510


def test_error_drift_is_quiet_on_a_stationary_stream_and_fires_on_a_worse_one() -> None:
    rng = np.random.default_rng(1)
    steady = drift.ErrorDrift()
    assert steady.add(np.abs(rng.normal(size=1_000))) is None  # still the baseline
    level = steady.add(np.abs(rng.normal(size=30_000)))
    assert level is not None and abs(level) < 0.1 and steady.alarms == 0
    worse = drift.ErrorDrift()
    worse.add(np.abs(rng.normal(size=2_000)))
    level = worse.add(1.5 * np.abs(rng.normal(size=5_000)))  # errors 50 % larger
    assert level is not None and level > 0.3 and worse.alarms >= 1


def test_a_served_forest_exports_its_input_drift(tmp_path: Path) -> None:
    # the reference an export writes, from a simulated stretch (as `iforest-train` does)
    train, _ = simulated_windows(2, 3, 0, "2026-01-05T00:00:00Z", 0.0)
    ref = drift.reference_of(iforest_inputs(np.stack([w.features for w in train])),
                             IFOREST_INPUTS)  # fmt: skip
    add_version(tmp_path, "iforest_generic", reference=ref)
    path = registry.champion_manifest("iforest_generic", tmp_path)
    assert read_manifest(path).reference == msgspec.convert(msgspec.to_builtins(ref), type(ref))
    tier = IsolationForestTier(str(tmp_path))
    later, _ = simulated_windows(2, 3, 1, "2026-02-02T00:00:00Z", 0.0)  # stationary
    tier.score(later)
    values = {
        s.labels["input"]: s.value
        for m in metrics.MODEL_INPUT_DRIFT.collect()
        for s in m.samples
        if s.labels["model"] == "iforest_generic"
    }
    assert set(values) == set(IFOREST_INPUTS)
    assert max(values.values()) < 0.15  # another week of the same fleet: no drift alert


def test_the_served_policy_exports_the_states_outside_its_training_range(
    tmp_path: Path,
) -> None:
    """A tuning policy's manifest carries the range of its training states (tune-train: the
    replay buffer); the tuning flow's context checks every state it asks the policy about.
    A fleet settled on one setting is not drift (its PSI would be huge); a state past
    anything the policy saw is."""
    from dataflows.tune import tuner_context
    from novacron_ml.core.settings import load_settings
    from novacron_ml.core.tuning import STATE_NAMES

    rng = np.random.default_rng(0)
    training = rng.uniform(0, 1, (5000, len(STATE_NAMES)))
    add_version(tmp_path, "dqn_compression",
                reference=drift.reference_of(training, STATE_NAMES))  # fmt: skip
    ctx = tuner_context(load_settings(tune={"policy": str(tmp_path / "dqn_compression")}))

    def gauges() -> dict[str, float]:
        return {
            s.labels["input"]: s.value
            for m in metrics.MODEL_INPUT_OUTSIDE.collect()
            for s in m.samples
            if s.labels["model"] == "dqn_compression"
        }

    settled = np.full((1, len(STATE_NAMES)), 0.5, np.float32)  # one state over and over
    for _ in range(1500):
        ctx.q_values(settled)
    quiet = gauges()
    assert set(quiet) == set(STATE_NAMES) and max(quiet.values()) == 0.0
    away = rng.uniform(0, 1, (2000, len(STATE_NAMES)))
    away[:, 0] += 1.0  # the first input past every training value
    for row in away:
        ctx.q_values(row[None].astype(np.float32))
    moved = gauges()
    assert moved[STATE_NAMES[0]] > 0.3 and max(moved[n] for n in STATE_NAMES[1:]) < 0.01


def test_support_drift_by_hand() -> None:
    ref = drift.reference_of(np.array([[0.0, 10.0], [1.0, 20.0]]), ["a", "b"])
    assert (ref.low, ref.high) == ([0.0, 10.0], [1.0, 20.0])
    monitor = drift.SupportDrift(ref, window=4, min_rows=2)
    assert monitor.add(np.array([[0.5, 15.0]])) == []  # fewer than min_rows
    assert monitor.add(np.array([[2.0, 15.0]])) == [0.5, 0.0]
    assert monitor.add(np.array([[0.5, 5.0], [0.5, 15.0], [0.5, 15.0]])) == [0.25, 0.25]
