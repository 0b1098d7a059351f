"""Per-series forecasts in the flow: the ONNX LSTM over each series' recent window means.

Pure logic (no Bytewax, no torch). One `SeriesForecaster` per feature shard holds, per
series, the last `input_len` window means; `add()` takes the windows one shard closed in one
Bytewax batch, runs the model once for all series that have a full history (micro-batched
across series), and returns:
- `SeriesForecast` records (for `topics.forecasts`): the next `horizon` window means;
- `prediction_error` alerts: the window mean is far from what the model forecast for it one
  step earlier (|residual| / EW mean absolute residual >= `residual_threshold`); a window
  past half that threshold enters the model's input history as the history's median, not its
  value (for at most `max_excursion` windows in a row; then a lasting shift is accepted as the
  new normal and the history restarts);
- degradation alerts: the forecast crosses the metric's configured SLO within the horizon
  while the current value does not (once per excursion; typed by the metric's catalogue).
The model (an `OnnxForecaster`) is passed in, not held: the state stays picklable for
Bytewax snapshots, and the session is one per process (`novacron_ml.models`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

import msgspec
import numpy as np

from novacron_ml.core.catalogue import DEFAULT_CATALOGUE, Catalogue
from novacron_ml.core.features import FeatureWindow
from novacron_ml.core.schema import (
    Alert,
    AnomalyType,
    Severity,
    rfc3339_ms,
    split_series_key,
)
from operators import drift
from operators.alerting.alerts import window_alert
from operators.detection.robust_z import severity_for
from operators.forecast.blend import Blend
from operators.forecast.model import forecaster_inputs

PRUNE_EVERY = 1000
"""Batches between scans for silent series."""
RESIDUAL_DETECTOR = "lstm_residual"
SLO_DETECTOR = "lstm_slo"


class Model(Protocol):
    input_len: int
    horizon: int

    def predict(self, x: np.ndarray) -> np.ndarray: ...


class SeriesForecast(msgspec.Struct, frozen=True, kw_only=True):
    """JSON on `topics.forecasts`, keyed by series: the next `horizon` window means."""

    series: str
    window_end: str
    """End of the last window the forecast saw; forecast[i] is the window i+1 after it."""
    step_s: float
    forecast: list[float]
    model: str
    model_weight: float = 1.0
    """The model's share of `forecast`; the rest is the mean of the windows it read
    (operators.forecast.blend, docs/FORECAST.md#blend)."""


class ShadowForecast(SeriesForecast, frozen=True, kw_only=True):
    """The challenger's forecast of the same window from the same history, on
    `topics.forecasts_shadow` (same JSON): shadow scoring, never an alert."""


@dataclass(frozen=True)
class ForecastConfig:
    step_ms: int
    residual_threshold: float = 8.0
    residual_alpha: float = 0.02
    min_residuals: int = 60
    idle_ms: int = 86_400_000
    """A series silent this long (event time) is forgotten."""
    max_excursion: int = 15
    """After this many suspect windows in a row the new level is accepted as normal."""
    slo: Mapping[str, float] = field(default_factory=dict)
    model_name: str = "lstm_forecaster"
    blend: bool = True
    """Serve the model's forecast blended with its input history's level (forecast.blend)."""
    catalogue: Catalogue = DEFAULT_CATALOGUE
    """Which way an SLO is crossed (the metric's bad direction)."""


@dataclass
class _Series:
    values: np.ndarray
    starts: np.ndarray
    n: int = 0
    last_start_ms: int = -1
    pending: np.ndarray | None = None
    """Forecast made after the last window (for the next horizon windows)."""
    abs_residual: float = 0.0
    residuals: int = 0
    slo_breach_forecast: bool = False
    excursion: int = 0
    """Consecutive suspect windows (residual >= half the alert threshold)."""
    blend: Blend | None = None
    """The served forecast's blend weight (None until the first forecast; old snapshots)."""
    shadow_blend: Blend | None = None


@dataclass
class SeriesForecaster:
    config: ForecastConfig
    input_len: int
    series: dict[str, _Series] = field(default_factory=dict)
    forecasts_made: int = 0
    newest_ms: int = 0
    calls: int = 0

    def add(
        self, windows: list[FeatureWindow], model: Model, shadow: Model | None = None
    ) -> list[SeriesForecast | Alert]:
        """Windows of one batch, in order per series. A series with several windows in the
        batch (replays, backfills) is handled in rounds, so every window is compared with a
        forecast made from the windows before it. A `shadow` model (the challenger) forecasts
        from exactly the same inputs: its `ShadowForecast`s change no state and raise no
        alert."""
        out: list[SeriesForecast | Alert] = []
        rounds: list[list[FeatureWindow]] = []
        seen: dict[str, int] = {}
        for w in windows:
            k = seen.get(w.series, 0)
            seen[w.series] = k + 1
            if k == len(rounds):
                rounds.append([])
            rounds[k].append(w)
        errors: list[float] = []
        for batch in rounds:
            ready = [r for w in batch if (r := self._observe(w, out, errors)) is not None]
            if ready:
                self._forecast(ready, model, out, shadow)
        manifest = getattr(model, "manifest", None)  # a test double may have none
        if errors and manifest is not None:
            drift.observe_errors(manifest.name, errors)
        if windows:
            self.newest_ms = max(self.newest_ms, *(w.start_ms for w in windows))
            self.calls += 1
            if self.calls % PRUNE_EVERY == 0:
                self.prune()
        return out

    def prune(self) -> int:
        """Forget series silent for `idle_ms` of event time (hosts come and go)."""
        cutoff = self.newest_ms - self.config.idle_ms
        gone = [k for k, s in self.series.items() if s.last_start_ms < cutoff]
        for k in gone:
            del self.series[k]
        return len(gone)

    def _observe(
        self, w: FeatureWindow, out: list[SeriesForecast | Alert], errors: list[float]
    ) -> tuple[str, _Series, FeatureWindow] | None:
        """Check the window against its forecast, add it to the history; the series if it
        is ready for a forecast."""
        if w["count"] <= 0:
            return None
        value = w["mean"]
        s = self.series.get(w.series)
        if s is None:
            s = self.series[w.series] = _Series(
                np.zeros(self.input_len), np.zeros(self.input_len, dtype=np.int64)
            )
        if s.last_start_ms >= 0 and w.start_ms != s.last_start_ms + self.config.step_ms:
            if w.start_ms <= s.last_start_ms:
                return None  # a repeat (replayed input): nothing new
            s.n, s.pending = 0, None  # a gap: start the history again
        observed = value
        if s.pending is not None:
            history = s.values[self.input_len - s.n :]
            step = float(np.mean(np.abs(np.diff(history)))) if len(history) > 1 else 0.0
            if step > 0:  # the one-step error on the series' own scale (drift monitor)
                errors.append(abs(value - float(s.pending[0])) / step)
            alert, suspect = self._residual(w, s, value, float(s.pending[0]))
            if alert is not None:
                out.append(alert)
            if not suspect:  # anomalies teach the blend nothing either
                for b in (s.blend, s.shadow_blend):
                    if b is not None:
                        b.observe(value)
            if suspect and s.excursion < self.config.max_excursion:
                # keep anomalies (and the edges of one, half the alert threshold) out of the
                # model's inputs: later forecasts come from normal history, so the return to
                # normal is not a second alert. The stand-in is the history's median, not the
                # forecast: a model fed its own forecasts can drift away.
                s.excursion += 1
                observed = float(np.median(s.values[self.input_len - s.n :]))
            elif not suspect:
                s.excursion = 0
            else:  # a lasting shift: accept the new level
                s.excursion, s.n = 0, 0
        s.values[:-1] = s.values[1:]  # shift in place: no new arrays per window
        s.starts[:-1] = s.starts[1:]
        s.values[-1], s.starts[-1] = observed, w.start_ms
        s.n = min(s.n + 1, self.input_len)
        s.last_start_ms = w.start_ms
        s.pending = None
        for b in (s.blend, s.shadow_blend):
            if b is not None:  # their step 1 was this window (or a gap lost it)
                b.forget_pending()
        return (w.series, s, w) if s.n == self.input_len else None

    def _forecast(
        self,
        ready: list[tuple[str, _Series, FeatureWindow]],
        model: Model,
        out: list[SeriesForecast | Alert],
        shadow: Model | None = None,
    ) -> None:
        x = forecaster_inputs(
            np.stack([s.values for _, s, _ in ready]),
            np.stack([s.starts for _, s, _ in ready]) / 1000.0,
        )
        preds = model.predict(x).astype(np.float64)
        label = _label(model, self.config.model_name)  # the version serving now (hot reload)
        self.forecasts_made += len(ready)
        step_s = self.config.step_ms / 1000.0
        if shadow is not None:
            shadow_label = _label(shadow, "shadow")
            for (key, s, w), raw in zip(ready, shadow.predict(x).astype(np.float64),
                                        strict=True):  # fmt: skip
                served, weight = raw, 1.0
                if self.config.blend:  # blended by its own errors, as the champion is
                    s.shadow_blend = s.shadow_blend or Blend()
                    weight = s.shadow_blend.weight()
                    served = s.shadow_blend.forecast(raw, s.values)
                out.append(ShadowForecast(series=key, window_end=rfc3339_ms(w.end_ms),
                                          step_s=step_s, forecast=served.tolist(),
                                          model=shadow_label,
                                          model_weight=round(weight, 4)))  # fmt: skip
        for (key, s, w), raw in zip(ready, preds, strict=True):
            pred, weight = raw, 1.0
            if self.config.blend:
                s.blend = s.blend or Blend()
                weight = s.blend.weight()
                pred = s.blend.forecast(raw, s.values)
            s.pending = pred
            out.append(
                SeriesForecast(
                    series=key,
                    window_end=rfc3339_ms(w.end_ms),
                    step_s=step_s,
                    forecast=pred.tolist(),
                    model=label,
                    model_weight=round(weight, 4),
                )
            )
            alert = self._slo(key, s, w, pred)
            if alert is not None:
                out.append(alert)

    def _residual(
        self, w: FeatureWindow, s: _Series, value: float, expected: float
    ) -> tuple[Alert | None, bool]:
        """The alert, if any, and whether the window is suspect (kept out of learning)."""
        residual = abs(value - expected)
        cfg = self.config
        alert, suspect = None, False
        if s.residuals >= cfg.min_residuals and s.abs_residual > 0:
            score = residual / s.abs_residual
            suspect = score >= cfg.residual_threshold / 2
            if score >= cfg.residual_threshold:
                alert = _alert(
                    w, AnomalyType.PREDICTION_ERROR, value, expected, score,
                    severity_for(score, cfg.residual_threshold), RESIDUAL_DETECTOR,
                )  # fmt: skip
        if not suspect:  # anomalies stay out of the residual scale (AnomalyFilter semantics)
            a = cfg.residual_alpha if s.residuals >= 10 else 1.0 / (s.residuals + 1)
            s.abs_residual += a * (residual - s.abs_residual)
            s.residuals += 1
        return alert, suspect

    def _slo(self, key: str, s: _Series, w: FeatureWindow, pred: np.ndarray) -> Alert | None:
        _cluster, _host, metric = split_series_key(key)
        slo = self.config.slo.get(metric)
        if slo is None:
            return None
        spec = self.config.catalogue.spec_for(metric)
        sign = -1.0 if spec.bad_direction < 0 else 1.0  # lower-is-worse metrics cross downwards
        now_ok = sign * (s.values[-1] - slo) < 0
        crossing = np.flatnonzero(sign * (pred - slo) >= 0)
        if not now_ok or crossing.size == 0:
            s.slo_breach_forecast = False
            return None
        if s.slo_breach_forecast:
            return None  # already alerted for this excursion
        s.slo_breach_forecast = True
        steps = int(crossing[0]) + 1
        worst = float(pred.max() if sign > 0 else pred.min())
        severity = Severity.HIGH if steps <= max(1, len(pred) // 4) else Severity.MEDIUM
        kind = spec.anomaly_type
        return _alert(w, kind, worst, slo, float(steps), severity, SLO_DETECTOR, suffix="slo")


def _label(model: object, default: str) -> str:
    """`name@version` of a served model (a test double may have no manifest)."""
    manifest = getattr(model, "manifest", None)
    return f"{manifest.name}@{manifest.version}" if manifest is not None else default


def _alert(
    w: FeatureWindow,
    kind: AnomalyType,
    value: float,
    expected: float,
    score: float,
    severity: Severity,
    detector: str,
    suffix: str = "",
) -> Alert:
    id_kind = f"{kind.value}:{suffix}" if suffix else f"{kind.value}:{detector}"
    return window_alert(
        w, kind, severity, value=value, expected=expected, score=score, detector=detector,
        id_kind=id_kind,
    )  # fmt: skip
