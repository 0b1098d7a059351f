"""The feature definition shared by the flow and `training/`: names, order, window config.

`operators.features.engine.FeatureEngine` computes these features; models trained offline
record `FEATURE_VERSION` and the order in their manifests (docs/FEATURES.md has every formula).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DAY_MS = 86_400_000

FEATURE_VERSION = 1
"""Bump whenever FEATURE_NAMES or a formula changes: models record the version they saw."""

FEATURE_NAMES: tuple[str, ...] = (
    # statistical, over the window's samples
    "count",
    "missing_ratio",
    "mean",
    "std",
    "min",
    "max",
    "p50",
    "p95",
    "p99",
    "skew",
    "kurtosis",
    "last",
    "rate_of_change",
    "robust_z_last",
    "ewma_fast",
    "ewma_slow",
    "ewma_gap",
    # temporal, at the window start (UTC)
    "hour_sin",
    "hour_cos",
    "dow_sin",
    "dow_cos",
    "is_weekend",
    # frequency, over the look-back buffer
    "dominant_period_s",
    "dominant_power",
    "spectral_entropy",
    # lagged
    "prev_mean_1",
    "prev_mean_2",
    "prev_mean_3",
    "diff_prev_1",
    "lag_1d",
    "lag_1w",
    "diff_1d",
    "diff_1w",
    "has_lag_1d",
    "has_lag_1w",
)
"""The stable feature order: the flow and `training/` both import it from here."""

FEATURE_INDEX: dict[str, int] = {name: i for i, name in enumerate(FEATURE_NAMES)}
N_FEATURES = len(FEATURE_NAMES)


@dataclass(frozen=True)
class FeatureConfig:
    window_s: float = 60.0
    slide_s: float | None = None
    """None: tumbling windows (slide = window)."""
    step_s: float = 5.0
    """Sampling grid: one value per series per step (the last one wins within a step)."""
    lookback_s: float = 3600.0
    """Buffer for the robust z and the FFT features."""
    lateness_s: float = 10.0
    idle_ttl_s: float = 3600.0
    """Series without events for this long (system time) are evicted."""
    ewma_fast_span: float = 6.0
    ewma_slow_span: float = 60.0
    bucket_s: float = 600.0
    """Resolution of the day/week lag history."""
    history_days: int = 7
    lookback_every: int = 5
    """Refresh the look-back statistics (median, MAD, spectrum) every this many windows (on
    window ids divisible by it, and for new series); 1 recomputes them for every window."""
    write_ahead_s: float = 600.0
    """Ring room beyond look-back + window + lateness; batches are cut into spans this long."""
    max_tombstones: int = 100_000
    max_series: int = 0
    """Live series at most (this engine: one shard); 0: no bound."""
    max_series_per_host: int = 0
    """Live series of one host at most; 0: no bound."""

    def __post_init__(self) -> None:
        step = self.step_ms
        if step <= 0:
            raise ValueError("step_s must be positive")
        for name in ("window_s", "lookback_s", "bucket_s"):
            ms = round(getattr(self, name) * 1000)
            if ms <= 0 or ms % step:
                raise ValueError(f"{name} must be a positive multiple of step_s")
        if self.slide_ms <= 0 or self.slide_ms % step or self.slide_ms > self.window_ms:
            raise ValueError("slide_s must be a multiple of step_s and at most window_s")
        if self.window_ms > self.lookback_ms or self.bucket_ms > self.lookback_ms:
            raise ValueError("window_s and bucket_s must not exceed lookback_s")
        if self.lookback_every < 1:
            raise ValueError("lookback_every must be >= 1")
        if self.history_days < 1 or self.n_slots > 65_536 or self.write_ahead_s <= 0:
            raise ValueError("need history_days >= 1, write_ahead_s > 0, ring <= 65536 slots")

    @property
    def step_ms(self) -> int:
        return round(self.step_s * 1000)

    @property
    def window_ms(self) -> int:
        return round(self.window_s * 1000)

    @property
    def slide_ms(self) -> int:
        return self.window_ms if self.slide_s is None else round(self.slide_s * 1000)

    @property
    def lateness_ms(self) -> int:
        return round(self.lateness_s * 1000)

    @property
    def lookback_ms(self) -> int:
        return round(self.lookback_s * 1000)

    @property
    def bucket_ms(self) -> int:
        return round(self.bucket_s * 1000)

    @property
    def lookback_slots(self) -> int:
        return self.lookback_ms // self.step_ms

    @property
    def n_slots(self) -> int:
        """Ring size: look-back plus room for samples written before a window closes."""
        room = self.window_ms + self.lateness_ms + round(self.write_ahead_s * 1000)
        return self.lookback_slots + -(-room // self.step_ms)

    @property
    def n_buckets(self) -> int:
        return self.history_days * DAY_MS // self.bucket_ms


@dataclass(frozen=True)
class SeriesEvicted:
    """The feature stage evicted an idle series (`features.idle_ttl_s`): the detect step drops
    its state too, closing an open alert episode first (flow-internal, never published)."""

    series: str


@dataclass(frozen=True)
class FeatureWindow:
    """One closed window of one series with its feature vector (float64, FEATURE_NAMES order)."""

    series: str
    start_ms: int
    end_ms: int
    features: np.ndarray
    raw_scores: dict[str, float] | None = None
    """Raw scores of tiers that score windows in batches upstream (the Isolation Forest)."""

    def __getitem__(self, name: str) -> float:
        return float(self.features[FEATURE_INDEX[name]])
