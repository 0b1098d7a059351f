"""The compression environment's model, as the runtime uses it (no zstandard, no torch).

The measured table (`models/tuning/compression_table.json`, written by `novacron-ml tune
measure`: every payload kind compressed with every setting on a real machine) and the
arithmetic on it: a payload mix's ratio and speed, the reward (effective MB/s over a link) and
one chunk's delivery time. Training (`training.tuning.compression`) replays the same table with
the same arithmetic, so the tuning flow's expectations and the environment the policy learned
in cannot drift apart; the demo's simulator answers the knobs through it too.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from novacron_ml.core.tuning import DEFAULT_CONFIG, PAYLOAD_KINDS
from operators.tuning.guardrails import Estimate

LINK_MB_S = 125.0
"""The link a host is assumed to have when it does not report one: 1 Gbit/s."""

MIXES: dict[str, dict[str, float]] = {
    "telemetry": {"metrics-json": 0.4, "metrics-json-array": 0.3, "metrics-line": 0.2, "csv": 0.1},
    "migration": {"vm-pages": 0.8, "models": 0.1, "source": 0.1},
    "mixed": {k: 1.0 for k in PAYLOAD_KINDS},
}
"""Traffic the tuner meets: a fleet's telemetry, a VM live migration, and everything."""


@dataclass
class Cell:
    ratio: float
    compress_mb_s: float
    compress_sd: float
    decompress_mb_s: float
    decompress_sd: float


@dataclass
class CompressionTable:
    """Measured cells keyed `kind/level/chunk_kib/window_log`, and how they were measured."""

    cells: dict[str, Cell]
    meta: dict[str, Any] = field(default_factory=dict)

    @staticmethod
    def key(kind: str, config: Sequence[int]) -> str:
        level, chunk, wlog = config
        return f"{kind}/{level}/{chunk}/{wlog}"

    def cell(self, kind: str, config: Sequence[int]) -> Cell:
        return self.cells[self.key(kind, config)]

    @property
    def kinds(self) -> list[str]:
        return list(dict.fromkeys(k.split("/")[0] for k in self.cells))

    @property
    def configs(self) -> list[tuple[int, int, int]]:
        return sorted(
            {(int(a), int(b), int(c)) for a, b, c in (k.split("/")[1:] for k in self.cells)}
        )

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        body = {"meta": self.meta, "cells": {k: asdict(v) for k, v in self.cells.items()}}
        path.write_text(json.dumps(body, indent=1))

    @classmethod
    def load(cls, path: Path) -> CompressionTable:
        body = json.loads(path.read_text())
        return cls({k: Cell(**v) for k, v in body["cells"].items()}, body.get("meta", {}))


def reward(ratio: float, compress_mb_s: float, link_mb_s: float = LINK_MB_S) -> float:
    """MB of original data delivered per second: compress, then send the compressed bytes."""
    return 1.0 / (1.0 / compress_mb_s + 1.0 / (ratio * link_mb_s))


def normalised(mix: Mapping[str, float], kinds: Sequence[str] | None = None) -> dict[str, float]:
    """Shares summing to 1 over the kinds the table holds (`kinds`), zero shares dropped."""
    mix = {k: float(v) for k, v in mix.items() if v > 0 and (kinds is None or k in kinds)}
    total = sum(mix.values())
    return {k: v / total for k, v in mix.items()} if total > 0 else {}


def measure_mix(
    table: CompressionTable,
    mix: Mapping[str, float],
    config: Sequence[int],
    link_mb_s: float,
    rng: np.random.Generator | None = None,
) -> dict[str, float]:
    """The mix's ratio, compression speed and reward for one setting, bytes-weighted (total
    input over total output, total input over total time). With `rng`, each kind's speed is
    drawn from a normal with its measured mean and spread, floored at 10 % of the mean."""
    total = sum(mix.values())
    out_bytes = seconds = var = 0.0
    for kind, w in mix.items():
        c = table.cell(kind, config)
        speed = c.compress_mb_s
        if rng is not None:
            speed = max(0.1 * speed, float(rng.normal(speed, c.compress_sd)))
        out_bytes += w / c.ratio
        seconds += w / speed
        var += (w * c.compress_sd / c.compress_mb_s**2) ** 2  # delta method on w / speed
    ratio = total / out_bytes
    speed = total / seconds
    return {
        "ratio": ratio,
        "compress_mb_s": speed,
        # the spread of the mix's speed, from the kinds' measured spreads (delta method)
        "compress_sd": speed * math.sqrt(var) / seconds,
        "reward": reward(ratio, speed, link_mb_s),
    }


def chunk_ms(ratio: float, compress_mb_s: float, chunk_kib: int, link_mb_s: float) -> float:
    """Milliseconds from a chunk's data being ready to its last byte sent: compress the whole
    chunk (a frame is sent once complete), then send it compressed. The latency a bigger chunk
    costs a streaming transfer; the guardrails' p99."""
    mb = chunk_kib * 1024 / 1e6
    return 1000.0 * (mb / compress_mb_s + mb / (ratio * link_mb_s))


def estimate(
    table: CompressionTable, mix: Mapping[str, float], config: Sequence[int], link_mb_s: float
) -> Estimate:
    """What the table expects of a setting for the guardrails: the reward (effective MB/s)
    and one chunk's delivery time with their standard deviations, both from the measured
    spread of the compression speed (the ratio is exact)."""
    m = measure_mix(table, mix, config, link_mb_s)
    speed, sd = m["compress_mb_s"], m["compress_sd"]
    slow = max(speed - sd, 0.1 * speed)  # one sd slower: the slope of both figures
    throughput = m["reward"]
    throughput_sd = throughput - reward(m["ratio"], slow, link_mb_s)
    latency = chunk_ms(m["ratio"], speed, config[1], link_mb_s)
    latency_sd = chunk_ms(m["ratio"], slow, config[1], link_mb_s) - latency
    return Estimate(throughput, throughput_sd, latency, latency_sd)


def default_reward(table: CompressionTable, mix: Mapping[str, float], link_mb_s: float) -> float:
    return measure_mix(table, mix, DEFAULT_CONFIG, link_mb_s)["reward"]


def grid_best(
    table: CompressionTable, mix: Mapping[str, float], link_mb_s: float
) -> tuple[tuple[int, int, int], float]:
    """The best static setting for a mix and link (noise-free): the 100 % line."""
    scores = {c: measure_mix(table, mix, c, link_mb_s)["reward"] for c in table.configs}
    best = max(scores, key=lambda c: scores[c])
    return best, scores[best]
