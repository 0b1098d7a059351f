"""Training data from the simulator and from series, through the very engine the flow runs.

A model trained on `feature_matrix(...)` sees the columns `FEATURE_NAMES` (version
`FEATURE_VERSION`) computed by the same code, in the same order, as the flow serves it; models
record both in their manifest. Needs only numpy (no torch); `simulator_series` also pandas.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from novacron_ml.core.features import FEATURE_NAMES, FEATURE_VERSION, FeatureConfig, FeatureWindow
from novacron_ml.core.labels import AnomalyLabel
from novacron_ml.core.schema import MetricEvent, parse_rfc3339_ms, split_series_key
from novacron_ml.core.simulator import METRIC_NAMES, FleetConfig, FleetSimulator
from operators.features.engine import FeatureEngine
from training import SIM_START

if TYPE_CHECKING:
    from training.series_io import Series

__all__ = [
    "FEATURE_NAMES",
    "FEATURE_VERSION",
    "SIM_START",
    "engine_windows",
    "feature_matrix",
    "feature_windows",
    "simulated_fleet",
    "simulated_windows",
    "simulator_series",
]


def engine_windows(
    events: Iterable[MetricEvent], engine: FeatureEngine, batch: int = 10_000
) -> list[FeatureWindow]:
    """Every window `engine` closes over `events` (in time order), then the still open ones;
    an event out of order beyond the lateness is an error, never silently dropped."""
    out: list[FeatureWindow] = []
    it = iter(events)
    while chunk := list(itertools.islice(it, batch)):
        windows, late = engine.ingest(chunk, now_ms=0)
        if late:
            raise ValueError(f"{len(late)} samples are out of time order beyond the lateness")
        out.extend(windows)
    out.extend(engine.flush())
    return out


def feature_windows(
    ts_ms: Sequence[int] | np.ndarray,
    values: Sequence[float] | np.ndarray,
    config: FeatureConfig | None = None,
    series: str = "offline/series/value",
    batch: int = 10_000,
) -> list[FeatureWindow]:
    """Every window of one series, in time order (events must be in time order)."""
    cluster, host, metric = split_series_key(series)
    events = (
        MetricEvent(int(t), host, cluster, metric, float(v))
        for t, v in zip(ts_ms, values, strict=True)
    )
    return engine_windows(events, FeatureEngine(config or FeatureConfig()), batch)


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


def simulated_fleet(
    hours: float, hosts: int, seed: int, start: str, anomalies_per_host_per_hour: float
) -> FleetSimulator:
    """The fleet every training command simulates: 5 s steps, up to three clusters."""
    return FleetSimulator(
        FleetConfig(
            hosts=hosts,
            clusters=min(3, hosts),
            step_s=5.0,
            duration_s=hours * 3600.0,
            seed=seed,
            anomalies_per_host_per_hour=anomalies_per_host_per_hour,
            start_ms=parse_rfc3339_ms(start),
        )
    )


def simulated_windows(
    hours: float, hosts: int, seed: int, start: str, anomalies_per_host_per_hour: float
) -> tuple[list[FeatureWindow], list[AnomalyLabel]]:
    """Every closed feature window of a simulated fleet, and the injected anomalies."""
    sim = simulated_fleet(hours, hosts, seed, start, anomalies_per_host_per_hour)
    engine = FeatureEngine(FeatureConfig(), capacity=hosts * 16)
    windows = engine_windows(sim.events(), engine, batch=50_000)
    return windows, sim.labels


def simulator_series(
    hours: float, hosts: int, seed: int, window_s: float, start: str = SIM_START
) -> list[Series]:
    """Steady-state simulated series (no injected anomalies) as the flow sees them: the mean
    of each `window_s` window of every (host, metric)."""
    from training.series_io import Series  # pandas: only for this

    sim = simulated_fleet(hours, hosts, seed, start, 0.0)
    t_parts, v_parts = [], []
    for t_ms, v in sim.ticks():
        t_parts.append(t_ms)
        v_parts.append(v)
    t_ms = np.concatenate(t_parts)
    v = np.concatenate(v_parts)  # (T, hosts, metrics)
    per = round(window_s / sim.config.step_s)
    n = len(t_ms) // per
    means = v[: n * per].reshape(n, per, *v.shape[1:]).mean(axis=1)
    t_s = t_ms[: n * per : per] / 1000.0
    out = []
    for h, (cluster, host) in enumerate(sim.hosts):
        for j, metric in enumerate(METRIC_NAMES):
            out.append(Series(f"{cluster}/{host}/{metric}", t_s, means[:, h, j], window_s, True))
    return out
