"""Windowing + feature throughput per worker, and state bytes per series (issue 3).

Parsed `MetricEvent`s from the simulator go through exactly the flow's feature stage —
grouping by shard (`ShardRouter.group`, which the flow does inside its parse step) ->
`stateful_batch(FeatureLogic)` — in one Bytewax worker, to a null sink.
Parsing is measured separately by bench_throughput.py (the whole flow).

    python bench/bench_features.py                  # 60 s windows, 1 h look-back, 5 s samples
    python bench/bench_features.py --hosts 200 --hours 2 --json out/features.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSource, run_main

from dataflows.config import resolve
from dataflows.io import CallbackSink
from dataflows.steps import ShardRouter, make_feature_builder
from novacron_ml.core.features import N_FEATURES
from novacron_ml.core.schema import MetricEvent
from novacron_ml.core.settings import FeatureSettings, IngestSettings, Settings
from novacron_ml.core.simulator import FleetConfig, FleetSimulator
from operators.features.engine import FeatureEngine


def feature_flow(
    events: list[MetricEvent], settings: Settings, batch: int, out: list[Any]
) -> Dataflow:
    flow = Dataflow("bench_features")
    stream = op.input("in", flow, TestingSource(events, batch_size=batch))
    router = ShardRouter(settings.features.shards)
    keyed = op.flat_map_batch("group_by_shard", stream, router.group)
    featured = op.stateful_batch("features", keyed, make_feature_builder(resolve(settings)))
    op.output("out", featured, CallbackSink(lambda items: out.append(len(items))))
    return flow


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--hosts", type=int, default=60, help="hosts x 10 metrics = series")
    parser.add_argument("--hours", type=float, default=2.0, help="simulated hours at 5 s steps")
    parser.add_argument("--shards", type=int, default=4, help="feature state shards (4)")
    parser.add_argument("--batch", type=int, default=5000, help="source batch size")
    parser.add_argument("--json", metavar="FILE", help="write the figures as JSON")
    args = parser.parse_args()

    sim = FleetSimulator(
        FleetConfig(
            hosts=args.hosts, clusters=3, duration_s=args.hours * 3600, start_ms=1_790_000_000_000
        )
    )
    events = list(sim.events())
    settings = Settings(
        ingest=IngestSettings(max_event_age_s=0), features=FeatureSettings(shards=args.shards)
    )
    out: list[int] = []
    start = time.perf_counter()
    run_main(feature_flow(events, settings, args.batch, out))
    seconds = time.perf_counter() - start
    windows = sum(out)

    engine = FeatureEngine(settings.feature_config())
    engine.ingest(events[: args.hosts * 10 * 100], now_ms=0)
    per_series = engine.state_bytes_per_series()
    rate = len(events) / seconds
    series = args.hosts * 10
    print(f"{len(events):,} events, {series} series, {windows:,} windows x {N_FEATURES} features")
    print(f"python {platform.python_version()}, 1 worker, {args.shards} shards, batch {args.batch}")
    print(f"windowing + features: {rate:,.0f} events/s per worker ({seconds:.2f} s)")
    print(f"state per series: {per_series:,} bytes of numpy state (window 60 s, look-back 1 h,")
    print("  5 s steps, 7 days of 10-minute lag buckets)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "events": len(events),
                    "series": args.hosts * 10,
                    "windows": windows,
                    "events_per_s": rate,
                    "seconds": seconds,
                    "state_bytes_per_series": per_series,
                    "shards": args.shards,
                    "batch": args.batch,
                },
                f,
                indent=2,
            )


if __name__ == "__main__":
    main()
