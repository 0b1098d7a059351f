"""The DQN policy's cost in a flow (issue 21 target: <= 5 us per event at the default decision
interval).

One ONNX Runtime session (one thread, as the flow opens models) on the committed
`models/onnx/dqn_compression` (its champion); a decision round scores every host's state in
one call.
Per event = the round's time / the events the hosts send in one decision interval (the
simulator's 10 DWCP metrics every 5 s). Run: `python bench/bench_policy.py [--hosts 1000]`.

`--flow`: the whole tuning flow in process (`dataflows.tune`, one worker) on the simulator's
hosts with their tuning metrics (the demo's closed loop, apply mode), in one run twice: with
the ONNX policy, and with a policy that always keeps (no proposal, so no estimates and no
guardrails either). The difference per event is what deciding costs the flow.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np

from novacron_ml.core.registry import champion_manifest
from training.tuning.dqn import STATE_NAMES, onnx_q_values

ROOT = Path(__file__).resolve().parents[1]


def bench_flow(hosts: int, hours: float) -> None:
    from dataflows.inprocess import run_tune_in_process
    from dataflows.io import MessageSource
    from dataflows.tune import tuner_context
    from novacron_ml.app.tune_demo import ClosedLoop
    from novacron_ml.core.settings import Settings
    from novacron_ml.core.simulator import FleetConfig, FleetSimulator
    from novacron_ml.core.tuning import ACTIONS

    settings = Settings(tune={"mode": "apply", "canary_fraction": 1.0})
    real = tuner_context(settings)

    def keep(states: np.ndarray) -> np.ndarray:
        q = np.zeros((len(states), len(ACTIONS)), np.float32)
        q[:, -1] = 1.0
        return q

    from novacron_ml.core.simulator import METRIC_NAMES
    from novacron_ml.core.tuning import TUNING_METRICS

    per_host = len(METRIC_NAMES) + len(TUNING_METRICS)
    print(f"tuning flow, {hosts} hosts, {hours:g} h, {per_host} metrics a host every 5 s, 1 worker")
    print(
        f"{'policy':>8} {'events':>10} {'seconds':>8} {'events/s':>10} {'us/event':>9} {'recs':>6}"
    )
    rows = {}
    stub = replace(real, q_values=keep)
    for name, ctx in (("keep", stub), ("onnx", real), ("keep ", stub)):  # A B A: drift shows
        sim = FleetSimulator(FleetConfig(hosts=hosts, clusters=max(1, hosts // 4),
                                         duration_s=hours * 3600))  # fmt: skip
        loop = ClosedLoop(sim, ctx, 1.0)
        sim.hook = loop.hook
        # made before the timing (the simulator is not the flow); so the loop is open here:
        # settings never reach the hosts and the guardrails revert them, which costs too
        msgs = list(sim.messages("json"))
        seconds = run_tune_in_process(settings, MessageSource(partial(iter, msgs), 1000),
                                      loop.on_items, ctx=ctx)  # fmt: skip
        rows[name] = seconds / len(msgs)
        print(f"{name:>8} {len(msgs):>10,} {seconds:8.2f} {len(msgs) / seconds:10,.0f} "
              f"{1e6 * seconds / len(msgs):9.3f} {len(loop.recommendations):>6}")  # fmt: skip
    keep_us = 1e6 * min(rows["keep"], rows["keep "])
    cost = 1e6 * rows["onnx"] - keep_us
    print(f"deciding costs {cost:+.3f} us per event (onnx - the faster keep run)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--manifest", type=Path, default=champion_manifest("dqn_compression"))
    p.add_argument("--hosts", type=int, nargs="+", default=[1, 100, 1000, 10_000])
    p.add_argument("--interval-s", type=float, default=60.0, help="decision interval (60)")
    p.add_argument("--metrics", type=int, default=10, help="metrics per host (10)")
    p.add_argument("--step-s", type=float, default=5.0, help="seconds between samples (5)")
    p.add_argument("--reps", type=int, default=50)
    p.add_argument("--flow", action="store_true", help="the whole tuning flow (see above)")
    p.add_argument("--hours", type=float, default=2.0, help="--flow: simulated hours (2)")
    args = p.parse_args()
    if args.flow:
        for hosts in args.hosts:
            bench_flow(hosts, args.hours)
        return
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
