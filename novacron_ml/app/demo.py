"""`novacron-ml demo`: the whole detect flow on the embedded simulator, no Kafka needed."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dataflows.inprocess import run_in_process
from dataflows.io import MessageSource
from novacron_ml.app.console import Progress, alert_line, paint, table
from novacron_ml.app.evaluation import Evaluation, evaluate, fmt
from novacron_ml.app.malformed import with_malformed
from novacron_ml.core.deadletter import Reason
from novacron_ml.core.labels import AnomalyLabel
from novacron_ml.core.schema import Alert, Incident, parse_rfc3339_ms
from novacron_ml.core.settings import Settings
from novacron_ml.core.simulator import FleetConfig, FleetSimulator
from operators.ingest.parse import wall_clock_ms


@dataclass
class DemoResult:
    events: int
    messages: int
    seconds: float
    alerts: list[Alert]
    dead_letters: Counter[str]
    injected_bad: Counter[str]
    evaluation: Evaluation
    windows: int = 0
    incidents: list[Incident] = field(default_factory=list)
    """Each incident's last record."""
    labels: list[AnomalyLabel] = field(default_factory=list)

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


def run_demo(
    settings: Settings,
    fleet: FleetConfig,
    *,
    fmt: str = "json",
    bad_rate: float = 0.001,
    show_alerts: int = 40,
    quiet: bool = False,
) -> DemoResult:
    sim = FleetSimulator(fleet)
    injected: Counter[str] = Counter()
    clock = simulated_clock(sim)

    def note(reason: Reason, _payload: bytes) -> None:
        injected[reason.value] += 1

    def messages() -> Any:
        return with_malformed(sim.messages(fmt), bad_rate, fleet.seed, clock, note)

    if not quiet:
        hours = fleet.duration_s / 3600
        print(
            f"Simulating {fleet.hosts} hosts in {fleet.clusters} clusters, 10 metrics each, "
            f"{hours:g} h at {fleet.step_s:g} s steps: {sim.n_events:,} events, "
            f"{len(sim.labels)} injected anomalies (none in the first hour: every series "
            f"warms up first), ~{bad_rate:.2%} malformed messages.\n"
            f"Flow: parse -> {settings.window.length_s:g} s event-time windows -> features "
            f"-> anomaly probability ({', '.join(settings.detector.probability_tiers)}, "
            f"alerts at {settings.detector.fire_probability:g}; robust z past "
            f"{settings.detector.z_threshold:g} while a series warms up)"
            + (" + ONNX LSTM forecaster" if settings.forecast.enabled else "")
            + " -> alerts\n"
        )
    bar = Progress("demo", sim.n_events)
    try:
        run = run_in_process(
            settings, MessageSource(messages, 2000), progress=bar.update, clock=clock
        )
    finally:
        bar.close()
    if not quiet:
        # in event-time order (the flow emits each shard's windows as they close)
        ordered = sorted(run.alerts, key=lambda a: (a.window_start, a.host, a.metric))
        for alert in ordered[:show_alerts]:
            print(alert_line(alert))
        if len(ordered) > show_alerts:
            more = len(ordered) - show_alerts
            print(paint(f"... {more:,} further alerts are counted in the summary", "2"))
    return DemoResult(
        events=run.events,
        messages=run.messages,
        seconds=run.seconds,
        alerts=run.alerts,
        dead_letters=Counter(d.reason.value for d in run.dead_letters),
        injected_bad=injected,
        evaluation=evaluate(run.alerts, sim.labels),
        windows=run.windows_scored,
        incidents=list({i.incident_id: i for i in run.incidents}.values()),
        labels=list(sim.labels),
    )


def simulated_clock(sim: FleetSimulator) -> Callable[[], int]:
    """The demo's clock: the wall clock moved so that the simulation ends now, as it does
    without `--start`. An event's age and lead (`ingest.max_event_age_s`, `max_event_future_s`)
    and the injected too-old and too-far-ahead messages are measured against it, so a fleet
    simulated at a fixed past start (reproducible figures) is not dropped as `ts_past` once
    that start is a week old."""
    end_ms = sim.start_ms + sim.n_ticks * sim.step_ms
    offset = wall_clock_ms() - end_ms
    if abs(offset) < 60_000:  # the default start: the wall clock itself
        return wall_clock_ms
    return lambda: wall_clock_ms() - offset


def false_positive_windows(result: DemoResult) -> int:
    """Distinct (series, window) pairs with an alert overlapping no injected anomaly on its
    host: the numerator of the false-positive rate per window scored."""
    return len(
        {(a.cluster, a.host, a.metric, a.window_start) for a in result.evaluation.false_alerts}
    )


def incident_causes(result: DemoResult) -> tuple[int, int, int]:
    """(incidents, those with several metrics, those of them whose probable cause is right:
    the root metric of an injected anomaly on the host that overlaps the incident (the hard
    scenario labels one), else one of its metrics)."""
    multi = [i for i in result.incidents if len(i.causes) > 1]
    right = sum(cause_is_right(i, incident_labels(i, result.labels)) for i in multi)
    return len(result.incidents), len(multi), right


def incident_labels(incident: Incident, labels: list[AnomalyLabel]) -> list[AnomalyLabel]:
    """The injected anomalies on the incident's host that overlap it in time."""
    lo, hi = parse_rfc3339_ms(incident.started_at), parse_rfc3339_ms(incident.updated_at)
    return [
        label
        for label in labels
        if label.host == incident.host and label.start_ms < hi and label.end_ms > lo
    ]


def cause_is_right(incident: Incident, labels: list[AnomalyLabel]) -> bool:
    """The probable cause is the root metric of one of `labels` (`incident_labels`), or one
    of its metrics where the scenario labels no root."""
    cause = incident.probable_cause
    return any(cause == (label.root or cause) and cause in label.metrics for label in labels)


def summary(result: DemoResult) -> str:
    ev = result.evaluation
    fp_windows = false_positive_windows(result)
    lines = [
        "",
        paint("Summary", "1"),
        f"  events processed   {result.events:,} from {result.messages:,} messages in "
        f"{result.seconds:.1f} s ({result.events_per_second:,.0f} events/s, 1 worker)",
        f"  windows scored     {result.windows:,}, false-positive windows {fp_windows:,} "
        f"({fp_windows / max(result.windows, 1):.3%})",
        f"  dead letters       {sum(result.dead_letters.values()):,} "
        + (
            "(" + ", ".join(f"{k} {v}" for k, v in sorted(result.dead_letters.items())) + ")"
            if result.dead_letters
            else ""
        ),
        f"  malformed injected {sum(result.injected_bad.values()):,}",
        f"  alerts             {len(result.alerts):,}"
        + (
            f" ({lstm} from the LSTM forecaster's residuals and SLO forecasts)"
            if (lstm := sum(a.detector.startswith("lstm") for a in result.alerts))
            else ""
        ),
        f"  anomalies injected {ev.labels}, detected {ev.detected}",
        "  incidents          {:,} ({:,} with several metrics; probable cause right in {:,}: "
        "the injected root metric, or one of the anomaly's metrics)".format(
            *incident_causes(result)
        ),
        f"  precision {fmt(ev.precision)}   recall {fmt(ev.recall)}   F1 {fmt(ev.f1)}   "
        f"type accuracy {fmt(ev.type_accuracy)}",
        "",
    ]
    rows = [
        [kind, s.alerts, s.precision, s.labels, s.detected, s.recall]
        for kind, s in ev.by_type.items()
    ]
    lines.append(table(rows, ["type", "alerts", "precision", "anomalies", "detected", "recall"]))
    shapes = sorted({label.shape for label in result.labels if label.shape})
    if shapes:
        missed = {m.anomaly_id for m in ev.missed}
        rows = []
        for shape in shapes:
            of = [label for label in result.labels if label.shape == shape]
            found = sum(label.anomaly_id not in missed for label in of)
            rows.append([shape, len(of), found, found / len(of)])
        lines.append("")
        lines.append(table(rows, ["shape", "anomalies", "detected", "recall"]))
    lines.append(
        "\nPrecision: alerts whose window overlaps an injected anomaly on the same host. "
        "Recall: injected anomalies with at least one such alert."
    )
    return "\n".join(lines)
