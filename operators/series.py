"""Per-series detection step: a window's features in, an alert or a dead letter out.

This is the stateful logic behind the flow's `detect` step, kept free of Bytewax so it can be
tested alone. Its state (`SeriesState`) is what goes into Bytewax recovery snapshots.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from novacron_ml.schema import (
    Alert,
    alert_id_for,
    rfc3339_ms,
    spec_for,
    split_series_key,
)
from operators.deadletter import DeadLetter, Reason
from operators.features import FeatureWindow
from operators.likelihood import AnomalyLikelihood
from operators.robust_z import RobustZConfig, RobustZDetector, severity_for

DETECTOR_NAME = "robust_z"


@dataclass
class SeriesState:
    detector: RobustZDetector
    last_window_start_ms: int | None = None
    last_score: float = 0.0
    """Anomaly score in [0, 1) of the last scored window (0 while warming up)."""
    likelihood: AnomalyLikelihood | None = None
    """Set to post-process scores with the anomaly likelihood (backtests: NAB)."""


class WindowScore(msgspec.Struct, frozen=True):
    """Every scored window's anomaly score (for backtests such as NAB, not published)."""

    series: str
    start_ms: int
    end_ms: int
    anomaly_score: float


def anomaly_score(z: float, direction: int, threshold: float) -> float:
    """Map a robust z to [0, 1): monotone in the bad direction's |z|, 0.5 at the threshold."""
    bad = abs(z) if direction == 0 else max(direction * z, 0.0)
    return bad / (bad + threshold)


def new_series_state(series: str, config: RobustZConfig) -> SeriesState:
    _, _, metric = split_series_key(series)
    return SeriesState(RobustZDetector(config, spec_for(metric).bad_direction))


def detect_window(state: SeriesState, window: FeatureWindow) -> Alert | DeadLetter | None:
    """Score one closed window of one series; update the state in place.

    A window starting at or before the last one scored is never scored twice: it is routed as
    a `late_window` dead letter (defence in depth; the feature operator already emits each
    window once).
    """
    series = window.series
    last = state.last_window_start_ms
    if last is not None and window.start_ms <= last:
        summary = {
            "series": series,
            "window_start": rfc3339_ms(window.start_ms),
            "count": window["count"],
            "mean": window["mean"],
        }
        return DeadLetter(
            Reason.LATE_WINDOW,
            f"window {rfc3339_ms(window.start_ms)} arrived after {rfc3339_ms(last)} was scored",
            msgspec.json.encode(summary),
            series.encode(),
        )
    state.last_window_start_ms = window.start_ms
    mean = window["mean"]
    score = state.detector.observe(mean)
    det = state.detector
    state.last_score = (
        0.0 if score is None else anomaly_score(score.z, det.direction, det.config.z_threshold)
    )
    if state.likelihood is not None:
        state.last_score = state.likelihood.update(state.last_score)
    if score is None or not score.anomalous:
        return None
    cluster, host, metric = split_series_key(series)
    kind = spec_for(metric).anomaly_type.value
    return Alert(
        alert_id=alert_id_for(series, window.start_ms, kind),
        type=kind,
        severity=severity_for(score.z, state.detector.config.z_threshold),
        host=host,
        cluster=cluster,
        metric=metric,
        window_start=rfc3339_ms(window.start_ms),
        window_end=rfc3339_ms(window.end_ms),
        value=mean,
        expected=score.expected,
        score=score.z,
        detector=DETECTOR_NAME,
    )
