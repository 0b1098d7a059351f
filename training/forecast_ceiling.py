"""How close the served forecaster comes, per metric, to what the series' own noise allows
(issue 22, item 6; docs/QUALITY.md#forecast-ceiling): `python bench/forecast_ceiling.py`.

The **ceiling** of a metric is the share of held-out targets that a forecaster knowing the
simulator's signal exactly — its daily and weekly cycle, trend and every host's parameters:
the same simulation with every random draw of the value path set to zero (the AR(1) load
shocks and the per-sample noise) — gets within 5 % of the actual window mean. What stays is
noise no forecaster can know from the past: the per-sample noise averaged over a window and
the load's AR(1) wander, whose state is 0.9^12 = 0.28 of itself one 60 s window later (so
knowing it at the origin helps the first step a little: the ceiling is a close, slightly low
bound for step 1 and tight beyond). The **served** figure is what the flow publishes on the
very same targets (12-step forecasts from every origin of the last 30 % of each series, the
split `forecast-train` reports): the ONNX forecaster's output blended with its input
history's level (operators.forecast.blend); **model** is the network's output alone.
Targets, on the served forecast: ≥ 97 % of the ceiling on every metric, and ≥ 0.95 within
5 % where the ceiling is ≥ 0.99.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from novacron_ml.core.simulator import METRIC_NAMES
from training import SIM_START


class _NoDraws:
    """A numpy Generator whose normal draws are zero (the signal without its randomness)."""

    def __init__(self, inner: np.random.Generator) -> None:
        self._inner = inner

    def normal(self, loc: Any = 0.0, scale: Any = 1.0, size: Any = None) -> Any:
        return np.zeros(size) + loc

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


@contextmanager
def _signal_only() -> Iterator[None]:
    """While active, generators made by `np.random.default_rng` draw zeros from `normal`:
    the simulator's per-chunk value paths lose their randomness (its host parameters, drawn
    when it is built, are untouched). Process-wide while it lasts: a single-threaded tool."""
    from unittest import mock

    real = np.random.default_rng
    with mock.patch.object(np.random, "default_rng", lambda *a, **k: _NoDraws(real(*a, **k))):
        yield


def window_means(
    hours: float, hosts: int, seed: int, window_s: float, start: str, signal_only: bool
) -> tuple[np.ndarray, np.ndarray]:
    """(windows,) start seconds and (windows, hosts, metrics) window means of a steady
    simulated fleet, or of its signal alone."""
    from training.features import simulated_fleet

    sim = simulated_fleet(hours, hosts, seed, start, 0.0)
    if signal_only:
        with _signal_only():
            parts = list(sim.ticks())
    else:
        parts = list(sim.ticks())
    t_ms = np.concatenate([t for t, _ in parts])
    v = np.concatenate([v for _, v in parts])
    per = round(window_s / sim.config.step_s)
    n = len(t_ms) // per
    means = v[: n * per].reshape(n, per, *v.shape[1:]).mean(axis=1)
    return t_ms[: n * per : per] / 1000.0, means


def within(y: np.ndarray, yhat: np.ndarray, fraction: float = 0.05) -> np.ndarray:
    return np.abs(y - yhat) <= fraction * np.abs(y)


def served_forecasts(y: np.ndarray, hist: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """The forecasts the flow serves from the model's `pred` (origins, horizon), origin by
    origin in order: operators.forecast.blend, learning from each origin's step-1 error as
    the window arrives (the flow's code path; no anomalies here, so every window teaches)."""
    from operators.forecast.blend import Blend

    blend, out = Blend(), np.empty_like(pred)
    for i in range(len(pred)):
        if i:
            blend.observe(float(y[hist[i, -1]]))  # the window origin i-1 forecast at step 1
        out[i] = blend.forecast(pred[i], y[hist[i]])
    return out


def ceiling_report(
    manifest: Path, hours: float = 12.0, hosts: int = 4, seed: int = 0, start: str = SIM_START
) -> dict[str, Any]:
    """Per metric: the served model's within-5 % share, the ceiling, their ratio and the
    targets, on the held-out 30 % of the simulated stretch the model's manifest names."""
    from operators.forecast.model import OnnxForecaster, forecaster_inputs

    model = OnnxForecaster(manifest)
    L, H, step = model.input_len, model.horizon, model.manifest.step_s
    t_s, actual = window_means(hours, hosts, seed, step, start, signal_only=False)
    _, signal = window_means(hours, hosts, seed, step, start, signal_only=True)
    n = len(t_s)
    # every origin, in order, as the flow forecasts them (the blend learns from the start);
    # scored on the held-out last 30 %
    origins = np.arange(L, n - H + 1)
    scored = origins >= max(int(n * 0.7), L)
    hist = origins[:, None] + np.arange(-L, 0)[None, :]
    tgt = origins[:, None] + np.arange(H)[None, :]
    rows: dict[str, Any] = {}
    for j, metric in enumerate(METRIC_NAMES):
        hits_model, hits_served, hits_ceiling = [], [], []
        for h in range(actual.shape[1]):
            y = actual[:, h, j]
            x = forecaster_inputs(y[hist], t_s[hist])
            pred = model.predict(x).astype(np.float64)
            served = served_forecasts(y, hist, pred)
            target = y[tgt][scored]
            hits_model.append(within(target, pred[scored]))
            hits_served.append(within(target, served[scored]))
            hits_ceiling.append(within(target, signal[:, h, j][tgt][scored]))
        m = float(np.mean(hits_model))
        v = float(np.mean(hits_served))
        c = float(np.mean(hits_ceiling))
        ratio = v / c if c > 0 else None
        rows[metric] = {
            "model": m,
            "served": v,
            "ceiling": c,
            "of_ceiling": ratio,
            "model_of_ceiling": m / c if c > 0 else None,
            "target_97pct_of_ceiling": ratio is not None and ratio >= 0.97,
            "target_95pct_where_ceiling_99": None if c < 0.99 else v >= 0.95,
        }
    origins = origins[scored]
    return {
        "model": f"{model.manifest.name}@{model.manifest.version}",
        "data": {"hours": hours, "hosts": hosts, "seed": seed, "start": start,
                 "targets_per_metric": int(origins.size * H * actual.shape[1])},
        "metrics": rows,
    }  # fmt: skip
