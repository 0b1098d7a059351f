"""Novelty tier: how far the series' latest shapes are from everything it has shown before.

Each window contributes its mean. At each scale s (`NoveltyConfig.scales`, default 1, 2 and 4
windows) the last s means form the series' current shape, and the scale's raw score is the
distance from that shape to its nearest neighbour among the series' earlier shapes (root mean
square difference, divided by the range of values the series has shown so far): the discord
measure behind nearest-neighbour detectors such as KNN-CAD, taken at several resolutions. A
lone spike is far from every earlier value (scale 1); a changed rhythm is far only as a shape
(scales 2 and 4). Each scale's raw score is calibrated on its own (`RankCalibrator`: the share
of the series' recent raw scores at that scale below the current one) and the tier's score is
the mean of the scales' ranks, so a window must look new at several resolutions to score near
1. Shapes that overlap the current one at a scale are not its candidates, so a window is never
compared with itself.

Cost per window: one `history` × max(scales) difference, summed per scale.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from novacron_ml.core.features import FeatureWindow


@dataclass(frozen=True)
class NoveltyConfig:
    scales: tuple[int, ...] = (1, 2, 4)
    """Window means per shape, one shape (and one raw score) per scale."""
    history: int = 1440
    """Past shapes searched (the NAB runner uses 25,000: every row of a NAB file)."""
    min_history: int = 100
    """Shapes needed before scoring (None until then)."""

    def __post_init__(self) -> None:
        if not self.scales or min(self.scales) < 1 or len(set(self.scales)) != len(self.scales):
            raise ValueError(f"novelty scales must be distinct positive integers: {self.scales}")
        if self.min_history < max(self.scales) or self.history <= self.min_history:
            raise ValueError("novelty needs largest scale <= min_history < history")

    @property
    def longest(self) -> int:
        return max(self.scales)


class NoveltyDetector:
    """Per-series state: the past shapes (the longest scale's; shorter scales use their last
    positions) and the running range. Picklable.

    A shape is the means of consecutive windows, so the shapes are kept as one ring of window
    means (`_means`, float64: the slot of a shape holds its newest mean) and rebuilt from it,
    shape at slot p = the means of slots p - longest + 1 .. p, exactly. The few shapes that
    the ring cannot rebuild are kept whole in `_except`: the first longest - 1 (padded with
    the first mean), those that include windows held out of the ring (`skip`), and those whose
    earlier slots are about to be overwritten (the oldest longest - 1 of a full ring). So the
    shapes take `history` floats (11.5 KB at the defaults), not `history` × longest (46 KB);
    a float32 ring of whole shapes moved NAB's alert rows (61.70 -> 61.53), this is exact."""

    __slots__ = ("_except", "_filled", "_hi", "_lo", "_means", "_pos", "_recent", "config")

    def __init__(self, config: NoveltyConfig | None = None) -> None:
        self.config = c = config or NoveltyConfig()
        self._means = np.zeros(c.history, np.float64)
        self._except: dict[int, tuple[float, ...]] = {}
        self._filled = 0
        self._pos = 0
        self._recent: list[float] = []
        self._lo = np.inf
        self._hi = -np.inf

    def _next(self, value: float) -> tuple[float, float, list[float]]:
        """The range and the latest means once `value` is added (nothing changes yet)."""
        lo, hi = min(self._lo, value), max(self._hi, value)
        if not self._recent:
            return lo, hi, [value] * self.config.longest
        return lo, hi, [*self._recent[1:], value]

    def _rebuilt(self, slot: int) -> tuple[float, ...]:
        """The shape at `slot` as the ring of means rebuilds it."""
        first = slot - self.config.longest + 1
        if first >= 0:
            return tuple(self._means[first : slot + 1].tolist())
        return tuple(self._means[first:].tolist() + self._means[: slot + 1].tolist())

    def past_shapes(self) -> np.ndarray:
        """Every filled slot's shape, one row per position in a shape (longest × filled)."""
        return past_shapes(self._means[None], [self._except], self.config.longest)[0][
            :, : self._filled
        ]

    def score(self, value: float) -> tuple[float, ...] | None:
        """Raw score per scale of the window mean `value`, in `config.scales` order (None
        while warming up); learns nothing."""
        c = self.config
        if self._filled < c.min_history:
            return None
        lo, hi, recent = self._next(value)
        shape = np.array(recent)
        span = hi - lo
        scale = span if span > 0 else 1.0
        past = self.past_shapes()
        wanted = set(c.scales)
        found: dict[int, float] = {}
        total = np.zeros(self._filled)
        # add the squared differences position by position from the newest: after k
        # positions, `total` is every past shape's squared distance over its last k means
        for k in range(1, c.longest + 1):
            row = past[c.longest - k] - shape[c.longest - k]
            total += row * row
            if k in wanted:
                d = total
                if k > 1:  # the k - 1 latest shapes overlap the current one at this scale
                    d = total.copy()
                    d[(self._pos - np.arange(1, k)) % c.history] = np.inf
                found[k] = float(np.sqrt(d.min() / k)) / scale
        return tuple(found[s] for s in c.scales)

    def learn(self, value: float) -> None:
        """Add the window mean `value`: the range, the latest shape, the ring of shapes."""
        c = self.config
        self._lo, self._hi, self._recent = self._next(value)
        pos = self._pos
        for j in range(1, c.longest):  # filled shapes that rebuild from this slot: keep them
            later = (pos + j) % c.history
            if later < self._filled and later not in self._except:
                self._except[later] = self._rebuilt(later)
        self._except.pop(pos, None)
        self._means[pos] = value
        shape = tuple(self._recent)
        if shape != self._rebuilt(pos):
            self._except[pos] = shape
        self._pos = (pos + 1) % c.history
        self._filled = min(self._filled + 1, c.history)

    def skip(self, value: float) -> None:
        """A window held out of the reference (inside an alert episode): the current shape
        moves on to include it, but neither the range nor the ring of shapes learns it, so
        a recurrence of the anomaly still looks new."""
        self._recent = self._next(value)[2]

    def observe(self, value: float) -> tuple[float, ...] | None:
        """Score, then learn: the per-window step."""
        raws = self.score(value)
        self.learn(value)
        return raws

    def adopt(self, config: NoveltyConfig) -> bool:
        """Score from now on with `config` (a restored series under other settings). False,
        changing nothing, where its scales or history length changed: the ring of shapes and
        their ranks were built for the old ones (the series then starts the tier over)."""
        if config.scales != self.config.scales or config.history != self.config.history:
            return False
        self.config = config
        return True

    def __getstate__(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __setstate__(self, state: tuple[object, ...]) -> None:
        if len(state) == 7 and isinstance(state[5], np.ndarray) and state[5].ndim == 2:
            # the ring of whole shapes (before issue 18): the same shapes, rebuilt exactly
            filled, hi, lo, pos, recent, _, config = state
            shapes = np.asarray(state[5])
            self.__init__(config)  # type: ignore[misc]
            self._filled, self._hi, self._lo, self._pos = filled, hi, lo, pos  # type: ignore[assignment]
            self._recent = recent  # type: ignore[assignment]
            self._means[:] = shapes[-1]
            for slot in range(self._filled):
                shape = tuple(float(x) for x in shapes[:, slot])
                if shape != self._rebuilt(slot):
                    self._except[slot] = shape
            return
        if len(state) != len(self.__slots__) or not isinstance(state[0], dict):
            # a snapshot from before the multi-scale tier (one `embed`, a pending queue): its
            # shapes do not fit; start over with its history sizes (relearns in min_history)
            old = state[-1]
            self.__init__(  # type: ignore[misc]
                NoveltyConfig(
                    history=getattr(old, "history", 1440),
                    min_history=getattr(old, "min_history", 100),
                )
            )
            return
        for name, value in zip(self.__slots__, state, strict=True):
            setattr(self, name, value)


def past_shapes(
    means: np.ndarray, exceptions: Sequence[dict[int, tuple[float, ...]]], longest: int
) -> np.ndarray:
    """The shapes of every slot of several rings of means at once (series × position in a
    shape × slot): each position the ring shifted by its distance from the newest, then the
    shapes kept whole (`NoveltyDetector._except`) written over their slots."""
    n, history = means.shape
    past = np.empty((n, longest, history), np.float64)
    for k in range(longest):  # position k of slot p's shape: the mean of slot p - shift
        shift = longest - 1 - k
        past[:, k, shift:] = means[:, : history - shift]
        past[:, k, :shift] = means[:, history - shift :]
    rows: list[int] = []
    slots: list[int] = []
    shapes: list[tuple[float, ...]] = []
    for row, kept in enumerate(exceptions):
        if kept:
            rows.extend([row] * len(kept))
            slots.extend(kept)
            shapes.extend(kept.values())
    if rows:
        past[np.array(rows), :, np.array(slots)] = np.array(shapes)
    return past


CHUNK = 64
"""Series whose rings of means are searched in one array operation (three scratch arrays of
CHUNK x 1440 float64 at the defaults, 2.2 MB, allocated once per `score_many` call)."""


def score_many(
    detectors: Sequence[NoveltyDetector], values: Sequence[float]
) -> list[tuple[float, ...] | None]:
    """`NoveltyDetector.score` for many series at once (one window mean each, no state
    changes): the rings of up to `CHUNK` series stacked, each scale's nearest past shape found
    for all of them in one array operation. The same floats as one by one (the same
    differences, added in the same order)."""
    out: list[tuple[float, ...] | None] = [None] * len(detectors)
    warm = [i for i, d in enumerate(detectors) if d._filled >= d.config.min_history]
    if len(warm) < 2 or len({detectors[i].config for i in warm}) > 1:
        for i in warm:
            out[i] = detectors[i].score(values[i])
        return out
    c = detectors[warm[0]].config
    size = min(CHUNK, len(warm))
    scratch = _Scratch(
        np.empty((size, c.longest - 1 + c.history)),
        np.empty((size, c.history)),
        np.empty((size, c.history)),
    )
    for start in range(0, len(warm), CHUNK):
        chunk = warm[start : start + CHUNK]
        for i, raws in zip(chunk, _score_chunk(c, detectors, values, chunk, scratch), strict=True):
            out[i] = raws
    return out


@dataclass
class _Scratch:
    """`_score_chunk`'s arrays, allocated once per `score_many` call: fresh arrays of this
    size (hundreds of KB) are new pages from the system on every call, which costs more than
    the arithmetic on them."""

    means: np.ndarray
    total: np.ndarray
    diff: np.ndarray


def _score_chunk(
    c: NoveltyConfig,
    detectors: Sequence[NoveltyDetector],
    values: Sequence[float],
    chunk: list[int],
    scratch: _Scratch,
) -> list[tuple[float, ...] | None]:
    """The chunk's raw scores, searched on the rings of means themselves: position j of slot
    p's shape (j from the newest) is the mean of slot p - j, so each position's differences
    are one shifted slice of the ring (no copy of every shape, as `past_shapes` makes), added
    into one running total. A ring's unfilled slots are set to +inf after the first
    position, so they are never nearest; the few shapes kept whole (`_except`) have their
    totals computed apart and written over their slots after every position; the shapes
    that overlap the current one are set to +inf only for the scale's minimum, then
    restored. The same differences added in the same order as `NoveltyDetector.score`, so
    the same floats."""
    dets = [detectors[i] for i in chunk]
    n, longest, history = len(dets), c.longest, c.history
    shapes = np.empty((n, longest), np.float64)
    scale = np.empty(n, np.float64)
    for row, (i, d) in enumerate(zip(chunk, dets, strict=True)):
        lo, hi, recent = d._next(values[i])
        shapes[row] = recent
        span = hi - lo
        scale[row] = span if span > 0 else 1.0
    if not np.isfinite(shapes).all():  # inf - inf in an unfilled slot: the plain search
        return [detectors[i].score(values[i]) for i in chunk]
    # each ring with its newest longest - 1 slots copied in front, so that position j of
    # every slot's shape is one slice, means[:, pad - j : pad - j + history]
    pad = longest - 1
    means = scratch.means[:n]
    for row, d in enumerate(dets):
        means[row, pad:] = d._means
    means[:, :pad] = means[:, history:]
    unfilled = [(row, d._filled) for row, d in enumerate(dets) if d._filled < history]
    kept_rows: list[int] = []
    kept_slots: list[int] = []
    kept: list[tuple[float, ...]] = []
    for row, d in enumerate(dets):
        if d._except:
            kept_rows.extend([row] * len(d._except))
            kept_slots.extend(d._except)
            kept.extend(d._except.values())
    kept_total = np.zeros(len(kept))
    kept_diff = np.array(kept).reshape(len(kept), longest) - shapes[kept_rows]
    pos = np.fromiter((d._pos for d in dets), np.int64, n)
    rows = np.arange(n)[:, None]
    wanted = set(c.scales)
    found: dict[int, np.ndarray] = {}
    total, diff = scratch.total[:n], scratch.diff[:n]
    for k in range(1, longest + 1):
        at = pad - (k - 1)  # slot p's position k from the newest: the mean of slot p - k + 1
        step = total if k == 1 else diff  # 0 + d * d is d * d: the first position starts it
        np.subtract(means[:, at : at + history], shapes[:, longest - k, None], out=step)
        step *= step
        if k > 1:
            total += diff
        else:  # never nearest: inf + d * d stays inf
            for row, filled in unfilled:
                total[row, filled:] = np.inf
        kept_total += kept_diff[:, longest - k] * kept_diff[:, longest - k]
        total[kept_rows, kept_slots] = kept_total
        if k in wanted:
            if k > 1:  # the k - 1 latest shapes overlap the current one at this scale
                overlap = (pos[:, None] - np.arange(1, k)) % history
                held = total[rows, overlap]
                total[rows, overlap] = np.inf
                found[k] = np.sqrt(total.min(axis=1) / k) / scale
                total[rows, overlap] = held
            else:
                found[k] = np.sqrt(total.min(axis=1) / k) / scale
    per_scale = [found[s].tolist() for s in c.scales]
    return list(zip(*per_scale, strict=True))


@dataclass(frozen=True)
class NoveltyTier:
    """The novelty tier as a `Detector`: raw distances per scale; learns every window."""

    name: ClassVar[str] = "novelty"
    config: NoveltyConfig = field(default_factory=NoveltyConfig)

    def new_state(self, series: str) -> NoveltyDetector:
        return NoveltyDetector(self.config)

    def score_batch(
        self, states: Sequence[NoveltyDetector], windows: Sequence[FeatureWindow]
    ) -> list[tuple[float, ...] | None]:
        return score_many(states, [w["mean"] for w in windows])

    def learn_batch(
        self,
        states: Sequence[NoveltyDetector],
        windows: Sequence[FeatureWindow],
        scores: Sequence[tuple[float, ...] | None],
        flagged: Sequence[bool],
    ) -> None:
        for s, w in zip(states, windows, strict=True):
            s.learn(w["mean"])

    def raw(self, score: tuple[float, ...] | None) -> float | None:
        """The novelty distance: the largest scale's raw score."""
        return None if score is None else max(score)
