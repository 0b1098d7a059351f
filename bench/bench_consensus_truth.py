"""How many simulations a consensus setting's "true" value needs (docs/TUNING.md#gridq).

The consensus environment scores a setting by the mean cost of `static_runs` SimPy runs. A
run with a leader failure costs ~10x a quiet one, so a mean over few runs ranks luck. This
prints, for the top settings and the default, the mean over 64 runs (seeds 10,000,000+, the
environment's) beside the means of its first and second 16 runs and the share of runs with a
failure-sized cost (> 0.05). Run: `python bench/bench_consensus_truth.py [--runs 64]` (~20 s).
"""

from __future__ import annotations

import argparse

import numpy as np

from training.tuning.consensus import DEFAULT_ACP, ConsensusEnv, simulate

SETTINGS = [(100, 16, 3), (100, 64, 3), (100, 4, 3), (200, 4, 3), (100, 1, 3), (400, 1, 3)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--runs", type=int, default=64)
    args = p.parse_args()
    net = ConsensusEnv().net
    print(f"{'setting':>16} {'mean of all':>12} {'first 16':>9} {'next 16':>9} {'failures':>9}")
    for setting in [*SETTINGS, tuple(DEFAULT_ACP)]:
        costs = -np.array(
            [simulate(setting, net, seed=10_000_000 + s)["reward"] for s in range(args.runs)]
        )
        print(f"{setting!s:>16} {costs.mean():12.4f} {costs[:16].mean():9.4f} "
              f"{costs[16:32].mean():9.4f} {(costs > 0.05).mean():9.0%}")  # fmt: skip


if __name__ == "__main__":
    main()
