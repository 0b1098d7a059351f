"""The tuning flow: wiring only. Kafka `metrics` and `dwcp.config` in, `optimizer.actions` out.

    python -m bytewax.run dataflows.tune:flow          # Kafka in and out, settings from env
    novacron-ml tune run                               # the same, with CLI options

Topology (the per-key logic: a host's compression `operators.tuning.tuner.HostTuner`, its
bandwidth predictor `operators.tuning.bandwidth.BandwidthTuner` under `bandwidth/<host>`, a
cluster's consensus `operators.tuning.consensus.ClusterTuner` under `consensus/<cluster>`;
docs/TUNING.md#flow):

    metrics_in -> parse -> (key, its events in the batch) ------+
    config_in -> parse_config -> (key, its setting) -------------+-> tune (per key) -> out
                          +- dead letters (malformed) ---------------------------------> out

Every `tune.interval_s` of a host's (cluster's) event time, once a day for a predictor: the
policy or tuner proposes, the guardrails allow or block, and the verdicts go to
`optimizer.actions`; in apply mode (opt-in) an allowed change also goes to `dwcp.config`,
which the flow reads back. Malformed metrics and settings leave as dead letters
(`metrics.dlq`), counted by reason.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import bytewax.operators as op
import msgspec
import numpy as np
from bytewax.connectors.kafka import KafkaError, KafkaSinkMessage, KafkaSourceMessage
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source
from bytewax.operators import StatefulLogic
from bytewax.outputs import Sink
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END

from dataflows.encode import to_kafka_message
from dataflows.io import BatchedKafkaSource, CheckedKafkaSink, Stoppable, messages_of
from dataflows.steps import (
    ShardRouter,
    count_dead_letter,
    kafka_error_dead_letter,
    make_parse_step,
    source_of,
)
from novacron_ml.core import metrics as obs
from novacron_ml.core.clients import use_client_properties
from novacron_ml.core.deadletter import DeadLetter, Reason
from novacron_ml.core.kafka import ORDERED_PRODUCER, LagMonitor, iter_topic, with_client_log
from novacron_ml.core.manifest import resolve_model_path
from novacron_ml.core.schema import MetricEvent
from novacron_ml.core.settings import Settings, TopicSettings, load_settings
from novacron_ml.core.tuning import (
    ACP_GRIDS,
    ACP_KNOBS,
    BANDWIDTH_METRICS,
    CONSENSUS_METRICS,
    GRIDS,
    KNOBS,
    PBA_GRIDS,
    PBA_KNOBS,
    BandwidthSetting,
    ConsensusSetting,
    KnobSetting,
    Recommendation,
    bandwidth_key,
    consensus_key,
)
from operators import drift
from operators.ingest.parse import MessageParser, ParseLimits
from operators.serving import ServedModel, served, set_poll_s
from operators.tuning.bandwidth import BandwidthContext, BandwidthTuner
from operators.tuning.consensus import ClusterTuner, ConsensusContext, ConsensusTable
from operators.tuning.envmodel import CompressionTable
from operators.tuning.guardrails import GuardrailConfig
from operators.tuning.policy import OnnxPolicy
from operators.tuning.tuner import INPUT_METRICS, HostTuner, TunerContext

FLOW_ID = "novacron_tune"
LOG = logging.getLogger("novacron.tune")
_SETTING = msgspec.json.Decoder(KnobSetting)
_CONSENSUS_SETTING = msgspec.json.Decoder(ConsensusSetting)
_CONSENSUS_METRICS = frozenset(CONSENSUS_METRICS)
_BANDWIDTH_SETTING = msgspec.json.Decoder(BandwidthSetting)
_BANDWIDTH_METRICS = frozenset(BANDWIDTH_METRICS)
_JSON = msgspec.json.Encoder()


def served_policy(settings: Settings) -> ServedModel[OnnxPolicy]:
    """The compression policy this process serves (`tune.policy`: a registry folder, its
    champion followed, or a pinned manifest), opened with the registry's checks."""
    return served("policy", settings.tune.policy, lambda path: OnnxPolicy(path, "compression"))


def served_consensus_policy(settings: Settings) -> ServedModel[OnnxPolicy] | None:
    """The clusters' consensus policy (`tune.consensus_policy`; empty: none)."""
    where = settings.tune.consensus_policy
    if not where:
        return None
    return served("consensus policy", where, lambda path: OnnxPolicy(path, "consensus"))


def live_context(settings: Settings) -> Callable[[], TunerContext]:
    """The context every host's and cluster's step asks for: rebuilt with the newly served
    policy when a registry's champion moves (hot reload between batches), the same object
    otherwise."""
    policy = served_policy(settings)
    consensus = served_consensus_policy(settings)
    ctx = tuner_context(settings)
    model = policy.model
    consensus_model = consensus.model if consensus is not None else None

    def current() -> TunerContext:
        nonlocal ctx, model, consensus_model
        now = policy.current()
        if now is not model:
            model = now
            ctx = dataclasses.replace(ctx, q_values=observed(now), model=policy.label)
        if consensus is not None and ctx.consensus is not None:
            now = consensus.current()
            if now is not consensus_model:
                consensus_model = now
                cctx = dataclasses.replace(ctx.consensus, q_values=observed(now),
                                           model=consensus.label)  # fmt: skip
                ctx = dataclasses.replace(ctx, consensus=cctx)
        return ctx

    return current


def observed(policy: OnnxPolicy) -> Callable[[np.ndarray], np.ndarray]:
    """The policy's q_values, each state it decides on also checked against the range of its
    training states (the manifest's reference: `novacron_model_input_outside_ratio`; a policy
    without one is not observed)."""
    name, reference = policy.manifest.name, policy.manifest.reference
    if reference is None or reference.low is None:
        return policy.q_values

    def q_values(states: np.ndarray) -> np.ndarray:
        drift.observe_support(name, reference, np.asarray(states, np.float64))
        return policy.q_values(states)

    return q_values


def tuner_context(settings: Settings) -> TunerContext:
    """The policy (opened with the registry's checks), the measured table and the guardrails,
    once per worker at build time: a missing or altered model fails here, with its path."""
    t = settings.tune
    policy = served_policy(settings).current()
    table_path = resolve_model_path(t.table)
    if not table_path.is_file():
        raise ValueError(f"tune.table: {table_path} does not exist; `novacron-ml tune measure`")
    bounds = {k: (float(min(g)), float(max(g))) for k, g in zip(KNOBS, GRIDS, strict=True)}
    bounds.update({k: (float(lo), float(hi)) for k, (lo, hi) in t.bounds.items()})
    guard = GuardrailConfig(
        bounds=bounds,
        cooldown_s=t.cooldown_s,
        canary_fraction=t.canary_fraction,
        throughput_margin=t.throughput_margin,
        p99_margin=t.p99_margin,
        revert_after=t.revert_after,
        settle_s=t.settle_s,
    )
    m = policy.manifest
    return TunerContext(
        q_values=observed(policy),
        table=CompressionTable.load(table_path),
        guardrails=guard,
        model=f"{m.name}@{m.version}",
        mode=t.mode,
        interval_s=t.interval_s,
        min_gain=t.min_gain,
        consensus=consensus_context(settings, guard),
        bandwidth=bandwidth_context(settings, guard),
    )


def bandwidth_context(settings: Settings, guard: GuardrailConfig) -> BandwidthContext | None:
    """The hosts' bandwidth-predictor loop (`tune.bandwidth_tuner`; off: None)."""
    t = settings.tune
    if t.bandwidth_tuner == "off":
        return None
    bounds = {k: (float(min(g)), float(max(g))) for k, g in zip(PBA_KNOBS, PBA_GRIDS, strict=True)}
    bounds.update({k: v for k, v in guard.bounds.items() if k in PBA_KNOBS})
    return BandwidthContext(dataclasses.replace(guard, bounds=bounds), mode=t.mode,
                            min_gain=t.min_gain, model=t.bandwidth_tuner)  # fmt: skip


def consensus_context(settings: Settings, guard: GuardrailConfig) -> ConsensusContext | None:
    """The clusters' consensus loop: its policy and simulated table, the same guardrails
    (bounds of the ACP knobs default to the table's axes); None when not configured."""
    served_consensus = served_consensus_policy(settings)
    if served_consensus is None:
        return None
    t = settings.tune
    policy = served_consensus.current()
    table_path = resolve_model_path(t.consensus_table)
    if not table_path.is_file():
        raise ValueError(f"tune.consensus_table: {table_path} does not exist; "
                         "`novacron-ml tune measure --env consensus`")  # fmt: skip
    table = ConsensusTable.load(table_path)
    bounds = {k: (float(min(g)), float(max(g))) for k, g in zip(ACP_KNOBS, table.axes, strict=True)}
    bounds.update({k: v for k, v in guard.bounds.items() if k in ACP_KNOBS})
    m = policy.manifest
    return ConsensusContext(
        q_values=observed(policy),
        table=table,
        guardrails=dataclasses.replace(guard, bounds=bounds),
        model=f"{m.name}@{m.version}",
        mode=t.mode,
        interval_s=t.interval_s,
        min_gain=t.min_gain,
    )


def parse_setting(
    msg: Any,
) -> tuple[str, KnobSetting | ConsensusSetting | BandwidthSetting] | DeadLetter:
    """A `dwcp.config` record keyed by its host (a host's bandwidth-predictor setting by
    `bandwidth_key`, a cluster's consensus setting by `consensus_key`), or a dead letter
    saying why not."""
    if isinstance(msg, KafkaError):
        return kafka_error_dead_letter(msg)
    value = msg.value or b""
    if b'"acp_' in value:
        decoder: Any = _CONSENSUS_SETTING
    elif b'"pba_' in value:
        decoder = _BANDWIDTH_SETTING
    else:
        decoder = _SETTING
    try:
        setting = decoder.decode(value)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return DeadLetter(
            Reason.BAD_SETTING, f"dwcp.config: {exc}", msg.value or b"", msg.key, source_of(msg)
        )
    if isinstance(setting, ConsensusSetting):
        key = consensus_key(setting.cluster)
        return _grid_setting(setting, setting.cluster, ACP_KNOBS, ACP_GRIDS, key, msg)
    if isinstance(setting, BandwidthSetting):
        key = bandwidth_key(setting.host)
        return _grid_setting(setting, setting.host, PBA_KNOBS, PBA_GRIDS, key, msg)
    for knob, grid, value in zip(KNOBS, GRIDS, setting.config, strict=True):
        if value not in grid:  # the policy moves on the grid: an off-grid setting cannot be tuned
            return DeadLetter(
                Reason.BAD_SETTING,
                f"dwcp.config: {knob}={value} is not one of {list(grid)}",
                msg.value or b"",
                msg.key,
                source_of(msg),
            )
    if not setting.host:
        return DeadLetter(Reason.BAD_SETTING, "dwcp.config: empty host", msg.value or b"",
                          msg.key, source_of(msg))  # fmt: skip
    return setting.host, setting


def _grid_setting(
    setting: ConsensusSetting | BandwidthSetting, owner: str, knobs: tuple[str, ...],
    grids: tuple[tuple[float, ...], ...], key: str, msg: Any,
) -> tuple[str, Any] | DeadLetter:  # fmt: skip
    """A consensus or bandwidth setting keyed by `key`, or a dead letter: an empty owner or
    a knob off its grid (the loops move along the grid)."""
    why = "" if owner else "empty host or cluster"
    for knob, grid, value in zip(knobs, grids, setting.config, strict=True):
        if not why and value not in grid:
            why = f"{knob}={value} is not one of {list(grid)}"
    if why:
        return DeadLetter(Reason.BAD_SETTING, f"dwcp.config: {why}", msg.value or b"", msg.key,
                          source_of(msg))  # fmt: skip
    return key, setting


def _count(out: list[object]) -> None:
    for rec in out:
        if isinstance(rec, Recommendation):
            obs.RECOMMENDATIONS.labels(
                mode=rec.mode,
                action=rec.action,
                allowed=str(rec.allowed).lower(),
                subsystem=rec.subsystem,
            ).inc()
            if rec.blocked_by is not None:
                obs.GUARDRAIL_BLOCKS.labels(guardrail=rec.blocked_by).inc()


Tuner = HostTuner | ClusterTuner | BandwidthTuner
Setting = KnobSetting | ConsensusSetting | BandwidthSetting
_TUNER_OF: dict[type, type] = {
    KnobSetting: HostTuner,
    ConsensusSetting: ClusterTuner,
    BandwidthSetting: BandwidthTuner,
}
HostSnapshot = tuple[Tuner, float, bool]
"""A host's (its predictor's, a cluster's consensus) recovery state: its tuner, when it was
last heard from (wall clock, epoch s) and whether it has been compacted."""


class HostLogic(StatefulLogic[Any, object, HostSnapshot]):
    """The `tune` step for one host: its `HostTuner` fed with its events (one input batch at
    a time) and its `dwcp.config` records; a host silent for `idle_s` of wall clock is
    compacted (`HostTuner.compacted`) and forgotten after `forget_s`, so a churning fleet
    does not grow the state without bound. Wall clock, not event time: a replay never
    evicts a host in the middle of its own history."""

    def __init__(
        self,
        context: Callable[[], TunerContext],
        idle_s: float,
        forget_s: float,
        resume: HostSnapshot | None = None,
        clock: Callable[[], float] = time.time,
        initial: Mapping[str, Setting] | None = None,
    ) -> None:
        self.context, self.idle_s, self.forget_s = context, idle_s, forget_s
        self.clock = clock
        self.initial = initial or {}
        self.tuner: Tuner | None = None
        self.seen, self.compact = clock(), False
        if resume is not None:
            self.tuner, self.seen, self.compact = resume

    def _tuner(self, kind: type[Tuner], host: str, cluster: str) -> Tuner:
        """The key's tuner, created on its first item and then given the setting
        `dwcp.config` held when the flow started (read to its end before the first decision:
        no race between a host's first metrics and its setting)."""
        if self.tuner is None:
            if kind is ClusterTuner:
                tuner: Tuner = ClusterTuner(cluster)
                key = consensus_key(cluster)
            elif kind is BandwidthTuner:
                tuner, key = BandwidthTuner(host, cluster), bandwidth_key(host)
            else:
                tuner, key = HostTuner(host, cluster), host
            start = self.initial.get(key)
            if start is not None:
                tuner.on_setting(start)  # type: ignore[arg-type]
            self.tuner = tuner
        return self.tuner

    def on_item(self, value: Any) -> tuple[list[object], bool]:
        self.seen, self.compact = self.clock(), False
        if isinstance(value, KnobSetting | ConsensusSetting | BandwidthSetting):
            kind = _TUNER_OF[type(value)]
            host = getattr(value, "host", "")
            self._tuner(kind, host, value.cluster).on_setting(value)  # type: ignore[arg-type]
            return [], StatefulLogic.RETAIN
        ctx = self.context()  # the policy serving now (a promoted version between batches)
        first = value[0]
        out: list[object] = []
        if first.metric in _BANDWIDTH_METRICS:  # a host's bandwidth predictor (its own key)
            if ctx.bandwidth is not None:  # else not tuned (tune.bandwidth_tuner off)
                pba = self._tuner(BandwidthTuner, first.host, first.cluster)
                for event in value:
                    out += pba.on_event(event, ctx.bandwidth)  # type: ignore[arg-type]
        elif first.metric in _CONSENSUS_METRICS:  # a cluster's consensus (its own key)
            if ctx.consensus is not None:  # else not tuned (tune.consensus_policy empty)
                cluster = self._tuner(ClusterTuner, first.host, first.cluster)
                for event in value:
                    out += cluster.on_event(event, ctx.consensus)  # type: ignore[arg-type]
        else:
            tuner = self._tuner(HostTuner, first.host, first.cluster)
            for event in value:  # one host's events of one input batch, in order
                out += tuner.on_event(event, ctx)  # type: ignore[arg-type]
        _count(out)
        return out, StatefulLogic.RETAIN

    def notify_at(self) -> datetime:
        wait = self.forget_s if self.compact else self.idle_s
        return datetime.fromtimestamp(self.seen + wait, tz=UTC)

    def on_notify(self) -> tuple[list[object], bool]:
        if self.clock() < self.notify_at().timestamp():
            return [], StatefulLogic.RETAIN  # woken early (a resumed snapshot): not yet
        kept = None if self.compact or self.tuner is None else self.tuner.compacted()
        if kept is None:
            obs.TUNING_HOSTS_IDLE.labels(outcome="dropped").inc()
            return [], StatefulLogic.DISCARD
        obs.TUNING_HOSTS_IDLE.labels(outcome="compacted").inc()
        self.tuner, self.compact = kept, True
        return [], StatefulLogic.RETAIN

    def snapshot(self) -> HostSnapshot:
        return copy.deepcopy(self.tuner), self.seen, self.compact  # type: ignore[return-value]


def host_logic_builder(
    context: Callable[[], TunerContext],
    idle_s: float,
    forget_s: float,
    initial: Mapping[str, Setting] | None = None,
) -> Callable[[HostSnapshot | None], HostLogic]:
    return lambda resume: HostLogic(context, idle_s, forget_s, resume, initial=initial)


def settings_at_start(records: Iterable[Any]) -> dict[str, Setting]:
    """Each key's latest setting among `dwcp.config` records (`parse_setting`'s keys; the
    highest version wins, then the later record): what the flow reads to the topic's end
    before it starts, so no host's first decision races its setting. Malformed records are
    skipped here (the config stream, which reads the topic again, dead-letters them once)."""
    out: dict[str, Setting] = {}
    for msg in records:
        parsed = parse_setting(msg)
        if isinstance(parsed, DeadLetter):
            continue
        key, setting = parsed
        known = out.get(key)
        if known is None or setting.version >= known.version:
            out[key] = setting
    return out


def events_of(batch: list[Any]) -> list[Any]:
    """Shard batches to one (host, events) pair per host of the metrics the tuner reads, one
    (`consensus_key(cluster)`, events) pair per cluster reporting consensus metrics and one
    (`bandwidth_key(host)`, events) pair per host reporting its bandwidth demand, so each step
    runs once per key and input batch, not once per event; dead letters pass on."""
    out: list[Any] = []
    by_key: dict[str, list[MetricEvent]] = {}
    for item in batch:
        if isinstance(item, DeadLetter):
            out.append(item)
            continue
        for e in item[1]:
            if e.metric in INPUT_METRICS:
                by_key.setdefault(e.host, []).append(e)
            elif e.metric in _CONSENSUS_METRICS:
                by_key.setdefault(consensus_key(e.cluster), []).append(e)
            elif e.metric in _BANDWIDTH_METRICS:
                by_key.setdefault(bandwidth_key(e.host), []).append(e)
    out.extend(by_key.items())
    return out


def encode_tuning(topics: TopicSettings) -> Any:
    """Recommendations to `optimizer.actions`, settings to `dwcp.config` (keyed by host, a
    cluster's consensus records by `consensus_key`, a host's predictor by `bandwidth_key`)."""
    rest = to_kafka_message(topics)

    def encode(item: Any) -> KafkaSinkMessage[bytes | None, bytes | None]:
        if isinstance(item, Recommendation):
            key = {"consensus": consensus_key(item.cluster), "bandwidth": bandwidth_key(item.host)
                   }.get(item.subsystem, item.host)  # fmt: skip
            return KafkaSinkMessage(
                key.encode(), _JSON.encode(item), topic=topics.optimizer_actions
            )
        if isinstance(item, KnobSetting):
            return KafkaSinkMessage(
                item.host.encode(), _JSON.encode(item), topic=topics.dwcp_config
            )
        if isinstance(item, ConsensusSetting):
            key = consensus_key(item.cluster)
            return KafkaSinkMessage(key.encode(), _JSON.encode(item), topic=topics.dwcp_config)
        if isinstance(item, BandwidthSetting):
            key = bandwidth_key(item.host)
            return KafkaSinkMessage(key.encode(), _JSON.encode(item), topic=topics.dwcp_config)
        return rest(item)  # dead letters

    return encode


def _is_pair(item: object) -> bool:
    return isinstance(item, tuple)


def build_flow(
    settings: Settings,
    source: Source[Any],
    sink: Sink[Any],
    *,
    config_source: Source[Any] | None = None,
    kafka_output: bool = True,
    ctx: TunerContext | None = None,
    flow_id: str = FLOW_ID,
    initial_settings: Mapping[str, Setting] | None = None,
) -> Dataflow:
    """Wire the tuning flow between any source of Kafka-style metric messages (and optionally
    of `dwcp.config` records) and any sink: `KafkaSinkMessage`s when `kafka_output`, else the
    `Recommendation`/`KnobSetting`/`DeadLetter` objects themselves. `initial_settings`: each
    key's setting when the flow starts (`settings_at_start`), given to its loop before its
    first decision."""
    set_poll_s(settings.models.poll_s)
    if ctx is None:
        context = live_context(settings)
        ctx = context()
    else:
        fixed = ctx
        context = lambda: fixed  # noqa: E731  (a given context is served as it is)
    topics = settings.topics
    outputs = [topics.optimizer_actions, topics.dlq]
    if ctx.mode == "apply":
        outputs.append(topics.dwcp_config)
    obs.initialise(outputs, topics.dlq)
    obs.initialise_tuning(ctx.mode)
    flow = Dataflow(flow_id)
    parser = MessageParser(ParseLimits.from_settings(settings.ingest))
    parsed = op.flat_map_batch(
        "parse", op.input("metrics_in", flow, source), make_parse_step(parser, ShardRouter(1))
    )
    events = op.flat_map_batch("tuning_events", parsed, events_of)
    split = op.branch("split_valid", events, _is_pair)
    keyed: Any = split.trues
    dead: Any = split.falses
    if config_source is not None:
        config_in = op.flat_map(
            "config_messages", op.input("config_in", flow, config_source), messages_of
        )
        settings_in = op.map("parse_config", config_in, parse_setting)
        split_cfg = op.branch("split_config", settings_in, _is_pair)
        keyed = op.merge("events_and_settings", keyed, split_cfg.trues)
        bad = op.map("count_bad_config", split_cfg.falses, count_dead_letter)
        dead = op.merge("dead_letters", dead, bad)
    builder = host_logic_builder(
        context, settings.tune.idle_s, settings.tune.forget_s, initial_settings
    )
    tuned = op.stateful("tune", keyed, builder)
    merged = op.merge("collect_outputs", op.map("drop_host", tuned, lambda kv: kv[1]), dead)
    if kafka_output:
        merged = op.map("encode", merged, encode_tuning(topics))
    op.output("out", merged, sink)
    return flow


def kafka_flow(settings: Settings | None = None) -> Dataflow:
    """The production tuning flow: Kafka `metrics` and `dwcp.config` in, `optimizer.actions`
    (and `dwcp.config` in apply mode) out."""
    settings = settings or load_settings()
    kafka = settings.kafka
    use_client_properties(kafka.client_properties())

    def source(topic: str, offset: int) -> Stoppable:
        return Stoppable(
            BatchedKafkaSource(
                kafka.brokers,
                [topic],
                tail=kafka.tail,
                starting_offset=offset,
                add_config=with_client_log(kafka.consumer_config),
                batch_size=kafka.batch_size,
                raise_on_errors=False,
            )
        )

    metrics_offset = OFFSET_BEGINNING if kafka.starting_offset == "beginning" else OFFSET_END
    producer_config = {**ORDERED_PRODUCER, "linger.ms": "5", **kafka.producer_config}
    sink = CheckedKafkaSink(
        {"bootstrap.servers": ",".join(kafka.brokers), **with_client_log(producer_config)},
        settings.topics.dlq,
        kafka.delivery_timeout_s,
    )
    LagMonitor.start(",".join(kafka.brokers), settings.observability.lag_interval_s)
    topic = settings.topics.dwcp_config
    initial = settings_at_start(
        KafkaSourceMessage(r.key, r.value, topic=topic, partition=r.partition, offset=r.offset)
        for r in iter_topic(",".join(kafka.brokers), topic)
    )
    LOG.info("tuning flow: %d settings on %s at start", len(initial), topic)
    return build_flow(
        settings,
        source(settings.topics.metrics, metrics_offset),
        sink,
        # every host's setting from the start: the topic is compacted, the latest one wins
        config_source=source(topic, OFFSET_BEGINNING),
        initial_settings=initial,
    )


def __getattr__(name: str) -> Dataflow:
    # `python -m bytewax.run dataflows.tune:flow` builds the Kafka flow on first access only.
    if name == "flow":
        return kafka_flow()
    raise AttributeError(name)
