"""`novacron-ml tune eval`: every tuner on an environment, side by side, over several seeds.

Per tuner, means over seeds: the true (noise-free) reward, the share of the grid-best reached
at the end, decisions until it first reaches 95 % of the best, regret over the first 200
decisions, decisions to re-converge after the traffic mix changes, and the share of
configurations chosen as best that lose more than 10 % when measured again.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from training.tuning.compression import DEFAULT_CONFIG, CompressionEnv, CompressionTable
from training.tuning.tuners import (
    Fixed,
    HillClimb,
    LinUCB,
    OptunaBO,
    RandomSearch,
    RunResult,
    Tuner,
    chosen_of,
    remeasure_loss,
    run,
)

TUNERS: tuple[str, ...] = ("default", "grid-best", "random", "hill-climb", "linucb", "optuna")


def make_tuner(
    name: str,
    env: Any,
    budget: int,
    seed: int,
    policy: Any = None,
    default: tuple[Any, ...] = DEFAULT_CONFIG,
) -> Tuner:
    if name == "default":
        return Fixed(default)
    if name == "grid-best":
        return Fixed(env.best()[0], name="grid-best")
    if name == "random":
        return RandomSearch(env.configs, budget, seed)
    if name == "hill-climb":
        return HillClimb(env.configs, default, seed)
    if name == "linucb":
        return LinUCB(env.configs, lambda: env.mix, alpha=0.5 * abs(env.best()[1]))
    if name == "optuna":
        return OptunaBO(env.configs, budget, seed)
    if name == "dqn" and policy is not None:
        return policy(env, seed)
    if name == "hindsight":
        from training.tuning.bandwidth import BandwidthEnv, Hindsight

        if not isinstance(env, BandwidthEnv):
            raise ValueError(
                "hindsight needs the period before each decision rerun: --env bandwidth"
            )
        return Hindsight(env, tuple(default))  # type: ignore[return-value]  # float knobs
    raise ValueError(f"unknown tuner {name!r} (known: {', '.join(TUNERS)}, dqn, hindsight)")


def evaluate(
    table: CompressionTable | None,
    *,
    make_env: Callable[[int], Any] | None = None,
    default: tuple[Any, ...] = DEFAULT_CONFIG,
    tuners: tuple[str, ...] = TUNERS,
    seeds: int = 5,
    decisions: int = 300,
    budget: int = 50,
    start_mix: str = "telemetry",
    switch_to: str | None = "migration",
    switch_at: int | None = 150,
    link_mb_s: float = 125.0,
    policy: Any = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    schedule = {switch_at: switch_to} if switch_to and switch_at else {}
    per_tuner: dict[str, list[dict[str, Any]]] = {}
    curves: dict[str, list[np.ndarray]] = {}
    losses: dict[str, list[float]] = {}
    total, done = len(tuners) * seeds, 0
    for seed in range(seeds):
        for name in tuners:
            if make_env is not None:
                env: Any = make_env(1000 + seed)
            else:
                assert table is not None
                env = CompressionEnv(
                    table, start_mix, link_mb_s=link_mb_s, schedule=schedule, seed=1000 + seed
                )
            tuner = make_tuner(name, env, budget, seed, policy, default)
            result = run(
                tuner, env, decisions, switch_at if schedule and make_env is None else None
            )
            per_tuner.setdefault(name, []).append(result.summary())
            curves.setdefault(name, []).append(result.fractions())
            chosen = chosen_of(result, tuner)
            if chosen is not None and name not in ("default", "grid-best"):
                losses.setdefault(name, []).append(remeasure_loss(env, *chosen))
            done += 1
            if progress is not None:
                progress(done, total)
    rows = {}
    for name, summaries in per_tuner.items():
        keys = [k for k in summaries[0] if k != "tuner"]
        row: dict[str, Any] = {}
        for k in keys:
            vals = [s[k] for s in summaries]
            defined = [v for v in vals if v is not None]
            row[k] = float(np.mean(defined)) if defined else None
            if k in ("decisions_to_95pct", "reconverge_decisions"):
                row[f"{k}_reached"] = f"{len(defined)}/{len(vals)}"
        lost = losses.get(name, [])
        row["chosen_lose_10pct"] = float(np.mean([x > 0.10 for x in lost])) if lost else None
        rows[name] = row
    return {
        "settings": {
            "seeds": seeds,
            "decisions": decisions,
            "budget": budget,
            "start_mix": start_mix,
            "switch_to": switch_to,
            "switch_at": switch_at,
            "link_mb_s": link_mb_s,
            "table": table.meta if table is not None else None,
        },
        "tuners": rows,
        "curves": {k: np.mean(v, axis=0).tolist() for k, v in curves.items()},
    }


def plot(report: dict[str, Any], path: Path, what: str = "compression") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4), dpi=100)
    for name, curve in report["curves"].items():
        ax.plot(np.arange(1, len(curve) + 1), curve, lw=1.2, label=name)
    s = report["settings"]
    if s.get("switch_at"):
        ax.axvline(s["switch_at"], color="#7f8c8d", ls="--", lw=1)
        ax.annotate(f"mix -> {s['switch_to']}", (s["switch_at"], 0.02), fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("decision")
    ax.set_ylabel("reward / grid-best (noise-free)")
    ax.set_title(f"{what} tuners, mean of {s['seeds']} seeds")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


__all__ = ["TUNERS", "RunResult", "evaluate", "make_tuner", "plot"]
