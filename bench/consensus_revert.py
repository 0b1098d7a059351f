"""How often the consensus loop's revert guard undoes a change, judged on single intervals or
on the means of up to `HISTORY` intervals (operators/tuning/consensus.py; docs/TUNING.md).

    python bench/consensus_revert.py [--trials 100]

A real `ClusterTuner` in apply mode (canary 100 %, the default margins) is fed a cluster's
reports drawn from the consensus table (one simulated run per 5-s tick, decisions a minute):
10 intervals at the old setting, then the policy proposes the move and is told to keep after
it; 30 intervals are watched. Printed: the share of trials whose change was reverted, for
changes the table says are better (a revert there is a false alarm) and worse (a revert is
the guard working).
"""

from __future__ import annotations

import argparse
import dataclasses
import pickle
from pathlib import Path

import numpy as np

from novacron_ml.core.schema import MetricEvent
from novacron_ml.core.tuning import ACP_KNOBS
from operators.tuning import consensus
from operators.tuning.consensus import OBSERVED, ClusterTuner, ConsensusContext, ConsensusTable
from operators.tuning.guardrails import GuardrailConfig

PAIRS = [  # (old, new): the first three better by the table, the last two worse
    ((400, 1, 3), (200, 1, 3)),
    ((400, 1, 4), (400, 1, 3)),
    ((200, 1, 3), (100, 1, 3)),
    ((400, 1, 3), (400, 1, 4)),
    ((200, 1, 3), (400, 1, 3)),
]


def trial(table: ConsensusTable, old: tuple[int, ...], new: tuple[int, ...], seed: int) -> bool:
    rng = np.random.default_rng(seed)
    i = next(k for k in range(3) if old[k] != new[k])
    action = 2 * i + (1 if new[i] > old[i] else 0)
    phase = {"move": False}

    def q_values(_states: np.ndarray) -> np.ndarray:
        q = np.zeros((1, 7), dtype=np.float32)
        q[0, action if phase["move"] else 6] = 1.0
        return q

    # the move is made whatever the safe set says (it would block the worse ones); then the
    # default margins judge it
    lax = GuardrailConfig(canary_fraction=1.0, cooldown_s=1e9, throughput_margin=0.99,
                          p99_margin=1e9)  # fmt: skip
    judge = dataclasses.replace(lax, throughput_margin=0.05, p99_margin=0.10)
    ctx = ConsensusContext(q_values, table, lax, "bench", mode="apply", min_gain=-1.0)
    tuner = ClusterTuner("c", config=old)
    reverted = False
    STATE_BYTES.append(0)
    for minute in range(42):
        phase["move"] = minute == 11
        if minute == 12 and tuner.guard is not None:
            tuner.guard.cfg = judge
        for tick in range(12):
            ts = (minute * 60 + tick * 5) * 1000
            row = table.runs[tuner.config][int(rng.integers(len(table.runs[tuner.config])))]
            for name, value in zip(OBSERVED, row, strict=True):
                out = tuner.on_event(MetricEvent(ts, "h", "c", name, float(value)), ctx)
                reverted |= any(getattr(r, "action", "") == "revert" for r in out)
    STATE_BYTES[-1] = len(pickle.dumps(tuner))
    return reverted


STATE_BYTES: list[int] = []
"""Each trial's cluster state at its end, pickled (what a recovery snapshot holds)."""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=100)
    p.add_argument("--table", type=Path, default=Path("models/tuning/consensus_table.json"))
    args = p.parse_args()
    table = ConsensusTable.load(args.table)
    keep = consensus.HISTORY
    print(f"{'change':<28} {'table cost':>17}  reverted: single interval  means of {keep}")
    for old, new in PAIRS:
        shares = []
        for history in (1, keep):
            consensus.HISTORY = history
            n = sum(trial(table, old, new, s) for s in range(args.trials))
            shares.append(n / args.trials)
        consensus.HISTORY = keep
        better = "better" if table.cost(new) < table.cost(old) else "worse"
        costs = f"{table.cost(old):.3f} -> {table.cost(new):.3f}"
        change = f"{old} -> {new}"
        print(f"{change:<28} {costs:>17}  {better:<6} {shares[0]:>9.0%} {shares[1]:>12.0%}")
    print(
        f"\nknobs {'/'.join(ACP_KNOBS)}; {args.trials} trials each; 5 % success and 10 % "
        "p99 margins, two bad intervals in a row; a cluster's state "
        f"{np.median(STATE_BYTES) / 1024:.1f} KB pickled (median)"
    )


if __name__ == "__main__":
    main()
