"""Fuzzing every wire format from real producers' messages: each fixture (Telegraf line
protocol and JSON, prometheus-kafka-adapter JSON, OTLP JSON and protobuf) mutated by byte
flips, drops, insertions and truncations never makes the parser raise, and never makes a
message vanish: it yields events, dead letters with a reason, or counted skips."""

from __future__ import annotations

import math
from pathlib import Path

from google.protobuf import json_format
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2

from novacron_ml.core.deadletter import Reason
from novacron_ml.core.schema import MetricEvent
from operators.ingest.parse import _CONTROL, MessageParser, ParseLimits

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
PARSER = MessageParser(ParseLimits(max_event_age_ms=0, max_event_future_ms=0))


def _otlp_proto(path: Path) -> bytes:
    request = metrics_service_pb2.ExportMetricsServiceRequest()
    json_format.Parse(path.read_bytes(), request)
    return request.SerializeToString()


def corpus() -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for path in sorted((FIXTURES / "telegraf").glob("*.lp")):
        lines = [line for line in path.read_bytes().splitlines() if line.strip()]
        out[f"lp:{path.name}"] = b"\n".join(lines[:4])
    for path in sorted((FIXTURES / "telegraf" / "json").glob("*.json")):
        lines = path.read_bytes().splitlines()  # one message per line (Telegraf's default)
        out[f"telegraf-json:{path.name}"] = lines[0] if len(lines) > 1 else path.read_bytes()
    samples = (FIXTURES / "prometheus_kafka_adapter" / "samples.json").read_bytes().splitlines()
    out["prometheus-json"] = samples[0]
    for path in sorted((FIXTURES / "otlp").glob("*.json")):
        out[f"otlp-json:{path.name}"] = path.read_bytes()
        out[f"otlp-proto:{path.name}"] = _otlp_proto(path)
    return out


CORPUS = corpus()


def test_the_corpus_parses_cleanly_before_mutation() -> None:
    assert len(CORPUS) >= 15
    for name, payload in CORPUS.items():
        events, dead = PARSER.parse(payload)
        assert events and not dead, name


mutation = st.tuples(
    st.sampled_from(["flip", "drop", "insert", "truncate", "duplicate"]),
    st.floats(0, 1, exclude_max=True),  # where, as a fraction of the message
    st.integers(0, 255),
)


def mutate(payload: bytes, edits: list[tuple[str, float, int]]) -> bytes:
    data = bytearray(payload)
    for op, where, byte in edits:
        if not data:
            break
        i = int(where * len(data))
        if op == "flip":
            data[i] ^= 1 << (byte % 8)
        elif op == "drop":
            del data[i]
        elif op == "insert":
            data.insert(i, byte)
        elif op == "truncate":
            del data[i:]
        else:
            data[i:i] = data[i : i + 1 + byte % 16]
    return bytes(data)


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.sampled_from(sorted(CORPUS)), st.lists(mutation, min_size=1, max_size=4))
def test_mutated_real_messages_never_raise_and_never_vanish(
    name: str, edits: list[tuple[str, float, int]]
) -> None:
    payload = mutate(CORPUS[name], edits)
    skipped = sum(PARSER.skipped.values())
    events, dead = PARSER.parse(payload)
    assert events or dead or sum(PARSER.skipped.values()) > skipped, f"{name}: vanished"
    for e in events:
        assert isinstance(e, MetricEvent) and math.isfinite(e.value)
        assert e.host and e.cluster and e.metric
        assert not any(c in _CONTROL for n in (e.host, e.cluster, e.metric) for c in n)
    for d in dead:
        assert isinstance(d.reason, Reason) and d.detail
        assert d.reason is not Reason.INVALID_VALUE or not d.detail.startswith("parser error")


# -- the batch fast path (MessageParser.parse_objects) ------------------------------------------
def _our_object(i: int, **edit: object) -> bytes:
    import msgspec

    doc: dict[str, object] = {"ts": 1_767_225_600_000 + i * 5_000, "host": f"h{i % 3}"}
    doc.update({"cluster": "c", "metric": "cpu_util", "value": 0.5 + i / 100})
    doc.update(edit)
    return msgspec.json.encode(doc)


FAST_PATH_CASES = {
    "ours": _our_object,
    "labels": lambda i: _our_object(i, labels={"cpu": f"cpu{i % 2}"}),
    "too old": lambda i: _our_object(i, ts=1),
    "too new": lambda i: _our_object(i, ts=4_102_444_800_000),
    "infinite": lambda i: (
        _our_object(i).replace(b'"value":', b'"value":1e400,"x":0,"_":')[:0]
        + _our_object(i, value=0).replace(b'"value":0', b'"value":1e400')
    ),
    "rfc3339": lambda i: _our_object(i, ts="2026-01-01T00:00:05Z"),
    "naive time": lambda i: _our_object(i, ts="2026-01-01T00:00:05"),
    "escape": lambda i: _our_object(i, host="h\\u001b[31m"),
    "control": lambda i: _our_object(i, host="h\x07"),
    "c1": lambda i: _our_object(i, host="h\u0085"),
    "two objects": lambda i: _our_object(i) + b"," + _our_object(i + 1),
    "array": lambda i: b"[" + _our_object(i) + b"]",
    "bad json": lambda i: _our_object(i)[:-2] + b"}",
    "unknown field": lambda i: _our_object(i, extra=1),
    "wrong type": lambda i: _our_object(i, value="x"),
    "telegraf json": lambda i: CORPUS[next(k for k in CORPUS if k.startswith("telegraf-json"))],
    "line protocol": lambda i: b"cpu,host=h1 usage_idle=1 1767225600000000000",
    "leading space": lambda i: b" " + _our_object(i),
    "trailing newline": lambda i: _our_object(i) + b"\n",
    "empty": lambda i: b"",
    "oversized": lambda i: _our_object(i, host="h" * 2_000),
}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(sorted(FAST_PATH_CASES)), min_size=1, max_size=12))
def test_the_batch_fast_path_gives_what_message_by_message_gives(kinds: list[str]) -> None:
    """Whatever a batch holds, the flow's parse step with the fast path puts out exactly the
    events and dead letters (reason, detail, payload, key, source) of the per-message path,
    and so does it given the same messages as one `MessageBatch` (what the flow's sources
    yield)."""

    from bytewax.connectors.kafka import KafkaSourceMessage

    from dataflows.io import MessageBatch
    from dataflows.steps import ShardRouter, make_parse_step

    batch = [
        KafkaSourceMessage(key=f"k{i}".encode(), value=FAST_PATH_CASES[kind](i), topic="t",
                           partition=0, offset=i)
        for i, kind in enumerate(kinds)
    ]  # fmt: skip
    limits = ParseLimits(max_event_age_ms=86_400_000 * 3650, max_event_future_ms=600_000,
                         max_message_bytes=1_024)  # fmt: skip
    as_batch = MessageBatch("t", 0, [m.key for m in batch], [m.value for m in batch],
                            [m.offset for m in batch])  # fmt: skip
    outs = []
    for fast, items in ((True, batch), (False, batch), (True, [as_batch])):
        parser = MessageParser(limits, lambda: 1_767_225_600_000)  # the step reads its clock
        if not fast:
            parser.parse_objects = lambda *a, **k: None  # type: ignore[method-assign]
        outs.append(make_parse_step(parser, ShardRouter(2))(items))
    with_fast, without, batched = outs
    assert with_fast == without, kinds
    assert batched == with_fast, kinds
    if all(k in ("ours", "labels", "rfc3339") for k in kinds):  # the fast path was taken
        parser = MessageParser(limits)
        assert parser.parse_objects([m.value for m in batch], 1_767_225_600_000, []) == []
