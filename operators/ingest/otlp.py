"""OpenTelemetry metrics as the Collector's Kafka exporter writes them: OTLP protobuf (its
default `otlp_proto` encoding) or OTLP JSON (`otlp_json`), one ExportMetricsServiceRequest
per message.

Gauges and sums become events; each data point's identity is its resource's attributes
(`host.name` names the host, `ingest.cluster_tags` the cluster) plus its own attributes.
Names keep the Prometheus translation's shape: dots become underscores, and a monotonic
cumulative sum gets `_total` (so the catalogue scores it as a counter, a per-second rate); a
monotonic delta sum is turned into its per-second rate here (its value is the increase over
the point's own interval). Histograms, exponential histograms and summaries are skipped and
counted (`novacron_fields_skipped_total{reason="otlp_<type>"}`), as are points without a
value.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from novacron_ml.core.schema import MetricEvent

Identity = Callable[[dict[str, str]], tuple[str, str, dict[str, str] | None]]
Skip = Callable[[str], None]
CheckTime = Callable[[int, int], None]

_DELTA = 1
_CUMULATIVE = 2


class OtlpError(ValueError):
    """Not a usable OTLP message (the parser dead-letters it with this reason text)."""


def _any_value(value: Any) -> str:
    kind = value.WhichOneof("value")
    if kind is None:
        return ""
    v = getattr(value, kind)
    if kind == "bool_value":
        return "true" if v else "false"
    if kind in ("array_value", "kvlist_value", "bytes_value"):
        return str(v)[:256]
    return str(v)


def _attributes(kvs: Any) -> dict[str, str]:
    return {kv.key: _any_value(kv.value) for kv in kvs}


def decode_proto(payload: bytes) -> Any:
    from google.protobuf.message import DecodeError
    from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2

    request = metrics_service_pb2.ExportMetricsServiceRequest()
    try:
        request.ParseFromString(payload)
    except DecodeError as exc:
        raise OtlpError(f"not OTLP protobuf: {exc}") from None
    return request


def decode_json(payload: bytes) -> Any:
    from google.protobuf import json_format
    from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2

    request = metrics_service_pb2.ExportMetricsServiceRequest()
    try:
        json_format.Parse(payload, request, ignore_unknown_fields=True)
    except json_format.ParseError as exc:
        raise OtlpError(f"not OTLP JSON: {str(exc)[:300]}") from None
    return request


def events(
    request: Any,
    identity: Identity,
    skip: Skip,
    check_time: CheckTime,
    now: int,
    on_error: Callable[[Exception, str, bytes], None],
    check_name: Callable[[str], None] = lambda _name: None,
) -> list[MetricEvent]:
    """Every gauge and sum data point of the request as events; a point that `identity` or
    `check_time` refuses (or whose value is not finite) goes to `on_error(exc, where, its
    JSON)` alone, the others pass. Raises OtlpError for a request without any metric."""
    from google.protobuf import json_format

    out: list[MetricEvent] = []
    seen = 0
    for rm in request.resource_metrics:
        resource = _attributes(rm.resource.attributes)
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                seen += 1
                kind = metric.WhichOneof("data")
                if kind not in ("gauge", "sum"):
                    skip(f"otlp_{kind or 'empty'}")
                    continue
                name = metric.name.replace(".", "_")
                data = getattr(metric, kind)
                delta = False
                if kind == "sum" and data.is_monotonic:
                    if data.aggregation_temporality == _CUMULATIVE and not name.endswith("_total"):
                        name += "_total"
                    delta = data.aggregation_temporality == _DELTA
                for point in data.data_points:
                    value_kind = point.WhichOneof("value")
                    if value_kind is None:
                        skip("otlp_no_value")
                        continue
                    value = float(getattr(point, value_kind))
                    if delta:
                        seconds = (point.time_unix_nano - point.start_time_unix_nano) / 1e9
                        if seconds <= 0:
                            skip("otlp_delta_without_interval")
                            continue
                        value /= seconds
                    ts_ms = point.time_unix_nano // 1_000_000
                    try:
                        if not math.isfinite(value):
                            raise OtlpError(f"value {value} is not finite")
                        check_time(ts_ms, now)
                        check_name(name)
                        tags = {**resource, **_attributes(point.attributes)}
                        host, cluster, labels = identity(tags)
                    except Exception as exc:
                        where = f"{metric.name}[{len(out)}]"
                        on_error(exc, where, json_format.MessageToJson(point).encode())
                        continue
                    out.append(MetricEvent(ts_ms, host, cluster, name, value, labels))
    if not seen:
        raise OtlpError("OTLP request without metrics")
    return out
