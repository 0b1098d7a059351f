"""`novacron-ml replay`: a time range of a topic through the detect flow, reported."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec

from novacron_ml.cli.common import KAFKA_WAIT_S, parse_time, writes
from novacron_ml.core.kafka import wait_ready


def cmd_replay(args: argparse.Namespace) -> int:
    from dataflows.inprocess import run_in_process
    from dataflows.io import TimeRangeKafkaSource
    from novacron_ml.app.console import Progress
    from novacron_ml.app.plots import html_report
    from novacron_ml.app.replay import affected_plots, labels_in_range, report
    from novacron_ml.core.kafka import ReplayError, produce
    from novacron_ml.core.labels import read_labels
    from novacron_ml.core.settings import load_settings

    settings = load_settings()
    # A replay is explicit about its time range: no wall-clock age bounds.
    settings = settings.model_copy(
        update={
            "ingest": settings.ingest.model_copy(
                update={"max_event_age_s": 0.0, "max_event_future_s": 0.0}
            ),
            # in-process only: makes the flow hand its feature windows to our sink for plots
            "topics": settings.topics.model_copy(update={"features": "replay.features"}),
        }
    )
    bootstrap = settings.kafka.bootstrap_servers
    labels = read_labels(str(args.labels)) if args.labels else None
    wait_ready(bootstrap, timeout_s=KAFKA_WAIT_S)
    try:
        source = TimeRangeKafkaSource(bootstrap, args.topic, args.from_ms, args.to_ms)
    except ReplayError as exc:
        print(f"novacron-ml replay: {exc}", file=sys.stderr)
        return 2
    planned = sum(p.end - p.start for p in source.ranges)  # records, an upper bound
    bar = Progress(f"replaying {args.topic}", None, unit="events")
    print(f"novacron-ml replay: up to {planned:,} records of {args.topic}", file=sys.stderr)
    for part in source.ranges:
        note = part.retention_note()
        if note:
            print(f"novacron-ml replay: {note}", file=sys.stderr)
    try:
        run = run_in_process(settings, source, emit_scores=True, progress=bar.update)
    finally:
        bar.close()
    alerts, dead, windows, scores = run.alerts, run.dead_letters, run.windows, run.scores
    seconds, messages, events = run.seconds, run.messages, run.events
    enc = msgspec.json.Encoder()
    if args.out:
        with open(args.out, "wb") as f:
            for a in alerts:
                f.write(enc.encode(a) + b"\n")
    if args.out_topic:
        produce(bootstrap, args.out_topic, [(a.alert_id.encode(), enc.encode(a)) for a in alerts])
        if dead:
            produce(bootstrap, f"{args.out_topic}.dlq", [(d.key, d.payload) for d in dead])
    result = report(
        args.from_ms,
        args.to_ms,
        messages,
        events,
        Counter(d.reason.value for d in dead),
        alerts,
        labels,
        scores,
    )
    print("\n".join(result.lines()))
    if args.plots:
        scoped = labels_in_range(labels, args.from_ms, args.to_ms) if labels else None
        plots = affected_plots(windows, alerts, scoped)
        Path(args.plots).write_text(
            html_report(f"novacron-ml replay of {args.topic}", result.lines(), plots)
        )
        print(f"plots of {len(plots)} affected series -> {args.plots}", file=sys.stderr)
    print(f"({events / seconds if seconds else 0:,.0f} events/s, {seconds:.1f} s)", file=sys.stderr)
    if args.json:
        ev = result.evaluation
        Path(args.json).write_text(
            json.dumps(
                {
                    "messages": messages,
                    "events": events,
                    "alerts": len(alerts),
                    "dead_letters": result.dead_letters,
                    "precision": ev.precision if ev else None,
                    "recall": ev.recall if ev else None,
                    "labels_in_range": ev.labels if ev else None,
                    "detected": ev.detected if ev else None,
                    "nab": {c.profile: c.score for c in result.nab},
                    "nab_probability": {c.profile: c.score for c in result.nab_probability},
                    "median_delay_s": result.median_delay_s,
                },
                indent=2,
            )
        )
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser(
        "replay",
        help="replay a time range of a Kafka topic through the detect flow and report",
        description="Read the records of TOPIC whose Kafka timestamps lie in [FROM, TO] "
        "(every partition from offsets_for_times(FROM) to its first record after TO), run the "
        "detect flow over them in event time at full speed, and print alerts by type and "
        "severity and, with --labels, precision, recall and F1 per type and detection delays.",
    )
    p.add_argument("--topic", required=True, help="topic to replay")
    p.add_argument(
        "--from",
        dest="from_ms",
        type=parse_time,
        required=True,
        help="start: RFC 3339, epoch ms or now-2h",
    )
    p.add_argument("--to", dest="to_ms", type=parse_time, required=True, help="end (inclusive)")
    p.add_argument("--labels", type=Path, help="anomaly labels (JSON lines, as produce writes)")
    p.add_argument("--out", help="write the alerts as JSON lines to this file")
    p.add_argument("--out-topic", help="publish the alerts here (dead letters to NAME.dlq)")
    p.add_argument("--plots", metavar="HTML", help="write plots of the affected series here")
    p.add_argument("--json", metavar="FILE", help="also write the report figures as JSON")
    writes(p, "out", "plots", "json")
    p.set_defaults(func=cmd_replay)
