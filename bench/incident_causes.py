"""How often an incident's probable cause is the injected root metric (issue 17).

The hard scenario (`FleetConfig(difficulty="hard")`) labels each multi-metric anomaly with the
root metric that moves first; the others follow a quarter of the way in. For each seed this
runs `novacron-ml demo`'s scenario through the production detect flow (forecaster off: its
alerts are not grouped, so the incidents are the demo's), then counts, as the demo's summary
does (`novacron_ml.app.demo.incident_causes`), the incidents with several metrics and those
whose probable cause is the root. Variants change only how a metric's onset is dated
(`operators.detection.series.track_onset`), which decides no alert:

- `shipped`: the CUSUM's reference value k = `detector.min_deviation` / 2;
- `first-alert`: no dating, a metric's onset is its first alert (the ranking before stop 42);
- `k=<x>`: another reference value (the function's `k` argument).

A miss is also classed by whether the root alerted at all in the incident: a root that never
alerted is a detection miss no ranking can mend. `--by-metric` also prints, per anomaly type,
shape and metric (root first), how many of the injected anomalies raised an alert on that
metric (from a minute before the anomaly to its end).

    python bench/incident_causes.py                          # seeds 1-16, shipped and before
    python bench/incident_causes.py --variants shipped k=1.5 k=3.5 --seeds 9 10 11
    python bench/incident_causes.py --difficulty default --seeds 7 21
    python bench/incident_causes.py --seeds 1 2 3 4 5 6 7 8 --variants shipped --by-metric
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python bench/...` too

import operators.detection.series as series_module
from novacron_ml.app.demo import (
    DemoResult,
    cause_is_right,
    incident_causes,
    incident_labels,
    run_demo,
)
from novacron_ml.core.schema import parse_rfc3339_ms
from novacron_ml.core.settings import Settings
from novacron_ml.core.simulator import FleetConfig

SHIPPED = series_module.track_onset


def _first_alert(state: object, start_ms: int, deviation: float | None) -> int:
    return start_ms


def dating(variant: str) -> Callable[..., int]:
    if variant == "shipped":
        return SHIPPED
    if variant == "first-alert":
        return _first_alert
    if variant.startswith("k="):
        return functools.partial(SHIPPED, k=float(variant[2:]))
    raise SystemExit(f"incident_causes: unknown variant {variant!r} (shipped, first-alert, k=X)")


def root_never_alerted(result: DemoResult) -> int:
    """Multi-metric incidents whose probable cause is wrong and where no overlapping
    anomaly's root is among the incident's metrics."""
    misses = 0
    for incident in result.incidents:
        if len(incident.causes) < 2:
            continue
        labels = incident_labels(incident, result.labels)
        roots = {label.root for label in labels if label.root}
        misses += not cause_is_right(incident, labels) and not roots & {
            c.metric for c in incident.causes
        }
    return misses


def metric_hits(
    result: DemoResult, hits: Counter[tuple[str, ...]], total: Counter[tuple[str, ...]]
) -> None:
    """Per (type, shape, position: metric) of the injected anomalies: how many raised an alert
    on that metric of their host between a minute before their start and their end."""
    for label in result.labels:
        for k, metric in enumerate(label.metrics):
            key = (label.type, label.shape or "-", f"{k}: {metric}")
            total[key] += 1
            hits[key] += any(
                a.host == label.host
                and a.metric == metric
                and label.start_ms - 60_000 <= parse_rfc3339_ms(a.window_start) < label.end_ms
                for a in result.alerts
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(1, 17)))
    parser.add_argument("--variants", nargs="+", default=["shipped", "first-alert"])
    parser.add_argument("--hosts", type=int, default=12)
    parser.add_argument("--hours", type=float, default=6.0)
    parser.add_argument("--difficulty", choices=["default", "hard"], default="hard")
    parser.add_argument(
        "--by-metric", action="store_true", help="also the anomalies found per metric"
    )
    args = parser.parse_args()
    base = Settings()
    settings = base.model_copy(
        update={"forecast": base.forecast.model_copy(update={"enabled": False})}
    )
    print(
        f"{args.difficulty} scenario, {args.hosts} hosts x {args.hours:g} h, seeds "
        f"{' '.join(map(str, args.seeds))}; per seed: probable cause right / multi-metric "
        "incidents\n"
    )
    for variant in args.variants:
        track = dating(variant)
        series_module.track_onset = track  # what `_decide_window` calls
        multi = right = unreachable = 0
        hits: Counter[tuple[str, ...]] = Counter()
        total: Counter[tuple[str, ...]] = Counter()
        per_seed = []
        start = time.perf_counter()
        try:
            for seed in args.seeds:
                fleet = FleetConfig(
                    hosts=args.hosts,
                    duration_s=args.hours * 3600,
                    seed=seed,
                    start_ms=parse_rfc3339_ms("2026-11-30T00:00:00Z"),
                    difficulty=args.difficulty,
                )
                with contextlib.redirect_stderr(io.StringIO()):
                    result = run_demo(settings, fleet, quiet=True)
                _, m, r = incident_causes(result)
                multi, right = multi + m, right + r
                unreachable += root_never_alerted(result)
                metric_hits(result, hits, total)
                per_seed.append(f"{r}/{m}")
                print(f"  {variant} seed {seed}: {r}/{m}", file=sys.stderr, flush=True)
        finally:
            series_module.track_onset = SHIPPED
        share = right / multi if multi else float("nan")
        print(
            f"{variant:<12} {right} of {multi} ({share:.0%}); misses whose root never alerted: "
            f"{unreachable} of {multi - right}; per seed {' '.join(per_seed)} "
            f"({time.perf_counter() - start:.0f} s)"
        )
        if args.by_metric:
            for key in sorted(total):
                print(f"    {' / '.join(key):<64} {hits[key]} of {total[key]}")


if __name__ == "__main__":
    main()
