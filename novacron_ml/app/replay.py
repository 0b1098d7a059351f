"""The replay report: what a time range of a topic gave when run through the detect flow.

The records come from `dataflows.io.TimeRangeKafkaSource`; this module scores what the flow
made of them (alerts against labels, NAB on the window scores, detection delays, plots).
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass, field

from novacron_ml.app.evaluation import Evaluation, evaluate, fmt
from novacron_ml.app.nab import PROFILES, CorpusScore, score_corpus
from novacron_ml.app.plots import SeriesPlot
from novacron_ml.core.features import FeatureWindow
from novacron_ml.core.labels import AnomalyLabel
from novacron_ml.core.schema import (
    Alert,
    parse_rfc3339_ms,
    rfc3339_ms,
    series_key,
    split_series_key,
)
from operators.detection.series import WindowScore


@dataclass
class ReplayReport:
    from_ms: int
    to_ms: int
    messages: int
    events: int
    dead_letters: Counter[str]
    alerts: list[Alert]
    evaluation: Evaluation | None = None
    delays_s: list[float] = field(default_factory=list)
    nab: list[CorpusScore] = field(default_factory=list)
    """NAB of the alerts themselves: what users receive (a window scores 1 when it alerted)."""
    nab_probability: list[CorpusScore] = field(default_factory=list)
    """NAB of the alert decision's probability per window, threshold swept."""

    @property
    def median_delay_s(self) -> float | None:
        return statistics.median(self.delays_s) if self.delays_s else None

    def lines(self) -> list[str]:
        from novacron_ml.app.console import table

        out = [
            f"replayed {rfc3339_ms(self.from_ms)} .. {rfc3339_ms(self.to_ms)}: "
            f"{self.messages:,} messages, {self.events:,} valid events, "
            f"{sum(self.dead_letters.values()):,} dead letters, {len(self.alerts):,} alerts",
        ]
        if self.messages == 0:
            out.append("no records in this range: nothing was replayed")
            return out
        by = Counter((a.type, a.severity) for a in self.alerts)
        if by:
            rows = [[t, s, n] for (t, s), n in sorted(by.items())]
            out += ["", table(rows, ["type", "severity", "alerts"])]
        if self.evaluation is not None:
            ev = self.evaluation
            rows2 = [
                [
                    k,
                    s.alerts,
                    s.precision,
                    s.labels,
                    s.detected,
                    s.recall,
                    s.f1,
                ]
                for k, s in ev.by_type.items()
            ]
            out += [
                "",
                f"against {ev.labels} labelled anomalies in range: precision "
                f"{fmt(ev.precision)}, recall {fmt(ev.recall)}, F1 {fmt(ev.f1)}, type accuracy "
                f"{fmt(ev.type_accuracy)}",
                table(
                    rows2, ["type", "alerts", "precision", "anomalies", "detected", "recall", "F1"]
                ),
            ]
            if self.median_delay_s is not None:
                out.append(
                    f"detection delay (first alert window end - anomaly start): median "
                    f"{self.median_delay_s:.0f} s, max {max(self.delays_s):.0f} s"
                )
        if self.nab:
            out.append(
                "NAB score of the alerts (windows as rows, an alerted window scores 1; no sweep): "
                + ", ".join(f"{c.profile} {c.score:.1f}" for c in self.nab)
            )
        if self.nab_probability:
            out.append(
                "NAB score of the decision's probability (threshold swept): "
                + ", ".join(f"{c.profile} {c.score:.1f}" for c in self.nab_probability)
            )
        return out


def labels_in_range(labels: list[AnomalyLabel], from_ms: int, to_ms: int) -> list[AnomalyLabel]:
    return [lb for lb in labels if lb.start_ms <= to_ms and lb.end_ms >= from_ms]


def detection_delays(alerts: list[Alert], labels: list[AnomalyLabel]) -> list[float]:
    """Seconds from each detected anomaly's start to the end of its first matching alert window."""
    delays = []
    for lb in labels:
        ends = [
            parse_rfc3339_ms(a.window_end)
            for a in alerts
            if a.host == lb.host
            and parse_rfc3339_ms(a.window_start) < lb.end_ms
            and lb.start_ms < parse_rfc3339_ms(a.window_end)
        ]
        if ends:
            delays.append(max(0.0, (min(ends) - lb.start_ms) / 1000))
    return delays


def report(
    from_ms: int,
    to_ms: int,
    messages: int,
    events: int,
    dead: Counter[str],
    alerts: list[Alert],
    labels: list[AnomalyLabel] | None,
    scores: list[WindowScore] | None = None,
) -> ReplayReport:
    result = ReplayReport(from_ms, to_ms, messages, events, dead, alerts)
    if labels is not None:
        scoped = labels_in_range(labels, from_ms, to_ms)
        result.evaluation = evaluate(alerts, scoped)
        result.delays_s = detection_delays(alerts, scoped)
        if scores and scoped:
            alerted = {(a.series, parse_rfc3339_ms(a.window_start)) for a in alerts}
            result.nab = nab_scores(scores, scoped, alerted)
            result.nab_probability = nab_scores(scores, scoped)
    return result


def nab_scores(
    scores: list[WindowScore],
    labels: list[AnomalyLabel],
    alerted: set[tuple[str, int]] | None = None,
) -> list[CorpusScore]:
    """NAB scores of a replay: each series' windows are rows, labels are its anomaly windows.
    With `alerted` ((series, window start) of the alerts), a row scores 1 when it alerted
    and 0 otherwise, at a fixed threshold; else rows are the probability, threshold swept."""
    by_series: dict[str, list[WindowScore]] = {}
    for s in scores:
        by_series.setdefault(s.series, []).append(s)
    data = []
    for series, rows in sorted(by_series.items()):
        rows.sort(key=lambda r: r.start_ms)
        _cluster, host, metric = split_series_key(series)
        spans = []
        for lb in labels:
            if lb.host != host or metric not in lb.metrics:
                continue
            inside = [
                i for i, r in enumerate(rows) if r.start_ms < lb.end_ms and lb.start_ms < r.end_ms
            ]
            if inside:
                spans.append((inside[0], inside[-1]))
        if alerted is None:
            values = [r.anomaly_score for r in rows]
        else:
            values = [1.0 if (series, r.start_ms) in alerted else 0.0 for r in rows]
        data.append((series, values, spans))
    threshold = None if alerted is None else 0.5
    return [score_corpus(data, profile, threshold) for profile in PROFILES]


def affected_plots(
    windows: list[FeatureWindow], alerts: list[Alert], labels: list[AnomalyLabel] | None
) -> list[SeriesPlot]:
    """One plot per series that alerted or carries a label, in series order."""
    by_series: dict[str, list[FeatureWindow]] = {}
    for w in windows:
        by_series.setdefault(w.series, []).append(w)
    wanted = {a.series for a in alerts}
    for lb in labels or ():
        wanted |= {series_key(lb.cluster, lb.host, m) for m in lb.metrics}
    plots = []
    for series in sorted(wanted & set(by_series)):
        ws = sorted(by_series[series], key=lambda w: w.start_ms)
        _cluster, host, metric = split_series_key(series)
        plots.append(
            SeriesPlot(
                series,
                [w.start_ms for w in ws],
                [w["mean"] for w in ws],
                [
                    (lb.start_ms, lb.end_ms, lb.type)
                    for lb in labels or ()
                    if lb.host == host and metric in lb.metrics
                ],
                [a for a in alerts if a.series == series],
            )
        )
    return plots
