"""One host's bandwidth-predictor (PBA) tuning loop, the tuning flow's per-host step for the
PBA knobs (docs/TUNING.md#bandwidth-flow). Pure logic.

The predictor (`run_predictor`, the one the training environment runs): every
`update_interval` samples it provisions the next interval's bandwidth from the last `window`
samples, mean + z(confidence) × std; a day's cost is the over-provisioned bandwidth plus
`SHORTFALL_COST` × the unmet demand (per sample of the last week's mean demand) plus
`UPDATE_COST` per re-provisioning.

The tuner is **hindsight** (follow the leader on yesterday): once a day of the host's event
time, every setting of the grid is rerun on the day just seen and the best one is proposed
for the next day. No policy and no training: on the six real traffic series it reaches
0.919 of the grid-best (0.904 realized) where Optuna reaches 0.888 and the DQN, on series it
was not trained on, 0.797 (docs/QUALITY.md), so it is what the flow serves.

Per host: `pba_demand_mbps` reports (any cadence) are averaged into 5-minute samples; a gap
of up to an hour is filled with the last sample, a longer one restarts the history. The
first decision needs two days (the day judged and up to a day of history before it) and
waits a stable share of a day more per host (`decision_offset`: a fleet that started
together does not rerun the grid for every host at once); then one a day. Checks, in order:
the expected gain on yesterday (< `min_gain`: no churn), then the guardrails per changed
knob (bounds, canary, cooldown, and the safe set with the share of demand served as the
throughput and the cost as the p99: a setting that would have served less than 95 % of what
the current one served is refused). No revert: a setting's effect is computed exactly, not
observed (the flow reruns the predictor on the host's real demand every day and re-chooses),
so an observation-based guard has nothing to add.
"""

from __future__ import annotations

import itertools
import zlib
from dataclasses import dataclass, field
from statistics import NormalDist

import numpy as np

from novacron_ml.core.schema import MetricEvent, rfc3339_ms
from novacron_ml.core.tuning import (
    DEFAULT_PBA,
    PBA_CONFIDENCES,
    PBA_GRIDS,
    PBA_KNOBS,
    PBA_UPDATE_INTERVALS,
    PBA_WINDOWS,
    BandwidthSetting,
    Recommendation,
    bandwidth_key,
)
from operators.tuning.guardrails import Estimate, GuardrailConfig, Guardrails, adopts

WINDOWS, CONFIDENCES, UPDATE_INTERVALS = PBA_WINDOWS, PBA_CONFIDENCES, PBA_UPDATE_INTERVALS
SHORTFALL_COST = 4.0
"""Unmet demand costs this many times idle bandwidth (queued or dropped traffic)."""
UPDATE_COST = 0.05
"""Each re-provisioning costs this share of one sample's mean demand."""
SEGMENT = 288
"""One decision's period: a day of 5-minute samples."""
SAMPLE_MS = 300_000
SCALE_SAMPLES = 2016
"""A week of samples: the cost's unit is the mean demand over the week before the day."""
MAX_GAP_SAMPLES = 12
"""A gap of up to an hour of samples is filled with the last one; longer restarts history."""
CONFIGS: tuple[tuple[float, ...], ...] = tuple(itertools.product(*PBA_GRIDS))


def run_predictor(
    y: np.ndarray, start: int, stop: int, window: int, confidence: float, update: int
) -> dict[str, float]:
    """Provision y[start:stop] with the predictor; cost, accuracy and waste per sample."""
    z = NormalDist().inv_cdf(confidence) if confidence > 0.5 else 0.0
    scale = float(np.mean(y[max(0, start - SCALE_SAMPLES) : start])) or 1.0  # the last week's
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


def decision_offset(host: str) -> int:
    """Samples a host's first decision waits past its second day: a stable spread over the
    day (crc32 of its name), so a fleet that started together does not rerun the grid for
    every host in the same minute (~0.3 s a host on this VM)."""
    return zlib.crc32(host.encode()) % SEGMENT


def rerun_day(y: np.ndarray) -> dict[tuple[float, ...], dict[str, float]]:
    """Every setting of the grid on the last `SEGMENT` samples of `y` (the rest: history)."""
    start = len(y) - SEGMENT
    return {c: run_predictor(y, start, len(y), int(c[0]), float(c[1]), int(c[2]))
            for c in CONFIGS}  # fmt: skip


@dataclass(frozen=True)
class BandwidthContext:
    """What every host's PBA loop shares (per worker; never state)."""

    guardrails: GuardrailConfig
    mode: str = "dry-run"
    min_gain: float = 0.01
    model: str = "hindsight"


@dataclass
class BandwidthTuner:
    """A host's PBA tuning state (Bytewax state of the `tune` step, keyed by
    `bandwidth_key(host)`): up to 8 days of 5-minute demand samples (~20 KB pickled)."""

    host: str
    cluster: str = ""
    config: tuple[float, ...] = DEFAULT_PBA
    version: int = 0
    samples: list[float] = field(default_factory=list)
    bucket: int | None = None
    """The 5-minute sample being filled (event time // `SAMPLE_MS`), its sum and count."""
    bucket_sum: float = 0.0
    bucket_n: int = 0
    since_decision: int = 0
    """Samples since the last decision (one a day once two days are held)."""
    running: dict[str, float] = field(default_factory=dict)
    guard: Guardrails | None = None
    decisions: int = 0
    """Days decided (a decision with no change counts too)."""

    @property
    def key(self) -> str:
        return bandwidth_key(self.host)

    def compacted(self) -> BandwidthTuner | None:
        """What a silent host keeps: its setting and version (its history is stale)."""
        if self.config == DEFAULT_PBA and self.version == 0:
            return None
        return BandwidthTuner(self.host, self.cluster, self.config, self.version)

    def on_setting(self, record: BandwidthSetting) -> None:
        if adopts(record.source, record.version, record.config, self.version, self.config):
            self.config = record.config
        self.version = max(self.version, record.version)

    def on_event(self, event: MetricEvent, ctx: BandwidthContext) -> list[object]:
        self.cluster = self.cluster or event.cluster
        if event.metric in PBA_KNOBS:
            self.running[event.metric] = event.value
            if len(self.running) == len(PBA_KNOBS):
                w, c, u = (self.running[k] for k in PBA_KNOBS)
                running = (int(w), c, int(u)) if w == int(w) and u == int(u) else (w, c, u)
                if all(v in g for v, g in zip(running, PBA_GRIDS, strict=True)):
                    self.config = running  # where the host stands
            return []
        if event.metric != "pba_demand_mbps":
            return []
        b = event.ts_ms // SAMPLE_MS
        if self.bucket is None or b == self.bucket:
            self.bucket = b
            self.bucket_sum += event.value
            self.bucket_n += 1
            return []
        if b < self.bucket:
            return []  # a late report for a sample already closed: not reopened
        self._close_sample(b)
        self.bucket, self.bucket_sum, self.bucket_n = b, event.value, 1
        out: list[object] = []
        if self.decisions:
            due = self.since_decision >= SEGMENT and len(self.samples) >= 2 * SEGMENT
        else:  # the first: two days held, and the host's share of a day more
            due = len(self.samples) >= 2 * SEGMENT + decision_offset(self.host)
        if due:
            self.since_decision = 0
            out += self.decide(event.ts_ms, ctx)
        return out

    def _close_sample(self, next_bucket: int) -> None:
        """The filled 5-minute sample joins the history (and copies of it for a short gap
        before `next_bucket`); a long gap restarts the history."""
        assert self.bucket is not None
        mean = self.bucket_sum / self.bucket_n
        gap = next_bucket - self.bucket - 1
        if gap > MAX_GAP_SAMPLES:
            self.samples, self.since_decision = [], 0  # the history is broken: start again
            return
        new = [mean] * (1 + gap)
        self.samples = (self.samples + new)[-(SCALE_SAMPLES + SEGMENT) :]
        self.since_decision += len(new)

    def decide(self, now_ms: int, ctx: BandwidthContext) -> list[object]:
        """Every setting rerun on the day just seen; the best proposed for the next day."""
        self.decisions += 1
        guard = self.guard = self.guard or Guardrails(ctx.guardrails)
        y = np.asarray(self.samples, dtype=np.float64)
        runs = rerun_day(y)
        best = max(runs, key=lambda c: runs[c]["reward"])
        current = runs.get(tuple(self.config))
        if current is None:  # off the grid (an operator's setting): not tuned from there
            return []
        if best == tuple(self.config):
            return []
        cost_now, cost_best = -current["reward"], -runs[best]["reward"]
        gain = cost_now / cost_best - 1 if cost_best > 0 else 0.0
        now = Estimate(1 - current["shortfall"], 0.0, cost_now, 0.0)
        cand = Estimate(1 - runs[best]["shortfall"], 0.0, cost_best, 0.0)
        changed = [i for i in range(len(PBA_KNOBS)) if best[i] != self.config[i]]
        now_s = now_ms / 1000.0
        verdicts = []
        for i in changed:
            if gain < ctx.min_gain:
                verdicts.append((i, False, f"gain: expected {gain:+.1%} < {ctx.min_gain:.0%}"))
                continue
            v = guard.decide(self.key, PBA_KNOBS[i], self.config[i], best[i], now_s, now, cand)
            verdicts.append((i, v.allowed, v.guardrail))
        allowed = all(ok for _i, ok, _g in verdicts)
        out: list[object] = []
        for i, ok, verdict in verdicts:
            # the move is one setting: a knob blocked blocks it all
            why = "blocked with the other knobs of this setting" if ok and not allowed else verdict
            out.append(Recommendation(
                host=self.host, cluster=self.cluster, ts=rfc3339_ms(now_ms), knob=PBA_KNOBS[i],
                old=self.config[i], new=best[i], allowed=allowed, guardrail=why,
                mode=ctx.mode, expected_gain=round(gain, 4), model=ctx.model,
                subsystem="bandwidth", expected_cost=round(cost_best, 4),
                current_cost=round(cost_now, 4), observed_cost=round(cost_now, 4),
            ))  # fmt: skip
        if allowed and ctx.mode == "apply":
            guard.applied_change(self.key, PBA_KNOBS[changed[0]], 0, 0, now_s, now)
            self.config = best
            self.version += 1
            window, confidence, update = best
            out.append(BandwidthSetting(
                host=self.host, cluster=self.cluster, pba_window=int(window),
                pba_confidence=float(confidence), pba_update_interval=int(update),
                version=self.version, ts=rfc3339_ms(now_ms), source="optimizer",
            ))  # fmt: skip
        return out
