"""The detect flow: metrics -> parse/validate -> event-time windows -> robust z -> alerts.

    python -m bytewax.run dataflows.detect:flow        # Kafka in and out, settings from env
    novacron-ml run                                    # the same, with CLI options

Topology (each step a short named function; logic in `operators/`):

    metrics_in -> parse ─┬─ valid -> key_by_series -> window ─┬─ down -> detect ─┐
                         │                                    └─ late ──────────┤
                         └─ dead letters ────────────────────────────────────────┴─> out

Everything the flow cannot use leaves through the sink as a `DeadLetter` (to `metrics.dlq`):
malformed input, late events and windows re-opened by late data. Nothing is dropped silently.
"""

from __future__ import annotations

from collections import Counter
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
from bytewax.operators import windowing as win
from bytewax.outputs import Sink
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END

from novacron_ml import observability as obs
from novacron_ml.schema import Alert, MetricEvent
from novacron_ml.settings import Settings, load_settings
from operators.deadletter import DeadLetter, Reason
from operators.parse import MessageParser, ParseLimits
from operators.robust_z import RobustZConfig
from operators.series import SeriesState, detect_window, new_series_state
from operators.windows import WindowGrid, WindowStats

FLOW_ID = "novacron_detect"
ALIGN_TO = datetime(1970, 1, 1, tzinfo=UTC)

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


def window_grid(settings: Settings) -> WindowGrid:
    length_ms = round(settings.window.length_s * 1000)
    slide_s = settings.window.slide_s
    slide_ms = length_ms if slide_s is None else round(slide_s * 1000)
    return WindowGrid(length_ms=length_ms, slide_ms=slide_ms, align_ms=0)


def _source_of(msg: KafkaSourceMessage[Any, Any]) -> str:
    if msg.topic is None:
        return ""
    return f"{msg.topic}:{msg.partition}:{msg.offset}"


def make_parse_step(parser: MessageParser) -> Any:
    """Batch step: raw Kafka messages (or consumer errors) to events and dead letters."""

    def parse_batch(batch: list[Any]) -> list[MetricEvent | DeadLetter]:
        with obs.PARSE_BATCH_SECONDS.time():
            out: list[MetricEvent | DeadLetter] = []
            reasons: Counter[str] = Counter()
            n_events = 0
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
                events, dead = parser.parse(msg.value, msg.key, _source_of(msg))
                out.extend(events)
                out.extend(dead)
                n_events += len(events)
                for d in dead:
                    reasons[d.reason] += 1
            obs.MESSAGES.inc(len(batch))
            obs.EVENTS.inc(n_events)
            for reason, n in reasons.items():
                obs.DEAD_LETTERS.labels(reason=reason).inc(n)
            return out

    return parse_batch


def is_event(item: MetricEvent | DeadLetter) -> bool:
    return isinstance(item, MetricEvent)


def series_of(event: MetricEvent) -> str:
    return f"{event.cluster}/{event.host}/{event.metric}"


def event_time(event: MetricEvent) -> datetime:
    return datetime.fromtimestamp(event.ts_ms / 1000, tz=UTC)


def fold_event(stats: WindowStats, event: MetricEvent) -> WindowStats:
    return stats.add(event.ts_ms, event.value)


def merge_stats(a: WindowStats, b: WindowStats) -> WindowStats:
    return a.merge(b)


def late_event_dead_letter(keyed: tuple[str, tuple[int, MetricEvent]]) -> DeadLetter:
    series, (window_id, event) = keyed
    obs.DEAD_LETTERS.labels(reason=Reason.LATE_EVENT.value).inc()
    return DeadLetter(
        Reason.LATE_EVENT,
        f"event for window {window_id} arrived after the watermark passed it",
        _JSON.encode(event.to_wire()),
        series.encode(),
    )


def attach_series(
    keyed: tuple[str, tuple[int, WindowStats]],
) -> tuple[str, tuple[str, tuple[int, WindowStats]]]:
    """Bytewax's stateful_map does not pass the key to the mapper; carry it in the value."""
    return keyed[0], keyed


def make_detect_step(config: RobustZConfig, grid: WindowGrid) -> Any:
    def detect(
        state: SeriesState | None, keyed: tuple[str, tuple[int, WindowStats]]
    ) -> tuple[SeriesState, Output | None]:
        series, (window_id, stats) = keyed
        if state is None:
            state = new_series_state(series, config)
        result = detect_window(state, series, window_id, stats, grid)
        if isinstance(result, DeadLetter):
            obs.DEAD_LETTERS.labels(reason=result.reason.value).inc()
        else:
            obs.WINDOWS.inc()
            obs.WINDOWED_EVENTS.inc(stats.count)
            if result is not None:
                obs.ALERTS.labels(type=result.type, severity=result.severity).inc()
        return state, result

    return detect


def to_kafka_message(settings: Settings) -> Any:
    alerts_topic, dlq_topic = settings.topics.alerts, settings.topics.dlq

    def encode(item: Output) -> KafkaSinkMessage[bytes | None, bytes | None]:
        if isinstance(item, Alert):
            return KafkaSinkMessage(
                key=item.alert_id.encode(), value=_JSON.encode(item), topic=alerts_topic
            )
        return KafkaSinkMessage(
            key=item.key, value=item.payload, topic=dlq_topic, headers=item.headers()
        )

    return encode


def build_flow(
    settings: Settings,
    source: Source[Any],
    sink: Sink[Any],
    *,
    kafka_output: bool = True,
    flow_id: str = FLOW_ID,
) -> Dataflow:
    """Wire the detect flow between any source of Kafka-style messages and any sink.

    The source yields `KafkaSourceMessage`s (or `KafkaError`s); the sink receives
    `KafkaSinkMessage`s when `kafka_output`, else the `Alert`/`DeadLetter` objects themselves.
    """
    flow = Dataflow(flow_id)
    raw = op.input("metrics_in", flow, source)
    parsed = op.flat_map_batch("parse", raw, make_parse_step(parser_for(settings)))
    split = op.branch("split_valid", parsed, is_event)
    keyed = op.key_on("key_by_series", split.trues, series_of)

    grid = window_grid(settings)
    clock = win.EventClock(
        ts_getter=event_time,
        wait_for_system_duration=timedelta(seconds=settings.window.allowed_lateness_s),
    )
    windower = win.SlidingWindower(
        length=timedelta(milliseconds=grid.length_ms),
        offset=timedelta(milliseconds=grid.slide_ms),
        align_to=ALIGN_TO,
    )
    windows = win.fold_window(
        "window", keyed, clock, windower, WindowStats, fold_event, merge_stats
    )
    late = op.map("late_to_dead_letter", windows.late, late_event_dead_letter)
    with_key = op.map("attach_series", windows.down, attach_series)
    detected = op.stateful_map(
        "detect", with_key, make_detect_step(detector_config(settings), grid)
    )
    results = op.filter_map("drop_quiet", detected, lambda kv: kv[1])
    merged = op.merge("collect_outputs", split.falses, late, results)
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
    producer_config = {"linger.ms": "5", "compression.type": "lz4"}
    producer_config.update(kafka.producer_config)
    sink = KafkaSink(kafka.brokers, None, add_config=producer_config)
    return build_flow(settings, source, sink)


def __getattr__(name: str) -> Dataflow:
    # `python -m bytewax.run dataflows.detect:flow` builds the Kafka flow on first access only,
    # so importing this module (tests, the demo) needs neither a broker nor valid Kafka settings.
    if name == "flow":
        return kafka_flow()
    raise AttributeError(name)
