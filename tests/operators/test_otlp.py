"""OpenTelemetry metrics as the Collector's Kafka exporter writes them (tests/fixtures/otlp):
OTLP JSON and OTLP protobuf give the same events."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2

from novacron_ml.core.catalogue import spec_for
from operators.ingest.parse import MessageParser, ParseLimits

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "otlp"
NO_CLOCK = ParseLimits(max_event_age_ms=0, max_event_future_ms=0)


def as_proto(name: str) -> bytes:
    request = metrics_service_pb2.ExportMetricsServiceRequest()
    json_format.Parse((FIXTURES / name).read_bytes(), request)
    return request.SerializeToString()


@pytest.mark.parametrize("encoding", ["otlp_json", "otlp_proto"])
def test_hostmetrics(encoding: str) -> None:
    payload = (FIXTURES / "hostmetrics.json").read_bytes()
    if encoding == "otlp_proto":
        payload = as_proto("hostmetrics.json")
    parser = MessageParser(NO_CLOCK)
    events, dead = parser.parse(payload)
    assert dead == []
    got = {(e.metric, tuple(sorted((e.labels or {}).items()))): e for e in events}
    used = got[("system_memory_utilization", (("os.type", "linux"), ("state", "used")))]
    assert (used.host, used.cluster, used.value) == ("web01", "default", 0.45)
    assert used.ts_ms == 1_700_000_000_000
    recv = got[
        (
            "system_network_io_total",
            (("device", "eth0"), ("direction", "receive"), ("os.type", "linux")),
        )
    ]
    assert recv.value == 123456789.0 and spec_for(recv.metric).counter  # cumulative: a counter
    assert (
        "system_memory_usage",
        (("os.type", "linux"), ("state", "used")),
    ) in got  # not monotonic
    assert not spec_for("system_memory_usage").counter
    assert len(events) == 5


@pytest.mark.parametrize("encoding", ["otlp_json", "otlp_proto"])
def test_service_metrics_delta_rate_and_skipped_histogram(encoding: str) -> None:
    payload = (FIXTURES / "app.json").read_bytes()
    if encoding == "otlp_proto":
        payload = as_proto("app.json")
    parser = MessageParser(NO_CLOCK)
    events, dead = parser.parse(payload)
    assert dead == []
    by_name = {e.metric: e for e in events}
    count = by_name["http_server_request_count"]
    assert count.value == pytest.approx(20.0)  # 1,200 requests in its 60 s: per second
    assert (count.host, count.cluster) == ("app07", "prod-eu")  # k8s.cluster.name
    assert count.labels == {"service.name": "checkout", "http.route": "/pay"}
    assert by_name["queue_depth"].value == 17.0
    assert parser.skipped == {"otlp_histogram": 1}


def test_a_point_without_host_is_dead_lettered_alone() -> None:
    doc = (FIXTURES / "app.json").read_text().replace('"host.name"', '"host.id"')
    events, dead = MessageParser(NO_CLOCK).parse(doc.encode())
    assert events == [] and len(dead) == 2
    assert {d.reason.value for d in dead} == {"missing_field"}
    assert dead[0].detail.startswith("http.server.request.count")


def test_garbage_after_a_newline_is_not_otlp_but_not_lost_either() -> None:
    events, dead = MessageParser(NO_CLOCK).parse(b"\n\xff\xfe not a protobuf")
    assert events == [] and len(dead) == 1
    events, dead = MessageParser(NO_CLOCK).parse(b"\nmem,host=a used=1i 1700000000000000000\n")
    assert [e.host for e in events] == ["a"] and dead == []  # text after a blank line: LP
