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
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import msgspec

from novacron_ml.core.deadletter import DeadLetter, Reason
from novacron_ml.core.schema import MetricEvent, WireEvent
from novacron_ml.core.settings import IngestSettings

_OBJECT = msgspec.json.Decoder(WireEvent)
_ARRAY = msgspec.json.Decoder(list[WireEvent])
_RAW_ARRAY = msgspec.json.Decoder(list[msgspec.Raw])

OVERSIZED_KEEP_BYTES = 65_536
"""An oversized message is dead-lettered with only this many leading bytes."""

_PRECISION_TO_MS = {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1000.0}
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_INTEGER = re.compile(r"[+-]?\d+")
_DIGITS_OR_DOT = frozenset("0123456789.")
_NUMBER_START = frozenset("0123456789.+-")


@dataclass(frozen=True)
class ParseLimits:
    """Bounds a message must respect. Zero disables the timestamp bounds."""

    max_message_bytes: int = 1_048_576
    max_event_age_ms: int = 7 * 86_400_000
    max_event_future_ms: int = 300_000
    line_protocol_precision: str = "ns"

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
        )


class _Reject(Exception):
    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


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
        except Exception as exc:  # a parser bug must not stop the flow either
            del events[n_events:]
            dead.append(
                DeadLetter(
                    Reason.INVALID_VALUE, f"parser error: {exc!r}", payload or b"", key, source
                )
            )

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
        if first == b"{":
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
            dead.append(DeadLetter(reason, detail, payload, key, source))

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
            for i, wire in enumerate(wires):
                try:
                    events.append(self._to_event(wire, now))
                except _Reject as rej:
                    element = msgspec.json.encode(wire)
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
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError as ude:
            dead.append(
                DeadLetter(
                    Reason.UNDECODABLE,
                    f"not UTF-8: {ude.reason} at byte {ude.start}",
                    payload,
                    key,
                    source,
                )
            )
            return
        for lineno, line in enumerate(text.splitlines(), 1):
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                continue
            try:
                events.extend(self._line_events(stripped, now))
            except _Reject as rej:
                dead.append(
                    DeadLetter(
                        rej.reason, f"line {lineno}: {rej.detail}", line.encode(), key, source
                    )
                )
        if not events and not dead:
            dead.append(DeadLetter(Reason.EMPTY, "no metric lines", payload, key, source))

    def _line_events(self, line: str, now: int) -> list[MetricEvent]:
        measurement, tags, fields, ts_text = parse_line(line)
        host = tags.pop("host", None)
        cluster = tags.pop("cluster", None)
        if not host or not cluster:
            missing = "host" if not host else "cluster"
            raise _Reject(Reason.MISSING_FIELD, f"missing tag '{missing}'")
        if ts_text is None:
            raise _Reject(Reason.MISSING_FIELD, "missing timestamp")
        if not (ts_text.isascii() and ts_text.isdigit()) and not _INTEGER.fullmatch(ts_text):
            raise _Reject(Reason.BAD_TIMESTAMP, f"timestamp {ts_text!r} is not an integer")
        ts_ms = int(int(ts_text) * self._lp_scale)
        if ts_ms < 0:
            raise _Reject(Reason.BAD_TIMESTAMP, "negative timestamp")
        self._check_time(ts_ms, now)
        for name in (host, cluster, measurement):
            if len(name) > 128:
                raise _Reject(Reason.INVALID_VALUE, "name longer than 128 characters")
        labels = tags or None
        out: list[MetricEvent] = []
        for field_key, raw in fields.items():
            value = _field_value(raw)
            metric = measurement if field_key == "value" else f"{measurement}_{field_key}"
            out.append(MetricEvent(ts_ms, host, cluster, metric, value, labels))
        return out


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
