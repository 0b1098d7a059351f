"""Per-window statistics, folded one event at a time and mergeable (for session windows)."""

from __future__ import annotations

import math
from dataclasses import dataclass


class WindowStats:
    """Count, mean and variance (Welford), extremes and the last value of one series window.

    Small, picklable and numerically stable for large values; `merge` combines two partial
    windows exactly (Chan et al.), so the result does not depend on how events were split.
    """

    __slots__ = ("count", "first_ts_ms", "last", "last_ts_ms", "m2", "max", "mean", "min")

    def __init__(self) -> None:
        self.count = 0
        self.mean = 0.0
        self.m2 = 0.0
        self.min = math.inf
        self.max = -math.inf
        self.first_ts_ms = 0
        self.last_ts_ms = 0
        self.last = 0.0

    def add(self, ts_ms: int, value: float) -> WindowStats:
        self.count += 1
        delta = value - self.mean
        self.mean += delta / self.count
        self.m2 += delta * (value - self.mean)
        self.min = min(self.min, value)
        self.max = max(self.max, value)
        if self.count == 1 or ts_ms < self.first_ts_ms:
            self.first_ts_ms = ts_ms
        if ts_ms >= self.last_ts_ms:
            self.last_ts_ms = ts_ms
            self.last = value
        return self

    def merge(self, other: WindowStats) -> WindowStats:
        if other.count == 0:
            return self
        if self.count == 0:
            return other
        n = self.count + other.count
        delta = other.mean - self.mean
        self.m2 += other.m2 + delta * delta * self.count * other.count / n
        self.mean += delta * other.count / n
        self.count = n
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)
        self.first_ts_ms = min(self.first_ts_ms, other.first_ts_ms)
        if other.last_ts_ms >= self.last_ts_ms:
            self.last_ts_ms, self.last = other.last_ts_ms, other.last
        return self

    @property
    def variance(self) -> float:
        return self.m2 / (self.count - 1) if self.count > 1 else 0.0

    @property
    def std(self) -> float:
        return math.sqrt(max(self.variance, 0.0))

    def __getstate__(self) -> tuple[int, float, float, float, float, int, int, float]:
        return (
            self.count,
            self.mean,
            self.m2,
            self.min,
            self.max,
            self.first_ts_ms,
            self.last_ts_ms,
            self.last,
        )

    def __setstate__(self, state: tuple[int, float, float, float, float, int, int, float]) -> None:
        (
            self.count,
            self.mean,
            self.m2,
            self.min,
            self.max,
            self.first_ts_ms,
            self.last_ts_ms,
            self.last,
        ) = state

    def __repr__(self) -> str:
        return (
            f"WindowStats(count={self.count}, mean={self.mean:.6g}, std={self.std:.6g}, "
            f"min={self.min:.6g}, max={self.max:.6g}, last={self.last:.6g})"
        )


@dataclass(frozen=True)
class WindowGrid:
    """Maps Bytewax window ids to event-time bounds (windows aligned to `align_ms`)."""

    length_ms: int
    slide_ms: int
    align_ms: int = 0

    def start_ms(self, window_id: int) -> int:
        return self.align_ms + window_id * self.slide_ms

    def end_ms(self, window_id: int) -> int:
        return self.start_ms(window_id) + self.length_ms
