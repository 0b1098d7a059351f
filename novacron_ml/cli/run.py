"""`novacron-ml run` and `topics`: the detect flow against Kafka."""

from __future__ import annotations

import argparse
import sys
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
        help="Bytewax recovery directory (init with: python -m bytewax.recovery DIR 1)",
    )
    p.add_argument("--wait", type=float, default=60, help="seconds to wait for Kafka (60)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("topics", help="create the flow's topics if they do not exist")
    p.add_argument("--partitions", type=int, default=1, help="partitions (default 1)")
    p.add_argument("--wait", type=float, default=60, help="seconds to wait for Kafka (60)")
    p.set_defaults(func=cmd_topics)
