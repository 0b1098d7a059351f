"""Parsing of the three wire formats: table-driven cases plus hypothesis properties."""

from __future__ import annotations

import json
import math

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from novacron_ml.app.malformed import MALFORMED
from novacron_ml.core.deadletter import DeadLetter, Reason
from novacron_ml.core.schema import MetricEvent, WireEvent
from operators.ingest.parse import (
    OVERSIZED_KEEP_BYTES,
    MessageParser,
    ParseLimits,
    _fast_line,
    _field_value,
    _Reject,
    field_value_general,
    parse_line_general,
)

NOW = 1_790_000_000_000  # fixed "wall clock" so tests do not depend on the date
PARSER = MessageParser(ParseLimits(), now_ms=lambda: NOW)


def obj(**over: object) -> bytes:
    base: dict[str, object] = {
        "ts": NOW - 1000,
        "host": "h1",
        "cluster": "c1",
        "metric": "cpu_util",
        "value": 0.5,
    }
    base.update(over)
    return json.dumps({k: v for k, v in base.items() if v is not ...}).encode()


VALID = [
    pytest.param(obj(), [MetricEvent(NOW - 1000, "h1", "c1", "cpu_util", 0.5)], id="json-ms"),
    pytest.param(
        obj(ts="2026-09-21T14:13:19.000Z"),
        [MetricEvent(1789999999000, "h1", "c1", "cpu_util", 0.5)],
        id="json-rfc3339-z",
    ),
    pytest.param(
        obj(ts="2026-09-21T16:13:19+02:00"),
        [MetricEvent(1789999999000, "h1", "c1", "cpu_util", 0.5)],
        id="json-rfc3339-offset",
    ),
    pytest.param(
        obj(value=3, labels={"az": "eu-1"}),
        [MetricEvent(NOW - 1000, "h1", "c1", "cpu_util", 3.0, {"az": "eu-1"})],
        id="json-int-value-labels",
    ),
    pytest.param(
        b"  \n" + obj(),
        [MetricEvent(NOW - 1000, "h1", "c1", "cpu_util", 0.5)],
        id="json-leading-whitespace",
    ),
    pytest.param(
        b"[" + obj() + b"," + obj(metric="m2", value=-1.25) + b"]",
        [
            MetricEvent(NOW - 1000, "h1", "c1", "cpu_util", 0.5),
            MetricEvent(NOW - 1000, "h1", "c1", "m2", -1.25),
        ],
        id="json-array",
    ),
    pytest.param(
        b"cpu,host=h1,cluster=c1,az=eu-1 value=0.5 %d" % ((NOW - 1000) * 10**6),
        [MetricEvent(NOW - 1000, "h1", "c1", "cpu", 0.5, {"az": "eu-1"})],
        id="lp-value-field",
    ),
    pytest.param(
        b"cpu,host=h1,cluster=c1 usage_user=1.5,usage_system=2i %d" % ((NOW - 1000) * 10**6),
        [
            MetricEvent(NOW - 1000, "h1", "c1", "cpu_usage_user", 1.5),
            MetricEvent(NOW - 1000, "h1", "c1", "cpu_usage_system", 2.0),
        ],
        id="lp-multi-field",
    ),
    pytest.param(
        b"disk\\ io,host=h\\ 1,cluster=c\\,1 value=7u %d\n# comment\n\n"
        b"net,host=h1,cluster=c1 value=-1e3 %d" % ((NOW - 1000) * 10**6, (NOW - 1000) * 10**6),
        [
            MetricEvent(NOW - 1000, "h 1", "c,1", "disk io", 7.0),
            MetricEvent(NOW - 1000, "h1", "c1", "net", -1000.0),
        ],
        id="lp-escapes-comments-multiline",
    ),
]


@pytest.mark.parametrize(("payload", "expected"), VALID)
def test_valid_messages_parse_to_events(payload: bytes, expected: list[MetricEvent]) -> None:
    events, dead = PARSER.parse(payload)
    assert dead == []
    assert events == expected


@pytest.mark.parametrize(
    ("reason", "build"),
    [pytest.param(r, b, id=f"{i}-{r.value}") for i, (r, b) in enumerate(MALFORMED)],
)
def test_every_malformed_case_is_dead_lettered_with_its_reason(reason: Reason, build) -> None:  # type: ignore[no-untyped-def]
    payload = build(NOW)
    events, dead = PARSER.parse(payload, b"k", "metrics:0:42")
    assert events == []
    assert [d.reason for d in dead] == [reason]
    if reason is Reason.OVERSIZED:
        assert dead[0].payload == payload[:OVERSIZED_KEEP_BYTES]
    else:
        assert dead[0].payload == payload
    assert dead[0].key == b"k"
    headers = dict(dead[0].headers())
    assert headers["novacron.reason"] == reason.value.encode()
    assert headers["novacron.source"] == b"metrics:0:42"


def test_array_with_bad_elements_keeps_the_good_ones() -> None:
    payload = b"[" + obj() + b',{"ts":1},' + obj(value="x") + b"," + obj(metric="m2") + b"]"
    events, dead = PARSER.parse(payload)
    assert [e.metric for e in events] == ["cpu_util", "m2"]
    assert [(d.reason, d.payload) for d in dead] == [
        (Reason.MISSING_FIELD, b'{"ts":1}'),
        (Reason.WRONG_TYPE, obj(value="x")),
    ]
    assert dead[0].detail.startswith("[1]") and dead[1].detail.startswith("[2]")


def test_array_element_out_of_time_bounds_is_dead_lettered_alone() -> None:
    payload = b"[" + obj() + b"," + obj(ts=NOW + 3_600_000) + b"]"
    events, dead = PARSER.parse(payload)
    assert len(events) == 1
    assert [d.reason for d in dead] == [Reason.TS_FUTURE]
    assert msgspec.json.decode(dead[0].payload)["ts"] == NOW + 3_600_000


def test_line_protocol_bad_line_does_not_spoil_good_lines() -> None:
    ts = (NOW - 1000) * 10**6
    payload = (
        b"cpu,host=h1,cluster=c1 value=1 %d\n"
        b"cpu,cluster=c1 value=2 %d\n"
        b"cpu,host=h2,cluster=c1 value=3 %d"
        % (
            ts,
            ts,
            ts,
        )
    )
    events, dead = PARSER.parse(payload)
    assert [e.value for e in events] == [1.0, 3.0]
    assert [d.reason for d in dead] == [Reason.MISSING_FIELD]
    assert dead[0].payload == b"cpu,cluster=c1 value=2 %d" % ts
    assert dead[0].detail.startswith("line 2")


@pytest.mark.parametrize(
    ("precision", "ts", "expected_ms"),
    [("ns", 1_789_999_999_000_000_000, 1_789_999_999_000), ("s", 1_789_999_999, 1_789_999_999_000)],
)
def test_line_protocol_precision(precision: str, ts: int, expected_ms: int) -> None:
    parser = MessageParser(ParseLimits(line_protocol_precision=precision), now_ms=lambda: NOW)
    events, dead = parser.parse(b"m,host=h,cluster=c value=1 %d" % ts)
    assert dead == [] and events[0].ts_ms == expected_ms


def test_time_bounds_can_be_disabled() -> None:
    parser = MessageParser(
        ParseLimits(max_event_age_ms=0, max_event_future_ms=0), now_ms=lambda: NOW
    )
    events, dead = parser.parse(obj(ts=1000))
    assert dead == [] and events[0].ts_ms == 1000


# -- properties ---------------------------------------------------------------------------------


def _accounted(
    payload: bytes, events: list[MetricEvent], dead: list[DeadLetter], skipped: int = 0
) -> None:
    assert events or dead or skipped, f"{payload!r} disappeared"
    for e in events:
        assert isinstance(e, MetricEvent) and math.isfinite(e.value)
        assert e.host and e.cluster and e.metric
    for d in dead:
        assert isinstance(d.reason, Reason) and d.detail


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise_and_never_vanish(payload: bytes) -> None:
    skipped = sum(PARSER.skipped.values())
    events, dead = PARSER.parse(payload)
    _accounted(payload, events, dead, sum(PARSER.skipped.values()) - skipped)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=8,
)
event_like = st.fixed_dictionaries(
    {},
    optional={
        "ts": st.one_of(st.integers(), st.just(NOW), st.text(max_size=30), st.floats()),
        "host": st.one_of(st.text(max_size=5), st.integers()),
        "cluster": st.text(max_size=5),
        "metric": st.one_of(st.text(max_size=5), st.none()),
        "value": st.one_of(st.floats(allow_nan=False), st.integers(), st.text(max_size=3)),
        "labels": json_values,
        "extra": json_values,
    },
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(event_like, st.lists(event_like, max_size=5), json_values))
def test_arbitrary_json_never_raises_and_never_vanishes(doc: object) -> None:
    payload = json.dumps(doc).encode()
    events, dead = PARSER.parse(payload)
    _accounted(payload, events, dead)
    if isinstance(doc, list) and doc:
        # every element is accounted for exactly once
        assert len(events) + len(dead) == len(doc) or (len(dead) == 1 and not events)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.text(alphabet=st.sampled_from(list('abch=,\\ "0123456789.-eitu\n#')), max_size=60),
        min_size=1,
        max_size=4,
    )
)
def test_arbitrary_line_protocol_never_raises_and_never_vanishes(lines: list[str]) -> None:
    payload = "\n".join(lines).encode()
    skipped = sum(PARSER.skipped.values())
    events, dead = PARSER.parse(payload)
    _accounted(payload, events, dead, sum(PARSER.skipped.values()) - skipped)


printable = st.characters(blacklist_categories=["Cs", "Cc"])
names = st.text(alphabet=printable, min_size=1, max_size=20)


@settings(max_examples=200)
@given(
    ts=st.integers(NOW - 6 * 86_400_000, NOW + 200_000),
    host=names,
    cluster=names,
    metric=names,
    value=st.floats(allow_nan=False, allow_infinity=False),
    labels=st.none() | st.dictionaries(names, st.text(alphabet=printable, max_size=20), max_size=3),
)
def test_valid_wire_events_round_trip(
    ts: int, host: str, cluster: str, metric: str, value: float, labels: dict[str, str] | None
) -> None:
    wire = WireEvent(ts, host, cluster, metric, value, labels)
    events, dead = PARSER.parse(msgspec.json.encode(wire))
    assert dead == []
    assert events == [MetricEvent(ts, host, cluster, metric, value, labels)]


@settings(max_examples=200)
@given(
    name=names,
    control=st.characters(whitelist_categories=["Cc"]),
    where=st.sampled_from(["host", "cluster", "metric", "label key", "label value"]),
    at=st.integers(0, 20),
)
def test_a_control_character_in_any_name_is_a_dead_letter(
    name: str, control: str, where: str, at: int
) -> None:
    bad = name[:at] + control + name[at:]
    parts = {"host": "h", "cluster": "c", "metric": "m"}
    labels = None
    if where in parts:
        parts[where] = bad
    else:
        labels = {bad: "v"} if where == "label key" else {"k": bad}
    wire = WireEvent(NOW, parts["host"], parts["cluster"], parts["metric"], 1.0, labels)
    events, dead = PARSER.parse(msgspec.json.encode(wire))
    assert events == []
    assert [d.reason for d in dead] == [Reason.INVALID_VALUE]
    assert "control character" in dead[0].detail and control not in dead[0].detail


def _outcome(fn, arg):  # type: ignore[no-untyped-def]
    try:
        return ("ok", fn(arg))
    except _Reject as rej:
        return ("rejected", rej.reason)


lp_text = st.text(alphabet=st.sampled_from(list('abch=,_ \\"0123456789.-+eEiutfTF١')), max_size=50)


@settings(max_examples=500)
@given(lp_text)
def test_line_fast_path_agrees_with_the_general_parser(line: str) -> None:
    fast = _fast_line(line)
    if fast is not None:
        assert _outcome(parse_line_general, line) == ("ok", fast)


@settings(max_examples=500)
@given(st.one_of(lp_text, st.floats().map(repr), st.integers().map(lambda i: f"{i}i")))
def test_field_value_fast_path_agrees_with_the_general_one(raw: str) -> None:
    if raw:
        assert _outcome(_field_value, raw) == _outcome(field_value_general, raw)
