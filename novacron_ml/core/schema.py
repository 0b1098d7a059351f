"""The event and alert schema: one definition imported by every flow, producer and test.

Wire events (JSON) are validated by msgspec against `WireEvent`; everything after parsing works
on `MetricEvent`, whose timestamp is always integer epoch milliseconds (UTC).
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated

import msgspec

SCHEMA_VERSION = 1

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
LabelValue = Annotated[str, msgspec.Meta(max_length=256)]
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
    labels: dict[Name, LabelValue] | None = None


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
        return series_key(self.cluster, self.host, self.metric)

    def to_wire(self) -> WireEvent:
        return WireEvent(self.ts_ms, self.host, self.cluster, self.metric, self.value, self.labels)


def series_key(cluster: str, host: str, metric: str) -> str:
    """The key a series is partitioned and windowed by."""
    return f"{cluster}/{host}/{metric}"


def split_series_key(key: str) -> tuple[str, str, str]:
    cluster, host, metric = key.split("/", 2)
    return cluster, host, metric


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


@dataclass(frozen=True)
class MetricSpec:
    """What a metric means for detection: which direction is bad and what it indicates."""

    name: str
    unit: str
    bad_direction: int
    """+1: only rises are anomalous, -1: only drops, 0: both."""
    anomaly_type: AnomalyType
    description: str


DWCP_METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("latency_p50_ms", "ms", +1, AnomalyType.LATENCY_SPIKE, "median request latency"),
    MetricSpec("latency_p99_ms", "ms", +1, AnomalyType.LATENCY_SPIKE, "99th percentile latency"),
    MetricSpec(
        "throughput_mbps", "Mbit/s", -1, AnomalyType.THROUGHPUT_DROP, "delivered throughput"
    ),
    MetricSpec("error_rate", "ratio", +1, AnomalyType.ERROR_BURST, "failed / all requests"),
    MetricSpec("cpu_util", "ratio", +1, AnomalyType.RESOURCE_EXHAUSTION, "CPU utilisation"),
    MetricSpec("memory_util", "ratio", +1, AnomalyType.RESOURCE_EXHAUSTION, "memory utilisation"),
    MetricSpec("network_util", "ratio", +1, AnomalyType.RESOURCE_EXHAUSTION, "NIC utilisation"),
    MetricSpec(
        "compression_ratio", "x", -1, AnomalyType.COMPRESSION_FAILURE, "HDE compression ratio"
    ),
    MetricSpec(
        "bandwidth_prediction_accuracy",
        "ratio",
        -1,
        AnomalyType.PREDICTION_ERROR,
        "PBA bandwidth prediction accuracy",
    ),
    MetricSpec("consensus_time_ms", "ms", +1, AnomalyType.CONSENSUS_DELAY, "ACP consensus round"),
)
METRIC_SPECS: dict[str, MetricSpec] = {m.name: m for m in DWCP_METRICS}

_NAME_HINTS: tuple[tuple[str, AnomalyType, int], ...] = (
    ("latency", AnomalyType.LATENCY_SPIKE, +1),
    ("consensus", AnomalyType.CONSENSUS_DELAY, +1),
    ("error", AnomalyType.ERROR_BURST, +1),
    ("compression", AnomalyType.COMPRESSION_FAILURE, -1),
    ("accuracy", AnomalyType.PREDICTION_ERROR, -1),
    ("throughput", AnomalyType.THROUGHPUT_DROP, -1),
    ("cpu", AnomalyType.RESOURCE_EXHAUSTION, +1),
    ("mem", AnomalyType.RESOURCE_EXHAUSTION, +1),
    ("disk", AnomalyType.RESOURCE_EXHAUSTION, +1),
    ("net", AnomalyType.RESOURCE_EXHAUSTION, +1),
)


def spec_for(metric: str) -> MetricSpec:
    """The catalogue entry for a metric, or one inferred from its name (two-sided if unknown)."""
    spec = METRIC_SPECS.get(metric)
    if spec is not None:
        return spec
    lowered = metric.lower()
    for hint, kind, direction in _NAME_HINTS:
        if hint in lowered:
            return MetricSpec(metric, "", direction, kind, "inferred from the metric name")
    return MetricSpec(metric, "", 0, AnomalyType.UNCLASSIFIED, "not in the catalogue")


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

    @property
    def series(self) -> str:
        return series_key(self.cluster, self.host, self.metric)


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
