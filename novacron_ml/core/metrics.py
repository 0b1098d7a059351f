"""Prometheus metrics of the streaming flows: module-level, bounded labels, no host ids."""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Gauge, Histogram, start_http_server

MESSAGES = Counter("novacron_messages", "Input messages received (before parsing).")
EVENTS = Counter("novacron_events", "Valid metric events parsed from input messages.")
DEAD_LETTERS = Counter(
    "novacron_dead_letters", "Records sent to the dead-letter topic, by reason.", ["reason"]
)
FIELDS_SKIPPED = Counter(
    "novacron_fields_skipped",
    "Fields of valid samples that are not numbers (string_field, boolean_field), skipped.",
    ["reason"],
)
COUNTER_SAMPLES_SKIPPED = Counter(
    "novacron_cumulative_samples_skipped",
    "Counter samples that gave no rate: a series' first, or not after the last one.",
    ["reason"],
)
COUNTER_RESETS = Counter(
    "novacron_cumulative_resets", "Resets of cumulative counters seen (rates still given)."
)
WINDOWS = Counter("novacron_windows", "Series windows closed and scored.")
WINDOWED_EVENTS = Counter(
    "novacron_windowed_events", "Valid events folded into a closed window (not late)."
)
SERIES_EVICTED = Counter(
    "novacron_series_evicted", "Series whose feature state was evicted after idle_ttl_s."
)
ALERTS = Counter("novacron_alerts", "Alerts published, by type and severity.", ["type", "severity"])
LOAD_RESIDUAL_WINDOWS = Counter(
    "novacron_load_residual_windows",
    "Windows of the series the load-residual tier fits (every series of a host but its "
    "detector.load_proxy), by what the tier did: scored; warming (under 30 pairs); "
    "weak_fit (the load explains under detector.load_min_r2 of the series); or not scored "
    "because the host has no proxy series (no_proxy), the proxy's window of that "
    "start was not seen (proxy_late: late, or the proxy stopped), it was off its own "
    "baseline or warming (proxy_unusable), or most of the host's series moved with it "
    "(proxy_moved).",
    ["outcome"],
)
EPISODES_RESOLVED = Counter(
    "novacron_episodes_resolved", "Alert episodes closed with a resolved record, by type.", ["type"]
)
ALERTS_SUPPRESSED = Counter(
    "novacron_alerts_suppressed",
    "Alerts published with suppressed_by set, by rule kind (maintenance, silence).",
    ["kind"],
)
FEEDBACK = Counter(
    "novacron_feedback", "Operator verdicts applied to a series, by verdict.", ["verdict"]
)
OUTPUT_RECORDS = Counter(
    "novacron_output_records",
    "Output records the broker acknowledged, by topic (novacron_ml.core.delivery).",
    ["topic"],
)
OUTPUT_RETRIES = Counter(
    "novacron_output_retries",
    "Output records produced again after a retriable delivery failure, by librdkafka cause.",
    ["cause"],
)
OUTPUT_CUT = Counter(
    "novacron_output_cut",
    "Dead letters cut to fit their topic's max.message.bytes, by topic.",
    ["topic"],
)
OUTPUT_LOST = Counter(
    "novacron_output_lost",
    "Output records given up (past kafka.delivery_timeout_s, or refused with no dead-letter "
    "topic to take them), by topic and librdkafka cause; each cause is logged.",
    ["topic", "cause"],
)
CONSUMER_LAG = Gauge(
    "novacron_consumer_lag_messages",
    "Records of an input partition not consumed yet (end offset - next offset), sampled every "
    "15 s. Bytewax keeps its offsets in its recovery store, not in a consumer group, so "
    "Burrow and kafka-lag-exporter cannot see this.",
    ["topic", "partition"],
)
CONSUMER_LAG_SECONDS = Gauge(
    "novacron_consumer_lag_seconds",
    "While records wait: wall clock minus the Kafka timestamp of the last record consumed from "
    "the partition (0 when caught up).",
    ["topic", "partition"],
)
BUILD_INFO = Gauge(
    "novacron_build_info",
    "1, labelled with the running novacron-ml, Python and Bytewax versions.",
    ["version", "python", "bytewax"],
)
MODEL_INFO = Gauge(
    "novacron_model_info",
    "1 per model this process serves, labelled with its manifest's name, kind, version and "
    "sha256 prefix (set when the model passed its checks at start).",
    ["name", "kind", "version", "sha256"],
)
MODEL_RELOADS = Counter(
    "novacron_model_reloads",
    "Registry aliases followed by this process: a new version swapped in, or rejected (its "
    "checks failed; the current version keeps serving), by model name.",
    ["model", "outcome"],
)
MODEL_INPUT_DRIFT = Gauge(
    "novacron_model_input_drift",
    "Population stability index of a served model's recent inputs (last 5,000 rows) against "
    "its training distribution (the manifest's reference), per input; 0.15 is the seed's "
    "alert threshold.",
    ["model", "input"],
)
MODEL_INPUT_OUTSIDE = Gauge(
    "novacron_model_input_outside_ratio",
    "Share of a served tuning policy's last 5,000 states with this input outside the range of "
    "its training states (the manifest's reference); PSI is no measure for a policy, whose "
    "training states come from exploration.",
    ["model", "input"],
)
MODEL_ERROR_DRIFT = Gauge(
    "novacron_model_error_drift",
    "A served forecaster's recent scaled one-step error over the level of its first 2,000 "
    "errors, minus 1 (0.15: 15 % worse).",
    ["model"],
)
MODEL_DRIFT_ALARMS = Counter(
    "novacron_model_drift_alarms",
    "Page-Hinkley alarms (River, mode up) on a served forecaster's scaled one-step errors.",
    ["model"],
)
INFERENCE_SECONDS = Histogram(
    "novacron_inference_seconds",
    "Time of one ONNX Runtime call (a batch of windows), by model (the manifest's name).",
    ["model"],
    buckets=(1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)
DETECTION_LATENCY = Histogram(
    "novacron_detection_latency_seconds",
    "Wall clock from a window's close (its end + window.allowed_lateness_s) to its decision in "
    "the detect step; live windows only (closed within the last hour), not replays.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
RECOMMENDATIONS = Counter(
    "novacron_tuning_recommendations",
    "Tuning flow: proposals published on optimizer.actions, by mode, action (change, revert, "
    "not-applied), whether the guardrails allowed them and subsystem (compression: a host's "
    "HDE knobs; bandwidth: its predictor; consensus: a cluster's ACP knobs); a verdict "
    "repeated unchanged at the next "
    "decision is published, and counted, once.",
    ["mode", "action", "allowed", "subsystem"],
)
GUARDRAIL_BLOCKS = Counter(
    "novacron_tuning_guardrail_blocks",
    "Tuning flow: blocked proposals published on optimizer.actions, by the guardrail that "
    "blocked them (bounds, canary, cooldown, safe set, safety, gain, reverted).",
    ["guardrail"],
)
TUNING_HOSTS_IDLE = Counter(
    "novacron_tuning_hosts_idle",
    "Tuning flow: hosts silent for tune.idle_s, by what happened to their state (compacted: "
    "setting, version and reverted settings kept; dropped: nothing to keep, or silent for "
    "tune.forget_s).",
    ["outcome"],
)
# `novacron-ml capacity plan --metrics-port` (the planner, docs/CAPACITY.md#metrics): per
# cluster and resource (the planner never sees hosts), replaced as a whole by every plan
CAPACITY_UTILISATION = Gauge(
    "novacron_capacity_utilisation",
    "Capacity planner: the last hourly mean of a cluster's resource (metrics.hourly).",
    ["cluster", "resource"],
)
CAPACITY_LIMIT = Gauge(
    "novacron_capacity_limit",
    "Capacity planner: the configured capacity of a resource (capacity.capacity).",
    ["cluster", "resource"],
)
CAPACITY_FORECAST = Gauge(
    "novacron_capacity_forecast",
    "Capacity planner: the latest plan's forecast of a cluster's resource 1, 7 and 30 days "
    "after its history (bound: mean, or upper of the calibrated interval).",
    ["cluster", "resource", "horizon", "bound"],
)
CAPACITY_TIME_LEFT = Gauge(
    "novacron_capacity_time_to_exhaustion_seconds",
    "Capacity planner: seconds from the history's end to the first hour whose upper bound "
    "reaches the capacity (+Inf: not within capacity.horizon_days); resources with a capacity.",
    ["cluster", "resource"],
)
CAPACITY_DIVERGENCE = Gauge(
    "novacron_capacity_forecast_divergence",
    "Capacity planner: the previous plan's point forecast against the hourly means since it "
    "was made, sum|actual - forecast| / sum|actual| (0.15: 15 % off, the seed's alert level); "
    "set once capacity.divergence_min_hours are covered.",
    ["cluster", "resource"],
)
CAPACITY_SERIES = Gauge(
    "novacron_capacity_series",
    "Capacity planner: series in the latest plan, by urgency (none: no capacity configured; "
    "skipped: too short or failed).",
    ["urgency"],
)
CAPACITY_PLANS = Counter(
    "novacron_capacity_plans", "Capacity planner: plans run, by outcome (ok, failed).", ["outcome"]
)
CAPACITY_LAST_PLAN = Gauge(
    "novacron_capacity_last_plan_timestamp_seconds",
    "Capacity planner: Unix time of the last plan that succeeded.",
)
CAPACITY_PLAN_SECONDS = Gauge(
    "novacron_capacity_plan_seconds", "Capacity planner: wall time of the last plan."
)
PARSE_BATCH_SECONDS = Histogram(
    "novacron_parse_batch_seconds",
    "Time to parse one input batch.",
    buckets=(1e-4, 5e-4, 1e-3, 5e-3, 0.01, 0.05, 0.1, 0.5, 1.0),
)


def initialise(output_topics: list[str], dlq_topic: str) -> None:
    """Create every known label combination at zero, so each series exists from the first
    scrape: `rate()` and `increase()` then see a first failure, a first alert type or a first
    dead-letter reason as the step it is, not as a series appearing with its value (which they
    cannot tell from a restart). Unbounded values (hosts, series) are never labels."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    from novacron_ml import __version__
    from novacron_ml.core.deadletter import Reason
    from novacron_ml.core.schema import AnomalyType, Severity

    try:
        bytewax = version("bytewax")
    except PackageNotFoundError:
        bytewax = "unknown"
    BUILD_INFO.labels(version=__version__, python=platform.python_version(), bytewax=bytewax).set(1)

    for reason in Reason:
        DEAD_LETTERS.labels(reason=reason.value)
    for kind in AnomalyType:
        EPISODES_RESOLVED.labels(type=kind.value)
        for severity in Severity:
            ALERTS.labels(type=kind.value, severity=severity.value)
    for name in ("maintenance", "silence"):
        ALERTS_SUPPRESSED.labels(kind=name)
    for verdict in ("false_positive", "true_positive"):
        FEEDBACK.labels(verdict=verdict)
    for skipped in ("string_field", "boolean_field", "stale_marker", "otlp_delta_without_interval"):
        FIELDS_SKIPPED.labels(reason=skipped)
    for skipped in ("first", "not_after_last"):
        COUNTER_SAMPLES_SKIPPED.labels(reason=skipped)
    for topic in output_topics:
        OUTPUT_RECORDS.labels(topic=topic)
        for cause in ("_MSG_TIMED_OUT", "_PURGE_QUEUE", "_QUEUE_FULL", "MSG_SIZE_TOO_LARGE"):
            OUTPUT_LOST.labels(topic=topic, cause=cause)
    OUTPUT_CUT.labels(topic=dlq_topic)
    for cause in ("_MSG_TIMED_OUT", "_TRANSPORT", "_ALL_BROKERS_DOWN"):
        OUTPUT_RETRIES.labels(cause=cause)


def initialise_tuning(mode: str) -> None:
    """The tuning flow's label combinations at zero (`initialise` does the shared ones)."""
    for subsystem in ("compression", "bandwidth", "consensus"):
        for action in ("change", "revert", "not-applied"):
            for allowed in ("true", "false"):
                RECOMMENDATIONS.labels(
                    mode=mode, action=action, allowed=allowed, subsystem=subsystem
                )
    for guardrail in ("bounds", "canary", "cooldown", "safe set", "safety", "reverted", "gain"):
        GUARDRAIL_BLOCKS.labels(guardrail=guardrail)
    for outcome in ("compacted", "dropped"):
        TUNING_HOSTS_IDLE.labels(outcome=outcome)


def initialise_capacity() -> None:
    """The capacity planner's label combinations at zero (`initialise` does the shared ones)."""
    for outcome in ("ok", "failed"):
        CAPACITY_PLANS.labels(outcome=outcome)
    for urgency in ("URGENT", "HIGH", "MEDIUM", "LOW", "none", "skipped"):
        CAPACITY_SERIES.labels(urgency=urgency)


def push_capacity(url: str, job: str = "novacron-capacity") -> None:
    """Push the capacity planner's families (`novacron_capacity_*`, nothing else of this
    process) to a Prometheus Pushgateway at `url`, replacing the job's last push: a one-shot
    plan (cron) has no process left to scrape."""
    from prometheus_client import CollectorRegistry, push_to_gateway
    from prometheus_client.registry import REGISTRY

    class _Capacity:
        def collect(self) -> list[Any]:
            return [m for m in REGISTRY.collect() if m.name.startswith("novacron_capacity")]

    registry = CollectorRegistry(auto_describe=True)
    registry.register(_Capacity())
    push_to_gateway(url, job=job, registry=registry, timeout=10)


def serve_metrics(port: int, addr: str = "127.0.0.1") -> None:
    """Expose /metrics on `addr:port` for Prometheus to scrape (loopback unless configured:
    `observability.metrics_bind`)."""
    start_http_server(port, addr=addr)


def counter_value(counter: Counter, **labels: str) -> float:
    """Current value of a counter (for summaries and tests)."""
    target = counter.labels(**labels) if labels else counter
    return float(target._value.get())
