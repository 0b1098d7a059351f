"""The daily capacity plan: per (cluster, resource) hourly series, choose a model by rolling-
origin CV, fit it on the whole history, forecast the horizon with a calibrated interval, and
date the exhaustion (the first hour whose upper bound reaches the configured capacity).

Message formats (docs/MESSAGES.md): `capacity.forecasts` gets one `forecast_record` per
series, `capacity.alerts` one `alert_record` per series that has a capacity, both keyed
`cluster/resource` (a compacted topic keeps the latest plan).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from novacron_ml.core.catalogue import physical_bounds, spec_for
from novacron_ml.core.schema import parse_rfc3339_ms
from novacron_ml.core.settings import CapacitySettings, Settings
from operators.alerting.suppression import Rule, rules_from_settings
from training.capacity import (
    FAST_MODELS,
    RULES,
    Forecast,
    ModelOptions,
    backtest,
    combine,
    describe,
    final_combination,
    forecast,
)
from training.fleet import run_tasks
from training.series_io import Series, SeriesError

HOUR_S = 3600.0
URGENCIES = ("URGENT", "HIGH", "MEDIUM", "LOW")


@dataclass
class HourlyHistory:
    cluster: str
    resource: str
    t_s: np.ndarray
    values: np.ndarray

    @property
    def key(self) -> str:
        return f"{self.cluster}/{self.resource}"


@dataclass
class SeriesPlan:
    cluster: str
    resource: str
    model: str
    """What made the forecast: one model, `median`, or `0.44 mstl + 0.56 median`."""
    interval_factor: float
    cv: dict[str, dict[str, float | None]]
    """CV (out of sample) per candidate model and, under `selection`, of the plan's rule."""
    history_t: np.ndarray
    history: np.ndarray
    forecast_t: np.ndarray
    mean: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    capacity: float | None
    exhaustion_s: float | None
    """First forecast hour whose upper bound reaches capacity (None: not within horizon)."""
    exhaustion_mean_s: float | None
    """Same for the point forecast (the likely date, vs the prudent one above)."""
    urgency: str | None
    warnings: list[str] = field(default_factory=list)
    weights: dict[str, float] = field(default_factory=dict)
    """Weight of each candidate and of `median` in the forecast (zeros left out)."""
    cv_points: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    """The rule's out-of-sample CV points (t_s, actual, forecast): the report's accuracy."""

    @property
    def key(self) -> str:
        return f"{self.cluster}/{self.resource}"

    @property
    def days_to_exhaustion(self) -> float | None:
        if self.exhaustion_s is None:
            return None
        return (self.exhaustion_s - float(self.history_t[-1])) / 86_400.0


def urgency_for(days: float | None, cfg: CapacitySettings) -> str:
    if days is None:
        return "LOW"
    if days <= cfg.urgent_days:
        return "URGENT"
    if days <= cfg.high_days:
        return "HIGH"
    if days <= cfg.medium_days:
        return "MEDIUM"
    return "LOW"


def maintenance_fn(
    rules: list[Rule], cluster: str, resource: str
) -> Callable[[np.ndarray], np.ndarray] | None:
    """0/1 per epoch second: is a maintenance window of this (cluster, resource) active."""
    mine = [
        r
        for r in rules
        if r.kind == "maintenance"
        and (r.matcher.clusters is None or cluster in r.matcher.clusters)
        and (r.matcher.metrics is None or resource in r.matcher.metrics)
    ]
    if not mine:
        return None

    def flags(t_s: np.ndarray) -> np.ndarray:
        return np.array(
            [any(r.active_at(int(t * 1000)) for r in mine) for t in t_s], dtype=np.float64
        )

    return flags


def _first_crossing(t: np.ndarray, values: np.ndarray, capacity: float) -> float | None:
    hit = np.flatnonzero(values >= capacity)
    return float(t[hit[0]]) if hit.size else None


def plan_series(history: HourlyHistory, cfg: CapacitySettings, rules: list[Rule]) -> SeriesPlan:
    """Choose, fit and forecast one series (runs in a worker process)."""
    series = Series(history.key, history.t_s, history.values, HOUR_S, True)
    n = len(series)
    horizon = int(cfg.horizon_days * 24)
    if n * HOUR_S < cfg.min_history_days * 86_400.0:
        raise SeriesError(
            f"{history.key}: {n} hours of history, needs {cfg.min_history_days:g} days"
        )
    opts = ModelOptions(
        level=cfg.interval,
        uncertainty_samples=cfg.uncertainty_samples,
        changepoints=cfg.changepoints,
        holidays_country=cfg.holidays_country,
        maintenance=maintenance_fn(rules, history.cluster, history.resource),
        fast=cfg.fast,
    )
    cv_h = max(6, min(24 * 7, horizon, n // (cfg.cv_windows + 3)))
    models = candidates(cfg, opts)
    if cfg.selection not in RULES and cfg.selection not in models:
        raise SeriesError(f"capacity.selection {cfg.selection!r} is not among the models {models}")
    result = backtest(series, cv_h, models, cfg.cv_windows + 1, opts, min_train=3 * cv_h)
    weights, factor = final_combination(result, cfg.selection)
    needed = (
        models if weights[-1] > 0 else [m for m, w in zip(models, weights, strict=False) if w > 0]
    )
    fitted = {
        m: forecast(m, series.values, series.t_s, horizon, HOUR_S, True, opts) for m in needed
    }
    zero = np.zeros(horizon)
    fc = combine([fitted.get(m, Forecast(zero, zero, zero)) for m in models], weights)
    lo, hi = fc.scaled(factor)
    mean = fc.mean
    low, high = physical_bounds(spec_for(history.resource))
    if low is not None or high is not None:  # the resource's own bounds
        mean = np.clip(mean, low, high)
        lo, hi = np.clip(lo, low, high), np.clip(hi, low, high)
    t = series.t_s[-1] + HOUR_S * np.arange(1, horizon + 1)
    capacity = cfg.capacity.get(history.resource)
    exhaustion = exhaustion_mean = None
    if capacity is not None:
        exhaustion = _first_crossing(t, hi, capacity)
        exhaustion_mean = _first_crossing(t, mean, capacity)
    plan = SeriesPlan(
        cluster=history.cluster,
        resource=history.resource,
        model=describe(models, weights),
        interval_factor=factor,
        cv={
            **{m: {k: result.per_model[m][k] for k in _CV_KEYS} for m in models},
            "selection": {k: result.rules[cfg.selection][k] for k in _CV_KEYS}
            if cfg.selection in result.rules
            else {k: result.per_model[cfg.selection][k] for k in _CV_KEYS},
        },
        history_t=series.t_s,
        history=series.values,
        forecast_t=t,
        mean=mean,
        lo=lo,
        hi=hi,
        capacity=capacity,
        exhaustion_s=exhaustion,
        exhaustion_mean_s=exhaustion_mean,
        urgency=None,
        weights={
            name: round(float(w), 4)
            for name, w in zip([*models, "median"], weights, strict=True)
            if w > 0
        },
        cv_points=result.rule_points.get(cfg.selection),
    )
    if cfg.selection in models:
        plan.cv_points = _model_points(result, cfg.selection)
    if capacity is not None:
        plan.urgency = urgency_for(plan.days_to_exhaustion, cfg)
    return plan


_CV_KEYS = ("mase", "accuracy", "coverage")


def candidates(cfg: CapacitySettings, opts: ModelOptions) -> list[str]:
    """The models fitted for a series: all of `capacity.models`, or on the fast path the
    cheap ones (`FAST_MODELS`, daily season only), plus Prophet where a maintenance window
    applies to the series (only Prophet models it)."""
    if not cfg.fast:
        return list(cfg.models)
    keep = [
        m
        for m in cfg.models
        if m in FAST_MODELS or (m == "prophet" and opts.maintenance is not None)
    ]
    return keep or list(cfg.models)


def _model_points(result: Any, model: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ws = result.windows[1:]
    return (
        np.concatenate([w.t_s for w in ws]),
        np.concatenate([w.y for w in ws]),
        np.concatenate([w.forecasts[model].mean for w in ws]),
    )


def _plan_or_error(
    args: tuple[HourlyHistory, CapacitySettings, list[Rule]],
) -> SeriesPlan | str:
    try:
        return plan_series(*args)
    except SeriesError as exc:
        return str(exc)
    except Exception as exc:  # one series' failed fit must not stop the fleet's plan
        return f"{args[0].key}: {type(exc).__name__}: {exc}"


def plan_all(
    histories: Iterable[HourlyHistory],
    settings: Settings,
    *,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[list[SeriesPlan], list[str]]:
    """Plan every series, one task per series on `capacity.engine` (Dask by default: a
    LocalCluster, or `capacity.scheduler`); problems come back as one-line messages."""

    cfg = settings.capacity
    rules = rules_from_settings(settings.suppression)
    jobs = [(h, cfg, rules) for h in histories]
    outs = run_tasks(
        _plan_or_error,
        jobs,
        engine=cfg.engine,
        workers=workers if workers is not None else cfg.workers,
        scheduler=cfg.scheduler,
        progress=progress,
    )
    plans = [o for o in outs if not isinstance(o, str)]
    problems = [o for o in outs if isinstance(o, str)]
    plans.sort(key=lambda p: p.key)
    return plans, problems


def _iso(t_s: float | None) -> str | None:
    if t_s is None:
        return None
    return datetime.fromtimestamp(t_s, UTC).isoformat().replace("+00:00", "Z")


def _num(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def forecast_record(plan: SeriesPlan, generated_at: str) -> dict[str, Any]:
    return {
        "cluster": plan.cluster,
        "resource": plan.resource,
        "generated_at": generated_at,
        "model": plan.model,
        "weights": plan.weights,
        "interval": {"factor": plan.interval_factor},
        "history_end": _iso(float(plan.history_t[-1])),
        "step_s": HOUR_S,
        "points": [
            {"ts": _iso(float(t)), "mean": _num(m), "lower": _num(lo), "upper": _num(hi)}
            for t, m, lo, hi in zip(plan.forecast_t, plan.mean, plan.lo, plan.hi, strict=True)
        ],
        "cv": plan.cv,
    }


def alert_record(plan: SeriesPlan, generated_at: str) -> dict[str, Any]:
    return {
        "cluster": plan.cluster,
        "resource": plan.resource,
        "generated_at": generated_at,
        "urgency": plan.urgency,
        "capacity": plan.capacity,
        "exhaustion_at": _iso(plan.exhaustion_s),
        "days_to_exhaustion": plan.days_to_exhaustion,
        "likely_exhaustion_at": _iso(plan.exhaustion_mean_s),
        "model": plan.model,
        "current": float(plan.history[-1]),
    }


@dataclass
class Divergence:
    """How far an earlier plan's point forecast landed from what happened since it was made."""

    generated_at: str
    """When the earlier plan was made (its `generated_at`)."""
    hours: int
    """Hours of that plan's forecast that the history now covers."""
    wape: float
    """sum |actual - forecast| / sum |actual| over those hours (0.15: 15 % off)."""
    outside: float
    """Share of those hours whose actual left the plan's interval."""

    def record(self) -> dict[str, Any]:
        return {
            "generated_at": self.generated_at,
            "hours": self.hours,
            "wape": round(self.wape, 6),
            "outside": round(self.outside, 6),
        }


def divergence(
    previous: dict[str, Any], history: HourlyHistory, min_hours: int = 6
) -> Divergence | None:
    """Score an earlier `forecast_record` of the same series against the hourly history made
    since: None when fewer than `min_hours` of its forecast hours are covered, or the actuals
    sum to 0 (nothing to be relatively wrong about)."""
    if not len(history.t_s):
        return None
    end = _epoch(previous["history_end"])
    index = {round(float(t)): i for i, t in enumerate(history.t_s)}
    actual, mean, outside = [], [], 0
    for p in previous.get("points", ()):
        t = _epoch(p["ts"])
        i = index.get(round(t))
        if t <= end or i is None or p.get("mean") is None:
            continue
        a = float(history.values[i])
        actual.append(a)
        mean.append(float(p["mean"]))
        lo, hi = p.get("lower"), p.get("upper")
        outside += int((lo is not None and a < lo) or (hi is not None and a > hi))
    scale = float(np.sum(np.abs(actual))) if actual else 0.0
    if len(actual) < min_hours or scale <= 0:
        return None
    wape = float(np.sum(np.abs(np.subtract(actual, mean)))) / scale
    return Divergence(str(previous["generated_at"]), len(actual), wape, outside / len(actual))


def latest_records(records: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The latest `forecast_record` per `cluster/resource` (by `generated_at`) of a replayed
    `capacity.forecasts` topic; records without the keys are skipped."""
    out: dict[str, dict[str, Any]] = {}
    for r in records:
        try:
            key = f"{r['cluster']}/{r['resource']}"
            at = _epoch(r["generated_at"])
        except (KeyError, TypeError, ValueError):
            continue
        if key not in out or at >= _epoch(out[key]["generated_at"]):
            out[key] = r
    return out


FORECAST_HORIZONS_DAYS = (1, 7, 30)


def export_metrics(
    plans: list[SeriesPlan],
    divergences: dict[str, Divergence],
    skipped: int,
    seconds: float,
) -> None:
    """Set the planner's Prometheus gauges (novacron_ml.core.metrics, `capacity_*`) from one
    plan, replacing the last plan's series (a cluster or resource gone is gone)."""
    from novacron_ml.core import metrics as m

    for gauge in (
        m.CAPACITY_UTILISATION,
        m.CAPACITY_LIMIT,
        m.CAPACITY_FORECAST,
        m.CAPACITY_TIME_LEFT,
        m.CAPACITY_DIVERGENCE,
    ):
        gauge.clear()
    counts = {u: 0 for u in (*URGENCIES, "none")}
    for p in plans:
        labels = {"cluster": p.cluster, "resource": p.resource}
        m.CAPACITY_UTILISATION.labels(**labels).set(float(p.history[-1]))
        end = float(p.history_t[-1])
        for days in FORECAST_HORIZONS_DAYS:
            at = np.flatnonzero(np.abs(p.forecast_t - (end + days * 86_400.0)) < 1.0)
            if len(at):
                for bound, values in (("mean", p.mean), ("upper", p.hi)):
                    m.CAPACITY_FORECAST.labels(**labels, horizon=f"{days}d", bound=bound).set(
                        float(values[at[0]])
                    )
        if p.capacity is not None:
            m.CAPACITY_LIMIT.labels(**labels).set(p.capacity)
            left = p.days_to_exhaustion
            m.CAPACITY_TIME_LEFT.labels(**labels).set(math.inf if left is None else left * 86_400.0)
        counts[p.urgency or "none"] += 1
        if p.key in divergences:
            m.CAPACITY_DIVERGENCE.labels(**labels).set(divergences[p.key].wape)
    for urgency, n in counts.items():
        m.CAPACITY_SERIES.labels(urgency=urgency).set(n)
    m.CAPACITY_SERIES.labels(urgency="skipped").set(skipped)
    m.CAPACITY_PLAN_SECONDS.set(seconds)


def histories_from_records(records: Iterable[dict[str, Any]]) -> list[HourlyHistory]:
    """`metrics.hourly` JSON records (any order, repeats allowed: the last one wins)."""
    by_key: dict[tuple[str, str], dict[int, float]] = {}
    for r in records:
        by_key.setdefault((r["cluster"], r["resource"]), {})[int(r["hour_start_ms"])] = float(
            r["mean"]
        )
    out = []
    for (cluster, resource), points in sorted(by_key.items()):
        hours = np.array(sorted(points), dtype=np.int64)
        values = np.array([points[h] for h in hours], dtype=np.float64)
        t_s = hours / 1000.0
        grid = np.arange(t_s[0], t_s[-1] + 1, HOUR_S)
        if len(grid) != len(t_s):  # missing hours: linear interpolation (standard repair)
            values = np.interp(grid, t_s, values)
            t_s = grid
        out.append(HourlyHistory(cluster, resource, t_s, values))
    return out


HOURLY_CSV_COLUMNS = ("timestamp", "cluster", "resource", "value")


def read_hourly_csv(path: Path) -> list[HourlyHistory]:
    """Offline history: CSV with timestamp (RFC 3339 or epoch s), cluster, resource, value."""
    records = []
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in HOURLY_CSV_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise SeriesError(f"{path}: missing column(s) {', '.join(missing)}")
        for line, row in enumerate(reader, start=2):
            try:
                ts = row["timestamp"].strip()
                t = float(ts) if ts.replace(".", "", 1).isdigit() else _epoch(ts)
                records.append(
                    {
                        "cluster": row["cluster"],
                        "resource": row["resource"],
                        "hour_start_ms": int(t * 1000),
                        "mean": float(row["value"]),
                    }
                )
            except ValueError as exc:
                raise SeriesError(f"{path}: line {line}: {exc}") from None
    return histories_from_records(records)


def _epoch(text: str) -> float:
    return parse_rfc3339_ms(text) / 1000


def write_hourly_csv(path: Path, histories: Iterable[HourlyHistory], wide: bool = False) -> int:
    """Long format (timestamp,cluster,resource,value), or wide: one `cluster/resource` column
    per series (for `capacity backtest --value-column`). Returns the points written."""
    if wide:
        import pandas as pd

        frame = pd.DataFrame(
            {h.key: pd.Series(h.values, index=[_iso(float(t)) for t in h.t_s]) for h in histories}
        )
        frame.index.name = "timestamp"
        frame.dropna().to_csv(path, float_format="%.6g")
        return int(frame.dropna().size)
    n = 0
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(HOURLY_CSV_COLUMNS)
        for h in histories:
            for t, v in zip(h.t_s, h.values, strict=True):
                w.writerow([_iso(float(t)), h.cluster, h.resource, f"{v:.6g}"])
                n += 1
    return n
