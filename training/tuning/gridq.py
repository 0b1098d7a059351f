"""The DQN on the bandwidth-prediction and consensus environments (issue 21 (2), (5)).

The same Double DQN as for compression (`training.tuning.dqn.train`), on any environment whose
settings are a grid of three knobs (`configs`): one knob one grid step down or up, or keep; a
move into a setting the environment does not allow (consensus: the safety rules) is refused
and the setting stays (the policy is shielded, never unsafe).

State (`state_names(subsystem)`): the three knobs' grid positions in [0, 1], the
subsystem's context, and the last observation as the reward relative to the default setting's
for the same decision: log(default's cost / cost) (the rewards are costs here: negative).

- **bandwidth**: the context is the last day of traffic the predictor saw (the decision is
  the next day): its coefficient of variation, burstiness (mean |step| / mean), lag-1 and
  lag-12 autocorrelation. A deployed tuner computes the same from the stream. Training
  replays a table of every setting's cost on every day of the training series
  (`BandwidthReplay`, real predictor runs); the default's cost on the same day is the baseline
  (a counterfactual a deployed tuner can compute: the predictor is cheap to rerun on the
  day just seen).
- **consensus**: no context (one simulated network); training replays `runs` fresh
  simulations per safe setting (`ConsensusReplay`, SimPy runs with seeds the evaluation does
  not use); the baseline is the default setting's mean.

Evaluation runs the exported policy on the real environments (`tune eval --env bandwidth |
consensus --tuners ... dqn`): bandwidth on series held out of training, consensus on fresh
simulations.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from novacron_ml.core.tuning import apply_action, layout


def state_names(subsystem: str) -> tuple[str, ...]:
    """The policy's input layout (`novacron_ml.core.tuning.layout`, the one definition)."""
    return layout(subsystem)[0]


def actions(subsystem: str) -> tuple[str, ...]:
    return layout(subsystem)[1]


def relative(reward: float, default: float) -> float:
    """How much better than the default: log(default's cost / cost) when the rewards are
    costs (negative: both environments here), so that halving a small cost counts as much as
    halving a large one, as the "share of the best" it is scored by does."""
    if reward < 0 and default < 0:
        return math.log(default / reward)
    return (reward - default) / abs(default) if default else 0.0


def day_features(y: np.ndarray) -> list[float]:
    """The last day's traffic as the bandwidth policy's context (scale-free, bounded)."""
    mean = float(np.mean(y)) or 1.0
    d = np.diff(y)

    def ac(lag: int) -> float:
        if len(y) <= lag + 1:
            return 0.0
        a, b = y[:-lag] - y.mean(), y[lag:] - y.mean()
        den = math.sqrt(float(a @ a) * float(b @ b))
        return float(a @ b) / den if den > 0 else 0.0

    cv = float(np.std(y)) / abs(mean)
    burst = float(np.mean(np.abs(d))) / abs(mean) if len(d) else 0.0
    return [min(cv, 3.0), min(burst, 3.0), ac(1), ac(12)]


class BandwidthReplay:
    """Every setting's measured reward on every day of some series (real predictor runs);
    an episode walks the days of one series from a random start, the next day each step."""

    def __init__(self, series: dict[str, np.ndarray], names: Sequence[str], seed: int = 0,
                 progress: Callable[[int, int], None] | None = None) -> None:  # fmt: skip
        from training.tuning.bandwidth import DEFAULT_PBA, BandwidthEnv, run_predictor

        self.default = tuple(DEFAULT_PBA)
        probe = BandwidthEnv(series, names[0])
        self.configs = probe.configs
        self.rng = np.random.default_rng(seed)
        self.days: list[tuple[list[float], dict[tuple[float, ...], float]]] = []
        self.series_days: list[list[int]] = []
        done = 0
        envs = [BandwidthEnv(series, n) for n in names]
        total = sum(len(e._segments()) for e in envs) * len(self.configs)
        for env in envs:
            idx = []
            for s in env._segments():
                rewards = {}
                for c in self.configs:
                    rewards[c] = run_predictor(env.y, s, s + env.segment, int(c[0]), float(c[1]),
                                               int(c[2]))["reward"]  # fmt: skip
                    done += 1
                    if progress is not None and done % 500 == 0:
                        progress(done, total)
                idx.append(len(self.days))
                self.days.append((day_features(env.y[s - env.segment : s]), rewards))
            self.series_days.append(idx)
        self.walk: list[int] = []
        self.t = 0

    def only(self, series: Sequence[int]) -> BandwidthReplay:
        """The same measured days, episodes over the given series only (by index)."""
        import copy

        sub = copy.copy(self)
        sub.series_days = [self.series_days[i] for i in series]
        sub.rng = np.random.default_rng(int(self.rng.integers(1 << 31)))
        return sub

    def reset(self) -> None:
        walk = self.series_days[int(self.rng.integers(len(self.series_days)))]
        start = int(self.rng.integers(len(walk)))
        self.walk = walk[start:] + walk[:start]
        self.t = 0

    def context(self) -> list[float]:
        return self.days[self.walk[self.t % len(self.walk)]][0]

    def step(self, config: tuple[float, ...]) -> tuple[float, float]:
        """(reward, the default's reward) on the next day."""
        _ctx, rewards = self.days[self.walk[self.t % len(self.walk)]]
        self.t += 1
        return rewards[config], rewards[self.default]


class ConsensusReplay:
    """`runs` simulations per safe setting (seeds the evaluation never uses); a step draws
    one of them."""

    def __init__(self, runs: int = 6, seed: int = 0,
                 progress: Callable[[int, int], None] | None = None) -> None:  # fmt: skip
        from training.tuning.consensus import DEFAULT_ACP, ConsensusEnv, simulate

        env = ConsensusEnv()
        self.default = tuple(DEFAULT_ACP)
        self.configs = env.configs
        self.rng = np.random.default_rng(seed)
        self.rewards: dict[tuple[int, ...], list[float]] = {}
        total = len(self.configs) * runs
        for i, c in enumerate(self.configs):
            self.rewards[c] = [simulate(c, env.net, seed=50_000_000 + s)["reward"]
                               for s in range(runs)]  # fmt: skip
            if progress is not None:
                progress((i + 1) * runs, total)
        self.default_mean = float(np.mean(self.rewards[self.default]))

    def reset(self) -> None:
        pass

    def context(self) -> list[float]:
        return []

    def step(self, config: tuple[int, ...]) -> tuple[float, float]:
        runs = self.rewards[config]
        return runs[int(self.rng.integers(len(runs)))], self.default_mean


class GridKnobEnv:
    """A replayed grid environment as states, actions and rewards for `dqn.train`."""

    def __init__(self, replay: Any, subsystem: str) -> None:
        self.replay = replay
        self.subsystem = subsystem
        self.allowed = set(replay.configs)
        self.axes = [sorted({c[i] for c in replay.configs}) for i in range(3)]
        self.state_dim = len(state_names(subsystem))
        self.n_actions = len(actions(subsystem))
        self.default = replay.default
        self.config: tuple[Any, ...] = self.default
        self.last = 0.0

    def state(self) -> np.ndarray:
        return grid_state(self.config, self.axes, self.replay.context(), self.last)

    def apply(self, action: int) -> tuple[Any, ...]:
        new = apply_action(self.config, action, self.axes)
        return new if new in self.allowed else self.config  # shielded: never a refused move

    def reset(self) -> np.ndarray:
        self.replay.reset()
        self.config = self.default
        self.last = 0.0
        return self.state()

    def step(self, action: int) -> tuple[np.ndarray, float]:
        self.config = self.apply(action)
        reward, default = self.replay.step(self.config)
        self.last = relative(reward, default)
        return self.state(), self.last


def grid_state(
    config: Sequence[Any], axes: Sequence[Sequence[Any]], context: Sequence[float], last: float
) -> np.ndarray:
    pos = [list(a).index(v) / (len(a) - 1) for a, v in zip(axes, config, strict=True)]
    return np.array([*pos, *context, float(np.clip(last, -3.0, 3.0))], dtype=np.float32)


class GridPolicyTuner:
    """A trained policy as a tuner on the real environment (`tuners.run`): the context and
    the default's reward for the decision just observed come from `context_of` and
    `default_of` (bandwidth: the day's traffic and the default setting rerun on that day)."""

    name = "dqn"

    def __init__(self, q_values: Callable[[np.ndarray], np.ndarray], env: Any,
                 default: tuple[Any, ...], context_of: Callable[[], list[float]],
                 default_of: Callable[[], float]) -> None:  # fmt: skip
        self.q_values = q_values
        self.allowed = set(env.configs)
        self.axes = [sorted({c[i] for c in env.configs}) for i in range(3)]
        self.config = tuple(default)
        self.context_of = context_of
        self.default_of = default_of
        self.last = 0.0

    def propose(self) -> tuple[Any, ...]:
        s = grid_state(self.config, self.axes, self.context_of(), self.last)
        order = np.argsort(-self.q_values(s[None])[0], kind="stable")
        for a in order.tolist():  # the best allowed move (consensus: the safety rules)
            new = apply_action(self.config, a, self.axes)
            if new in self.allowed:
                return new
        return self.config

    def observe(self, config: tuple[Any, ...], reward: float) -> None:
        self.config = tuple(config)
        self.last = relative(reward, self.default_of())


def bandwidth_tuner_factory(q_values: Callable[[np.ndarray], np.ndarray]) -> Callable[..., Any]:
    from training.tuning.bandwidth import DEFAULT_PBA, run_predictor

    def make(env: Any, _seed: int) -> GridPolicyTuner:
        def segment(offset: int) -> int:
            starts = env._segments()
            return starts[(env.t + offset) % len(starts)]

        def context() -> list[float]:  # the day before the next decision's day
            s = segment(0)
            return day_features(env.y[s - env.segment : s])

        def default() -> float:  # the default setting on the day just observed
            s = segment(-1)
            w, c, u = DEFAULT_PBA
            return run_predictor(env.y, s, s + env.segment, int(w), float(c), int(u))["reward"]

        return GridPolicyTuner(q_values, env, tuple(DEFAULT_PBA), context, default)

    return make


def consensus_tuner_factory(q_values: Callable[[np.ndarray], np.ndarray]) -> Callable[..., Any]:
    from training.tuning.consensus import DEFAULT_ACP

    def make(env: Any, _seed: int) -> GridPolicyTuner:
        base = env.measure(DEFAULT_ACP, noise=False)["reward"]
        return GridPolicyTuner(q_values, env, tuple(DEFAULT_ACP), list, lambda: base)

    return make
