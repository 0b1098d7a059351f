"""Capacity planning: Prophet and statistical baselines, rolling-origin backtests, calibrated
intervals, exhaustion dates and urgency.

One `forecast()` per candidate model (Prophet; SeasonalNaive, AutoETS and MSTL from
statsforecast), one `backtest()` that every caller uses (the `capacity backtest` command, and
the planner when it chooses a model per series), and `plan_series()` for the daily plan.

Honesty rules of the backtest (docs/CAPACITY.md):
- rolling origin: window k trains on everything before its origin, tests on the next h steps;
- the first window is a warm-up: interval calibration and model choice for window k use only
  windows before k, so every scored figure (including the "chosen" model) is out of sample;
- the interval of each model is its own nominal interval scaled by a factor c >= 1: the
  conformal quantile of |error| / half-width over the earlier windows (c = 1 before any).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from training.logs import quiet_prophet
from training.metrics import coverage, mean_defined, naive_scale, point_metrics
from training.series_io import Series

MODELS: tuple[str, ...] = ("prophet", "seasonal_naive", "auto_ets", "mstl")
RULES: tuple[str, ...] = ("select", "median", "mean", "weighted", "shrink", "select_ensemble")
"""How the planner turns the candidates into one forecast (docs/CAPACITY.md#choosing):
`select` the lowest CV MASE; the `median` or `mean` of all; `weighted` by inverse CV MASE;
`shrink` (the default): the CV-best model weighted k / (k + SHRINK_PRIOR_WINDOWS) over k CV
windows and the candidates' median the rest, trusting the selection in proportion to the
evidence behind it; `select_ensemble`: the CV-best of the models and their median."""
SHRINK_PRIOR_WINDOWS = 5.0
"""`shrink`: weight on the selected model = k / (k + this), k = windows it was chosen on."""
DAY_S = 86_400.0
WEEK_S = 7 * DAY_S
ETS_MAX_SEASON = 24
"""AutoETS fits a seasonal component only for short seasons (as R's ets); longer: none."""

MAX_SEASON_STEPS = 1000
"""Longer seasons (a week at 5-minute steps) are left out: STL's cost grows with the period;
aggregate to hourly steps (`--aggregate 3600`) to model the weekly cycle."""

MaintenanceFn = Callable[[np.ndarray], np.ndarray]
"""Epoch seconds -> 0/1 maintenance indicator (a Prophet regressor)."""


@dataclass(frozen=True)
class ModelOptions:
    level: float = 0.95
    uncertainty_samples: int = 100
    changepoints: int = 10
    holidays_country: str | None = "US"
    maintenance: MaintenanceFn | None = None
    season_override: int | None = None
    fast: bool = False
    """The planner's fast path: statistical models get the daily season only (MSTL with the
    weekly season costs ~5x its daily-only fit on 60 days of hours), and MSTL's trend is a
    damped additive ETS instead of AutoETS' search over six (~6x cheaper again)."""


FAST_MODELS: tuple[str, ...] = ("seasonal_naive", "mstl")
"""The fast path's candidates: the cheapest pair that still beats SeasonalNaive on every data
set out of sample (docs/QUALITY.md#capacity-selection)."""


@dataclass
class Forecast:
    mean: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    """The model's own nominal interval (before calibration)."""

    def scaled(self, factor: float) -> tuple[np.ndarray, np.ndarray]:
        half = (self.hi - self.lo) / 2.0
        return self.mean - factor * half, self.mean + factor * half


def seasons(step_s: float, n_train: int, override: int | None = None) -> list[int]:
    """Seasonal periods in steps (daily, weekly) that the training part covers twice."""
    if override is not None:
        return [override] if override > 1 else []
    out = []
    for period_s in (DAY_S, WEEK_S):
        m = round(period_s / step_s)
        if step_s < period_s and 2 <= m <= MAX_SEASON_STEPS and n_train >= 2 * m:
            out.append(m)
    return out


def _prophet(
    y: np.ndarray, t_s: np.ndarray, h: int, step_s: float, absolute: bool, opts: ModelOptions
) -> Forecast:
    quiet_prophet()
    from prophet import Prophet

    quiet_prophet()  # prophet's import configures cmdstanpy's logger again

    base = 0.0 if absolute else 946_857_600.0  # offsets start on a Monday in 2000
    future_t = t_s[-1] + step_s * np.arange(1, h + 1)
    ds = pd.to_datetime(np.concatenate([t_s, future_t]) + base, unit="s")
    span = t_s[-1] - t_s[0]
    model = Prophet(
        interval_width=opts.level,
        uncertainty_samples=max(opts.uncertainty_samples, 0),
        n_changepoints=opts.changepoints,
        daily_seasonality=step_s < DAY_S and span >= 2 * DAY_S,
        weekly_seasonality=span >= 2 * WEEK_S,
        yearly_seasonality=span >= 2 * 365 * DAY_S,
    )
    if absolute and opts.holidays_country:
        model.add_country_holidays(country_name=opts.holidays_country)
    frame = pd.DataFrame({"ds": ds[: len(y)], "y": y})
    future = pd.DataFrame({"ds": ds[len(y) :]})
    if opts.maintenance is not None:
        flags = opts.maintenance(np.concatenate([t_s, future_t]) + base)
        if flags[: len(y)].any() and not flags[: len(y)].all():
            model.add_regressor("maintenance", mode="additive")
            frame["maintenance"] = flags[: len(y)]
            future["maintenance"] = flags[len(y) :]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(frame)
        out = model.predict(future)
    mean = out["yhat"].to_numpy(dtype=np.float64)
    if opts.uncertainty_samples > 0:
        lo = out["yhat_lower"].to_numpy(dtype=np.float64)
        hi = out["yhat_upper"].to_numpy(dtype=np.float64)
    else:  # no simulated paths: a constant band from the in-sample residuals
        fitted = model.predict(frame.drop(columns="y"))["yhat"].to_numpy(dtype=np.float64)
        half = _z(opts.level) * float(np.std(y - fitted))
        lo, hi = mean - half, mean + half
    return Forecast(mean, lo, hi)


def _z(level: float) -> float:
    from statistics import NormalDist

    return NormalDist().inv_cdf(0.5 + level / 2)


def _statsforecast(
    name: str, y: np.ndarray, h: int, season_list: list[int], level: float, fast: bool = False
) -> Forecast:
    from statsforecast.models import MSTL, AutoETS, SeasonalNaive

    daily = season_list[0] if season_list else 1
    model: Any
    if name == "seasonal_naive":
        model = SeasonalNaive(season_length=daily)
    elif name == "auto_ets":
        model = AutoETS(season_length=daily if daily <= ETS_MAX_SEASON else 1)
    elif name == "mstl":
        if season_list:
            trend = AutoETS(model="AAN", damped=True) if fast else AutoETS(model="ZZN")
            model = MSTL(season_length=season_list, trend_forecaster=trend)
        else:
            model = AutoETS(season_length=1)
    else:
        raise ValueError(f"unknown model {name!r} (known: {', '.join(MODELS)})")
    pct = round(level * 100)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = model.forecast(y=y.astype(np.float64), h=h, level=[pct])
    mean = np.asarray(out["mean"], dtype=np.float64)
    lo = np.asarray(out.get(f"lo-{pct}", mean), dtype=np.float64)
    hi = np.asarray(out.get(f"hi-{pct}", mean), dtype=np.float64)
    return Forecast(mean, lo, hi)


def forecast(
    name: str,
    y: np.ndarray,
    t_s: np.ndarray,
    h: int,
    step_s: float,
    absolute: bool,
    opts: ModelOptions,
) -> Forecast:
    """h-step forecast of one model from history (y, t_s), with its nominal interval."""
    if name == "prophet":
        fc = _prophet(y, t_s, h, step_s, absolute, opts)
    else:
        periods = seasons(step_s, len(y), opts.season_override)
        fc = _statsforecast(
            name, y, h, periods[:1] if opts.fast else periods, opts.level, fast=opts.fast
        )
    bad = ~np.isfinite(fc.mean)
    if bad.any():  # a diverged fit: fall back to the last value rather than poison the report
        fc.mean[bad] = y[-1]
    fc.lo = np.where(np.isfinite(fc.lo), fc.lo, fc.mean)
    fc.hi = np.where(np.isfinite(fc.hi), fc.hi, fc.mean)
    return fc


def conformal_factor(ratios: Sequence[float], level: float) -> float:
    """Scale of the nominal half-width that covers `level` of the given |error|/half-width."""
    r = np.sort(np.asarray([x for x in ratios if math.isfinite(x)], dtype=np.float64))
    if r.size == 0:
        return 1.0
    k = min(r.size, math.ceil((r.size + 1) * level)) - 1
    # Never narrower than the model's own interval: a quantile from a few windows is noisy,
    # and too narrow a band is the costly mistake for a capacity plan.
    return float(max(r[k], 1.0))


def _ratios(y: np.ndarray, fc: Forecast) -> np.ndarray:
    half = (fc.hi - fc.lo) / 2.0
    err = np.abs(y - fc.mean)
    tiny = 1e-12 * max(1.0, float(np.max(np.abs(y))))
    return np.where(half > tiny, err / np.maximum(half, tiny), np.where(err > tiny, np.inf, 0.0))


@dataclass
class WindowResult:
    origin: int
    y: np.ndarray
    forecasts: dict[str, Forecast]
    scale: float | None
    t_s: np.ndarray | None = None
    """Times of `y` (epoch or offset seconds)."""


@dataclass
class BacktestResult:
    name: str
    horizon: int
    season: int
    windows: list[WindowResult]
    models: list[str]
    level: float
    per_model: dict[str, dict[str, float | None]] = field(default_factory=dict)
    chosen: dict[str, Any] = field(default_factory=dict)
    rules: dict[str, dict[str, Any]] = field(default_factory=dict)
    rule_points: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict)
    """Per rule, its scored out-of-sample points: (t_s, actual, forecast)."""
    final_choice: str = ""
    final_factor: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "horizon": self.horizon,
            "season": self.season,
            "windows": len(self.windows),
            "windows_scored": max(len(self.windows) - 1, 0),
            "models": self.per_model,
            "chosen": self.chosen,
            "rules": self.rules,
            "choice_for_planning": self.final_choice,
            "interval_factor": self.final_factor,
        }


def origins(n: int, horizon: int, windows: int, min_train: int) -> list[int]:
    """Rolling origins, `horizon` apart, the last one leaving exactly `horizon` test points."""
    out = [n - (windows - k) * horizon for k in range(windows)]
    return [o for o in out if o >= min_train]


def backtest(
    series: Series,
    horizon: int,
    models: Sequence[str],
    windows: int,
    opts: ModelOptions,
    *,
    min_train: int | None = None,
    on_step: Callable[[], None] | None = None,
) -> BacktestResult:
    """Rolling-origin CV of every model on one series; see the module doc for the rules.

    The first origin leaves at least `min_train` points to train on (default: two seasons
    and three horizons)."""
    y, t_s = series.values, series.t_s
    daily = seasons(series.step_s, len(y), opts.season_override)
    season = daily[0] if daily else 1
    if min_train is None:
        min_train = max(2 * season, 3 * horizon, 10)
    starts = origins(len(y), horizon, windows, min_train)
    if not starts:
        from training.series_io import SeriesError

        raise SeriesError(
            f"{series.name}: {len(y)} rows is too short for horizon {horizon}: needs at least"
            f" {min_train + horizon} (a training part of {min_train} and one horizon)"
        )
    results: list[WindowResult] = []
    for o in starts:
        train = y[:o]
        fcs = {}
        for m in models:
            fcs[m] = forecast(m, train, t_s[:o], horizon, series.step_s, series.absolute_time, opts)
            if on_step is not None:
                on_step()
        results.append(
            WindowResult(
                o, y[o : o + horizon], fcs, naive_scale(train, season), t_s[o : o + horizon]
            )
        )
    out = BacktestResult(series.name, horizon, season, results, list(models), opts.level)
    _score(out)
    return out


def backtest_job(
    job: tuple[Series, int, Sequence[str], int, ModelOptions],
) -> BacktestResult:
    """`backtest(*job)`: one series as one task (training.fleet.run_tasks)."""
    quiet_prophet()  # in a fresh worker process too
    return backtest(*job)


def _window_mase(w: WindowResult, model: str) -> float:
    fc = w.forecasts[model]
    if w.scale is None:
        return float(np.mean(np.abs(w.y - fc.mean)))
    return float(np.mean(np.abs(w.y - fc.mean)) / w.scale)


def _score(result: BacktestResult) -> None:
    level = result.level
    for m in result.models:
        per_window = []
        covers_raw, covers = [], []
        for k, w in enumerate(result.windows):
            fc = w.forecasts[m]
            covers_raw.append(coverage(w.y, fc.lo, fc.hi))
            if k == 0:
                continue
            prior = np.concatenate([_ratios(p.y, p.forecasts[m]) for p in result.windows[:k]])
            lo, hi = fc.scaled(conformal_factor(prior.tolist(), level))
            covers.append(coverage(w.y, lo, hi))
            per_window.append(point_metrics(w.y, fc.mean, w.scale))
        metrics = {key: mean_defined(pw[key] for pw in per_window) for key in _METRIC_KEYS}
        metrics["coverage"] = mean_defined(covers)
        metrics["coverage_uncalibrated"] = mean_defined(covers_raw)
        result.per_model[m] = metrics
        every = np.concatenate([_ratios(w.y, w.forecasts[m]) for w in result.windows])
        result.final_factor[m] = conformal_factor(every.tolist(), level)
    for rule in RULES:
        result.rules[rule] = _score_rule(result, rule)
    result.chosen = result.rules["select"]
    final = combine_weights("select", result.models, _mase_table(result, result.windows))
    result.final_choice = result.models[int(np.argmax(final[:-1]))]


def final_combination(result: BacktestResult, rule: str) -> tuple[np.ndarray, float]:
    """The planner's weights (models..., median) from every CV window, and the interval factor
    of that combination over the same windows."""
    weights = combine_weights(rule, result.models, _mase_table(result, result.windows))
    ratios = [
        _ratios(w.y, combine([w.forecasts[m] for m in result.models], weights))
        for w in result.windows
    ]
    return weights, conformal_factor(np.concatenate(ratios).tolist(), result.level)


def describe(models: Sequence[str], weights: np.ndarray) -> str:
    """`mstl`, `median`, or `0.44 mstl + 0.56 median` (what the plan's `model` field says)."""
    labels = [*models, "median"]
    parts = [(w, name) for w, name in zip(weights, labels, strict=True) if w > 0]
    if len(parts) == 1:
        return parts[0][1]
    return " + ".join(f"{w:.2f} {name}" for w, name in parts)


def median_forecast(forecasts: Sequence[Forecast]) -> Forecast:
    """The candidates' elementwise median (of the means and of each interval bound)."""
    return Forecast(
        np.median([f.mean for f in forecasts], axis=0),
        np.median([f.lo for f in forecasts], axis=0),
        np.median([f.hi for f in forecasts], axis=0),
    )


def _mase_table(result: BacktestResult, windows: Sequence[WindowResult]) -> np.ndarray:
    """MASE per window (rows) of each model and, last column, of their median."""
    rows = []
    for w in windows:
        med = WindowResult(
            w.origin,
            w.y,
            {"median": median_forecast([w.forecasts[m] for m in result.models])},
            w.scale,
        )
        rows.append([_window_mase(w, m) for m in result.models] + [_window_mase(med, "median")])
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), len(result.models) + 1)


def combine_weights(rule: str, models: Sequence[str], past: np.ndarray) -> np.ndarray:
    """Weights of each model and, last, of the models' median, from the MASE on past windows
    (`_mase_table`: rows are windows). A weight vector sums to 1."""
    n = len(models)
    out = np.zeros(n + 1)
    if rule in models:
        out[list(models).index(rule)] = 1.0
        return out
    if rule == "median" or (len(past) == 0 and rule != "mean"):
        out[n] = 1.0
        return out
    if rule == "mean" or len(past) == 0:
        out[:n] = 1.0 / n
        return out
    err = np.where(np.isfinite(past), past, np.inf).mean(axis=0)
    best = int(np.argmin(err[:n]))
    if rule == "select":
        out[best] = 1.0
    elif rule == "select_ensemble":
        out[int(np.argmin(err))] = 1.0
    elif rule == "weighted":
        inv = np.where(np.isfinite(err[:n]), 1.0 / np.maximum(err[:n], 1e-9), 0.0)
        out[:n] = inv / inv.sum() if inv.sum() > 0 else 1.0 / n
    elif rule == "shrink":
        lam = len(past) / (len(past) + SHRINK_PRIOR_WINDOWS)
        out[best] = lam
        out[n] = 1.0 - lam
    else:
        raise ValueError(f"unknown rule {rule!r} (known: {', '.join(RULES)} or a model name)")
    return out


def combine(forecasts: Sequence[Forecast], weights: np.ndarray) -> Forecast:
    """The weighted sum of the candidates' forecasts and (last weight) of their median."""
    parts = [(w, f) for w, f in zip(weights[:-1], forecasts, strict=True) if w > 0]
    if weights[-1] > 0:
        parts.append((weights[-1], median_forecast(forecasts)))
    return Forecast(
        sum(w * f.mean for w, f in parts),
        sum(w * f.lo for w, f in parts),
        sum(w * f.hi for w, f in parts),
    )


def _score_rule(result: BacktestResult, rule: str) -> dict[str, Any]:
    """Out of sample: the rule's forecast for window k uses weights from windows < k only, and
    its interval factor the same weights' errors on those windows."""
    level = result.level
    table = _mase_table(result, result.windows)
    labels = [*result.models, "median"]
    scored, covers, picks = [], [], []
    points: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for k in range(1, len(result.windows)):
        weights = combine_weights(rule, result.models, table[:k])
        at = [
            combine([p.forecasts[m] for m in result.models], weights)
            for p in result.windows[: k + 1]
        ]
        prior = np.concatenate(
            [_ratios(p.y, fc) for p, fc in zip(result.windows[:k], at[:-1], strict=True)]
        )
        w = result.windows[k]
        lo, hi = at[-1].scaled(conformal_factor(prior.tolist(), level))
        covers.append(coverage(w.y, lo, hi))
        scored.append(point_metrics(w.y, at[-1].mean, w.scale))
        picks.append(labels[int(np.argmax(weights))])
        points.append((w.t_s if w.t_s is not None else np.full(len(w.y), np.nan), w.y,
                       at[-1].mean))  # fmt: skip
    if points:
        result.rule_points[rule] = tuple(  # type: ignore[assignment]
            np.concatenate([p[i] for p in points]) for i in range(3)
        )
    out: dict[str, Any] = {key: mean_defined(pw[key] for pw in scored) for key in _METRIC_KEYS}
    out["coverage"] = mean_defined(covers)
    out["picks"] = picks
    return out


_METRIC_KEYS = ("mase", "smape", "rmse", "mae", "r2", "mape", "accuracy", "within_5pct")


def overall(results: Sequence[BacktestResult]) -> dict[str, Any]:
    """Per model (and the chosen model): the mean over files of each metric."""
    out: dict[str, Any] = {}
    names = list(results[0].models) if results else []
    for m in names:
        out[m] = {
            key: mean_defined(r.per_model[m].get(key) for r in results)
            for key in (*_METRIC_KEYS, "coverage", "coverage_uncalibrated")
        }
    out["chosen"] = {
        key: mean_defined(r.chosen.get(key) for r in results) for key in (*_METRIC_KEYS, "coverage")
    }
    for rule in RULES:
        out[f"rule:{rule}"] = {
            key: mean_defined(r.rules[rule].get(key) for r in results)
            for key in (*_METRIC_KEYS, "coverage")
        }
    return out


def compare_reports(reports: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Backtest reports' `overall` per data set -> each row's MASE relative to SeasonalNaive
    per data set, its mean and worst, and leave one data set out: the row with the lowest
    mean relative MASE on the other data sets, scored on the held-out one."""
    rows = sorted({k for o in reports.values() for k in o if k != "chosen"})
    rel: dict[str, dict[str, float | None]] = {}
    for row in rows:
        rel[row] = {}
        for name, o in reports.items():
            base = (o.get("seasonal_naive") or {}).get("mase")
            value = (o.get(row) or {}).get("mase")
            rel[row][name] = value / base if value is not None and base else None
    complete = [r for r in rows if all(v is not None for v in rel[r].values())]

    def mean_over(row: str, names: Sequence[str]) -> float:
        return float(np.mean([rel[row][n] for n in names]))

    names = list(reports)
    loo = []
    for held in names:
        others = [n for n in names if n != held] or names
        best = min(complete, key=lambda r: mean_over(r, others))
        loo.append({"held_out": held, "chosen": best, "relative": rel[best][held]})
    ordered = sorted(complete, key=lambda r: mean_over(r, names))
    return {
        "relative": {r: rel[r] for r in ordered},
        "mean": {r: mean_over(r, names) for r in ordered},
        "worst": {r: max(v for v in rel[r].values() if v is not None) for r in ordered},
        "leave_one_out": loo,
        "leave_one_out_mean": float(np.mean([h["relative"] for h in loo])) if loo else None,
    }
