"""`novacron-ml demo`: the whole flow on the built-in fleet simulator, no Kafka."""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path
from typing import Any

from novacron_ml.cli.common import fleet_args, fleet_config, writes


def cmd_tune_demo(args: argparse.Namespace) -> int:
    from dataflows.tune import tuner_context
    from novacron_ml.app.tune_demo import run_tune_demo, summary, violations
    from novacron_ml.core.settings import load_settings

    fleet = fleet_config(args)
    settings = load_settings(
        tune={
            "mode": args.mode,
            "canary_fraction": args.canary,
            "interval_s": args.interval,
            "p99_margin": args.p99_margin,
        }
    )
    ctx = tuner_context(settings)
    result = run_tune_demo(settings, fleet, ctx, quiet=args.quiet)
    print(summary(result))
    if args.report:
        from novacron_ml.app.tune_demo import html_page

        Path(args.report).parent.mkdir(parents=True, exist_ok=True)
        Path(args.report).write_text(html_page(result))
        print(f"wrote {args.report}")
    if args.json:
        from novacron_ml.app.tune_demo import CLUSTER_COLUMNS, cluster_rows, counts, host_rows

        cols = [
            "host",
            "traffic",
            "canary",
            "setting",
            "gain_vs_default",
            "of_grid_best",
            "mb_s_first_10_min",
            "mb_s_last_30_min",
            "observed_vs_default",
        ]
        recs = [r for r in result.loop.recommendations if r.subsystem == "compression"]
        acp = [r for r in result.loop.recommendations if r.subsystem == "consensus"]
        Path(args.json).write_text(
            json.dumps(
                {
                    "events": result.events,
                    "seconds": result.seconds,
                    "recommendations": len(recs),
                    "mode": args.mode,
                    **counts(recs),
                    "violations": violations(result),
                    "hosts": [dict(zip(cols, row, strict=True)) for row in host_rows(result)],
                    "clusters": [
                        dict(zip(CLUSTER_COLUMNS, row, strict=True)) for row in cluster_rows(result)
                    ],
                    "consensus": {"recommendations": len(acp), **counts(acp)},
                },
                indent=2,
            )
        )
    return 1 if violations(result) else 0


def cmd_demo(args: argparse.Namespace) -> int:
    if args.tune:
        return cmd_tune_demo(args)
    from novacron_ml.app.demo import false_positive_windows, run_demo, summary
    from novacron_ml.core.manifest import DEFAULT_FORECASTER
    from novacron_ml.core.settings import load_settings

    forecast = not args.no_forecast and DEFAULT_FORECASTER.is_dir()
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
        help="without the ONNX LSTM forecaster (models/onnx/lstm_forecaster)",
    )
    t = p.add_argument_group("closed-loop tuning (--tune)")
    t.add_argument(
        "--tune",
        action="store_true",
        help="run the tuning flow in a closed loop with the simulator instead: the DQN policy "
        "recommends HDE compression settings, the guardrails allow or block, the simulated "
        "hosts take the allowed ones and their throughput responds (docs/TUNING.md#flow)",
    )
    t.add_argument(
        "--mode",
        choices=["apply", "dry-run"],
        default="apply",
        help="apply (default here: the loop closes) or dry-run (advice only)",
    )
    t.add_argument(
        "--canary",
        type=float,
        default=0.5,
        help="share of hosts that may change (default 0.5 here; the flow's own "
        "default is 0.1); the rest are the control group",
    )
    t.add_argument(
        "--interval",
        type=float,
        default=60.0,
        help="event-time seconds between a host's decisions (default 60)",
    )
    t.add_argument(
        "--p99-margin",
        type=float,
        default=0.10,
        help="how much longer a chunk's delivery may take after a change (default "
        "0.10, the flow's; bulk transfers that do not mind latency: e.g. 10)",
    )
    t.add_argument("--report", metavar="HTML",
                   help="--tune: also write an HTML page, each host's goodput over time with "
                   "the settings it took marked")  # fmt: skip
    writes(p, "json", "report")
    p.set_defaults(func=cmd_demo)
