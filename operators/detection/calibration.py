"""Rank calibration: every tier's raw score on one scale, [0, 1], per series."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from operators.detection.base import resized_ring


@dataclass(frozen=True)
class CalibrationConfig:
    history: int = 1440
    """Past raw scores the rank is taken over."""
    min_ranked: int = 50
    """Raw scores needed before the rank is meaningful (0 until then)."""


class RankCalibrator:
    """A tier's raw scores → [0, 1]: the share of the series' recent raw scores below it.

    The empirical form of the anomaly-likelihood step (its tail probability over the recent
    score distribution, without the Gaussian assumption). Picklable. The ring is float32 (half
    the state); a new raw score is compared with it as float32 too, so a score equal to a
    remembered one stays a tie (a float32 copy of it compared in float64 could fall below).
    """

    __slots__ = ("_filled", "_pos", "_raw", "config")

    def __init__(self, config: CalibrationConfig | None = None) -> None:
        self.config = c = config or CalibrationConfig()
        self._raw = np.zeros(c.history, np.float32)
        self._filled = 0
        self._pos = 0

    @property
    def ready(self) -> bool:
        """Enough raw scores remembered for a meaningful rank (`min_ranked`)."""
        return self._filled >= self.config.min_ranked

    def rank(self, raw: float) -> float:
        """The share of the recent raw scores below `raw` (0 until `ready`); remembers nothing."""
        if self._filled < self.config.min_ranked:
            return 0.0
        return float(np.count_nonzero(self._raw[: self._filled] < np.float32(raw))) / self._filled

    def remember(self, raw: float) -> None:
        c = self.config
        self._raw[self._pos] = raw
        self._pos = (self._pos + 1) % c.history
        self._filled = min(self._filled + 1, c.history)

    def calibrate(self, raw: float) -> float:
        """Rank `raw` among the recent raw scores, then remember it."""
        score = self.rank(raw)
        self.remember(raw)
        return score

    def adopt(self, config: CalibrationConfig) -> None:
        """Rank from now on over `config.history` raw scores (a restored series under other
        settings): a changed length keeps the newest."""
        if config.history != self.config.history:
            self._raw, self._filled = resized_ring(
                self._raw, self._pos, self._filled, config.history
            )
            self._pos = self._filled % config.history
        self.config = config

    def __getstate__(self) -> tuple[object, ...]:
        return (self.config, self._raw, self._filled, self._pos)

    def __setstate__(self, state: tuple[object, ...]) -> None:
        self.config, self._raw, self._filled, self._pos = state  # type: ignore[assignment]


CHUNK = 256
"""Calibrators whose rings are stacked into one comparison (1440 float32 each by default)."""


def rank_many(calibrators: Sequence[RankCalibrator], raws: Sequence[float]) -> list[float]:
    """`RankCalibrator.rank` of many calibrators at once (one raw score each, nothing
    remembered): their rings stacked, one comparison and count per chunk. The same ranks as
    one by one."""
    out = [0.0] * len(calibrators)
    ready = [i for i, c in enumerate(calibrators) if c.ready]
    if len(ready) < 4 or len({calibrators[i].config.history for i in ready}) > 1:
        for i in ready:
            out[i] = calibrators[i].rank(raws[i])
        return out
    history = calibrators[ready[0]].config.history
    for start in range(0, len(ready), CHUNK):
        chunk = ready[start : start + CHUNK]
        rings = np.stack([calibrators[i]._raw for i in chunk])
        filled = np.fromiter((calibrators[i]._filled for i in chunk), np.int64, len(chunk))
        raw = np.fromiter((raws[i] for i in chunk), np.float32, len(chunk))
        below = rings < raw[:, None]
        if int(filled.min()) < history:  # only the remembered part of each ring counts
            below &= np.arange(history) < filled[:, None]
        counts = np.count_nonzero(below, axis=1)
        for i, count, n in zip(chunk, counts.tolist(), filled.tolist(), strict=True):
            out[i] = float(count) / n
    return out
