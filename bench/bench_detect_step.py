"""The detect step alone on warm series: µs per window of `detect_batch` (issue 18).

`--series` simulated series (`bench_detect.simulated_windows`: a noisy daily cycle, 5 s
samples, one-minute windows) warm up for `--warm` windows (past the novelty tier's 100
shapes and its calibrators' 50 ranks); the state is then snapshotted, and `--rounds` rounds
of one window per series go through `operators.detection.series.detect_batch` (as the flow's
shard step runs them), `--repeats` times from the same snapshot. Prints each repeat's µs per
window and the alerts raised; then, on the warm states, the novelty tier's search and
learn alone, the onset dating alone, robust z's scoring with and without its warm-up
widening and at the resolution floor, and what pickling the states for a recovery snapshot costs
(`DetectLogic.snapshot` does that at every epoch that touched the shard). To compare two
trees on the same windows run it in each (a `git worktree` of the base), alternated; that
they decide alike is for the tests to show (tests/operators/test_batch_detect.py), not this
timer.

    python bench/bench_detect_step.py                     # 1,000 series, 250 + 80 windows
    python bench/bench_detect_step.py --series 200 --rounds 200
    python bench/bench_detect_step.py --hosts-of-ten --load-off   # ten DWCP metrics a host

`--hosts-of-ten` names the series as the ten DWCP metrics of each host, so the load-residual
tier finds its proxy (cpu_util) in every round; `--load-off` times the same windows with that
tier off too, alternated with the shipped decision, and prints both.
"""

from __future__ import annotations

import argparse
import dataclasses
import pickle
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python bench/...` too

from bench.bench_detect import simulated_windows
from dataflows.steps import DetectShard, ShardSnapshot
from novacron_ml.core.catalogue import DWCP_METRICS
from operators.detection.novelty import score_many as score_novelty
from operators.detection.robust_z import RobustZConfig
from operators.detection.robust_z import score_many as score_robust
from operators.detection.series import (
    CombineConfig,
    detect_batch,
    new_series_state,
    tiers_for,
    track_onset,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--series", type=int, default=1000)
    parser.add_argument("--warm", type=int, default=250, help="windows before timing")
    parser.add_argument("--rounds", type=int, default=80, help="windows per series timed")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--hosts-of-ten", action="store_true", help="series as the ten DWCP metrics of a host"
    )
    parser.add_argument(
        "--load-off", action="store_true", help="also time the decision without the load tier"
    )
    args = parser.parse_args()
    metrics = tuple(m.name for m in DWCP_METRICS) if args.hosts_of_ten else ("latency_p99_ms",)
    windows = simulated_windows(args.series, args.warm + args.rounds, seed=1, metrics=metrics)
    config = RobustZConfig()
    combines = {"shipped": CombineConfig()}
    if args.load_off:
        combines["load tier off"] = CombineConfig(load_threshold=None)
    snapshots = {}
    for name, combine in combines.items():
        tiers = tiers_for(config, combine)
        states = [new_series_state(w[0].series, config, combine, tiers) for w in windows]
        for r in range(args.warm):
            detect_batch(states, [w[r] for w in windows], tiers)
        snapshots[name] = (tiers, pickle.dumps(states))
    per_window: dict[str, list[float]] = {name: [] for name in combines}
    alerts = dict.fromkeys(combines, 0)
    for _ in range(args.repeats):  # alternated: this VM's speed drifts
        for name, (tiers, frozen) in snapshots.items():
            states = pickle.loads(frozen)
            start = time.perf_counter()
            for r in range(args.warm, args.warm + args.rounds):
                alerts[name] += sum(
                    a is not None for a in detect_batch(states, [w[r] for w in windows], tiers)
                )
            per_window[name].append(
                (time.perf_counter() - start) / (args.rounds * args.series) * 1e6
            )
    for name, times in per_window.items():
        print(
            f"{name}: {args.series:,} series, {args.warm} + {args.rounds} windows: "
            + " · ".join(f"{t:.1f}" for t in times)
            + f" µs/window (best {min(times):.1f}); {alerts[name]} alerts in all"
        )
    snapshot = snapshots["shipped"][1]
    states = pickle.loads(snapshot)
    # the novelty tier's two per-window parts alone, on the warm snapshot: the batched
    # nearest-shape search (`score_many`, no state change) and each series' `learn`
    warm = pickle.loads(snapshot)
    with_tier = [i for i, s in enumerate(warm) if s.novelty is not None]
    novelty = [warm[i].novelty for i in with_tier]
    means = [windows[i][args.warm]["mean"] for i in with_tier]
    search = []
    for _ in range(10 * args.repeats):  # one call is ~20 ms: best of many
        start = time.perf_counter()
        score_novelty(novelty, means)
        search.append((time.perf_counter() - start) / len(novelty) * 1e6)
    learn = []
    for _ in range(10 * args.repeats):  # each from the same warm states
        again = pickle.loads(snapshot)
        fresh = [again[i].novelty for i in with_tier]
        start = time.perf_counter()
        for detector, mean in zip(fresh, means, strict=True):
            detector.learn(mean)
        learn.append((time.perf_counter() - start) / len(fresh) * 1e6)
    print(
        f"novelty alone (best of {10 * args.repeats}): search {min(search):.1f} µs/series, "
        f"learn {min(learn):.1f} µs/series"
    )
    # the onset dating alone (`track_onset`, every window; stop 42): the CUSUM on each warm
    # state, fed deviations around its reference value so it leaves and returns to zero
    dated = pickle.loads(snapshot)
    deviations = np.random.default_rng(1).exponential(2.5, len(dated)).tolist()
    onset = []
    for r in range(10 * args.repeats):
        start = time.perf_counter()
        for state, deviation in zip(dated, deviations, strict=True):
            track_onset(state, r * 60_000, deviation)
        onset.append((time.perf_counter() - start) / len(dated) * 1e6)
    print(f"onset dating alone (best of {10 * args.repeats}): {min(onset):.2f} µs/series")
    # robust z's batched scoring alone, its scale widened in warm-up (stop 43) and not: on
    # these full baselines the factor is 1, so what differs is the step's own cost
    widened = [s.detector for s in pickle.loads(snapshot)]
    plain = [s.detector for s in pickle.loads(snapshot)]
    resolution = [s.detector for s in pickle.loads(snapshot)]  # relative_floor 0
    for d in plain:
        d.config = dataclasses.replace(d.config, warmup=False)
    for d in resolution:
        d.config = dataclasses.replace(d.config, relative_floor=0.0)
    values = [windows[i][args.warm]["mean"] for i in range(len(widened))]
    scoring: dict[str, list[float]] = {"widened": [], "not widened": [], "resolution": []}
    for _ in range(10 * args.repeats):  # alternated
        for name, dets in (
            ("widened", widened),
            ("not widened", plain),
            ("resolution", resolution),
        ):
            start = time.perf_counter()
            score_robust(dets, values)
            scoring[name].append((time.perf_counter() - start) / len(dets) * 1e6)
    best = {name: min(times) for name, times in scoring.items()}
    print(
        f"robust z scoring alone (best of {10 * args.repeats}, alternated): widened "
        f"{best['widened']:.2f} · not widened {best['not widened']:.2f} · floored at the "
        f"resolution (relative_floor 0) {best['resolution']:.2f} µs/series"
    )
    # what a recovery snapshot of these states costs: `DetectLogic.snapshot` pickles the
    # shard, whose states go as columns (`DetectShard.__getstate__`); beside it, the same
    # states pickled one by one (the snapshot before stop 37)
    shard = DetectShard(series={w[0].series: s for w, s in zip(windows, states, strict=True)})
    ways: dict[str, tuple[Callable[[], Any], Callable[[Any], Any], Callable[[Any], int]]] = {
        "state by state": (
            lambda: pickle.dumps(states, protocol=pickle.HIGHEST_PROTOCOL),
            pickle.loads,
            len,
        ),
        "shard as columns": (
            lambda: pickle.dumps(shard, protocol=pickle.HIGHEST_PROTOCOL),
            pickle.loads,
            len,
        ),
        "recovery snapshot": (  # what DetectLogic.snapshot returns (Bytewax pickles it later)
            lambda: ShardSnapshot.of(shard),
            ShardSnapshot.restore,
            lambda snap: len(snap.state) + sum(b.nbytes for b in snap.blocks),
        ),
    }
    timed: dict[str, tuple[list[float], list[float], int]] = {n: ([], [], 0) for n in ways}
    for _ in range(args.repeats):  # alternated: this VM's speed drifts
        for name, (dump, load, size_of) in ways.items():
            dumps, loads, _ = timed[name]
            start = time.perf_counter()
            data = dump()
            dumps.append(time.perf_counter() - start)
            start = time.perf_counter()
            load(data)
            loads.append(time.perf_counter() - start)
            timed[name] = (dumps, loads, size_of(data))
    # the floor a layout of pooled arrays would still pay: copying the states' array bytes
    arrays = [a for state in states for a in _arrays(state)]
    copies = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        for a in arrays:
            a.tobytes()
        copies.append(time.perf_counter() - start)
    for name, (dumps, loads, size) in timed.items():
        print(
            f"snapshot {name}: {size / args.series / 1024:.1f} KB/series; take "
            f"{min(dumps) * 1e3:.0f} ms ({min(dumps) / args.series * 1e6:.0f} µs/series), "
            f"restore {min(loads) * 1e3:.0f} ms ({min(loads) / args.series * 1e6:.0f} "
            f"µs/series; best of {args.repeats})"
        )
    print(
        f"the {len(arrays) / args.series:.0f} arrays a series copied alone: "
        f"{min(copies) / args.series * 1e6:.0f} µs/series"
    )


def _arrays(obj: object, depth: int = 0) -> list[np.ndarray]:
    """The numpy arrays a state holds (attributes, dict values, a few levels down)."""
    if isinstance(obj, np.ndarray):
        return [obj]
    if depth > 4:
        return []
    children: list[object] = []
    if isinstance(obj, dict):
        children = list(obj.values())
    elif hasattr(obj, "__dict__"):
        children = list(vars(obj).values())
    elif hasattr(obj, "__slots__"):
        children = [getattr(obj, k) for k in obj.__slots__ if hasattr(obj, k)]
    return [a for child in children for a in _arrays(child, depth + 1)]


if __name__ == "__main__":
    main()
