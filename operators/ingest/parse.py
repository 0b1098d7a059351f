"""Parse and validate metric messages in the three wire formats fleets emit.

- a JSON object per message (`WireEvent`),
- a JSON array of such objects (batching producers),
- InfluxDB line protocol, one or more lines (Telegraf's default Kafka output).

`MessageParser.parse` never raises: every input ends as `MetricEvent`s or `DeadLetter`s. In a
batched message (array or several lines) each bad element or line is dead-lettered alone with
its own bytes, and the valid ones around it pass untouched.
"""

from __future__ import annotations

import math
import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

import msgspec

from novacron_ml.core.deadletter import DeadLetter, Reason
from novacron_ml.core.schema import MAX_LABELS, MetricEvent, WireEvent, parse_rfc3339_ms
from novacron_ml.core.settings import IngestSettings
from operators.ingest import otlp

_OBJECT = msgspec.json.Decoder(WireEvent)
_ARRAY = msgspec.json.Decoder(list[WireEvent])
_RAW_ARRAY = msgspec.json.Decoder(list[msgspec.Raw])
_ANY = msgspec.json.Decoder()

OVERSIZED_KEEP_BYTES = 65_536
"""An oversized message is dead-lettered with only this many leading bytes."""

_PRECISION_TO_MS = {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1000.0}
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_INTEGER = re.compile(r"[+-]?\d+")
_DIGITS_OR_DOT = frozenset("0123456789.")
_NUMBER_START = frozenset("0123456789.+-")
_BOOLEANS = frozenset(("t", "T", "true", "True", "TRUE", "f", "F", "false", "False", "FALSE"))


@dataclass(frozen=True)
class ParseLimits:
    """Bounds a message must respect (zero disables the timestamp bounds), and how tags map
    to a series' identity."""

    max_message_bytes: int = 1_048_576
    max_event_age_ms: int = 7 * 86_400_000
    max_event_future_ms: int = 300_000
    line_protocol_precision: str = "ns"
    telegraf_json_precision: str = "s"
    host_tags: tuple[str, ...] = ("host", "instance", "host.name")
    cluster_tags: tuple[str, ...] = ("cluster", "k8s.cluster.name")
    default_cluster: str = "default"
    ignore_tags: frozenset[str] = frozenset()

    @classmethod
    def from_settings(
        cls, ingest: IngestSettings, *, wall_clock_bounds: bool = True
    ) -> ParseLimits:
        """The limits of the `ingest` settings group; without `wall_clock_bounds` (replays,
        training from a topic) no event is too old or too far ahead of the wall clock."""
        return cls(
            max_message_bytes=ingest.max_message_bytes,
            max_event_age_ms=int(ingest.max_event_age_s * 1000) if wall_clock_bounds else 0,
            max_event_future_ms=int(ingest.max_event_future_s * 1000) if wall_clock_bounds else 0,
            line_protocol_precision=ingest.line_protocol_precision,
            telegraf_json_precision=ingest.telegraf_json_precision,
            host_tags=tuple(ingest.host_tags),
            cluster_tags=tuple(ingest.cluster_tags),
            default_cluster=ingest.default_cluster,
            ignore_tags=frozenset(ingest.ignore_tags),
        )


class _Reject(Exception):
    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


_BOM = b"\xef\xbb\xbf"
_C0_DEL = bytes([*range(0x0A), *range(0x0B, 0x20), 0x7F])
"""Raw C0 control bytes but newline (the line separator), and DEL (deleted by translate)."""
_C1_UTF8 = re.compile(rb"\xc2[\x80-\x9f]")
"""The C1 controls as UTF-8 (searched only in a message that is not ASCII)."""
_CONTROL = frozenset(map(chr, [*range(0x20), *range(0x7F, 0xA0)]))
"""C0 controls, DEL and C1 controls: what no metric, host or tag name may contain."""


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def _classify_validation(message: str) -> Reason:
    if "at `$.ts`" in message or ("at `$[" in message and "].ts`" in message):
        return Reason.BAD_TIMESTAMP
    if "missing required field" in message:
        return Reason.MISSING_FIELD
    if "unknown field" in message:
        return Reason.UNKNOWN_FIELD
    if "out of range" in message:
        return Reason.NON_FINITE
    if message.startswith("Expected `") and "got `" in message:
        return Reason.WRONG_TYPE
    return Reason.INVALID_VALUE


class MessageParser:
    """Turns raw message bytes into validated events and dead letters."""

    def __init__(
        self, limits: ParseLimits | None = None, now_ms: Callable[[], int] = wall_clock_ms
    ):
        self.limits = limits or ParseLimits()
        self.now_ms = now_ms
        self.skipped: Counter[str] = Counter()
        self._printable: set[str] = set()
        self._names_suspect = True
        """Whether the message being parsed may hold a control character (see _parse_into)."""
        """Names already found free of control characters (bounded: cleared when large)."""
        """Fields skipped as not numbers, by reason (the flow exports them as a counter)."""
        self._lp_scale = _PRECISION_TO_MS[self.limits.line_protocol_precision]

    # -- entry point ---------------------------------------------------------------------------
    def parse(
        self, payload: bytes | None, key: bytes | None = None, source: str = ""
    ) -> tuple[list[MetricEvent], list[DeadLetter]]:
        events: list[MetricEvent] = []
        dead: list[DeadLetter] = []
        self.parse_into(payload, key, source, self.now_ms(), events, dead)
        return events, dead

    def parse_into(
        self,
        payload: bytes | None,
        key: bytes | None,
        source: str,
        now: int,
        events: list[MetricEvent],
        dead: list[DeadLetter],
    ) -> None:
        """Append one message's events and dead letters to the lists; never raises.

        The batch form of `parse`: the caller reads the clock once per batch (`now`).
        """
        n_events = len(events)
        try:
            self._parse_into(payload, key, source, now, events, dead)
        except RecursionError:  # msgspec's answer to JSON nested past the interpreter's limit
            del events[n_events:]
            detail = "JSON nested too deeply to decode"
            dead.append(DeadLetter(Reason.BAD_JSON, detail, payload or b"", key, source))
        except Exception as exc:  # a parser bug must not stop the flow either
            del events[n_events:]
            dead.append(
                DeadLetter(
                    Reason.INVALID_VALUE, f"parser error: {exc!r}", payload or b"", key, source
                )
            )

    def parse_objects(
        self, payloads: Sequence[bytes | None], now: int, events: list[MetricEvent]
    ) -> list[int] | None:
        """The batch fast path for messages that are each one JSON object of our format (a
        producer's usual shape): one decode of the batch as a JSON array instead of one
        decode, one shape check and one name scan per message. None when the batch does not
        qualify (a message that is not `{...}`, oversized, holds a backslash or control
        byte, is another producer's shape or bad JSON anywhere): the caller then parses it
        message by message, exactly as before. Otherwise every event is appended and the
        indices of the messages whose event was refused (a timestamp out of bounds, a
        non-finite value) come back, for the caller to parse one by one, so their dead
        letters are the per-message path's own."""
        limit = self.limits.max_message_bytes
        for payload in payloads:
            if not payload or payload[0] != 0x7B or payload[-1] != 0x7D or len(payload) > limit:
                return None
        joined = b"[" + b",".join(payloads) + b"]"  # type: ignore[arg-type]
        if (
            b"\\" in joined
            or len(joined.translate(None, _C0_DEL)) != len(joined)
            or (not joined.isascii() and _C1_UTF8.search(joined) is not None)
        ):
            return None
        try:
            wires = _ARRAY.decode(joined)
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
            return None
        if len(wires) != len(payloads):  # a message held more than one object: not ours
            return None
        self._names_suspect = False  # no byte in the batch can make a name suspect
        return self._append_events(wires, now, events)

    def _append_events(
        self, wires: Sequence[WireEvent], now: int, events: list[MetricEvent]
    ) -> list[int]:
        """Append each wire's event (`_to_event`; its checks inlined for the usual event: an
        integer timestamp within bounds, a finite value, names not suspect) and return the
        indices of the refused ones."""
        refused: list[int] = []
        to_event, append = self._to_event, events.append
        if self._names_suspect:
            for i, wire in enumerate(wires):
                try:
                    append(to_event(wire, now))
                except _Reject:
                    refused.append(i)
            return refused
        future, age = self.limits.max_event_future_ms, self.limits.max_event_age_ms
        latest = now + future if future else math.inf
        earliest = now - age if age else -math.inf
        isfinite = math.isfinite
        for i, wire in enumerate(wires):
            ts = wire.ts
            if type(ts) is int and earliest <= ts <= latest and isfinite(wire.value):
                append(MetricEvent(ts, wire.host, wire.cluster, wire.metric, wire.value,
                                   wire.labels))  # fmt: skip
                continue
            try:
                append(to_event(wire, now))
            except _Reject:
                refused.append(i)
        return refused

    def _parse_into(
        self,
        payload: bytes | None,
        key: bytes | None,
        source: str,
        now: int,
        events: list[MetricEvent],
        dead: list[DeadLetter],
    ) -> None:
        first = payload[:1] if payload else b""
        if first.isspace():
            first = payload.lstrip()[:1] if payload else b""
        if not first:
            dead.append(DeadLetter(Reason.EMPTY, "empty message", payload or b"", key, source))
            return
        assert payload is not None
        if len(payload) > self.limits.max_message_bytes:
            # Keep a prefix only: the whole message may exceed what the DLQ topic accepts.
            dead.append(
                DeadLetter(
                    Reason.OVERSIZED,
                    f"{len(payload)} bytes > limit {self.limits.max_message_bytes}; "
                    f"payload truncated to the first {OVERSIZED_KEEP_BYTES} bytes",
                    payload[:OVERSIZED_KEEP_BYTES],
                    key,
                    source,
                )
            )
            return
        # Names are checked for control characters only in a message that can hold one: raw
        # control bytes (C0 but newline, DEL, C1 as UTF-8) or a backslash (a JSON escape such
        # as \u001b or \t). Most messages have neither, and the scan runs at C speed.
        self._names_suspect = (
            b"\\" in payload
            or len(payload.translate(None, _C0_DEL)) != len(payload)
            or (not payload.isascii() and _C1_UTF8.search(payload) is not None)
        )
        if payload[:3] == _BOM and payload[3:].lstrip()[:1] in (b"{", b"["):
            detail = "a UTF-8 byte order mark before the JSON (RFC 8259 forbids it)"
            dead.append(DeadLetter(Reason.BAD_JSON, detail, payload, key, source))
            return
        if payload[:1] == b"\n" and _binary(payload):
            # OTLP protobuf (the Collector's default): field 1, resource_metrics, and bytes
            # that are no text (a text message starting with a blank line is not)
            self._parse_otlp(payload, key, source, now, events, dead, otlp.decode_proto)
        elif first == b"{":
            self._parse_object(payload, key, source, now, events, dead)
        elif first == b"[":
            self._parse_array(payload, key, source, now, events, dead)
        else:
            self._parse_lines(payload, key, source, now, events, dead)

    # -- JSON ----------------------------------------------------------------------------------
    def _decode_error(self, payload: bytes, exc: Exception) -> tuple[Reason, str]:
        if isinstance(exc, msgspec.ValidationError):
            return _classify_validation(str(exc)), str(exc)
        try:
            payload.decode("utf-8")
        except UnicodeDecodeError as ude:
            return Reason.UNDECODABLE, f"not UTF-8: {ude.reason} at byte {ude.start}"
        return Reason.BAD_JSON, str(exc)

    def _parse_object(
        self,
        payload: bytes,
        key: bytes | None,
        source: str,
        now: int,
        events: list[MetricEvent],
        dead: list[DeadLetter],
    ) -> None:
        try:
            wire = _OBJECT.decode(payload)
            events.append(self._to_event(wire, now))
        except _Reject as rej:
            dead.append(DeadLetter(rej.reason, rej.detail, payload, key, source))
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            reason, detail = self._decode_error(payload, exc)
            # not our shape: perhaps another producer's (Telegraf JSON, the adapter's)
            foreign = reason in (Reason.UNKNOWN_FIELD, Reason.MISSING_FIELD)
            if foreign and self._parse_foreign(payload, key, source, now, events, dead):
                return
            dead.append(DeadLetter(reason, detail, payload, key, source))

    def _parse_foreign(
        self,
        payload: bytes,
        key: bytes | None,
        source: str,
        now: int,
        events: list[MetricEvent],
        dead: list[DeadLetter],
    ) -> bool:
        """Other producers' JSON objects; False when it is none of them (the caller then
        dead-letters it as our format's error). Each sample is judged alone."""
        try:
            doc = _ANY.decode(payload)
        except msgspec.DecodeError:
            return False
        if not isinstance(doc, dict):
            return False
        if isinstance(doc.get("metrics"), list) and len(doc) == 1:  # Telegraf batch format
            for i, metric in enumerate(doc["metrics"]):
                element = msgspec.json.encode(metric)
                try:
                    events.extend(self._telegraf_json(metric, now))
                except _Reject as rej:
                    dead.append(DeadLetter(rej.reason, f"[{i}] {rej.detail}", element, key, source))
            if not doc["metrics"]:
                dead.append(DeadLetter(Reason.EMPTY, "no metrics", payload, key, source))
            return True
        if "resourceMetrics" in doc:  # OTLP JSON (the Collector's otlp_json encoding)
            self._parse_otlp(payload, key, source, now, events, dead, otlp.decode_json)
            return True
        kind = None
        if "fields" in doc and "name" in doc:
            kind = self._telegraf_json
        elif "name" in doc and "value" in doc and "labels" in doc:
            kind = self._prometheus_json
        if kind is None:
            return False
        try:
            events.extend(kind(doc, now))
        except _Reject as rej:
            dead.append(DeadLetter(rej.reason, rej.detail, payload, key, source))
        return True

    def _parse_otlp(
        self,
        payload: bytes,
        key: bytes | None,
        source: str,
        now: int,
        events: list[MetricEvent],
        dead: list[DeadLetter],
        decode: Callable[[bytes], object],
    ) -> None:
        def point_error(exc: Exception, where: str, point: bytes) -> None:
            reason = exc.reason if isinstance(exc, _Reject) else Reason.INVALID_VALUE
            if isinstance(exc, otlp.OtlpError):
                reason = Reason.NON_FINITE
            dead.append(DeadLetter(reason, f"{where}: {exc}", point, key, source))

        try:
            request = decode(payload)
            events.extend(
                otlp.events(
                    request,
                    self.identity,
                    self.skip,
                    self._check_time,
                    now,
                    point_error,
                    self.check_metric_name,
                )
            )
        except otlp.OtlpError as exc:
            reason = Reason.BAD_JSON if decode is otlp.decode_json else Reason.UNDECODABLE
            if "without metrics" in str(exc):
                reason = Reason.EMPTY
            dead.append(DeadLetter(reason, str(exc), payload, key, source))

    def _telegraf_json(self, doc: object, now: int) -> list[MetricEvent]:
        """One metric of Telegraf's JSON serializer: {"name", "tags", "fields", "timestamp"}."""
        if not isinstance(doc, dict):
            raise _Reject(Reason.WRONG_TYPE, "a Telegraf metric must be an object")
        name, tags, fields, ts = (doc.get(k) for k in ("name", "tags", "fields", "timestamp"))
        if not isinstance(name, str) or not name or len(name) > 128:
            raise _Reject(Reason.MISSING_FIELD, "Telegraf metric without a name")
        if not isinstance(fields, dict) or (tags is not None and not isinstance(tags, dict)):
            raise _Reject(Reason.WRONG_TYPE, "Telegraf metric: fields and tags must be objects")
        if type(ts) is not int:
            raise _Reject(Reason.BAD_TIMESTAMP, f"Telegraf timestamp {ts!r} is not an integer")
        ts_ms = int(ts * _PRECISION_TO_MS[self.limits.telegraf_json_precision])
        self._check_time(ts_ms, now)
        str_tags = {str(k): str(v) for k, v in (tags or {}).items()}
        host, cluster, labels = self.identity(str_tags)
        if self._names_suspect:
            self.check_names(name, *map(str, fields))
        out = []
        for field_key, value in fields.items():
            if isinstance(value, bool):
                self.skip("boolean_field")
                continue
            if isinstance(value, str):
                self.skip("string_field")
                continue
            if not isinstance(value, (int, float)):
                raise _Reject(Reason.WRONG_TYPE, f"field {str(field_key)[:40]!r} is not a number")
            if not math.isfinite(value):
                raise _Reject(Reason.NON_FINITE, f"field {str(field_key)[:40]!r} is not finite")
            metric = name if field_key == "value" else f"{name}_{field_key}"
            out.append(MetricEvent(ts_ms, host, cluster, metric, float(value), labels))
        return out

    def _prometheus_json(self, doc: object, now: int) -> list[MetricEvent]:
        """One sample of prometheus-kafka-adapter's JSON: {"timestamp": RFC 3339, "value":
        "1.5", "name", "labels"}; Prometheus' NaN staleness markers are skipped, counted."""
        assert isinstance(doc, dict)
        name, labels, value, ts = (doc.get(k) for k in ("name", "labels", "value", "timestamp"))
        if not isinstance(name, str) or not name or len(name) > 128:
            raise _Reject(Reason.MISSING_FIELD, "sample without a name")
        if not isinstance(labels, dict) or not isinstance(value, str):
            raise _Reject(Reason.WRONG_TYPE, "labels must be an object and value a string")
        if not isinstance(ts, str):
            raise _Reject(Reason.BAD_TIMESTAMP, "timestamp must be an RFC 3339 string")
        try:
            ts_ms = parse_rfc3339_ms(ts)
        except ValueError:
            raise _Reject(Reason.BAD_TIMESTAMP, f"timestamp {ts[:40]!r} is not RFC 3339") from None
        self._check_time(ts_ms, now)
        try:
            number = float(value)
        except ValueError:
            raise _Reject(Reason.WRONG_TYPE, f"value {value[:40]!r} is not a number") from None
        if math.isnan(number):
            self.skip("stale_marker")
            return []
        if not math.isfinite(number):
            raise _Reject(Reason.NON_FINITE, f"value {value!r} is not finite")
        tags = {str(k): str(v) for k, v in labels.items() if k != "__name__"}
        host, cluster, rest = self.identity(tags)
        if self._names_suspect:
            self.check_names(name)
        return [MetricEvent(ts_ms, host, cluster, name, number, rest)]

    def _parse_array(
        self,
        payload: bytes,
        key: bytes | None,
        source: str,
        now: int,
        events: list[MetricEvent],
        dead: list[DeadLetter],
    ) -> None:
        try:
            wires = _ARRAY.decode(payload)
        except (msgspec.DecodeError, msgspec.ValidationError):
            wires = None
        if wires is not None:
            if not wires:
                dead.append(DeadLetter(Reason.EMPTY, "empty JSON array", payload, key, source))
            for i in self._append_events(wires, now, events):
                try:
                    self._to_event(wires[i], now)  # refused again: its reason and detail
                except _Reject as rej:
                    element = msgspec.json.encode(wires[i])
                    dead.append(DeadLetter(rej.reason, f"[{i}] {rej.detail}", element, key, source))
            return
        # Some element is bad (or the array itself is): split and judge each element alone.
        try:
            raws = _RAW_ARRAY.decode(payload)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            reason, detail = self._decode_error(payload, exc)
            dead.append(DeadLetter(reason, detail, payload, key, source))
            return
        for i, raw in enumerate(raws):
            element = bytes(raw)
            try:
                events.append(self._to_event(_OBJECT.decode(element), now))
            except _Reject as rej:
                dead.append(DeadLetter(rej.reason, f"[{i}] {rej.detail}", element, key, source))
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                reason, detail = self._decode_error(element, exc)
                dead.append(DeadLetter(reason, f"[{i}] {detail}", element, key, source))

    def _to_event(self, wire: WireEvent, now: int) -> MetricEvent:
        ts = wire.ts
        if type(ts) is int:
            ts_ms = ts
        else:
            assert isinstance(ts, datetime)
            if ts.tzinfo is None:
                raise _Reject(Reason.BAD_TIMESTAMP, "RFC 3339 timestamp without a UTC offset")
            ts_ms = int(ts.timestamp() * 1000)
        self._check_time(ts_ms, now)
        if not math.isfinite(wire.value):
            raise _Reject(Reason.NON_FINITE, "value is not finite")
        if self._names_suspect:
            self.check_names(wire.host, wire.cluster, wire.metric)
            if wire.labels:
                self.check_names(*wire.labels, *wire.labels.values())
        return MetricEvent(ts_ms, wire.host, wire.cluster, wire.metric, wire.value, wire.labels)

    def _check_time(self, ts_ms: int, now: int) -> None:
        limits = self.limits
        if limits.max_event_future_ms and ts_ms > now + limits.max_event_future_ms:
            raise _Reject(Reason.TS_FUTURE, f"ts {ts_ms} is {ts_ms - now} ms in the future")
        if limits.max_event_age_ms and ts_ms < now - limits.max_event_age_ms:
            raise _Reject(Reason.TS_PAST, f"ts {ts_ms} is {now - ts_ms} ms old")

    # -- line protocol -------------------------------------------------------------------------
    def _parse_lines(
        self,
        payload: bytes,
        key: bytes | None,
        source: str,
        now: int,
        events: list[MetricEvent],
        dead: list[DeadLetter],
    ) -> None:
        n_dead = len(dead)
        try:
            lines: list[str | bytes] = list(payload.decode("utf-8").splitlines())
        except UnicodeDecodeError:
            lines = list(payload.splitlines())  # judged line by line: one bad line, one letter
        parsed = 0
        for lineno, raw_line in enumerate(lines, 1):
            if isinstance(raw_line, bytes):
                try:
                    line = raw_line.decode("utf-8")
                except UnicodeDecodeError as ude:
                    detail = f"line {lineno}: not UTF-8: {ude.reason} at byte {ude.start}"
                    dead.append(DeadLetter(Reason.UNDECODABLE, detail, raw_line, key, source))
                    continue
            else:
                line = raw_line
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                continue
            try:
                events.extend(self._line_events(stripped, now))
                parsed += 1
            except _Reject as rej:
                dead.append(
                    DeadLetter(
                        rej.reason, f"line {lineno}: {rej.detail}", line.encode(), key, source
                    )
                )
        if not parsed and len(dead) == n_dead:
            dead.append(DeadLetter(Reason.EMPTY, "no metric lines", payload, key, source))

    def identity(self, tags: dict[str, str]) -> tuple[str, str, dict[str, str] | None]:
        """(host, cluster, the other tags) of a sample's tags, which it consumes: the host
        and cluster from the first configured tag present (the cluster else the default),
        ignored tags dropped, every other tag part of the series' identity."""
        limits = self.limits
        host = _take_first(tags, limits.host_tags)
        cluster = _take_first(tags, limits.cluster_tags) or limits.default_cluster
        if not host or not cluster:
            wanted = limits.host_tags if not host else limits.cluster_tags
            raise _Reject(Reason.MISSING_FIELD, f"missing tag {' or '.join(map(repr, wanted))}")
        for name in limits.ignore_tags:
            tags.pop(name, None)
        for name, value in (("host", host), ("cluster", cluster)):
            if len(value) > 128:
                raise _Reject(Reason.INVALID_VALUE, f"{name} longer than 128 characters")
        if len(tags) > MAX_LABELS:
            raise _Reject(Reason.INVALID_VALUE, f"{len(tags)} tags; at most {MAX_LABELS}")
        for key, value in tags.items():
            if len(key) > 128 or len(value) > 256:
                raise _Reject(Reason.INVALID_VALUE, f"tag {key[:40]!r} too long")
        if self._names_suspect:
            self.check_names(host, cluster, *tags, *tags.values())
        return host, cluster, tags or None

    def check_names(self, *names: str) -> None:
        """Refuse names with control characters (C0, DEL, C1: ANSI escapes, newlines, NUL),
        which would reach terminals, logs and Alertmanager as they are. One set lookup per
        name once it has been seen."""
        seen = self._printable
        for name in names:
            if name not in seen:
                if not name.isprintable() and any(c in _CONTROL for c in name):
                    raise _Reject(Reason.INVALID_VALUE, f"control character in {name[:40]!r}")
                if len(seen) > 200_000:
                    seen.clear()
                seen.add(name)

    def check_metric_name(self, name: str) -> None:
        """A metric name: 1-128 characters, no control character."""
        if not name:
            raise _Reject(Reason.MISSING_FIELD, "metric without a name")
        if len(name) > 128:
            raise _Reject(Reason.INVALID_VALUE, "name longer than 128 characters")
        self.check_names(name)

    def skip(self, reason: str, n: int = 1) -> None:
        """Count fields that are not numbers (string, boolean): skipped, never fatal."""
        self.skipped[reason] += n

    def _line_events(self, line: str, now: int) -> list[MetricEvent]:
        measurement, tags, fields, ts_text = parse_line(line)
        host, cluster, labels = self.identity(tags)
        if ts_text is None:
            raise _Reject(Reason.MISSING_FIELD, "missing timestamp")
        if not (ts_text.isascii() and ts_text.isdigit()) and not _INTEGER.fullmatch(ts_text):
            raise _Reject(Reason.BAD_TIMESTAMP, f"timestamp {ts_text!r} is not an integer")
        try:
            ts_ms = int(int(ts_text) * self._lp_scale)
        except OverflowError:
            raise _Reject(
                Reason.BAD_TIMESTAMP, f"timestamp {ts_text[:40]!r} is out of range"
            ) from None
        if ts_ms < 0:
            raise _Reject(Reason.BAD_TIMESTAMP, "negative timestamp")
        self._check_time(ts_ms, now)
        if len(measurement) > 128:
            raise _Reject(Reason.INVALID_VALUE, "name longer than 128 characters")
        if self._names_suspect:
            self.check_names(measurement, *fields)
        out: list[MetricEvent] = []
        for field_key, raw in fields.items():
            if raw[:1] == '"':
                self.skip("string_field")
                continue
            if raw in _BOOLEANS:
                self.skip("boolean_field")
                continue
            value = _field_value(raw)
            metric = measurement if field_key == "value" else f"{measurement}_{field_key}"
            if len(metric) > 128:
                raise _Reject(Reason.INVALID_VALUE, "name longer than 128 characters")
            out.append(MetricEvent(ts_ms, host, cluster, metric, value, labels))
        return out


def _take_first(tags: dict[str, str], names: tuple[str, ...]) -> str | None:
    """Remove and return the first of `names` present with a value; the others stay tags
    (a Prometheus `instance` beside a `host` label still tells two exporters apart)."""
    for name in names:
        value = tags.get(name)
        if value:
            del tags[name]
            return value
    return None


def _binary(payload: bytes) -> bool:
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def _field_value(raw: str) -> float:
    if raw[-1:] in _DIGITS_OR_DOT and raw[:1] in _NUMBER_START and raw.isascii() and "_" not in raw:
        # The common case, a plain float: float() accepts exactly the numbers the general
        # path's pattern does once whitespace, underscores and non-ASCII digits are excluded
        # (tests/test_parse.py checks the two paths agree).
        try:
            value = float(raw)
        except ValueError:
            pass
        else:
            if math.isfinite(value):
                return value
    return field_value_general(raw)


def field_value_general(raw: str) -> float:
    """`_field_value` for every shape, with the precise reason when a value is refused."""
    if raw.startswith('"'):
        raise _Reject(Reason.WRONG_TYPE, f"string field value {raw[:40]!r}, expected a number")
    body = raw[:-1] if raw[-1:] in ("i", "u") else raw
    if raw[-1:] in ("i", "u"):
        if not _INTEGER.fullmatch(body):
            raise _Reject(Reason.BAD_LINE_PROTOCOL, f"bad integer field value {raw!r}")
        return float(int(body))
    if raw in ("t", "T", "true", "True", "TRUE", "f", "F", "false", "False", "FALSE"):
        raise _Reject(Reason.WRONG_TYPE, f"boolean field value {raw!r}, expected a number")
    if not _NUMBER.fullmatch(body):
        lowered = body.lower().lstrip("+-")
        if lowered in ("nan", "inf", "infinity"):
            raise _Reject(Reason.NON_FINITE, f"field value {raw!r} is not finite")
        raise _Reject(Reason.BAD_LINE_PROTOCOL, f"bad field value {raw!r}")
    value = float(body)
    if not math.isfinite(value):
        raise _Reject(Reason.NON_FINITE, f"field value {raw!r} is not finite")
    return value


def _split_unescaped(text: str, sep: str, *, quotes: bool = False) -> list[str]:
    """Split on `sep` except where it is backslash-escaped or (optionally) inside quotes."""
    if "\\" not in text and not (quotes and '"' in text):
        return text.split(sep)
    parts: list[str] = []
    current: list[str] = []
    in_quotes = False
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            current.append(text[i : i + 2])
            i += 2
            continue
        if quotes and ch == '"':
            in_quotes = not in_quotes
        elif ch == sep and not in_quotes:
            parts.append("".join(current))
            current = []
            i += 1
            continue
        current.append(ch)
        i += 1
    if in_quotes:
        raise _Reject(Reason.BAD_LINE_PROTOCOL, "unterminated string field")
    parts.append("".join(current))
    return parts


def _unescape(token: str) -> str:
    if "\\" not in token:
        return token
    return token.replace("\\,", ",").replace("\\=", "=").replace("\\ ", " ").replace("\\\\", "\\")


def _fast_line(line: str) -> tuple[str, dict[str, str], dict[str, str], str] | None:
    """The common shape (no escapes, no quotes, single spaces), or None for the general path."""
    if "\\" in line or '"' in line:
        return None
    parts = line.split(" ")
    if len(parts) != 3 or not all(parts):
        return None
    head, field_text, ts_text = parts
    head_parts = head.split(",")
    measurement = head_parts[0]
    if not measurement:
        return None
    tags: dict[str, str] = {}
    for pair in head_parts[1:]:
        key, sep, value = pair.partition("=")
        if not sep or not key or not value or "=" in value:
            return None
        tags[key] = value
    fields: dict[str, str] = {}
    for pair in field_text.split(","):
        key, sep, value = pair.partition("=")
        if not sep or not key or not value or "=" in value:
            return None
        fields[key] = value
    return measurement, tags, fields, ts_text


def parse_line(line: str) -> tuple[str, dict[str, str], dict[str, str], str | None]:
    """Split one line-protocol line into measurement, tags, raw field values and timestamp.

    Raises `_Reject` (BAD_LINE_PROTOCOL) on malformed syntax.
    """
    fast = _fast_line(line)
    if fast is not None:
        return fast
    return parse_line_general(line)


def parse_line_general(line: str) -> tuple[str, dict[str, str], dict[str, str], str | None]:
    """`parse_line` for every shape: escapes, quoted strings, repeated spaces."""
    sections = [s for s in _split_unescaped(line, " ", quotes=True) if s != ""]
    if len(sections) < 2 or len(sections) > 3:
        raise _Reject(Reason.BAD_LINE_PROTOCOL, "expected 'measurement,tags fields [timestamp]'")
    head, field_text = sections[0], sections[1]
    ts_text = sections[2] if len(sections) == 3 else None
    head_parts = _split_unescaped(head, ",")
    measurement = _unescape(head_parts[0])
    if not measurement:
        raise _Reject(Reason.BAD_LINE_PROTOCOL, "empty measurement")
    tags: dict[str, str] = {}
    for pair in head_parts[1:]:
        kv = _split_unescaped(pair, "=")
        if len(kv) != 2 or not kv[0] or not kv[1]:
            raise _Reject(Reason.BAD_LINE_PROTOCOL, f"bad tag {pair!r}")
        tags[_unescape(kv[0])] = _unescape(kv[1])
    fields: dict[str, str] = {}
    for pair in _split_unescaped(field_text, ",", quotes=True):
        name, sep, raw = pair.partition("=")
        if "\\" in name:
            kv = _split_unescaped(pair, "=", quotes=True)
            name, raw, sep = kv[0], "=".join(kv[1:]), "=" if len(kv) > 1 else ""
        if not sep or not name or not raw:
            raise _Reject(Reason.BAD_LINE_PROTOCOL, f"bad field {pair!r}")
        fields[_unescape(name)] = raw
    return measurement, tags, fields, ts_text
