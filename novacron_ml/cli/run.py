"""`novacron-ml run` and `topics`: the detect flow against Kafka."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path
from typing import Any

from novacron_ml.cli.common import EPILOG


def cmd_run(args: argparse.Namespace) -> int:
    from bytewax.recovery import RecoveryConfig
    from bytewax.run import cli_main

    from dataflows.detect import kafka_flow
    from novacron_ml.core.kafka import ensure_topics, wait_ready
    from novacron_ml.core.metrics import serve_metrics
    from novacron_ml.core.settings import load_settings

    if args.workers < 1 or args.partitions < 1:
        raise ValueError("--workers and --partitions must be at least 1")
    if args.wait <= 0:
        raise ValueError("--wait must be a positive number of seconds")
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
        bind = settings.observability.metrics_bind
        serve_metrics(port, bind)
        print(f"novacron-ml run: Prometheus metrics on {bind}:{port}/metrics", file=sys.stderr)
    recovery = None
    if settings.recovery.enabled and not args.no_recovery:
        directory = recovery_dir(settings, args.recovery_dir)
        fresh = prepare_recovery(directory, args.from_beginning)
        recovery = RecoveryConfig(str(directory))
        state = "new, starts at kafka.starting_offset" if fresh else "resuming where it stopped"
        print(f"novacron-ml run: recovery state {directory} ({state})", file=sys.stderr)
    else:
        print(
            "novacron-ml run: no recovery state: a restart reads from "
            f"{settings.kafka.starting_offset} again",
            file=sys.stderr,
        )
    print(
        f"novacron-ml run: {t.metrics} -> {t.alerts} (+ {t.dlq}), {args.workers} worker(s); "
        f"{flow_description(settings)}",
        file=sys.stderr,
    )
    flow = kafka_flow(settings)
    signals = install_stop_handlers()
    start = time.monotonic()
    cli_main(flow, workers_per_process=args.workers, epoch_interval=None, recovery_config=recovery)
    seconds = time.monotonic() - start
    print(f"novacron-ml run: {run_summary(seconds)}", file=sys.stderr)
    if signals:
        how = "Ctrl-C" if signals[0] == signal.SIGINT else signal.Signals(signals[0]).name
        resume = (
            "resume with the same command"
            if recovery
            else "without recovery state a restart reads from kafka.starting_offset again"
        )
        print(f"novacron-ml run: stopped on {how}, outputs flushed; {resume}", file=sys.stderr)
        return 130
    lost = lost_records()
    if lost:
        print(
            f"novacron-ml run: {lost:,} output records were LOST (novacron_output_lost_total; "
            "causes logged above)",
            file=sys.stderr,
        )
        return 1
    return 0


def recovery_dir(settings: Any, given: Path | None) -> Path:
    """--recovery-dir, else recovery.dir, else one directory per broker and metrics topic
    (state from another topic's partitions must never be resumed)."""
    import hashlib
    import os

    if given:
        return given
    if settings.recovery.dir:
        return Path(settings.recovery.dir)
    base = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    key = f"{settings.kafka.bootstrap_servers}|{settings.topics.metrics}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return base / "novacron-ml" / "recovery" / f"{settings.topics.metrics}-{digest}"


def prepare_recovery(directory: Path, from_beginning: bool) -> bool:
    """Create and initialise the recovery directory when needed (`from_beginning`: start
    over, its old state deleted); whether the state is new."""
    import shutil

    from bytewax.recovery import init_db_dir

    if from_beginning and directory.exists():
        shutil.rmtree(directory)
    fresh = not directory.is_dir() or not any(directory.glob("*.sqlite3"))
    if fresh:
        directory.mkdir(parents=True, exist_ok=True)
        init_db_dir(directory, 1)
    return fresh


def flow_description(settings: Any) -> str:
    """Which tiers, models and optional topics this run has on (the start line)."""
    d, t = settings.detector, settings.topics
    tiers = ["robust_z", "novelty"]
    if d.river:
        tiers.append("river")
    if d.iforest_models:
        tiers.append(f"iforest ({d.iforest_models})")
    parts = [
        f"tiers {', '.join(tiers)}; alerts from the probability of "
        f"{', '.join(d.probability_tiers)} at {d.fire_probability:g} (robust z past "
        f"{d.z_threshold:g} while they warm up)"
    ]
    parts.append(
        f"forecaster {settings.forecast.model}" if settings.forecast.enabled else "no forecaster"
    )
    optional = {
        "features": t.features,
        "feedback": t.feedback,
        "hourly": t.hourly,
        "forecasts": t.forecasts,
    }
    on = [f"{k}={v}" for k, v in optional.items() if v]
    parts.append(f"optional topics: {', '.join(on) if on else 'none'}")
    if settings.forecast.enabled and not t.forecasts:
        parts.append("(forecast alerts only: set topics.forecasts to publish the forecasts)")
    return "; ".join(parts)


def install_stop_handlers() -> list[int]:
    """Ctrl-C and SIGTERM end the flow cleanly (its inputs stop, outputs flush) instead of a
    KeyboardInterrupt inside Bytewax (a Rust panic); a second Ctrl-C stops at once."""
    from dataflows.io import STOP

    received: list[int] = []

    def handle(signum: int, _frame: object) -> None:
        if received:
            raise KeyboardInterrupt
        received.append(signum)
        STOP.set()
        print("\nnovacron-ml run: stopping (Ctrl-C again to stop at once)", file=sys.stderr)

    signal.signal(signal.SIGINT, handle)
    signal.signal(signal.SIGTERM, handle)
    return received


def lost_records() -> int:
    """Output records given up in this process (`novacron_output_lost_total`, all labels)."""
    from novacron_ml.core import metrics as obs

    return int(
        sum(
            s.value
            for m in obs.OUTPUT_LOST.collect()
            for s in m.samples
            if s.name.endswith("_total")
        )
    )


def run_summary(seconds: float) -> str:
    """What a run did, from the flow's own counters: events, windows, alerts by type, dead
    letters by reason, elapsed, events/s."""
    from collections import Counter

    from novacron_ml.core import metrics as obs

    def by(counter: Any, label: str) -> Counter[str]:
        out: Counter[str] = Counter()
        for m in counter.collect():
            for s in m.samples:
                if s.name.endswith("_total") and s.value:
                    out[s.labels[label]] += int(s.value)
        return out

    def listed(counts: Counter[str]) -> str:
        return f" ({', '.join(f'{k} {v}' for k, v in sorted(counts.items()))})" if counts else ""

    events = int(obs.counter_value(obs.EVENTS))
    alerts, dead = by(obs.ALERTS, "type"), by(obs.DEAD_LETTERS, "reason")
    written, lost = by(obs.OUTPUT_RECORDS, "topic"), by(obs.OUTPUT_LOST, "topic")
    output = f"{sum(written.values()):,} records written" + (
        f", {sum(lost.values()):,} LOST{listed(lost)}" if lost else ""
    )
    return (
        f"{int(obs.counter_value(obs.MESSAGES)):,} messages, {events:,} events, "
        f"{int(obs.counter_value(obs.WINDOWS)):,} windows, "
        f"{sum(alerts.values()):,} alerts{listed(alerts)}, "
        f"{sum(dead.values()):,} dead letters{listed(dead)}, {output} in {seconds:.1f} s "
        f"({events / seconds if seconds else 0:,.0f} events/s)"
    )


def cmd_topics(args: argparse.Namespace) -> int:
    from novacron_ml.core.kafka import ensure_topics, wait_ready
    from novacron_ml.core.settings import load_settings

    settings = load_settings()
    t = settings.topics
    wait_ready(settings.kafka.bootstrap_servers, timeout_s=args.wait)
    ensure_topics(settings.kafka.bootstrap_servers, t.in_use, args.partitions)
    print(f"topics ready: {', '.join(t.in_use)}")
    return 0


def register(sub: Any) -> None:
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
        help="Bytewax recovery state (default: recovery.dir, else one directory per broker and "
        "topic under ~/.local/state/novacron-ml/recovery), created on first start: a restart "
        "resumes where the last run stopped",
    )
    p.add_argument("--no-recovery", action="store_true", help="keep no recovery state")
    p.add_argument(
        "--from-beginning",
        action="store_true",
        help="start over: delete this run's recovery state and read from kafka.starting_offset",
    )
    p.add_argument("--wait", type=float, default=60, help="seconds to wait for Kafka (60)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("topics", help="create the flow's topics if they do not exist")
    p.add_argument("--partitions", type=int, default=1, help="partitions (default 1)")
    p.add_argument("--wait", type=float, default=60, help="seconds to wait for Kafka (60)")
    p.set_defaults(func=cmd_topics)
