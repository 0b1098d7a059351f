"""`novacron-ml demo`: the whole flow on the built-in fleet simulator, no Kafka."""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path
from typing import Any

from novacron_ml.cli.common import fleet_args, fleet_config, writes


def cmd_demo(args: argparse.Namespace) -> int:
    from novacron_ml.app.demo import false_positive_windows, run_demo, summary
    from novacron_ml.core.manifest import DEFAULT_FORECASTER
    from novacron_ml.core.settings import load_settings

    forecast = not args.no_forecast and DEFAULT_FORECASTER.is_file()
    settings = load_settings(forecast={"enabled": True}) if forecast else load_settings()
    result = run_demo(
        settings,
        fleet_config(args),
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


def register(sub: Any) -> None:
    p = sub.add_parser(
        "demo",
        help="run the whole flow on the built-in fleet simulator (no Kafka)",
        description="Run the detect flow in-process on simulated fleet metrics with injected, "
        "labelled anomalies and malformed messages; print alerts as they fire, then a summary "
        "with throughput and precision/recall against the labels.",
    )
    fleet_args(p, hours=6.0)
    p.add_argument("--show", type=int, default=40, help="print at most this many alerts (40)")
    p.add_argument("--quiet", action="store_true", help="print only the summary")
    p.add_argument("--json", metavar="FILE", help="also write the summary figures as JSON")
    p.add_argument(
        "--no-forecast",
        action="store_true",
        help="without the ONNX LSTM forecaster (models/onnx/lstm_forecaster.json)",
    )
    writes(p, "json")
    p.set_defaults(func=cmd_demo)
