"""Cross-metric features per host: ratios and products of one window's means across metrics.

The series of a host share a feature shard, so their windows close in the same operator; this
joiner collects the window means a host's cross features need and emits a `HostWindow` once
all inputs of that window are in (or, partially, when the host has moved two windows on).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec

from novacron_ml.core.features import FeatureWindow
from novacron_ml.core.schema import split_series_key


@dataclass(frozen=True)
class CrossFeature:
    name: str
    numerator: str
    denominator: str
    op: str
    """'mul' or 'div' (0 when the denominator is 0)."""
    meaning: str


CROSS_FEATURES: tuple[CrossFeature, ...] = (
    CrossFeature(
        "latency_x_throughput",
        "latency_p50_ms",
        "throughput_mbps",
        "mul",
        "work in flight (Little's law): rises when latency grows at unchanged load",
    ),
    CrossFeature(
        "errors_per_mbit",
        "error_rate",
        "throughput_mbps",
        "div",
        "error rate per unit of delivered work",
    ),
    CrossFeature("cpu_per_mbit", "cpu_util", "throughput_mbps", "div", "CPU cost per unit of work"),
    CrossFeature(
        "latency_tail_ratio",
        "latency_p99_ms",
        "latency_p50_ms",
        "div",
        "tail latency relative to the median",
    ),
)
HOST_FEATURE_NAMES: tuple[str, ...] = tuple(c.name for c in CROSS_FEATURES)
NEEDED_METRICS: frozenset[str] = frozenset(
    m for c in CROSS_FEATURES for m in (c.numerator, c.denominator)
)


class HostWindow(msgspec.Struct, frozen=True):
    cluster: str
    host: str
    start_ms: int
    end_ms: int
    features: dict[str, float]


def cross_features(means: dict[str, float]) -> dict[str, float]:
    """The cross features computable from one host window's metric means."""
    out: dict[str, float] = {}
    for c in CROSS_FEATURES:
        a, b = means.get(c.numerator), means.get(c.denominator)
        if a is None or b is None:
            continue
        if c.op == "mul":
            out[c.name] = a * b
        else:
            out[c.name] = a / b if b != 0 else 0.0
    return out


@dataclass
class CrossMetricJoiner:
    """Per-shard state: window means waiting for the other metrics of their host window."""

    window_ms: int
    pending: dict[tuple[str, str, int], dict[str, float]] = field(default_factory=dict)
    newest: dict[tuple[str, str], int] = field(default_factory=dict)

    def add(self, windows: list[FeatureWindow]) -> list[HostWindow]:
        out: list[HostWindow] = []
        touched: set[tuple[str, str, int]] = set()
        for w in windows:
            cluster, host, metric = split_series_key(w.series)
            if metric not in NEEDED_METRICS:
                continue
            key = (cluster, host, w.start_ms)
            self.pending.setdefault(key, {})[metric] = w["mean"]
            touched.add(key)
            hk = (cluster, host)
            if w.start_ms > self.newest.get(hk, -(2**62)):
                self.newest[hk] = w.start_ms
        for key in sorted(touched, key=lambda k: k[2]):
            means = self.pending.get(key)
            if means is not None and means.keys() >= NEEDED_METRICS:
                out.append(self._emit(key))
        # Hosts that moved two windows on will not complete older windows: emit what exists.
        for key in [k for k in self.pending if k[2] < self.newest[(k[0], k[1])] - self.window_ms]:
            host_window = self._emit(key)
            if host_window.features:
                out.append(host_window)
        return out

    def _emit(self, key: tuple[str, str, int]) -> HostWindow:
        means = self.pending.pop(key)
        cluster, host, start = key
        return HostWindow(cluster, host, start, start + self.window_ms, cross_features(means))
