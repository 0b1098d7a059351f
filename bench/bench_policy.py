"""The DQN policy's cost in a flow (issue 21 target: <= 5 us per event at the default decision
interval).

One ONNX Runtime session (one thread, as the flow opens models) on the committed
`models/onnx/dqn_compression.json`; a decision round scores every host's state in one call.
Per event = the round's time / the events the hosts send in one decision interval (the
simulator's 10 DWCP metrics every 5 s). Run: `python bench/bench_policy.py [--hosts 1000]`.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from training.tuning.dqn import STATE_NAMES, onnx_q_values

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--manifest", type=Path, default=ROOT / "models/onnx/dqn_compression.json")
    p.add_argument("--hosts", type=int, nargs="+", default=[1, 100, 1000, 10_000])
    p.add_argument("--interval-s", type=float, default=60.0, help="decision interval (60)")
    p.add_argument("--metrics", type=int, default=10, help="metrics per host (10)")
    p.add_argument("--step-s", type=float, default=5.0, help="seconds between samples (5)")
    p.add_argument("--reps", type=int, default=50)
    args = p.parse_args()
    q = onnx_q_values(args.manifest)
    rng = np.random.default_rng(0)
    events_per_host = args.metrics * args.interval_s / args.step_s
    print(f"decision every {args.interval_s:g} s; {events_per_host:g} events per host per decision")
    print(f"{'hosts':>7} {'round ms (median)':>18} {'us per host':>12} {'us per event':>13}")
    for hosts in args.hosts:
        states = rng.uniform(0, 1, (hosts, len(STATE_NAMES))).astype(np.float32)
        q(states)  # warm-up
        times = []
        for _ in range(args.reps):
            start = time.perf_counter()
            q(states).argmax(axis=1)
            times.append(time.perf_counter() - start)
        med = statistics.median(times)
        print(f"{hosts:>7} {1000 * med:18.3f} {1e6 * med / hosts:12.2f} "
              f"{1e6 * med / (hosts * events_per_host):13.4f}")  # fmt: skip


if __name__ == "__main__":
    main()
