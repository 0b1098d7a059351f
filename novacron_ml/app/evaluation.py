"""Score alerts against ground-truth anomaly labels (the simulator's, or a user's file).

An alert matches a label when it is for the same host and its window overlaps the labelled
interval. Precision is over alerts, recall over labelled anomalies; an anomaly counts as typed
correctly when at least one matching alert carries the label's type.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from novacron_ml.core.labels import AnomalyLabel
from novacron_ml.core.schema import Alert, parse_rfc3339_ms


@dataclass
class TypeScore:
    labels: int = 0
    detected: int = 0
    typed: int = 0
    alerts: int = 0
    true_alerts: int = 0

    @property
    def recall(self) -> float | None:
        return self.detected / self.labels if self.labels else None

    @property
    def precision(self) -> float | None:
        return self.true_alerts / self.alerts if self.alerts else None

    @property
    def f1(self) -> float | None:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p is not None and r is not None and p + r else None


@dataclass
class Evaluation:
    alerts: int
    true_alerts: int
    labels: int
    detected: int
    typed: int
    by_type: dict[str, TypeScore] = field(default_factory=dict)
    missed: list[AnomalyLabel] = field(default_factory=list)
    false_alerts: list[Alert] = field(default_factory=list)

    @property
    def precision(self) -> float | None:
        """None when nothing alerted: there is no precision to speak of (shown as n/a)."""
        return self.true_alerts / self.alerts if self.alerts else None

    @property
    def recall(self) -> float | None:
        """None when nothing was injected (shown as n/a)."""
        return self.detected / self.labels if self.labels else None

    @property
    def type_accuracy(self) -> float | None:
        return self.typed / self.detected if self.detected else None

    @property
    def f1(self) -> float | None:
        p, r = self.precision, self.recall
        if p is None or r is None:
            return None
        return 2 * p * r / (p + r) if p + r else 0.0


def fmt(value: float | None, digits: int = 3) -> str:
    """A ratio for people: n/a when it is undefined (no alerts, no anomalies)."""
    return "n/a" if value is None else f"{value:.{digits}f}"


def evaluate(alerts: Iterable[Alert], labels: Iterable[AnomalyLabel]) -> Evaluation:
    """Match alerts to labels by host and overlapping time (the `resolved` records that close
    episodes are not alerts: they are left out)."""
    alert_list = [a for a in alerts if a.status != "resolved"]
    label_list = list(labels)
    by_host: dict[str, list[AnomalyLabel]] = defaultdict(list)
    for label in label_list:
        by_host[label.host].append(label)
    matched_types: dict[str, set[str]] = defaultdict(set)
    by_type: dict[str, TypeScore] = defaultdict(TypeScore)
    false_alerts: list[Alert] = []
    for alert in alert_list:
        start = parse_rfc3339_ms(alert.window_start)
        end = parse_rfc3339_ms(alert.window_end)
        hits = [lb for lb in by_host.get(alert.host, ()) if start < lb.end_ms and lb.start_ms < end]
        score = by_type[alert.type]
        score.alerts += 1
        if hits:
            score.true_alerts += 1
            for lb in hits:
                matched_types[lb.anomaly_id].add(alert.type)
        else:
            false_alerts.append(alert)
    detected = typed = 0
    missed: list[AnomalyLabel] = []
    for label in label_list:
        score = by_type[label.type]
        score.labels += 1
        types = matched_types.get(label.anomaly_id)
        if types:
            detected += 1
            score.detected += 1
            if label.type in types:
                typed += 1
                score.typed += 1
        else:
            missed.append(label)
    true_alerts = len(alert_list) - len(false_alerts)
    return Evaluation(
        alerts=len(alert_list),
        true_alerts=true_alerts,
        labels=len(label_list),
        detected=detected,
        typed=typed,
        by_type=dict(sorted(by_type.items())),
        missed=missed,
        false_alerts=false_alerts,
    )
