"""A cluster's consensus tuning loop (`operators.tuning.consensus`): the policy's state as in
training, the safety rules as a shield, the guardrails, the revert on observed regressions."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest

from novacron_ml.core.schema import MetricEvent
from novacron_ml.core.tuning import (
    ACP_KNOBS,
    DEFAULT_ACP,
    ConsensusSetting,
    Recommendation,
    consensus_cost,
)
from operators.tuning.consensus import OBSERVED, ClusterTuner, ConsensusContext, ConsensusTable
from operators.tuning.guardrails import GuardrailConfig
from operators.tuning.policy import OnnxPolicy
from training.tuning.gridq import grid_state, relative

ROOT = Path(__file__).resolve().parents[2]
TABLE = ConsensusTable.load(ROOT / "models/tuning/consensus_table.json")
ALL_IN = GuardrailConfig(canary_fraction=1.0, cooldown_s=0.0)


def prefer(*actions: int) -> object:
    """A stand-in policy ranking the given actions first, in order (keep = 6 last)."""

    def q_values(_states: np.ndarray) -> np.ndarray:
        q = np.full((1, 7), -10.0, dtype=np.float32)
        for rank, a in enumerate(actions):
            q[0, a] = 10.0 - rank
        return q

    return q_values


def feed(
    tuner: ClusterTuner, ctx: ConsensusContext, minutes: int, t0: int = 0, seed: int = 0,
    extra: dict[str, float] | None = None,
) -> list[object]:  # fmt: skip
    """Reports drawn from the table for the cluster's current setting, one run per 5 s."""
    rng = np.random.default_rng(seed)
    out: list[object] = []
    for tick in range(minutes * 12):
        ts = t0 + tick * 5000
        runs = TABLE.runs[tuner.config]
        row = runs[int(rng.integers(len(runs)))]
        values = dict(zip(OBSERVED, (float(v) for v in row), strict=True)) | (extra or {})
        for name, value in values.items():
            out += tuner.on_event(MetricEvent(ts, "host-000", "c1", name, value), ctx)
    return out


def test_the_served_state_is_the_one_the_policy_was_trained_on() -> None:
    default_reward = -TABLE.cost(DEFAULT_ACP)
    for config in [DEFAULT_ACP, (100, 16, 3), (800, 4, 4)]:
        cost = TABLE.cost(config) * 1.3
        trained = grid_state(config, TABLE.axes, [], relative(-cost, default_reward))
        assert np.allclose(TABLE.state(config, cost)[0], trained, atol=1e-6)
    assert TABLE.axes == [[100, 200, 400, 800], [1, 4, 16, 64], [3, 4, 5]]
    row = TABLE.runs[DEFAULT_ACP][0]
    assert math.isclose(consensus_cost(row[0], row[2], row[3]),
                        row[0] / 1000 + 2 * (1 - row[2]) + 0.002 * row[3])  # fmt: skip


def test_the_real_policy_advises_from_the_default_in_dry_run() -> None:
    policy = OnnxPolicy(ROOT / "models/onnx/dqn_consensus/1/manifest.json", "consensus")
    ctx = ConsensusContext(policy.q_values, TABLE, ALL_IN, "dqn_consensus@1")
    tuner = ClusterTuner("c1")
    out = feed(tuner, ctx, 5)
    recs = [r for r in out if isinstance(r, Recommendation)]
    assert recs and not any(isinstance(r, ConsensusSetting) for r in out)
    first = recs[0]
    assert (first.knob, first.old, first.new, first.allowed) == ("acp_quorum", 5, 4, True)
    assert first.subsystem == "consensus" and first.host == "" and first.cluster == "c1"
    assert first.current_cost > first.expected_cost > 0 and first.observed_cost > 0
    assert any("no acp_nodes" in a for a in first.assumed)
    assert tuner.config == DEFAULT_ACP  # dry-run: nothing applied


def test_unsafe_moves_are_refused_and_the_next_best_is_taken() -> None:
    # the policy's grid holds the table's safe settings only (quorum 2 is not on it); what
    # the cluster reports can still make a move unsafe: 7 nodes (quorum 4 -> 3 is not a
    # majority) and an 80 ms p99 round trip (timeout 200 -> 100 ms < 2 x 80); then batch
    ctx = ConsensusContext(prefer(4, 0, 3), TABLE, ALL_IN, "test")
    tuner = ClusterTuner("c1", config=(200, 16, 4))
    out = feed(tuner, ctx, 3, extra={"acp_rtt_p99_ms": 80.0, "acp_nodes": 7.0})
    recs = [r for r in out if isinstance(r, Recommendation)]
    by_knob: dict[str, Recommendation] = {}
    for r in recs:  # the first verdict per knob: the moves the policy ranked first
        by_knob.setdefault(r.knob, r)
    assert by_knob["acp_quorum"].guardrail.startswith("safety: quorum 3 is not a majority of 7")
    assert by_knob["acp_timeout_ms"].guardrail.startswith("safety: timeout 100 ms < 2 x")
    assert not by_knob["acp_quorum"].allowed and not by_knob["acp_timeout_ms"].allowed
    assert by_knob["acp_batch"].new == 64 and by_knob["acp_batch"].guardrail.startswith(
        ("passed", "gain", "safe set")
    )
    assert not recs[0].assumed  # nodes and round trip reported


def test_a_worse_change_is_reverted_and_never_proposed_again() -> None:
    # the safe set would block quorum 3 -> 4 (p99 ~200 -> ~370 ms): lax margins let it through
    # to the apply, then the default margins judge what the cluster reports
    lax = dataclasses.replace(ALL_IN, cooldown_s=600.0, throughput_margin=0.99, p99_margin=1e9)
    ctx = ConsensusContext(prefer(5), TABLE, lax, "test", mode="apply", min_gain=-1.0)
    tuner = ClusterTuner("c1", config=(400, 1, 3))
    out = feed(tuner, ctx, 3)
    settings = [s for s in out if isinstance(s, ConsensusSetting)]
    assert [(s.config, s.source) for s in settings] == [((400, 1, 4), "optimizer")]
    assert tuner.guard is not None
    tuner.guard.cfg = dataclasses.replace(lax, throughput_margin=0.05, p99_margin=0.10)
    later = feed(tuner, ctx, 20, t0=3 * 60_000, seed=1)
    reverts = [r for r in later if isinstance(r, Recommendation) and r.action == "revert"]
    assert len(reverts) == 1 and (reverts[0].old, reverts[0].new) == (4, 3)
    back = [s for s in later if isinstance(s, ConsensusSetting)]
    assert back[0].config == (400, 1, 3) and back[0].source == "revert"
    assert (400, 1, 4) in tuner.reverted
    assert all(s.config != (400, 1, 4) for s in back)  # the policy's next-best moves only
    again = [r for r in later if isinstance(r, Recommendation) and r.action == "change"]
    assert any(r.guardrail.startswith("reverted: (400, 1, 4)") for r in again)


@pytest.mark.parametrize("running", [(200, 16, 3), (800, 4, 4)])
def test_the_setting_the_cluster_reports_is_its_setting(running: tuple[int, ...]) -> None:
    ctx = ConsensusContext(prefer(6), TABLE, ALL_IN, "test")
    tuner = ClusterTuner("c1")
    feed(tuner, ctx, 3, extra=dict(zip(ACP_KNOBS, map(float, running), strict=True)))
    assert tuner.config == running
