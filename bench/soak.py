"""Soak: the default detect flow for a long run at a fixed rate with series churn, sampling the
process's RSS and the flow's counters, to show that memory stays bounded (issue 19).

One Bytewax worker in this process, a source that stamps events with the wall clock (so the
feature engine's idle eviction, which runs on system time, retires the series that stop), a
sink that only counts. Every `--churn-every` seconds `--churn` of the hosts are replaced by
new ones (new series; the old ones go idle and are evicted after `features.idle_ttl_s`, and
their detector state with them). Events come as one JSON array per host and tick.

    python bench/soak.py --rate 0 --minutes 2          # the maximum rate for this fleet
    python bench/soak.py --rate 15000 --minutes 30     # the soak: half of it

The process is set up as `novacron-ml run` sets up its own (with its default recovery state):
freed memory kept for the next snapshot (`recovery.retain_freed_memory`; `--allocator-default`:
glibc's defaults) and the collector's full passes thinned (`runtime.quiet_gc`;
`--gc-default`: Python's defaults), so the soak shows whether objects in reference cycles,
which now wait longer for a full pass, make memory grow.

Prints a line per sample and, at the end, the RSS growth from the end of the warm-up
(`--warmup`, minutes) to the end of the run (the target: < 5 %), and the collector's passes.
"""

from __future__ import annotations

import argparse
import collections
import gc
import itertools
import math
import random
import threading
import time
from datetime import UTC, datetime
from typing import Any

import msgspec
from bytewax.connectors.kafka import KafkaSourceMessage
from bytewax.inputs import DynamicSource, StatelessSourcePartition
from bytewax.testing import run_main

from dataflows.detect import build_flow
from dataflows.io import CallbackSink
from novacron_ml.core import metrics as obs
from novacron_ml.core.memory import quiet_collector, retain_freed_memory
from novacron_ml.core.settings import Settings

METRICS = (
    "cpu_util", "mem_util", "disk_util", "net_rx_bytes_rate", "latency_p50_ms",
    "latency_p99_ms", "error_rate", "request_rate", "queue_depth", "gc_pause_ms",
)  # fmt: skip


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class _Fleet(StatelessSourcePartition[Any]):
    """Each host sends its metrics once every `hosts × 10 / rate` seconds, hosts in turn;
    `--rate 0`: every host in every batch, as fast as the flow takes them."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.ids = itertools.count()
        self.hosts = [f"soak-{next(self.ids):06d}" for _ in range(args.hosts)]
        self.rng = random.Random(7)
        self.start = self.churned = time.time()
        self.slot_s = 1 / (args.rate / len(METRICS)) if args.rate > 0 else 0.0  # per host
        self.sent = 0  # host messages so far
        self.encoder = msgspec.json.Encoder()

    def _churn(self, now: float) -> None:
        if now - self.churned >= self.args.churn_every:
            self.churned = now
            for _ in range(int(len(self.hosts) * self.args.churn)):
                self.hosts[self.rng.randrange(len(self.hosts))] = f"soak-{next(self.ids):06d}"

    def next_batch(self) -> list[Any]:
        now = time.time()
        if now - self.start >= self.args.minutes * 60:
            raise StopIteration
        self._churn(now)
        if self.slot_s:
            due = min(int((now - self.start) / self.slot_s) - self.sent, 2 * len(self.hosts))
        else:
            due = len(self.hosts)
        ts = int(now * 1000)
        out = []
        for _ in range(max(due, 0)):
            host = self.hosts[self.sent % len(self.hosts)]
            phase = ts / 60_000.0 + (self.sent % len(self.hosts))
            events = [
                {
                    "ts": ts,
                    "host": host,
                    "cluster": "soak",
                    "metric": m,
                    "value": 50.0 + 10.0 * math.sin(phase + i) + self.rng.gauss(0, 1),
                }
                for i, m in enumerate(METRICS)
            ]
            out.append(
                KafkaSourceMessage(
                    key=host.encode(), value=self.encoder.encode(events), topic="soak",
                    partition=0, offset=self.sent,
                )
            )  # fmt: skip
            self.sent += 1
        return out

    def next_awake(self) -> datetime | None:
        if not self.slot_s:
            return None
        return datetime.fromtimestamp(self.start + (self.sent + 1) * self.slot_s, UTC)


class FleetSource(DynamicSource[Any]):
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Fleet:
        return _Fleet(self.args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rate", type=float, default=15_000, help="events/s; 0: as fast as it goes"
    )
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--hosts", type=int, default=400, help="live hosts (10 metrics each)")
    parser.add_argument("--churn", type=float, default=0.2, help="share of hosts replaced")
    parser.add_argument("--churn-every", type=float, default=60, help="seconds between churns")
    parser.add_argument("--idle-ttl", type=float, default=120, help="features.idle_ttl_s")
    parser.add_argument("--window", type=float, default=10, help="window.length_s")
    parser.add_argument("--sample", type=float, default=30, help="seconds between samples")
    parser.add_argument("--warmup", type=float, default=10, help="minutes before growth counts")
    parser.add_argument(
        "--allocator-default", action="store_true", help="glibc's trim and mmap thresholds"
    )
    parser.add_argument("--gc-default", action="store_true", help="Python's collector settings")
    args = parser.parse_args()
    settings = Settings(
        window={"length_s": args.window},
        features={"idle_ttl_s": args.idle_ttl},
    )
    samples: list[tuple[float, float, int]] = []
    done = threading.Event()
    t0 = time.monotonic()

    def sample() -> None:
        last_events, last_t = 0, t0
        header = ("min", "events", "events/s", "windows", "evicted", "RSS MB")
        print("{:>6} {:>11} {:>9} {:>9} {:>8} {:>8}".format(*header), flush=True)
        while not done.wait(args.sample):
            now = time.monotonic()
            events = int(obs.counter_value(obs.EVENTS))
            rss = rss_mb()
            samples.append((now - t0, rss, events))
            rate = (events - last_events) / (now - last_t)
            windows = int(obs.counter_value(obs.WINDOWS))
            evicted = int(obs.counter_value(obs.SERIES_EVICTED))
            print(
                f"{(now - t0) / 60:6.1f} {events:11,} {rate:9,.0f} {windows:9,} {evicted:8,} "
                f"{rss:8.1f}",
                flush=True,
            )
            last_events, last_t = events, now

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    written: collections.Counter[str] = collections.Counter()

    def count(items: list[Any]) -> None:  # the Kafka records the flow would write, counted
        written.update(m.topic for m in items)

    flow = build_flow(settings, FleetSource(args), CallbackSink(count))
    if not args.allocator_default:
        print(f"soak: {retain_freed_memory()}", flush=True)
    if not args.gc_default:
        print(f"soak: {quiet_collector()}", flush=True)  # where novacron-ml run calls it
    passes = [0, 0.0]  # full passes, their seconds
    started = [0.0]

    def full_passes(phase: str, info: dict[str, int]) -> None:
        if info["generation"] == 2:
            if phase == "start":
                started[0] = time.perf_counter()
            else:
                passes[0] += 1
                passes[1] += time.perf_counter() - started[0]

    gc.callbacks.append(full_passes)
    run_main(flow)
    done.set()
    sampler.join()
    seconds = time.monotonic() - t0
    events = int(obs.counter_value(obs.EVENTS))
    print(
        f"{events:,} events in {seconds:.0f} s ({events / seconds:,.0f} events/s), "
        f"{int(obs.counter_value(obs.SERIES_EVICTED)):,} series evicted; records by topic: "
        f"{dict(written)}"
    )
    after = [rss for t, rss, _ in samples if t >= args.warmup * 60]
    if len(after) >= 2:
        growth = (after[-1] - after[0]) / after[0] * 100
        print(
            f"RSS after {args.warmup:g} min warm-up: {after[0]:.1f} MB -> {after[-1]:.1f} MB at "
            f"the end ({growth:+.1f} %; max {max(after):.1f} MB)"
        )
    print(
        f"collector ({'Python defaults' if args.gc_default else 'runtime.quiet_gc'}): "
        f"{passes[0]:,} full passes, {passes[1]:.2f} s in all"
    )


if __name__ == "__main__":
    main()
