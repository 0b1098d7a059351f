"""Build the Grafana dashboards in deploy/grafana/dashboards/ with grafana-foundation-sdk.

    python deploy/grafana/build.py            # rewrite the JSON (tests/app/test_grafana.py
                                              # checks the committed files are this output)

The seed's five dashboards, on the metrics novacron-ml exports (novacron_ml/core/metrics.py):
the pipeline's health, anomaly detection and model performance (the detect flow, job
novacron-detect: served versions, inference time, swaps and rejections, input and
forecast-error drift), auto-optimisation (the tuning flow, job novacron-tune) and capacity
planning (`capacity plan --every 24 --metrics-port`, job novacron-capacity: utilisation
against capacity, forecasts, time to exhaustion, the previous plan's divergence).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from grafana_foundation_sdk.builders.dashboard import Dashboard, DatasourceVariable, Row
from grafana_foundation_sdk.builders.prometheus import Dataquery
from grafana_foundation_sdk.builders.stat import Panel as Stat
from grafana_foundation_sdk.builders.timeseries import Panel as Timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DataSourceRef

OUT = Path(__file__).resolve().parent / "dashboards"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
JOB = 'job="novacron-detect"'


def query(expr: str, legend: str, ref: str) -> Dataquery:
    return Dataquery().expr(expr).legend_format(legend).ref_id(ref).datasource(DATASOURCE)


def series(title: str, unit: str, description: str, *targets: tuple[str, str]) -> Timeseries:
    panel = (
        Timeseries().title(title).unit(unit).description(description).datasource(DATASOURCE)
        .height(8).span(12).min(0)
    )  # fmt: skip
    for i, (expr, legend) in enumerate(targets):
        panel = panel.with_target(query(expr, legend, chr(ord("A") + i)))
    return panel


def stat(title: str, unit: str, description: str, expr: str) -> Stat:
    return (
        Stat().title(title).unit(unit).description(description).datasource(DATASOURCE)
        .height(4).span(6).with_target(query(expr, title, "A"))
    )  # fmt: skip


def base(uid: str, title: str) -> Dashboard:
    return (
        Dashboard(title).uid(uid).tags(["novacron-ml", "generated"]).refresh("30s")
        .time("now-1h", "now").timezone("browser")
        .with_variable(DatasourceVariable("datasource").label("Prometheus").type("prometheus"))
    )  # fmt: skip


def pipeline() -> Dashboard:
    return (
        base("novacron-pipeline", "novacron-ml · pipeline health")
        .with_row(Row("Flow"))
        .with_panel(stat("Workers up", "none", "Detect processes answering the scrape.",
                         f"sum(up{{{JOB}}})"))
        .with_panel(stat("Events/s", "ops", "Valid metric events parsed, all workers.",
                         f"sum(rate(novacron_events_total{{{JOB}}}[2m]))"))
        .with_panel(stat("Dead-letter share", "percentunit",
                         "Dead letters per input message (the NovacronDeadLetterRateHigh rule "
                         "fires past 1 %).",
                         f"sum(rate(novacron_dead_letters_total{{{JOB}}}[5m])) / "
                         f"clamp_min(sum(rate(novacron_messages_total{{{JOB}}}[5m])), 1e-9)"))
        .with_panel(stat("Output lost (1h)", "none",
                         "Output records given up after kafka.delivery_timeout_s (should be 0).",
                         f"sum(increase(novacron_output_lost_total{{{JOB}}}[1h]))"))
        .with_panel(series("Throughput", "ops", "Messages in, events parsed, windows scored.",
                           (f"sum by (instance) (rate(novacron_messages_total{{{JOB}}}[2m]))",
                            "messages {{instance}}"),
                           (f"sum by (instance) (rate(novacron_events_total{{{JOB}}}[2m]))",
                            "events {{instance}}"),
                           (f"sum by (instance) (rate(novacron_windows_total{{{JOB}}}[2m]))",
                            "windows {{instance}}")))
        .with_panel(series("Dead letters by reason", "ops",
                           "Every record the flow could not use, by its reason header.",
                           (f"sum by (reason) (rate(novacron_dead_letters_total{{{JOB}}}[5m]))",
                            "{{reason}}")))
        .with_panel(series("Parse batch time", "s", "Time to parse one input batch.",
                           ("histogram_quantile(0.99, sum by (le) "
                            f"(rate(novacron_parse_batch_seconds_bucket{{{JOB}}}[5m])))", "p99"),
                           ("histogram_quantile(0.5, sum by (le) "
                            f"(rate(novacron_parse_batch_seconds_bucket{{{JOB}}}[5m])))", "p50")))
        .with_panel(series("Series churn", "ops",
                           "Series evicted after features.idle_ttl_s; windowed events.",
                           (f"sum(rate(novacron_series_evicted_total{{{JOB}}}[5m]))", "evicted"),
                           (f"sum(rate(novacron_windowed_events_total{{{JOB}}}[5m]))",
                            "windowed events")))
        .with_panel(series("Consumer lag", "s",
                           "Seconds and records behind the input, per partition (the "
                           "NovacronConsumerLagHigh rule fires past 300 s for 10 minutes).",
                           (f"max by (topic, partition) (novacron_consumer_lag_seconds{{{JOB}}})",
                            "seconds {{topic}}/{{partition}}"),
                           (f"sum by (topic) (novacron_consumer_lag_messages{{{JOB}}})",
                            "records {{topic}}")))
        .with_panel(series("Detection latency after window close", "s",
                           "From a live window's close (end + allowed lateness) to its decision "
                           "(the seed's bound: 100 ms; rule NovacronDetectionLatencyHigh).",
                           ("histogram_quantile(0.99, sum by (le) "
                            f"(rate(novacron_detection_latency_seconds_bucket{{{JOB}}}[5m])))",
                            "p99"),
                           ("histogram_quantile(0.5, sum by (le) "
                            f"(rate(novacron_detection_latency_seconds_bucket{{{JOB}}}[5m])))",
                            "p50")))
        .with_panel(series("Inference time per model", "s",
                           "One ONNX Runtime call (a batch of windows), p99 by model.",
                           ("histogram_quantile(0.99, sum by (model, le) "
                            f"(rate(novacron_inference_seconds_bucket{{{JOB}}}[5m])))",
                            "{{model}}")))
        .with_row(Row("Output delivery"))
        .with_panel(series("Records written by topic", "ops",
                           "Output records the broker acknowledged.",
                           (f"sum by (topic) (rate(novacron_output_records_total{{{JOB}}}[2m]))",
                            "{{topic}}")))
        .with_panel(series("Delivery retries, cuts and losses", "ops",
                           "Retried while the broker was away; dead letters cut to fit; lost.",
                           (f"sum by (cause) (rate(novacron_output_retries_total{{{JOB}}}[5m]))",
                            "retry {{cause}}"),
                           (f"sum by (topic) (rate(novacron_output_cut_total{{{JOB}}}[5m]))",
                            "cut {{topic}}"),
                           (f"sum by (topic) (rate(novacron_output_lost_total{{{JOB}}}[5m]))",
                            "lost {{topic}}")))
        .with_row(Row("Input"))
        .with_panel(series("Fields and samples skipped", "ops",
                           "String/boolean fields, staleness markers; counter samples without "
                           "a rate; counter resets.",
                           (f"sum by (reason) (rate(novacron_fields_skipped_total{{{JOB}}}[5m]))",
                            "field {{reason}}"),
                           ("sum by (reason) (rate(novacron_cumulative_samples_skipped_total"
                            f"{{{JOB}}}[5m]))", "counter {{reason}}"),
                           (f"sum(rate(novacron_cumulative_resets_total{{{JOB}}}[5m]))",
                            "resets")))
    )  # fmt: skip


def detection() -> Dashboard:
    return (
        base("novacron-detection", "novacron-ml · anomaly detection")
        .with_row(Row("Alerts"))
        .with_panel(stat("Alerts (1h)", "none", "Alert records published in the last hour.",
                         f"sum(increase(novacron_alerts_total{{{JOB}}}[1h]))"))
        .with_panel(stat("Suppressed (1h)", "none",
                         "Alerts published with suppressed_by (maintenance windows, silences).",
                         f"sum(increase(novacron_alerts_suppressed_total{{{JOB}}}[1h]))"))
        .with_panel(stat("False positives (24h)", "none", "Operator verdicts: false positive.",
                         'sum(increase(novacron_feedback_total{verdict="false_positive",'
                         f"{JOB}}}[24h]))"))
        .with_panel(stat("Episodes resolved (1h)", "none", "Alert episodes closed.",
                         f"sum(increase(novacron_episodes_resolved_total{{{JOB}}}[1h]))"))
        .with_panel(series("Alerts by type", "opm", "Alerts per minute, by anomaly type.",
                           (f"sum by (type) (rate(novacron_alerts_total{{{JOB}}}[5m])) * 60",
                            "{{type}}")))
        .with_panel(series("Alerts by severity", "opm", "Alerts per minute, by severity.",
                           (f"sum by (severity) (rate(novacron_alerts_total{{{JOB}}}[5m])) * 60",
                            "{{severity}}")))
        .with_panel(series("Episodes resolved by type", "opm", "Episodes closed per minute.",
                           ("sum by (type) (rate(novacron_episodes_resolved_total"
                            f"{{{JOB}}}[5m])) * 60", "{{type}}")))
        .with_panel(series("Operator feedback", "opm", "Verdicts applied to series, by verdict.",
                           (f"sum by (verdict) (rate(novacron_feedback_total{{{JOB}}}[15m])) * 60",
                            "{{verdict}}"),
                           ("sum by (kind) (rate(novacron_alerts_suppressed_total"
                            f"{{{JOB}}}[15m])) * 60", "suppressed {{kind}}")))
        .with_panel(series("Load-residual tier by outcome", "ops",
                           "Windows of the series fitted on their host's load proxy "
                           "(detector.load_proxy): scored, warming, or why not (no_proxy: the "
                           "host has no such series; docs/DETECTION.md item 8).",
                           ("sum by (outcome) (rate(novacron_load_residual_windows_total"
                            f"{{{JOB}}}[5m]))", "{{outcome}}")))
    )  # fmt: skip


def tuning() -> Dashboard:
    job = 'job="novacron-tune"'
    return (
        base("novacron-tuning", "novacron-ml · auto-optimisation")
        .with_row(Row("Recommendations"))
        .with_panel(stat("Changes allowed (1h)", "none",
                         "Proposals the guardrails allowed (applied in apply mode).",
                         'sum(increase(novacron_tuning_recommendations_total{action="change",'
                         f'allowed="true",{job}}}[1h]))'))
        .with_panel(stat("Reverts (1h)", "none",
                         "Changes undone because the host did worse than the measured table "
                         "expected, or a cluster's consensus worse than before the change "
                         "(rule NovacronTuningReverts: 3 or more an hour).",
                         'sum(increase(novacron_tuning_recommendations_total{action="revert",'
                         f"{job}}}[1h]))"))
        .with_panel(stat("Blocked (1h)", "none", "Proposals a guardrail blocked.",
                         f"sum(increase(novacron_tuning_guardrail_blocks_total{{{job}}}[1h]))"))
        .with_panel(stat("Events/s", "ops", "Metric events the tuning flow reads.",
                         f"sum(rate(novacron_events_total{{{job}}}[2m]))"))
        .with_panel(series("Recommendations", "opm",
                           "Proposals per minute on optimizer.actions, by subsystem (a "
                           "host's compression or bandwidth predictor, a cluster's "
                           "consensus), mode, action and verdict.",
                           ("sum by (subsystem, mode, action, allowed) (rate("
                            f"novacron_tuning_recommendations_total{{{job}}}[15m])) * 60",
                            "{{subsystem}} {{mode}} {{action}} allowed={{allowed}}")))
        .with_panel(series("Blocked by guardrail", "opm",
                           "Which guardrail stopped the proposals: bounds, canary, cooldown, "
                           "safe set, safety (consensus: quorum and timeout rules), gain, "
                           "reverted.",
                           ("sum by (guardrail) (rate("
                            f"novacron_tuning_guardrail_blocks_total{{{job}}}[15m])) * 60",
                            "{{guardrail}}")))
        .with_panel(series("Dead letters by reason", "ops",
                           "Metrics and dwcp.config records the tuning flow could not use.",
                           (f"sum by (reason) (rate(novacron_dead_letters_total{{{job}}}[5m]))",
                            "{{reason}}")))
        .with_panel(series("Records written by topic", "ops",
                           "optimizer.actions and (apply mode) dwcp.config records acknowledged.",
                           (f"sum by (topic) (rate(novacron_output_records_total{{{job}}}[5m]))",
                            "{{topic}}")))
    )  # fmt: skip


def models() -> Dashboard:
    return (
        base("novacron-models", "novacron-ml · model performance")
        .with_row(Row("Serving"))
        .with_panel(stat("Models served", "none",
                         "Model versions this flow's processes serve (novacron_model_info).",
                         f"count(novacron_model_info{{{JOB}}})"))
        .with_panel(stat("Rejected versions (24h)", "none",
                         "Promoted versions a running flow refused (rule NovacronModelRejected; "
                         "the log says why).",
                         'sum(increase(novacron_model_reloads_total{outcome="rejected",'
                         f"{JOB}}}[24h]))"))
        .with_panel(stat("Worst input drift (PSI)", "none",
                         "Largest population stability index of any input of any model "
                         "against its training distribution (alert past 0.15).",
                         f"max(novacron_model_input_drift{{{JOB}}})"))
        .with_panel(stat("Forecast error drift", "percentunit",
                         "The forecaster's recent scaled one-step error over its starting "
                         "level, minus 1 (alert past 15 %).",
                         f"max(novacron_model_error_drift{{{JOB}}})"))
        .with_panel(series("Inference time p99", "s",
                           "One ONNX Runtime call (a batch of windows), by model.",
                           ("histogram_quantile(0.99, sum by (model, le) (rate("
                            f"novacron_inference_seconds_bucket{{{JOB}}}[5m])))", "{{model}}")))
        .with_panel(series("Versions swapped in and rejected", "none",
                           "Registry aliases followed: swaps and rejections per hour, by model.",
                           ("sum by (model, outcome) (increase("
                            f"novacron_model_reloads_total{{{JOB}}}[1h]))",
                            "{{model}} {{outcome}}")))
        .with_row(Row("Drift"))
        .with_panel(series("Input drift by model (worst input)", "none",
                           "PSI against the manifest's training reference; 0.1-0.25 moderate, "
                           "> 0.25 large.",
                           (f"max by (model) (novacron_model_input_drift{{{JOB}}})",
                            "{{model}}")))
        .with_panel(series("Forecast error drift", "percentunit",
                           "Recent scaled one-step error over the starting level, minus 1; "
                           "Page-Hinkley alarms below.",
                           (f"max by (model) (novacron_model_error_drift{{{JOB}}})",
                            "{{model}}"),
                           ("sum by (model) (increase("
                            f"novacron_model_drift_alarms_total{{{JOB}}}[1h]))",
                            "{{model}} alarms (1h)")))
        .with_panel(series("Tuning policy: states outside its training range", "percentunit",
                           "Share of the last 5,000 states the policy decided on with an input "
                           "past every training value, worst input (alert past 15 %).",
                           ('max by (model) (novacron_model_input_outside_ratio'
                            '{job="novacron-tune"})', "{{model}}")))
    )  # fmt: skip


CAPACITY = 'job="novacron-capacity"'


def capacity() -> Dashboard:
    per = "on (job, instance, cluster, resource)"
    return (
        base("novacron-capacity", "novacron-ml · capacity planning").time("now-7d", "now")
        .with_row(Row("Latest plan"))
        .with_panel(stat("Series URGENT", "none",
                         "Cluster resources whose calibrated upper bound reaches capacity "
                         "within capacity.urgent_days (7).",
                         f'sum(novacron_capacity_series{{urgency="URGENT",{CAPACITY}}})'))
        .with_panel(stat("Series HIGH", "none",
                         "Exhaustion within capacity.high_days (14).",
                         f'sum(novacron_capacity_series{{urgency="HIGH",{CAPACITY}}})'))
        .with_panel(stat("Worst forecast divergence", "percentunit",
                         "The previous plan against what happened since: sum|actual - "
                         "forecast| / sum|actual|, worst series (alert past 15 %).",
                         f"max(novacron_capacity_forecast_divergence{{{CAPACITY}}})"))
        .with_panel(stat("Last plan age", "s",
                         "Since the last plan that succeeded (alert past 26 h).",
                         f"time() - max(novacron_capacity_last_plan_timestamp_seconds"
                         f"{{{CAPACITY}}})"))
        .with_panel(series("Time to exhaustion", "s",
                           "From the history's end to the first hour whose upper bound "
                           "reaches the capacity; series that exhaust within the horizon.",
                           (f"novacron_capacity_time_to_exhaustion_seconds{{{CAPACITY}}} < +Inf",
                            "{{cluster}}/{{resource}}")))
        .with_panel(series("Utilisation and forecast / capacity", "percentunit",
                           "The last hourly mean and the 7-day upper bound as a share of the "
                           "configured capacity (1: full).",
                           (f"novacron_capacity_utilisation{{{CAPACITY}}} / {per} "
                            f"novacron_capacity_limit{{{CAPACITY}}}",
                            "{{cluster}}/{{resource}} now"),
                           (f'novacron_capacity_forecast{{horizon="7d",bound="upper",'
                            f"{CAPACITY}}} / {per} novacron_capacity_limit{{{CAPACITY}}}",
                            "{{cluster}}/{{resource}} 7d upper")))
        .with_row(Row("Forecast quality"))
        .with_panel(series("Forecast divergence of the previous plan", "percentunit",
                           "Per series, set at each plan once capacity.divergence_min_hours of "
                           "the previous forecast are covered (rule NovacronCapacityForecast"
                           "Divergence past 15 %).",
                           (f"novacron_capacity_forecast_divergence{{{CAPACITY}}}",
                            "{{cluster}}/{{resource}}")))
        .with_panel(series("Plans and plan time", "none",
                           "Plans per day by outcome, and the last plan's wall time (s).",
                           ("sum by (outcome) (increase("
                            f"novacron_capacity_plans_total{{{CAPACITY}}}[1d]))", "{{outcome}}"),
                           (f"max(novacron_capacity_plan_seconds{{{CAPACITY}}})",
                            "plan seconds")))
    )  # fmt: skip


DASHBOARDS = {"pipeline.json": pipeline, "detection.json": detection, "tuning.json": tuning,
              "models.json": models, "capacity.json": capacity}  # fmt: skip


def render() -> dict[str, str]:
    encoder = JSONEncoder(sort_keys=True, indent=2)
    return {name: encoder.encode(build().build()) + "\n" for name, build in DASHBOARDS.items()}


def expressions(document: str) -> list[str]:
    """Every PromQL expression of a rendered dashboard."""
    panels = json.loads(document)["panels"]
    return [t["expr"] for p in panels for t in p.get("targets", [])]


def main() -> None:
    OUT.mkdir(exist_ok=True)
    for name, text in render().items():
        (OUT / name).write_text(text)
        print(f"wrote {OUT / name} ({len(expressions(text))} queries)", file=sys.stderr)


if __name__ == "__main__":
    main()
