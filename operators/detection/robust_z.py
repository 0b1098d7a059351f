"""The statistical tier: a robust z-score of each window's mean against the series' own past.

The baseline is the median of the last `history_windows` window means and the scale is
1.4826 × MAD (the normal-consistent median absolute deviation), floored at `relative_floor` ×
|median| (1 %) so that near-constant series do not alert on rounding noise; that floor also
says a change under ~6 % of a level is no anomaly, so `relative_floor` 0 floors the scale at
the baseline's resolution instead (the smallest step between two of its distinct values, or
`FLAT_FLOOR` × |median| while they are all the same): what a MAD cannot see, not a size of
change. While the baseline has fewer than `history_windows` values the scale is widened by
`warmup_widening`: a width estimated from a few windows is itself uncertain. Anomalous windows
are kept out of the baseline (River's AnomalyFilter semantics) until `adapt_after_windows` of
them in a row show the level has really moved, at which point it is learned.
docs/DETECTION.md, "Robust z's scale".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import ClassVar, NamedTuple

import numpy as np

from novacron_ml.core.catalogue import DEFAULT_CATALOGUE, Catalogue
from novacron_ml.core.features import FeatureWindow
from novacron_ml.core.schema import Severity, split_series_key
from operators.detection.base import resized_ring

MAD_TO_SIGMA = 1.4826
_ABS_FLOOR = 1e-9
FLAT_FLOOR = 0.01
"""The scale's floor, as a share of |median|, while every value of the baseline is the same:
its resolution is not known yet (a series that has not moved alerts past 6 % of its level)."""
_SAME = 1e-6
"""Two baseline values closer than this share of |median| are the same value (the float
rounding of a mean of equal samples), not a step of the series' resolution."""


@dataclass(frozen=True)
class RobustZConfig:
    z_threshold: float = 6.0
    history_windows: int = 60
    min_history: int = 12
    relative_floor: float = 0.01
    """The scale's floor as a share of |median| (0: the baseline's resolution instead)."""
    adapt_after_windows: int = 30
    warmup: bool = True
    """Widen the scale of a baseline that is not full yet (`warmup_widening`)."""


@lru_cache(maxsize=16)
def warmup_widening(z_threshold: float, history_windows: int) -> np.ndarray:
    """Per number of baseline values n (the index), the factor a warming baseline's scale is
    widened by: the Student-t predictive quantile at robust z's threshold for n values over
    the same for a full baseline, t(n-1)·sqrt(1 + 1/n) / t(N-1)·sqrt(1 + 1/N) at the normal
    tail probability of `z_threshold`. A new value then needs about the same evidence against
    a baseline of 12 windows as against a full one (for Gaussian noise; a MAD is a less
    efficient estimate than a standard deviation, so this is, if anything, too little). At
    robust z's defaults (6, 60 windows): 2.58 at 12 values, 1.53 at 20, 1.22 at 30, 1.0 at 60."""
    from scipy.special import ndtr, stdtrit  # imported once per configuration

    tail = float(ndtr(-z_threshold))

    def quantile(n: int) -> float:
        return float(-stdtrit(n - 1, tail)) * math.sqrt(1.0 + 1.0 / n)

    full = quantile(history_windows)
    table = np.ones(history_windows + 1)
    table[2:] = [quantile(n) / full for n in range(2, history_windows + 1)]
    return table


def resolution(ordered: np.ndarray, median: np.ndarray) -> np.ndarray:
    """Per row of sorted baselines (unfilled slots +inf, last): the smallest step between two
    distinct values, or `FLAT_FLOOR` × |median| where all are the same."""
    with np.errstate(invalid="ignore"):  # inf - inf between unfilled slots
        steps = np.diff(ordered, axis=-1)
    same = _SAME * np.abs(median)[..., None] + _ABS_FLOOR
    steps[~(steps > same) | ~np.isfinite(steps)] = np.inf
    step = steps.min(axis=-1)
    return np.where(np.isfinite(step), step, FLAT_FLOOR * np.abs(median))


def scale_of(
    config: RobustZConfig,
    mad: np.ndarray,
    ordered: np.ndarray,
    median: np.ndarray,
    filled: np.ndarray,
) -> np.ndarray:
    """Robust z's scale for sorted baselines: 1.4826 × MAD floored at `relative_floor` ×
    |median| (at 0, at their resolution), widened while warming up (the module's docstring)."""
    floor = (
        config.relative_floor * np.abs(median)
        if config.relative_floor > 0
        else resolution(ordered, median)
    )
    scale = np.maximum(np.maximum(MAD_TO_SIGMA * mad, floor), _ABS_FLOOR)
    if config.warmup:
        scale = scale * warmup_widening(config.z_threshold, config.history_windows)[filled]
    return scale


class Score(NamedTuple):
    """One value's robust z (a named tuple: one is made per window and tier)."""

    z: float
    """Signed robust z of the value against the baseline."""
    expected: float
    """The baseline (median of past window means)."""
    anomalous: bool
    bad: float = 0.0
    """How far in the bad direction: |z| for two-sided metrics, else z past 0 that way."""


class RobustZDetector:
    """Per-series state: a ring buffer of past window means. Picklable for snapshots."""

    __slots__ = (
        "_filled",
        "_history",
        "_pos",
        "_streak",
        "config",
        "direction",
        "threshold_scale",
    )

    def __init__(self, config: RobustZConfig, direction: int = 0) -> None:
        self.config = config
        self.direction = direction
        self._history = np.zeros(config.history_windows, dtype=np.float64)
        self._filled = 0
        self._pos = 0
        self._streak = 0
        self.threshold_scale = 1.0
        """Operator feedback widens (false positives) or restores the threshold per series."""

    @property
    def threshold(self) -> float:
        return self.config.z_threshold * self.threshold_scale

    @property
    def warm(self) -> bool:
        return self._filled >= self.config.min_history

    def score(self, value: float) -> Score | None:
        """Score without learning; None while the series is still warming up."""
        if not self.warm:
            return None
        config, filled = self.config, self._filled
        past = self._history[:filled]
        median = _median(past)
        mad = _median(np.abs(past - median))
        if config.relative_floor > 0:  # `scale_of` in plain floats: the same values, faster
            floor = config.relative_floor * abs(median)
        else:
            floor = float(resolution(np.sort(past), np.asarray(median)))
        scale = max(MAD_TO_SIGMA * mad, floor, _ABS_FLOOR)
        if config.warmup and filled < config.history_windows:
            scale *= float(warmup_widening(config.z_threshold, config.history_windows)[filled])
        z = (value - median) / scale
        if self.direction > 0:
            anomalous = z > self.threshold
        elif self.direction < 0:
            anomalous = z < -self.threshold
        else:
            anomalous = abs(z) > self.threshold
        bad = abs(z) if self.direction == 0 else max(self.direction * z, 0.0)
        return Score(z, median, anomalous, bad)

    def learn(self, value: float, anomalous: bool) -> None:
        """Add a window to the baseline unless it was anomalous (and the level has not moved)."""
        if anomalous:
            self._streak += 1
            if self._streak < self.config.adapt_after_windows:
                return
        else:
            self._streak = 0
        self._history[self._pos] = value
        self._pos = (self._pos + 1) % self.config.history_windows
        self._filled = min(self._filled + 1, self.config.history_windows)

    def observe(self, value: float) -> Score | None:
        """Score, then learn: the per-window step of the flow."""
        result = self.score(value)
        self.learn(value, result is not None and result.anomalous)
        return result

    def adopt(self, config: RobustZConfig, direction: int) -> None:
        """Score from now on with `config` and `direction` (a series restored from a snapshot
        taken under other settings); a changed history length keeps the newest windows."""
        if config.history_windows != self.config.history_windows:
            self._history, self._filled = resized_ring(
                self._history, self._pos, self._filled, config.history_windows
            )
            self._pos = self._filled % config.history_windows
        self.config, self.direction = config, direction

    def __getstate__(self) -> tuple[RobustZConfig, int, np.ndarray, int, int, int, float]:
        return (
            self.config,
            self.direction,
            self._history,
            self._filled,
            self._pos,
            self._streak,
            self.threshold_scale,
        )

    def __setstate__(
        self, state: tuple[RobustZConfig, int, np.ndarray, int, int, int, float]
    ) -> None:
        (
            self.config,
            self.direction,
            self._history,
            self._filled,
            self._pos,
            self._streak,
            self.threshold_scale,
        ) = state


def score_many(detectors: Sequence[RobustZDetector], values: Sequence[float]) -> list[Score | None]:
    """`RobustZDetector.score` for many series at once (one value each, no state changes):
    their rings stacked as rows, medians and MADs as one sort per row. The same floats as
    scoring one by one (the medians are the same order statistics, the arithmetic the same
    operations), without a Python-level numpy call per series."""
    out: list[Score | None] = [None] * len(detectors)
    warm = [i for i, d in enumerate(detectors) if d.warm]
    if len(warm) < _VECTOR_FROM or len({detectors[i].config for i in warm}) > 1:
        for i in warm:
            out[i] = detectors[i].score(values[i])
        return out
    dets = [detectors[i] for i in warm]
    config = dets[0].config
    history = np.stack([d._history for d in dets])
    filled = np.fromiter((d._filled for d in dets), np.int64, len(dets))
    if int(filled.min()) < config.history_windows:  # unfilled slots sort last
        history[np.arange(config.history_windows) >= filled[:, None]] = np.inf
    rows = np.arange(len(dets))
    lo, hi = (filled - 1) // 2, filled // 2
    ordered = np.sort(history, axis=1)
    median = (ordered[rows, lo] + ordered[rows, hi]) / 2
    spread = np.abs(history - median[:, None])
    spread.sort(axis=1)
    mad = (spread[rows, lo] + spread[rows, hi]) / 2
    scale = scale_of(config, mad, ordered, median, filled)
    z_all = (np.fromiter((values[i] for i in warm), np.float64, len(warm)) - median) / scale
    for i, d, z, expected in zip(warm, dets, z_all.tolist(), median.tolist(), strict=True):
        direction, threshold = d.direction, d.threshold
        if direction > 0:
            anomalous = z > threshold
        elif direction < 0:
            anomalous = z < -threshold
        else:
            anomalous = abs(z) > threshold
        bad = abs(z) if direction == 0 else max(direction * z, 0.0)
        out[i] = Score(z, expected, anomalous, bad)
    return out


_VECTOR_FROM = 4
"""Below this many warm series, scoring one by one is cheaper than stacking their rings."""


def _median(values: np.ndarray) -> float:
    """np.median without its overhead (no NaN handling needed: the history is finite)."""
    n = len(values)
    k = n // 2
    if n % 2:
        return float(np.partition(values, k)[k])
    part = np.partition(values, (k - 1, k))
    return float((part[k - 1] + part[k]) / 2)


def severity_for(z: float, threshold: float) -> Severity:
    """Severity band by how far past the threshold the score is."""
    ratio = abs(z) / threshold
    if ratio >= 4.0:
        return Severity.CRITICAL
    if ratio >= 2.5:
        return Severity.HIGH
    if ratio >= 1.5:
        return Severity.MEDIUM
    return Severity.LOW


@dataclass(frozen=True)
class RobustZTier:
    """The statistical tier as a `Detector`: robust z of the window mean, per series."""

    name: ClassVar[str] = "robust_z"
    config: RobustZConfig = field(default_factory=RobustZConfig)
    catalogue: Catalogue = DEFAULT_CATALOGUE
    """Which direction of each metric is bad."""

    def new_state(self, series: str) -> RobustZDetector:
        _, _, metric = split_series_key(series)
        return RobustZDetector(self.config, self.catalogue.spec_for(metric).bad_direction)

    def score_batch(
        self, states: Sequence[RobustZDetector], windows: Sequence[FeatureWindow]
    ) -> list[Score | None]:
        return score_many(states, [w["mean"] for w in windows])

    def learn_batch(
        self,
        states: Sequence[RobustZDetector],
        windows: Sequence[FeatureWindow],
        scores: Sequence[Score | None],
        flagged: Sequence[bool],
    ) -> None:
        # its own filter: a window past its threshold stays out (until the level has moved)
        for s, w, score in zip(states, windows, scores, strict=True):
            s.learn(w["mean"], score is not None and score.anomalous)

    def raw(self, score: Score | None) -> float | None:
        return None if score is None else score.bad
