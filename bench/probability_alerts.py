"""What if the anomaly probability raised alerts? Measured on the simulator (issue 4).

The flow's alerts are decided by robust z; the combined probability (what `novacron-ml nab`
scores) rides on every alert. This runs the detect flow in-process over the demo's simulated
fleet with `emit_scores`, treats every window whose probability reaches a level as an alert,
and scores those against the injected labels: a firing is right when its window overlaps an
injected anomaly on the same host and one of that anomaly's metrics (a score is per series;
the demo's `evaluation.evaluate` matches alerts by host and time only).

    python bench/probability_alerts.py                    # seed 7, 12 hosts x 6 h (the demo)
    python bench/probability_alerts.py --seed 21 --hosts 16 --hours 8 --levels 0.985 0.999
"""

from __future__ import annotations

import argparse
import time

from bytewax.testing import run_main

from dataflows.detect import build_flow
from dataflows.io import CallbackSink, MessageSource
from novacron_ml.core.labels import AnomalyLabel
from novacron_ml.core.schema import split_series_key
from novacron_ml.core.settings import load_settings
from novacron_ml.core.simulator import FleetConfig, FleetSimulator
from operators.detection.series import WindowScore


def overlaps(score: WindowScore, label: AnomalyLabel) -> bool:
    _, host, metric = split_series_key(score.series)
    return (
        host == label.host
        and metric in label.metrics
        and score.start_ms < label.end_ms
        and score.end_ms > label.start_ms
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--hosts", type=int, default=12)
    parser.add_argument("--hours", type=float, default=6.0)
    parser.add_argument("--levels", type=float, nargs="+", default=[0.985, 0.995, 0.999])
    args = parser.parse_args()
    sim = FleetSimulator(
        FleetConfig(hosts=args.hosts, duration_s=args.hours * 3600, seed=args.seed)
    )
    scores: list[WindowScore] = []

    def collect(items: list[object]) -> None:
        scores.extend(item for item in items if isinstance(item, WindowScore))

    flow = build_flow(
        load_settings(),
        MessageSource(lambda: sim.messages("json"), 2000),
        CallbackSink(collect),
        kafka_output=False,
        emit_scores=True,
    )
    start = time.perf_counter()
    run_main(flow)
    print(
        f"{len(scores):,} windows scored in {time.perf_counter() - start:.0f} s; "
        f"{len(sim.labels)} injected anomalies (seed {args.seed}, {args.hosts} hosts, "
        f"{args.hours:g} h)"
    )
    print(
        f"{'level':>7}  {'firings':>7}  {'of windows':>10}  {'right':>5}  {'precision':>9}  "
        f"{'anomalies found':>15}"
    )
    for level in args.levels:
        fired = [s for s in scores if s.anomaly_score >= level]
        right = sum(any(overlaps(s, lab) for lab in sim.labels) for s in fired)
        found = sum(any(overlaps(s, lab) for s in fired) for lab in sim.labels)
        precision = right / len(fired) if fired else float("nan")
        print(
            f"{level:7.3f}  {len(fired):7d}  {len(fired) / max(len(scores), 1):10.3%}  "
            f"{right:5d}  {precision:9.3f}  {found:>7d} of {len(sim.labels):<3d}"
        )


if __name__ == "__main__":
    main()
