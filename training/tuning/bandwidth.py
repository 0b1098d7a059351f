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

import numpy as np

from operators.tuning.bandwidth import (
    CONFIDENCES,
    DEFAULT_PBA,
    SEGMENT,
    SHORTFALL_COST,
    UPDATE_COST,
    UPDATE_INTERVALS,
    WINDOWS,
    rerun_day,
    run_predictor,
)

__all__ = ["CONFIDENCES", "DEFAULT_PBA", "SEGMENT", "SHORTFALL_COST", "UPDATE_COST",
           "UPDATE_INTERVALS", "WINDOWS", "BandwidthEnv", "Hindsight", "run_predictor",
           "traffic_series"]  # fmt: skip

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

    def best_before_next(self) -> tuple[float, ...] | None:
        """The setting that would have done best on the period just before the next
        decision's (every setting rerun on it: the predictor is cheap, and that traffic has
        been seen), None when that period lacks the history a predictor needs. What the
        `hindsight` tuner plays (`Hindsight`)."""
        starts = self._segments()
        s = starts[self.t % len(starts)]
        if s - self.segment < self.warm:
            return None
        key = (self.name, len(self.y), self.segment, s)
        if key not in _HINDSIGHT:
            assert self.segment == SEGMENT, "the flow's hindsight judges whole days"
            runs = rerun_day(self.y[:s])  # the tuning flow's own function
            _HINDSIGHT[key] = max(runs, key=lambda c: runs[c]["reward"])
        return _HINDSIGHT[key]


_HINDSIGHT: dict[tuple[object, ...], tuple[float, ...]] = {}


@dataclass
class Hindsight:
    """Follow the leader on yesterday: each decision plays the setting that was best on the
    period just before it (`BandwidthEnv.best_before_next`), the default until one exists.
    No training and no exploration: every decision it makes is out of sample."""

    env: BandwidthEnv
    default: tuple[float, ...] = DEFAULT_PBA
    name: str = "hindsight"

    def propose(self) -> tuple[float, ...]:
        return self.env.best_before_next() or self.default

    def observe(self, config: tuple[float, ...], reward: float) -> None:
        pass
