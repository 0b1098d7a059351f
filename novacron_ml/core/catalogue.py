"""The metric catalogue: what a metric name means for detection (docs/CATALOGUE.md).

For a name (exact, or a shell-style pattern such as `cpu_usage_*`) it gives the anomaly type,
which direction is bad (+1: rises, -1: drops, 0: both) and whether the metric is a cumulative
counter, which the flow turns into a per-second rate before any feature
(`operators.ingest.counters`). Entries cover the DWCP metrics, Telegraf's standard inputs
(cpu, mem, disk, diskio, net, system, processes, procstat, docker, http_response) and
Prometheus / node_exporter names; the first matching entry wins, exact names before
patterns, the user's entries (settings `catalogue.entries`) before ours. A name nothing
matches is watched in both directions with the generic type.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

from novacron_ml.core.schema import AnomalyType
from novacron_ml.core.settings import CatalogueSettings

T = AnomalyType


@dataclass(frozen=True)
class MetricSpec:
    """What a metric means for detection: which direction is bad and what it indicates."""

    name: str
    """The metric name, or a shell-style pattern (`*`, `?`, `[...]`)."""
    unit: str
    bad_direction: int
    """+1: only rises are anomalous, -1: only drops, 0: both."""
    anomaly_type: AnomalyType
    description: str
    counter: bool = False
    """A cumulative counter (only ever rises, resets to 0 on restart): scored as a rate."""


def _spec(
    name: str,
    direction: int,
    kind: AnomalyType,
    description: str,
    unit: str = "",
    *,
    counter: bool = False,
) -> MetricSpec:
    return MetricSpec(name, unit, direction, kind, description, counter)


DWCP_METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("latency_p50_ms", "ms", +1, T.LATENCY_SPIKE, "median request latency"),
    MetricSpec("latency_p99_ms", "ms", +1, T.LATENCY_SPIKE, "99th percentile latency"),
    MetricSpec("throughput_mbps", "Mbit/s", -1, T.THROUGHPUT_DROP, "delivered throughput"),
    MetricSpec("error_rate", "ratio", +1, T.ERROR_BURST, "failed / all requests"),
    MetricSpec("cpu_util", "ratio", +1, T.RESOURCE_EXHAUSTION, "CPU utilisation"),
    MetricSpec("memory_util", "ratio", +1, T.RESOURCE_EXHAUSTION, "memory utilisation"),
    MetricSpec("network_util", "ratio", +1, T.RESOURCE_EXHAUSTION, "NIC utilisation"),
    MetricSpec("compression_ratio", "x", -1, T.COMPRESSION_FAILURE, "HDE compression ratio"),
    MetricSpec(
        "bandwidth_prediction_accuracy",
        "ratio",
        -1,
        T.PREDICTION_ERROR,
        "PBA bandwidth prediction accuracy",
    ),
    MetricSpec("consensus_time_ms", "ms", +1, T.CONSENSUS_DELAY, "ACP consensus round"),
)
"""The simulator's metrics (`novacron_ml.core.simulator`)."""

R = T.RESOURCE_EXHAUSTION
STANDARD_METRICS: tuple[MetricSpec, ...] = (
    # Telegraf cpu: percentages per cpu tag; idle falling is the exhaustion
    _spec("cpu_usage_idle", -1, R, "CPU idle share (Telegraf cpu)", "%"),
    _spec("cpu_usage_guest*", 0, T.UNCLASSIFIED, "CPU guest share (Telegraf cpu)", "%"),
    _spec("cpu_usage_*", +1, R, "CPU busy share by mode (Telegraf cpu)", "%"),
    _spec(
        "cpu_time_*",
        +1,
        R,
        "CPU seconds by mode (Telegraf cpu, collect_cpu_time)",
        "s",
        counter=True,
    ),
    # Telegraf mem
    _spec("mem_available", -1, R, "memory available (Telegraf mem)", "B"),
    _spec("mem_available_percent", -1, R, "memory available share (Telegraf mem)", "%"),
    _spec("mem_free", -1, R, "memory free (Telegraf mem)", "B"),
    _spec("mem_used", +1, R, "memory used (Telegraf mem)", "B"),
    _spec("mem_used_percent", +1, R, "memory used share (Telegraf mem)", "%"),
    _spec("mem_total", 0, T.UNCLASSIFIED, "memory installed (Telegraf mem)", "B"),
    _spec("swap_free", -1, R, "swap free (Telegraf swap)", "B"),
    _spec("swap_used*", +1, R, "swap used (Telegraf swap)"),
    _spec("swap_in", +1, R, "pages swapped in (Telegraf swap)", counter=True),
    _spec("swap_out", +1, R, "pages swapped out (Telegraf swap)", counter=True),
    # Telegraf disk (per path / device)
    _spec("disk_free", -1, R, "disk space free (Telegraf disk)", "B"),
    _spec("disk_inodes_free", -1, R, "inodes free (Telegraf disk)"),
    _spec("disk_used", +1, R, "disk space used (Telegraf disk)", "B"),
    _spec("disk_used_percent", +1, R, "disk space used share (Telegraf disk)", "%"),
    _spec("disk_inodes_used*", +1, R, "inodes used (Telegraf disk)"),
    _spec("disk_total", 0, T.UNCLASSIFIED, "disk size (Telegraf disk)", "B"),
    _spec("disk_inodes_total", 0, T.UNCLASSIFIED, "inodes (Telegraf disk)"),
    # Telegraf diskio: cumulative counters per device name
    _spec("diskio_iops_in_progress", +1, R, "I/Os in flight (Telegraf diskio)"),
    _spec("diskio_merged_*", +1, R, "merged I/Os (Telegraf diskio)", counter=True),
    _spec("diskio_*", +1, R, "I/O counters (Telegraf diskio)", counter=True),
    # Telegraf net: cumulative counters per interface
    _spec("net_err_*", +1, T.ERROR_BURST, "interface errors (Telegraf net)", counter=True),
    _spec("net_drop_*", +1, T.ERROR_BURST, "dropped packets (Telegraf net)", counter=True),
    _spec(
        "net_bytes_*", 0, T.THROUGHPUT_DROP, "interface bytes (Telegraf net)", "B/s", counter=True
    ),
    _spec("net_packets_*", 0, T.THROUGHPUT_DROP, "interface packets (Telegraf net)", counter=True),
    _spec("net_speed", 0, T.UNCLASSIFIED, "link speed (Telegraf net)"),
    _spec("net_tcp_currestab", 0, T.UNCLASSIFIED, "TCP connections established"),
    _spec("net_ip_forwarding", 0, T.UNCLASSIFIED, "IP forwarding on (Telegraf net, all)"),
    _spec("net_*_inerrors", +1, T.ERROR_BURST, "protocol errors (Telegraf net, all)", counter=True),
    _spec("net_*_inerrs", +1, T.ERROR_BURST, "protocol errors (Telegraf net, all)", counter=True),
    _spec("net_tcp_retranssegs", +1, T.ERROR_BURST, "TCP retransmits", counter=True),
    _spec("net_icmp_*", 0, T.UNCLASSIFIED, "ICMP counters (Telegraf net, all)", counter=True),
    _spec("net_ip_*", 0, T.UNCLASSIFIED, "IP counters (Telegraf net, all)", counter=True),
    _spec("net_tcp_*", 0, T.UNCLASSIFIED, "TCP counters (Telegraf net, all)", counter=True),
    _spec("net_udp_*", 0, T.UNCLASSIFIED, "UDP counters (Telegraf net, all)", counter=True),
    _spec("netstat_tcp_*", 0, T.UNCLASSIFIED, "TCP connections by state (Telegraf netstat)"),
    # Telegraf system
    _spec("system_load*", +1, R, "load average (Telegraf system)"),
    _spec(
        "system_uptime", 0, T.UNCLASSIFIED, "uptime: its rate drops at a reboot", "s", counter=True
    ),
    _spec("system_n_*", 0, T.UNCLASSIFIED, "users and CPUs (Telegraf system)"),
    # Telegraf processes
    _spec("processes_blocked", +1, R, "blocked processes (Telegraf processes)"),
    _spec("processes_zombies", +1, R, "zombie processes (Telegraf processes)"),
    _spec("processes_*", +1, R, "processes by state (Telegraf processes)"),
    # Telegraf procstat (per process pattern)
    _spec(
        "procstat_cpu_time_*", +1, R, "process CPU seconds (Telegraf procstat)", "s", counter=True
    ),
    _spec("procstat_read_*", +1, R, "process reads (Telegraf procstat)", counter=True),
    _spec("procstat_write_*", +1, R, "process writes (Telegraf procstat)", counter=True),
    _spec("procstat_involuntary_context_switches", +1, R, "(Telegraf procstat)", counter=True),
    _spec("procstat_voluntary_context_switches", +1, R, "(Telegraf procstat)", counter=True),
    _spec("procstat_pid", 0, T.UNCLASSIFIED, "process id (Telegraf procstat)"),
    _spec("procstat_created_at", 0, T.UNCLASSIFIED, "process start (Telegraf procstat)"),
    _spec("procstat_lookup_running", -1, T.ERROR_BURST, "matching processes (Telegraf procstat)"),
    _spec("procstat_lookup_result_code", +1, T.ERROR_BURST, "lookup result (0: success)"),
    _spec("procstat_lookup_pid_count", -1, T.ERROR_BURST, "matching pids (Telegraf procstat)"),
    _spec("procstat_*", +1, R, "process resources (Telegraf procstat)"),
    # Telegraf docker (per container)
    _spec("docker_container_net_*", 0, T.THROUGHPUT_DROP, "container network", counter=True),
    _spec("docker_container_blkio_*", +1, R, "container block I/O", counter=True),
    _spec("docker_container_cpu_usage_total", +1, R, "container CPU ns", "ns", counter=True),
    _spec("docker_container_cpu_usage_*mode", +1, R, "container CPU ns", "ns", counter=True),
    _spec("docker_container_cpu_throttling_*", +1, R, "container CPU throttling", counter=True),
    _spec("docker_container_status_*", 0, T.UNCLASSIFIED, "container status (Telegraf docker)"),
    _spec("docker_container_*", +1, R, "container resources (Telegraf docker)"),
    _spec("docker_n_*", 0, T.UNCLASSIFIED, "containers and images (Telegraf docker)"),
    # Telegraf http_response
    _spec("http_response_response_time", +1, T.LATENCY_SPIKE, "HTTP check time", "s"),
    _spec("http_response_result_code", +1, T.ERROR_BURST, "HTTP check result (0: success)"),
    _spec("http_response_http_response_code", 0, T.ERROR_BURST, "HTTP status code"),
    _spec("http_response_response_status_code_match", -1, T.ERROR_BURST, "expected status"),
    _spec("http_response_response_string_match", -1, T.ERROR_BURST, "expected body"),
    _spec("http_response_content_length", 0, T.UNCLASSIFIED, "HTTP body size", "B"),
    # node_exporter
    _spec("node_memory_MemAvailable_bytes", -1, R, "memory available (node_exporter)", "B"),
    _spec("node_memory_MemFree_bytes", -1, R, "memory free (node_exporter)", "B"),
    _spec("node_filesystem_avail_bytes", -1, R, "space available (node_exporter)", "B"),
    _spec("node_filesystem_free_bytes", -1, R, "space free (node_exporter)", "B"),
    _spec("node_filesystem_files_free", -1, R, "inodes free (node_exporter)"),
    _spec("node_load*", +1, R, "load average (node_exporter)"),
    _spec("node_network_*_errs_total", +1, T.ERROR_BURST, "NIC errors", counter=True),
    _spec("node_network_*_drop_total", +1, T.ERROR_BURST, "NIC drops", counter=True),
    _spec("node_network_*_total", 0, T.THROUGHPUT_DROP, "NIC counters", counter=True),
    _spec("node_cpu_seconds_total", 0, R, "CPU seconds by mode (node_exporter)", "s", counter=True),
    # Prometheus conventions: counters end in _total; histogram and summary parts count
    _spec("*_errors_total", +1, T.ERROR_BURST, "an error counter", counter=True),
    _spec("*_failures_total", +1, T.ERROR_BURST, "a failure counter", counter=True),
    _spec("*_seconds_total", +1, R, "a time counter", "s", counter=True),
    _spec("*_total", 0, T.UNCLASSIFIED, "a counter (Prometheus naming)", counter=True),
    _spec(
        "*_counter",
        0,
        T.UNCLASSIFIED,
        "a counter (Telegraf prometheus, metric_version 1)",
        counter=True,
    ),
    _spec("*_seconds_count", 0, T.UNCLASSIFIED, "a histogram's observations", counter=True),
    _spec("*_seconds_sum", +1, T.LATENCY_SPIKE, "a histogram's summed seconds", "s", counter=True),
    _spec("*_bucket", 0, T.UNCLASSIFIED, "a histogram bucket counter", counter=True),
    _spec("*_duration_seconds_count", 0, T.UNCLASSIFIED, "observations", counter=True),
    _spec("*_duration_seconds_sum", +1, T.LATENCY_SPIKE, "summed durations", "s", counter=True),
    # name hints, after every explicit entry (a name containing the word)
    _spec("*latency*", +1, T.LATENCY_SPIKE, "inferred from the name"),
    _spec("*consensus*", +1, T.CONSENSUS_DELAY, "inferred from the name"),
    _spec("*error*", +1, T.ERROR_BURST, "inferred from the name"),
    _spec("*compression*", -1, T.COMPRESSION_FAILURE, "inferred from the name"),
    _spec("*accuracy*", -1, T.PREDICTION_ERROR, "inferred from the name"),
    _spec("*throughput*", -1, T.THROUGHPUT_DROP, "inferred from the name"),
    _spec("*cpu*", +1, R, "inferred from the name"),
    _spec("*mem*", +1, R, "inferred from the name"),
    _spec("*disk*", +1, R, "inferred from the name"),
    _spec("*net*", +1, R, "inferred from the name"),
)
"""Telegraf's, node_exporter's and Prometheus' names, then name hints (patterns)."""


def _unknown(metric: str) -> MetricSpec:
    return MetricSpec(metric, "", 0, T.UNCLASSIFIED, "not in the catalogue")


@dataclass(frozen=True)
class Catalogue:
    """Entries in priority order; `spec_for` looks a name up once and remembers it."""

    entries: tuple[MetricSpec, ...] = DWCP_METRICS + STANDARD_METRICS
    _cache: dict[str, MetricSpec] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False
    )

    @classmethod
    def with_entries(cls, user: tuple[MetricSpec, ...]) -> Catalogue:
        """The user's entries before the built-in ones."""
        return cls(user + DWCP_METRICS + STANDARD_METRICS) if user else DEFAULT_CATALOGUE

    def spec_for(self, metric: str) -> MetricSpec:
        spec = self._cache.get(metric)
        if spec is None:
            spec = self._lookup(metric)
            if len(self._cache) < 100_000:  # names are bounded by the series bound anyway
                self._cache[metric] = spec
        return spec

    def _lookup(self, metric: str) -> MetricSpec:
        for spec in self.entries:  # exact names first, in order
            if spec.name == metric:
                return spec
        lowered = metric.lower()
        for spec in self.entries:
            if any(c in spec.name for c in "*?[") and fnmatch.fnmatchcase(
                lowered, spec.name.lower()
            ):
                return MetricSpec(
                    metric, spec.unit, spec.bad_direction, spec.anomaly_type, spec.description,
                    spec.counter,
                )  # fmt: skip
        return _unknown(metric)

    def __getstate__(self) -> tuple[MetricSpec, ...]:
        return self.entries

    def __setstate__(self, entries: tuple[MetricSpec, ...]) -> None:
        object.__setattr__(self, "entries", entries)
        object.__setattr__(self, "_cache", {})


DEFAULT_CATALOGUE = Catalogue()
METRIC_SPECS: dict[str, MetricSpec] = {m.name: m for m in DWCP_METRICS}


def spec_for(metric: str) -> MetricSpec:
    """The default catalogue's entry for a metric (the flow passes its own `Catalogue`)."""
    return DEFAULT_CATALOGUE.spec_for(metric)


_NON_NEGATIVE_UNITS = frozenset(("B", "B/s", "ms", "s", "ns", "Mbit/s", "x"))


def physical_bounds(spec: MetricSpec) -> tuple[float | None, float | None]:
    """What values the metric can take, from its unit: a ratio stays in [0, 1], a percentage
    in [0, 100], sizes, durations and rates are never negative; otherwise unbounded. Forecasts
    and their intervals are clipped to these (a utilisation of 1.4 cannot happen)."""
    if spec.unit == "ratio":
        return 0.0, 1.0
    if spec.unit == "%":
        return 0.0, 100.0
    if spec.unit in _NON_NEGATIVE_UNITS or spec.counter:
        return 0.0, None
    return None, None


_DIRECTIONS = {"up": +1, "down": -1, "both": 0}


def catalogue_for(settings: CatalogueSettings) -> Catalogue:
    """The catalogue with the settings' entries tried first."""
    user = tuple(
        MetricSpec(
            e.name, e.unit, _DIRECTIONS[e.bad], AnomalyType(e.type), "from the settings", e.counter
        )
        for e in settings.entries
    )
    return Catalogue.with_entries(user)
