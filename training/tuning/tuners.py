"""Tuners compared on an environment, side by side (issue 21 (5); docs/TUNING.md).

Every tuner sees the same thing a deployed one would: it proposes a configuration, the
environment measures it (with noise) and returns the reward. The baselines:

- `default`: never changes the default configuration;
- `grid-best`: the best static configuration of the measured grid for the starting traffic
  (an oracle: it has read the whole table; the reference "100 %");
- `random`: random configurations for `budget` decisions, then the best one observed;
- `hill-climb`: the DQN's own action space without learning: raise or lower one knob a step,
  keep the move if the observed reward improved;
- `linucb`: a contextual bandit over every configuration, a linear model of the reward on
  the knobs' features (one-hot per level, chunk and window, plus the mix as context);
- `optuna`: Bayesian optimisation (Optuna's TPE sampler) for `budget` decisions, then the best
  trial.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

Config = tuple[int, ...]


class Env(Protocol):
    configs: list[Config]

    def step(self, config: Sequence[int]) -> dict[str, float]: ...

    def measure(self, config: Sequence[int], noise: bool = True) -> dict[str, float]: ...

    def best(self) -> tuple[Config, float]: ...

    @property
    def mix(self) -> dict[str, float]: ...


class Tuner(Protocol):
    name: str

    def propose(self) -> Config: ...

    def observe(self, config: Config, reward: float) -> None: ...


@dataclass
class Fixed:
    config: Config
    name: str = "default"

    def propose(self) -> Config:
        return self.config

    def observe(self, config: Config, reward: float) -> None:
        pass


@dataclass
class RandomSearch:
    configs: list[Config]
    budget: int
    seed: int = 0
    name: str = "random"
    seen: dict[Config, list[float]] = field(default_factory=dict)
    t: int = 0

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)

    def propose(self) -> Config:
        self.t += 1
        if self.t <= self.budget or not self.seen:
            return self.configs[int(self.rng.integers(len(self.configs)))]
        return max(self.seen, key=lambda c: float(np.mean(self.seen[c])))

    def observe(self, config: Config, reward: float) -> None:
        if self.t <= self.budget:
            self.seen.setdefault(config, []).append(reward)


@dataclass
class HillClimb:
    """Raise or lower one knob one step of its grid; keep it if the reward rose."""

    configs: list[Config]
    start: Config
    seed: int = 0
    name: str = "hill-climb"

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)
        self.axes = [sorted({c[i] for c in self.configs}) for i in range(len(self.start))]
        self.current = self.start
        self.current_reward: float | None = None
        self.trial: Config | None = None

    def propose(self) -> Config:
        if self.current_reward is None:
            return self.current
        i = int(self.rng.integers(len(self.axes)))
        axis = self.axes[i]
        j = axis.index(self.current[i]) + (1 if self.rng.random() < 0.5 else -1)
        j = min(max(j, 0), len(axis) - 1)
        self.trial = tuple(axis[j] if k == i else v for k, v in enumerate(self.current))
        return self.trial

    def observe(self, config: Config, reward: float) -> None:
        if self.current_reward is None or config == self.current:
            old = self.current_reward
            self.current_reward = reward if old is None else 0.7 * old + 0.3 * reward
        elif reward > self.current_reward:
            self.current, self.current_reward = config, reward


class LinUCB:
    """LinUCB over the grid: reward ~ theta . phi(config, mix), phi = one-hot knobs and their
    products with the mix shares (A^-1 kept by Sherman-Morrison updates)."""

    name = "linucb"

    def __init__(
        self, configs: list[Config], mix: Callable[[], dict[str, float]], alpha: float = 1.0
    ) -> None:
        self.configs = configs
        self.mix = mix
        self.alpha = alpha
        axes = [sorted({c[i] for c in configs}) for i in range(len(configs[0]))]
        self.base = np.array(
            [
                np.concatenate(
                    [[1.0], *(np.eye(len(ax))[ax.index(v)] for ax, v in zip(axes, c, strict=True))]
                )
                for c in configs
            ]
        )
        self.index = {c: i for i, c in enumerate(configs)}
        self.kinds = sorted(mix())
        d = self.base.shape[1] * (1 + len(self.kinds))
        self.a_inv = np.eye(d)
        self.b = np.zeros(d)

    def _phis(self) -> np.ndarray:
        m = self.mix()
        ctx = np.array([m.get(k, 0.0) for k in self.kinds])
        crossed = (self.base[:, None, :] * ctx[None, :, None]).reshape(len(self.base), -1)
        return np.concatenate([self.base, crossed], axis=1)

    def propose(self) -> Config:
        phis = self._phis()
        theta = self.a_inv @ self.b
        bonus = np.sqrt(np.einsum("ij,jk,ik->i", phis, self.a_inv, phis))
        return self.configs[int(np.argmax(phis @ theta + self.alpha * bonus))]

    def observe(self, config: Config, reward: float) -> None:
        phi = self._phis()[self.index[config]]
        av = self.a_inv @ phi
        self.a_inv -= np.outer(av, av) / (1.0 + phi @ av)
        self.b += reward * phi


class OptunaBO:
    """Optuna ask/tell over the grid's knobs for `budget` decisions, then the best trial."""

    name = "optuna"

    def __init__(self, configs: list[Config], budget: int, seed: int = 0) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.axes = [sorted({c[i] for c in configs}) for i in range(len(configs[0]))]
        self.study = optuna.create_study(
            direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed)
        )
        self.budget = budget
        self.t = 0
        self.trial: Any = None

    def propose(self) -> Config:
        self.t += 1
        if self.t > self.budget:
            p = self.study.best_params
            return tuple(p[f"k{i}"] for i in range(len(self.axes)))
        self.trial = self.study.ask()
        return tuple(
            self.trial.suggest_categorical(f"k{i}", axis) for i, axis in enumerate(self.axes)
        )

    def observe(self, config: Config, reward: float) -> None:
        if self.t <= self.budget and self.trial is not None:
            self.study.tell(self.trial, reward)


@dataclass
class RunResult:
    tuner: str
    rewards: list[float]
    true_rewards: list[float]
    best: list[float]
    configs: list[Config]
    switch_at: int | None

    def fractions(self) -> np.ndarray:
        """Share of the grid-best per decision: reward / best for rewards (> 0), and
        best cost / cost for costs (rewards < 0)."""
        true = np.asarray(self.true_rewards)
        best = np.asarray(self.best)
        if (best > 0).all():
            return true / best
        return best / np.minimum(true, -1e-12)

    def summary(self, regret_horizon: int = 200) -> dict[str, Any]:
        true = np.asarray(self.true_rewards)
        best = np.asarray(self.best)
        frac = self.fractions()
        end = self.switch_at or len(true)

        def first_at(start: int, stop: int) -> int | None:
            hit = np.flatnonzero(frac[start:stop] >= 0.95)
            return int(hit[0]) + 1 if hit.size else None

        tail = slice(max(0, end - 20), end)
        seen = float(np.mean(self.rewards))
        out = {
            "tuner": self.tuner,
            "mean_reward": float(true.mean()),
            "final_fraction_of_best": float(frac[tail].mean()),
            # what the run got, decision by decision, against the grid-best setting's mean:
            # the yardstick of a tuner that adapts to each period (bandwidth's hindsight)
            "realized_fraction_of_best": float(best.mean() / min(seen, -1e-12))
            if (best < 0).all()
            else float(seen / best.mean()),
            "decisions_to_95pct": first_at(0, end),
            "regret_first_200": float((best - true)[:regret_horizon].sum()),
        }
        if self.switch_at is not None:
            out["reconverge_decisions"] = first_at(self.switch_at, len(true))
            out["final_fraction_after_switch"] = float(frac[-20:].mean())
        return out


def run(tuner: Tuner, env: Env, decisions: int, switch_at: int | None = None) -> RunResult:
    """`decisions` propose/measure/observe rounds; the true (noise-free) reward and the
    current grid-best are recorded beside the noisy one the tuner saw."""
    rewards, true, best, configs = [], [], [], []
    for _ in range(decisions):
        config = tuner.propose()
        obs = env.step(config)
        tuner.observe(config, obs["reward"])
        rewards.append(obs["reward"])
        true.append(env.measure(config, noise=False)["reward"])
        best.append(env.best()[1])
        configs.append(config)
    return RunResult(tuner.name, rewards, true, best, configs, switch_at)


def remeasure_loss(env: Env, chosen: Config, observed: float, repeats: int = 1) -> float:
    """Relative loss of a configuration chosen as best when measured again (fresh noise):
    the winner's-curse check the tuning literature now reports."""
    again = float(np.mean([env.measure(chosen)["reward"] for _ in range(repeats)]))
    return (observed - again) / abs(observed) if observed != 0 else 0.0


def chosen_of(result: RunResult, tuner: Tuner) -> tuple[Config, float] | None:
    """The configuration a tuner ends on and the mean reward it observed for it in the last
    phase (after the traffic switch, if there was one): what it believed when it chose."""
    last = result.configs[-1]
    start = result.switch_at or 0
    pairs = list(zip(result.configs, result.rewards, strict=True))[start:]
    seen = [r for c, r in pairs if c == last]
    return (last, float(np.mean(seen))) if seen else None
