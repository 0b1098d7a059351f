"""The PBA bandwidth-prediction environment (issue 21 (b); docs/TUNING.md#bandwidth).

A real predictor runs over real traffic series: NAB's network-in and request-count series
(realAWSCloudwatch) and dctraces' Alibaba net_in/net_out. Every `update_interval` samples it
provisions bandwidth for the next interval from the last `window` samples:

    provision = mean + z(confidence) * std        (z: the normal quantile, 0 below 0.5)

and the interval's real demand is then charged (per sample, in units of the series' mean
demand, so series of any scale compare):

    cost = over-provisioned bandwidth
         + SHORTFALL_COST * unmet demand
         + UPDATE_COST per re-provisioning (signalling, path set-up: updates are not free)

Knobs: prediction window (samples), confidence threshold, update interval (samples). One
decision = one `segment` of the series (a day at 5-minute samples): the tuner picks knobs,
the predictor runs over the segment, the environment returns -cost and the segment's
prediction accuracy (100 x (1 - WAPE of the mean)) and waste (over-provisioned share).
The "noise" is the real traffic itself: the next day differs from the last.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist

import numpy as np

WINDOWS: tuple[int, ...] = (6, 12, 24, 48, 96, 288)
CONFIDENCES: tuple[float, ...] = (0.5, 0.8, 0.9, 0.95, 0.99)
UPDATE_INTERVALS: tuple[int, ...] = (1, 3, 6, 12, 24)
DEFAULT_PBA: tuple[float, ...] = (24, 0.9, 6)
SHORTFALL_COST = 4.0
"""Unmet demand costs this many times idle bandwidth (queued or dropped traffic)."""
UPDATE_COST = 0.05
"""Each re-provisioning costs this share of one sample's mean demand."""
SEGMENT = 288
_STATIC: dict[tuple[object, ...], dict[str, float]] = {}


def traffic_series(data_dir: Path | None = None) -> dict[str, np.ndarray]:
    """The real traffic series the environment replays (missing files are left out)."""
    data = data_dir or Path(__file__).resolve().parents[3] / "shared" / "data"
    out: dict[str, np.ndarray] = {}
    aws = data / "nab" / "data" / "realAWSCloudwatch"
    for name in ("ec2_network_in_257a54", "ec2_network_in_5abac7", "elb_request_count_8c0756",
                 "iio_us-east-1_i-a2eb1cd9_NetworkIn"):  # fmt: skip
        path = aws / f"{name}.csv"
        if path.is_file():
            out[name] = np.loadtxt(path, delimiter=",", skiprows=1, usecols=1)
    ali = data / "dctraces" / "alibaba2018" / "machine_usage_days_1_to_8_grouped_300_seconds.csv"
    if ali.is_file():
        cols = ali.read_text().splitlines()[0].split(",")
        table = np.loadtxt(ali, delimiter=",", skiprows=1)
        for col in ("net_in", "net_out"):
            out[f"alibaba_{col}"] = table[:, cols.index(col)]
    return out


def run_predictor(
    y: np.ndarray, start: int, stop: int, window: int, confidence: float, update: int
) -> dict[str, float]:
    """Provision y[start:stop] with the predictor; cost, accuracy and waste per sample."""
    z = NormalDist().inv_cdf(confidence) if confidence > 0.5 else 0.0
    scale = float(np.mean(y[max(0, start - 2016) : start])) or 1.0  # the last week's mean
    over = short = 0.0
    abs_err = demand = 0.0
    updates = 0
    for t0 in range(start, stop, update):
        hist = y[max(0, t0 - window) : t0]
        mu = float(hist.mean())
        sd = float(hist.std()) if len(hist) > 1 else 0.0
        provision = mu + z * sd
        actual = y[t0 : min(t0 + update, stop)]
        over += float(np.clip(provision - actual, 0, None).sum())
        short += float(np.clip(actual - provision, 0, None).sum())
        abs_err += float(np.abs(actual - mu).sum())
        demand += float(actual.sum())
        updates += 1
    n = stop - start
    cost = (over + SHORTFALL_COST * short) / (n * scale) + UPDATE_COST * updates / n
    return {
        "reward": -cost,
        "accuracy": 100.0 * (1.0 - abs_err / demand) if demand > 0 else 0.0,
        "waste": over / demand if demand > 0 else 0.0,
        "shortfall": short / demand if demand > 0 else 0.0,
    }


@dataclass
class BandwidthEnv:
    """One decision = the next segment of one series; `measure(noise=False)` is the setting's
    mean over every segment of that series (the static value the grid-best maximises)."""

    series: dict[str, np.ndarray]
    name: str
    segment: int = SEGMENT
    seed: int = 0

    def __post_init__(self) -> None:
        self.configs: list[tuple[float, ...]] = [
            tuple(c) for c in itertools.product(WINDOWS, CONFIDENCES, UPDATE_INTERVALS)
        ]
        self.warm = max(WINDOWS)
        self.t = 0

    @property
    def y(self) -> np.ndarray:
        return self.series[self.name]

    @property
    def mix(self) -> dict[str, float]:
        return {self.name: 1.0}

    def _segments(self) -> list[int]:
        return list(range(self.warm, len(self.y) - self.segment + 1, self.segment))

    def measure(self, config: Sequence[float], noise: bool = True) -> dict[str, float]:
        window, conf, update = int(config[0]), float(config[1]), int(config[2])
        if noise:
            starts = self._segments()
            s = starts[self.t % len(starts)]
            return run_predictor(self.y, s, s + self.segment, window, conf, update)
        key = (self.name, len(self.y), self.segment, tuple(config))
        if key not in _STATIC:  # deterministic: shared by every environment of the series
            runs = [run_predictor(self.y, s, s + self.segment, window, conf, update)
                    for s in self._segments()]  # fmt: skip
            _STATIC[key] = {k: float(np.mean([r[k] for r in runs])) for k in runs[0]}
        return _STATIC[key]

    def step(self, config: Sequence[float]) -> dict[str, float]:
        out = self.measure(config)
        self.t += 1
        return out

    def best(self) -> tuple[tuple[float, ...], float]:
        scores = {c: self.measure(c, noise=False)["reward"] for c in self.configs}
        best = max(scores, key=lambda c: scores[c])
        return best, scores[best]
