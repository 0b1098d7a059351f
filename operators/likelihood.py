"""Anomaly likelihood: how unusual a series' recent anomaly scores are for that series.

The post-processing the best NAB detectors rely on (Ahmad et al. 2017): raw scores in [0, 1]
are averaged over a short window; the long-run distribution of that average is modelled as a
Gaussian (mean and standard deviation over the last `history` averages, refreshed every
`refresh` steps); the likelihood is the Gaussian's lower tail at the current average,
L = 1 − Q((m − μ) / σ); and the reported score is its log-scale, log(1 − L) / log(1e−10),
which spreads the interesting region L ∈ [0.99, 1) over [0.2, 1]. Series whose raw scores are
always high (a noisy series) stop alerting; a rare high score on a quiet series stands out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

_LOG_EPS = math.log(1e-10)


@dataclass(frozen=True)
class LikelihoodConfig:
    short: int = 10
    """Raw scores averaged into one reading."""
    history: int = 1000
    """Readings the distribution is estimated from."""
    min_history: int = 300
    """Readings needed before the likelihood is computed (0.5 until then)."""
    refresh: int = 20
    min_std: float = 1e-4


class AnomalyLikelihood:
    """Per-series state: the recent raw scores and the averaged-score history. Picklable."""

    __slots__ = ("_filled", "_history", "_mu", "_pos", "_recent", "_sigma", "_since", "config")

    def __init__(self, config: LikelihoodConfig | None = None) -> None:
        self.config = c = config or LikelihoodConfig()
        self._recent: list[float] = []
        self._history = np.zeros(c.history, np.float64)
        self._filled = 0
        self._pos = 0
        self._since = c.refresh
        self._mu = 0.0
        self._sigma = 1.0

    def update(self, raw: float) -> float:
        """Add one raw score; return the log-likelihood score in [0, 1] (0.5 while learning)."""
        c = self.config
        self._recent.append(raw)
        if len(self._recent) > c.short:
            self._recent.pop(0)
        reading = sum(self._recent) / len(self._recent)
        self._history[self._pos] = reading
        self._pos = (self._pos + 1) % c.history
        self._filled = min(self._filled + 1, c.history)
        if self._filled < c.min_history:
            return 0.5
        self._since += 1
        if self._since >= c.refresh:
            past = self._history[: self._filled]
            self._mu = float(past.mean())
            self._sigma = max(float(past.std()), c.min_std)
            self._since = 0
        tail = 0.5 * math.erfc((reading - self._mu) / (self._sigma * math.sqrt(2.0)))
        likelihood = 1.0 - tail
        return min(1.0, math.log(1.0000000001 - likelihood) / _LOG_EPS)

    def __getstate__(self) -> tuple[object, ...]:
        return (
            self.config,
            self._recent,
            self._history,
            self._filled,
            self._pos,
            self._since,
            self._mu,
            self._sigma,
        )

    def __setstate__(self, state: tuple[object, ...]) -> None:
        (
            self.config,
            self._recent,
            self._history,
            self._filled,
            self._pos,
            self._since,
            self._mu,
            self._sigma,
        ) = state  # type: ignore[assignment]
