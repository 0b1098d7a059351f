"""One cluster's consensus (ACP) tuning loop, the tuning flow's per-cluster step
(docs/TUNING.md#consensus-flow). Pure logic, the consensus twin of `operators.tuning.tuner`.

A cluster's consensus reports `CONSENSUS_METRICS` (commit latency, p99, success share,
messages per request; optionally its node count, p99 round trip and the setting it runs).
Every `interval_s` of event time with a report, the cluster gets one decision:

0. where it reports the setting it runs, that is its setting (adopted when changed out of
   band; an applied one not taken after `settle_s` is dropped with a `not-applied` record);
1. revert first (apply mode): a change after which the observed success share fell past
   `throughput_margin` or the observed p99 rose past `p99_margin`, for `revert_after`
   intervals in a row, is undone and never proposed again. Both sides are means over up to
   `HISTORY` intervals: the last ones at the old setting against those at the new one since
   `settle_s`; a change not undone within `JUDGED` intervals is confirmed (the baseline
   of the next). One interval of a consensus is dominated by whether a leader failed in it:
   judged on single intervals, 34 % of the timeout 400 -> 200 ms changes (which the table
   says cut the cost by a fifth) were undone, on means 7 %, and 96-100 % of worse changes
   are undone instead of 88-96 % (`python bench/consensus_revert.py`);
2. the policy's state exactly as in training (`training.tuning.gridq.grid_state`): the knobs'
   positions on the table's axes (its safe settings) and log(default's cost / observed
   cost), the default's cost being the table's mean for `DEFAULT_ACP`;
3. the policy's actions in order of their Q-values: the first move that passes the checks is
   the recommendation. Checks, in order: safety (the setting is in the table of safe
   settings and keeps `consensus_safe` for the nodes and round trip the cluster reports), a
   setting reverted before, the expected gain (table's mean cost; < `min_gain`: no churn),
   then the guardrails (`Guardrails`: bounds, canary over clusters, cooldown, and the safe
   set with the table's estimate as throughput = success share and p99 = commit p99). A move
   blocked by safety or gain lets the next-best one be tried; canary and cooldown block the
   cluster.

The safe set's confidence bounds use the standard error of the table's mean over its runs
(of the paired differences from the current setting: the table simulates every setting with
the same seeds): what is guarded is a setting's mean over an interval of thousands of
commits, and the table's uncertainty about that mean is what the bound expresses. The spread
of single runs is the wrong yardstick here: a leader failure in 8-16 % of 2-s runs makes the
p99 of single runs spread over a second for every setting, and no move would ever pass.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from novacron_ml.core.schema import MetricEvent, rfc3339_ms
from novacron_ml.core.tuning import (
    ACP_KNOBS,
    DEFAULT_ACP,
    ConsensusSetting,
    Recommendation,
    apply_action,
    consensus_cost,
    consensus_key,
    consensus_safe,
    layout,
)
from operators.tuning.guardrails import (
    Estimate,
    GuardrailConfig,
    Guardrails,
    Verdict,
    adopts,
    interval_due,
)

HISTORY = 10
"""Intervals averaged on each side of a change for the revert check (module doc)."""
JUDGED = 12
"""Intervals after settle a change is judged for; then it is the baseline of the next."""
OBSERVED = ("acp_commit_latency_ms", "acp_commit_p99_ms", "acp_success_ratio",
            "acp_messages_per_request")  # fmt: skip
COLUMNS = ("latency_ms", "p99_ms", "success", "messages_per_request")
"""The table's columns per run, in the order of `OBSERVED`."""


@dataclass(frozen=True)
class ConsensusTable:
    """Every safe setting's simulated runs (`novacron-ml tune measure --env consensus`)."""

    runs: dict[tuple[int, ...], np.ndarray]
    """setting -> (runs, 4): latency ms, p99 ms, success, messages per request."""
    nodes: int
    rtt_p99_ms: float
    default: tuple[int, ...] = DEFAULT_ACP

    @classmethod
    def load(cls, path: Path) -> ConsensusTable:
        data = json.loads(path.read_text())
        meta = data["meta"]
        if tuple(meta["columns"]) != COLUMNS:
            raise ValueError(f"{path}: columns {meta['columns']}, expected {list(COLUMNS)}")
        runs = {tuple(int(v) for v in k.split("/")): np.asarray(rows, dtype=np.float64)
                for k, rows in data["settings"].items()}  # fmt: skip
        default = tuple(int(v) for v in data["default"])
        if default not in runs:
            raise ValueError(f"{path}: the default setting {default} is not in the table")
        return cls(runs, int(meta["network"]["nodes"]), float(meta["rtt_p99_ms"]), default)

    @property
    def axes(self) -> list[list[int]]:
        """Each knob's values among the table's settings: the policy's grid positions."""
        return [sorted({c[i] for c in self.runs}) for i in range(len(ACP_KNOBS))]

    def cost(self, config: tuple[int, ...]) -> float:
        r = self.runs[config]
        return float(np.mean([consensus_cost(*row[[0, 2, 3]]) for row in r]))

    def estimate(self, config: tuple[int, ...], against: tuple[int, ...] | None = None) -> Estimate:
        """The guardrails' view: success share as the throughput, commit p99 as the p99, each
        with the standard error of its mean over the runs (module doc). `against`: the
        setting it is compared with; the table simulates every setting with the same seeds
        (common random numbers), so the uncertainty of the comparison is the standard error
        of the paired differences."""
        r = self.runs[config]
        if against is not None and len(self.runs[against]) == len(r):
            spread = r - self.runs[against]
        else:
            spread = r
        se = spread.std(axis=0, ddof=1) / math.sqrt(len(r)) if len(r) > 1 else np.zeros(4)
        mean = r.mean(axis=0)
        return Estimate(float(mean[2]), float(se[2]), float(mean[1]), float(se[1]))

    def state(self, config: tuple[int, ...], observed_cost: float) -> np.ndarray:
        """The policy's input, as `training.tuning.gridq.grid_state` builds it in training."""
        pos = [axis.index(v) / (len(axis) - 1) for axis, v in zip(self.axes, config, strict=True)]
        last = math.log(self.cost(self.default) / max(observed_cost, 1e-9))
        return np.asarray([[*pos, float(np.clip(last, -3.0, 3.0))]], dtype=np.float32)


@dataclass(frozen=True)
class ConsensusContext:
    """What every cluster's loop shares (per worker; never state)."""

    q_values: Callable[[np.ndarray], np.ndarray]
    table: ConsensusTable
    guardrails: GuardrailConfig
    model: str
    mode: str = "dry-run"
    interval_s: float = 60.0
    min_gain: float = 0.01


@dataclass
class ClusterTuner:
    """A cluster's consensus tuning state (Bytewax state of the `tune` step, keyed by
    `consensus_key(cluster)`: small and picklable)."""

    cluster: str
    config: tuple[int, ...] = DEFAULT_ACP
    version: int = 0
    sums: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    nodes: int | None = None
    rtt_p99_ms: float | None = None
    running: dict[str, int] = field(default_factory=dict)
    pending: tuple[int, ...] | None = None
    pending_since_ms: int = 0
    next_decision_ms: int | None = None
    guard: Guardrails | None = None
    published: set[tuple[str, int, str]] = field(default_factory=set)
    reverted: set[tuple[int, ...]] = field(default_factory=set)
    history: list[tuple[float, float]] = field(default_factory=list)
    """(success, p99) of the last `HISTORY` intervals at the current setting (after settle)."""
    judged: int = 0
    """Intervals judged since the last applied change."""
    decisions: int = 0

    @property
    def key(self) -> str:
        return consensus_key(self.cluster)

    def compacted(self) -> ClusterTuner | None:
        """What a silent cluster keeps (as `HostTuner.compacted`)."""
        if self.config == DEFAULT_ACP and self.version == 0 and not self.reverted:
            return None
        return ClusterTuner(self.cluster, self.config, self.version, reverted=set(self.reverted))

    def on_setting(self, record: ConsensusSetting) -> None:
        """A `dwcp.config` record (the rules of `HostTuner.on_setting`: its own echo and older
        records change nothing)."""
        if adopts(record.source, record.version, record.config, self.version, self.config):
            self.config = record.config
        self.version = max(self.version, record.version)

    def on_event(self, event: MetricEvent, ctx: ConsensusContext) -> list[object]:
        name = event.metric
        if name in OBSERVED:
            self.sums[name] = self.sums.get(name, 0.0) + event.value
            self.counts[name] = self.counts.get(name, 0) + 1
        elif name == "acp_nodes":
            self.nodes = int(event.value)
        elif name == "acp_rtt_p99_ms":
            self.rtt_p99_ms = event.value
        elif name in ACP_KNOBS:
            self.running[name] = int(event.value)
        self.next_decision_ms, due = interval_due(self.next_decision_ms, event.ts_ms,
                                                  ctx.interval_s)  # fmt: skip
        if not due:
            return []
        out = self.decide(event.ts_ms, ctx)
        self.sums.clear()
        self.counts.clear()
        return out

    def _observed(self) -> tuple[float, float, float] | None:
        """(cost, success, p99) over the interval, None without a full report."""
        if any(not self.counts.get(m) for m in OBSERVED):
            return None
        lat, p99, ok, msgs = (self.sums[m] / self.counts[m] for m in OBSERVED)
        return consensus_cost(lat, ok, msgs), ok, p99

    def decide(self, now_ms: int, ctx: ConsensusContext) -> list[object]:
        seen = self._observed()
        if seen is None:
            return []
        cost, ok, p99 = seen
        self.decisions += 1
        guard = self.guard = self.guard or Guardrails(ctx.guardrails)
        table, now_s = ctx.table, now_ms / 1000.0
        nodes = self.nodes or table.nodes
        rtt = self.rtt_p99_ms if self.rtt_p99_ms is not None else table.rtt_p99_ms
        assumed = [] if self.nodes else [f"nodes: {table.nodes} (no acp_nodes reported)"]
        if self.rtt_p99_ms is None:
            assumed.append(f"p99 round trip: {table.rtt_p99_ms:g} ms (no acp_rtt_p99_ms)")

        def record(**kw: object) -> Recommendation:
            return Recommendation(host="", cluster=self.cluster, ts=rfc3339_ms(now_ms),
                                  mode=ctx.mode, model=ctx.model, subsystem="consensus",
                                  observed_cost=round(cost, 4), assumed=assumed,
                                  **kw)  # type: ignore[arg-type]  # fmt: skip

        lost = self._reconcile(now_ms, ctx, guard, table)
        if lost is not None:
            knob, old_v, new_v = lost
            return [record(knob=knob, old=old_v, new=new_v, allowed=False, action="not-applied",
                           guardrail=f"not applied: the cluster still runs {self.config} "
                           f"{ctx.guardrails.settle_s:g} s after the change")]  # fmt: skip
        applied = guard.applied.get(self.key)
        if applied is None or now_s - applied.at_s >= ctx.guardrails.settle_s:
            self.history = [*self.history, (ok, p99)][-HISTORY:]
            self.judged += applied is not None
        mean_ok, mean_p99 = (float(v) for v in np.mean(self.history or [(ok, p99)], axis=0))
        observed = Estimate(mean_ok, 0.0, mean_p99, 0.0)
        if applied is not None and self.judged > JUDGED:
            guard.applied.pop(self.key)  # judged long enough: the new setting is the baseline
        elif ctx.mode == "apply":
            revert = guard.observe(self.key, now_s, mean_ok, mean_p99)
            if revert is not None:
                knob, bad, old = revert
                i = ACP_KNOBS.index(knob)
                self.reverted.add(tuple(self.config))
                self.config = tuple(int(old) if j == i else v for j, v in enumerate(self.config))
                self.pending, self.pending_since_ms = self.config, now_ms
                self.published.clear()
                self.history, self.judged = [], 0
                rec = record(knob=knob, old=int(bad), new=int(old), allowed=True, action="revert",
                             guardrail="revert: success share or commit p99 worse than before "
                             f"the change past the margin for {ctx.guardrails.revert_after} "
                             "intervals")  # fmt: skip
                return [rec, self._setting(now_ms, "revert")]
        if self.config not in table.runs:
            return [record(knob=ACP_KNOBS[0], old=self.config[0], new=self.config[0],
                           allowed=False, guardrail=f"safety: the cluster runs {self.config}, "
                           "not a setting of the consensus table: not tuned")]  # fmt: skip
        q = ctx.q_values(table.state(self.config, cost))[0]
        current, current_cost = table.estimate(self.config), table.cost(self.config)
        out: list[object] = []
        published: set[tuple[str, int, str]] = set()
        n_actions = len(layout("consensus")[1])
        for action in np.argsort(-q, kind="stable").tolist():
            if action == n_actions - 1:
                break  # keep
            new = apply_action(self.config, action, table.axes)
            if new == self.config:
                continue  # the grid's edge
            i = action // 2
            knob, old_v, new_v = ACP_KNOBS[i], int(self.config[i]), int(new[i])
            unsafe = consensus_safe(new, nodes, rtt)
            if unsafe is None and new not in table.runs:
                unsafe = f"{new} is not a safe setting of the consensus table"
            gain, new_cost = 0.0, 0.0
            if unsafe is not None:
                verdict = Verdict(False, f"safety: {unsafe}")
            else:
                new_cost = table.cost(new)
                gain = current_cost / new_cost - 1
                if new in self.reverted:
                    verdict = Verdict(False, f"reverted: {new} regressed on this cluster before")
                elif gain < ctx.min_gain:
                    verdict = Verdict(False, f"gain: expected {gain:+.1%} < {ctx.min_gain:.0%}")
                else:
                    cand = table.estimate(new, against=self.config)
                    verdict = guard.decide(self.key, knob, old_v, new_v, now_s, current, cand)
            check = verdict.guardrail.split(":")[0]
            sig = (knob, new_v, check)
            published.add(sig)
            if sig not in self.published:
                out.append(record(knob=knob, old=old_v, new=new_v, allowed=verdict.allowed,
                                  guardrail=verdict.guardrail, expected_gain=round(gain, 4),
                                  expected_cost=round(new_cost, 4),
                                  current_cost=round(current_cost, 4)))  # fmt: skip
            if verdict.allowed:
                if ctx.mode == "apply":
                    guard.applied_change(self.key, knob, old_v, new_v, now_s, observed)
                    self.config = new
                    self.pending, self.pending_since_ms = new, now_ms
                    published.clear()
                    self.history, self.judged = [], 0
                    out.append(self._setting(now_ms, "optimizer"))
                break
            if check in ("canary", "cooldown"):
                break
        self.published = published
        return out

    def _reconcile(
        self, now_ms: int, ctx: ConsensusContext, guard: Guardrails, table: ConsensusTable
    ) -> tuple[str, int, int] | None:
        """As `HostTuner._reconcile`: the setting the cluster reports running is the truth."""
        if len(self.running) < len(ACP_KNOBS):
            return None
        running = tuple(self.running[k] for k in ACP_KNOBS)
        if self.pending is not None:
            if running == self.pending:
                self.pending = None
            elif now_ms - self.pending_since_ms >= ctx.guardrails.settle_s * 1000:
                wanted, self.pending = self.pending, None
                guard.applied.pop(self.key, None)
                self.config = running
                self.history, self.judged = [], 0
                changed = [i for i, (a, b) in enumerate(zip(running, wanted, strict=True))
                           if a != b]  # fmt: skip
                i = changed[0] if changed else 0
                return ACP_KNOBS[i], int(running[i]), int(wanted[i])
            return None
        if running != self.config:
            self.config = running
            self.published.clear()
            self.history, self.judged = [], 0
        return None

    def _setting(self, now_ms: int, source: str) -> ConsensusSetting:
        self.version += 1
        timeout, batch, quorum = (int(v) for v in self.config)
        return ConsensusSetting(cluster=self.cluster, acp_timeout_ms=timeout, acp_batch=batch,
                                acp_quorum=quorum, version=self.version, ts=rfc3339_ms(now_ms),
                                source=source)  # fmt: skip
