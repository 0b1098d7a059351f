"""Dead letters: input the flow could not use, kept with its original bytes and a reason."""

from __future__ import annotations

import enum

import msgspec


class Reason(enum.StrEnum):
    """Why a message (or one record inside it) was dead-lettered. Bounded: used as a label."""

    EMPTY = "empty"
    OVERSIZED = "oversized"
    UNDECODABLE = "undecodable"
    BAD_JSON = "bad_json"
    BAD_LINE_PROTOCOL = "bad_line_protocol"
    MISSING_FIELD = "missing_field"
    UNKNOWN_FIELD = "unknown_field"
    WRONG_TYPE = "wrong_type"
    INVALID_VALUE = "invalid_value"
    NON_FINITE = "non_finite"
    BAD_TIMESTAMP = "bad_timestamp"
    TS_FUTURE = "ts_future"
    TS_PAST = "ts_past"
    LATE_EVENT = "late_event"
    LATE_WINDOW = "late_window"
    KAFKA_ERROR = "kafka_error"
    BAD_FEEDBACK = "bad_feedback"
    SERIES_LIMIT = "series_limit"
    UNKNOWN_SERIES = "unknown_series"
    """An operator verdict for a series the flow has no state for (never seen, or evicted)."""
    BAD_SETTING = "bad_setting"
    """A `dwcp.config` record the tuning flow cannot read (docs/MESSAGES.md#dwcp-config)."""
    DELIVERY_FAILED = "delivery_failed"
    """An output record (alert, incident, feature record...) its topic refused for good."""


class DeadLetter(msgspec.Struct, frozen=True):
    """One dead-lettered unit: a whole message, or one element/line of a batched message."""

    reason: Reason
    detail: str
    payload: bytes
    key: bytes | None = None
    source: str = ""
    """Where it came from, `topic:partition:offset` for Kafka input."""

    def headers(self) -> list[tuple[str, bytes]]:
        """Kafka headers carried by the DLQ record (see docs/MESSAGES.md)."""
        headers = [
            ("novacron.reason", self.reason.value.encode()),
            ("novacron.detail", self.detail.encode("utf-8", "replace")[:1024]),
        ]
        if self.source:
            headers.append(("novacron.source", self.source.encode()))
        return headers
