"""One host's tuning loop, the tuning flow's per-host step (docs/TUNING.md#flow). Pure logic.

Every `interval_s` of event time, a host that reported its throughput gets one decision:

0. where the host reports the setting it runs (`hde_level`, `hde_chunk_kib`,
   `hde_window_log` as metrics), that is its setting: one changed out of band is adopted, and
   an applied one the host has not taken after `settle_s` is dropped with an `not-applied`
   record (no revert is judged on a change that never happened);
1. revert first: in apply mode, a change is undone when the host's observed throughput,
   relative to what the measured table expects of its setting for its current traffic, fell
   past the guardrails' margin below the same ratio before the change, for two intervals in
   a row (a change of traffic moves the observation and the expectation alike; a setting
   that does worse on this host than the table promised moves only the observation);
2. a setting once reverted on a host is never proposed to it again, and a move the table
   expects to gain less than `min_gain` (1 %) is not made (no churn for nothing);
3. the policy's state from the host's current setting (the latest `dwcp.config` record,
   else `DEFAULT_CONFIG`), its payload mix (`payload_share_*`) and link (`link_mbps`) — the
   mixed mix and 1 Gbit/s when it reports none, said in the record's `assumed` —, the observed
   compression ratio and throughput (`compression_ratio`, `throughput_mbps`);
4. the policy's actions in order of their Q-values: the first one whose new setting passes
   the guardrails is the recommendation (a blocked proposal does not stop the host from
   getting its next-best safe move: the guardrails shield the policy, they do not mute it);
   `keep` ranked first means nothing to do. Canary and cooldown block the host, not a move:
   its decision ends there.

Records: a `Recommendation` per proposal considered (allowed or blocked) and, in apply mode, a
`KnobSetting` for `dwcp.config`. A proposal blocked or recommended in the previous decision
for the same reason is not published again (an operator sees each change of verdict, not one
record a minute). Dry-run (the default) applies nothing, so cooldown and revert never start.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from novacron_ml.core.schema import MetricEvent, rfc3339_ms
from novacron_ml.core.tuning import (
    ACTIONS,
    DEFAULT_CONFIG,
    GRIDS,
    KNOBS,
    PAYLOAD_KINDS,
    KnobSetting,
    Recommendation,
    apply_action,
    policy_state,
)
from operators.tuning import envmodel
from operators.tuning.bandwidth import BandwidthContext
from operators.tuning.consensus import ConsensusContext
from operators.tuning.envmodel import CompressionTable
from operators.tuning.guardrails import (
    Estimate,
    GuardrailConfig,
    Guardrails,
    Verdict,
    adopts,
    interval_due,
)

SHARE_METRICS: dict[str, str] = {f"payload_share_{k.replace('-', '_')}": k for k in PAYLOAD_KINDS}
OBSERVED = ("throughput_mbps", "compression_ratio")
INPUT_METRICS: frozenset[str] = frozenset({*SHARE_METRICS, "link_mbps", *OBSERVED, *KNOBS})
"""The metrics a host's loop reads; the rest of a host's metrics pass it by (a cluster's
consensus metrics go to its `ClusterTuner`)."""
MODES = ("dry-run", "apply")


@dataclass(frozen=True)
class TunerContext:
    """What every host's loop shares (per worker; never state): the policy, the measured
    table, the guardrails' settings and the mode."""

    q_values: Callable[[np.ndarray], np.ndarray]
    table: CompressionTable
    guardrails: GuardrailConfig
    model: str
    mode: str = "dry-run"
    interval_s: float = 60.0
    min_gain: float = 0.01
    """A change the table expects to gain less than this is not worth making (churn)."""
    consensus: ConsensusContext | None = None
    """The clusters' consensus loop (`operators.tuning.consensus`); None: not tuned."""
    bandwidth: BandwidthContext | None = None
    """The hosts' bandwidth-predictor loop (`operators.tuning.bandwidth`); None: not tuned."""

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"tuning mode must be one of {MODES}: {self.mode!r}")
        if self.interval_s <= 0:
            raise ValueError("tuning interval_s must be > 0")


@dataclass
class HostTuner:
    """A host's tuning state (Bytewax state of the `tune` step: small and picklable)."""

    host: str
    cluster: str = ""
    config: tuple[int, ...] = DEFAULT_CONFIG
    version: int = 0
    shares: dict[str, float] = field(default_factory=dict)
    link_mbps: float | None = None
    sums: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    next_decision_ms: int | None = None
    guard: Guardrails | None = None
    published: set[tuple[str, int, str]] = field(default_factory=set)
    reverted: set[tuple[int, ...]] = field(default_factory=set)
    """Settings reverted on this host: never proposed to it again."""
    running: dict[str, int] = field(default_factory=dict)
    """The setting the host reports it runs (`hde_level`, ... as metrics), when it does."""
    pending: tuple[int, ...] | None = None
    pending_since_ms: int = 0
    """An applied setting the host has not reported running yet, and since when."""
    decisions: int = 0

    def compacted(self) -> HostTuner | None:
        """What a host that went silent keeps (docs/TUNING.md#flow): the setting it was left
        at, its version and the settings reverted on it, so that it is tuned from where it
        stands if it returns; its observations, cooldown, pending change and published
        verdicts go (they describe a past that a returning host no longer has). None when
        nothing is worth keeping: a host at the default that was never changed."""
        if self.config == DEFAULT_CONFIG and self.version == 0 and not self.reverted:
            return None
        return HostTuner(self.host, self.cluster, self.config, self.version,
                         reverted=set(self.reverted))  # fmt: skip

    # -- inputs ----------------------------------------------------------------------------
    def on_setting(self, record: KnobSetting) -> None:
        """A `dwcp.config` record: adopt it unless it is older than what this loop knows, or
        is this loop's own apply-mode record coming back through the topic (source optimizer
        or revert, a version it already holds): the loop knows more about that setting than
        the echo does — e.g. that the host never took it (`not-applied`) — and when the echo
        arrives must not change what it decides (it arrives whenever the topic is read: at
        once, later, or after a restart)."""
        if adopts(record.source, record.version, record.config, self.version, self.config):
            self.config = record.config
        self.version = max(self.version, record.version)

    def on_event(self, event: MetricEvent, ctx: TunerContext) -> list[object]:
        name = event.metric
        if name in SHARE_METRICS:
            self.shares[SHARE_METRICS[name]] = event.value
        elif name == "link_mbps":
            self.link_mbps = event.value
        elif name in OBSERVED:
            self.sums[name] = self.sums.get(name, 0.0) + event.value
            self.counts[name] = self.counts.get(name, 0) + 1
        elif name in KNOBS:
            self.running[name] = int(event.value)
        self.cluster = self.cluster or event.cluster
        self.next_decision_ms, due = interval_due(self.next_decision_ms, event.ts_ms,
                                                  ctx.interval_s)  # fmt: skip
        if not due:
            return []
        out = self.decide(event.ts_ms, ctx)
        self.sums.clear()
        self.counts.clear()
        return out

    # -- the decision ------------------------------------------------------------------------
    def _mean(self, name: str) -> float | None:
        n = self.counts.get(name, 0)
        return self.sums[name] / n if n else None

    def traffic(self, table: CompressionTable) -> tuple[dict[str, float], float, list[str]]:
        """The host's payload mix and link (MB/s), and what had to be assumed."""
        assumed = []
        mix = envmodel.normalised(self.shares, table.kinds)
        if not mix:
            mix = envmodel.normalised(envmodel.MIXES["mixed"], table.kinds)
            assumed.append("payload mix: mixed (no payload_share_* reported)")
        if self.link_mbps and self.link_mbps > 0:
            link = self.link_mbps / 8.0
        else:
            link = envmodel.LINK_MB_S
            assumed.append(f"link: {link * 8:g} Mbit/s (no link_mbps reported)")
        return mix, link, assumed

    def decide(self, now_ms: int, ctx: TunerContext) -> list[object]:
        observed_mbps = self._mean("throughput_mbps")
        if observed_mbps is None or observed_mbps <= 0:
            return []  # nothing observed this interval: no decision
        self.decisions += 1
        guard = self.guard = self.guard or Guardrails(ctx.guardrails)
        now_s = now_ms / 1000.0
        table = ctx.table
        mix, link, assumed = self.traffic(table)
        lost = self._reconcile(now_ms, ctx, guard)
        observed = observed_mbps / 8.0
        model_now = envmodel.measure_mix(table, mix, self.config, link)
        # How the host does against the table's expectation of its setting for its current
        # traffic (1: as measured). A revert compares this before and after a change, so a
        # change of traffic (which moves both) is not taken for a bad setting.
        relative = observed / model_now["reward"]
        seen = Estimate(relative, 0.0, 1.0 / relative, 0.0)

        def record(**kw: object) -> Recommendation:
            return Recommendation(
                host=self.host,
                cluster=self.cluster,
                ts=rfc3339_ms(now_ms),
                mode=ctx.mode,
                observed_mb_s=round(observed, 3),
                model=ctx.model,
                assumed=assumed,
                **kw,  # type: ignore[arg-type]
            )

        if lost is not None:
            knob, old_v, new_v = lost
            return [record(knob=knob, old=old_v, new=new_v, allowed=False, action="not-applied",
                           guardrail=f"not applied: the host still runs {self.config} "
                           f"{ctx.guardrails.settle_s:g} s after the change")]  # fmt: skip
        if ctx.mode == "apply":
            revert = guard.observe(self.host, now_s, seen.throughput, seen.p99)
            if revert is not None:
                knob, bad, old = revert
                i = KNOBS.index(knob)
                self.reverted.add(tuple(self.config))
                self.config = tuple(int(old) if j == i else v for j, v in enumerate(self.config))
                self.pending, self.pending_since_ms = self.config, now_ms
                self.published.clear()
                rec = record(
                    knob=knob,
                    old=int(bad),
                    new=int(old),
                    allowed=True,
                    action="revert",
                    guardrail=f"revert: throughput below the table's expectation past the "
                    f"margin for {ctx.guardrails.revert_after} intervals",
                )
                return [rec, self._setting(now_ms, "revert")]

        default = envmodel.default_reward(table, mix, link)
        ratio = self._mean("compression_ratio") or model_now["ratio"]
        state = policy_state(
            self.config, mix, ratio, model_now["compress_mb_s"], observed / default - 1.0, link
        )
        q = ctx.q_values(np.asarray([state], dtype=np.float32))[0]
        current = envmodel.estimate(table, mix, self.config, link)
        out: list[object] = []
        published: set[tuple[str, int, str]] = set()
        for action in np.argsort(-q, kind="stable").tolist():
            if action == len(ACTIONS) - 1:
                break  # keep: the policy expects nothing better from here
            new = apply_action(self.config, action)
            if new == self.config:
                continue  # already at the grid's edge
            i = action // 2
            knob, old_v, new_v = KNOBS[i], int(self.config[i]), int(new[i])
            cand = envmodel.estimate(table, mix, new, link)
            gain = cand.throughput / current.throughput - 1
            if new in self.reverted:
                verdict = Verdict(False, f"reverted: {new} regressed on this host before")
            elif gain < ctx.min_gain:
                verdict = Verdict(False, f"gain: expected {gain:+.1%} < {ctx.min_gain:.0%}")
            else:
                verdict = guard.decide(self.host, knob, old_v, new_v, now_s, current, cand)
            check = verdict.guardrail.split(":")[0]
            sig = (knob, new_v, check)
            published.add(sig)
            if sig not in self.published:
                out.append(
                    record(
                        knob=knob,
                        old=old_v,
                        new=new_v,
                        allowed=verdict.allowed,
                        guardrail=verdict.guardrail,
                        expected_gain=round(gain, 4),
                        expected_mb_s=round(cand.throughput, 3),
                        current_mb_s=round(current.throughput, 3),
                    )
                )
            if verdict.allowed:
                if ctx.mode == "apply":
                    guard.applied_change(self.host, knob, old_v, new_v, now_s, seen)
                    self.config = new
                    self.pending, self.pending_since_ms = new, now_ms
                    published.clear()  # the setting moved: every verdict is news again
                    out.append(self._setting(now_ms, "optimizer"))
                break
            if check in ("canary", "cooldown"):
                break  # the host is blocked, not the move
        self.published = published
        return out

    def _reconcile(
        self, now_ms: int, ctx: TunerContext, guard: Guardrails
    ) -> tuple[str, int, int] | None:
        """Where the host reports the setting it runs, that is where it stands: a setting
        changed out of band (or a `dwcp.config` record that has not arrived yet) is adopted;
        an applied one the host has not taken after `settle_s` is dropped (no revert judged
        on a change that never happened), returned as (knob, old, new) to say so."""
        if len(self.running) < len(KNOBS):
            return None  # the host does not report its setting: dwcp.config is the truth
        running = tuple(self.running[k] for k in KNOBS)
        if not all(v in g for v, g in zip(running, GRIDS, strict=True)):
            return None  # a setting off the grid cannot be tuned from: not taken as truth
        if self.pending is not None:
            if running == self.pending:
                self.pending = None  # arrived
            elif now_ms - self.pending_since_ms >= ctx.guardrails.settle_s * 1000:
                wanted, self.pending = self.pending, None
                guard.applied.pop(self.host, None)
                self.config = running
                changed = [
                    i for i, (a, b) in enumerate(zip(running, wanted, strict=True)) if a != b
                ]
                i = changed[0] if changed else 0
                return KNOBS[i], int(running[i]), int(wanted[i])
            return None
        if running != self.config:
            self.config = running
            self.published.clear()
        return None

    def _setting(self, now_ms: int, source: str) -> KnobSetting:
        self.version += 1
        level, chunk, wlog = (int(v) for v in self.config)
        return KnobSetting(
            host=self.host,
            cluster=self.cluster,
            hde_level=level,
            hde_chunk_kib=chunk,
            hde_window_log=wlog,
            version=self.version,
            ts=rfc3339_ms(now_ms),
            source=source,
        )
