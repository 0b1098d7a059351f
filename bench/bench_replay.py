"""Replay throughput per worker (issue 7): produce simulated history, replay it by time range.

Needs a broker (`scripts/kafka.sh start`). Both wire formats replay the same 864,000 events
(40 hosts x 10 metrics x 3 h at 5 s) through the whole detect flow in one worker.

    python bench/bench_replay.py --kafka 127.0.0.1:9092
"""

from __future__ import annotations

import argparse
import time
import uuid

from bytewax.testing import run_main

from dataflows.detect import build_flow
from dataflows.io import CallbackSink, TimeRangeKafkaSource
from novacron_ml.core import metrics as obs
from novacron_ml.core.kafka import delete_topics, ensure_topics, produce
from novacron_ml.core.schema import Alert
from novacron_ml.core.settings import IngestSettings, Settings
from novacron_ml.core.simulator import FleetConfig, FleetSimulator


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kafka", default="127.0.0.1:9092")
    parser.add_argument("--hosts", type=int, default=40)
    parser.add_argument("--hours", type=float, default=3.0)
    args = parser.parse_args()
    start = 1_790_000_000_000
    sim = FleetSimulator(
        FleetConfig(hosts=args.hosts, duration_s=args.hours * 3600, start_ms=start)
    )
    settings = Settings(ingest=IngestSettings(max_event_age_s=0, max_event_future_s=0))
    print(f"{sim.n_events:,} events, 1 worker, whole detect flow")
    print(f"{'format':<12}{'messages':>10}{'events/s':>12}{'alerts':>8}")
    for fmt in ("json-array", "json"):
        topic = f"bench.replay.{uuid.uuid4().hex[:8]}"
        ensure_topics(args.kafka, [topic])
        produce(args.kafka, topic, sim.timed_messages(fmt))
        alerts: list[object] = []
        before = obs.counter_value(obs.EVENTS), obs.counter_value(obs.MESSAGES)
        source = TimeRangeKafkaSource(args.kafka, topic, start, start + int(args.hours * 3_600_000))
        t = time.perf_counter()
        run_main(build_flow(settings, source, CallbackSink(alerts.extend), kafka_output=False))
        seconds = time.perf_counter() - t
        events = obs.counter_value(obs.EVENTS) - before[0]
        messages = obs.counter_value(obs.MESSAGES) - before[1]
        n_alerts = sum(isinstance(a, Alert) for a in alerts)
        print(f"{fmt:<12}{messages:>10,.0f}{events / seconds:>12,.0f}{n_alerts:>8}")
        delete_topics(args.kafka, [topic])


if __name__ == "__main__":
    main()
