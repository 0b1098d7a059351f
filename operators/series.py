"""Per-series detection step: window statistics in, alerts or dead letters out.

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
from operators.robust_z import RobustZConfig, RobustZDetector, severity_for
from operators.windows import WindowGrid, WindowStats

DETECTOR_NAME = "robust_z"


@dataclass
class SeriesState:
    detector: RobustZDetector
    last_window_id: int | None = None


def new_series_state(series: str, config: RobustZConfig) -> SeriesState:
    _, _, metric = split_series_key(series)
    return SeriesState(RobustZDetector(config, spec_for(metric).bad_direction))


def detect_window(
    state: SeriesState,
    series: str,
    window_id: int,
    stats: WindowStats,
    grid: WindowGrid,
) -> Alert | DeadLetter | None:
    """Score one closed window of one series; update the state in place.

    A window id at or before the last one seen means Bytewax re-opened a window for late data
    after all of the key's windows had closed: it is routed as a `late_window` dead letter
    instead of being scored (and alerting) twice.
    """
    if state.last_window_id is not None and window_id <= state.last_window_id:
        summary = {
            "series": series,
            "window_start": rfc3339_ms(grid.start_ms(window_id)),
            "count": stats.count,
            "mean": stats.mean,
        }
        return DeadLetter(
            Reason.LATE_WINDOW,
            f"window {window_id} re-opened after window {state.last_window_id} was scored",
            msgspec.json.encode(summary),
            series.encode(),
        )
    state.last_window_id = window_id
    score = state.detector.observe(stats.mean)
    if score is None or not score.anomalous:
        return None
    cluster, host, metric = split_series_key(series)
    kind = spec_for(metric).anomaly_type.value
    start_ms = grid.start_ms(window_id)
    return Alert(
        alert_id=alert_id_for(series, start_ms, kind),
        type=kind,
        severity=severity_for(score.z, state.detector.config.z_threshold),
        host=host,
        cluster=cluster,
        metric=metric,
        window_start=rfc3339_ms(start_ms),
        window_end=rfc3339_ms(grid.end_ms(window_id)),
        value=stats.mean,
        expected=score.expected,
        score=score.z,
        detector=DETECTOR_NAME,
    )
