"""`novacron-ml forecast-eval`: train the LSTM on the first 70% of each series, evaluate on
the rest against seasonal naive and EWMA computed in the same run.

Evaluation: every test origin o (targets in the last 30%), a forecast of steps o..o+H-1 from
the `input_len` values before o (which may reach back into the training part: only the past
is used). Metrics pool all (origin, step) pairs; `by_step` gives MASE per step 1..H. MASE's
scale is the seasonal naive in-sample MAE of the training part (season: a day in steps when
the training part covers two days, else 1). Baselines: seasonal naive (the value one season
before each target, from data before the origin), and EWMA (level at o-1, flat; alpha chosen
on the training part by one-step squared error).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from training.metrics import mean_defined, naive_scale, point_metrics
from training.series_io import Series, season_length

METRIC_KEYS = ("mase", "smape", "rmse", "mae", "r2", "mape", "within_5pct")
EWMA_ALPHAS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0)


def seasonal_naive_forecast(values: np.ndarray, origins: np.ndarray, h: int, m: int) -> np.ndarray:
    """(N, h): target o+k gets the value at o+k - m*ceil((k+1)/m), always before o."""
    k = np.arange(h)
    back = m * np.ceil((k + 1) / m).astype(np.int64)
    return values[origins[:, None] + k[None, :] - back[None, :]]


def ewma_levels(values: np.ndarray, alpha: float) -> np.ndarray:
    """level[i] = EWMA of values[..i] (inclusive)."""
    out = np.empty_like(values, dtype=np.float64)
    level = float(values[0])
    for i, v in enumerate(values):
        level = alpha * float(v) + (1 - alpha) * level
        out[i] = level
    return out


def fit_ewma_alpha(train: np.ndarray) -> float:
    best, best_err = 1.0, np.inf
    for a in EWMA_ALPHAS:
        lv = ewma_levels(train, a)
        err = float(np.mean((train[1:] - lv[:-1]) ** 2))
        if err < best_err:
            best, best_err = a, err
    return best


def ewma_forecast(values: np.ndarray, origins: np.ndarray, h: int, alpha: float) -> np.ndarray:
    levels = ewma_levels(values, alpha)
    return np.repeat(levels[origins - 1][:, None], h, axis=1)


def score(y: np.ndarray, yhat: np.ndarray, scale: float | None) -> dict[str, Any]:
    out: dict[str, Any] = dict(point_metrics(y.ravel(), yhat.ravel(), scale))
    out.pop("accuracy", None)
    out["by_step"] = {
        "mase": [point_metrics(y[:, k], yhat[:, k], scale)["mase"] for k in range(y.shape[1])]
    }
    return out


@dataclass
class FileResult:
    name: str
    rows: int
    season: int
    n_train: int
    n_test_origins: int
    metrics: dict[str, dict[str, Any]]
    train_info: dict[str, Any]
    warnings: list[str]


def evaluate_series(
    series: Series,
    horizon: int,
    fit_predict: Callable[[Series, int], tuple[np.ndarray, np.ndarray, dict[str, Any]]],
    season_override: int | None = None,
) -> FileResult:
    """`fit_predict(series, n_train)` trains on values[:n_train] and returns (test origins,
    predictions (N, horizon), info)."""
    n = len(series)
    n_train = int(n * 0.7)
    m = season_length(series.step_s, n_train, season_override)
    origins, lstm_pred, info = fit_predict(series, n_train)
    y = series.values
    targets = y[origins[:, None] + np.arange(horizon)[None, :]]
    scale = naive_scale(y[:n_train], m)
    alpha = fit_ewma_alpha(y[:n_train])
    metrics = {
        "lstm": score(targets, lstm_pred, scale),
        "seasonal_naive": score(targets, seasonal_naive_forecast(y, origins, horizon, m), scale),
        "ewma": score(targets, ewma_forecast(y, origins, horizon, alpha), scale),
    }
    metrics["ewma"]["alpha"] = alpha
    return FileResult(
        series.name, n, m, n_train, len(origins), metrics, info, list(series.warnings)
    )


def overall(results: list[FileResult]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for model in ("lstm", "seasonal_naive", "ewma"):
        agg: dict[str, Any] = {
            key: mean_defined(r.metrics[model][key] for r in results) for key in METRIC_KEYS
        }
        steps = max((len(r.metrics[model]["by_step"]["mase"]) for r in results), default=0)
        agg["by_step"] = {
            "mase": [
                mean_defined(r.metrics[model]["by_step"]["mase"][k] for r in results)
                for k in range(steps)
            ]
        }
        out[model] = agg
    return out
