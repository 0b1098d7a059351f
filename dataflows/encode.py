"""Flow outputs to Kafka records: the one place that knows which item goes to which topic.

Record formats are in docs/MESSAGES.md.
"""

from __future__ import annotations

from typing import Any

import msgspec
from bytewax.connectors.kafka import KafkaSinkMessage

from novacron_ml.core.deadletter import DeadLetter
from novacron_ml.core.features import FEATURE_NAMES, FEATURE_VERSION, FeatureWindow
from novacron_ml.core.schema import Alert, Incident, rfc3339_ms
from novacron_ml.core.settings import TopicSettings
from operators.aggregate.hourly import HourlyAggregate
from operators.detection.iforest import ShadowScore
from operators.features.cross import HostWindow
from operators.forecast.forecaster import SeriesForecast, ShadowForecast

DLQ_MAX_PAYLOAD_BYTES = 900_000
"""Dead-letter payloads are cut to this (and say so in a header) so that a DLQ record always
fits Kafka's default 1 MB message limit: a record the sink cannot write would stop the flow."""

_JSON = msgspec.json.Encoder()


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


def to_kafka_message(topics: TopicSettings) -> Any:
    alerts_topic, dlq_topic = topics.alerts, topics.dlq
    features_topic, hourly_topic = topics.features, topics.hourly
    forecasts_topic, incidents_topic = topics.forecasts, topics.incidents
    shadow_topic = topics.forecasts_shadow
    scores_shadow_topic = topics.scores_shadow

    def encode(
        item: Alert
        | Incident
        | DeadLetter
        | FeatureWindow
        | HostWindow
        | HourlyAggregate
        | SeriesForecast
        | ShadowScore,
    ) -> KafkaSinkMessage[bytes | None, bytes | None]:
        if isinstance(item, ShadowScore):
            return KafkaSinkMessage(
                key=item.series.encode(), value=_JSON.encode(item), topic=scores_shadow_topic
            )
        if isinstance(item, ShadowForecast):
            return KafkaSinkMessage(
                key=item.series.encode(), value=_JSON.encode(item), topic=shadow_topic
            )
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
        if isinstance(item, Incident):
            return KafkaSinkMessage(
                key=item.incident_id.encode(), value=_JSON.encode(item), topic=incidents_topic
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
