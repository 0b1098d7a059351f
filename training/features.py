"""Offline feature matrices through the very engine the streaming flow runs.

A model trained on `feature_matrix(...)` sees the columns `FEATURE_NAMES` (version
`FEATURE_VERSION`) computed by the same code, in the same order, as the flow serves it; models
record both in their manifest. Needs only numpy (no torch).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from novacron_ml.core.features import FEATURE_NAMES, FEATURE_VERSION, FeatureConfig, FeatureWindow
from novacron_ml.core.schema import MetricEvent, split_series_key
from operators.features.engine import FeatureEngine

__all__ = ["FEATURE_NAMES", "FEATURE_VERSION", "feature_matrix", "feature_windows"]


def feature_windows(
    ts_ms: Sequence[int] | np.ndarray,
    values: Sequence[float] | np.ndarray,
    config: FeatureConfig | None = None,
    series: str = "offline/series/value",
    batch: int = 10_000,
) -> list[FeatureWindow]:
    """Every window of one series, in time order (events must be in time order)."""
    cluster, host, metric = split_series_key(series)
    engine = FeatureEngine(config or FeatureConfig())
    ts_list = [int(t) for t in ts_ms]
    val_list = [float(v) for v in values]
    out: list[FeatureWindow] = []
    for i in range(0, len(ts_list), batch):
        events = [
            MetricEvent(t, host, cluster, metric, v)
            for t, v in zip(ts_list[i : i + batch], val_list[i : i + batch], strict=True)
        ]
        windows, late = engine.ingest(events, now_ms=0)
        if late:
            raise ValueError(f"{len(late)} samples are out of time order beyond the lateness")
        out.extend(windows)
    out.extend(engine.flush())
    return out


def feature_matrix(
    ts_ms: Sequence[int] | np.ndarray,
    values: Sequence[float] | np.ndarray,
    config: FeatureConfig | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(window starts in ms, matrix windows × len(FEATURE_NAMES)) for one series."""
    windows = feature_windows(ts_ms, values, config)
    if not windows:
        return np.zeros(0, np.int64), np.zeros((0, len(FEATURE_NAMES)))
    starts = np.array([w.start_ms for w in windows], np.int64)
    return starts, np.stack([w.features for w in windows])
