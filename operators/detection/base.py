"""The detector interface: every detection tier is one small class behind `Detector`.

In the spirit of River's two verbs, batch-first: a tier scores a batch of closed windows
from many series at once, each with its series' own state, then learns them. The tier
object itself is configuration only (frozen, picklable, shared by every series); the
per-series state it creates with `new_state` is what goes into recovery snapshots.

    score_batch(states, windows) -> one score per window (None while the series warms up)
    learn_batch(states, windows, scores, flagged)   # flagged: the decision called it anomalous

`score_batch` never changes a state; `learn_batch` is told the scores it returned and which
windows the decision flagged, so a tier can keep anomalies out of its reference (River's
AnomalyFilter) or learn every window. `raw(score)` is the one number the combined
probability ranks (`operators.detection.calibration`).

Adding a detector: a module in this package with a class implementing `Detector`, and its
registration line in `operators.detection.registry.DETECTORS`;
`tests/operators/test_detector_conformance.py` then runs the conformance checks on it
(score is pure, pickle round-trip and resume from a snapshot, a batch equals the same windows
one by one, bounded state). Where it runs: per series in `operators.detection.series.Tiers`
(robust z, novelty, River), or upstream on a shard's batch like the Isolation Forest; its
name in `novacron_ml.core.settings.DETECTION_TIERS` lets settings combine its score.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Protocol

import numpy as np

from novacron_ml.core.features import FeatureWindow


class Detector(Protocol):
    name: ClassVar[str]

    def new_state(self, series: str) -> Any:
        """A new series' state (None for a stateless tier)."""
        ...

    def score_batch(self, states: Sequence[Any], windows: Sequence[FeatureWindow]) -> list[Any]:
        """One score per window, each against its own series' state; no state changes."""
        ...

    def learn_batch(
        self,
        states: Sequence[Any],
        windows: Sequence[FeatureWindow],
        scores: Sequence[Any],
        flagged: Sequence[bool],
    ) -> None:
        """Learn the windows just scored (`scores` as `score_batch` returned them)."""
        ...

    def raw(self, score: Any) -> float | None:
        """The score as one raw number (higher = more anomalous), None while warming up."""
        ...


def score_one(detector: Detector, state: Any, window: FeatureWindow) -> Any:
    """`score_batch` on a batch of one (the per-series step)."""
    return detector.score_batch((state,), (window,))[0]


def learn_one(
    detector: Detector, state: Any, window: FeatureWindow, score: Any, flagged: bool
) -> None:
    detector.learn_batch((state,), (window,), (score,), (flagged,))


def resized_ring(ring: np.ndarray, pos: int, filled: int, size: int) -> tuple[np.ndarray, int]:
    """A ring buffer on its last axis (`pos`: the next slot written, `filled`: the values held)
    as a ring of `size` slots holding its newest min(filled, size) values, oldest first from
    slot 0, and how many it holds (the next slot is that count modulo `size`). The same
    layout a fresh ring has after learning those values in order: what a detector restored
    under a changed history length continues from (`operators.detection.series.adopt_settings`)."""
    ordered = np.roll(ring, -pos, axis=-1)[..., ring.shape[-1] - filled :]
    kept = min(filled, size)
    out = np.zeros((*ring.shape[:-1], size), dtype=ring.dtype)
    out[..., :kept] = ordered[..., filled - kept :]
    return out, kept
