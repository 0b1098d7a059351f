"""A host's bandwidth-predictor loop (`operators.tuning.bandwidth`) on a real traffic series:
the same daily choices as the evaluated `hindsight` tuner, guardrails, settings applied."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from novacron_ml.core.schema import MetricEvent
from novacron_ml.core.tuning import DEFAULT_PBA, PBA_KNOBS, BandwidthSetting, Recommendation
from operators.tuning.bandwidth import (
    SAMPLE_MS,
    SEGMENT,
    BandwidthContext,
    BandwidthTuner,
    decision_offset,
    rerun_day,
)
from operators.tuning.guardrails import GuardrailConfig

NAB = Path(__file__).resolve().parents[3] / "shared/data/nab/data/realAWSCloudwatch"
SERIES = NAB / "ec2_network_in_257a54.csv"
T0 = 1_700_000_000_000 // SAMPLE_MS * SAMPLE_MS


def demand() -> np.ndarray:
    if not SERIES.is_file():
        pytest.skip(f"{SERIES} missing (../shared/data)")
    return np.loadtxt(SERIES, delimiter=",", skiprows=1, usecols=1)


def feed(tuner: BandwidthTuner, ctx: BandwidthContext, y: np.ndarray) -> list[object]:
    out: list[object] = []
    for i, v in enumerate(y):  # two reports per 5-minute sample
        for half in (0, SAMPLE_MS // 2):
            event = MetricEvent(T0 + i * SAMPLE_MS + half, "host-1", "c1", "pba_demand_mbps",
                                float(v))  # fmt: skip
            out += tuner.on_event(event, ctx)
    return out


def test_the_daily_choice_is_the_evaluated_hindsight_within_the_guardrails() -> None:
    y = demand()
    ctx = BandwidthContext(GuardrailConfig(canary_fraction=1.0, cooldown_s=0.0), mode="apply")
    tuner = BandwidthTuner("host-1")
    out = feed(tuner, ctx, y)
    settings = [o for o in out if isinstance(o, BandwidthSetting)]
    recs = [o for o in out if isinstance(o, Recommendation)]
    assert settings and all(r.subsystem == "bandwidth" and r.host == "host-1" for r in recs)
    assert [s.version for s in settings] == list(range(1, len(settings) + 1))
    # replay: at each day boundary (from day 2) the setting in force for the next day is the
    # best of every setting rerun on the day just seen (training's `hindsight` tuner), where
    # it gains >= 1 % and serves >= 95 % of the demand the current one served
    in_force, expected = DEFAULT_PBA, []
    first = 2 * SEGMENT + decision_offset("host-1")  # hosts spread their daily reruns
    assert 0 <= first - 2 * SEGMENT < SEGMENT
    for start in range(first, len(y) - 1, SEGMENT):
        runs = rerun_day(y[:start])
        best = max(runs, key=lambda c: runs[c]["reward"])
        gain = runs[in_force]["reward"] / runs[best]["reward"] - 1  # cost now / cost best - 1
        served, served_now = 1 - runs[best]["shortfall"], 1 - runs[in_force]["shortfall"]
        if best != in_force and gain >= 0.01 and served >= 0.95 * served_now:  # the safe set
            expected.append(best)
            in_force = best
    assert len(expected) >= 2 and [s.config for s in settings] == expected
    assert tuner.config == in_force
    # what it buys over the six series: bench/bandwidth_flow.py, docs/QUALITY.md


def test_dry_run_advises_and_the_safe_set_and_bounds_block() -> None:
    y = demand()[: 3 * SEGMENT + 5]
    dry = BandwidthContext(GuardrailConfig(canary_fraction=1.0))
    out = feed(BandwidthTuner("host-1"), dry, y)
    recs = [o for o in out if isinstance(o, Recommendation)]
    assert recs and not any(isinstance(o, BandwidthSetting) for o in out)
    assert all(r.mode == "dry-run" and r.expected_cost < r.current_cost for r in recs)
    assert {r.knob for r in recs} <= set(PBA_KNOBS)
    # the window may not go below 24 samples: the day's best (a 6-sample window) is refused
    # by the bounds, and the whole move with it
    bounded = GuardrailConfig(canary_fraction=1.0, bounds={"pba_window": (24.0, 288.0)})
    tuner = BandwidthTuner("host-1")
    out = feed(tuner, BandwidthContext(bounded, mode="apply"), y)
    recs = [o for o in out if isinstance(o, Recommendation)]
    (window,) = [r for r in recs if r.knob == "pba_window"]
    assert window.new < 24 and not window.allowed and window.guardrail.startswith("bounds")
    assert all(not r.allowed for r in recs) and tuner.config == DEFAULT_PBA
    assert not any(isinstance(o, BandwidthSetting) for o in out)


def test_a_long_gap_restarts_the_history_and_a_short_one_is_filled() -> None:
    ctx = BandwidthContext(GuardrailConfig(canary_fraction=1.0))
    tuner = BandwidthTuner("host-1")
    tuner.on_event(MetricEvent(T0, "h", "c", "pba_demand_mbps", 0.5), ctx)
    for i in (0, 1, 2, 5):  # samples 3 and 4 missing: filled with sample 2's value
        tuner.on_event(MetricEvent(T0 + i * SAMPLE_MS, "h", "c", "pba_demand_mbps", i + 1.5), ctx)
    assert tuner.samples == [1.0, 2.5, 3.5, 3.5, 3.5]  # sample 0: the mean of 0.5 and 1.5
    tuner.on_event(MetricEvent(T0 + 40 * SAMPLE_MS, "h", "c", "pba_demand_mbps", 9.0), ctx)
    assert tuner.samples == []  # 34 samples missing: the history is broken
    for knob, value in zip(PBA_KNOBS, (96, 0.95, 3), strict=True):
        tuner.on_event(MetricEvent(T0 + 41 * SAMPLE_MS, "h", "c", knob, value), ctx)
    assert tuner.config == (96, 0.95, 3)  # the setting the host reports it runs
    assert [type(v) for v in tuner.config] == [int, float, int]  # as a BandwidthSetting has
