"""The whole detect flow at fleet scale, one worker (issue 18): events/s, µs per window and
detection state per series at 1,000 and 10,000 series, beside the naive per-event River
pattern measured in the same run.

For each `--series` count (10 metrics a host, so series / 10 hosts) the simulator's fleet
runs `--hours` of 5 s samples (60 s windows) through the production flow
(`dataflows.detect.build_flow`, default settings, in-process source, results held in
memory). The rate is the steady state: events from `--measure-from` of the run (after the
novelty tier's 100-shape and the calibrators' 50-rank warm-ups at the default 3 h × 0.6) to
the end, over the wall time between them. `µs/window` is that time per closed window (the
whole flow: parse, features, detect, outputs), with the steps' epoch snapshots taken as in
`novacron-ml run` with its default recovery state; the same run without them (replay, nab,
`run --no-recovery`) follows; Python's garbage collector set as `run` sets it
(`runtime.quiet_gc`; `--gc-default`: Python's defaults). `state` is the pickled detection
state per series at the end (what a recovery snapshot holds), and what the feature step's
snapshot (a deep copy of its state, best of 3 at the end) costs per series, beside pickling
the same state.
The same run again with every detection tier off but robust z (`TIERS_OFF`) shows what the
tiers cost. The naive pattern (`bench.bench_throughput.naive_flow`: one River
HalfSpaceTrees per series scoring every raw event) runs on the first `--naive-events` events
of the same fleet as JSON objects, for at most `--naive-seconds`. With `--kafka`, the
default flow also reads the same fleet from a topic of that broker (one JSON object per
message, and JSON arrays), whole run timed.

    python bench/bench_scale.py                                  # 1,000 and 10,000 series
    python bench/bench_scale.py --series 1000 --kafka 127.0.0.1:9092
    python bench/bench_scale.py --series 1000 --format json --no-naive --json out/scale.json
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import pickle
import platform
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python bench/...` too

from bench.bench_throughput import naive_flow, settings_for_bench, timed
from dataflows.inprocess import run_in_process
from dataflows.io import CallbackSink, MessageSource
from novacron_ml.core.kafka import delete_topics, ensure_topics, produce
from novacron_ml.core.memory import quiet_collector
from novacron_ml.core.settings import Settings
from novacron_ml.core.simulator import FleetConfig, FleetSimulator

START_MS = 1_790_000_000_000


def fleet(series: int, hours: float) -> FleetSimulator:
    hosts = max(1, series // 10)
    return FleetSimulator(
        FleetConfig(hosts=hosts, clusters=4, duration_s=hours * 3600, start_ms=START_MS)
    )


class Marked:
    """The messages, noting the wall time at which the source hands out message `mark`."""

    def __init__(self, messages: list[tuple[bytes, bytes]], mark: int) -> None:
        self.messages = messages
        self.mark = mark
        self.marked_at = 0.0

    def __call__(self) -> Iterator[tuple[bytes, bytes]]:
        for i, msg in enumerate(self.messages):
            if i == self.mark:
                self.marked_at = time.perf_counter()
            yield msg


QUIET_GC = [True]
"""Whether the runs set Python's garbage collector as `novacron-ml run` does (`--gc-default`:
Python's defaults)."""

TIERS_OFF = {"probability_tiers": ["robust_z"], "spread_threshold": 0.0, "load_threshold": 0.0}
"""Every detection tier off but robust z (which the decision needs during warm-up anyway):
no novelty, no spread or load-residual tier (River and the Isolation Forest are off by
default)."""


def in_process(
    messages: list[tuple[bytes, bytes]],
    events_per_message: float,
    measure_from: float,
    detector: dict[str, Any] | None = None,
    snapshots: bool = True,
) -> dict[str, Any]:
    """One in-process run of the default flow (or with `detector` settings on top): the
    steady-state rate and the state sizes. `snapshots`: the steps' epoch snapshots are taken,
    as in `novacron-ml run` with its default recovery state; without, as in replay, nab and
    `run --no-recovery`."""
    groups: dict[str, Any] = {
        "ingest": {"max_event_age_s": 0, "max_event_future_s": 0},
        "detector": detector or {},
        "runtime": {"quiet_gc": QUIET_GC[0]},  # `--gc-default`: nor does `run_in_process`
    }
    settings = Settings(**groups)
    marked = Marked(messages, int(len(messages) * measure_from))
    logics: dict[int, Any] = {}
    feature_logics: dict[int, Any] = {}
    from dataflows import steps

    keep = steps.DetectLogic.snapshot
    keep_features = steps.FeatureLogic.snapshot

    def remember(self: steps.DetectLogic) -> Any:  # each shard's logic, pickled at the end
        logics[id(self)] = self
        return keep(self)

    def remember_features(self: steps.FeatureLogic) -> Any:
        feature_logics[id(self)] = self
        return keep_features(self)

    steps.DetectLogic.snapshot = remember  # type: ignore[method-assign]
    steps.FeatureLogic.snapshot = remember_features  # type: ignore[method-assign]
    gc.collect()
    if QUIET_GC[0]:
        quiet_collector()  # as novacron-ml run sets the collector (runtime.quiet_gc)
    try:
        start = time.perf_counter()
        # (older trees always snapshot, and take no such argument)
        kwargs: dict[str, Any] = {} if snapshots else {"snapshots": False}
        out = run_in_process(settings, MessageSource(marked, 1000), **kwargs)
        end = time.perf_counter()
    finally:
        steps.DetectLogic.snapshot = keep  # type: ignore[method-assign]
        steps.FeatureLogic.snapshot = keep_features  # type: ignore[method-assign]
    tail_events = (len(messages) - marked.mark) * events_per_message
    tail_windows = out.windows_scored * (1 - measure_from)
    # a shard's DetectShard holds many series; a per-series step's state (before issue 18:
    # run this file from another tree with PYTHONPATH set to it) holds one
    n_series = state_bytes = 0
    for logic in logics.values():
        state = logic.state
        n_series += len(state.series) if hasattr(state, "series") else 1
        state_bytes += len(pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL))
    # what the feature step's snapshot (a deep copy) costs, beside pickling the same state
    feature_states = [logic.state for logic in feature_logics.values()]
    copy_s = pickle_s = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for state in feature_states:
            copy.deepcopy(state)
        t1 = time.perf_counter()
        for state in feature_states:
            pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
        copy_s, pickle_s = min(copy_s, t1 - t0), min(pickle_s, time.perf_counter() - t1)
    return {
        "feature_copy_us_per_series": copy_s / max(n_series, 1) * 1e6,
        "feature_pickle_us_per_series": pickle_s / max(n_series, 1) * 1e6,
        "events": out.events,
        "windows": out.windows_scored,
        "alerts": len(out.alerts),
        "seconds": end - start,
        "events_per_s": tail_events / (end - marked.marked_at),
        "us_per_window": (end - marked.marked_at) / max(tail_windows, 1) * 1e6,
        "state_bytes_per_series": state_bytes / max(n_series, 1),
        "series_in_state": n_series,
    }


def naive(series: int, max_events: int, max_seconds: float) -> dict[str, Any]:
    """The naive pattern on the fleet's first `max_events` events as JSON objects, or as many
    as its source hands out within `max_seconds` (it then ends its input): events per second
    of the whole run, its River models' creation and Bytewax's deep copies of them at every
    epoch's snapshot included (that is what the pattern costs)."""
    sim = fleet(series, 24)
    messages = []
    for msg in sim.messages("json"):
        messages.append(msg)
        if len(messages) >= max_events:
            break
    handed = [0]
    deadline = [0.0]

    def bounded() -> Iterator[tuple[bytes, bytes]]:
        for msg in messages:
            if time.perf_counter() > deadline[0]:
                return
            handed[0] += 1
            yield msg

    sink = CallbackSink(lambda items: None)
    deadline[0] = time.perf_counter() + max_seconds
    seconds = timed(lambda: naive_flow(MessageSource(bounded, 1000), sink))
    return {"events": handed[0], "seconds": seconds, "events_per_s": handed[0] / seconds}


def from_kafka(bootstrap: str, messages: list[tuple[bytes, bytes]], events: int) -> float:
    """The default flow reading `messages` from a fresh topic to its end: events/s."""
    from dataflows.detect import kafka_flow

    topic = f"bench.{uuid.uuid4().hex[:8]}"
    topics = [topic, f"{topic}.alerts", f"{topic}.dlq"]
    ensure_topics(bootstrap, topics)
    try:
        produce(bootstrap, topic, messages)
        seconds = timed(lambda: kafka_flow(settings_for_bench(bootstrap, topic)))
    finally:
        delete_topics(bootstrap, topics)
    return events / seconds


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--series", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--hours", type=float, default=3.0, help="simulated hours (5 s steps)")
    parser.add_argument("--measure-from", type=float, default=0.6, help="share of the run")
    parser.add_argument(
        "--format",
        choices=("auto", "json", "json-array"),
        default="auto",
        help="in-process wire format; auto: JSON objects up to 2,000 series, arrays above "
        "(the messages are held in memory)",
    )
    parser.add_argument(
        "--naive-events",
        type=int,
        default=200_000,
        help="events the naive pattern runs at most (200,000)",
    )
    parser.add_argument(
        "--naive-seconds",
        type=float,
        default=120.0,
        help="wall seconds the naive pattern gets at most (120): at 1,000 series Bytewax's deep "
        "copies of its River models at each epoch's snapshot take minutes",
    )
    parser.add_argument("--no-naive", action="store_true", help="skip the naive pattern")
    parser.add_argument(
        "--alternate",
        type=int,
        default=0,
        metavar="N",
        help="then N more pairs of runs, without and with snapshots, alternated (this VM's\n"
        "speed drifts within one run of the command; a pair at a time shows the ratio)",
    )
    parser.add_argument(
        "--load-pairs",
        type=int,
        default=0,
        metavar="N",
        help="then N pairs of runs, the load-residual tier off and on, alternated (its cost)",
    )
    parser.add_argument(
        "--gc-default",
        action="store_true",
        help="leave Python's garbage collector as it is (by default each in-process run\n"
        "freezes start-up and thins the full passes, as novacron-ml run does: runtime.quiet_gc)",
    )
    parser.add_argument("--kafka", metavar="BOOTSTRAP", help="also read from this broker")
    parser.add_argument("--json", metavar="FILE", help="write the figures as JSON")
    args = parser.parse_args()
    QUIET_GC[0] = not args.gc_default
    print(f"python {platform.python_version()}, {platform.machine()}, 1 worker")
    results: dict[str, Any] = {}
    for series in args.series:
        fmt = args.format if args.format != "auto" else ("json" if series <= 2000 else "json-array")
        t0 = time.perf_counter()
        sim = fleet(series, args.hours)
        messages = list(sim.messages(fmt))
        n_events = sim.config.hosts * 10 * sim.n_ticks
        per_message = n_events / len(messages)
        print(
            f"\n{series:,} series, {args.hours:g} h: {n_events:,} events in {len(messages):,} "
            f"{fmt} messages (made in {time.perf_counter() - t0:.0f} s)",
            flush=True,
        )
        row: dict[str, Any] = {"format": fmt, "events": n_events}
        row["default"] = ours = in_process(messages, per_message, args.measure_from)
        print(
            f"  default flow, in-process: {ours['events_per_s']:>10,.0f} events/s steady "
            f"({ours['us_per_window']:.1f} µs/window; whole run {ours['seconds']:.0f} s, "
            f"{ours['alerts']} alerts); detection state {ours['state_bytes_per_series'] / 1024:.1f}"
            f" KB/series; feature snapshot (deep copy) {ours['feature_copy_us_per_series']:.1f}"
            f" µs/series (pickled: {ours['feature_pickle_us_per_series']:.1f})",
            flush=True,
        )
        row["no_recovery"] = bare = in_process(
            messages, per_message, args.measure_from, snapshots=False
        )
        print(
            f"  the same, no snapshots:   {bare['events_per_s']:>10,.0f} events/s steady "
            f"({bare['us_per_window']:.1f} µs/window; {bare['alerts']} alerts): without "
            f"recovery state (replay, nab, run --no-recovery) -> "
            f"{bare['events_per_s'] / ours['events_per_s']:.2f}x",
            flush=True,
        )
        ratios = []
        for _ in range(args.alternate):
            pair = [
                in_process(messages, per_message, args.measure_from, snapshots=snap)
                for snap in (False, True)
            ]
            ratios.append(pair[0]["events_per_s"] / pair[1]["events_per_s"])
            print(
                f"  alternated, none / with:  {pair[0]['events_per_s']:>10,.0f} / "
                f"{pair[1]['events_per_s']:,.0f} events/s -> {ratios[-1]:.2f}x",
                flush=True,
            )
        row["alternated_ratios"] = ratios
        load_ratios = []
        for _ in range(args.load_pairs):
            pair = [
                in_process(messages, per_message, args.measure_from, detector)
                for detector in ({"load_threshold": 0.0}, None)
            ]
            load_ratios.append(pair[1]["events_per_s"] / pair[0]["events_per_s"])
            print(
                f"  load tier off / on:       {pair[0]['events_per_s']:>10,.0f} / "
                f"{pair[1]['events_per_s']:,.0f} events/s -> on {load_ratios[-1]:.3f}x of off "
                f"({pair[0]['us_per_window']:.1f} / {pair[1]['us_per_window']:.1f} µs/window; "
                f"state {pair[0]['state_bytes_per_series'] / 1024:.1f} / "
                f"{pair[1]['state_bytes_per_series'] / 1024:.1f} KB/series)",
                flush=True,
            )
        row["load_ratios"] = load_ratios
        row["tiers_off"] = off = in_process(messages, per_message, args.measure_from, TIERS_OFF)
        print(
            f"  every tier off (robust z): {off['events_per_s']:>9,.0f} events/s steady "
            f"({off['us_per_window']:.1f} µs/window; {off['alerts']} alerts); detection state "
            f"{off['state_bytes_per_series'] / 1024:.1f} KB/series -> default "
            f"{ours['events_per_s'] / off['events_per_s']:.2f}x of it",
            flush=True,
        )
        if not args.no_naive:
            row["naive"] = base = naive(series, args.naive_events, args.naive_seconds)
            ratio = ours["events_per_s"] / base["events_per_s"]
            print(
                f"  naive per-event HST:      {base['events_per_s']:>10,.0f} events/s "
                f"({base['events']:,} events in {base['seconds']:.0f} s) -> ours {ratio:.1f}x",
                flush=True,
            )
        del messages
        if args.kafka:
            for kfmt in ("json", "json-array"):
                msgs = list(fleet(series, args.hours).messages(kfmt))
                rate = from_kafka(args.kafka, msgs, n_events)
                row[f"kafka_{kfmt}"] = rate
                print(f"  default flow, Kafka {kfmt:<10}: {rate:>10,.0f} events/s (whole run)")
                del msgs
        results[str(series)] = row
        gc.collect()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
