"""The tuning flow: wiring only. Kafka `metrics` and `dwcp.config` in, `optimizer.actions` out.

    python -m bytewax.run dataflows.tune:flow          # Kafka in and out, settings from env
    novacron-ml tune run                               # the same, with CLI options

Topology (the per-host logic is `operators.tuning.tuner.HostTuner`; docs/TUNING.md#flow):

    metrics_in -> parse -> (host, its events in the batch) -----+
    config_in -> parse_config -> (host, KnobSetting) ------------+-> tune (per host) -> out
                          +- dead letters (malformed) ---------------------------------> out

Every `tune.interval_s` of a host's event time: the ONNX policy proposes, the guardrails
allow or block, and the verdicts go to `optimizer.actions`; in apply mode (opt-in) an allowed
change also goes to `dwcp.config`, which the flow reads back. Malformed metrics and settings
leave as dead letters (`metrics.dlq`), counted by reason.
"""

from __future__ import annotations

from typing import Any

import bytewax.operators as op
import msgspec
from bytewax.connectors.kafka import KafkaError, KafkaSinkMessage, KafkaSource
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source
from bytewax.outputs import Sink
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END

from dataflows.encode import to_kafka_message
from dataflows.io import CheckedKafkaSink, Stoppable
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
from novacron_ml.core.kafka import ORDERED_PRODUCER, LagMonitor, with_client_log
from novacron_ml.core.manifest import resolve_model_path
from novacron_ml.core.schema import MetricEvent
from novacron_ml.core.settings import Settings, TopicSettings, load_settings
from novacron_ml.core.tuning import GRIDS, KNOBS, KnobSetting, Recommendation
from operators.ingest.parse import MessageParser, ParseLimits
from operators.tuning.envmodel import CompressionTable
from operators.tuning.guardrails import GuardrailConfig
from operators.tuning.policy import OnnxPolicy
from operators.tuning.tuner import INPUT_METRICS, HostTuner, TunerContext

FLOW_ID = "novacron_tune"
_SETTING = msgspec.json.Decoder(KnobSetting)
_JSON = msgspec.json.Encoder()


def tuner_context(settings: Settings) -> TunerContext:
    """The policy (opened with the registry's checks), the measured table and the guardrails,
    once per worker at build time: a missing or altered model fails here, with its path."""
    t = settings.tune
    policy = OnnxPolicy(resolve_model_path(t.policy), "compression")
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
        q_values=policy.q_values,
        table=CompressionTable.load(table_path),
        guardrails=guard,
        model=f"{m.name}@{m.version}",
        mode=t.mode,
        interval_s=t.interval_s,
        min_gain=t.min_gain,
    )


def parse_setting(msg: Any) -> tuple[str, KnobSetting] | DeadLetter:
    """A `dwcp.config` record keyed by its host, or a dead letter saying why not."""
    if isinstance(msg, KafkaError):
        return kafka_error_dead_letter(msg)
    try:
        setting = _SETTING.decode(msg.value or b"")
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return DeadLetter(
            Reason.BAD_SETTING, f"dwcp.config: {exc}", msg.value or b"", msg.key, source_of(msg)
        )
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


def make_tune_step(ctx: TunerContext) -> Any:
    def tune(
        state: HostTuner | None, item: list[MetricEvent] | KnobSetting
    ) -> tuple[HostTuner, list]:
        if isinstance(item, KnobSetting):
            state = state or HostTuner(item.host, item.cluster)
            state.on_setting(item)
            return state, []
        state = state or HostTuner(item[0].host, item[0].cluster)
        out: list[object] = []
        for event in item:  # one host's events of one input batch, in order
            out += state.on_event(event, ctx)
        for rec in out:
            if isinstance(rec, Recommendation):
                obs.RECOMMENDATIONS.labels(
                    mode=rec.mode, action=rec.action, allowed=str(rec.allowed).lower()
                ).inc()
                if rec.blocked_by is not None:
                    obs.GUARDRAIL_BLOCKS.labels(guardrail=rec.blocked_by).inc()
        return state, out

    return tune


def events_of(batch: list[Any]) -> list[Any]:
    """Shard batches to one (host, events) pair per host of the metrics the tuner reads, so
    the per-host step runs once per host and input batch, not once per event; dead letters
    pass on."""
    out: list[Any] = []
    by_host: dict[str, list[MetricEvent]] = {}
    for item in batch:
        if isinstance(item, DeadLetter):
            out.append(item)
            continue
        for e in item[1]:
            if e.metric in INPUT_METRICS:
                by_host.setdefault(e.host, []).append(e)
    out.extend(by_host.items())
    return out


def encode_tuning(topics: TopicSettings) -> Any:
    """Recommendations to `optimizer.actions`, settings to `dwcp.config` (keyed by host)."""
    rest = to_kafka_message(topics)

    def encode(item: Any) -> KafkaSinkMessage[bytes | None, bytes | None]:
        if isinstance(item, Recommendation):
            return KafkaSinkMessage(
                item.host.encode(), _JSON.encode(item), topic=topics.optimizer_actions
            )
        if isinstance(item, KnobSetting):
            return KafkaSinkMessage(
                item.host.encode(), _JSON.encode(item), topic=topics.dwcp_config
            )
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
) -> Dataflow:
    """Wire the tuning flow between any source of Kafka-style metric messages (and optionally
    of `dwcp.config` records) and any sink: `KafkaSinkMessage`s when `kafka_output`, else the
    `Recommendation`/`KnobSetting`/`DeadLetter` objects themselves."""
    ctx = ctx or tuner_context(settings)
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
        settings_in = op.map(
            "parse_config", op.input("config_in", flow, config_source), parse_setting
        )
        split_cfg = op.branch("split_config", settings_in, _is_pair)
        keyed = op.merge("events_and_settings", keyed, split_cfg.trues)
        bad = op.map("count_bad_config", split_cfg.falses, count_dead_letter)
        dead = op.merge("dead_letters", dead, bad)
    tuned = op.stateful_flat_map("tune", keyed, make_tune_step(ctx))
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
            KafkaSource(
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
    return build_flow(
        settings,
        source(settings.topics.metrics, metrics_offset),
        sink,
        # every host's setting from the start: the topic is compacted, the latest one wins
        config_source=source(settings.topics.dwcp_config, OFFSET_BEGINNING),
    )


def __getattr__(name: str) -> Dataflow:
    # `python -m bytewax.run dataflows.tune:flow` builds the Kafka flow on first access only.
    if name == "flow":
        return kafka_flow()
    raise AttributeError(name)
