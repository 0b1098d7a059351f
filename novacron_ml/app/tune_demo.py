"""`novacron-ml demo --tune`: the tuning flow in a closed loop with the simulator, no Kafka.

Every simulated host runs a transfer workload (a payload mix over a link) with an HDE setting
that starts at the default. Its `throughput_mbps` (goodput: original data, Mbit/s) and
`compression_ratio` come from the measured compression table for its current setting, with
the measured spread of the speed (`operators.tuning.envmodel`, the table the policy learned
on), and it reports `link_mbps` and `payload_share_*` like a real host would. The tuning flow
(`dataflows.tune`, apply mode) reads those metrics, the ONNX policy proposes, the guardrails
allow or block, and every allowed change goes to the in-process `dwcp.config` the simulator
reads at its next tick, so the knobs move and the metrics respond. Halfway through, the
telemetry hosts start a VM migration (their payload mix changes) and the loop re-converges.
Hosts outside the canary keep the default setting: the control group.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dataflows.inprocess import run_tune_in_process
from dataflows.io import MessageSource
from novacron_ml.app.console import Progress, paint, table
from novacron_ml.core.deadletter import DeadLetter
from novacron_ml.core.schema import parse_rfc3339_ms
from novacron_ml.core.settings import Settings
from novacron_ml.core.simulator import METRIC_NAMES, FleetConfig, FleetSimulator
from novacron_ml.core.tuning import (
    ACP_KNOBS,
    CONSENSUS_METRICS,
    DEFAULT_CONFIG,
    KNOBS,
    PAYLOAD_KINDS,
    TUNING_METRICS,
    ConsensusSetting,
    KnobSetting,
    Recommendation,
    consensus_cost,
    consensus_key,
)
from operators.tuning import envmodel
from operators.tuning.guardrails import in_canary
from operators.tuning.tuner import TunerContext

WORKLOADS: tuple[tuple[str, float], ...] = (
    ("telemetry", 125.0),
    ("migration", 1250.0),
    ("mixed", 125.0),
    ("telemetry", 1250.0),
    ("migration", 125.0),
    ("mixed", 12.5),
)
"""(payload mix, link MB/s) per host, in turn: 1 and 10 Gbit/s links, and a 100 Mbit/s WAN."""
SWITCH = ("telemetry", "migration")
"""Halfway through, hosts sending telemetry start a VM migration."""


@dataclass
class HostTrace:
    mix: str
    link_mb_s: float
    canary: bool
    switch_ms: int | None = None
    changes: list[tuple[int, int, tuple[int, ...], str]] = field(default_factory=list)
    """(decided at, taken at, new setting, source) of every setting the simulator took from
    dwcp.config: the flow's event time of the decision, the tick it was first used, and
    `optimizer` or `revert`."""
    throughput: list[tuple[int, float]] = field(default_factory=list)
    """(event time, goodput MB/s) of every tick."""


@dataclass
class ClusterTrace:
    """A simulated cluster's consensus: its leader host reports the cluster's ACP metrics."""

    leader: str
    canary: bool
    changes: list[tuple[int, int, tuple[int, ...], str]] = field(default_factory=list)
    """As `HostTrace.changes`, of the cluster's consensus setting."""
    cost: list[tuple[int, float, float, float]] = field(default_factory=list)
    """(event time, cost, commit p99 ms, success share) of every tick."""


class ClosedLoop:
    """The simulator's side of the loop: each host's workload and setting, its metrics from
    the measured table, and `dwcp.config` (the settings the flow applies) in process."""

    def __init__(
        self,
        sim: FleetSimulator,
        ctx: TunerContext,
        canary: float,
        seed: int = 0,
        report_setting: bool = True,
    ) -> None:
        self.report_setting = report_setting
        self.table = ctx.table
        self.hosts = [host for _cluster, host in sim.hosts]
        self.setting: dict[str, tuple[int, ...]] = {h: DEFAULT_CONFIG for h in self.hosts}
        half = sim.start_ms + sim.n_ticks * sim.step_ms // 2
        self.trace: dict[str, HostTrace] = {}
        for i, host in enumerate(self.hosts):
            mix, link = WORKLOADS[i % len(WORKLOADS)]
            self.trace[host] = HostTrace(
                mix, link, in_canary(host, canary), half if mix == SWITCH[0] else None
            )
        self.rng = np.random.default_rng(seed)
        # each cluster's consensus: its first host reports it, one simulated run of the
        # consensus table for the cluster's current setting per tick (the runs the guardrails
        # estimate from; leader failures and all)
        self.consensus = ctx.consensus.table if ctx.consensus is not None else None
        self.acp: dict[str, tuple[int, ...]] = {}
        self.clusters: dict[str, ClusterTrace] = {}
        self._leader: dict[str, str] = {}
        if self.consensus is not None:
            for cluster, host in sim.hosts:
                if cluster not in self.clusters:
                    canary_c = in_canary(consensus_key(cluster), canary)
                    self.clusters[cluster] = ClusterTrace(host, canary_c)
                    self.acp[cluster] = self.consensus.default
                    self._leader[host] = cluster
        self.recommendations: list[Recommendation] = []
        self.dead_letters: Counter[str] = Counter()
        self._mixes = {
            n: envmodel.normalised(w, self.table.kinds) for n, w in envmodel.MIXES.items()
        }

    def mix_at(self, host: str, ts_ms: int) -> str:
        t = self.trace[host]
        return SWITCH[1] if t.switch_ms is not None and ts_ms >= t.switch_ms else t.mix

    def hook(self, h: int, ts_ms: int) -> dict[str, float]:
        host = self.hosts[h]
        t = self.trace[host]
        mix = self._mixes[self.mix_at(host, ts_ms)]
        m = envmodel.measure_mix(self.table, mix, self.setting[host], t.link_mb_s, self.rng)
        t.throughput.append((ts_ms, m["reward"]))
        out = {
            "compression_ratio": m["ratio"] * (1 + float(self.rng.normal(0, 0.01))),
            "throughput_mbps": 8 * m["reward"],
            "link_mbps": 8 * t.link_mb_s,
        }
        for kind in PAYLOAD_KINDS:
            out[f"payload_share_{kind.replace('-', '_')}"] = mix.get(kind, 0.0)
        if self.report_setting:  # the setting it runs, as a real host's agent would report it
            for knob, value in zip(KNOBS, self.setting[host], strict=True):
                out[knob] = float(value)
        if host in self._leader:
            out.update(self.consensus_metrics(self._leader[host], ts_ms))
        return out

    def consensus_metrics(self, cluster: str, ts_ms: int) -> dict[str, float]:
        assert self.consensus is not None
        setting = self.acp[cluster]
        runs = self.consensus.runs[setting]
        lat, p99, ok, msgs = (float(v) for v in runs[int(self.rng.integers(len(runs)))])
        self.clusters[cluster].cost.append((ts_ms, consensus_cost(lat, ok, msgs), p99, ok))
        out = {
            "acp_commit_latency_ms": lat,
            "acp_commit_p99_ms": p99,
            "acp_success_ratio": ok,
            "acp_messages_per_request": msgs,
            "acp_nodes": float(self.consensus.nodes),
            "acp_rtt_p99_ms": self.consensus.rtt_p99_ms,
        }
        if self.report_setting:
            out.update({k: float(v) for k, v in zip(ACP_KNOBS, setting, strict=True)})
        return out

    def on_items(self, items: list[Any]) -> None:
        for item in items:
            if isinstance(item, KnobSetting):
                self.setting[item.host] = item.config
                taken = self.trace[item.host].throughput[-1][0]
                decided = parse_rfc3339_ms(item.ts)
                self.trace[item.host].changes.append((decided, taken, item.config, item.source))
            elif isinstance(item, ConsensusSetting):
                self.acp[item.cluster] = item.config
                trace = self.clusters[item.cluster]
                taken = trace.cost[-1][0]
                decided = parse_rfc3339_ms(item.ts)
                trace.changes.append((decided, taken, item.config, item.source))
            elif isinstance(item, Recommendation):
                self.recommendations.append(item)
            elif isinstance(item, DeadLetter):
                self.dead_letters[item.reason.value] += 1


@dataclass
class TuneDemoResult:
    loop: ClosedLoop
    events: int
    seconds: float
    cooldown_s: float
    bounds: dict[str, tuple[float, float]]


def run_tune_demo(
    settings: Settings, fleet: FleetConfig, ctx: TunerContext, *, quiet: bool = False
) -> TuneDemoResult:
    sim = FleetSimulator(fleet)
    loop = ClosedLoop(sim, ctx, ctx.guardrails.canary_fraction, fleet.seed)
    sim.hook = loop.hook
    per_tick = len(METRIC_NAMES) + len(TUNING_METRICS)
    total = sim.n_ticks * (fleet.hosts * per_tick + len(loop.clusters) * len(CONSENSUS_METRICS))
    if not quiet:
        canary = sum(t.canary for t in loop.trace.values())
        print(
            f"Closed loop: {fleet.hosts} hosts, {fleet.duration_s / 3600:g} h, {total:,} "
            f"events; policy {ctx.model}, a decision per host every {ctx.interval_s:g} s, "
            f"mode {ctx.mode}; {canary} hosts in the {ctx.guardrails.canary_fraction:.0%} "
            f"canary (the rest keep the default: the control group); the telemetry hosts start "
            f"a VM migration halfway."
        )
        if ctx.consensus is not None:
            tuned = sum(t.canary for t in loop.clusters.values())
            print(
                f"Consensus: {len(loop.clusters)} clusters from the default 400/1/5 (timeout "
                f"ms/batch/quorum), policy {ctx.consensus.model}, {tuned} in the canary."
            )
        print()
    bar = Progress("tune demo", total)
    done = [0]

    def messages() -> Any:
        for key, value in sim.messages("json"):
            done[0] += 1
            if done[0] % 5000 == 0:
                bar.update(done[0])
            yield key, value

    def on_items(items: list[Any]) -> None:
        loop.on_items(items)
        if not quiet:
            for item in items:
                if isinstance(item, Recommendation) and (item.allowed or item.action == "revert"):
                    print(recommendation_line(item))

    try:
        # small batches: a setting reaches the simulated hosts within two ticks
        batch = 2 * fleet.hosts * per_tick
        seconds = run_tune_in_process(settings, MessageSource(messages, batch), on_items, ctx=ctx)
    finally:
        bar.close()
    bounds = dict(ctx.guardrails.bounds)
    if ctx.consensus is not None:
        bounds.update(ctx.consensus.guardrails.bounds)
    return TuneDemoResult(loop, done[0], seconds, ctx.guardrails.cooldown_s, bounds)


def recommendation_line(rec: Recommendation) -> str:
    verb = "REVERT" if rec.action == "revert" else ("apply " if rec.mode == "apply" else "advise")
    gain = f" expected {rec.expected_gain:+.1%}" if rec.action == "change" else ""
    who = rec.host or consensus_key(rec.cluster)
    return f"{rec.ts}  {verb} {who} {rec.knob} {rec.old} -> {rec.new}{gain}  [{rec.guardrail}]"


def violations(result: TuneDemoResult) -> list[str]:
    """Applied changes a guardrail should have stopped: on a host (a cluster) outside the
    canary, outside a knob's bounds, a consensus setting outside the safe ones, or sooner
    than the cooldown after the previous change or revert (a revert itself may come sooner:
    it undoes a change that did harm)."""
    out = []
    for host, t in result.loop.trace.items():
        out += _violations(result, host, t.changes, t.canary, KNOBS)
    safe = result.loop.consensus.runs if result.loop.consensus is not None else {}
    for cluster, c in result.loop.clusters.items():
        out += _violations(result, f"{cluster} consensus", c.changes, c.canary, ACP_KNOBS)
        out += [f"{cluster}: {config} is not a safe consensus setting"
                for _ts, _taken, config, _source in c.changes if config not in safe]  # fmt: skip
    return out


def _violations(
    result: TuneDemoResult,
    who: str,
    changes: list[tuple[int, int, tuple[int, ...], str]],
    canary: bool,
    knobs: tuple[str, ...],
) -> list[str]:
    out = []
    last: int | None = None
    for ts, _taken, config, source in changes:
        if not canary:
            out.append(f"{who}: changed outside the canary")
        for knob, v in zip(knobs, config, strict=True):
            lo, hi = result.bounds.get(knob, (float("-inf"), float("inf")))
            if not lo <= v <= hi:
                out.append(f"{who}: {knob}={v} outside [{lo:g}, {hi:g}]")
        if source != "revert" and last is not None and ts - last < result.cooldown_s * 1000:
            out.append(f"{who}: two changes {(ts - last) / 1000:.0f} s apart")
        last = ts
    return out


def cluster_rows(result: TuneDemoResult) -> list[list[object]]:
    """Per cluster: the consensus setting reached, the table's mean cost of the default and
    of it, and the observed cost, commit p99 and success share of the first 10 and the last
    30 minutes."""
    loop = result.loop
    rows: list[list[object]] = []
    if loop.consensus is None:
        return rows
    for cluster, c in loop.clusters.items():
        if not c.cost:
            continue
        first, last = c.cost[0][0], c.cost[-1][0] + 1

        def mean(
            i: int, lo: int, hi: int, cost: list[tuple[int, float, float, float]] = c.cost
        ) -> float:
            return statistics.fmean(v[i] for v in cost if lo <= v[0] < hi)

        setting = c.changes[-1][2] if c.changes else loop.consensus.default
        rows.append([
            cluster, "yes" if c.canary else "no", "/".join(map(str, setting)),
            loop.consensus.cost(loop.consensus.default), loop.consensus.cost(setting),
            mean(1, first, first + 600_000), mean(1, last - 1_800_000, last),
            mean(2, first, first + 600_000), mean(2, last - 1_800_000, last),
            mean(3, last - 1_800_000, last),
        ])  # fmt: skip
    return rows


CLUSTER_COLUMNS = ["cluster", "canary", "setting reached", "cost default (table)",
                   "cost reached (table)", "cost first 10 min", "cost last 30 min",
                   "p99 ms first 10 min", "p99 ms last 30 min", "success last 30 min"]  # fmt: skip


def _mean_mb_s(t: HostTrace, lo: int, hi: int) -> float:
    values = [v for ts, v in t.throughput if lo <= ts < hi]
    return statistics.fmean(values) if values else float("nan")


def host_rows(result: TuneDemoResult) -> list[list[object]]:
    """Per host and phase: the setting reached, its gain over the default and share of the
    grid-best for the phase's mix (the table, noise-free), the observed goodput (MB/s) of the
    phase's first 10 and last 30 minutes, and the last 30 minutes' against the table's
    default setting for the phase's traffic."""
    loop = result.loop
    rows: list[list[object]] = []
    for host, t in loop.trace.items():
        first, last = t.throughput[0][0], t.throughput[-1][0]
        phases = [(first, t.switch_ms or last + 1)]
        if t.switch_ms is not None:
            phases.append((t.switch_ms, last + 1))
        for lo, hi in phases:
            mix_name = loop.mix_at(host, lo)
            mix = loop._mixes[mix_name]
            setting: tuple[int, ...] = DEFAULT_CONFIG
            for _decided, taken, config, _source in t.changes:
                if taken < hi:
                    setting = config
            reached = envmodel.measure_mix(loop.table, mix, setting, t.link_mb_s)["reward"]
            default = envmodel.default_reward(loop.table, mix, t.link_mb_s)
            _best, best = envmodel.grid_best(loop.table, mix, t.link_mb_s)
            last30 = _mean_mb_s(t, hi - 1_800_000, hi)
            rows.append(
                [
                    host,
                    f"{mix_name} @ {t.link_mb_s * 8:g} Mbit/s",
                    "yes" if t.canary else "no",
                    "/".join(map(str, setting)),
                    reached / default - 1,
                    reached / best,
                    _mean_mb_s(t, lo, lo + 600_000),
                    last30,
                    last30 / default - 1,
                ]
            )
    return rows


def counts(recs: list[Recommendation]) -> dict[str, Any]:
    """The run's verdicts: changes allowed, reverts, changes not taken, blocks by guardrail."""
    return {
        "allowed": sum(r.allowed and r.action == "change" for r in recs),
        "reverts": sum(r.action == "revert" for r in recs),
        "not_applied": sum(r.action == "not-applied" for r in recs),
        "blocked": Counter(r.blocked_by for r in recs if r.blocked_by is not None),
    }


def summary(result: TuneDemoResult) -> str:
    loop = result.loop
    recs = [r for r in loop.recommendations if r.subsystem == "compression"]
    c = counts(recs)
    blocked = c["blocked"]
    rows = host_rows(result)
    gains: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        gains["canary" if row[2] == "yes" else "control"].append(float(row[4]))  # type: ignore[arg-type]
    bad = violations(result)
    lines = [
        "",
        paint("Summary", "1"),
        f"  events             {result.events:,} messages in {result.seconds:.1f} s; dead letters "
        + (", ".join(f"{k} {v}" for k, v in sorted(loop.dead_letters.items())) or "0"),
        f"  recommendations    {len(recs):,} published: {c['allowed']:,} changes "
        + ("applied" if any(r.mode == "apply" for r in recs) else "advised (dry-run: none applied)")
        + ", "
        f"{c['reverts']} reverted, {c['not_applied']} not taken by the host; blocked by "
        + (", ".join(f"{k} {v}" for k, v in sorted(blocked.items())) or "none"),
        f"  guardrail checks   {len(bad)} violations (every applied change on a canary host, "
        "within bounds, a cooldown after the previous one)",
    ]
    for group, values in sorted(gains.items()):
        lines.append(
            f"  {group:<18} mean gain over the default {statistics.fmean(values):+.1%} "
            f"({len(values)} host phases)"
        )
    lines.append("")
    lines.append(
        table(
            rows,
            [
                "host",
                "traffic",
                "canary",
                "setting reached",
                "gain vs default",
                "of grid-best",
                "MB/s first 10 min",
                "MB/s last 30 min",
                "observed vs default",
            ],
        )
    )
    lines.append(
        "\nsetting: zstd level/chunk KiB/window log (default 3/64/17). Gain and grid-best share: "
        "the measured table, noise-free, for the phase's traffic. MB/s: the goodput the host "
        "reported; observed vs default: its last 30 minutes against the default setting's "
        "expected goodput. Chunk-size increases are blocked by the p99 guard (a bigger chunk "
        "delays each chunk's delivery); set tune.p99_margin higher for bulk transfers."
    )
    clusters = cluster_rows(result)
    if clusters:
        acp = [r for r in loop.recommendations if r.subsystem == "consensus"]
        k = counts(acp)
        lines.append("\n" + paint("Consensus (per cluster)", "1"))
        lines.append(
            f"  recommendations    {len(acp):,} published: {k['allowed']:,} changes "
            + ("applied" if any(r.mode == "apply" for r in acp) else "advised")
            + f", {k['reverts']} reverted, {k['not_applied']} not taken by the cluster; blocked by "
            + (", ".join(f"{n} {v}" for n, v in sorted(k["blocked"].items())) or "none")
        )
        lines.append(table(clusters, CLUSTER_COLUMNS))
        lines.append(
            "\nsetting: ACP timeout ms/batch/quorum of 5 nodes (default 400/1/5). Cost: mean "
            "commit latency (s) + 2 x the share not committed within 1 s + 0.002 per message "
            "(the policy's; lower is better): the table's mean over 64 simulations, and the "
            "one the cluster reported (a simulated run per 5-s tick)."
        )
    for line in bad:
        lines.append(paint(f"VIOLATION {line}", "31"))
    return "\n".join(lines)


def html_page(result: TuneDemoResult) -> str:
    """The demo as an HTML page: the summary, and per host its goodput over time (minute
    means) with every setting the flow applied marked where the host took it."""
    import re

    from novacron_ml.app.plots import SeriesPlot, html_report

    plots = []
    for host, t in result.loop.trace.items():
        minutes: dict[int, list[float]] = defaultdict(list)
        for ts, v in t.throughput:
            minutes[ts // 60_000].append(v)
        times = [m * 60_000 for m in sorted(minutes)]
        values = [statistics.fmean(minutes[m]) for m in sorted(minutes)]
        at = dict(zip(times, values, strict=True))
        marks = []
        for _decided, taken, config, source in t.changes:
            minute = taken // 60_000 * 60_000
            tip = f"{source}: {'/'.join(map(str, config))}"
            marks.append((minute, at.get(minute, values[-1]), tip))
        if t.switch_ms is not None:
            minute = t.switch_ms // 60_000 * 60_000
            marks.append((minute, at.get(minute, values[-1]), f"traffic: {t.mix} -> {SWITCH[1]}"))
        canary = "canary" if t.canary else "control (keeps the default)"
        name = f"{host}: {t.mix} @ {t.link_mb_s * 8:g} Mbit/s, {canary} (goodput MB/s)"
        plots.append(SeriesPlot(name, times, values, [], [], marks))
    for cluster, c in result.loop.clusters.items():
        minutes = defaultdict(list)
        for ts, cost, _p99, _ok in c.cost:
            minutes[ts // 60_000].append(cost)
        times = [m * 60_000 for m in sorted(minutes)]
        values = [statistics.fmean(minutes[m]) for m in sorted(minutes)]
        at = dict(zip(times, values, strict=True))
        marks = [(taken // 60_000 * 60_000, at.get(taken // 60_000 * 60_000, values[-1]),
                  f"{source}: {'/'.join(map(str, config))}")
                 for _decided, taken, config, source in c.changes]  # fmt: skip
        canary = "canary" if c.canary else "control (keeps the default)"
        name = f"{cluster} consensus, {canary} (cost: lower is better)"
        plots.append(SeriesPlot(name, times, values, [], [], marks))
    plain = re.sub(r"\x1b\[[0-9;]*m", "", summary(result))
    return html_report(
        "novacron-ml demo --tune", plain.splitlines(), plots,
        legend="Line: the host's goodput (MB/s of original data, minute means), or a cluster's "
        "consensus cost (minute means). Triangles: a setting the tuning flow applied "
        "(level/chunk KiB/window log; timeout ms/batch/quorum) or the host's traffic "
        "changing; hover for which.",
    )  # fmt: skip
