"""Alert explanations: which features of the window moved most against the series' own normal.

Each series keeps an exponentially weighted mean and variance of its feature vector (learned
only from windows that did not alert, like the other tiers). An alert lists the `top`
features with the largest |z| = |value − mean| / std, with the value and the baseline, so an
operator sees at a glance that, say, `p99` and `max` jumped while `mean` barely moved.
Calendar features and flags are not explained (they describe when, not what).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from novacron_ml.core.features import FEATURE_NAMES
from novacron_ml.core.schema import Contribution

_NOT_EXPLAINED = frozenset(
    {
        "count",
        "hour_sin",
        "hour_cos",
        "dow_sin",
        "dow_cos",
        "is_weekend",
        "has_lag_1d",
        "has_lag_1w",
    }
)
EXPLAINED_INDEX = np.array(
    [i for i, name in enumerate(FEATURE_NAMES) if name not in _NOT_EXPLAINED], np.int64
)


class FeatureBaseline:
    """Per-series EW mean/variance of the explained features. Picklable."""

    __slots__ = ("alpha", "mean", "n", "var")

    def __init__(self, alpha: float = 0.02) -> None:
        self.alpha = alpha
        self.mean = np.zeros(len(EXPLAINED_INDEX))
        self.var = np.zeros(len(EXPLAINED_INDEX))
        self.n = 0

    def learn(self, features: np.ndarray) -> None:
        x = features[EXPLAINED_INDEX]
        if self.n == 0:
            self.mean = x.copy()
        else:
            a = max(self.alpha, 1.0 / (self.n + 1))
            delta = x - self.mean
            self.mean += a * delta
            self.var = (1 - a) * (self.var + a * delta * delta)
        self.n += 1

    @staticmethod
    def learn_many(baselines: Sequence[FeatureBaseline], features: np.ndarray) -> None:
        """`learn` for several series' baselines at once (`features`: one window's row
        each): their rows stacked, updated as arrays, written back. The same floats as one
        by one."""
        if len(baselines) < 8:
            for baseline, x in zip(baselines, features, strict=True):
                baseline.learn(x)
            return
        x = features[:, EXPLAINED_INDEX]
        n = np.fromiter((b.n for b in baselines), np.int64, len(baselines))
        alpha = np.fromiter((b.alpha for b in baselines), np.float64, len(baselines))
        a = np.maximum(alpha, 1.0 / (n + 1))[:, None]
        mean = np.stack([b.mean for b in baselines])
        var = np.stack([b.var for b in baselines])
        delta = x - mean
        new_mean = mean + a * delta
        new_var = (1 - a) * (var + a * delta * delta)
        for b, first, x_row, m, v in zip(
            baselines, (n == 0).tolist(), x, new_mean, new_var, strict=True
        ):
            if first:
                b.mean = x_row.copy()
            else:
                b.mean, b.var = m.copy(), v.copy()
            b.n += 1

    def explain(self, features: np.ndarray, top: int = 3) -> list[Contribution]:
        """The `top` features by |z| (empty until a few windows were learned)."""
        if self.n < 5:
            return []
        x = features[EXPLAINED_INDEX]
        scale = np.sqrt(self.var)
        scale = np.maximum(scale, 1e-9 + 1e-6 * np.abs(self.mean))
        z = (x - self.mean) / scale
        order = np.argsort(-np.abs(z))[:top]
        return [
            Contribution(
                feature=FEATURE_NAMES[int(EXPLAINED_INDEX[i])],
                value=float(x[i]),
                baseline=float(self.mean[i]),
                z=round(float(z[i]), 3),
            )
            for i in order.tolist()
        ]

    def __getstate__(self) -> tuple[object, ...]:
        return (self.alpha, self.mean, self.n, self.var)

    def __setstate__(self, state: tuple[object, ...]) -> None:
        self.alpha, self.mean, self.n, self.var = state  # type: ignore[assignment]
