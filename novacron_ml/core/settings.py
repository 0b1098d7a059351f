"""Typed, validated settings, read once at start-up.

Sources, highest priority first: explicit arguments, environment variables, a TOML file
(`NOVACRON_CONFIG`, default `./novacron.toml` when it exists), then the defaults below.
Environment names derive from the settings path: `detector.z_threshold` is
`NOVACRON_DETECTOR_Z_THRESHOLD`, `kafka.bootstrap_servers` is `NOVACRON_KAFKA_BOOTSTRAP_SERVERS`
(the conventional `KAFKA_BOOTSTRAP_SERVERS` is honoured when that is unset).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from novacron_ml.core import topics
from novacron_ml.core.clients import use_client_properties
from novacron_ml.core.features import FeatureConfig
from novacron_ml.core.schema import AnomalyType, series_selector
from novacron_ml.core.tuning import ACP_KNOBS, KNOBS, PBA_KNOBS

PositiveFloat = Annotated[float, Field(gt=0)]


class _Group(BaseModel):
    # inf and nan are never a sensible setting (NOVACRON_DETECTOR_Z_THRESHOLD=inf was taken)
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class KafkaSettings(_Group):
    bootstrap_servers: str = Field(
        "127.0.0.1:9092", description="Comma-separated host:port list of Kafka brokers."
    )
    batch_size: int = Field(1000, ge=1, le=100_000, description="Max messages per consume().")
    starting_offset: Literal["beginning", "end"] = Field(
        "beginning", description="Where a flow without recovery state starts reading."
    )
    tail: bool = Field(
        True, description="Keep waiting for new messages; false stops at the end of the topic."
    )
    consumer_config: dict[str, str] = Field(
        default_factory=dict, description="Extra librdkafka consumer properties."
    )
    producer_config: dict[str, str] = Field(
        default_factory=dict,
        description="Extra librdkafka producer properties, over the defaults "
        "(enable.idempotence=true, linger.ms=5, compression.type=lz4).",
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT",
        description="How every client the project creates (flow, admin, produce, replay, "
        "alerts, capacity, training) talks to the brokers.",
    )
    sasl_mechanism: Literal["", "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        "", description="SASL mechanism (with a SASL_* security_protocol)."
    )
    sasl_username: str = Field("", description="SASL user name.")
    sasl_password: str = Field("", description="SASL password; never printed or logged.")
    ssl_ca_location: str = Field(
        "", description="CA certificate file for SSL/SASL_SSL (empty: the system's)."
    )
    client_config: dict[str, str] = Field(
        default_factory=dict,
        description="Extra librdkafka properties for every client (ssl.certificate.location, "
        "sasl.oauthbearer..., client.id), under consumer_config and producer_config.",
    )
    delivery_timeout_s: float = Field(
        900.0,
        ge=0,
        description="How long the flow keeps producing an output record again while the broker "
        "refuses it for a passing cause (away, no leader); then it is counted in "
        "novacron_output_lost_total and logged. 0: no bound. The flow waits meanwhile.",
    )

    @property
    def brokers(self) -> list[str]:
        return [b.strip() for b in self.bootstrap_servers.split(",") if b.strip()]

    @model_validator(mode="after")
    def _sasl_complete(self) -> KafkaSettings:
        if self.security_protocol.startswith("SASL") and not (
            self.sasl_mechanism and self.sasl_username
        ):
            raise ValueError(
                f"security_protocol {self.security_protocol} needs sasl_mechanism and "
                "sasl_username (and sasl_password)"
            )
        return self

    def client_properties(self) -> dict[str, str]:
        """The librdkafka properties every client starts from: security, then client_config."""
        props = {"security.protocol": self.security_protocol.lower()}
        if self.security_protocol.startswith("SASL"):
            props |= {
                "sasl.mechanism": self.sasl_mechanism,
                "sasl.username": self.sasl_username,
                "sasl.password": self.sasl_password,
            }
        if self.ssl_ca_location:
            props["ssl.ca.location"] = self.ssl_ca_location
        return props | self.client_config


class TopicSettings(_Group):
    metrics: str = Field(topics.METRICS, description="Input metric events.")
    dlq: str = Field(topics.METRICS_DLQ, description="Dead letters with a reason header.")
    alerts: str = Field(topics.ALERTS, description="Alerts keyed by alert_id.")
    incidents: str | None = Field(
        topics.INCIDENTS,
        description="Incidents (a host's overlapping alert episodes, probable cause first); "
        "empty: none are grouped.",
    )
    features: str | None = Field(
        None,
        description="If set, publish every window's features (and host cross features) here.",
    )
    feedback: str | None = Field(
        None,
        description="If set (e.g. alerts.feedback), read operator verdicts on alerts from here.",
    )

    hourly: str | None = Field(
        None,
        description="If set (e.g. metrics.hourly), publish hourly aggregates per (cluster, metric)"
        " here: the capacity planner's history.",
    )
    forecasts: str | None = Field(
        None, description="If set (e.g. metrics.forecasts), publish per-series LSTM forecasts."
    )
    forecasts_shadow: str | None = Field(
        None,
        description="If set (e.g. metrics.forecasts.shadow) and forecast.model is a registry "
        "folder, its challenger forecasts the same windows here (shadow scoring: no alerts, "
        "nothing else changes).",
    )
    scores_shadow: str | None = Field(
        None,
        description="If set (e.g. metrics.scores.shadow) and detector.iforest_models is a "
        "registry, each family's challenger forest scores the same windows here beside its "
        "champion's score (shadow scoring: no alerts, nothing else changes).",
    )
    capacity_forecasts: str = Field(
        topics.CAPACITY_FORECASTS, description="Capacity planner: one forecast per series."
    )
    capacity_alerts: str = Field(
        topics.CAPACITY_ALERTS, description="Capacity planner: exhaustion alerts with urgency."
    )
    optimizer_actions: str = Field(
        topics.OPTIMIZER_ACTIONS, description="Tuning flow: recommendations, allowed or blocked."
    )
    dwcp_config: str = Field(
        topics.DWCP_CONFIG,
        description="Each host's HDE and bandwidth-predictor settings and each cluster's "
        "consensus setting (compacted; keys host, bandwidth/<host>, consensus/<cluster>): read "
        "by the tuning flow, written in apply mode.",
    )

    @property
    def in_use(self) -> list[str]:
        """Every topic the detect flow reads or writes with these settings."""
        optional = [
            t
            for t in (
                self.incidents,
                self.features,
                self.feedback,
                self.hourly,
                self.forecasts,
                self.forecasts_shadow,
                self.scores_shadow,
            )
            if t
        ]
        return [self.metrics, self.dlq, self.alerts, *optional]


class IngestSettings(_Group):
    max_message_bytes: int = Field(
        1_048_576, ge=64, description="Messages larger than this go to the DLQ as 'oversized'."
    )
    max_event_age_s: float = Field(
        7 * 86400.0,
        ge=0,
        description="Events older than this (vs. wall clock) are dead-lettered; 0 disables.",
    )
    max_event_future_s: float = Field(
        300.0, ge=0, description="Events further in the future are dead-lettered; 0 disables."
    )
    line_protocol_precision: Literal["ns", "us", "ms", "s"] = Field(
        "ns", description="Timestamp unit of InfluxDB line protocol (Telegraf's default: ns)."
    )
    telegraf_json_precision: Literal["ns", "us", "ms", "s"] = Field(
        "s", description="Timestamp unit of Telegraf's JSON output (its json_timestamp_units)."
    )
    host_tags: list[str] = Field(
        ["host", "instance", "host.name"],
        min_length=1,
        description="Tags (labels, resource attributes) naming the host, first present wins.",
    )
    cluster_tags: list[str] = Field(
        ["cluster", "k8s.cluster.name"],
        description="Tags naming the cluster, first present wins.",
    )
    default_cluster: str = Field(
        "default",
        max_length=128,
        description="Cluster of samples without a cluster tag (Telegraf sends none unless "
        "[global_tags] sets one); empty: such samples are dead-lettered.",
    )
    ignore_tags: list[str] = Field(
        [], description="Tags left out of a series' identity (and of its alerts' labels)."
    )


class WindowSettings(_Group):
    length_s: PositiveFloat = Field(60.0, description="Event-time window length.")
    slide_s: PositiveFloat | None = Field(
        None, description="Slide for sliding windows; unset means tumbling windows."
    )
    allowed_lateness_s: float = Field(
        10.0, ge=0, description="Out-of-order tolerance; later events are routed as late."
    )

    @model_validator(mode="after")
    def _slide_fits(self) -> WindowSettings:
        if self.slide_s is not None and self.slide_s > self.length_s:
            raise ValueError("window.slide_s must not exceed window.length_s")
        return self


class FeatureSettings(_Group):
    step_s: PositiveFloat = Field(
        5.0, description="Sampling grid of the series (one value per step; the last one wins)."
    )
    lookback_s: PositiveFloat = Field(
        3600.0, description="Look-back buffer for robust z and spectral features."
    )
    lookback_every: int = Field(
        5, ge=1, description="Refresh look-back statistics every this many windows."
    )
    ewma_fast_span: PositiveFloat = Field(6.0, description="Fast EWMA span, in samples.")
    ewma_slow_span: PositiveFloat = Field(60.0, description="Slow EWMA span, in samples.")
    bucket_s: PositiveFloat = Field(
        600.0, description="Resolution of the same-time-yesterday/last-week history."
    )
    history_days: int = Field(7, ge=1, le=28, description="Days of bucket history per series.")
    idle_ttl_s: PositiveFloat = Field(
        3600.0, description="Series without events this long (system time) are evicted."
    )
    shards: int = Field(
        4,
        ge=1,
        le=65536,
        description="State shards (keys) the series are spread over (by host); with a "
        "power-of-two number of workers (up to 64) shard i runs on worker i % workers, so use "
        "a multiple of the workers.",
    )
    max_series: int = Field(
        100_000,
        ge=1,
        description="Live series at most (split evenly over the shards); events of a new "
        "series beyond it are dead-lettered as 'series_limit'.",
    )
    max_series_per_host: int = Field(
        5_000,
        ge=1,
        description="Live series of one host at most (a label explosion stays bounded); "
        "beyond it: 'series_limit' dead letters.",
    )


DETECTION_TIERS = ("robust_z", "novelty", "iforest", "river")


class DetectorSettings(_Group):
    z_threshold: PositiveFloat = Field(
        6.0, description="Robust z-score (median/MAD) above which a window is anomalous."
    )
    history_windows: int = Field(
        60, ge=4, le=10_000, description="Past windows per series the baseline is taken from."
    )
    min_history: int = Field(
        12, ge=3, description="Windows a series needs before it can alert (warm-up)."
    )
    relative_floor: float = Field(
        0.01,
        ge=0,
        description="Lower bound of robust z's scale (and the load tier's width) as a fraction"
        " of |median|: ignores rounding wiggles, and changes under ~6x this share of a level"
        " never alert. 0: floored at the series' resolution instead (its smallest step).",
    )
    warmup_widening: bool = Field(
        True,
        description="Widen robust z's scale while its baseline has fewer than history_windows"
        " windows (Student-t, so a short baseline needs the evidence of a full one).",
    )
    adapt_after_windows: int = Field(
        30,
        ge=1,
        description="After this many anomalous windows in a row the new level is learned.",
    )
    novelty_scales: list[int] = Field(
        default_factory=lambda: [1, 2, 4],
        min_length=1,
        description="Shape lengths (window means) the novelty (nearest-shape) tier compares at; "
        "its score is the mean of the scales' calibrated scores.",
    )
    min_novelty: float = Field(
        0.05,
        ge=0,
        description="The novelty tier scores 0 unless a shape is this fraction of the series' "
        "range away from every earlier one.",
    )
    novelty_history: int = Field(
        1440,
        ge=101,
        le=100_000,
        description="Past shapes per series the novelty tier searches (more than the 100 it "
        "needs before it scores).",
    )
    calibration_history: int = Field(
        1440,
        ge=10,
        le=100_000,
        description="Past raw scores per series and tier that a score is ranked against.",
    )
    probability_tiers: list[str] = Field(
        default_factory=lambda: ["novelty"],
        min_length=1,
        description="Tiers whose calibrated scores make the anomaly probability (their max); "
        "any of robust_z, novelty, iforest, river.",
    )
    river: bool = Field(
        False,
        description="Run the River tier (HalfSpaceTrees per series on feature vectors). Off "
        "by default: combined into the decision it lowered the NAB score (docs/QUALITY.md).",
    )
    iforest_models: str = Field(
        "",
        description="Registry (e.g. models/onnx: iforest_<family>/ folders, champions "
        "followed) or directory of iforest_<family>.json manifests; a relative path is looked "
        "up in the working directory, then the project root; empty (the default: combined "
        "into the decision it lowered the NAB score) disables the Isolation Forest tier.",
    )
    fire_probability: float = Field(
        0.985,
        gt=0,
        le=1,
        description="Anomaly probability at which an alert episode opens (the shipped "
        "firing level; the alerts' NAB score is taken here, with no sweep).",
    )
    cooldown_windows: int = Field(
        100, ge=0, description="Windows after a firing in which no new episode opens."
    )
    min_deviation: float = Field(
        5.0,
        ge=0,
        description="A window fewer robust noise widths (|z| in the metric's bad direction) "
        "than this from the series' median has anomaly probability 0.",
    )
    spread_threshold: float = Field(
        8.0,
        ge=0,
        description="The spread tier alerts when a window's standard deviation is this many "
        "robust noise widths above the series' usual spread (variance changes); 0: off.",
    )
    load_threshold: float = Field(
        6.0,
        ge=0,
        description="The load-residual tier alerts when a window's mean is this many residual "
        "widths from what its host's load proxy predicts (a line fitted over the last hour); "
        "0: off.",
    )
    load_proxy: str = Field(
        "cpu_util",
        min_length=1,
        description="The series standing for a host's load, named as in its key after "
        "cluster/host/: a metric, or metric{tag=value,...} with the tags it must have (others "
        "may be there too; Telegraf's total CPU: cpu_usage_user{cpu=cpu-total}). The "
        "load-residual tier fits each other series of the host on its window of the same "
        'start; novacron_load_residual_windows_total{outcome="no_proxy"} counts windows of '
        "hosts without it.",
    )
    load_min_r2: float = Field(
        0.5,
        ge=0,
        le=1,
        description="The load-residual tier scores a series only while the line on the "
        "proxy explains at least this share of its variance over the last 60 windows (R^2): "
        "where the load explains less, robust z on the series alone judges it; 0: every "
        "series.",
    )
    load_proxy_gate: float = Field(
        3.0,
        gt=0,
        description="The load-residual tier scores none of a host's series while its proxy's "
        "own window is this many robust noise widths or more from the proxy's baseline (the "
        "proxy no longer stands for the load).",
    )
    load_proxy_vote: float = Field(
        3.0,
        gt=0,
        description="The load-residual tier scores none of a host's series in a round where "
        "more than half of them (at least 3) are this many residual widths or more off at "
        "once: the proxy moved, not the metrics.",
    )
    load_runs: list[int] = Field(
        default_factory=lambda: [2, 4],
        description="The load-residual tier also alerts when each of a series' last k "
        "windows is off by the bar at which k windows in a row are as rare as one window "
        "past load_threshold (at 6: 4.0 residual widths for 2 windows, 2.54 for 4): a "
        "sustained change too small for one window; []: single windows only.",
    )
    resolve_after_windows: int = Field(
        5,
        ge=1,
        description="Windows in a row below the firing level that end a series' alert "
        "episode (a 'resolved' record follows on the alerts topic).",
    )
    hold_windows: int = Field(
        10,
        ge=0,
        description="The first windows of an alert episode stay out of the novelty tier's "
        "history, so a recurrence of the anomaly is still new.",
    )
    rearm_after_windows: int = Field(
        20,
        ge=1,
        description="Windows after an episode closed that end its cooldown early.",
    )
    bigger_event: float = Field(
        3.0,
        ge=1,
        description="During a cooldown a window passes when its novelty distance is this many "
        "times the one that fired.",
    )

    @field_validator("load_proxy")
    @classmethod
    def _a_series_name(cls, value: str) -> str:
        series_selector(value)  # ValueError: not metric or metric{tag=value,...}
        return value

    @model_validator(mode="after")
    def _history_fits(self) -> DetectorSettings:
        if self.min_history > self.history_windows:
            raise ValueError("detector.min_history must not exceed detector.history_windows")
        unknown = sorted(set(self.probability_tiers) - set(DETECTION_TIERS))
        if unknown:
            raise ValueError(
                f"detector.probability_tiers: unknown tier(s) {unknown}; "
                f"choose from {list(DETECTION_TIERS)}"
            )
        if "river" in self.probability_tiers and not self.river:
            raise ValueError("detector.probability_tiers names river: set detector.river=true")
        if "iforest" in self.probability_tiers and not self.iforest_models:
            raise ValueError(
                "detector.probability_tiers names iforest: set detector.iforest_models "
                "(e.g. models/onnx)"
            )
        runs = self.load_runs
        if len(set(runs)) != len(runs) or not all(2 <= k <= 64 for k in runs):
            raise ValueError(f"detector.load_runs must be distinct integers from 2 to 64: {runs}")
        scales = self.novelty_scales
        if len(set(scales)) != len(scales) or not all(1 <= s <= 64 for s in scales):
            raise ValueError(
                f"detector.novelty_scales must be distinct integers from 1 to 64: {scales}"
            )
        return self


class SuppressionRule(_Group):
    name: str = Field(min_length=1, description="Shown in the alert's suppressed_by.")
    start: datetime = Field(description="RFC 3339 start (with offset).")
    end: datetime = Field(description="RFC 3339 end (exclusive).")
    weekly: bool = Field(False, description="Repeat every week from start.")
    clusters: list[str] | None = Field(None, description="Only these clusters (default all).")
    hosts: list[str] | None = Field(None, description="Only these hosts (default all).")
    types: list[str] | None = Field(None, description="Only these alert types.")
    metrics: list[str] | None = Field(None, description="Only these metrics.")
    severities: list[str] | None = Field(None, description="Only these severities.")

    @model_validator(mode="after")
    def _ordered(self) -> SuppressionRule:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("suppression start/end need a UTC offset")
        if self.end <= self.start:
            raise ValueError(f"suppression {self.name!r}: end must be after start")
        if self.weekly and self.end - self.start > timedelta(days=7):
            raise ValueError(f"suppression {self.name!r}: a weekly window is at most 7 days")
        return self


class SuppressionSettings(_Group):
    maintenance: list[SuppressionRule] = Field(
        default_factory=list,
        description="Maintenance windows (shared with the capacity planner).",
    )
    silences: list[SuppressionRule] = Field(
        default_factory=list, description="Silences: suppress matching alerts for a while."
    )


class ForecastSettings(_Group):
    enabled: bool = Field(
        False,
        description="Serve the ONNX LSTM forecaster in the detect flow: per-series forecasts,"
        " prediction-error alerts from its residuals, SLO degradation alerts.",
    )
    model: str = Field(
        "models/onnx/lstm_forecaster",
        description="The served model: a registry folder (its champion, followed as it "
        "moves: hot reload), <folder>@<version> or a manifest file (pinned); relative paths "
        "from the working directory, then the project root.",
    )
    residual_threshold: PositiveFloat = Field(
        8.0,
        description="prediction_error alert when |actual - forecast| exceeds this many times"
        " the series' EW mean absolute residual.",
    )
    min_residuals: int = Field(
        60, ge=1, description="Residuals a series needs before it can raise prediction_error."
    )
    blend: bool = Field(
        True,
        description="Serve each series' forecast blended with the mean of the windows the"
        " model read, by the minimum-variance weight of their recent one-step errors (1: the"
        " model alone, where it reads structure; docs/FORECAST.md#blend).",
    )
    slo: dict[str, float] = Field(
        default_factory=dict,
        description="Per metric: degradation alert when the forecast crosses this value within"
        " the horizon (upwards, or downwards for lower-is-worse metrics), e.g."
        ' {"latency_p99_ms": 250}.',
    )


class CapacitySettings(_Group):
    horizon_days: int = Field(30, ge=1, le=365, description="Forecast horizon of the planner.")
    capacity: dict[str, float] = Field(
        default_factory=lambda: {
            "cpu_util": 0.85,
            "memory_util": 0.90,
            "network_util": 0.80,
        },
        description="Capacity per resource (metric name), in the metric's unit; resources not"
        " listed get forecasts but no exhaustion alerts.",
    )
    urgent_days: float = Field(7, gt=0, description="URGENT when exhaustion is this close.")
    high_days: float = Field(14, gt=0, description="HIGH when exhaustion is this close.")
    medium_days: float = Field(30, gt=0, description="MEDIUM when this close; LOW beyond.")
    interval: float = Field(0.95, gt=0, lt=1, description="Nominal prediction interval.")
    uncertainty_samples: int = Field(
        100,
        ge=0,
        description="Prophet's simulated trend paths per fit (its default, 1000, is 10x slower);"
        " the interval is calibrated from cross-validation either way.",
    )
    changepoints: int = Field(
        10,
        ge=0,
        le=100,
        description="Prophet trend changepoints (its default, 25, doubles the fit time on"
        " 60 days of hours; the fit has a ~0.25 s floor of cmdstan process start-up here).",
    )
    holidays_country: str | None = Field(
        "US", description="Country for Prophet's holiday features (holidays package); unset: none."
    )
    models: list[str] = Field(
        default_factory=lambda: ["prophet", "seasonal_naive", "auto_ets", "mstl"],
        description="Candidate models; `selection` turns their CV results into one forecast.",
    )
    selection: Literal[
        "shrink", "select", "median", "mean", "weighted", "select_ensemble",
        "prophet", "seasonal_naive", "auto_ets", "mstl",
    ] = Field(
        "shrink",
        description="How the candidates become one forecast per series: `shrink` (the CV-best"
        " model weighted k/(k+5) over k CV windows, the rest on the candidates' median; the"
        " rule that held out of sample, docs/CAPACITY.md#choosing), `select` (CV-best only),"
        " `median`, `mean`, `weighted` (inverse CV MASE), `select_ensemble` (CV-best of the"
        " models and their median), or one model's name.",
    )  # fmt: skip
    fast: bool = Field(
        False,
        description="Fast path: SeasonalNaive and daily-season MSTL for every series, Prophet"
        " only where a maintenance window applies to it (the regressor only Prophet uses);"
        " ~10x cheaper, a little less accurate (docs/QUALITY.md#capacity-selection).",
    )
    scheduler: str | None = Field(
        None,
        description="Dask scheduler address (tcp://host:8786) to plan on a Dask cluster;"
        " unset: a LocalCluster of `workers` processes on this machine.",
    )
    engine: Literal["dask", "processes"] = Field(
        "dask",
        description="Where series are fitted: `dask` (a LocalCluster, or `scheduler`) or"
        " `processes` (a local process pool, no Dask needed).",
    )
    cv_windows: int = Field(3, ge=1, le=50, description="Rolling origins used to choose a model.")
    min_history_days: float = Field(
        7, gt=0, description="Series with less hourly history are skipped with a warning."
    )
    workers: int = Field(
        0, ge=0, description="Processes fitting series in parallel (0: one per CPU core)."
    )
    divergence_min_hours: int = Field(
        6,
        ge=1,
        description="Hours of the previous plan's forecast the history must cover before the"
        " plan scores its divergence (novacron_capacity_forecast_divergence, docs/CAPACITY.md).",
    )


class CatalogueEntry(_Group):
    name: str = Field(min_length=1, max_length=256, description="Metric name or pattern (*, ?).")
    type: AnomalyType = Field(AnomalyType.UNCLASSIFIED, description="Anomaly type of alerts.")
    bad: Literal["up", "down", "both"] = Field("both", description="Which direction is bad.")
    counter: bool = Field(False, description="A cumulative counter, scored as a per-second rate.")
    unit: str = ""


class CatalogueSettings(_Group):
    entries: list[CatalogueEntry] = Field(
        [],
        description="Metric catalogue entries tried before the built-in ones "
        "(docs/CATALOGUE.md), e.g. [{name = 'app_queue_depth', type = 'resource_exhaustion', "
        "bad = 'up'}].",
    )


class RecoverySettings(_Group):
    enabled: bool = Field(
        True,
        description="novacron-ml run and tune run keep Bytewax recovery state, so a restart "
        "resumes where it stopped (no re-published alerts, no gap; the tuning flow keeps every "
        "host's cooldown and pending revert); false: every start reads from "
        "kafka.starting_offset.",
    )
    dir: str = Field(
        "",
        description="Recovery directory; empty: one per broker and metrics topic under "
        "$XDG_STATE_HOME/novacron-ml/recovery (~/.local/state/...), created on first start.",
    )
    snapshot_interval_s: PositiveFloat = Field(
        10.0,
        description="Seconds between state snapshots (Bytewax epochs): at most this much input "
        "is processed again after a crash (its alerts re-published with the same ids).",
    )
    backup_interval_s: float = Field(
        0.0,
        ge=0,
        description="Seconds Bytewax keeps superseded snapshots before deleting them (for "
        "copying the recovery directory to durable storage while the flow runs).",
    )
    retain_freed_memory: bool = Field(
        True,
        description="With recovery on, novacron-ml run keeps the memory each epoch's "
        "snapshots free in the process (glibc mallopt), so the next snapshot reuses it instead "
        "of faulting in fresh pages (~10x the copy on a VM; docs/BENCHMARKS.md); resident "
        "memory then stays near its peak. A MALLOC_TRIM_THRESHOLD_ / MALLOC_MMAP_THRESHOLD_ / "
        "MALLOC_TOP_PAD_ in the environment wins; nothing off glibc.",
    )


class TuneSettings(_Group):
    """The tuning flow (`dataflows/tune.py`, docs/TUNING.md#flow)."""

    mode: Literal["dry-run", "apply"] = Field(
        "dry-run",
        description="dry-run: recommendations on optimizer.actions only; apply (opt-in): also "
        "publish each allowed change to dwcp.config.",
    )
    interval_s: PositiveFloat = Field(
        60.0, description="Event-time seconds between two decisions of a host."
    )
    policy: str = Field(
        "models/onnx/dqn_compression",
        description="The ONNX policy: a registry folder (its champion, followed: hot reload), "
        "<folder>@<version> or a manifest file (pinned).",
    )
    table: str = Field(
        "models/tuning/compression_table.json",
        description="The measured compression table the guardrails' estimates come from "
        "(novacron-ml tune measure).",
    )
    consensus_policy: str = Field(
        "models/onnx/dqn_consensus",
        description="The consensus (ACP) policy, served per cluster to clusters that report "
        "acp_* metrics: a registry folder, <folder>@<version> or a manifest; empty: the "
        "consensus knobs are not tuned.",
    )
    consensus_table: str = Field(
        "models/tuning/consensus_table.json",
        description="The simulated consensus table the consensus guardrails estimate from "
        "(novacron-ml tune measure --env consensus).",
    )
    bandwidth_tuner: Literal["hindsight", "off"] = Field(
        "hindsight",
        description="The bandwidth predictor's knobs, per host reporting pba_demand_mbps: "
        "hindsight (once a day every setting is rerun on the day just seen and the best is "
        "proposed) or off.",
    )
    canary_fraction: float = Field(
        0.1,
        ge=0,
        le=1,
        description="Share of hosts (and of clusters, for consensus) that may change: a stable "
        "hash of the name.",
    )
    cooldown_s: float = Field(600.0, ge=0, description="At most one change per host this often.")
    throughput_margin: float = Field(
        0.05,
        ge=0,
        lt=1,
        description="Safe set: the new setting's 95 % lower bound of throughput must stay "
        "within this of the current one; a change observed this much worse for revert_after "
        "intervals is reverted.",
    )
    p99_margin: float = Field(
        0.10,
        ge=0,
        description="Safe set: the upper bound of the new setting's chunk delivery time "
        "(its p99) within this of the current one; reverts likewise.",
    )
    revert_after: int = Field(2, ge=1, description="Bad intervals in a row before a revert.")
    settle_s: float = Field(
        120.0,
        ge=0,
        description="Seconds a change has to reach the host before its intervals are judged "
        "for a revert.",
    )
    min_gain: float = Field(
        0.01,
        ge=0,
        description="A change the measured table expects to gain less than this share of "
        "throughput is not made (every change has a cost).",
    )
    bounds: dict[str, tuple[float, float]] = Field(
        default_factory=dict,
        description='Per-knob bounds, e.g. {"hde_level": [1, 9]}; unset: the knob\'s grid.',
    )
    idle_s: PositiveFloat = Field(
        86400.0,
        description="A host silent this long (wall clock) is compacted: its working state is "
        "dropped, its setting, version and reverted settings kept (a host still at the default "
        "with nothing to remember is dropped outright).",
    )
    forget_s: PositiveFloat = Field(
        30 * 86400.0,
        description="A compacted host silent this long is forgotten; if it returns it is tuned "
        "from the setting it reports (hde_* metrics), else from the default.",
    )

    @field_validator("bounds")
    @classmethod
    def _known_knobs(cls, value: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
        knobs = [*KNOBS, *ACP_KNOBS, *PBA_KNOBS]
        unknown = sorted(set(value) - set(knobs))
        if unknown:
            raise ValueError(f"unknown knobs {unknown}: the knobs are {knobs}")
        return value


class ModelsSettings(_Group):
    poll_s: PositiveFloat = Field(
        10.0,
        description="Seconds between two reads of a served model's registry alias: a promoted "
        "version (novacron-ml models promote) is checked, warmed and swapped in between "
        "batches; a rollback swaps back at once.",
    )


class RuntimeSettings(_Group):
    """The Python process the flow runs in (`novacron-ml run`, and the in-process commands)."""

    quiet_gc: bool = Field(
        True,
        description="novacron-ml run freezes what its start-up made (modules, models, the "
        "built flow) out of the garbage collector's passes (gc.freeze) and runs the collector's "
        "full passes a tenth as often (the oldest generation's threshold 10 -> 100): at 10,000 "
        "series a full pass took ~260 ms, mostly scanning start-up's objects, and fell inside "
        "the bursts of closing windows; frozen, 30-45 ms (docs/BENCHMARKS.md). Only objects in "
        "reference cycles wait longer to be freed. replay, demo, nab and capacity simulate do "
        "the same for the length of their flow's run, and also freeze what survives each full "
        "pass (the windows and alerts they keep for their report), thawed when the run ends.",
    )


class ObservabilitySettings(_Group):
    metrics_port: int | None = Field(
        None, ge=0, le=65535, description="Serve Prometheus metrics on this port (unset: off)."
    )
    metrics_bind: str = Field(
        "127.0.0.1",
        description="Address the metrics endpoint binds to (0.0.0.0: every interface, e.g. in "
        "a container scraped from outside).",
    )
    client_log: str = Field(
        "/tmp/novacron-ml-kafka.log",
        description="File for the Kafka client's own log lines (with --verbose also stderr); "
        "a broker that cannot be reached is one line on the terminal.",
    )
    lag_interval_s: PositiveFloat = Field(
        15.0,
        description="Seconds between samples of the flow's consumer lag "
        "(novacron_consumer_lag_messages and _seconds, per topic and partition).",
    )


class Settings(BaseSettings):
    """All settings of novacron-ml."""

    model_config = SettingsConfigDict(
        env_prefix="NOVACRON_",
        env_nested_delimiter="_",
        env_nested_max_split=1,
        extra="ignore",
        frozen=True,
    )

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    topics: TopicSettings = Field(default_factory=TopicSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    window: WindowSettings = Field(default_factory=WindowSettings)
    features: FeatureSettings = Field(default_factory=FeatureSettings)
    detector: DetectorSettings = Field(default_factory=DetectorSettings)
    suppression: SuppressionSettings = Field(default_factory=SuppressionSettings)
    observability: ObservabilitySettings = Field(default_factory=ObservabilitySettings)
    capacity: CapacitySettings = Field(default_factory=CapacitySettings)
    forecast: ForecastSettings = Field(default_factory=ForecastSettings)
    catalogue: CatalogueSettings = Field(default_factory=CatalogueSettings)
    recovery: RecoverySettings = Field(default_factory=RecoverySettings)
    tune: TuneSettings = Field(default_factory=TuneSettings)
    models: ModelsSettings = Field(default_factory=ModelsSettings)
    runtime: RuntimeSettings = Field(default_factory=RuntimeSettings)

    @model_validator(mode="after")
    def _windows_fit_the_grid(self) -> Settings:
        try:
            self.feature_config()
        except ValueError as exc:
            raise ValueError(f"window/features settings do not fit together: {exc}") from exc
        return self

    def feature_config(self) -> FeatureConfig:
        """The feature engine's configuration from the window and features groups."""
        w, f = self.window, self.features
        return FeatureConfig(
            window_s=w.length_s,
            slide_s=w.slide_s,
            step_s=f.step_s,
            lookback_s=f.lookback_s,
            lateness_s=w.allowed_lateness_s,
            idle_ttl_s=f.idle_ttl_s,
            ewma_fast_span=f.ewma_fast_span,
            ewma_slow_span=f.ewma_slow_span,
            bucket_s=f.bucket_s,
            history_days=f.history_days,
            lookback_every=f.lookback_every,
            max_series=-(-f.max_series // f.shards),  # the bound is the flow's, per shard
            max_series_per_host=f.max_series_per_host,
        )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_path = Path(os.environ.get("NOVACRON_CONFIG", "novacron.toml"))
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml_path.is_file():
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_path))
        return tuple(sources)


SCRIPT_VARIABLES = frozenset(
    {"NOVACRON_CONFIG", "NOVACRON_PYTHON", "NOVACRON_VENV"}
    | {f"NOVACRON_BROKER_{name}" for name in ("PORT", "DIR", "CACHE", "VERSION", "HEAP", "WAIT_S")}
)
"""`NOVACRON_*` variables that are not settings: the config file, and what the scripts
(`scripts/_python.sh`, `scripts/kafka.sh`) read."""


def check_environment(environ: Mapping[str, str] | None = None) -> None:
    """Reject a `NOVACRON_*` variable that names no setting (a typo would otherwise be
    ignored, or fail with pydantic's multi-line report): one line with the closest name."""
    import difflib

    environ = os.environ if environ is None else environ
    groups: dict[str, type[BaseModel]] = {
        g: f.annotation for g, f in Settings.model_fields.items() if isinstance(f.annotation, type)
    }
    for var in sorted(environ):
        if not var.startswith("NOVACRON_") or var in SCRIPT_VARIABLES:
            continue
        group, _, name = var[len("NOVACRON_") :].lower().partition("_")
        if var.startswith("NOVACRON_BROKER_"):
            raise ValueError(
                f"{var} is no setting (the broker script reads "
                f"{', '.join(sorted(v for v in SCRIPT_VARIABLES if 'BROKER' in v))})"
            )
        if group not in groups:
            near = difflib.get_close_matches(group, groups, n=1)
            hint = f" (did you mean NOVACRON_{near[0].upper()}_...?)" if near else ""
            raise ValueError(
                f"{var}: no settings group {group!r}{hint}; groups: {', '.join(groups)}"
            )
        fields = groups[group].model_fields
        if name not in fields:
            near = difflib.get_close_matches(name, fields, n=1)
            hint = f"; did you mean NOVACRON_{group.upper()}_{near[0].upper()}?" if near else ""
            raise ValueError(f"{var}: {group} has no setting {name!r}{hint}")


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment and config file, with explicit overrides on top; a
    `NOVACRON_*` variable that names no setting is an error (`check_environment`)."""
    check_environment()
    config = os.environ.get("NOVACRON_CONFIG")
    if config and not Path(config).is_file():
        raise FileNotFoundError(f"NOVACRON_CONFIG points to a missing file: {config}")
    if "NOVACRON_KAFKA_BOOTSTRAP_SERVERS" not in os.environ and "KAFKA_BOOTSTRAP_SERVERS" in (
        os.environ
    ):
        kafka = dict(overrides.pop("kafka", {}) or {})
        kafka.setdefault("bootstrap_servers", os.environ["KAFKA_BOOTSTRAP_SERVERS"])
        overrides["kafka"] = kafka
    settings = Settings(**overrides)
    # Every Kafka client created from now on (novacron_ml.core.kafka.client_config) uses the
    # security settings: admin, produce, replay, alerts, capacity, training, the flow.
    use_client_properties(settings.kafka.client_properties())
    return settings


def settings_table() -> str:
    """Every setting as a Markdown table (setting, environment variable, default, meaning):
    the README's table is this output (`novacron-ml settings --table`; a test compares)."""
    import json

    rows = ["| setting | environment variable | default | meaning |", "|---|---|---|---|"]
    for group, group_field in Settings.model_fields.items():
        factory = group_field.default_factory
        assert factory is not None
        model = factory()  # type: ignore[call-arg]
        for name, f in type(model).model_fields.items():
            value = getattr(model, name)
            if value is None:
                default = "unset"
            elif isinstance(value, bool):
                default = f"`{str(value).lower()}`"
            elif isinstance(value, (list, dict)):
                default = f"`{json.dumps(value, default=str)}`"
            else:
                default = f"`{value}`"
            env = f"`NOVACRON_{group.upper()}_{name.upper()}`"
            if (group, name) == ("kafka", "bootstrap_servers"):
                env += " (or `KAFKA_BOOTSTRAP_SERVERS`)"
            meaning = (f.description or "").replace("|", "\\|")
            rows.append(f"| `{group}.{name}` | {env} | {default} | {meaning} |")
    return "\n".join(rows) + "\n"


SECRET_KEYS = (
    "sasl.password",
    "ssl.key.password",
    "ssl.keystore.password",
    "sasl.oauthbearer.client.secret",
)
"""librdkafka properties that are secrets: never printed or logged."""


def redacted(settings: Settings) -> dict[str, Any]:
    """The settings as JSON-able data with every secret replaced by "***"."""
    data = settings.model_dump(mode="json")
    if data["kafka"].get("sasl_password"):
        data["kafka"]["sasl_password"] = "***"
    for group in ("consumer_config", "producer_config", "client_config"):
        config = data["kafka"].get(group) or {}
        for key in list(config):
            if key in SECRET_KEYS or "password" in key or "secret" in key:
                config[key] = "***"
    return data
