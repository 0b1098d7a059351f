"""Deterministic fleet simulator: DWCP metrics for N hosts in M clusters, with labelled anomalies.

Every host reports the ten DWCP metrics (`catalogue.DWCP_METRICS`) every `step_s` seconds. The
values follow a shared per-host load with a daily cycle (per-cluster time zone), a weekend dip,
a slow trend and AR(1) noise; the metrics are correlated through that load (CPU, network and
throughput rise with it, latency rises with CPU, consensus time with network). Anomalies of the
seven types are injected at random (seeded) times and recorded as ground-truth labels.

`FleetConfig.difficulty = "hard"` injects anomalies that are hard to see instead (the
one-decision issue): 1.5-3 noise widths in the metric's bad direction (a width: the metric's
sample-to-sample noise on that host, measured on the hour's clean values), in four shapes
(`shift`, a level shift; `ramp`, a gradual onset over the first half; `variance`, the noise
grows 2-4x and the mean stays; `cycle`, the daily cycle stops: the metric holds its level at
the onset), 5-40 minutes long, and on several metrics of the host where one root metric
moves first and the others follow a quarter of the way in (labelled: `root`, `shape`).

The same seed and start time always give the same events, byte for byte.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import msgspec
import numpy as np

from novacron_ml.core.catalogue import DWCP_METRICS
from novacron_ml.core.labels import AnomalyLabel
from novacron_ml.core.schema import AnomalyType, MetricEvent

METRIC_NAMES: tuple[str, ...] = tuple(m.name for m in DWCP_METRICS)
_IDX = {name: i for i, name in enumerate(METRIC_NAMES)}
CHUNK_TICKS = 720
SIMULATED_TYPES: tuple[AnomalyType, ...] = tuple(
    t for t in AnomalyType if t is not AnomalyType.UNCLASSIFIED
)

PRIMARY_METRICS: dict[AnomalyType, tuple[str, ...]] = {
    AnomalyType.LATENCY_SPIKE: ("latency_p50_ms", "latency_p99_ms"),
    AnomalyType.THROUGHPUT_DROP: ("throughput_mbps",),
    AnomalyType.ERROR_BURST: ("error_rate",),
    AnomalyType.RESOURCE_EXHAUSTION: ("cpu_util", "memory_util"),
    AnomalyType.COMPRESSION_FAILURE: ("compression_ratio",),
    AnomalyType.PREDICTION_ERROR: ("bandwidth_prediction_accuracy",),
    AnomalyType.CONSENSUS_DELAY: ("consensus_time_ms",),
}

HARD_METRICS: dict[AnomalyType, tuple[str, ...]] = {
    AnomalyType.LATENCY_SPIKE: ("latency_p50_ms", "latency_p99_ms"),
    AnomalyType.THROUGHPUT_DROP: ("throughput_mbps", "network_util"),
    AnomalyType.ERROR_BURST: ("error_rate", "latency_p99_ms"),
    AnomalyType.RESOURCE_EXHAUSTION: ("memory_util", "cpu_util", "latency_p50_ms"),
    AnomalyType.COMPRESSION_FAILURE: ("compression_ratio", "network_util"),
    AnomalyType.PREDICTION_ERROR: ("bandwidth_prediction_accuracy",),
    AnomalyType.CONSENSUS_DELAY: ("consensus_time_ms", "latency_p99_ms"),
}
"""The hard scenario's metrics per type: the root first, then the ones that follow it."""

HARD_SHAPES = ("shift", "ramp", "variance", "cycle")
BAD_DIRECTION = {m.name: m.bad_direction or 1 for m in DWCP_METRICS}
DIFFICULTIES = ("default", "hard")
_RATIOS = {"cpu_util", "memory_util", "network_util", "error_rate", "bandwidth_prediction_accuracy"}
_LOWER = np.zeros(len(METRIC_NAMES))
_UPPER = np.array([1.0 if name in _RATIOS else np.inf for name in METRIC_NAMES])


@dataclass(frozen=True)
class FleetConfig:
    hosts: int = 12
    clusters: int = 3
    step_s: float = 5.0
    duration_s: float = 6 * 3600.0
    start_ms: int | None = None
    """First tick; default: the current minute minus the duration (data ends about now)."""
    seed: int = 7
    anomalies_per_host_per_hour: float = 0.5
    warmup_s: float = 3600.0
    """No anomalies in this first stretch, so detectors have a baseline."""
    min_anomaly_s: float = 180.0
    max_anomaly_s: float = 600.0
    min_gap_s: float = 1200.0
    difficulty: str = "default"
    """`default`: large steps on the type's metrics; `hard`: small, shaped, multi-metric
    anomalies with a root metric (module docstring)."""

    def __post_init__(self) -> None:
        if self.difficulty not in DIFFICULTIES:
            raise ValueError(f"difficulty must be one of {DIFFICULTIES}: {self.difficulty!r}")
        if self.hosts < 1 or self.clusters < 1 or self.clusters > self.hosts:
            raise ValueError("need 1 <= clusters <= hosts")
        if self.step_s <= 0 or self.duration_s < self.step_s:
            raise ValueError("need 0 < step_s <= duration_s")
        if not 0 < self.min_anomaly_s <= self.max_anomaly_s:
            raise ValueError("need 0 < min_anomaly_s <= max_anomaly_s")


@dataclass
class _HostParams:
    base_load: np.ndarray
    trend_per_day: np.ndarray
    mem_base: np.ndarray
    tp_base: np.ndarray
    lat_base: np.ndarray
    comp_base: np.ndarray
    cons_base: np.ndarray
    offset_ms: np.ndarray
    tz_shift_s: np.ndarray


HostHook = Callable[[int, int], dict[str, float]]
"""`(host index, event time in ms) -> metric values` for that host's tick: DWCP metrics it
names replace the simulated ones, other names are added (the tuning demo's closed loop)."""


@dataclass
class FleetSimulator:
    config: FleetConfig = field(default_factory=FleetConfig)
    hook: HostHook | None = None
    """Called per host and tick as events are emitted (so it may read state that changes
    while they are consumed, e.g. a host's knob settings); None: the plain simulator."""

    def __post_init__(self) -> None:
        cfg = self.config
        if cfg.start_ms is None:
            now_min = int(time.time() // 60 * 60 * 1000)
            start = now_min - int(cfg.duration_s * 1000)
        else:
            start = cfg.start_ms
        self.start_ms = start
        self.step_ms = round(cfg.step_s * 1000)
        self.n_ticks = int(cfg.duration_s // cfg.step_s)
        self.hosts: list[tuple[str, str]] = [
            (f"cluster-{i % cfg.clusters}", f"host-{i:03d}") for i in range(cfg.hosts)
        ]
        rng = np.random.default_rng(cfg.seed)
        h = cfg.hosts
        self.params = _HostParams(
            base_load=rng.uniform(0.5, 0.8, h),
            trend_per_day=rng.normal(0.0, 0.01, h),
            mem_base=rng.uniform(0.35, 0.6, h),
            tp_base=rng.uniform(800.0, 1500.0, h),
            lat_base=rng.uniform(5.0, 20.0, h),
            comp_base=rng.uniform(2.6, 3.2, h),
            cons_base=rng.uniform(30.0, 60.0, h),
            offset_ms=rng.integers(0, self.step_ms, h),
            tz_shift_s=np.array([(i % cfg.clusters) * 8 * 3600.0 for i in range(h)]),
        )
        self.labels: list[AnomalyLabel] = self._schedule(rng)
        self._anomaly_params = {
            label.anomaly_id: float(rng.uniform(0.0, 1.0)) for label in self.labels
        }

    # -- schedule ------------------------------------------------------------------------------
    def _schedule(self, rng: np.random.Generator) -> list[AnomalyLabel]:
        """Random anomaly episodes per host; types assigned round-robin so all seven occur."""
        cfg = self.config
        rate_per_s = cfg.anomalies_per_host_per_hour / 3600.0
        end_s = self.n_ticks * cfg.step_s
        episodes: list[tuple[int, int, int]] = []  # (start_ms, end_ms, host index)
        hard = cfg.difficulty == "hard"
        shortest, longest = (300.0, 2400.0) if hard else (cfg.min_anomaly_s, cfg.max_anomaly_s)
        if rate_per_s > 0:
            for h in range(cfg.hosts):
                t = cfg.warmup_s + float(rng.exponential(1.0 / rate_per_s))
                while True:
                    duration = float(rng.uniform(shortest, longest))
                    if t + duration > end_s - 2 * cfg.step_s:
                        break
                    start_ms = self.start_ms + int(t * 1000)
                    episodes.append((start_ms, start_ms + int(duration * 1000), h))
                    t += duration + cfg.min_gap_s + float(rng.exponential(1.0 / rate_per_s))
        episodes.sort()
        order = rng.permutation(len(SIMULATED_TYPES))
        labels = []
        for i, (start_ms, end_ms, h) in enumerate(episodes):
            kind = SIMULATED_TYPES[order[i % len(order)]]
            cluster, host = self.hosts[h]
            metrics = HARD_METRICS[kind] if hard else PRIMARY_METRICS[kind]
            labels.append(
                AnomalyLabel(
                    anomaly_id=f"{host}@{start_ms}",
                    type=kind.value,
                    host=host,
                    cluster=cluster,
                    metrics=list(metrics),
                    start_ms=start_ms,
                    end_ms=end_ms,
                    shape=HARD_SHAPES[i % len(HARD_SHAPES)] if hard else None,
                    root=metrics[0] if hard else None,
                )
            )
        return labels

    # -- values --------------------------------------------------------------------------------
    def _chunk(self, chunk_index: int, ar_state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Times (T,) in ms and values (T, hosts, metrics) for one chunk of ticks."""
        cfg, p = self.config, self.params
        first = chunk_index * CHUNK_TICKS
        n = min(CHUNK_TICKS, self.n_ticks - first)
        rng = np.random.default_rng([cfg.seed, chunk_index])
        ticks = np.arange(first, first + n)
        t_ms = self.start_ms + ticks * self.step_ms
        t_s = t_ms[:, None] / 1000.0 + p.tz_shift_s[None, :]
        day_frac = (t_s % 86400.0) / 86400.0
        daily = np.sin(2 * math.pi * (day_frac - 0.375))
        weekly = 1.0 - 0.2 * _weekend_weight(t_s)
        days = (t_ms[:, None] - self.start_ms) / 86_400_000.0
        h = cfg.hosts
        ar = np.empty((n, h))
        shocks = rng.normal(0.0, 0.012, (n, h))
        state = ar_state
        for i in range(n):
            state = 0.9 * state + shocks[i]
            ar[i] = state
        ar_state[:] = state
        load = p.base_load * (1 + 0.3 * daily) * weekly * (1 + p.trend_per_day * days) * (1 + ar)
        load = np.clip(load, 0.02, None)

        def noise(scale: float) -> np.ndarray:
            return rng.normal(0.0, scale, (n, h))

        v = np.empty((n, h, len(METRIC_NAMES)))
        cpu = np.clip(0.1 + 0.6 * load + noise(0.015), 0.01, 1.0)
        v[:, :, _IDX["cpu_util"]] = cpu
        v[:, :, _IDX["memory_util"]] = np.clip(
            p.mem_base + 0.08 * load + 0.01 * days + noise(0.005), 0.0, 1.0
        )
        network = np.clip(0.05 + 0.45 * load * (1 + noise(0.02)), 0.0, 1.0)
        v[:, :, _IDX["network_util"]] = network
        v[:, :, _IDX["throughput_mbps"]] = p.tp_base * load * (1 + noise(0.02))
        lat50 = p.lat_base * (1 + 0.5 * cpu**2) * (1 + noise(0.03))
        v[:, :, _IDX["latency_p50_ms"]] = lat50
        v[:, :, _IDX["latency_p99_ms"]] = lat50 * (3 + cpu) * (1 + noise(0.05))
        v[:, :, _IDX["error_rate"]] = np.clip(
            0.002 * (1 + 2 * np.maximum(cpu - 0.7, 0)) * (1 + noise(0.3)), 0.0, 1.0
        )
        v[:, :, _IDX["compression_ratio"]] = p.comp_base * (1 + 0.03 * daily) * (1 + noise(0.02))
        v[:, :, _IDX["bandwidth_prediction_accuracy"]] = np.clip(0.93 + noise(0.01), 0.0, 1.0)
        v[:, :, _IDX["consensus_time_ms"]] = p.cons_base * (1 + 0.3 * network) * (1 + noise(0.04))
        self._inject(t_ms, v, rng)
        return t_ms, v

    def _inject(self, t_ms: np.ndarray, v: np.ndarray, rng: np.random.Generator) -> None:
        if self.config.difficulty == "hard":
            self._inject_hard(t_ms, v, rng)
            return
        host_index = {host: i for i, (_, host) in enumerate(self.hosts)}
        lo, hi = int(t_ms[0]), int(t_ms[-1])
        for label in self.labels:
            if label.end_ms <= lo or label.start_ms > hi:
                continue
            rows = (t_ms >= label.start_ms) & (t_ms < label.end_ms)
            h = host_index[label.host]
            u = self._anomaly_params[label.anomaly_id]  # per-anomaly magnitude in [0, 1)
            n = int(rows.sum())
            kind = AnomalyType(label.type)
            m = v[rows, h]
            if kind is AnomalyType.LATENCY_SPIKE:
                m[:, _IDX["latency_p50_ms"]] *= 2.5 + 1.5 * u
                m[:, _IDX["latency_p99_ms"]] *= 3.0 + 2.0 * u
            elif kind is AnomalyType.THROUGHPUT_DROP:
                m[:, _IDX["throughput_mbps"]] *= 0.5 - 0.2 * u
                m[:, _IDX["network_util"]] *= 0.7
            elif kind is AnomalyType.ERROR_BURST:
                m[:, _IDX["error_rate"]] += 0.03 + 0.07 * u + rng.normal(0, 0.005, n)
            elif kind is AnomalyType.RESOURCE_EXHAUSTION:
                m[:, _IDX["cpu_util"]] = np.clip(0.96 + rng.normal(0, 0.01, n), 0.0, 1.0)
                m[:, _IDX["memory_util"]] = np.minimum(
                    m[:, _IDX["memory_util"]] + 0.25 + 0.1 * u, 0.99
                )
                m[:, _IDX["latency_p50_ms"]] *= 1.05
            elif kind is AnomalyType.COMPRESSION_FAILURE:
                m[:, _IDX["compression_ratio"]] = 1.0 + 0.4 * u + rng.normal(0, 0.02, n)
            elif kind is AnomalyType.PREDICTION_ERROR:
                m[:, _IDX["bandwidth_prediction_accuracy"]] = (
                    0.55 + 0.15 * u + rng.normal(0, 0.02, n)
                )
            elif kind is AnomalyType.CONSENSUS_DELAY:
                m[:, _IDX["consensus_time_ms"]] *= 3.0 + 3.0 * u
            v[rows, h] = m

    def _inject_hard(self, t_ms: np.ndarray, v: np.ndarray, rng: np.random.Generator) -> None:
        """The hard scenario's anomalies (module docstring), on this chunk's clean values."""
        host_index = {host: i for i, (_, host) in enumerate(self.hosts)}
        # a noise width per host and metric: the sample-to-sample noise of the clean values
        width = np.std(np.diff(v, axis=0), axis=0) / math.sqrt(2)
        lo, hi = int(t_ms[0]), int(t_ms[-1])
        for label in self.labels:
            if label.end_ms <= lo or label.start_ms > hi:
                continue
            h = host_index[label.host]
            u = self._anomaly_params[label.anomaly_id]
            size = 1.5 + 1.5 * u  # noise widths
            lag_ms = (label.end_ms - label.start_ms) // 4
            for k, metric in enumerate(label.metrics):
                onset = label.start_ms + (lag_ms if k else 0)
                rows = (t_ms >= onset) & (t_ms < label.end_ms)
                if not rows.any():
                    continue
                j = _IDX[metric]
                w = float(width[h, j])
                bad = BAD_DIRECTION[metric]
                if label.shape == "shift":
                    v[rows, h, j] += bad * size * w
                elif label.shape == "ramp":
                    elapsed = (t_ms[rows] - onset) / max(label.end_ms - onset, 1)
                    v[rows, h, j] += bad * size * w * np.minimum(1.0, 2.0 * elapsed)
                elif label.shape == "variance":
                    v[rows, h, j] += rng.normal(0.0, (1.0 + u * 2.0) * w, int(rows.sum()))
                else:  # cycle: the metric stops following its daily cycle, holds its onset level
                    first = int(np.flatnonzero(rows)[0])
                    level = float(np.median(v[max(first - 12, 0) : first + 1, h, j]))
                    v[rows, h, j] = level + rng.normal(0.0, w, int(rows.sum()))
            np.clip(v[:, h, :], _LOWER, _UPPER, out=v[:, h, :])

    def ticks(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Chunks of (times in ms (T,), values (T, hosts, metrics)), in time order."""
        ar_state = np.zeros(self.config.hosts)
        n_chunks = (self.n_ticks + CHUNK_TICKS - 1) // CHUNK_TICKS
        for c in range(n_chunks):
            yield self._chunk(c, ar_state)

    # -- events and messages -------------------------------------------------------------------
    @property
    def n_events(self) -> int:
        return self.n_ticks * self.config.hosts * len(METRIC_NAMES)

    def events(self) -> Iterator[MetricEvent]:
        offsets = self.params.offset_ms.tolist()
        hook = self.hook
        for t_ms, values in self.ticks():
            rows = values.tolist()
            for i, t in enumerate(t_ms.tolist()):
                for h, (cluster, host) in enumerate(self.hosts):
                    ts = t + offsets[h]
                    if hook is None:
                        for name, value in zip(METRIC_NAMES, rows[i][h], strict=True):
                            yield MetricEvent(ts, host, cluster, name, value)
                        continue
                    tick = dict(zip(METRIC_NAMES, rows[i][h], strict=True))
                    tick.update(hook(h, ts))
                    for name, value in tick.items():
                        yield MetricEvent(ts, host, cluster, name, value)

    def messages(self, fmt: str = "json") -> Iterator[tuple[bytes, bytes]]:
        """(key, value) Kafka messages in one of the wire formats.

        - `json`: one object per message, keyed by series;
        - `json-array`: one array per host and tick (a Telegraf-style flush), keyed by host;
        - `line`: InfluxDB line protocol, one line per metric, one message per host and tick.
        """
        for key, value, _ts in self.timed_messages(fmt):
            yield key, value

    def timed_messages(self, fmt: str = "json") -> Iterator[tuple[bytes, bytes, int]]:
        """`messages` with each message's event time (ms; a batch's first event's) for its
        Kafka record timestamp."""
        if fmt == "json":
            enc = msgspec.json.Encoder()
            for e in self.events():
                yield e.series.encode(), enc.encode(e.to_wire()), e.ts_ms
        elif fmt in ("json-array", "line"):
            yield from self._batched(fmt)
        else:
            raise ValueError(f"unknown format {fmt!r}: json, json-array or line")

    def _batched(self, fmt: str) -> Iterator[tuple[bytes, bytes, int]]:
        enc = msgspec.json.Encoder()
        batch: list[MetricEvent] = []
        current: tuple[int, str] | None = None
        for e in self.events():
            if current is not None and (e.ts_ms, e.host) != current:
                yield _encode_batch(batch, fmt, enc)
                batch = []
            current = (e.ts_ms, e.host)
            batch.append(e)
        if batch:
            yield _encode_batch(batch, fmt, enc)


def _weekend_weight(t_s: np.ndarray) -> np.ndarray:
    """0 on weekdays, 1 on Saturday and Sunday, with 6-hour cosine ramps either side.

    Load eases into and out of the weekend instead of stepping at midnight, as real fleets do.
    """
    ramp = 6 * 3600.0
    week_s = (t_s + 3 * 86400.0) % (7 * 86400.0)  # seconds since Monday 00:00 (1970-01-01: Thu)
    sat = 5 * 86400.0
    up = np.clip((week_s - (sat - ramp)) / ramp, 0.0, 1.0)  # Friday 18:00 -> Saturday 00:00
    down = np.clip(week_s / ramp, 0.0, 1.0)  # Monday 00:00 -> 06:00, from the weekend
    weight = np.where(week_s >= sat - ramp, 0.5 - 0.5 * np.cos(np.pi * up), 0.0)
    return np.where(week_s < ramp, 0.5 + 0.5 * np.cos(np.pi * down), weight)


def _encode_batch(
    batch: list[MetricEvent], fmt: str, enc: msgspec.json.Encoder
) -> tuple[bytes, bytes, int]:
    key, ts = batch[0].host.encode(), batch[0].ts_ms
    if fmt == "json-array":
        return key, enc.encode([e.to_wire() for e in batch]), ts
    lines = [
        f"{e.metric},host={e.host},cluster={e.cluster} value={e.value!r} {e.ts_ms * 1_000_000}"
        for e in batch
    ]
    return key, "\n".join(lines).encode(), ts
