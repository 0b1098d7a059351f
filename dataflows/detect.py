"""The detect flow: metrics -> parse/validate -> windowed features -> robust z -> alerts.

    python -m bytewax.run dataflows.detect:flow        # Kafka in and out, settings from env
    novacron-ml run                                    # the same, with CLI options

Topology (each step a short named function; logic in `operators/`):

    metrics_in -> parse -+- (shard, events) -> features -+- windows -> by_series -> detect
                         |                               +- late events -----------------------> out
                         +- dead letters (malformed) ------------------------------------------> out

`features` is one `stateful_batch` per shard of series (`operators.features.FeatureEngine`):
event-time windows and ≥27 features per series window, vectorised over the shard.
Everything the flow cannot use leaves through the sink as a `DeadLetter` (to `metrics.dlq`):
malformed input and late events. Nothing is dropped silently.
"""

from __future__ import annotations

import copy
import itertools
import pickle
import time
import zlib
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import bytewax.operators as op
import msgspec
from bytewax.connectors.kafka import (
    KafkaError,
    KafkaSink,
    KafkaSinkMessage,
    KafkaSource,
    KafkaSourceMessage,
)
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source
from bytewax.operators import KeyedStream, StatefulBatchLogic, StatefulLogic
from bytewax.outputs import Sink
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END

from novacron_ml import observability as obs
from novacron_ml.kafka_io import ORDERED_PRODUCER
from novacron_ml.models import load_forecaster, resolve_model_path
from novacron_ml.schema import Alert, MetricEvent, rfc3339_ms
from novacron_ml.settings import Settings, load_settings
from operators.cross import CrossMetricJoiner, HostWindow
from operators.deadletter import DeadLetter, Reason
from operators.features import (
    FEATURE_NAMES,
    FEATURE_VERSION,
    FeatureConfig,
    FeatureEngine,
    FeatureWindow,
    LateEvent,
)
from operators.feedback import Feedback, parse_feedback
from operators.forecast import ForecastConfig, SeriesForecast, SeriesForecaster
from operators.hourly import HourlyAggregate, HourlyAggregator, hourly_key
from operators.iforest import IsolationForestTier, load_iforest
from operators.novelty import CalibrationConfig, NoveltyConfig
from operators.parse import MessageParser, ParseLimits, wall_clock_ms
from operators.river_tier import RiverConfig
from operators.robust_z import RobustZConfig
from operators.series import (
    CombineConfig,
    SeriesState,
    WindowScore,
    apply_series_feedback,
    detect_window,
    new_series_state,
)
from operators.suppression import Matcher, Rule, suppression_for

FLOW_ID = "novacron_detect"
DLQ_MAX_PAYLOAD_BYTES = 900_000
"""Dead-letter payloads are cut to this (and say so in a header) so that a DLQ record always
fits Kafka's default 1 MB message limit: a record the sink cannot write would stop the flow."""

Output = Alert | DeadLetter
_JSON = msgspec.json.Encoder()


def parser_for(settings: Settings) -> MessageParser:
    ingest = settings.ingest
    return MessageParser(
        ParseLimits(
            max_message_bytes=ingest.max_message_bytes,
            max_event_age_ms=int(ingest.max_event_age_s * 1000),
            max_event_future_ms=int(ingest.max_event_future_s * 1000),
            line_protocol_precision=ingest.line_protocol_precision,
        )
    )


def detector_config(settings: Settings) -> RobustZConfig:
    d = settings.detector
    return RobustZConfig(
        z_threshold=d.z_threshold,
        history_windows=d.history_windows,
        min_history=d.min_history,
        relative_floor=d.relative_floor,
        adapt_after_windows=d.adapt_after_windows,
    )


def combine_config(settings: Settings) -> CombineConfig:
    d = settings.detector
    return CombineConfig(
        tiers=tuple(d.probability_tiers),
        fire_probability=d.fire_probability,
        cooldown_windows=d.cooldown_windows,
        bigger_event=d.bigger_event,
        min_novelty=d.min_novelty,
        novelty=NoveltyConfig(scales=tuple(d.novelty_scales), history=d.novelty_history),
        calibration=CalibrationConfig(history=d.calibration_history),
        river=RiverConfig() if d.river else None,
    )


def _value(keyed: tuple[str, Any]) -> Any:
    return keyed[1]


def _series_of_window(window: FeatureWindow) -> str:
    return window.series


def _series_of_feedback(feedback: Any) -> str:
    return str(feedback.series)


def is_feedback(item: Feedback | DeadLetter) -> bool:
    return isinstance(item, Feedback)


def parse_feedback_message(msg: Any) -> Feedback | DeadLetter:
    if isinstance(msg, KafkaError):
        inner = msg.msg
        return DeadLetter(
            Reason.KAFKA_ERROR, str(msg.err), inner.value or b"", inner.key, _source_of(inner)
        )
    return parse_feedback(msg.value, msg.key, _source_of(msg))


def _source_of(msg: KafkaSourceMessage[Any, Any]) -> str:
    if msg.topic is None:
        return ""
    return f"{msg.topic}:{msg.partition}:{msg.offset}"


ShardBatch = tuple[str, list[MetricEvent]]
"""Valid events of one input batch that belong to one feature shard, keyed by the shard."""


class ShardRouter:
    """Groups events by shard, once per batch: Bytewax then routes one item per shard instead
    of one per event. All series of a host share a shard (cross-metric features need that)."""

    def __init__(self, shards: int) -> None:
        self.shards = shards
        self._cache: dict[str, str] = {}

    def shard_of(self, host: str) -> str:
        shard = self._cache.get(host)
        if shard is None:
            shard = str(zlib.crc32(host.encode()) % self.shards)
            self._cache[host] = shard
        return shard

    def group(self, events: list[MetricEvent]) -> list[ShardBatch]:
        groups: dict[str, list[MetricEvent]] = {}
        cache = self._cache
        for e in events:
            shard = cache.get(e.host) or self.shard_of(e.host)
            group = groups.get(shard)
            if group is None:
                groups[shard] = [e]
            else:
                group.append(e)
        return list(groups.items())


def make_parse_step(parser: MessageParser, router: ShardRouter) -> Any:
    """Batch step: raw Kafka messages (or consumer errors) to shard batches and dead letters."""

    def parse_batch(batch: list[Any]) -> list[ShardBatch | DeadLetter]:
        with obs.PARSE_BATCH_SECONDS.time():
            valid: list[MetricEvent] = []
            out: list[ShardBatch | DeadLetter] = []
            dead: list[DeadLetter] = []
            reasons: Counter[str] = Counter()
            now = wall_clock_ms()
            for msg in batch:
                if isinstance(msg, KafkaError):
                    inner = msg.msg
                    dl = DeadLetter(
                        Reason.KAFKA_ERROR,
                        str(msg.err),
                        inner.value or b"",
                        inner.key,
                        _source_of(inner),
                    )
                    out.append(dl)
                    reasons[dl.reason] += 1
                    continue
                n_dead = len(dead)
                parser.parse_into(msg.value, msg.key, "", now, valid, dead)
                if len(dead) > n_dead:  # where it came from, only for what goes to the DLQ
                    source = _source_of(msg)
                    for i in range(n_dead, len(dead)):
                        dead[i] = msgspec.structs.replace(dead[i], source=source)
                        reasons[dead[i].reason] += 1
            out.extend(dead)
            obs.MESSAGES.inc(len(batch))
            obs.EVENTS.inc(len(valid))
            for reason, n in reasons.items():
                obs.DEAD_LETTERS.labels(reason=reason).inc(n)
            out.extend(router.group(valid))
            return out

    return parse_batch


def is_shard_batch(item: ShardBatch | DeadLetter) -> bool:
    return isinstance(item, tuple)


def is_window(item: FeatureOut) -> bool:
    return isinstance(item, FeatureWindow)


def is_forecast_output(item: object) -> bool:
    return isinstance(item, (SeriesForecast, Alert))


def is_dead_letter(item: object) -> bool:
    return isinstance(item, DeadLetter)


def feature_config(settings: Settings) -> FeatureConfig:
    return settings.feature_config()


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class FeatureState:
    """One shard's state in recovery snapshots: the engine and, if enabled, the host joiner."""

    engine: FeatureEngine
    joiner: CrossMetricJoiner | None = None
    forecaster: SeriesForecaster | None = None
    model_path: str = ""
    """The forecaster's manifest; the ONNX session itself is per process, not state."""
    iforest: IsolationForestTier | None = None
    """Scores each batch's closed windows (sessions are per process, not state)."""


FeatureOut = FeatureWindow | HostWindow | DeadLetter | SeriesForecast | Alert


class FeatureLogic(StatefulBatchLogic[list[MetricEvent], FeatureOut, FeatureState]):
    """Bytewax glue around one shard's `FeatureEngine`; all logic lives in operators/."""

    NOTIFY_EVERY = timedelta(milliseconds=100)
    """How often system time closes windows of series that went quiet, when `exact_notify`
    is off: bounds the delay from a window's close (end + allowed lateness) to its scoring
    (bench_latency.py)."""
    NOTIFY_AT_MOST_MS = 1000
    """With `exact_notify`: the longest sleep (idle series are still evicted on time)."""
    exact_notify = True
    """Wake when the next window can close (`FeatureEngine.next_close_ms`), not on a cadence."""

    def __init__(self, state: FeatureState) -> None:
        self.state = state

    def _emit(
        self, windows: list[FeatureWindow], late: list[LateEvent] | None = None
    ) -> list[FeatureOut]:
        if windows and self.state.iforest is not None:
            windows = self.state.iforest.score(windows)
        out: list[FeatureOut] = list(windows)
        if windows:
            obs.WINDOWS.inc(len(windows))
            obs.WINDOWED_EVENTS.inc(sum(w["count"] for w in windows))
            if self.state.joiner is not None:
                out.extend(self.state.joiner.add(windows))
            if self.state.forecaster is not None:
                model = load_forecaster(self.state.model_path)
                out.extend(self.state.forecaster.add(windows, model))
        for item in late or ():
            out.append(
                DeadLetter(
                    Reason.LATE_EVENT,
                    f"event older than its series' next open window "
                    f"({rfc3339_ms(item.next_window_start_ms)})",
                    _JSON.encode(item.event.to_wire()),
                    item.series.encode(),
                )
            )
        if late:
            obs.DEAD_LETTERS.labels(reason=Reason.LATE_EVENT.value).inc(len(late))
        return out

    def on_batch(self, values: list[list[MetricEvent]]) -> tuple[list[FeatureOut], bool]:
        events = values[0] if len(values) == 1 else list(itertools.chain.from_iterable(values))
        windows, late = self.state.engine.ingest(events, _wall_ms())
        return self._emit(windows, late), StatefulBatchLogic.RETAIN

    def on_notify(self) -> tuple[list[FeatureOut], bool]:
        engine = self.state.engine
        evicted = engine.evicted
        out = self._emit(engine.advance(_wall_ms()))
        if engine.evicted > evicted:
            obs.SERIES_EVICTED.inc(engine.evicted - evicted)
        return out, StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[list[FeatureOut], bool]:
        return self._emit(self.state.engine.flush()), StatefulBatchLogic.RETAIN

    def notify_at(self) -> datetime | None:
        engine = self.state.engine
        if engine.n_series == 0:
            return None
        if not self.exact_notify:
            return datetime.now(UTC) + self.NOTIFY_EVERY
        now = _wall_ms()
        due = engine.next_close_ms()
        wake = now + self.NOTIFY_AT_MOST_MS if due is None else due
        # at least 1 ms ahead (never a busy loop), at most NOTIFY_AT_MOST_MS
        wake = min(max(wake, now + 1), now + self.NOTIFY_AT_MOST_MS)
        return datetime.fromtimestamp(wake / 1000, UTC)

    def snapshot(self) -> FeatureState:
        return copy.deepcopy(self.state)


def _count_dead_letter(item: Any) -> DeadLetter:
    assert isinstance(item, DeadLetter)
    obs.DEAD_LETTERS.labels(reason=item.reason.value).inc()
    return item


def forecaster_for(settings: Settings) -> tuple[SeriesForecaster | None, str]:
    """The forecaster state and the model's manifest path, or (None, '') when disabled.

    Loads the model once here, so a missing or altered model fails the flow at build time
    with the manifest's path in the message."""
    fs = settings.forecast
    if not fs.enabled:
        return None, ""
    path = resolve_model_path(fs.model)
    model = load_forecaster(str(path))
    step_ms = int((settings.window.slide_s or settings.window.length_s) * 1000)
    if abs(model.manifest.step_s * 1000 - step_ms) > 1:
        raise ValueError(
            f"{path}: the model forecasts {model.manifest.step_s:g} s steps but windows slide"
            f" every {step_ms / 1000:g} s"
        )
    config = ForecastConfig(
        step_ms=step_ms,
        residual_threshold=fs.residual_threshold,
        min_residuals=fs.min_residuals,
        slo=dict(fs.slo),
        model_name=f"{model.manifest.name}@{model.manifest.version}",
    )
    return SeriesForecaster(config, model.input_len), str(path)


def iforest_for(settings: Settings) -> IsolationForestTier | None:
    """The Isolation Forest tier when `detector.iforest_models` names a directory with models;
    every model is opened (sha256 and inputs checked) at build time."""
    directory = settings.detector.iforest_models
    if not directory:
        return None
    path = resolve_model_path(directory)
    manifests = sorted(path.glob("iforest_*.json"))
    if not manifests:
        return None
    for manifest in manifests:  # a missing or altered model fails here, not mid-stream
        load_iforest(str(manifest.resolve()))
    return IsolationForestTier(str(path.resolve()))


def make_feature_builder(settings: Settings) -> Any:
    config = feature_config(settings)
    publish = settings.topics.features is not None
    forecaster, model_path = forecaster_for(settings)
    iforest = iforest_for(settings)

    def build(resume: FeatureState | None) -> FeatureLogic:
        if resume is None:
            joiner = CrossMetricJoiner(config.window_ms) if publish else None
            resume = FeatureState(
                FeatureEngine(config), joiner, copy.deepcopy(forecaster), model_path, iforest
            )
        else:
            resume.iforest = iforest  # the settings of this run decide, not the snapshot's
        return FeatureLogic(resume)

    return build


def feature_record(item: FeatureWindow | HostWindow) -> dict[str, Any]:
    """The JSON published on the optional features topic (docs/MESSAGES.md)."""
    if isinstance(item, FeatureWindow):
        return {
            "kind": "series",
            "series": item.series,
            "window_start": rfc3339_ms(item.start_ms),
            "window_end": rfc3339_ms(item.end_ms),
            "feature_version": FEATURE_VERSION,
            "features": dict(zip(FEATURE_NAMES, item.features.tolist(), strict=True)),
        }
    return {
        "kind": "host",
        "cluster": item.cluster,
        "host": item.host,
        "window_start": rfc3339_ms(item.start_ms),
        "window_end": rfc3339_ms(item.end_ms),
        "feature_version": FEATURE_VERSION,
        "features": item.features,
    }


def suppression_rules(settings: Settings) -> list[Rule]:
    rules = []
    for kind, entries in (
        ("maintenance", settings.suppression.maintenance),
        ("silence", settings.suppression.silences),
    ):
        for r in entries:

            def opt(values: list[str] | None) -> frozenset[str] | None:
                return None if values is None else frozenset(values)

            rules.append(
                Rule(
                    kind=kind,
                    name=r.name,
                    start_ms=int(r.start.timestamp() * 1000),
                    end_ms=int(r.end.timestamp() * 1000),
                    weekly=r.weekly,
                    matcher=Matcher(
                        opt(r.clusters),
                        opt(r.hosts),
                        opt(r.types),
                        opt(r.metrics),
                        opt(r.severities),
                    ),
                )
            )
    return rules


def make_detect_step(
    config: RobustZConfig,
    emit_scores: bool = False,
    rules: list[Rule] | None = None,
    combine: CombineConfig | None = None,
) -> Any:
    active_rules = rules or []

    def detect(
        state: SeriesState | None, window: FeatureWindow | Feedback
    ) -> tuple[SeriesState, list[Output | WindowScore]]:
        if state is None:
            state = new_series_state(window.series, config, combine)
        if isinstance(window, Feedback):
            apply_series_feedback(state, window)
            obs.FEEDBACK.labels(verdict=window.verdict.value).inc()
            return state, []
        result = detect_window(state, window)
        out: list[Output | WindowScore] = []
        if isinstance(result, DeadLetter):
            obs.DEAD_LETTERS.labels(reason=result.reason.value).inc()
        elif result is not None:
            result = count_and_suppress(result, active_rules)
        if result is not None:
            out.append(result)
        if emit_scores and not isinstance(result, DeadLetter):
            out.append(WindowScore(window.series, window.start_ms, window.end_ms, state.last_score))
        return state, out

    return detect


DetectIn = FeatureWindow | Feedback
DetectOut = Output | WindowScore


class DetectLogic(StatefulLogic[DetectIn, DetectOut, bytes]):
    """One series' detection state around `make_detect_step`'s step.

    Snapshots are the pickled state (bytes), not the deep copy `op.stateful_map` makes: Bytewax
    snapshots every key a batch touched at each epoch's end, and deep copies of the River
    trees (thousands of small objects per series) every epoch set off full garbage-collector
    passes of 210-340 ms every ~10 s, the tail of the live latency (bench_latency). A bytes
    object is one untracked allocation. Resumes from either form.
    """

    def __init__(self, step: Any, state: SeriesState | None) -> None:
        self.step = step
        self.state = state

    def on_item(self, value: DetectIn) -> tuple[list[DetectOut], bool]:
        self.state, out = self.step(self.state, value)
        return out, StatefulLogic.RETAIN

    def snapshot(self) -> bytes:
        return pickle.dumps(self.state, protocol=pickle.HIGHEST_PROTOCOL)


def make_detect_builder(step: Any) -> Any:
    def build(resume: bytes | SeriesState | None) -> DetectLogic:
        state = pickle.loads(resume) if isinstance(resume, bytes) else resume
        return DetectLogic(step, state)

    return build


class HourlyLogic(StatefulLogic[FeatureWindow, HourlyAggregate, HourlyAggregator]):
    """Bytewax wrapper of `operators.hourly.HourlyAggregator` for one (cluster, metric)."""

    def __init__(self, state: HourlyAggregator) -> None:
        self.state = state

    def on_item(self, value: FeatureWindow) -> tuple[list[HourlyAggregate], bool]:
        return self.state.add(value), False

    def on_eof(self) -> tuple[list[HourlyAggregate], bool]:
        return self.state.flush(), False

    def snapshot(self) -> HourlyAggregator:
        return copy.deepcopy(self.state)


def make_hourly_builder(settings: Settings) -> Any:
    lateness_ms = int(max(settings.window.allowed_lateness_s, settings.window.length_s) * 1000)

    def build(resume: HourlyAggregator | None) -> HourlyLogic:
        return HourlyLogic(resume or HourlyAggregator(lateness_ms=lateness_ms))

    return build


def count_and_suppress(alert: Alert, rules: list[Rule]) -> Alert:
    """Count a new alert and mark it suppressed if a maintenance window or silence matches."""
    obs.ALERTS.labels(type=alert.type, severity=alert.severity).inc()
    reason = suppression_for(alert, rules)
    if reason is None:
        return alert
    obs.ALERTS_SUPPRESSED.labels(kind=reason.split(":", 1)[0]).inc()
    return msgspec.structs.replace(alert, suppressed_by=reason)


def to_kafka_message(settings: Settings) -> Any:
    alerts_topic, dlq_topic = settings.topics.alerts, settings.topics.dlq
    features_topic, hourly_topic = settings.topics.features, settings.topics.hourly
    forecasts_topic = settings.topics.forecasts

    def encode(
        item: Output | FeatureWindow | HostWindow | HourlyAggregate | SeriesForecast,
    ) -> KafkaSinkMessage[bytes | None, bytes | None]:
        if isinstance(item, SeriesForecast):
            return KafkaSinkMessage(
                key=item.series.encode(), value=_JSON.encode(item), topic=forecasts_topic
            )
        if isinstance(item, HourlyAggregate):
            return KafkaSinkMessage(
                key=item.key.encode(), value=_JSON.encode(item), topic=hourly_topic
            )
        if isinstance(item, Alert):
            return KafkaSinkMessage(
                key=item.alert_id.encode(), value=_JSON.encode(item), topic=alerts_topic
            )
        if isinstance(item, DeadLetter):
            payload, headers = item.payload, item.headers()
            if len(payload) > DLQ_MAX_PAYLOAD_BYTES:
                headers.append(("novacron.truncated_from", str(len(payload)).encode()))
                payload = payload[:DLQ_MAX_PAYLOAD_BYTES]
            return KafkaSinkMessage(key=item.key, value=payload, topic=dlq_topic, headers=headers)
        key = item.series if isinstance(item, FeatureWindow) else f"{item.cluster}/{item.host}"
        return KafkaSinkMessage(
            key=key.encode(), value=_JSON.encode(feature_record(item)), topic=features_topic
        )

    return encode


def build_flow(
    settings: Settings,
    source: Source[Any],
    sink: Sink[Any],
    *,
    kafka_output: bool = True,
    emit_scores: bool = False,
    feedback_source: Source[Any] | None = None,
    flow_id: str = FLOW_ID,
) -> Dataflow:
    """Wire the detect flow between any source of Kafka-style messages and any sink.

    The source yields `KafkaSourceMessage`s (or `KafkaError`s); the sink receives
    `KafkaSinkMessage`s when `kafka_output`, else the `Alert`/`DeadLetter` objects themselves
    (plus a `WindowScore` with each scored window's anomaly probability when `emit_scores`,
    for backtests such as NAB). `feedback_source` yields operator verdicts
    (`operators.feedback.Feedback` JSON) that adjust the verdict's series.
    """
    flow = Dataflow(flow_id)
    raw = op.input("metrics_in", flow, source)
    router = ShardRouter(settings.features.shards)
    parsed = op.flat_map_batch("parse", raw, make_parse_step(parser_for(settings), router))
    split = op.branch("split_valid", parsed, is_shard_batch)
    shards: KeyedStream[list[MetricEvent]] = split.trues  # (shard, events) pairs
    featured = op.stateful_batch("features", shards, make_feature_builder(settings))
    windows = op.branch("split_late", op.map("drop_shard", featured, _value), is_window)
    late_or_rest = op.branch("split_host", windows.falses, is_dead_letter)
    forecasts = op.branch("split_forecasts", late_or_rest.falses, is_forecast_output)
    host_windows = forecasts.falses
    by_series: Any = op.key_on("key_by_series", windows.trues, _series_of_window)
    feedback_dead: Any = None
    if feedback_source is not None:
        verdicts = op.map(
            "parse_feedback", op.input("feedback_in", flow, feedback_source), parse_feedback_message
        )
        split_fb = op.branch("split_feedback", verdicts, is_feedback)
        keyed_fb = op.key_on("feedback_by_series", split_fb.trues, _series_of_feedback)
        by_series = op.merge("windows_and_feedback", by_series, keyed_fb)
        feedback_dead = op.map("count_bad_feedback", split_fb.falses, _count_dead_letter)
    detect_step = make_detect_step(
        detector_config(settings),
        emit_scores,
        suppression_rules(settings),
        combine_config(settings),
    )
    detected = op.stateful("detect", by_series, make_detect_builder(detect_step))
    results = op.map("drop_keys", detected, _value)
    late = late_or_rest.trues
    forecast_alerts = op.branch(
        "split_forecast_alerts", forecasts.trues, lambda x: isinstance(x, Alert)
    )
    rules = suppression_rules(settings)
    suppressed = op.map(
        "suppress_forecast_alerts", forecast_alerts.trues, lambda a: count_and_suppress(a, rules)
    )
    merged = op.merge("collect_outputs", split.falses, late, results, suppressed)
    if settings.topics.forecasts is not None:
        merged = op.merge("with_forecasts", merged, forecast_alerts.falses)
    if feedback_dead is not None:
        merged = op.merge("with_bad_feedback", merged, feedback_dead)
    if settings.topics.features is not None:
        published = op.merge("features_out", windows.trues, host_windows)
        merged = op.merge("with_features", merged, published)
    if settings.topics.hourly is not None:
        by_cluster_metric = op.key_on("key_by_cluster_metric", windows.trues, hourly_key)
        hourly = op.stateful("hourly", by_cluster_metric, make_hourly_builder(settings))
        merged = op.merge("with_hourly", merged, op.map("drop_hourly_key", hourly, _value))
    if kafka_output:
        merged = op.map("encode", merged, to_kafka_message(settings))
    op.output("out", merged, sink)
    return flow


def kafka_flow(settings: Settings | None = None) -> Dataflow:
    """The production flow: Kafka `metrics` in, `alerts` and `metrics.dlq` out."""
    settings = settings or load_settings()
    kafka = settings.kafka
    source = KafkaSource(
        kafka.brokers,
        [settings.topics.metrics],
        tail=kafka.tail,
        starting_offset=OFFSET_BEGINNING if kafka.starting_offset == "beginning" else OFFSET_END,
        add_config=dict(kafka.consumer_config),
        batch_size=kafka.batch_size,
        raise_on_errors=False,
    )
    producer_config = {**ORDERED_PRODUCER, "linger.ms": "5", "compression.type": "lz4"}
    producer_config.update(kafka.producer_config)
    sink = KafkaSink(kafka.brokers, None, add_config=producer_config)
    feedback = None
    if settings.topics.feedback is not None:
        # Every verdict from the start: thresholds are rebuilt when a flow starts afresh.
        feedback = KafkaSource(
            kafka.brokers,
            [settings.topics.feedback],
            tail=kafka.tail,
            starting_offset=OFFSET_BEGINNING,
            add_config=dict(kafka.consumer_config),
            raise_on_errors=False,
        )
    return build_flow(settings, source, sink, feedback_source=feedback)


def __getattr__(name: str) -> Dataflow:
    # `python -m bytewax.run dataflows.detect:flow` builds the Kafka flow on first access only,
    # so importing this module (tests, the demo) needs neither a broker nor valid Kafka settings.
    if name == "flow":
        return kafka_flow()
    raise AttributeError(name)
