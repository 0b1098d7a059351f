"""Parsing and validation throughput per wire format (one process, no Bytewax), then the
flow's own parse step (`dataflows.steps.make_parse_step`: parse, count, group by shard) on
batches of Kafka messages with the batch fast path for JSON objects
(`MessageParser.parse_objects`) and without it, alternated in one run.

python bench/bench_parse.py [--batch 1000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from novacron_ml.core.simulator import FleetConfig, FleetSimulator
from operators.ingest.parse import MessageParser, ParseLimits, wall_clock_ms


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--batch", type=int, default=1000, help="messages per batch (1000)")
    p.add_argument("--repeats", type=int, default=3, help="alternations of the step (3)")
    args = p.parse_args()
    sim = FleetSimulator(FleetConfig(hosts=10, duration_s=3600, start_ms=1_790_000_000_000))
    parser = MessageParser(ParseLimits(max_event_age_ms=0))
    print(f"python {platform.python_version()}; simulator: 10 hosts x 10 metrics x 1 h at 5 s")
    print(f"{'format':<12}{'events/s':>12}{'messages/s':>13}")
    for fmt in ("json", "json-array", "line"):
        messages = list(sim.messages(fmt))
        events: list[object] = []
        dead: list[object] = []
        start = time.perf_counter()
        now = wall_clock_ms()
        for key, value in messages:
            parser.parse_into(value, key, "", now, events, dead)  # type: ignore[arg-type]
        seconds = time.perf_counter() - start
        assert not dead
        print(f"{fmt:<12}{len(events) / seconds:>12,.0f}{len(messages) / seconds:>13,.0f}")
    step_side_by_side(sim, args.batch, args.repeats)


def step_side_by_side(sim: FleetSimulator, size: int, repeats: int) -> None:
    """The flow's parse step on JSON-object batches, fast path on and off, alternated."""
    from bytewax.connectors.kafka import KafkaSourceMessage

    from dataflows.steps import ShardRouter, make_parse_step

    messages = [
        KafkaSourceMessage(key=k, value=v, topic="metrics", partition=0, offset=i)
        for i, (k, v) in enumerate(sim.messages("json"))
    ]
    batches = [messages[i : i + size] for i in range(0, len(messages), size)]
    print(f"\nthe flow's parse step, JSON objects, batches of {size} (events/s):")
    rates: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(repeats):
        for fast in (False, True):
            parser = MessageParser(ParseLimits(max_event_age_ms=0))
            if not fast:
                parser.parse_objects = lambda *a, **k: None  # type: ignore[method-assign]
            step = make_parse_step(parser, ShardRouter(1))
            start = time.perf_counter()
            for batch in batches:
                step(batch)
            rates[fast].append(len(messages) / (time.perf_counter() - start))
    for fast, label in ((False, "message by message"), (True, "batch fast path")):
        print(f"  {label:<20}" + " · ".join(f"{r:,.0f}" for r in rates[fast]))
    ratios = [b / a for a, b in zip(rates[False], rates[True], strict=True)]
    print("  fast / per message  " + " · ".join(f"{r:.2f}" for r in ratios))


if __name__ == "__main__":
    main()
