"""Cost per feature vector of the per-series detector stack, side by side (issue 4).

Feature windows of simulated series (the flow's own feature engine) go through
`operators.detection.series.detect_window` five ways, in one run on the same windows: the naive
baseline (robust z only, the foundation detector); the alert decision as the flow runs it by
default (robust z, novelty, spread, the probability, cooldown, episodes and explanations); the
same batched across series as the flow's shard step runs it (`detect_batch`, one call per step
of all series: issue 18); the same + the River tier (off by default since issue 17); and the
decision with the NAB runner's 25,000-window histories. Prints µs per window (median of
`--repeats`), p50/p99 of single-window times, the ratio to the baseline and the pickled
state per series after the run (what a recovery snapshot holds). Then the
Isolation Forest tier (the committed ONNX models, scored in the feature stage) per window at
micro-batch sizes 1, 64 and 512.

    python bench/bench_detect.py                       # 20 series x 2,000 one-minute windows
    python bench/bench_detect.py --series 1000 --windows 300 --repeats 1
    python bench/bench_detect.py --series 50 --windows 3000 --json out/bench_detect.json
"""

from __future__ import annotations

import argparse
import json
import pickle
import platform
import time
from typing import Any

import numpy as np

from novacron_ml.core.features import FeatureWindow
from novacron_ml.core.manifest import REGISTRY
from operators.detection.calibration import CalibrationConfig
from operators.detection.iforest import IsolationForestTier
from operators.detection.novelty import NoveltyConfig
from operators.detection.river import RiverConfig
from operators.detection.robust_z import RobustZConfig
from operators.detection.series import (
    CombineConfig,
    SeriesState,
    Tiers,
    detect_batch,
    detect_window,
    new_series_state,
    tiers_for,
)
from training.features import feature_windows


def simulated_windows(
    n_series: int, n_windows: int, seed: int, metrics: tuple[str, ...] = ("latency_p99_ms",)
) -> list[list[FeatureWindow]]:
    """Per series, `n_windows` one-minute feature windows of a noisy daily cycle (5 s samples);
    series `s` is metric `metrics[s % len(metrics)]` of host `s // len(metrics)`."""
    rng = np.random.default_rng(seed)
    out = []
    for s in range(n_series):
        t_s = np.arange(0, n_windows * 60, 5, dtype=np.int64)
        v = 50 + 20 * np.sin(2 * np.pi * t_s / 86_400 + s) + rng.normal(0, 3, len(t_s))
        host, metric = divmod(s, len(metrics))
        out.append(feature_windows(t_s * 1000, v, series=f"c/h{host}/{metrics[metric]}"))
    return out


def run(
    states: list[SeriesState], series: list[list[FeatureWindow]], detectors: Tiers
) -> tuple[float, np.ndarray]:
    """Every window through `detect_window`, with its detectors built once, as the flow's
    detect step does (`dataflows.steps.make_detect_step`)."""
    times = []
    start = time.perf_counter()
    for i in range(max(len(w) for w in series)):
        for state, windows in zip(states, series, strict=True):
            if i < len(windows):
                t0 = time.perf_counter_ns()
                detect_window(state, windows[i], detectors)
                times.append(time.perf_counter_ns() - t0)
    total = time.perf_counter() - start
    return total, np.array(times) / 1000.0


def run_batched(
    states: list[SeriesState], series: list[list[FeatureWindow]], detectors: Tiers
) -> tuple[float, np.ndarray]:
    """The same windows through `detect_batch`: each step's windows of every series together,
    as the flow's shard step scores a round (times per window: the round's time / its size)."""
    times = []
    start = time.perf_counter()
    for i in range(max(len(w) for w in series)):
        pairs = [(st, ws[i]) for st, ws in zip(states, series, strict=True) if i < len(ws)]
        t0 = time.perf_counter_ns()
        detect_batch([p[0] for p in pairs], [p[1] for p in pairs], detectors)
        times.extend([(time.perf_counter_ns() - t0) / len(pairs)] * len(pairs))
    total = time.perf_counter() - start
    return total, np.array(times) / 1000.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--series", type=int, default=20)
    ap.add_argument("--windows", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()
    series = simulated_windows(args.series, args.windows, args.seed)
    n = sum(len(w) for w in series)
    rz = RobustZConfig()
    variants: dict[str, Any] = {
        "baseline: robust z only": None,
        "the decision (flow defaults)": CombineConfig(),
        "the decision, batched across series": CombineConfig(),
        "+ River HST (off by default)": CombineConfig(river=RiverConfig()),
        "the decision, NAB histories": CombineConfig(
            novelty=NoveltyConfig(history=25_000), calibration=CalibrationConfig(history=25_000)
        ),
    }
    results: list[dict[str, Any]] = []
    for name, combine in variants.items():
        totals, p50, p99 = [], [], []
        for _ in range(args.repeats):
            states = [new_series_state(w[0].series, rz, combine or CombineConfig()) for w in series]
            if combine is None:
                for st in states:
                    st.novelty = None
                    st.baseline = None
                    st.river = None
                    st.spread = None
            step = run_batched if "batched" in name else run
            total, times = step(states, series, tiers_for(rz, combine or CombineConfig()))
            totals.append(total)
            p50.append(np.percentile(times, 50))
            p99.append(np.percentile(times, 99))
        results.append(
            {
                "variant": name,
                "us_per_window": 1e6 * float(np.median(totals)) / n,
                "p50_us": float(np.median(p50)),
                "p99_us": float(np.median(p99)),
                # pickled state per series after the run (what a recovery snapshot holds)
                "state_kb": float(np.mean([len(pickle.dumps(st)) for st in states])) / 1024,
            }
        )
    base = results[0]["us_per_window"]
    print(f"{n:,} windows ({args.series} series x {args.windows}), median of {args.repeats} runs")
    print(
        f"{'variant':40s} {'us/window':>10s} {'p50 us':>8s} {'p99 us':>8s} {'x base':>7s} "
        f"{'state KB':>9s}"
    )
    for r in results:
        r["ratio"] = r["us_per_window"] / base
        print(
            f"{r['variant']:40s} {r['us_per_window']:10.1f} {r['p50_us']:8.1f} "
            f"{r['p99_us']:8.1f} {r['ratio']:7.2f} {r['state_kb']:9.1f}"
        )
    tier = IsolationForestTier(str(REGISTRY))
    flat = [w for ws in series for w in ws]
    print(f"\n{'Isolation Forest tier (ONNX), batch':40s} {'us/window':>10s}")
    for batch in (1, 64, 512):
        best = np.inf
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            for i in range(0, len(flat), batch):
                tier.score(flat[i : i + batch])
            best = min(best, time.perf_counter() - t0)
        us = 1e6 * best / len(flat)
        results.append({"variant": f"iforest batch {batch}", "us_per_window": us})
        print(f"{batch:<40d} {us:10.1f}")
    if args.json:
        machine = platform.processor() or platform.machine()
        with open(args.json, "w") as f:
            json.dump({"machine": machine, "results": results}, f)


if __name__ == "__main__":
    main()
