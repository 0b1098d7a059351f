"""Novelty tier: how far the series' latest shape is from everything it has shown before.

Each window contributes its mean; the last `embed` means form the series' current shape. The
raw score is the distance from that shape to its nearest neighbour among the last `history`
shapes (root mean square difference, divided by the range of values the series has shown so
far), the discord measure behind nearest-neighbour detectors such as KNN-CAD. It is calibrated
like every tier's raw score (`RankCalibrator`): the share of the series' own recent raw scores
below the current one, so a shape farther from the past than 99 % of recent shapes were
scores 0.99.

Shapes overlapping the current one (the last `embed` − 1) are not candidates, so a window is
never compared with itself. Cost per window: one `history` × `embed` distance computation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class NoveltyConfig:
    embed: int = 4
    """Window means per shape."""
    history: int = 1440
    """Past shapes searched (the NAB runner uses 25,000: every row of a NAB file)."""
    min_history: int = 100
    """Shapes needed before scoring (None until then)."""


@dataclass(frozen=True)
class CalibrationConfig:
    history: int = 1440
    """Past raw scores the rank is taken over."""
    min_ranked: int = 50
    """Raw scores needed before the rank is meaningful (0 until then)."""


class RankCalibrator:
    """A tier's raw scores → [0, 1]: the share of the series' recent raw scores below it.

    The empirical form of the anomaly-likelihood step (its tail probability over the recent
    score distribution, without the Gaussian assumption). Picklable.
    """

    __slots__ = ("_filled", "_pos", "_raw", "config")

    def __init__(self, config: CalibrationConfig | None = None) -> None:
        self.config = c = config or CalibrationConfig()
        self._raw = np.zeros(c.history, np.float64)
        self._filled = 0
        self._pos = 0

    def calibrate(self, raw: float) -> float:
        """Rank `raw` among the recent raw scores, then remember it."""
        c = self.config
        score = 0.0
        if self._filled >= c.min_ranked:
            score = float(np.count_nonzero(self._raw[: self._filled] < raw)) / self._filled
        self._raw[self._pos] = raw
        self._pos = (self._pos + 1) % c.history
        self._filled = min(self._filled + 1, c.history)
        return score

    def __getstate__(self) -> tuple[object, ...]:
        return (self.config, self._raw, self._filled, self._pos)

    def __setstate__(self, state: tuple[object, ...]) -> None:
        self.config, self._raw, self._filled, self._pos = state  # type: ignore[assignment]


class NoveltyDetector:
    """Per-series state: a ring buffer of past shapes and the running range. Picklable."""

    __slots__ = (
        "_filled",
        "_hi",
        "_lo",
        "_pending",
        "_pos",
        "_recent",
        "_shapes",
        "config",
    )

    def __init__(self, config: NoveltyConfig | None = None) -> None:
        self.config = c = config or NoveltyConfig()
        self._shapes = np.zeros((c.history, c.embed), np.float64)
        self._filled = 0
        self._pos = 0
        self._pending: list[np.ndarray] = []
        self._recent: list[float] = []
        self._lo = np.inf
        self._hi = -np.inf

    def observe(self, value: float) -> float | None:
        """Raw score of the window mean `value` (None while warming up), then learn its shape."""
        c = self.config
        self._lo = min(self._lo, value)
        self._hi = max(self._hi, value)
        if not self._recent:
            self._recent = [value] * c.embed
        else:
            self._recent.append(value)
            del self._recent[0]
        shape = np.array(self._recent)
        raw: float | None = None
        if self._filled >= c.min_history:
            span = self._hi - self._lo
            scale = span if span > 0 else 1.0
            past = self._shapes[: self._filled]
            diff = past - shape
            raw = float(np.sqrt(np.einsum("ij,ij->i", diff, diff).min() / c.embed)) / scale
        self._pending.append(shape)
        if len(self._pending) >= c.embed:
            self._shapes[self._pos] = self._pending.pop(0)
            self._pos = (self._pos + 1) % c.history
            self._filled = min(self._filled + 1, c.history)
        return raw

    def __getstate__(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __setstate__(self, state: tuple[object, ...]) -> None:
        for name, value in zip(self.__slots__, state, strict=True):
            setattr(self, name, value)
