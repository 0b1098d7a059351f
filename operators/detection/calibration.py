"""Rank calibration: every tier's raw score on one scale, [0, 1], per series."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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
