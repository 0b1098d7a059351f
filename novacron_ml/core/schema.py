"""The event and alert schema: one definition imported by every flow, producer and test.

Wire events (JSON) are validated by msgspec against `WireEvent`; everything after parsing works
on `MetricEvent`, whose timestamp is always integer epoch milliseconds (UTC).
"""

from __future__ import annotations

import enum
import hashlib
import re
from datetime import UTC, datetime
from functools import lru_cache
from typing import Annotated

import msgspec

SCHEMA_VERSION = 1

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
LabelValue = Annotated[str, msgspec.Meta(max_length=256)]
MAX_LABELS = 64
"""Tags (labels) of one sample at most, in every wire format: a bound on a series key's size."""
EpochMillis = Annotated[int, msgspec.Meta(ge=0)]


class WireEvent(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """One metric sample as producers send it in JSON.

    `ts` is either epoch milliseconds (an integer) or an RFC 3339 timestamp with an offset.
    """

    ts: EpochMillis | datetime
    host: Name
    cluster: Name
    metric: Name
    value: float
    labels: Annotated[dict[Name, LabelValue], msgspec.Meta(max_length=MAX_LABELS)] | None = None


class MetricEvent(msgspec.Struct, frozen=True):
    """A validated sample inside the flow."""

    ts_ms: int
    host: str
    cluster: str
    metric: str
    value: float
    labels: dict[str, str] | None = None

    @property
    def series(self) -> str:
        return series_key(self.cluster, self.host, self.metric, self.labels)

    def to_wire(self) -> WireEvent:
        return WireEvent(self.ts_ms, self.host, self.cluster, self.metric, self.value, self.labels)


_NAME_SPECIAL = "%/{}"
_TAG_SPECIAL = "%{},="
_NAME_ESCAPES = str.maketrans({c: f"%{ord(c):02X}" for c in _NAME_SPECIAL})
_TAG_ESCAPES = str.maketrans({c: f"%{ord(c):02X}" for c in _TAG_SPECIAL})
_ESCAPED = re.compile(r"%([0-9A-F]{2})")


def _escape(text: str, special: str, table: dict[int, str]) -> str:
    return text.translate(table) if any(c in text for c in special) else text


def _unescape(text: str) -> str:
    return _ESCAPED.sub(lambda m: chr(int(m.group(1), 16)), text) if "%" in text else text


def plain_key(key: str) -> bool:
    """Whether `cluster/host/metric` made by plain joining is already the series key (no
    character of any part needs escaping): the hot path's check before `series_key`."""
    return key.count("/") == 2 and "%" not in key and "{" not in key and "}" not in key


def series_key(cluster: str, host: str, metric: str, labels: dict[str, str] | None = None) -> str:
    """The key a series is partitioned and windowed by: `cluster/host/metric`, then its other
    tags as `{k=v,...}` sorted by name. `%/{}` in a name and `%{},=` in a tag are
    percent-escaped, so every key splits back into exactly the parts it was made of
    (docs/MESSAGES.md); a plain fleet's keys stay `cluster/host/metric`."""
    key = f"{cluster}/{host}/{metric}"
    if not plain_key(key):
        n, t = _NAME_SPECIAL, _NAME_ESCAPES
        key = f"{_escape(cluster, n, t)}/{_escape(host, n, t)}/{_escape(metric, n, t)}"
    if not labels:
        return key
    tags = ",".join(
        f"{_escape(k, _TAG_SPECIAL, _TAG_ESCAPES)}={_escape(labels[k], _TAG_SPECIAL, _TAG_ESCAPES)}"
        for k in sorted(labels)
    )
    return f"{key}{{{tags}}}"


def split_series_key(key: str) -> tuple[str, str, str]:
    """(cluster, host, metric) of a `series_key`; its tags are `series_labels(key)`."""
    head = key.split("{", 1)[0]
    cluster, host, metric = head.split("/")
    if "%" in head:
        return _unescape(cluster), _unescape(host), _unescape(metric)
    return cluster, host, metric


@lru_cache(maxsize=16)
def series_selector(text: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    """A series named as in its key after `cluster/host/` (`metric` or `metric{tag=value,...}`,
    a setting such as detector.load_proxy): its metric as in the key and its tags, sorted.
    ValueError, one line, when the text is not of that form."""
    metric, brace, rest = text.partition("{")
    pairs = rest[:-1].split(",") if brace else []
    if (
        not metric
        or "/" in metric
        or "}" in metric
        or (brace and not rest.endswith("}"))
        or any(not p.partition("=")[0] or "=" not in p for p in pairs)
    ):
        raise ValueError(f"{text!r} is not metric or metric{{tag=value,...}}")
    labels = series_labels(f"_/_/{text}") if brace else None
    return metric, tuple(sorted((labels or {}).items()))


DECISION_DETECTORS = frozenset(
    {"robust_z", "novelty", "spread", "load_residual", "river", "iforest"}
)
"""`Alert.detector` values of the per-series alert decision: its `score` is the window's
robust z; other detectors (the forecaster's) put their own score there."""


def score_text(alert: Alert, digits: int = 1) -> str:
    """The alert's score for people: `z=+12.3 (novelty)` for the decision's alerts (the tier
    that decided in brackets), `lstm_residual=+4.1` for the others."""
    if alert.detector in DECISION_DETECTORS:
        return f"z={alert.score:+.{digits}f} ({alert.detector})"
    return f"{alert.detector}={alert.score:+.{digits}f}"


def series_labels(key: str) -> dict[str, str] | None:
    """The tags of a `series_key` beyond cluster, host and metric (None without any)."""
    brace = key.find("{")
    if brace < 0:
        return None
    labels = {}
    for pair in key[brace + 1 : -1].split(","):
        k, _, v = pair.partition("=")
        labels[_unescape(k)] = _unescape(v)
    return labels


class AnomalyType(enum.StrEnum):
    """The seven alert types of the specification, plus one for metrics we cannot type."""

    LATENCY_SPIKE = "latency_spike"
    THROUGHPUT_DROP = "throughput_drop"
    ERROR_BURST = "error_burst"
    RESOURCE_EXHAUSTION = "resource_exhaustion"
    COMPRESSION_FAILURE = "compression_failure"
    PREDICTION_ERROR = "prediction_error"
    CONSENSUS_DELAY = "consensus_delay"
    UNCLASSIFIED = "unclassified"


class Severity(enum.StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class Contribution(msgspec.Struct, frozen=True):
    """One feature of an alert's explanation: its value, the series' baseline, and the z."""

    feature: str
    value: float
    baseline: float
    z: float


class Alert(msgspec.Struct, kw_only=True, omit_defaults=True):
    """An alert as published on the `alerts` topic (JSON), keyed by `alert_id`."""

    alert_id: str
    type: str
    severity: str
    host: str
    cluster: str
    metric: str
    window_start: str
    window_end: str
    value: float
    expected: float
    score: float
    detector: str
    schema_version: int = SCHEMA_VERSION
    suppressed_by: str | None = None
    """Set when a maintenance window or silence matched (`maintenance:<name>`, ...)."""
    probability: float | None = None
    """The window's combined anomaly probability in [0, 1] (detection tiers)."""
    tiers: dict[str, float] | None = None
    """Each detection tier's calibrated score in [0, 1] for the window."""
    explanation: list[Contribution] | None = None
    """The features that moved most against the series' baseline, largest |z| first."""
    labels: dict[str, str] | None = None
    """The series' tags beyond cluster, host and metric (Telegraf's `cpu`, `device`, ...)."""
    status: str = "firing"
    """`firing`, or `resolved` for the record that closes an episode (docs/MESSAGES.md)."""
    episode_id: str | None = None
    """The episode (series and type, from its first alert) this record belongs to."""
    episode_start: str | None = None
    """Window start of the episode's first alert."""
    ends_at: str | None = None
    """On a `resolved` record: the end of the episode's last anomalous window."""
    incident_id: str | None = None
    """The host's incident this alert belongs to (`Incident`; decision alerts only)."""
    onset: str | None = None
    """Decision alerts: the window start where the deviation this window belongs to began, by
    a CUSUM of the series' deviation (`operators.detection.series.track_onset`); at or before
    `window_start`."""

    @property
    def series(self) -> str:
        return series_key(self.cluster, self.host, self.metric, self.labels)


class Cause(msgspec.Struct, kw_only=True):
    """One metric of an incident as probable cause, with its evidence."""

    rank: int
    """1 = the most probable cause."""
    metric: str
    type: str
    onset: str
    """Where the metric's deviation began: the earliest `Alert.onset` of its alerts in the
    incident (at or before `first_alert`)."""
    lead_s: float
    """How many seconds its onset led the median onset of the incident's other metrics
    (negative: it followed)."""
    peak_z: float
    """The largest |robust z| of its alerts (noise widths; comparable across metrics)."""
    value: float
    """The window mean at that peak; `expected`: the baseline there."""
    expected: float
    alerts: int
    first_alert: str | None = None
    """Window start of the metric's first alert in the incident."""


class Incident(msgspec.Struct, kw_only=True, omit_defaults=True):
    """An incident as published on the `incidents` topic (JSON), keyed by `incident_id`:
    the overlapping alert episodes of one host, probable causes first (docs/MESSAGES.md)."""

    incident_id: str
    cluster: str
    host: str
    status: str
    """`open` (published when it opens and whenever a metric joins) or `resolved`."""
    started_at: str
    updated_at: str
    severity: str
    """The highest severity among its alerts."""
    probable_cause: str
    """The metric ranked first in `causes`."""
    causes: list[Cause]
    alerts: int
    schema_version: int = SCHEMA_VERSION


def alert_id_for(series: str, window_start_ms: int, kind: str) -> str:
    """Deterministic id: the same series, window and type always give the same id."""
    digest = hashlib.sha256(f"{series}|{window_start_ms}|{kind}".encode()).hexdigest()
    return digest[:32]


def rfc3339_ms(ts_ms: int) -> str:
    """Epoch milliseconds as an RFC 3339 UTC string with millisecond precision."""
    dt = datetime.fromtimestamp(ts_ms / 1000, tz=UTC)
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_rfc3339_ms(text: str) -> int:
    """RFC 3339 (or ISO 8601) text to epoch milliseconds; a time without an offset is UTC.

    The one parser of timestamps in text for the flows, the CLI and training; raises
    ValueError with Python's reason on anything else."""
    dt = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)
