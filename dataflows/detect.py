"""The detect flow: wiring only. Kafka `metrics` -> parse -> features -> detect -> outputs.

    python -m bytewax.run dataflows.detect:flow        # Kafka in and out, settings from env
    novacron-ml run                                    # the same, with CLI options

Topology (each step a named Bytewax operator; its logic is in `dataflows.steps`, which wraps
the pure operators of `operators/`; settings are resolved once by `dataflows.config.resolve`):

    metrics_in -> parse -+- (shard, events) -> features -+- windows -> by_shard -> detect -> out
                         |                               +- late events ----------------------> out
                         |                               +- forecasts, forecast alerts -------> out
                         |                               +- host windows (features topic) ----> out
                         +- dead letters (malformed) -----------------------------------------> out
    feedback_in (optional) -> parse_feedback -> by_shard (verdicts adjust their series)
    windows -> hourly (optional, by cluster and metric) ---------------------------------------> out

`shard_features` is one `stateful_batch` per shard of series: event-time windows and their
feature vectors, scored by the Isolation Forest tier in one ONNX call per batch and forecast by
the LSTM when enabled. `shard_detect` is one `stateful_batch` per shard again (the same
`crc32(host)` shards and `SHARD_KEYS`): the windows of a batch are scored together across
the shard's series (the detection tiers, the combined probability and the alert decision:
`operators.detection.series.detect_batch`), then suppression.
`encode` turns every output into its Kafka record (`dataflows.encode`). Everything the flow
cannot use leaves as a `DeadLetter` (to `metrics.dlq`): nothing is dropped silently.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import bytewax.operators as op
from bytewax.connectors.kafka import KafkaSource
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source
from bytewax.operators import KeyedStream
from bytewax.outputs import Sink
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END

from dataflows.config import resolve
from dataflows.encode import to_kafka_message
from dataflows.io import BatchedKafkaSource, CheckedKafkaSink, Stoppable, messages_of
from dataflows.steps import (
    ShardRouter,
    count_and_suppress,
    count_dead_letter,
    make_detect_builder,
    make_detect_step,
    make_feature_builder,
    make_hourly_builder,
    make_parse_step,
    parse_feedback_message,
)
from novacron_ml.core import metrics as obs
from novacron_ml.core.clients import use_client_properties
from novacron_ml.core.deadletter import DeadLetter
from novacron_ml.core.features import FeatureWindow, SeriesEvicted
from novacron_ml.core.kafka import ORDERED_PRODUCER, LagMonitor, with_client_log
from novacron_ml.core.schema import Alert, Incident, MetricEvent, split_series_key
from novacron_ml.core.settings import Settings, load_settings
from operators.aggregate.hourly import hourly_key
from operators.alerting.incidents import HostIncidents
from operators.detection.feedback import Feedback
from operators.detection.iforest import ShadowScore
from operators.detection.series import tiers_for
from operators.forecast.forecaster import SeriesForecast, ShadowForecast
from operators.ingest.parse import MessageParser, wall_clock_ms

FLOW_ID = "novacron_detect"


# Routing predicates and keys: the flow's items are a union; each branch picks one kind.
def _value(keyed: tuple[str, Any]) -> Any:
    return keyed[1]


def is_shard_batch(item: object) -> bool:
    return isinstance(item, tuple)


def is_window(item: object) -> bool:
    return isinstance(item, FeatureWindow)


def is_eviction(item: object) -> bool:
    return isinstance(item, SeriesEvicted)


def is_dead_letter(item: object) -> bool:
    return isinstance(item, DeadLetter)


def is_forecast_output(item: object) -> bool:
    return isinstance(item, (SeriesForecast, Alert))


def is_shadow(item: object) -> bool:
    return isinstance(item, ShadowForecast)


def is_shadow_score(item: object) -> bool:
    return isinstance(item, ShadowScore)


def is_alert(item: object) -> bool:
    return isinstance(item, Alert)


def _host_of_alert(alert: Alert) -> str:
    return f"{alert.cluster}/{alert.host}"


def group_incident(
    state: HostIncidents | None, alert: Alert
) -> tuple[HostIncidents | None, list[Alert | Incident]]:
    """`operators.alerting.incidents` as a `stateful_map` step: the alert (tagged) and the
    incident record when one changed; the state is dropped when no incident is open."""
    state = state or HostIncidents()
    tagged, incident = state.add(alert)
    out: list[Alert | Incident] = [tagged] if incident is None else [tagged, incident]
    return (state if state.incident_id is not None else None), out


def is_feedback(item: object) -> bool:
    return isinstance(item, Feedback)


def build_flow(
    settings: Settings,
    source: Source[Any],
    sink: Sink[Any],
    *,
    kafka_output: bool = True,
    emit_scores: bool = False,
    feedback_source: Source[Any] | None = None,
    flow_id: str = FLOW_ID,
    recovery: bool = True,
    clock: Callable[[], int] = wall_clock_ms,
) -> Dataflow:
    """Wire the detect flow between any source of Kafka-style messages and any sink.

    The source yields `MessageBatch`es, `KafkaSourceMessage`s or `KafkaError`s; the sink receives
    `KafkaSinkMessage`s when `kafka_output`, else the `Alert`/`DeadLetter` objects themselves
    (plus a `WindowScore` with each scored window's anomaly probability when `emit_scores`,
    for backtests such as NAB). `feedback_source` yields operator verdicts
    (`operators.detection.feedback.Feedback` JSON) that adjust the verdict's series.
    `recovery` false: the flow will run without recovery state, so the feature and detect
    steps skip their snapshots (Bytewax asks for one of every touched key at each epoch's
    end whether or not it keeps them; 1.03–1.06× the throughput at 10,000 series).
    Leave it true for any run with a `RecoveryConfig`: its snapshots would be empty.
    `clock`: the epoch milliseconds an event's age and lead are checked against
    (`ingest.max_event_age_s`, `max_event_future_s`): the wall clock, or the demo's
    simulated one.
    """
    config = resolve(settings)
    topics = config.topics
    outputs = [t for t in settings.topics.in_use if t not in (topics.metrics, topics.feedback)]
    obs.initialise(outputs, topics.dlq)
    flow = Dataflow(flow_id)
    raw = op.input("metrics_in", flow, source)
    router = ShardRouter(config.shards)
    parse_step = make_parse_step(MessageParser(config.parse_limits, clock), router)
    parsed = op.flat_map_batch("parse", raw, parse_step)
    split = op.branch("split_valid", parsed, is_shard_batch)
    shards: KeyedStream[list[MetricEvent]] = split.trues  # (shard, events) pairs
    # the steps that key by shard were renamed when the shard keys were (stop 36): a recovery
    # store of the old keys is ignored, not half-resumed (docs/STATE.md)
    featured = op.stateful_batch("shard_features", shards, make_feature_builder(config, recovery))
    unsharded = op.branch("split_evictions", op.map("drop_shard", featured, _value), is_eviction)
    windows = op.branch("split_late", unsharded.falses, is_window)
    late_or_rest = op.branch("split_host", windows.falses, is_dead_letter)
    forecasts = op.branch("split_forecasts", late_or_rest.falses, is_forecast_output)
    shadow_scores = op.branch("split_shadow_scores", forecasts.falses, is_shadow_score)
    host_windows = shadow_scores.falses

    def shard_of_series(item: Any) -> str:  # a FeatureWindow, SeriesEvicted or Feedback
        return router.shard_of(split_series_key(str(item.series))[1])

    by_shard: Any = op.key_on("key_by_shard", windows.trues, shard_of_series)
    evicted = op.key_on("evictions_by_shard", unsharded.trues, shard_of_series)
    by_shard = op.merge("windows_and_evictions", by_shard, evicted)
    feedback_dead: Any = None
    if feedback_source is not None:
        feedback_in = op.input("feedback_in", flow, feedback_source)
        one_by_one = op.flat_map("feedback_messages", feedback_in, messages_of)
        verdicts = op.map("parse_feedback", one_by_one, parse_feedback_message)
        split_fb = op.branch("split_feedback", verdicts, is_feedback)
        keyed_fb = op.key_on("feedback_by_shard", split_fb.trues, shard_of_series)
        by_shard = op.merge("windows_and_feedback", by_shard, keyed_fb)
        feedback_dead = op.map("count_bad_feedback", split_fb.falses, count_dead_letter)
    detect_step = make_detect_step(
        config.robust_z,
        emit_scores,
        config.rules,
        config.combine,
        config.catalogue,
        config.episodes,
        config.features.lateness_ms,
    )
    detect_builder = make_detect_builder(
        detect_step,
        config.features.idle_ttl_s,
        recovery,
        (tiers_for(config.robust_z, config.combine, config.catalogue), config.combine),
    )
    detected = op.stateful_batch("shard_detect", by_shard, detect_builder)
    results = op.map("drop_keys", detected, _value)
    if topics.incidents:
        split_alerts = op.branch("split_decision_alerts", results, is_alert)
        by_host = op.key_on("alerts_by_host", split_alerts.trues, _host_of_alert)
        grouped = op.stateful_map("incidents", by_host, group_incident)
        incidents = op.flat_map("flatten_incidents", grouped, _value)
        results = op.merge("with_incidents", split_alerts.falses, incidents)
    late = late_or_rest.trues
    forecast_alerts = op.branch("split_forecast_alerts", forecasts.trues, is_alert)
    suppressed = op.map(
        "suppress_forecast_alerts",
        forecast_alerts.trues,
        lambda a: count_and_suppress(a, config.rules),
    )
    merged = op.merge("collect_outputs", split.falses, late, results, suppressed)
    if topics.forecasts is not None or topics.forecasts_shadow is not None:
        published = forecast_alerts.falses  # shadows only exist with forecasts_shadow set
        if topics.forecasts is None:
            published = op.filter("only_shadow_forecasts", published, is_shadow)
        merged = op.merge("with_forecasts", merged, published)
    if topics.scores_shadow is not None:  # the challenger forests' scores (shadow scoring)
        merged = op.merge("with_shadow_scores", merged, shadow_scores.trues)
    if feedback_dead is not None:
        merged = op.merge("with_bad_feedback", merged, feedback_dead)
    if topics.features is not None:
        published = op.merge("features_out", windows.trues, host_windows)
        merged = op.merge("with_features", merged, published)
    if topics.hourly is not None:
        by_cluster_metric = op.key_on("key_by_cluster_metric", windows.trues, hourly_key)
        hourly_builder = make_hourly_builder(config.hourly_lateness_ms)
        hourly = op.stateful("hourly", by_cluster_metric, hourly_builder)
        merged = op.merge("with_hourly", merged, op.map("drop_hourly_key", hourly, _value))
    if kafka_output:
        merged = op.map("encode", merged, to_kafka_message(topics))
    op.output("out", merged, sink)
    return flow


def kafka_flow(settings: Settings | None = None, *, recovery: bool = True) -> Dataflow:
    """The production flow: Kafka `metrics` in, `alerts` and `metrics.dlq` out; `recovery`
    false when it runs without recovery state (`build_flow`)."""
    settings = settings or load_settings()
    kafka = settings.kafka
    use_client_properties(kafka.client_properties())  # the given settings' security, not the env's
    source = Stoppable(
        BatchedKafkaSource(
            kafka.brokers,
            [settings.topics.metrics],
            tail=kafka.tail,
            starting_offset=OFFSET_BEGINNING
            if kafka.starting_offset == "beginning"
            else OFFSET_END,
            add_config=with_client_log(kafka.consumer_config),
            batch_size=kafka.batch_size,
            raise_on_errors=False,
        )
    )
    producer_config = {**ORDERED_PRODUCER, "linger.ms": "5", "compression.type": "lz4"}
    producer_config.update(kafka.producer_config)
    sink = CheckedKafkaSink(
        {"bootstrap.servers": ",".join(kafka.brokers), **with_client_log(producer_config)},
        settings.topics.dlq,
        kafka.delivery_timeout_s,
    )
    feedback = None
    if settings.topics.feedback is not None:
        # Every verdict from the start: thresholds are rebuilt when a flow starts afresh.
        feedback = Stoppable(
            KafkaSource(
                kafka.brokers,
                [settings.topics.feedback],
                tail=kafka.tail,
                starting_offset=OFFSET_BEGINNING,
                add_config=with_client_log(kafka.consumer_config),
                raise_on_errors=False,
            )
        )
    # the consumer-lag gauges, one thread a process
    LagMonitor.start(",".join(kafka.brokers), settings.observability.lag_interval_s)
    return build_flow(settings, source, sink, feedback_source=feedback, recovery=recovery)


def __getattr__(name: str) -> Dataflow:
    # `python -m bytewax.run dataflows.detect:flow` builds the Kafka flow on first access only,
    # so importing this module (tests, the demo) needs neither a broker nor valid Kafka settings.
    if name == "flow":
        return kafka_flow()
    raise AttributeError(name)
