"""Training the LSTM forecaster from series: shared training, held-out scoring, reports.

What `novacron-ml forecast-eval` and `forecast-train` run (the CLI only parses and prints):
one model over the chronological training parts of many series, the last 30 % of every
series as the held-out test, and the loss and MASE-by-step plots.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from training.forecast_eval import score
from training.lstm import LSTMConfig, chronological_split, predict, series_weight, train, windows
from training.metrics import naive_scale
from training.series_io import Series


def train_on(series: list[Series], cfg: LSTMConfig, quiet: bool, desc: str) -> Any:
    """One model over the chronological training parts of all `series` (each series' loss
    weighted by 1 / its training std), early-stopped on their validation parts."""
    from tqdm import tqdm

    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("xt", "yt", "wt", "xv", "yv", "wv")}
    for s in series:
        y = s.values.astype(np.float64)
        tr, va, _ = chronological_split(len(y), cfg.input_len, cfg.horizon)
        for (xk, yk, wk), idx in ((("xt", "yt", "wt"), tr), (("xv", "yv", "wv"), va)):
            x, yy = windows(y, s.t_s, cfg.input_len, cfg.horizon, idx)
            parts[xk].append(x)
            parts[yk].append(yy)
            parts[wk].append(series_weight(y[: int(len(y) * 0.7)], len(idx)))
    joined = {k: np.concatenate(v) for k, v in parts.items()}
    tty = sys.stderr.isatty()
    bar = tqdm(
        total=cfg.max_epochs, desc=desc[:40], unit="epoch", file=sys.stderr, leave=False,
        disable=quiet or not tty,  # a bar on a terminal; a plain line per epoch in a log
    )  # fmt: skip

    def progress(epoch: int, row: dict[str, float]) -> None:
        bar.update()
        bar.set_postfix(train=f"{row['train_loss']:.4f}", val=f"{row['val_loss']:.4f}")
        if not quiet and not tty:
            print(
                f"{desc}: epoch {epoch}/{cfg.max_epochs}, train loss {row['train_loss']:.4f}, "
                f"validation {row['val_loss']:.4f}",
                file=sys.stderr,
                flush=True,
            )

    try:
        return train(
            joined["xt"], joined["yt"], joined["xv"], joined["yv"], cfg,
            w_train=joined["wt"], w_val=joined["wv"], progress=progress,
        )  # fmt: skip
    finally:
        bar.close()


def train_info(result: Any) -> dict[str, Any]:
    return {
        "train_windows": result.train_windows,
        "val_windows": result.val_windows,
        "epochs": len(result.history),
        "best_epoch": result.best_epoch,
        "train_seconds": round(result.seconds, 2),
    }


def test_predictions(model: Any, series: Series, cfg: LSTMConfig) -> tuple[np.ndarray, np.ndarray]:
    y = series.values.astype(np.float64)
    _, _, te = chronological_split(len(y), cfg.input_len, cfg.horizon)
    xs, _ = windows(y, series.t_s, cfg.input_len, cfg.horizon, te)
    return te, predict(model, xs).astype(np.float64)


def lstm_fit_predict(
    cfg: LSTMConfig, quiet: bool, shared: Any | None, histories: dict[str, list[dict[str, float]]]
) -> Any:
    """Per file (`shared` None: train on this file's first 70%) or with one shared model;
    each per-file training's loss history goes into `histories` under the file's name."""

    def fit_predict(series: Series, n_train: int) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        result = shared or train_on([series], cfg, quiet, Path(series.name).name)
        if shared is None:
            histories[series.name] = result.history
        origins, pred = test_predictions(result.model, series, cfg)
        info = {"model": "shared" if shared else "per_file", **train_info(result)}
        return origins, pred, info

    return fit_predict


def held_out_test(result: Any, series: list[Series], cfg: LSTMConfig) -> dict[str, Any]:
    """The trained model on the last 30 % of every series, never seen in training or early
    stopping: mean MASE, sMAPE, within 5 %, MAPE, and within 5 % per metric."""
    per_series = []
    for s in series:
        origins, pred = test_predictions(result.model, s, cfg)
        y = s.values.astype(np.float64)
        targets = y[origins[:, None] + np.arange(cfg.horizon)[None, :]]
        per_series.append(score(targets, pred, naive_scale(y[: int(len(y) * 0.7)], 1)))
    test: dict[str, Any] = {
        key: float(np.mean([p[key] for p in per_series if p[key] is not None]))
        for key in ("mase", "smape", "within_5pct", "mape")
    }
    by_metric: dict[str, list[float]] = {}
    for s, p in zip(series, per_series, strict=True):
        by_metric.setdefault(s.name.rsplit("/", 1)[-1], []).append(p["within_5pct"])
    test["within_5pct_by_metric"] = {m: float(np.mean(v)) for m, v in sorted(by_metric.items())}
    return test


def training_report(out: Path, history: list[dict[str, float]], test: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    loss_plot(out / "loss.png", {"model": history})
    (out / "metrics.json").write_text(json.dumps({"history": history, "test": test}, indent=2))


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def loss_plot(path: Path, histories: dict[str, list[dict[str, float]]]) -> None:
    """Loss by epoch: train and validation for one training; validation per file for many."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    if len(histories) == 1:
        (history,) = histories.values()
        epochs = [h["epoch"] for h in history]
        ax.plot(epochs, [h["train_loss"] for h in history], label="train")
        ax.plot(epochs, [h["val_loss"] for h in history], label="validation")
    else:
        for name, history in histories.items():
            ax.plot([h["epoch"] for h in history], [h["val_loss"] for h in history],
                    label=Path(name).name[:30], lw=1)  # fmt: skip
        ax.set_title("validation loss per file")
    ax.set_xlabel("epoch")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_ylabel("loss (MAE / series std)")
    ax.set_yscale("log")
    if len(histories) <= 12:
        ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def step_plot(path: Path, summary: dict[str, dict[str, Any]]) -> None:
    """Overall MASE by forecast step, the LSTM and both baselines."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    for model, label in (("lstm", "LSTM"), ("seasonal_naive", "seasonal naive"), ("ewma", "EWMA")):
        mase = summary[model]["by_step"]["mase"]
        ax.plot(range(1, len(mase) + 1), [np.nan if m is None else m for m in mase],
                marker="o", label=label)  # fmt: skip
    ax.set_xlabel("forecast step")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_ylabel("MASE (mean over files)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
