"""Throughput of the detect flow vs. the naive per-event Bytewax + River baseline.

Both flows see the same simulated events, in the same run, one Bytewax worker each:

- ours: the production `dataflows.detect` flow (msgspec parse + validation + DLQ routing ->
  event-time windows -> robust z per window);
- baseline: `json.loads` -> `key_on(series)` -> `stateful_map` holding one River
  `HalfSpaceTrees` per series that learns and scores every raw event (the pattern of Bytewax's
  River anomaly-detection example), values min-max scaled per series as HST expects.

From an in-process source (the simulator's encoded messages held in memory) and, with
`--kafka`, from a Kafka topic the same messages were produced to (bounded read to the end).

    python bench/bench_throughput.py                       # in-process only
    python bench/bench_throughput.py --kafka 127.0.0.1:9092 --json out/bench.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import uuid
from collections.abc import Callable
from typing import Any

import bytewax.operators as op
from bytewax.connectors.kafka import KafkaSource, KafkaSourceMessage
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source
from bytewax.testing import run_main
from confluent_kafka import OFFSET_BEGINNING
from river import anomaly, compose, preprocessing

from dataflows.detect import build_flow, kafka_flow
from dataflows.io import CallbackSink, MessageSource, messages_of
from novacron_ml.core.kafka import delete_topics, ensure_topics, produce
from novacron_ml.core.settings import IngestSettings, KafkaSettings, Settings, TopicSettings
from novacron_ml.core.simulator import FleetConfig, FleetSimulator


def naive_flow(source: Source[Any], sink: CallbackSink, flag_above: float = 0.9) -> Dataflow:
    """The baseline, written the way the Bytewax River example does it."""

    def parse(msg: KafkaSourceMessage[Any, Any]) -> dict[str, Any]:
        return json.loads(msg.value)

    def series(event: dict[str, Any]) -> str:
        return f"{event['cluster']}/{event['host']}/{event['metric']}"

    def score(model: Any, event: dict[str, Any]) -> tuple[Any, tuple[float, dict[str, Any]]]:
        if model is None:
            model = compose.Pipeline(preprocessing.MinMaxScaler(), anomaly.HalfSpaceTrees(seed=42))
        x = {"value": event["value"]}
        s = model.score_one(x)
        model.learn_one(x)
        return model, (s, event)

    flow = Dataflow("naive_hst")
    raw = op.input("in", flow, source)
    # one message at a time, as Bytewax's KafkaSource yields them (our in-process source
    # yields batches: `messages_of` builds the per-message objects the example reads)
    events = op.map("parse", op.flat_map("messages", raw, messages_of), parse)
    keyed = op.key_on("key", events, series)
    scored = op.stateful_map("hst", keyed, score)
    flagged = op.filter("flag", scored, lambda kv: kv[1][0] > flag_above)
    op.output("out", flagged, sink)
    return flow


def timed(make_flow: Callable[[], Dataflow]) -> float:
    flow = make_flow()
    start = time.perf_counter()
    run_main(flow)
    return time.perf_counter() - start


def settings_for_bench(bootstrap: str = "127.0.0.1:9092", topic: str = "metrics") -> Settings:
    # Historical simulated data: disable the wall-clock age bound.
    return Settings(
        kafka=KafkaSettings(bootstrap_servers=bootstrap, tail=False),
        topics=TopicSettings(metrics=topic, alerts=f"{topic}.alerts", dlq=f"{topic}.dlq"),
        ingest=IngestSettings(max_event_age_s=0),
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--hosts", type=int, default=6)
    parser.add_argument("--hours", type=float, default=2.0, help="simulated hours at 5 s steps")
    parser.add_argument("--kafka", metavar="BOOTSTRAP", help="also measure from this Kafka")
    parser.add_argument("--json", metavar="FILE", help="write the figures as JSON")
    args = parser.parse_args()

    sim = FleetSimulator(
        FleetConfig(
            hosts=args.hosts, clusters=2, duration_s=args.hours * 3600, start_ms=1_790_000_000_000
        )
    )
    messages = list(sim.messages("json"))
    n = len(messages)
    print(f"{n:,} events ({args.hosts} hosts x 10 metrics x {sim.n_ticks:,} ticks), 1 worker")
    print(
        f"python {platform.python_version()}, {platform.machine()}, {platform.processor() or '?'}"
    )
    results: dict[str, Any] = {"events": n, "hosts": args.hosts, "hours": args.hours}
    sink_out: list[Any] = []
    sink = CallbackSink(sink_out.extend)

    def inproc() -> MessageSource:
        return MessageSource(lambda: iter(messages), 1000)

    rows = []
    ours = timed(lambda: build_flow(settings_for_bench(), inproc(), sink, kafka_output=False))
    naive = timed(lambda: naive_flow(inproc(), sink))
    rows.append(("in-process", ours, naive))

    if args.kafka:
        topic = f"bench.{uuid.uuid4().hex[:8]}"
        ensure_topics(args.kafka, [topic, f"{topic}.alerts", f"{topic}.dlq"])
        produce(args.kafka, topic, messages)
        settings = settings_for_bench(args.kafka, topic)

        def kafka_source() -> KafkaSource:
            return KafkaSource(
                [args.kafka],
                [topic],
                tail=False,
                starting_offset=OFFSET_BEGINNING,
                raise_on_errors=False,
            )

        # Ours writes its alerts to Kafka too; the baseline only flags in memory.
        k_ours = timed(lambda: kafka_flow(settings))
        k_naive = timed(lambda: naive_flow(kafka_source(), sink))
        rows.append(("kafka", k_ours, k_naive))
        delete_topics(args.kafka, [topic, f"{topic}.alerts", f"{topic}.dlq"])

    print(f"\n{'source':<12}{'ours ev/s':>14}{'naive HST ev/s':>18}{'ratio':>9}")
    for name, t_ours, t_naive in rows:
        print(f"{name:<12}{n / t_ours:>14,.0f}{n / t_naive:>18,.0f}{t_naive / t_ours:>8.1f}x")
        results[name] = {
            "ours_events_per_s": n / t_ours,
            "naive_events_per_s": n / t_naive,
            "ratio": t_naive / t_ours,
            "ours_seconds": t_ours,
            "naive_seconds": t_naive,
        }
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
