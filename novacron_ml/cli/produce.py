"""`novacron-ml produce`: simulated fleet metrics to Kafka, labels to a file."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from typing import Any

from novacron_ml.cli.common import count, fleet_args, fleet_config, rate, seconds, writes


def cmd_produce(args: argparse.Namespace) -> int:
    from novacron_ml.app.console import Progress
    from novacron_ml.app.malformed import with_malformed
    from novacron_ml.core.kafka import ProduceReport, ensure_topics, produce, wait_ready
    from novacron_ml.core.labels import write_labels
    from novacron_ml.core.settings import load_settings
    from novacron_ml.core.simulator import FleetSimulator
    from operators.ingest.parse import wall_clock_ms

    settings = load_settings()
    bootstrap = settings.kafka.bootstrap_servers
    topic = args.topic or settings.topics.metrics
    sim = FleetSimulator(fleet_config(args))
    wait_ready(bootstrap, timeout_s=args.wait)
    ensure_topics(bootstrap, [topic], partitions=args.partitions)
    write_labels(sim.labels, args.labels)
    print(
        f"producing {sim.n_events:,} events ({args.format}) to {topic} at {bootstrap}"
        f"{f' at {args.rate:,.0f} msg/s' if args.rate else ' as fast as possible'}; "
        f"{len(sim.labels)} anomaly labels -> {args.labels}",
        file=sys.stderr,
    )
    bad: Counter[str] = Counter()

    total = sim.n_events if args.format == "json" else None  # batched formats: fewer
    bar = Progress(f"producing to {topic}", total, unit="messages")

    def progress(r: ProduceReport) -> None:
        bar.update(r.messages)

    messages = with_malformed(
        sim.timed_messages(args.format),
        args.bad_rate,
        args.seed,
        wall_clock_ms,
        lambda reason, _p: bad.update([reason.value]),
    )
    try:
        report = produce(bootstrap, topic, messages, rate=args.rate, progress=progress)
    finally:
        bar.close()
    print(
        f"done: {report.messages:,} messages, {report.bytes / 1e6:,.1f} MB in "
        f"{report.seconds:.1f} s; malformed mixed in: {sum(bad.values())}",
        file=sys.stderr,
    )
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser(
        "produce",
        help="write simulated fleet metrics to Kafka, and the ground-truth labels to a file",
        description="Produce the simulator's events to the metrics topic at a given rate (or as "
        "fast as possible) and write the injected anomalies as JSON lines.",
    )
    fleet_args(p, hours=2.0)
    p.add_argument("--topic", help="topic (default: settings topics.metrics)")
    p.add_argument("--rate", type=rate, default=0.0, help="messages per second (0: max)")
    p.add_argument("--labels", default="labels.jsonl", help="labels file (labels.jsonl)")
    p.add_argument("--partitions", type=count, default=1, help="partitions if the topic is new")
    p.add_argument("--wait", type=seconds, default=60, help="seconds to wait for Kafka (60)")
    writes(p, "labels")
    p.set_defaults(func=cmd_produce)
