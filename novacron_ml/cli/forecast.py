"""`novacron-ml forecast-eval` and `novacron-ml forecast-train` (need the `train` extra)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from training.lstm import LSTMConfig
    from training.series_io import Series

from novacron_ml.cli.common import (
    csv_series_args,
    replay_args,
    replayed,
    require_train_extra,
    writes,
)
from training import SIM_START


def _config(args: argparse.Namespace, horizon: int) -> LSTMConfig:
    from training.lstm import LSTMConfig

    if args.workers < 0:
        raise ValueError(f"--workers must be 0 (one per core) or more, not {args.workers}")
    return LSTMConfig(
        input_len=args.input_len,
        horizon=horizon,
        hidden=args.hidden,
        layers=args.layers,
        bidirectional=not args.unidirectional,
        attention=not args.no_attention,
        max_epochs=args.epochs,
        patience=args.patience,
        seed=args.seed,
        batch_size=args.batch_size,
        workers=args.workers,
    )


def cmd_forecast_eval(args: argparse.Namespace) -> int:
    require_train_extra("torch")
    from novacron_ml.app.console import table
    from training.forecast_eval import evaluate_series, overall
    from training.forecast_train import loss_plot, lstm_fit_predict, step_plot, train_on
    from training.lstm import resolve
    from training.series_io import SeriesError, load_series

    if args.horizon < 1:
        raise ValueError("--horizon must be at least 1")
    cfg = _config(args, args.horizon)
    loaded = []
    todo = [(path, column) for path in args.csv for column in args.value_column]
    for path, column in todo:  # check every file before the first (slow) training
        s = load_series(path, column, args.time_column, step_s=args.step_s, min_length=2)
        if len(args.value_column) > 1:
            s.name = f"{path}:{column}"
        n_train = int(len(s) * 0.7)
        need_train = cfg.input_len + 2 * cfg.horizon + 20
        if n_train < need_train or len(s) - n_train < cfg.horizon:
            raise SeriesError(
                f"{path}: {len(s)} rows is too short for --horizon {cfg.horizon} and "
                f"--input-len {cfg.input_len}: the first 70% must hold {need_train} rows and "
                f"the rest at least {cfg.horizon}"
            )
        for w in s.warnings:
            print(f"warning: {w}", file=sys.stderr)
        loaded.append(s)
    start = time.perf_counter()
    shared = None
    if not args.per_file:
        if not args.quiet:
            print(f"training one model on the first 70% of {len(loaded)} series", file=sys.stderr)
        shared = train_on(loaded, cfg, args.quiet, "train (shared)")
    histories: dict[str, list[dict[str, float]]] = {}
    if shared is not None:
        histories["shared model"] = shared.history
    fit_predict = lstm_fit_predict(cfg, args.quiet, shared, histories)
    results = []
    for i, s in enumerate(loaded, 1):
        if not args.quiet:
            print(f"[{i}/{len(loaded)}] {s.name}", file=sys.stderr)
        results.append(evaluate_series(s, cfg.horizon, fit_predict, args.season))
    summary = overall(results)
    report = {
        "command": args.invocation,
        "generated_at": datetime.now(UTC).isoformat(),
        "horizon": cfg.horizon,
        "config": {k: v for k, v in resolve(cfg).__dict__.items()},
        "training": "per file" if args.per_file else "one model over all series' training parts",
        "seconds": round(time.perf_counter() - start, 2),
        "files": {
            r.name: {
                "rows": r.rows,
                "season": r.season,
                "train_rows": r.n_train,
                "test_origins": r.n_test_origins,
                "training": r.train_info,
                "warnings": r.warnings,
                **r.metrics,
            }
            for r in results
        },
        "overall": summary,
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2))

    def f(x: float | None, digits: int = 3) -> str:
        return "-" if x is None else f"{x:.{digits}f}"

    rows = []
    for r in results:
        for m in ("lstm", "seasonal_naive", "ewma"):
            mm = r.metrics[m]
            rows.append(
                [Path(r.name).name, m, f(mm["mase"]), f(mm["smape"], 2), f(mm["within_5pct"])]
            )
    for m in ("lstm", "seasonal_naive", "ewma"):
        o = summary[m]
        rows.append(["OVERALL", m, f(o["mase"]), f(o["smape"], 2), f(o["within_5pct"])])
    print(table(rows, ["file", "model", "MASE", "sMAPE %", "within 5%"]))
    print(f"wrote {args.json} ({report['seconds']} s)")
    if args.report:
        args.report.mkdir(parents=True, exist_ok=True)
        loss_plot(args.report / "loss.png", histories)
        step_plot(args.report / "mase_by_step.png", summary)
        print(f"wrote {args.report / 'loss.png'} and {args.report / 'mase_by_step.png'}")
    return 0


# -- forecast-train: the served model -----------------------------------------------------------
def _kafka_series(args: argparse.Namespace, cfg: LSTMConfig) -> Any:
    """The --kafka-topic replay as training series (`training.kafka_dataset`)."""
    from novacron_ml.cli.common import Bar
    from novacron_ml.core.settings import load_settings
    from operators.ingest.parse import ParseLimits
    from training.kafka_dataset import kafka_series

    settings = load_settings()
    limits = ParseLimits.from_settings(settings.ingest, wall_clock_bounds=False)
    bar = Bar(None, f"replay {args.kafka_topic}"[:40], "records")

    def progress(done: int, planned: int) -> None:
        bar.total = planned
        bar.update(done - bar.n)

    try:
        data = kafka_series(
            settings.kafka.bootstrap_servers, args.kafka_topic, args.from_ms, args.to_ms,
            args.window_s, min_windows=2 * (cfg.input_len + cfg.horizon), limits=limits,
            progress=progress,
        )  # fmt: skip
    finally:
        bar.close()
    print(data.line(), file=sys.stderr)
    for note in data.notes[:20]:
        print(f"  {note}", file=sys.stderr)
    if len(data.notes) > 20:
        print(f"  ... and {len(data.notes) - 20} more notes", file=sys.stderr)
    return data


def cmd_forecast_train(args: argparse.Namespace) -> int:
    require_train_extra("torch")
    from novacron_ml.core.registry import register, staging
    from training.features import simulator_series
    from training.forecast_train import held_out_test, train_on, training_report
    from training.lstm import export_onnx
    from training.series_io import load_series

    cfg = _config(args, args.horizon)
    series: list[Series] = []
    if args.sim_hours > 0:
        series += simulator_series(
            args.sim_hours, args.sim_hosts, args.seed, args.window_s, args.sim_start
        )
    for path in args.csv or []:
        series.append(load_series(path, args.value_column, args.time_column, step_s=args.step_s))
    kafka = None
    if args.kafka_topic:
        kafka = replayed(args, "forecast-train", lambda: _kafka_series(args, cfg))
        if kafka is None:
            return 2
    if kafka is not None:
        series += kafka.series
    if not series:
        print(
            "novacron-ml forecast-train: no training series (--sim-hours 0, no --csv, and "
            "the Kafka replay gave none)", file=sys.stderr,
        )  # fmt: skip
        return 2
    print(f"{len(series)} series", file=sys.stderr)
    result = train_on(series, cfg, False, "train")
    test = held_out_test(result, series, cfg)
    out_dir: Path = args.out
    with staging(out_dir) as scratch:
        onnx_path = scratch / f"{args.name}.onnx"
        export_onnx(result.model, onnx_path)
        manifest_path, alias = register(
            out_dir, onnx_path, _manifest(args, cfg, result, test, series, kafka, onnx_path)
        )
        size = onnx_path.stat().st_size
    if args.report:
        training_report(args.report, result.history, test)
    print(
        f"registered {manifest_path} as the {alias} ({size / 1024:.0f} KiB; "
        f"`novacron-ml models promote {args.name}` serves a challenger); "
        f"held-out test: MASE {test['mase']:.3f}, within 5% {test['within_5pct']:.3f}"
    )
    return 0


def _manifest(args: argparse.Namespace, cfg: Any, result: Any, test: dict[str, Any],
              series: list[Series], kafka: Any, onnx_path: Path) -> Any:  # fmt: skip
    import torch

    from novacron_ml.core.manifest import ModelManifest, sha256_of
    from operators.forecast.model import FORECASTER_INPUTS, forecaster_signature, golden_input
    from operators.serving import make_golden
    from training.lstm import architecture

    return ModelManifest(
        name=args.name,
        kind="lstm_forecaster",
        version="1",  # the registry numbers versions (register)
        file=onnx_path.name,
        sha256=sha256_of(onnx_path),
        created_at=datetime.now(UTC).isoformat(),
        command=args.invocation,
        feature_order=list(FORECASTER_INPUTS),
        input_len=cfg.input_len,
        horizon=cfg.horizon,
        step_s=args.window_s,
        normalisation={
            "method": "per-window mean and std inside the graph, std floored",
            "std_floor": result.std_floor,
        },
        training_data={
            "simulator": None if args.sim_hours <= 0 else {
                "hours": args.sim_hours, "hosts": args.sim_hosts, "seed": args.seed,
                "start": args.sim_start, "window_s": args.window_s, "anomalies": 0,
            },
            "csv": [str(p) for p in args.csv or []],
            **({"kafka": kafka.summary()} if kafka is not None else {}),
            "series": len(series),
            "split": "per series chronological: first 70% train (last 15% of it validation),"
            " rest test",
            "train_windows": result.train_windows,
            "val_windows": result.val_windows,
        },
        metrics={"test": test, "best_epoch": result.best_epoch,
                 "train_seconds": round(result.seconds, 1)},
        architecture=architecture(result.config),
        framework={"torch": str(torch.__version__), "opset": "17"},
        golden=make_golden(
            onnx_path, forecaster_signature(cfg.input_len, cfg.horizon), golden_input(cfg.input_len)
        ),
    )  # fmt: skip


def _model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model (defaults: the seed's architecture, sized for CPU)")
    g.add_argument("--input-len", type=int, default=48, help="history steps per input (48)")
    g.add_argument("--hidden", type=int, default=32, help="LSTM units per direction (32)")
    g.add_argument("--layers", type=int, default=3, help="stacked LSTM layers (3)")
    g.add_argument("--unidirectional", action="store_true", help="no backward direction")
    g.add_argument("--no-attention", action="store_true", help="last output instead")
    g.add_argument("--epochs", type=int, default=40, help="max epochs (40; early stopping)")
    g.add_argument("--patience", type=int, default=5, help="early-stopping patience (5)")
    g.add_argument("--batch-size", type=int, default=256, help="batch size (256)")
    g.add_argument("--seed", type=int, default=0, help="random seed (0)")
    g.add_argument(
        "--workers", type=int, default=0,
        help="training threads, each on a part of every batch (0: one per core, parts of at "
        "least 64 windows); results are reproducible for a given seed and number of workers",
    )  # fmt: skip


def register(sub: Any) -> None:

    p = sub.add_parser(
        "forecast-eval",
        help="train the LSTM forecaster per CSV and compare it with baselines",
        description="Train the LSTM on the first 70% of every series (chronologically; "
        "the last 15% of that for early stopping; one model for all files unless "
        "--per-file), forecast --horizon steps from "
        "every origin in the remaining 30%, and write per file and overall MASE (seasonal "
        "naive scale), sMAPE, RMSE, MAE, R², MAPE (null where undefined) and the fraction "
        "within 5%, for the LSTM and, in the same run, seasonal naive and EWMA.",
    )
    csv_series_args(p)
    p.add_argument("--season", type=int, help="season in steps for MASE/seasonal naive")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument(
        "--report",
        type=Path,
        metavar="DIR",
        help="also write loss.png (training curves) and mase_by_step.png (LSTM vs baselines)",
    )
    p.add_argument(
        "--per-file",
        action="store_true",
        help="train one model per file (default: one model over every file's first 70%%)",
    )
    _model_args(p)
    writes(p, "json", "report")
    p.set_defaults(func=cmd_forecast_eval)

    p = sub.add_parser(
        "forecast-train",
        help="train the LSTM forecaster and register it in models/onnx/ (a new version)",
        description="Train on steady-state simulated window means, optional CSVs and an "
        "optional replay of a Kafka metrics topic (the records stamped in --from..--to, parsed "
        "by the flow's parser, bad records counted and skipped, averaged per series over "
        "--window-s windows as the flow does), evaluate on each series' held-out last 30%, "
        "export a single-file ONNX model with a dynamic batch dimension and write its "
        "manifest (version, sha256, feature order, normalisation, training data, metrics, "
        "this command).",
    )
    p.add_argument("--out", type=Path, default=Path("models/onnx"), help="registry directory")
    p.add_argument("--name", default="lstm_forecaster", help="model name (lstm_forecaster)")
    p.add_argument("--horizon", type=int, default=12, help="forecast steps (12)")
    p.add_argument("--window-s", type=float, default=60.0, help="step = flow window (60)")
    p.add_argument(
        "--sim-hours", type=float, default=24.0, help="simulated hours (24; 0: no simulator data)"
    )
    p.add_argument("--sim-hosts", type=int, default=6, help="simulated hosts (6)")
    p.add_argument("--sim-start", default=SIM_START, help=f"simulated data start ({SIM_START})")
    p.add_argument("--csv", nargs="*", type=Path, help="extra training CSVs")
    p.add_argument("--time-column", help="time column of the extra CSVs")
    p.add_argument("--value-column", default="value", help="value column of the extra CSVs")
    p.add_argument("--step-s", type=float, help="row step of extra CSVs without a time column")
    p.add_argument("--report", type=Path, help="write loss.png and metrics.json here")
    replay_args(
        p,
        "Kafka replay (training data from a metrics topic, as the flow windows it)",
        "metrics topic to replay (bootstrap from settings)",
    )
    _model_args(p)
    p.set_defaults(func=cmd_forecast_train)
