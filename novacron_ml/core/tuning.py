"""The auto-optimizer's contract, shared by training (`training/tuning`) and the runtime
(`operators/tuning`): the HDE knobs and their grids, the policy's state layout and actions
(docs/TUNING.md). A policy exported with another layout is refused when it is opened."""

from __future__ import annotations

import math

import msgspec

LEVELS: tuple[int, ...] = (1, 2, 3, 5, 7, 9, 12, 15, 19)
CHUNK_KIB: tuple[int, ...] = (16, 64, 256, 1024)
WINDOW_LOGS: tuple[int, ...] = (12, 15, 17, 20)
DEFAULT_CONFIG: tuple[int, int, int] = (3, 64, 17)
"""zstd's own default level, a common 64 KiB transfer chunk, a 128 KiB window."""
KNOBS: tuple[str, ...] = ("hde_level", "hde_chunk_kib", "hde_window_log")
GRIDS: tuple[tuple[int, ...], ...] = (LEVELS, CHUNK_KIB, WINDOW_LOGS)
PAYLOAD_KINDS: tuple[str, ...] = (
    "metrics-json",
    "metrics-json-array",
    "metrics-line",
    "csv",
    "source",
    "models",
    "vm-pages",
)
STATE_NAMES: tuple[str, ...] = (
    *(f"knob_{k}" for k in KNOBS),
    *(f"mix_{k}" for k in PAYLOAD_KINDS),
    "obs_log_ratio",
    "obs_log_speed",
    "obs_reward_vs_default",
    "link_log_mb_s",
)
"""The policy's input, in order (the ONNX manifest's `feature_order`)."""
ACTIONS: tuple[str, ...] = (
    *(f"{k}_{d}" for k in KNOBS for d in ("down", "up")),
    "keep",
)
"""Action i: knob i // 2 one grid step down (even) or up (odd); the last keeps all."""


GRID_KNOBS: dict[str, tuple[str, str, str]] = {
    "bandwidth": ("pba_window", "pba_confidence", "pba_update_interval"),
    "consensus": ("acp_timeout_ms", "acp_batch", "acp_quorum"),
}
"""The other subsystems' knobs (`training.tuning.gridq`). The tuning flow serves the consensus
knobs per cluster (`operators.tuning.consensus`, the DQN) and the bandwidth predictor's per
host (`operators.tuning.bandwidth`, hindsight: docs/TUNING.md#bandwidth-flow says why)."""
PBA_KNOBS: tuple[str, str, str] = GRID_KNOBS["bandwidth"]
PBA_WINDOWS: tuple[int, ...] = (6, 12, 24, 48, 96, 288)
"""Prediction window, in 5-minute samples (30 minutes to a day)."""
PBA_CONFIDENCES: tuple[float, ...] = (0.5, 0.8, 0.9, 0.95, 0.99)
PBA_UPDATE_INTERVALS: tuple[int, ...] = (1, 3, 6, 12, 24)
"""Re-provisioning interval, in 5-minute samples."""
PBA_GRIDS: tuple[tuple[float, ...], ...] = (PBA_WINDOWS, PBA_CONFIDENCES, PBA_UPDATE_INTERVALS)
DEFAULT_PBA: tuple[float, ...] = (24, 0.9, 6)
"""Two hours of history, 90 % confidence, re-provisioned every 30 minutes."""
ACP_KNOBS: tuple[str, str, str] = GRID_KNOBS["consensus"]
ACP_TIMEOUTS_MS: tuple[int, ...] = (20, 50, 100, 200, 400, 800)
ACP_BATCHES: tuple[int, ...] = (1, 4, 16, 64)
ACP_QUORUMS: tuple[int, ...] = (2, 3, 4, 5)
ACP_GRIDS: tuple[tuple[int, ...], ...] = (ACP_TIMEOUTS_MS, ACP_BATCHES, ACP_QUORUMS)
DEFAULT_ACP: tuple[int, int, int] = (400, 1, 5)
"""A conservative deployment: long timeout, no batching, every node must ack."""
ACP_SLA_S = 1.0
"""A request counts as a success when it commits within this."""
ACP_FAIL_COST = 2.0
ACP_MSG_COST = 0.002
ACP_TIMEOUT_P99_FACTOR = 2.0
"""Safety: the timeout stays at least this many times the p99 round trip."""


def consensus_cost(latency_ms: float, success: float, messages_per_request: float) -> float:
    """What the consensus policy minimises, in training (`training.tuning.consensus`) and in
    the flow alike (its reward is minus this): mean commit latency in seconds, plus
    `ACP_FAIL_COST` per request not committed within `ACP_SLA_S`, plus `ACP_MSG_COST` per
    message."""
    return (latency_ms / 1000.0 + ACP_FAIL_COST * (1.0 - min(success, 1.0))
            + ACP_MSG_COST * messages_per_request)  # fmt: skip


def consensus_safe(config: tuple[int, ...], nodes: int, rtt_p99_ms: float) -> str | None:
    """The hard safety rules, None when the setting keeps them, else why not: the quorum is a
    majority of the nodes (two quorums overlap, so two leaders cannot commit different
    histories) and the timeout is at least `ACP_TIMEOUT_P99_FACTOR` x the p99 round trip
    (otherwise healthy followers are taken for dead)."""
    timeout_ms, _batch, quorum = config
    if not nodes / 2 < quorum <= nodes:
        return f"quorum {quorum} is not a majority of {nodes} nodes"
    if timeout_ms < ACP_TIMEOUT_P99_FACTOR * rtt_p99_ms:
        return (f"timeout {timeout_ms} ms < {ACP_TIMEOUT_P99_FACTOR:g} x the p99 round trip "
                f"({rtt_p99_ms:.0f} ms)")  # fmt: skip
    return None


SUBSYSTEMS: tuple[str, ...] = ("compression", *GRID_KNOBS)
"""Every tuned subsystem: `tune-train --env` and `tune eval --env` choices."""
GRID_CONTEXT: dict[str, tuple[str, ...]] = {
    "bandwidth": ("day_cv", "day_burstiness", "day_ac1", "day_ac12"),
    "consensus": (),
}


def layout(subsystem: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """A subsystem's policy input names and actions (`compression`: `STATE_NAMES`,
    `ACTIONS`); a policy's manifest names its subsystem (`normalisation.subsystem`)."""
    if subsystem == "compression":
        return STATE_NAMES, ACTIONS
    if subsystem not in GRID_KNOBS:
        raise ValueError(f"unknown tuning subsystem {subsystem!r}")
    knobs = GRID_KNOBS[subsystem]
    names = (
        *(f"knob_{k}" for k in knobs),
        *(f"ctx_{c}" for c in GRID_CONTEXT[subsystem]),
        "obs_reward_vs_default",
    )
    return names, (*(f"{k}_{d}" for k in knobs for d in ("down", "up")), "keep")


def apply_action(
    config: tuple[int, ...],
    action: int,
    grids: tuple[tuple[int, ...], ...] | list[list[int]] = GRIDS,
) -> tuple[int, ...]:
    """The setting an action leads to, bounded by each knob's grid."""
    if action == len(ACTIONS) - 1:
        return config
    knob, up = divmod(action, 2)
    axis = list(grids[knob])
    j = min(max(axis.index(config[knob]) + (1 if up else -1), 0), len(axis) - 1)
    return tuple(axis[j] if i == knob else v for i, v in enumerate(config))


def policy_state(
    config: tuple[int, ...],
    mix: dict[str, float],
    ratio: float,
    compress_mb_s: float,
    reward_vs_default: float,
    link_mb_s: float,
    grids: tuple[tuple[int, ...], ...] | list[list[int]] = GRIDS,
) -> list[float]:
    """The policy's input (`STATE_NAMES`), the same in training and in the tuning flow: each
    knob's grid position in [0, 1], the payload mix (share per kind), the last observation
    (log ratio / 3, log compression MB/s / 8, reward / the default setting's - 1) and the link
    (log10 MB/s / 4). `grids`: the knobs' grids (a test table may hold fewer)."""
    pos = [axis.index(v) / (len(axis) - 1) for axis, v in zip(grids, config, strict=True)]
    return [
        *pos,
        *(mix.get(k, 0.0) for k in PAYLOAD_KINDS),
        math.log(max(ratio, 1e-6)) / 3.0,
        math.log(max(compress_mb_s, 1e-6)) / 8.0,
        reward_vs_default,
        math.log10(link_mb_s) / 4.0,
    ]


TUNING_METRICS: tuple[str, ...] = (
    "link_mbps",
    *(f"payload_share_{k.replace('-', '_')}" for k in PAYLOAD_KINDS),
    *KNOBS,
)
"""What a host reports so the tuning flow knows its traffic and setting (docs/CATALOGUE.md#tuning):
its link speed in Mbit/s, the share of its transferred bytes per payload kind, and the HDE
setting it runs (optional: without it, `dwcp.config` is taken as the truth)."""


class KnobSetting(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A host's HDE setting as published on `dwcp.config` (compacted, keyed by host): what the
    host runs (or is told to run). Written by an operator or by the tuning flow in apply mode;
    the tuning flow reads it to know where each host stands (absent: `DEFAULT_CONFIG`)."""

    host: str
    hde_level: int
    hde_chunk_kib: int
    hde_window_log: int
    version: int = 0
    """Raised by one on every change; the tuning flow ignores a record older than it knows."""
    ts: str = ""
    """When it was decided (RFC 3339; event time in the tuning flow)."""
    source: str = "operator"
    """`operator`, `optimizer` (apply mode) or `revert` (the guardrails undid a change)."""
    cluster: str = ""

    @property
    def config(self) -> tuple[int, int, int]:
        return (self.hde_level, self.hde_chunk_kib, self.hde_window_log)


CONSENSUS_METRICS: tuple[str, ...] = (
    "acp_commit_latency_ms",
    "acp_commit_p99_ms",
    "acp_success_ratio",
    "acp_messages_per_request",
    "acp_nodes",
    "acp_rtt_p99_ms",
    *ACP_KNOBS,
)
"""What a cluster's consensus reports (any one host of it, typically the leader; one value
per report period) so the tuning flow can tune its ACP knobs (docs/CATALOGUE.md#tuning):
mean and p99 commit latency (request arrival to commit, ms), the share of requests committed
within `ACP_SLA_S`, messages per committed request; optionally the number of nodes and the
p99 round trip (else the consensus table's network) and the setting it runs."""


BANDWIDTH_METRICS: tuple[str, ...] = ("pba_demand_mbps", *PBA_KNOBS)
"""What a host reports so the tuning flow can tune its bandwidth predictor (PBA;
docs/CATALOGUE.md#tuning): the bandwidth its transfers demanded (Mbit/s, any report period:
the flow averages it into 5-minute samples) and, optionally, the predictor setting it runs."""


def bandwidth_key(host: str) -> str:
    """The Kafka key of a host's bandwidth-predictor records on `dwcp.config` and
    `optimizer.actions`."""
    return f"bandwidth/{host}"


def consensus_key(cluster: str) -> str:
    """The Kafka key of a cluster's consensus records on `dwcp.config` and
    `optimizer.actions` (host records are keyed by the host's name)."""
    return f"consensus/{cluster}"


class ConsensusSetting(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A cluster's ACP setting on `dwcp.config` (compacted, keyed by `consensus_key`): what
    the cluster's consensus runs or is told to run; the tuning flow reads it like a host's
    `KnobSetting` (absent: `DEFAULT_ACP`)."""

    cluster: str
    acp_timeout_ms: int
    acp_batch: int
    acp_quorum: int
    version: int = 0
    ts: str = ""
    source: str = "operator"

    @property
    def config(self) -> tuple[int, int, int]:
        return (self.acp_timeout_ms, self.acp_batch, self.acp_quorum)


class BandwidthSetting(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A host's bandwidth-predictor (PBA) setting on `dwcp.config` (compacted, keyed by
    `bandwidth_key`), read and written like its `KnobSetting` (absent: `DEFAULT_PBA`)."""

    host: str
    pba_window: int
    pba_confidence: float
    pba_update_interval: int
    version: int = 0
    ts: str = ""
    source: str = "operator"
    cluster: str = ""

    @property
    def config(self) -> tuple[float, ...]:
        return (self.pba_window, self.pba_confidence, self.pba_update_interval)


class Recommendation(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One decision of the tuning flow about one knob of one host, on `optimizer.actions`
    (keyed by host): allowed or blocked, and which guardrail said so (docs/MESSAGES.md)."""

    host: str
    cluster: str
    ts: str
    """Event time of the decision (RFC 3339)."""
    knob: str
    old: int | float
    new: int | float
    """The knob's value before and after (a float only for `pba_confidence`)."""
    allowed: bool
    guardrail: str
    """`passed: ...`, the check that blocked it and why, or `revert: ...`."""
    mode: str
    """`dry-run` (recommend only, the default) or `apply` (published to `dwcp.config`)."""
    action: str = "change"
    """`change` (the policy's proposal), `revert` (the guardrails undo a change) or
    `not-applied` (the host still reports its old setting `settle_s` after a change)."""
    expected_gain: float = 0.0
    """The environment model's throughput for the new setting / the current one's - 1."""
    expected_mb_s: float = 0.0
    current_mb_s: float = 0.0
    """The environment model's effective throughput (MB/s) of the new and current setting."""
    observed_mb_s: float = 0.0
    """The host's mean throughput over the last decision interval (MB/s)."""
    model: str = ""
    """The policy that proposed it, `name@version` (its manifest)."""
    assumed: list[str] = []
    """What the host did not report and the flow assumed (link speed, payload mix)."""
    subsystem: str = "compression"
    """`compression` (a host's HDE knobs), `bandwidth` (a host's PBA predictor, keyed by
    `bandwidth_key(host)`) or `consensus` (a cluster's ACP knobs: `host` is empty, the
    record is keyed by `consensus_key(cluster)`)."""
    expected_cost: float = 0.0
    current_cost: float = 0.0
    observed_cost: float = 0.0
    """Consensus: the table's mean cost (`consensus_cost`) of the new and current setting, and
    the cost the cluster reported over the last interval. Bandwidth: the predictor's cost
    (over-provisioning + 4 x shortfall + updates, per sample of mean demand) of the new and
    current setting rerun on the host's last day; observed is the current one's."""
    schema_version: int = 1

    @property
    def blocked_by(self) -> str | None:
        """The guardrail that blocked a proposed change (`canary`, `safe set`, ...), else None."""
        if self.allowed or self.action != "change":
            return None
        return self.guardrail.split(":")[0]
