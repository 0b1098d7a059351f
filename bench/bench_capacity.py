"""Capacity planner speed: fit + 30-day forecast per series, per model, and N series in
parallel processes (issue 6 targets: <= 0.2 s per series; 1,000 series <= 2 min on 2 cores).

Series: 60 days of hourly history each (daily and weekly cycles, a trend, AR noise; one seed
per series). Run: `python bench/bench_capacity.py [--series 1000] [--workers 2]`.

`--plan N [N ...]`: the whole daily plan instead (CV, the selection rule, the final fit, the
calibrated interval, the exhaustion date: `training.planner.plan_all`), full and fast path,
per series in one process, then N series on a process pool and on a Dask LocalCluster side by
side, with seconds per series, the total, and the linear-scaling projection per worker count
(issue 23: 1,000 series <= 2 min on 2 cores).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from training.capacity import MODELS, ModelOptions, forecast
from training.logs import quiet_prophet

HOUR_S = 3600.0
HISTORY_H = 60 * 24
HORIZON_H = 30 * 24
START_S = 1_767_225_600.0  # 2026-01-01


def make_series(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    h = np.arange(HISTORY_H)
    day = np.sin(2 * np.pi * (h % 24) / 24)
    week = np.where((h // 24) % 7 >= 5, -0.1, 0.0)
    ar = np.zeros(HISTORY_H)
    shocks = rng.normal(0, 0.01, HISTORY_H)
    for i in range(1, HISTORY_H):
        ar[i] = 0.8 * ar[i - 1] + shocks[i]
    base = rng.uniform(0.3, 0.6)
    y = base * (1 + 0.25 * day + week + rng.normal(0.002, 0.001) * h / 24) + ar
    return START_S + h * HOUR_S, y


def fit_one(args: tuple[str, int, int]) -> float:
    model, seed, samples = args  # Prophet: ModelOptions' default changepoints (the planner's)
    quiet_prophet()
    t, y = make_series(seed)
    start = time.perf_counter()
    forecast(model, y, t, HORIZON_H, HOUR_S, True, ModelOptions(uncertainty_samples=samples))
    return time.perf_counter() - start


def floor(samples: int, reps: int = 5) -> None:
    """Prophet's fit alone: 50 points (cmdstanpy's fixed cost per fit) and 60 days with its
    default 25 changepoints vs the planner's 10."""
    import pandas as pd
    from prophet import Prophet

    t, y = make_series(1)
    frame = pd.DataFrame({"ds": pd.to_datetime(t, unit="s"), "y": y})
    for label, rows, changepoints in (("50 points", 50, 25), ("60 days", None, 25),
                                      ("60 days", None, 10)):  # fmt: skip
        data = frame.iloc[:rows] if rows else frame
        times = []
        for _ in range(reps):
            m = Prophet(uncertainty_samples=samples, n_changepoints=changepoints,
                        daily_seasonality=True, weekly_seasonality=True)  # fmt: skip
            start = time.perf_counter()
            m.fit(data)
            times.append(time.perf_counter() - start)
        print(f"Prophet fit only, {label}, {changepoints} changepoints: "
              f"median {statistics.median(times):.3f} s")  # fmt: skip


def plan_bench(
    sizes: list[int], workers: int, sample: int, full_fleet: bool, engines: list[str]
) -> None:
    from novacron_ml.core.settings import CapacitySettings, Settings
    from training.planner import HourlyHistory, plan_all, plan_series

    def histories(n: int) -> list[HourlyHistory]:
        out = []
        for seed in range(n):
            t, y = make_series(seed)
            out.append(HourlyHistory(f"c{seed}", "cpu_util", t, y))
        return out

    paths = {"full": CapacitySettings(), "fast": CapacitySettings(fast=True)}
    per_series: dict[str, float] = {}
    print(f"plan of one series ({HISTORY_H} hourly points, {HORIZON_H}-step forecast), 1 process")
    for name, cfg in paths.items():
        hs = histories(sample + 1)
        plan_series(hs[0], cfg, [])  # warm-up: imports, JIT
        start = time.perf_counter()
        for h in hs[1:]:
            plan_series(h, cfg, [])
        per_series[name] = (time.perf_counter() - start) / sample
        print(f"  {name:<5} {per_series[name]:.3f} s/series (mean of {sample}; models "
              f"{plan_series(hs[0], cfg, []).model})")  # fmt: skip
    for n in sizes:
        for path in ("fast", "full") if full_fleet else ("fast",):
            for engine in engines:
                cfg = paths[path].model_copy(update={"workers": workers, "engine": engine})
                start = time.perf_counter()
                plans, problems = plan_all(histories(n), Settings(capacity=cfg))
                wall = time.perf_counter() - start
                print(f"{n:>6} series, {path} path, {engine:<9} x{workers}: {wall:7.1f} s "
                      f"({wall / n:.3f} s/series; {len(plans)} planned, {len(problems)} "
                      "skipped)", flush=True)  # fmt: skip
    print("linear scaling on paper (per-series cost above x series / workers):")
    for name, cost in per_series.items():
        for n in (1_000, 10_000, 100_000):
            cells = ", ".join(f"{w} workers {cost * n / w / 60:.1f} min" for w in (2, 16, 64))
            print(f"  {name}, {n:,} series: {cells}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--plan", type=int, nargs="+", help="plan N series instead (e.g. 1000 10000)")
    p.add_argument("--sample", type=int, default=10, help="--plan: series timed alone (10)")
    p.add_argument(
        "--full-fleet", action="store_true", help="--plan: the full path at N series too (slow)"
    )
    p.add_argument(
        "--engines",
        nargs="+",
        default=["processes", "dask"],
        choices=["processes", "dask"],
        help="--plan: engines compared (both)",
    )
    p.add_argument(
        "--series", type=int, default=1000, help="series in the parallel run (1000; 0: skip it)"
    )
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes")
    p.add_argument("--per-model", type=int, default=10, help="series timed per model (10)")
    p.add_argument("--samples", type=int, default=100, help="Prophet uncertainty samples (100)")
    args = p.parse_args()
    quiet_prophet()
    if args.plan:
        plan_bench(args.plan, args.workers, args.sample, args.full_fleet, args.engines)
        return
    fit_one(("prophet", 0, args.samples))  # warm-up: imports, Stan model load, numba JIT
    for m in MODELS[1:]:
        fit_one((m, 0, 0))
    print(f"one series: {HISTORY_H} hourly points, {HORIZON_H}-step forecast, 1 process")
    print(f"{'model':<28} {'median s':>9} {'p90 s':>7}")
    rows = [("prophet", args.samples), ("prophet", 0)] + [(m, 0) for m in MODELS[1:]]
    for model, samples in rows:
        times = sorted(fit_one((model, s, samples)) for s in range(1, args.per_model + 1))
        label = f"{model} (samples={samples})" if model == "prophet" else model
        p90 = times[int(0.9 * (len(times) - 1))]
        print(f"{label:<28} {statistics.median(times):9.3f} {p90:7.3f}")
    floor(args.samples)
    if args.series <= 0:
        return
    jobs = [("prophet", s, args.samples) for s in range(args.series)]
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        fit_times = list(pool.map(fit_one, jobs, chunksize=8))
    wall = time.perf_counter() - start
    print(
        f"\n{args.series} series, Prophet (samples={args.samples}), {args.workers} processes: "
        f"{wall:.1f} s wall ({wall / args.series:.3f} s/series), fit+forecast median "
        f"{statistics.median(fit_times):.3f} s"
    )


if __name__ == "__main__":
    main()
