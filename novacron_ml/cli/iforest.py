"""`novacron-ml iforest-train`: the Isolation Forest tier's models (needs the `train` extra)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from novacron_ml.cli.common import replay_args, replayed, require_train_extra


def _fleet_windows(args: argparse.Namespace) -> Any:
    """The --kafka-topic replay of the features topic (`training.kafka_dataset`)."""
    from novacron_ml.cli.common import Bar
    from novacron_ml.core.settings import load_settings
    from training.kafka_dataset import kafka_feature_windows

    bar = Bar(None, f"replay {args.kafka_topic}"[:40], "records")

    def progress(done: int, planned: int) -> None:
        bar.total = planned
        bar.update(done - bar.n)

    try:
        return kafka_feature_windows(
            load_settings().kafka.bootstrap_servers, args.kafka_topic, args.from_ms,
            args.to_ms, progress=progress,
        )  # fmt: skip
    finally:
        bar.close()


def cmd_iforest_train(args: argparse.Namespace) -> int:
    require_train_extra("sklearn", "skl2onnx")
    from training.iforest import IForestConfig, train_and_export

    fleet = None
    if args.kafka_topic:
        fleet = replayed(args, "iforest-train", lambda: _fleet_windows(args))
        if fleet is None:
            return 2
    report = train_and_export(
        args.out,
        command=getattr(args, "invocation", "novacron-ml iforest-train"),
        train_hours=args.sim_hours,
        eval_hours=args.eval_hours,
        hosts=args.sim_hosts,
        config=IForestConfig(
            n_estimators=args.estimators, contamination=args.contamination, seed=args.seed
        ),
        progress=(lambda _msg: None) if args.quiet else print,
        converter=args.converter,
        fleet=fleet,
    )
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(report, indent=2) + "\n")
    aliases = {f: r.get("alias") for f, r in report["families"].items()}
    print(
        f"registered in {args.out}/iforest_<family>/ as new versions: "
        + ", ".join(f"{f} ({a})" for f, a in aliases.items())
        + "; `novacron-ml models promote iforest_<family>` serves a challenger"
    )
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser(
        "iforest-train",
        help="train the Isolation Forest tier per metric family and export it to ONNX",
        description="Fit one scikit-learn IsolationForest per metric family (latency, "
        "throughput, errors, resources, protocol) and a generic one on feature vectors the "
        "flow's own engine computes over anomaly-free simulated data, or with --kafka-topic "
        "on the fleet's own windows replayed from the features topic (topics.features); score "
        "a later, held-out simulated stretch with injected anomalies (ROC AUC, share of normal "
        "windows flagged); register each as a new version in OUT/iforest_<family>/.",
    )
    p.add_argument("--out", type=Path, default=Path("models/onnx"), help="registry directory")
    p.add_argument("--sim-hours", type=float, default=12.0, help="training hours (12)")
    p.add_argument("--eval-hours", type=float, default=12.0, help="held-out hours (12)")
    p.add_argument("--sim-hosts", type=int, default=6, help="simulated hosts (6)")
    p.add_argument("--estimators", type=int, default=100, help="trees per forest (100)")
    p.add_argument(
        "--contamination", type=float, default=0.05, help="expected anomaly share (0.05)"
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (0)")
    p.add_argument(
        "--converter",
        choices=["compact", "skl2onnx"],
        default="compact",
        help="compact (default): the forest as one ONNX TreeEnsembleRegressor, ~20 us per "
        "call; skl2onnx: its converter's per-tree graph (same scores, 3-5 ms per call)",
    )
    replay_args(
        p,
        "training on the fleet's own windows (the features topic)",
        "features topic to replay (the detect flow's topics.features) instead of the "
        "simulator; families with < 100 windows there get no new version",
    )
    p.add_argument("--report", type=Path, help="also write the held-out figures (JSON) here")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=cmd_iforest_train)
