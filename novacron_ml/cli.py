"""The `novacron-ml` command line."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec
from pydantic import ValidationError

from novacron_ml import __version__

if TYPE_CHECKING:
    from novacron_ml.simulator import FleetConfig

EPILOG = """\
settings: every option of the flow is a typed setting read from NOVACRON_* environment
variables and an optional TOML file (NOVACRON_CONFIG, default ./novacron.toml); see
`novacron-ml settings` and the README. Kafka: KAFKA_BOOTSTRAP_SERVERS or
NOVACRON_KAFKA_BOOTSTRAP_SERVERS (default 127.0.0.1:9092; scripts/kafka.sh starts one).
"""


def parse_time(text: str) -> int:
    """RFC 3339, epoch milliseconds, or 'now-6h' style offsets to epoch ms."""
    text = text.strip()
    if text.isdigit():
        return int(text)
    if text.startswith("now"):
        rest = text[3:]
        if not rest:
            return int(time.time() * 1000)
        units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
        sign = -1 if rest[0] == "-" else 1
        amount, unit = rest[1:-1], rest[-1]
        if rest[0] not in "+-" or unit not in units or not amount.replace(".", "").isdigit():
            raise argparse.ArgumentTypeError(f"bad relative time {text!r} (try now-6h)")
        return int((time.time() + sign * float(amount) * units[unit]) * 1000)
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"bad time {text!r}: {exc}") from exc
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


def _fleet_args(p: argparse.ArgumentParser, hours: float) -> None:
    g = p.add_argument_group("simulated fleet")
    g.add_argument("--hosts", type=int, default=12, help="hosts (default 12)")
    g.add_argument("--clusters", type=int, default=3, help="clusters (default 3)")
    g.add_argument(
        "--hours", type=float, default=hours, help=f"simulated hours (default {hours:g})"
    )
    g.add_argument("--step", type=float, default=5.0, help="seconds between samples (default 5)")
    g.add_argument("--seed", type=int, default=7, help="random seed; same seed, same data")
    g.add_argument(
        "--start",
        type=parse_time,
        default=None,
        help="first sample time: RFC 3339, epoch ms or now-6h (default: data ends now)",
    )
    g.add_argument(
        "--anomaly-rate",
        type=float,
        default=0.5,
        help="injected anomalies per host per hour (default 0.5)",
    )
    g.add_argument(
        "--format",
        choices=["json", "json-array", "line"],
        default="json",
        help="wire format: JSON object per message, JSON array per host and tick, "
        "or InfluxDB line protocol (default json)",
    )
    g.add_argument(
        "--bad-rate",
        type=float,
        default=0.001,
        help="fraction of extra malformed messages mixed in (default 0.001)",
    )


def _fleet_config(args: argparse.Namespace) -> FleetConfig:
    from novacron_ml.simulator import FleetConfig

    return FleetConfig(
        hosts=args.hosts,
        clusters=args.clusters,
        step_s=args.step,
        duration_s=args.hours * 3600,
        start_ms=args.start,
        seed=args.seed,
        anomalies_per_host_per_hour=args.anomaly_rate,
    )


def cmd_demo(args: argparse.Namespace) -> int:
    from novacron_ml.demo import false_positive_windows, run_demo, summary
    from novacron_ml.models import DEFAULT_FORECASTER
    from novacron_ml.settings import load_settings

    forecast = not args.no_forecast and DEFAULT_FORECASTER.is_file()
    settings = load_settings(forecast={"enabled": True}) if forecast else load_settings()
    result = run_demo(
        settings,
        _fleet_config(args),
        fmt=args.format,
        bad_rate=args.bad_rate,
        show_alerts=args.show,
        quiet=args.quiet,
    )
    print(summary(result))
    if args.json:
        ev = result.evaluation
        Path(args.json).write_text(
            json.dumps(
                {
                    "events": result.events,
                    "seconds": result.seconds,
                    "events_per_second": result.events_per_second,
                    "alerts": len(result.alerts),
                    "alerts_by_type": Counter(a.type for a in result.alerts),
                    "dead_letters": result.dead_letters,
                    "precision": ev.precision,
                    "recall": ev.recall,
                    "type_accuracy": ev.type_accuracy,
                    "windows": result.windows,
                    "false_positive_windows": false_positive_windows(result),
                    "false_positive_rate": false_positive_windows(result) / max(result.windows, 1),
                },
                indent=2,
            )
        )
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from bytewax.recovery import RecoveryConfig
    from bytewax.run import cli_main

    from dataflows.detect import kafka_flow
    from novacron_ml.kafka_io import ensure_topics, wait_ready
    from novacron_ml.observability import serve_metrics
    from novacron_ml.settings import load_settings

    settings = load_settings()
    kafka_changes: dict[str, object] = {}
    if args.once:
        kafka_changes["tail"] = False
    if args.from_end:
        kafka_changes["starting_offset"] = "end"
    if kafka_changes:
        settings = settings.model_copy(
            update={"kafka": settings.kafka.model_copy(update=kafka_changes)}
        )
    bootstrap = settings.kafka.bootstrap_servers
    print(f"novacron-ml run: waiting for Kafka at {bootstrap}", file=sys.stderr)
    wait_ready(bootstrap, timeout_s=args.wait)
    t = settings.topics
    ensure_topics(bootstrap, t.in_use, partitions=args.partitions)
    port = args.metrics_port or settings.observability.metrics_port
    if port:
        serve_metrics(port)
        print(f"novacron-ml run: Prometheus metrics on :{port}/metrics", file=sys.stderr)
    recovery = None
    if args.recovery_dir:
        recovery = RecoveryConfig(str(args.recovery_dir))
    print(
        f"novacron-ml run: {t.metrics} -> {t.alerts} (+ {t.dlq}), {args.workers} worker(s)",
        file=sys.stderr,
    )
    cli_main(
        kafka_flow(settings),
        workers_per_process=args.workers,
        epoch_interval=None,
        recovery_config=recovery,
    )
    return 0


def cmd_produce(args: argparse.Namespace) -> int:
    from novacron_ml.kafka_io import ProduceReport, ensure_topics, produce, wait_ready
    from novacron_ml.malformed import with_malformed
    from novacron_ml.settings import load_settings
    from novacron_ml.simulator import FleetSimulator, write_labels
    from operators.parse import wall_clock_ms

    settings = load_settings()
    bootstrap = settings.kafka.bootstrap_servers
    topic = args.topic or settings.topics.metrics
    sim = FleetSimulator(_fleet_config(args))
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

    def progress(r: ProduceReport) -> None:
        rate = r.messages / r.seconds if r.seconds else 0
        print(f"\r  {r.messages:,} messages, {rate:,.0f} msg/s", end="", file=sys.stderr)

    messages = with_malformed(
        sim.timed_messages(args.format),
        args.bad_rate,
        args.seed,
        wall_clock_ms,
        lambda reason, _p: bad.update([reason.value]),
    )
    report = produce(bootstrap, topic, messages, rate=args.rate, progress=progress)
    print(
        f"\rdone: {report.messages:,} messages, {report.bytes / 1e6:,.1f} MB in "
        f"{report.seconds:.1f} s; malformed mixed in: {sum(bad.values())}",
        file=sys.stderr,
    )
    return 0


def cmd_topics(args: argparse.Namespace) -> int:
    from novacron_ml.kafka_io import ensure_topics, wait_ready
    from novacron_ml.settings import load_settings

    settings = load_settings()
    t = settings.topics
    wait_ready(settings.kafka.bootstrap_servers, timeout_s=args.wait)
    ensure_topics(settings.kafka.bootstrap_servers, t.in_use, args.partitions)
    print(f"topics ready: {', '.join(t.in_use)}")
    return 0


def cmd_nab(args: argparse.Namespace) -> int:
    from novacron_ml.console import table
    from novacron_ml.nab import PROFILES, load_profiles
    from novacron_ml.nab_runner import (
        print_problems,
        report_html,
        run_directory,
        score_by_category,
        score_run,
    )
    from novacron_ml.settings import load_settings

    if not args.data.is_dir():
        raise FileNotFoundError(f"--data {args.data} is not a directory")
    if (args.per_file or args.plots) and not args.labels:
        raise ValueError("--per-file and --plots score the run: they need --labels")
    settings = load_settings()

    def progress(i: int, n: int, name: str) -> None:
        print(f"\r[{i}/{n}] {name:<70}", end="", file=sys.stderr, flush=True)

    start = time.perf_counter()
    run = run_directory(args.data, args.out, args.detector, settings, progress)
    print(
        f"\rscored {len(run.files)} files in {time.perf_counter() - start:.1f} s -> {args.out}"
        + " " * 40,
        file=sys.stderr,
    )
    print_problems(run.problems)
    if args.labels:
        profiles = load_profiles(args.profiles) if args.profiles else PROFILES
        results = score_run(run, args.labels, profiles)
        rows = [[r.profile, r.score, r.threshold, r.raw] for r in results]
        print(table(rows, ["profile", "NAB score", "threshold", "raw score"]))
        if args.per_file and results:
            first = results[0]
            print(f"\nper file, {first.profile} profile at its threshold {first.threshold:.4f}:")
            per_file = [[f.name, f.tp + f.fn, f.tp, f.fn, f.fp, f.raw] for f in first.files]
            print(table(per_file, ["file", "windows", "detected", "missed", "false pos.", "raw"]))
            per_category = [
                [name, n_files, n_windows, part.score]
                for name, n_files, n_windows, part in score_by_category(
                    run, args.labels, profiles[0]
                )
            ]
            print(f"\nper category, {first.profile} profile, threshold swept within each:")
            print(table(per_category, ["category", "files", "windows", "NAB score"]))
        if args.plots and results:
            Path(args.plots).write_text(report_html(run, args.labels, results[0]))
            print(f"plots of {len(run.files)} files -> {args.plots}", file=sys.stderr)
        if args.json:
            Path(args.json).write_text(
                json.dumps(
                    {
                        r.profile: {
                            "score": r.score,
                            "threshold": r.threshold,
                            "files": {
                                f.name: {"raw": f.raw, "tp": f.tp, "fp": f.fp, "fn": f.fn}
                                for f in r.files
                            },
                        }
                        for r in results
                    },
                    indent=2,
                )
            )
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from bytewax.testing import run_main

    from dataflows.detect import build_flow
    from novacron_ml import observability as obs
    from novacron_ml.kafka_io import produce
    from novacron_ml.plots import html_report
    from novacron_ml.replay import (
        ReplayError,
        TimeRangeKafkaSource,
        affected_plots,
        labels_in_range,
        report,
    )
    from novacron_ml.schema import Alert
    from novacron_ml.settings import load_settings
    from novacron_ml.simulator import read_labels
    from novacron_ml.sources import CallbackSink
    from operators.deadletter import DeadLetter
    from operators.features import FeatureWindow
    from operators.series import WindowScore

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
    try:
        source = TimeRangeKafkaSource(bootstrap, args.topic, args.from_ms, args.to_ms)
    except ReplayError as exc:
        print(f"novacron-ml replay: {exc}", file=sys.stderr)
        return 2
    alerts: list[Alert] = []
    dead: list[DeadLetter] = []
    windows: list[FeatureWindow] = []
    scores: list[WindowScore] = []

    def collect(items: list[object]) -> None:
        for item in items:
            if isinstance(item, Alert):
                alerts.append(item)
            elif isinstance(item, DeadLetter):
                dead.append(item)
            elif isinstance(item, FeatureWindow):
                windows.append(item)
            elif isinstance(item, WindowScore):
                scores.append(item)

    messages_before = obs.counter_value(obs.MESSAGES)
    events_before = obs.counter_value(obs.EVENTS)
    start = time.perf_counter()
    run_main(
        build_flow(settings, source, CallbackSink(collect), kafka_output=False, emit_scores=True)
    )
    seconds = time.perf_counter() - start
    messages = int(obs.counter_value(obs.MESSAGES) - messages_before)
    events = int(obs.counter_value(obs.EVENTS) - events_before)
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
                    "median_delay_s": result.median_delay_s,
                },
                indent=2,
            )
        )
    return 0


def cmd_alerts_tail(args: argparse.Namespace) -> int:
    from novacron_ml.alertmanager import Deduper, IdleTimer, alert_consumer, decode_alerts
    from novacron_ml.console import alert_line
    from novacron_ml.settings import load_settings

    settings = load_settings()
    group = args.group or f"novacron-tail-{int(time.time() * 1000)}"
    consumer = alert_consumer(
        settings.kafka.bootstrap_servers, settings.topics.alerts, group, args.from_beginning
    )
    dedupe = Deduper()
    shown = 0
    idle = IdleTimer(args.timeout)
    print(
        f"{'window start':<19}  {'severity':<8} {'type':<20} {'cluster/host':<21} "
        f"{'metric':<30} value / expected / z",
        flush=True,
    )
    try:
        while not idle.expired():
            alerts = decode_alerts(consumer.consume(100, 0.5))
            if alerts:
                idle.touch()
            for a in alerts:
                if not dedupe.first_time(a.alert_id):
                    continue
                if a.suppressed_by is not None and not args.all:
                    continue
                if args.type and a.type not in args.type:
                    continue
                if args.severity and a.severity not in args.severity:
                    continue
                if args.host and a.host not in args.host:
                    continue
                print(alert_line(a), flush=True)
                shown += 1
                if args.max and shown >= args.max:
                    return 0
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
    return 0


def cmd_alerts_forward(args: argparse.Namespace) -> int:
    from novacron_ml.alertmanager import WebhookSender, alert_consumer, forward
    from novacron_ml.settings import load_settings

    settings = load_settings()
    consumer = alert_consumer(
        settings.kafka.bootstrap_servers, settings.topics.alerts, args.group, True
    )
    sender = WebhookSender(args.url, max_backoff_s=args.max_backoff)
    print(
        f"forwarding {settings.topics.alerts} -> {args.url} (group {args.group})", file=sys.stderr
    )
    try:
        stats = forward(consumer, sender, args.batch, args.idle_timeout)
    except KeyboardInterrupt:
        stats = sender.stats
    finally:
        consumer.close()
    print(
        f"delivered {stats.alerts} alerts in {stats.batches} batches "
        f"({stats.failures} failed attempts retried)",
        file=sys.stderr,
    )
    return 0


def cmd_alerts_feedback(args: argparse.Namespace) -> int:
    from novacron_ml import topics
    from novacron_ml.alertmanager import decode_alert
    from novacron_ml.kafka_io import iter_topic, produce
    from novacron_ml.settings import load_settings
    from operators.feedback import Feedback, Verdict

    settings = load_settings()
    bootstrap = settings.kafka.bootstrap_servers
    found = None
    for record in iter_topic(bootstrap, settings.topics.alerts, timeout_s=args.wait):
        if record.key == args.alert_id.encode():
            found = decode_alert(record.value) or found
    if found is None:
        print(
            f"novacron-ml: alert {args.alert_id} not found on {settings.topics.alerts}",
            file=sys.stderr,
        )
        return 2
    verdict = Verdict.FALSE_POSITIVE if args.false_positive else Verdict.TRUE_POSITIVE
    feedback = Feedback(found.alert_id, verdict, found.series, found.value)
    topic = settings.topics.feedback or topics.ALERTS_FEEDBACK
    produce(bootstrap, topic, [(found.alert_id.encode(), msgspec.json.encode(feedback))])
    print(f"{verdict.value} for {found.alert_id} ({feedback.series}) -> {topic}")
    return 0


def cmd_settings(args: argparse.Namespace) -> int:
    from novacron_ml.settings import Settings, load_settings

    if args.schema:
        print(json.dumps(Settings.model_json_schema(), indent=2))
    else:
        print(load_settings().model_dump_json(indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="novacron-ml",
        description="Streaming ML for distributed infrastructure: Bytewax dataflows over Kafka "
        "that watch a fleet's metrics and publish alerts.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"novacron-ml {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "demo",
        help="run the whole flow on the built-in fleet simulator (no Kafka)",
        description="Run the detect flow in-process on simulated fleet metrics with injected, "
        "labelled anomalies and malformed messages; print alerts as they fire, then a summary "
        "with throughput and precision/recall against the labels.",
    )
    _fleet_args(p, hours=6.0)
    p.add_argument("--show", type=int, default=40, help="print at most this many alerts (40)")
    p.add_argument("--quiet", action="store_true", help="print only the summary")
    p.add_argument("--json", metavar="FILE", help="also write the summary figures as JSON")
    p.add_argument(
        "--no-forecast",
        action="store_true",
        help="without the ONNX LSTM forecaster (models/onnx/lstm_forecaster.json)",
    )
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "run",
        help="run the detect flow against Kafka (metrics -> alerts, metrics.dlq)",
        description="Run dataflows.detect against Kafka, like `python -m bytewax.run "
        "dataflows.detect:flow`, creating the topics if needed. For a multi-process cluster use "
        "bytewax.run with -i/-a.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-w", "--workers", type=int, default=1, help="worker threads (default 1)")
    p.add_argument("--once", action="store_true", help="stop at the end of the topic (backfill)")
    p.add_argument("--from-end", action="store_true", help="start at the end of the topic")
    p.add_argument("--partitions", type=int, default=1, help="partitions for topics it creates")
    p.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port")
    p.add_argument(
        "--recovery-dir",
        type=Path,
        help="Bytewax recovery directory (init with: python -m bytewax.recovery DIR 1)",
    )
    p.add_argument("--wait", type=float, default=60, help="seconds to wait for Kafka (60)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "produce",
        help="write simulated fleet metrics to Kafka, and the ground-truth labels to a file",
        description="Produce the simulator's events to the metrics topic at a given rate (or as "
        "fast as possible) and write the injected anomalies as JSON lines.",
    )
    _fleet_args(p, hours=2.0)
    p.add_argument("--topic", help="topic (default: settings topics.metrics)")
    p.add_argument("--rate", type=float, default=0.0, help="messages per second (0: max)")
    p.add_argument("--labels", default="labels.jsonl", help="labels file (labels.jsonl)")
    p.add_argument("--partitions", type=int, default=1, help="partitions if the topic is new")
    p.add_argument("--wait", type=float, default=60, help="seconds to wait for Kafka (60)")
    p.set_defaults(func=cmd_produce)

    p = sub.add_parser("topics", help="create the flow's topics if they do not exist")
    p.add_argument("--partitions", type=int, default=1, help="partitions (default 1)")
    p.add_argument("--wait", type=float, default=60, help="seconds to wait for Kafka (60)")
    p.set_defaults(func=cmd_topics)

    p = sub.add_parser(
        "nab",
        help="run the detect flow over NAB-style CSV files and (optionally) score them",
        description="Run the detect flow (event-time, from the files) over every "
        "DATA/<category>/<name>.csv with columns timestamp,value, and write "
        "OUT/<category>/<detector>_<name>.csv with timestamp,value,anomaly_score. With "
        "--labels (NAB's combined_windows.json) also print the NAB scores of the three "
        "profiles, with one threshold per profile swept over the whole corpus.",
    )
    p.add_argument("--data", type=Path, required=True, help="directory of <category>/<name>.csv")
    p.add_argument("--out", type=Path, required=True, help="directory for the results files")
    p.add_argument("--labels", type=Path, help="combined_windows.json to score against")
    p.add_argument("--profiles", type=Path, help="NAB profiles.json (default: NAB's three)")
    p.add_argument(
        "--per-file",
        action="store_true",
        help="with --labels, also print each file's windows detected and missed, false "
        "positives and raw score (first profile, at its threshold)",
    )
    p.add_argument(
        "--plots",
        metavar="HTML",
        help="with --labels, write one plot per file here: values, label windows and the rows "
        "at or above the first profile's threshold, biggest losses first",
    )
    p.add_argument("--detector", default="novacron", help="detector name in file names")
    p.add_argument("--json", metavar="FILE", help="also write the scores as JSON")
    p.set_defaults(func=cmd_nab)

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
    p.set_defaults(func=cmd_replay)

    alerts = sub.add_parser("alerts", help="consume the alert stream: tail, forward")
    alerts_sub = alerts.add_subparsers(dest="alerts_command", required=True, metavar="ACTION")
    p = alerts_sub.add_parser(
        "tail",
        help="follow the alerts topic as a readable table (deduplicated by alert_id)",
        description="Print alerts as they arrive, one line each, each alert_id once.",
    )
    p.add_argument("--type", action="append", help="only these types (repeatable)")
    p.add_argument("--severity", action="append", help="only these severities (repeatable)")
    p.add_argument("--host", action="append", help="only these hosts (repeatable)")
    p.add_argument("--from-beginning", action="store_true", help="start at the oldest alert")
    p.add_argument("--group", help="consumer group (default: a fresh one)")
    p.add_argument("--all", action="store_true", help="also show suppressed alerts")
    p.add_argument("--max", type=int, help="stop after this many alerts")
    p.add_argument(
        "--timeout",
        type=float,
        help="stop after this many idle seconds (at least 30 before the first alert)",
    )
    p.set_defaults(func=cmd_alerts_tail)
    p = alerts_sub.add_parser(
        "forward",
        help="forward alerts to an Alertmanager-compatible webhook (payload version 4)",
        description="Consume the alerts topic and POST Alertmanager webhook v4 payloads to URL "
        "in batches, retrying with exponential backoff; offsets are committed only after "
        "the receiver accepted a batch, so nothing is lost while it is down.",
    )
    p.add_argument("--url", required=True, help="receiver URL")
    p.add_argument("--group", default="novacron-alertmanager-bridge", help="consumer group")
    p.add_argument("--batch", type=int, default=50, help="alerts per POST (50)")
    p.add_argument("--max-backoff", type=float, default=30.0, help="retry backoff cap, s (30)")
    p.add_argument("--idle-timeout", type=float, help="stop after this many idle seconds")
    p.set_defaults(func=cmd_alerts_forward)
    p = alerts_sub.add_parser(
        "feedback",
        help="mark an alert as a false or true positive (applied to its series by the flow)",
        description="Look the alert up on the alerts topic and publish the verdict on the "
        "feedback topic (topics.feedback, default alerts.feedback). A flow started with "
        "topics.feedback set widens that series' threshold on false positives and learns "
        "the value into its baseline; true positives narrow it back.",
    )
    p.add_argument("alert_id", help="the alert's alert_id")
    verdict = p.add_mutually_exclusive_group(required=True)
    verdict.add_argument("--false-positive", action="store_true", help="not an anomaly")
    verdict.add_argument("--true-positive", action="store_true", help="a real anomaly")
    p.add_argument("--wait", type=float, default=30, help="seconds to search the topic (30)")
    p.set_defaults(func=cmd_alerts_feedback)

    from novacron_ml import capacity_cli, forecast_cli, iforest_cli

    capacity_cli.add_parsers(sub)
    forecast_cli.add_parsers(sub)
    iforest_cli.add_parsers(sub)

    p = sub.add_parser("settings", help="print the effective settings (or their JSON schema)")
    p.add_argument("--schema", action="store_true", help="print the JSON schema with descriptions")
    p.set_defaults(func=cmd_settings)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.invocation = "novacron-ml " + shlex.join(sys.argv[1:] if argv is None else argv)
    try:
        return int(args.func(args))
    except ValidationError as exc:
        print(f"novacron-ml: invalid settings:\n{exc}", file=sys.stderr)
        return 2
    except (TimeoutError, FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"novacron-ml: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
