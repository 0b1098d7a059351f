"""`novacron-ml alerts tail | forward | feedback`: consuming the alert stream."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import msgspec

from novacron_ml.cli.common import KAFKA_WAIT_S, count, seconds
from novacron_ml.core.kafka import wait_ready


def cmd_alerts_tail(args: argparse.Namespace) -> int:
    from novacron_ml.app.alertmanager import Deduper, IdleTimer, alert_consumer, decode_alerts
    from novacron_ml.app.console import alert_line
    from novacron_ml.core.settings import load_settings

    settings = load_settings()
    wait_ready(settings.kafka.bootstrap_servers, timeout_s=KAFKA_WAIT_S)
    group = args.group or f"novacron-tail-{int(time.time() * 1000)}"
    consumer = alert_consumer(
        settings.kafka.bootstrap_servers, settings.topics.alerts, group, args.from_beginning
    )
    dedupe = Deduper()
    shown = 0
    idle = IdleTimer(args.timeout)
    print(
        f"{'window start':<19}  {'severity':<8} {'type':<20} {'cluster/host':<21} "
        f"{'metric':<30} value / expected / detector=score",
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
    from novacron_ml.app.alertmanager import (
        DEFAULT_GENERATOR_URL,
        AlertmanagerClient,
        DeadLetters,
        Episodes,
        Rejected,
        alert_consumer,
        forward,
    )
    from novacron_ml.core.kafka import ensure_topics
    from novacron_ml.core.settings import load_settings

    settings = load_settings()
    bootstrap, topic = settings.kafka.bootstrap_servers, settings.topics.alerts
    wait_ready(bootstrap, timeout_s=KAFKA_WAIT_S)
    dlq = args.dlq_topic or f"{topic}.dlq"
    ensure_topics(bootstrap, [dlq])
    consumer = alert_consumer(bootstrap, topic, args.group, args.from_beginning)
    client = AlertmanagerClient(args.url, max_backoff_s=args.max_backoff)
    episodes = Episodes(
        resend_s=args.resend,
        stale_s=args.stale,
        generator_url=args.generator_url or DEFAULT_GENERATOR_URL,
    )
    start = "the oldest alert" if args.from_beginning else "now"
    print(
        f"forwarding {topic} -> {client.url} (group {args.group}: its committed offsets, "
        f"else {start}); refused alerts -> {dlq}",
        file=sys.stderr,
    )

    def refused(rejected: Rejected, n: int) -> None:
        print(f"Alertmanager refused {n} alert(s): {rejected}; -> {dlq}", file=sys.stderr)

    try:
        stats = forward(
            consumer,
            client,
            episodes,
            DeadLetters(bootstrap, dlq),
            args.batch,
            args.idle_timeout,
            on_reject=refused,
        )
    except KeyboardInterrupt:
        stats = client.stats
    finally:
        consumer.close()
    print(
        f"sent {stats.alerts} firing and {stats.resolved} resolved alert(s) in {stats.posts} "
        f"POST(s); {stats.failures} failed attempt(s) retried, {stats.rejected} refused "
        f"(dead-lettered); {episodes.firing} episode(s) still firing",
        file=sys.stderr,
    )
    if stats.undelivered:
        print(
            f"novacron-ml alerts forward: stopped after {args.idle_timeout:g} s idle with "
            f"{stats.undelivered} alert(s) not delivered (Alertmanager unreachable); their "
            "offsets are not committed: the next run sends them",
            file=sys.stderr,
        )
        return 1
    return 0


def cmd_alerts_feedback(args: argparse.Namespace) -> int:
    from novacron_ml.app.alertmanager import decode_alert
    from novacron_ml.core import topics
    from novacron_ml.core.kafka import iter_topic, produce
    from novacron_ml.core.settings import load_settings
    from operators.detection.feedback import Feedback, Verdict

    settings = load_settings()
    bootstrap = settings.kafka.bootstrap_servers
    wait_ready(bootstrap, timeout_s=KAFKA_WAIT_S)
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


def register(sub: Any) -> None:
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
    p.add_argument("--max", type=count, help="stop after this many alerts")
    p.add_argument(
        "--timeout",
        type=seconds,
        help="stop after this many idle seconds (at least 30 before the first alert)",
    )
    p.set_defaults(func=cmd_alerts_tail)
    p = alerts_sub.add_parser(
        "forward",
        help="forward alerts to Alertmanager's API, re-sent until their episode resolves",
        description="Consume the alerts topic and POST the alerts to Alertmanager's "
        "/api/v2/alerts as Prometheus does: labels (alertname novacron_<type>, severity, "
        "cluster, host, metric, type, detector and the series' tags), annotations (summary, "
        "description, value, expected, score, probability, tiers, top features, ids), "
        "startsAt, endsAt and a generatorURL. Firing alerts are re-sent every --resend "
        "seconds until their episode's resolved record (or --stale seconds without news), "
        "then sent resolved. A 4xx answer dead-letters the alerts (with status and body) "
        "and the bridge goes on; 5xx and connection errors are retried with backoff. "
        "Offsets are committed only after delivery, so nothing is lost while Alertmanager "
        "is down. A new consumer group starts now (--from-beginning: the oldest alert, "
        "which re-pages all history); a known group resumes where it stopped.",
    )
    p.add_argument("--url", required=True, help="Alertmanager, e.g. http://127.0.0.1:9093")
    p.add_argument("--group", default="novacron-alertmanager-bridge", help="consumer group")
    start = p.add_mutually_exclusive_group()
    start.add_argument(
        "--from-beginning", action="store_true", help="a new group starts at the oldest alert"
    )
    start.add_argument(
        "--from-now", action="store_true", help="a new group starts at the newest (default)"
    )
    p.add_argument("--batch", type=count, default=100, help="records read per poll (100)")
    p.add_argument("--resend", type=seconds, default=60.0, help="re-send firing alerts, s (60)")
    p.add_argument(
        "--stale", type=seconds, default=600.0, help="an episode without news ends after, s (600)"
    )
    p.add_argument("--max-backoff", type=seconds, default=30.0, help="retry backoff cap, s (30)")
    p.add_argument(
        "--idle-timeout",
        type=seconds,
        help="stop after this many seconds without new alerts (also while retrying); exit 1 "
        "if alerts were left undelivered",
    )
    p.add_argument("--dlq-topic", help="refused alerts go here (default: <alerts topic>.dlq)")
    p.add_argument(
        "--generator-url",
        help="generatorURL template ({cluster}, {host}, {metric}, {from_ms}, {to_ms}); "
        "default: the Grafana anomaly dashboard on 127.0.0.1:3000",
    )
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
    p.add_argument("--wait", type=seconds, default=30, help="seconds to search the topic (30)")
    p.set_defaults(func=cmd_alerts_feedback)
