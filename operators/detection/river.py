"""River tier: HalfSpaceTrees per series on the window's scale-free feature vector.

The inputs are the Isolation Forest's (`operators.features.scale_free.iforest_inputs`: ratios to the
series' level and spread, shape statistics), scaled online into [0, 1] by River's
`MinMaxScaler` as HalfSpaceTrees requires. The raw score is HalfSpaceTrees' (0 while its first
reference window fills); the per-series step calibrates it like every tier and, with River's
AnomalyFilter semantics, only learns windows whose calibrated score stayed below the firing
probability, so anomalies do not become the reference. About 270 µs per window
(bench_detect.py) and ~74 KB of a series' pickled state after 2,000 windows (docs/STATE.md)
with the defaults below (10 trees of height 6, reference window 250).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar, NamedTuple

import numpy as np
from river import anomaly, compose, preprocessing

from novacron_ml.core.features import FeatureWindow
from operators.features.scale_free import IFOREST_INPUTS, iforest_inputs


@dataclass(frozen=True)
class RiverConfig:
    n_trees: int = 10
    height: int = 6
    window_size: int = 250
    seed: int = 0


class RiverModel:
    """Per-series River pipeline (a `RiverTier` state). Picklable (River models are)."""

    __slots__ = ("model",)

    def __init__(self, config: RiverConfig | None = None) -> None:
        c = config or RiverConfig()
        self.model = compose.Pipeline(
            preprocessing.MinMaxScaler(),
            anomaly.HalfSpaceTrees(
                n_trees=c.n_trees, height=c.height, window_size=c.window_size, seed=c.seed
            ),
        )

    def score(self, x: dict[str, float]) -> float:
        return float(self.model.score_one(x))

    def learn(self, x: dict[str, float]) -> None:
        self.model.learn_one(x)

    def __getstate__(self) -> object:
        return self.model

    def __setstate__(self, state: compose.Pipeline) -> None:
        self.model = state


class RiverScore(NamedTuple):
    raw: float
    x: dict[str, float]
    """The inputs it scored (learned later, or held for operator feedback)."""


def river_inputs(windows: Sequence[FeatureWindow]) -> list[dict[str, float]]:
    """The scale-free inputs of a batch of windows, one numpy pass, as River's dicts."""
    rows = iforest_inputs(np.stack([w.features for w in windows])).tolist()
    return [dict(zip(IFOREST_INPUTS, row, strict=True)) for row in rows]


@dataclass(frozen=True)
class RiverTier:
    """HalfSpaceTrees as a `Detector`; learns only windows the decision did not flag."""

    name: ClassVar[str] = "river"
    config: RiverConfig = field(default_factory=RiverConfig)

    def new_state(self, series: str) -> RiverModel:
        return RiverModel(self.config)

    def score_batch(
        self, states: Sequence[RiverModel], windows: Sequence[FeatureWindow]
    ) -> list[RiverScore]:
        if not windows:
            return []
        xs = river_inputs(windows)
        return [RiverScore(s.score(x), x) for s, x in zip(states, xs, strict=True)]

    def learn_batch(
        self,
        states: Sequence[RiverModel],
        windows: Sequence[FeatureWindow],
        scores: Sequence[RiverScore],
        flagged: Sequence[bool],
    ) -> None:
        for s, score, bad in zip(states, scores, flagged, strict=True):
            if not bad:  # AnomalyFilter: anomalies never become the reference
                s.learn(score.x)

    def raw(self, score: RiverScore) -> float:
        return score.raw
