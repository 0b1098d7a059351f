"""The DQN on grid environments (bandwidth, consensus): shielded moves, the state a deployed
tuner can compute, and a policy that learns where the cost is lowest."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from novacron_ml.core.tuning import GRID_KNOBS
from training.tuning import gridq

AXES = ((1, 2, 3, 4), (10, 20, 30), (5, 6))


class ToyReplay:
    """Cost falls towards (4, 30, 6); (3, 30, 6) is forbidden (as an unsafe setting is)."""

    def __init__(self) -> None:
        every = list(itertools.product(*AXES))
        self.configs = [c for c in every if c != (3, 30, 6)]
        self.default = (1, 10, 5)
        self.rng = np.random.default_rng(0)

    def cost(self, c: tuple[int, ...]) -> float:
        return 1.0 + (4 - c[0]) + (30 - c[1]) / 10 + (6 - c[2])

    def reset(self) -> None:
        pass

    def context(self) -> list[float]:
        return []

    def step(self, config: tuple[int, ...]) -> tuple[float, float]:
        noise = float(self.rng.normal(1.0, 0.05))
        return -self.cost(config) * noise, -self.cost(self.default)


def test_moves_into_forbidden_settings_are_refused() -> None:
    env = gridq.GridKnobEnv(ToyReplay(), "consensus")
    env.reset()
    env.config = (2, 30, 6)
    assert env.apply(1) == (2, 30, 6)  # level up would be (3, 30, 6): refused, stays
    assert env.apply(0) == (1, 30, 6)
    assert env.state().shape == (len(gridq.state_names("consensus")),)


def test_relative_reward_is_log_cost_ratio() -> None:
    assert gridq.relative(-0.5, -1.0) == pytest.approx(np.log(2))
    assert gridq.relative(-1.0, -1.0) == 0.0
    assert gridq.relative(-2.0, -1.0) < 0


def test_day_features_are_bounded_and_scale_free() -> None:
    t = np.arange(288)
    y = 100 + 30 * np.sin(2 * np.pi * t / 288) + np.random.default_rng(0).normal(0, 5, 288)
    a, b = gridq.day_features(y), gridq.day_features(1000 * y)
    assert a == pytest.approx(b)
    assert all(-1.0 <= v <= 3.0 for v in a) and a[2] > 0.5  # a smooth day: high lag-1 AC


def test_a_policy_learns_the_cheapest_reachable_setting() -> None:
    pytest.importorskip("torch")
    from training.tuning.dqn import DQNConfig, torch_q_values, train

    replay = ToyReplay()
    cfg = DQNConfig(hidden=(64, 64), episodes=60, steps=20, warmup=200, eps_decay_steps=700,
                    target_every=100, seed=1)  # fmt: skip
    q, _report = train(lambda _s: gridq.GridKnobEnv(replay, "consensus"), cfg)
    values = torch_q_values(q)
    env = gridq.GridKnobEnv(replay, "consensus")
    env.reset()
    for _ in range(12):
        env.step(int(np.argmax(values(env.state()[None])[0])))
        assert env.config in set(replay.configs)
    assert env.config == (4, 30, 6)  # around the forbidden (3, 30, 6), not through it


def test_bandwidth_replay_holds_real_predictor_runs(tmp_path: Path) -> None:
    from training.tuning.bandwidth import DEFAULT_PBA, run_predictor

    rng = np.random.default_rng(0)
    t = np.arange(288 * 4)
    y = 50 + 20 * np.sin(2 * np.pi * t / 288) + rng.normal(0, 3, len(t))
    replay = gridq.BandwidthReplay({"s": y}, ["s"])
    assert len(replay.days) == 3  # the first day only warms the predictor up
    ctx, rewards = replay.days[0]
    assert ctx == gridq.day_features(y[0:288])
    w, c, u = DEFAULT_PBA
    expect = run_predictor(y, 288, 576, int(w), float(c), int(u))["reward"]
    assert rewards[tuple(DEFAULT_PBA)] == pytest.approx(expect)
    replay.reset()
    first = replay.context()
    day = next(i for i, d in enumerate(replay.days) if d[0] == first)
    other = (6, 0.99, 1)
    reward, default = replay.step(other)  # that day's costs, for the setting and the default
    assert (reward, default) == (replay.days[day][1][other], replay.days[day][1][DEFAULT_PBA])
    assert reward != default
    assert replay.context() == replay.days[(day + 1) % 3][0]  # the next day follows


@pytest.mark.parametrize("subsystem", tuple(GRID_KNOBS))
def test_committed_policies_open_with_the_registry_checks(subsystem: str) -> None:
    pytest.importorskip("onnxruntime")
    from novacron_ml.core.registry import champion_manifest
    from training.tuning.dqn import open_q_values

    names = gridq.state_names(subsystem)
    values = open_q_values(champion_manifest(f"dqn_{subsystem}"), subsystem)
    q = values(np.zeros((3, len(names)), np.float32))
    assert q.shape == (3, 7) and np.isfinite(q).all()
    with pytest.raises(ValueError, match=f"a {subsystem} policy, not a compression one"):
        open_q_values(champion_manifest(f"dqn_{subsystem}"), "compression")
