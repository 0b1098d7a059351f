"""The HDE compression environment, measured (issue 21 (a); docs/TUNING.md).

Knobs: zstd level, chunk size (every chunk is an independent frame, as a chunked transfer
sends them) and window log (the match window; it matters when smaller than the chunk).
Payloads are real bytes of seven kinds (`payload_corpus`): the simulator's metric batches in
the three wire formats, NAB and dctraces CSVs, the project's own source, its ONNX model files
and VM-memory-like pages. `measure_grid` compresses every kind with every setting of the grid
on this machine with the `zstandard` package, repeating each run, and keeps the compression
ratio and the compression and decompression speeds with their spread. The environment replays
that table with the measured noise, so training is fast and every number in it comes from a
real run.

Reward: the effective throughput of sending the payload over a link of `link_mb_s` MB/s,
compressing then sending (MB of original data per second):

    reward = 1 / (1 / compress_mb_s + 1 / (ratio * link_mb_s))

— a higher level buys ratio and costs speed, and the link speed decides which wins, which is
the trade-off HDE tunes. The seed's two figures (ratio 2.87 -> 3.47x, 487 -> 612 MB/s) are
reported beside it for each configuration.
"""

from __future__ import annotations

import itertools
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from novacron_ml.core.tuning import CHUNK_KIB, DEFAULT_CONFIG, LEVELS, PAYLOAD_KINDS, WINDOW_LOGS
from operators.tuning import envmodel
from operators.tuning.envmodel import (
    LINK_MB_S,
    Cell,
    CompressionTable,
    measure_mix,
    normalised,
    reward,
)

KINDS = PAYLOAD_KINDS
SAMPLE_BYTES = 1 << 20
"""Bytes of each payload kind compressed per measurement (one MiB)."""

ROOT = Path(__file__).resolve().parents[2]


def _take(chunks: Iterator[bytes], n: int) -> bytes:
    out = bytearray()
    for c in chunks:
        out += c
        if len(out) >= n:
            break
    return bytes(out[:n])


def _files(paths: Sequence[Path]) -> Iterator[bytes]:
    for p in paths:
        if p.is_file():
            yield p.read_bytes()


def _simulated(fmt: str) -> Iterator[bytes]:
    from novacron_ml.core.simulator import FleetConfig, FleetSimulator

    sim = FleetSimulator(
        FleetConfig(hosts=8, clusters=2, duration_s=6 * 3600.0, start_ms=1_764_547_200_000)
    )
    for _key, value in sim.messages(fmt):
        yield value + b"\n"


def _vm_pages(seed: int = 1) -> Iterator[bytes]:
    """4 KiB pages as a VM's memory holds them: zero pages, text (the project's source),
    small-integer arrays, pointer-like 8-byte words and already-compressed (random) data."""
    rng = np.random.default_rng(seed)
    text = b"".join(_files(sorted(ROOT.glob("operators/**/*.py"))))
    kinds = rng.choice(5, size=SAMPLE_BYTES // 4096 + 1, p=[0.35, 0.2, 0.2, 0.15, 0.1])
    for k in kinds:
        if k == 0:
            yield bytes(4096)
        elif k == 1:
            start = int(rng.integers(0, max(1, len(text) - 4096)))
            yield text[start : start + 4096].ljust(4096, b"\0")
        elif k == 2:
            yield rng.integers(0, 256, 1024, dtype=np.int32).astype("<i4").tobytes()
        elif k == 3:
            base = 0x7F00_0000_0000 + int(rng.integers(0, 1 << 20)) * 4096
            yield (base + rng.integers(0, 1 << 16, 512) * 8).astype("<u8").tobytes()
        else:
            yield rng.bytes(4096)


def payload_corpus(data_dir: Path | None = None, size: int = SAMPLE_BYTES) -> dict[str, bytes]:
    """`size` bytes of each payload kind (kinds whose sources are missing are left out)."""
    data = data_dir or ROOT.parent / "shared" / "data"
    csvs = sorted(data.glob("nab/data/*/*.csv")) + sorted(data.glob("dctraces/*/*.csv"))
    sources: dict[str, Callable[[], Iterator[bytes]]] = {
        "metrics-json": lambda: _simulated("json"),
        "metrics-json-array": lambda: _simulated("json-array"),
        "metrics-line": lambda: _simulated("line"),
        "csv": lambda: _files(csvs),
        "source": lambda: _files(sorted(ROOT.glob("**/*.py"))),
        "models": lambda: _files(sorted(ROOT.glob("models/onnx/**/*.onnx"))),
        "vm-pages": _vm_pages,
    }
    out = {}
    for kind in KINDS:
        blob = _take(sources[kind](), size)
        if len(blob) >= size // 4:  # too little of a kind to measure: leave it out
            out[kind] = blob
    return out


def compress_chunked(data: bytes, level: int, chunk_kib: int, window_log: int) -> list[bytes]:
    import zstandard

    params = zstandard.ZstdCompressionParameters.from_level(
        level, window_log=window_log, source_size=chunk_kib * 1024
    )
    cctx = zstandard.ZstdCompressor(compression_params=params)
    step = chunk_kib * 1024
    return [cctx.compress(data[i : i + step]) for i in range(0, len(data), step)]


def grid() -> list[tuple[int, int, int]]:
    return list(itertools.product(LEVELS, CHUNK_KIB, WINDOW_LOGS))


def measure_grid(
    corpus: dict[str, bytes],
    configs: Sequence[tuple[int, int, int]] | None = None,
    repeats: int = 3,
    progress: Callable[[int, int], None] | None = None,
) -> CompressionTable:
    """Compress every payload kind with every configuration, `repeats` times each (ratio
    is exact; speeds keep their mean and standard deviation over the repeats)."""
    import zstandard

    configs = list(configs or grid())
    cells: dict[str, Cell] = {}
    total, done = len(corpus) * len(configs), 0
    dctx = zstandard.ZstdDecompressor()
    for kind, data in corpus.items():
        mb = len(data) / 1e6
        for config in configs:
            c_speed, d_speed, frames = [], [], []
            for _ in range(repeats):
                start = time.perf_counter()
                frames = compress_chunked(data, *config)
                c_speed.append(mb / (time.perf_counter() - start))
                start = time.perf_counter()
                for f in frames:
                    dctx.decompress(f)
                d_speed.append(mb / (time.perf_counter() - start))
            size = sum(len(f) for f in frames)
            cells[CompressionTable.key(kind, config)] = Cell(
                ratio=len(data) / size,
                compress_mb_s=statistics.fmean(c_speed),
                compress_sd=statistics.pstdev(c_speed),
                decompress_mb_s=statistics.fmean(d_speed),
                decompress_sd=statistics.pstdev(d_speed),
            )
            done += 1
            if progress is not None:
                progress(done, total)
    meta = {
        "zstandard": zstandard.__version__,
        "zstd": ".".join(map(str, zstandard.ZSTD_VERSION)),
        "sample_bytes": {k: len(v) for k, v in corpus.items()},
        "repeats": repeats,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    return CompressionTable(cells, meta)


@dataclass
class Mix:
    """Share of each payload kind in the traffic (sums to 1)."""

    weights: dict[str, float]

    def normalised(self) -> dict[str, float]:
        return normalised(self.weights)


MIXES: dict[str, Mix] = {name: Mix(dict(w)) for name, w in envmodel.MIXES.items()}
"""Traffic the tuner meets (`operators.tuning.envmodel.MIXES`) as `Mix` objects."""


class CompressionEnv:
    """Replays the measured table: each step the tuner picks a configuration, the environment
    draws each kind's speed from its measured mean and spread (a normal, floored at 10 % of
    the mean) and returns the mix's reward; the mix can switch mid-episode (`schedule`: step
    -> mix name)."""

    def __init__(
        self,
        table: CompressionTable,
        mix: str = "mixed",
        *,
        link_mb_s: float = LINK_MB_S,
        schedule: dict[int, str] | None = None,
        seed: int = 0,
    ) -> None:
        self.table = table
        self.link_mb_s = link_mb_s
        self.schedule = dict(schedule or {})
        self.rng = np.random.default_rng(seed)
        self.configs = sorted({tuple(int(x) for x in k.split("/")[1:]) for k in table.cells})
        self.mix_name = mix
        self.t = 0
        self._static: dict[tuple[str, float, tuple[int, ...]], dict[str, float]] = {}
        self._best: dict[tuple[str, float], tuple[tuple[int, int, int], float]] = {}

    @property
    def mix(self) -> dict[str, float]:
        weights = MIXES[self.mix_name].normalised()
        return {k: w for k, w in weights.items() if k in self.table.kinds}

    def measure(self, config: Sequence[int], noise: bool = True) -> dict[str, float]:
        """The mix's ratio, compression speed and reward for one configuration (bytes-
        weighted: total input over total output, total input over total time)."""
        key = (self.mix_name, self.link_mb_s, tuple(config))
        if not noise and key in self._static:
            return self._static[key]
        out = measure_mix(self.table, self.mix, config, self.link_mb_s, self.rng if noise else None)
        if not noise:
            self._static[key] = out
        return out

    def step(self, config: Sequence[int]) -> dict[str, float]:
        if self.t in self.schedule:
            self.mix_name = self.schedule[self.t]
        self.t += 1
        return self.measure(config)

    def best(self) -> tuple[tuple[int, int, int], float]:
        """The grid-best static configuration for the current mix (noise-free rewards)."""
        key = (self.mix_name, self.link_mb_s)
        if key not in self._best:
            scores = {c: self.measure(c, noise=False)["reward"] for c in self.configs}
            best = max(scores, key=lambda c: scores[c])
            self._best[key] = (best, scores[best])  # type: ignore[assignment]
        return self._best[key]


__all__ = [
    "CHUNK_KIB",
    "DEFAULT_CONFIG",
    "KINDS",
    "LEVELS",
    "LINK_MB_S",
    "WINDOW_LOGS",
    "Cell",
    "CompressionTable",
    "reward",
]
