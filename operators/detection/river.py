"""River tier: HalfSpaceTrees per series on the window's scale-free feature vector.

The inputs are the Isolation Forest's (`operators.iforest.iforest_inputs`: ratios to the
series' level and spread, shape statistics), scaled online into [0, 1] by River's
`MinMaxScaler` as HalfSpaceTrees requires. The raw score is HalfSpaceTrees' (0 while its first
reference window fills); the per-series step calibrates it like every tier and, with River's
AnomalyFilter semantics, only learns windows whose calibrated score stayed below the firing
probability, so anomalies do not become the reference. About 270 µs per window
(bench_detect.py) and ~74 KB of a series' pickled state after 2,000 windows (docs/STATE.md)
with the defaults below (10 trees of height 6, reference window 250).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from river import anomaly, compose, preprocessing

from operators.features.scale_free import IFOREST_INPUTS, iforest_inputs


@dataclass(frozen=True)
class RiverConfig:
    n_trees: int = 10
    height: int = 6
    window_size: int = 250
    seed: int = 0


class RiverTier:
    """Per-series River pipeline. Picklable (River models are)."""

    __slots__ = ("model",)

    def __init__(self, config: RiverConfig | None = None) -> None:
        c = config or RiverConfig()
        self.model = compose.Pipeline(
            preprocessing.MinMaxScaler(),
            anomaly.HalfSpaceTrees(
                n_trees=c.n_trees, height=c.height, window_size=c.window_size, seed=c.seed
            ),
        )

    @staticmethod
    def inputs(features: np.ndarray) -> dict[str, float]:
        row = iforest_inputs(features)[0]
        return dict(zip(IFOREST_INPUTS, row.tolist(), strict=True))

    def score(self, x: dict[str, float]) -> float:
        return float(self.model.score_one(x))

    def learn(self, x: dict[str, float]) -> None:
        self.model.learn_one(x)

    def __getstate__(self) -> object:
        return self.model

    def __setstate__(self, state: compose.Pipeline) -> None:
        self.model = state
