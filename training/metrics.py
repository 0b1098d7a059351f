"""Point and interval forecast metrics, one definition for every evaluation command.

Every function returns None where the metric is undefined (MAPE with a zero actual, R² on a
constant target, MASE when the in-sample seasonal naive error is zero), never inf or nan, so
JSON reports stay valid.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np


def naive_scale(train: np.ndarray, season: int) -> float | None:
    """Mean absolute error of the in-sample seasonal naive forecast (MASE's denominator)."""
    m = season if len(train) > season else 1
    if len(train) <= m:
        return None
    scale = float(np.mean(np.abs(train[m:] - train[:-m])))
    return scale if scale > 0 else None


def mase(y: np.ndarray, yhat: np.ndarray, scale: float | None) -> float | None:
    if scale is None or len(y) == 0:
        return None
    return float(np.mean(np.abs(y - yhat)) / scale)


def smape(y: np.ndarray, yhat: np.ndarray) -> float | None:
    """Symmetric MAPE in percent (0–200); a point where both are zero counts as 0."""
    if len(y) == 0:
        return None
    denom = np.abs(y) + np.abs(yhat)
    terms = np.divide(2 * np.abs(y - yhat), denom, out=np.zeros_like(denom), where=denom > 0)
    return float(100 * terms.mean())


def mape(y: np.ndarray, yhat: np.ndarray) -> float | None:
    """MAPE in percent; undefined (None) when any actual is zero."""
    if len(y) == 0 or (y == 0).any():
        return None
    return float(100 * np.mean(np.abs((y - yhat) / y)))


def rmse(y: np.ndarray, yhat: np.ndarray) -> float | None:
    return float(np.sqrt(np.mean((y - yhat) ** 2))) if len(y) else None


def mae(y: np.ndarray, yhat: np.ndarray) -> float | None:
    return float(np.mean(np.abs(y - yhat))) if len(y) else None


def r2(y: np.ndarray, yhat: np.ndarray) -> float | None:
    if len(y) < 2:
        return None
    total = float(np.sum((y - y.mean()) ** 2))
    if total == 0:
        return None
    return 1.0 - float(np.sum((y - yhat) ** 2)) / total


def within(y: np.ndarray, yhat: np.ndarray, fraction: float = 0.05) -> float | None:
    """Share of predictions within `fraction` of the actual (relative to |actual|)."""
    if len(y) == 0:
        return None
    return float(np.mean(np.abs(y - yhat) <= fraction * np.abs(y)))


def coverage(y: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> float | None:
    if len(y) == 0:
        return None
    return float(np.mean((y >= lo) & (y <= hi)))


def point_metrics(y: np.ndarray, yhat: np.ndarray, scale: float | None) -> dict[str, float | None]:
    """The point metrics of one forecast (or pooled forecasts sharing one MASE scale)."""
    mape_value = mape(y, yhat)
    return {
        "mase": mase(y, yhat, scale),
        "smape": smape(y, yhat),
        "rmse": rmse(y, yhat),
        "mae": mae(y, yhat),
        "r2": r2(y, yhat),
        "mape": mape_value,
        "accuracy": None if mape_value is None else 100.0 - mape_value,
        "within_5pct": within(y, yhat),
    }


def mean_defined(values: Iterable[float | None]) -> float | None:
    """Mean of the defined values (None if none is)."""
    kept = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(kept)) if kept else None
