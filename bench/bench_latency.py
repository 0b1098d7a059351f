"""Detection latency in live mode: from a window's close to its score leaving the flow.

The simulator's events are replayed at wall-clock pace (event time = wall time): first
`--warm-min` minutes of history at full speed (so every tier is past its warm-up), then
`--live-s` seconds live. The production detect flow (all tiers: robust z, novelty, River,
ONNX Isolation Forest, probability, explanation) runs in-process on one worker; for each live
window the latency is the wall time at which its score reaches the sink minus the moment it
could close (window end + allowed lateness). Side by side, in the same way, the naive
per-event Bytewax + River flow of bench_throughput.py: its latency is emit time minus the
event's time.

    python -m bench.bench_latency                       # 6 hosts, 15 s windows, 120 s live
    python -m bench.bench_latency --no-naive --cadence  # exact notify vs the 100 ms cadence
    python -m bench.bench_latency --hosts 12 --live-s 300 --json out/bench_latency.json
    python -m bench.bench_latency --no-naive --hosts 1000 --warm-min 40 --live-s 60 --lead-s 150
    python -m bench.bench_latency --no-naive --no-snapshots --hosts 1000 --warm-min 40 ...
    python -m bench.bench_latency --no-naive --processes 2 --hosts 1000 --warm-min 40 ...
    python -m bench.bench_latency --no-naive --tiers-off --hosts 1000 --warm-min 40 ...

The flow takes its epoch snapshots as `novacron-ml run` does with its default recovery state,
and keeps freed memory for reuse as `run` does then (`recovery.retain_freed_memory`;
`--malloc-default`: glibc's defaults), and sets Python's garbage collector as `run` does
(`runtime.quiet_gc`; `--gc-default`: Python's defaults); `--no-snapshots` also runs it
without the snapshots.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python bench/...` too

import numpy as np
from bytewax.connectors.kafka import KafkaSourceMessage
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.testing import cluster_main, run_main

from bench.bench_scale import TIERS_OFF
from bench.bench_throughput import naive_flow
from dataflows.detect import build_flow
from dataflows.io import CallbackSink
from dataflows.steps import FeatureLogic
from novacron_ml.core.memory import quiet_collector, retain_freed_memory
from novacron_ml.core.settings import Settings
from novacron_ml.core.simulator import FleetConfig, FleetSimulator
from operators.detection.series import WindowScore

Message = KafkaSourceMessage[bytes | None, bytes | None]


def _now_ms() -> int:
    return int(time.time() * 1000)


class _Paced(StatefulSourcePartition[Message, int]):
    def __init__(self, items: list[tuple[bytes, bytes, int]], batch: int) -> None:
        self._items = items
        self._pos = 0
        self._batch = batch

    def next_batch(self) -> list[Message]:
        if self._pos >= len(self._items):
            raise StopIteration
        now = _now_ms()
        out: list[Message] = []
        while self._pos < len(self._items) and len(out) < self._batch:
            k, v, t = self._items[self._pos]
            if t > now:
                break
            out.append(
                KafkaSourceMessage(key=k, value=v, topic="live", partition=0, offset=self._pos)
            )
            self._pos += 1
        return out

    def next_awake(self) -> datetime | None:
        if self._pos >= len(self._items):
            return None
        t = self._items[self._pos][2]
        return datetime.fromtimestamp(t / 1000, tz=UTC) if t > _now_ms() else None

    def snapshot(self) -> int:
        return self._pos


class PacedSource(FixedPartitionedSource[Message, int]):
    """Messages released when the wall clock reaches their event time; `part`: the name of
    this process's partition in a cluster (each member lists only its own)."""

    def __init__(
        self, items: list[tuple[bytes, bytes, int]], batch: int = 1000, part: str = "0"
    ) -> None:
        self._items = items
        self._batch = batch
        self._part = part

    def list_parts(self) -> list[str]:
        return [self._part]

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _Paced:
        return _Paced(self._items, self._batch)


def fleet_messages(args: argparse.Namespace, live_start_ms: int) -> list[tuple[bytes, bytes, int]]:
    warm_s = args.warm_min * 60.0
    sim = FleetSimulator(
        FleetConfig(
            hosts=args.hosts,
            clusters=min(3, args.hosts),
            duration_s=warm_s + args.live_s,
            start_ms=live_start_ms - int(warm_s * 1000),
            seed=args.seed,
        )
    )
    # Release order = event time: the simulator emits a tick host by host, and each host has
    # its own sub-step offset, so its list order is not time order.
    return sorted(sim.timed_messages("json"), key=lambda item: item[2])


def live_latencies(
    lateness_ms: int, live_start: int, last_event_ms: int
) -> tuple[list[float], Callable[[list[Any]], None]]:
    """A sink callback and the list it fills: for each live window's score, the wall time at
    its arrival minus the moment the window could close."""
    latencies: list[float] = []

    def collect(batch: list[Any]) -> None:
        now = _now_ms()
        for item in batch:
            closable = item.end_ms + lateness_ms if isinstance(item, WindowScore) else 0
            # windows closable only after the last event are closed early by the end of
            # input (negative "latencies"): not live, not counted
            if closable and item.start_ms >= live_start and closable <= last_event_ms:
                latencies.append(now - closable)

    return latencies, collect


def percentiles(x: list[float]) -> dict[str, float]:
    if not x:
        sys.exit(
            "bench_latency: no window closed in the live part: make --live-s longer (a window "
            "and its allowed lateness, at least) or --lead-s long enough for the replay"
        )
    a = np.array(x)
    return {
        "n": len(a),
        "p50_ms": float(np.percentile(a, 50)),
        "p99_ms": float(np.percentile(a, 99)),
        "max_ms": float(a.max()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--hosts", type=int, default=6, help="simulated hosts, 10 metrics each (6)")
    ap.add_argument("--window-s", type=float, default=15.0, help="window length (15)")
    ap.add_argument("--warm-min", type=float, default=150.0, help="history replayed first (150)")
    ap.add_argument("--live-s", type=float, default=120.0, help="live seconds per flow (120)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument(
        "--lead-s",
        type=float,
        default=20.0,
        help="wall seconds from the start to the live part, to build and replay the history\n"
        "(20; about 150 for 1,000 hosts)",
    )
    ap.add_argument("--no-naive", action="store_true", help="skip the naive flow")
    ap.add_argument(
        "--cadence",
        action="store_true",
        help="also run the flow with the fixed 100 ms notify cadence (before exact notify)",
    )
    ap.add_argument(
        "--no-snapshots",
        action="store_true",
        help="also run the flow without its epoch snapshots (a run without recovery state)",
    )
    ap.add_argument(
        "--gc", action="store_true", help="also count full garbage-collector passes (gc.callbacks)"
    )
    ap.add_argument(
        "--epoch-ms", type=float, help="Bytewax epoch interval (default: Bytewax's, 10 s)"
    )
    ap.add_argument(
        "--malloc-default",
        action="store_true",
        help="leave glibc's allocator as it is (by default the bench keeps freed memory for\n"
        "reuse, as novacron-ml run does with recovery on: recovery.retain_freed_memory)",
    )
    ap.add_argument(
        "--gc-default",
        action="store_true",
        help="leave Python's garbage collector as it is (by default the bench freezes the\n"
        "objects of start-up and runs full passes a tenth as often, as novacron-ml run\n"
        "does: runtime.quiet_gc)",
    )
    ap.add_argument(
        "--tiers-off",
        action="store_true",
        help="also run the flow with every detection tier off but robust z (bench_scale's\n"
        "TIERS_OFF): what the rest of the flow leaves of the latency budget",
    )
    ap.add_argument("--json", help="also write the figures here")
    ap.add_argument(
        "--processes",
        type=int,
        default=1,
        help="also run the flow as a cluster of this many processes (one worker each, each\n"
        "releasing its own hosts' events, as Kafka partitions keyed by series would)",
    )
    ap.add_argument("--index", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--addresses", help=argparse.SUPPRESS)
    ap.add_argument("--live-start-ms", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    settings = Settings(window={"length_s": args.window_s}, ingest={"max_event_age_s": 0})
    if args.index is not None:  # one member of a --processes cluster
        if not args.malloc_default:
            retain_freed_memory()
        print(json.dumps(member(args, settings)))
        return
    if not args.malloc_default:
        print(f"bench_latency: {retain_freed_memory()}")
    results: dict[str, Any] = {}

    epoch = timedelta(milliseconds=args.epoch_ms) if args.epoch_ms else None
    results["ours (window close -> score)"] = run_ours(args, settings, epoch, exact=True)
    if args.no_snapshots:
        name = "ours, no snapshots (no recovery)"
        results[name] = run_ours(args, settings, epoch, exact=True, snapshots=False)
    if args.tiers_off:
        off = settings.model_copy(
            update={"detector": settings.detector.model_copy(update=TIERS_OFF)}
        )
        results["ours, every tier off (robust z)"] = run_ours(args, off, epoch, exact=True)
    if args.processes > 1:
        results[f"ours, {args.processes} processes"] = run_cluster(args)
    if args.cadence:
        name = f"ours, {FeatureLogic.NOTIFY_EVERY.total_seconds() * 1000:.0f} ms notify cadence"
        results[name] = run_ours(args, settings, epoch, exact=False)

    if not args.no_naive:
        results["naive (event -> score)"] = run_naive(args, epoch)
    print(f"{'flow':40s} {'n':>7s} {'p50 ms':>8s} {'p99 ms':>8s} {'max ms':>8s}")
    for name, r in results.items():
        print(f"{name:40s} {r['n']:7d} {r['p50_ms']:8.1f} {r['p99_ms']:8.1f} {r['max_ms']:8.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


def run_ours(
    args: argparse.Namespace,
    settings: Settings,
    epoch: timedelta | None,
    exact: bool,
    snapshots: bool = True,
) -> dict[str, float]:
    """The production flow; `exact`: notified when the next window can close (the default),
    else on the fixed NOTIFY_EVERY cadence (the previous behaviour); `snapshots`: the steps'
    epoch snapshots taken, as in `novacron-ml run` with its default recovery state."""
    lateness_ms = int(settings.window.allowed_lateness_s * 1000)
    live_start = _now_ms() + int(args.lead_s * 1000)  # to build and replay the history
    items = fleet_messages(args, live_start)
    ours, collect = live_latencies(lateness_ms, live_start, items[-1][2])

    print(f"ours: {len(items):,} events, live from {datetime.fromtimestamp(live_start / 1000)}")
    flow = build_flow(
        settings,
        PacedSource(items),
        CallbackSink(collect),
        kafka_output=False,
        emit_scores=True,
        recovery=snapshots,
    )
    full_gc: list[tuple[int, float]] = []  # (wall ms at the end, pause ms) of gen-2 passes
    started = [0.0]

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            full_gc.append((_now_ms(), (time.perf_counter() - started[0]) * 1000))

    if args.gc:
        gc.callbacks.append(on_gc)
    FeatureLogic.exact_notify = exact
    if not args.gc_default:
        print(f"bench_latency: {quiet_collector()}")  # where novacron-ml run calls it
    try:
        run_main(flow, epoch_interval=epoch)
    finally:
        FeatureLogic.exact_notify = True
        if args.gc:
            gc.callbacks.remove(on_gc)
    result = percentiles(ours)
    if args.gc:
        live = [ms for t, ms in full_gc if t >= live_start]
        result |= {
            "full_gc_run": len(full_gc),
            "full_gc_run_ms": sum(ms for _, ms in full_gc),
            "full_gc_live": len(live),
            "full_gc_live_max_ms": max(live, default=0.0),
        }
        print(
            f"full (gen-2) collections: {len(full_gc)} in the run "
            f"({result['full_gc_run_ms']:.0f} ms), {len(live)} during the live part "
            f"(longest {result['full_gc_live_max_ms']:.0f} ms)"
        )
    return result


def member(args: argparse.Namespace, settings: Settings) -> list[float]:
    """One process of a cluster: its hosts' share of the fleet, paced; its live latencies."""
    from bench.bench_workers import share_of

    lateness_ms = int(settings.window.allowed_lateness_s * 1000)
    live_start = args.live_start_ms
    items = [
        m for m in fleet_messages(args, live_start) if share_of(m[0], args.processes) == args.index
    ]
    latencies, collect = live_latencies(lateness_ms, live_start, max(m[2] for m in items))

    flow = build_flow(
        settings,
        PacedSource(items, part=str(args.index)),
        CallbackSink(collect),
        kafka_output=False,
        emit_scores=True,
    )
    epoch = timedelta(milliseconds=args.epoch_ms) if args.epoch_ms else None
    if not args.gc_default:
        quiet_collector()
    cluster_main(flow, args.addresses.split(";"), args.index, epoch_interval=epoch)
    return latencies


def run_cluster(args: argparse.Namespace) -> dict[str, float]:
    """The flow as `--processes` processes, each a `member` (the same live start), merged."""
    from bench.bench_workers import run_members

    live_start = _now_ms() + int(args.lead_s * 1000)
    command = [sys.executable, "-m", "bench.bench_latency", "--hosts", str(args.hosts)]
    command += ["--window-s", str(args.window_s), "--warm-min", str(args.warm_min)]
    command += ["--live-s", str(args.live_s), "--seed", str(args.seed)]
    command += ["--processes", str(args.processes), "--live-start-ms", str(live_start)]
    command += ["--epoch-ms", str(args.epoch_ms)] if args.epoch_ms else []
    command += ["--gc-default"] if args.gc_default else []
    command += ["--malloc-default"] if args.malloc_default else []
    print(
        f"ours, {args.processes} processes: live from {datetime.fromtimestamp(live_start / 1000)}"
    )
    rows = run_members(command, args.processes)
    return percentiles([latency for row in rows for latency in row])


def run_naive(args: argparse.Namespace, epoch: timedelta | None) -> dict[str, float]:
    live_start = _now_ms() + int(args.lead_s * 1000)
    items = fleet_messages(args, live_start)
    naive: list[float] = []

    def collect_naive(batch: list[Any]) -> None:
        now = _now_ms()
        for _key, (_score, event) in batch:
            if event["ts"] >= live_start:
                naive.append(now - event["ts"])

    print("naive: per-event Bytewax + River HalfSpaceTrees")
    naive_run = naive_flow(PacedSource(items), CallbackSink(collect_naive), flag_above=-1.0)
    run_main(naive_run, epoch_interval=epoch)
    return percentiles(naive)


if __name__ == "__main__":
    main()
