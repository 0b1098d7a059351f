"""`novacron-ml iforest-train`: the Isolation Forest tier's models (needs the `train` extra)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from novacron_ml.cli.common import require_train_extra


def cmd_iforest_train(args: argparse.Namespace) -> int:
    require_train_extra("sklearn", "skl2onnx")
    from training.iforest import IForestConfig, train_and_export

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
        "flow's own engine computes over anomaly-free simulated data; score a later, "
        "held-out simulated stretch with injected anomalies (ROC AUC, share of normal windows "
        "flagged); export each to OUT/iforest_<family>.onnx with a manifest.",
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
    p.add_argument("--report", type=Path, help="also write the held-out figures (JSON) here")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=cmd_iforest_train)
