"""Suppression: maintenance windows and silences, matched against alerts in event time.

A suppressed alert is not dropped: it keeps its place on the alerts topic with
`suppressed_by` set to the reason (`maintenance:<name>` or `silence:<name>`), so the record of
what fired stays complete while consumers (tail, the Alertmanager bridge) skip it. The same
maintenance windows are meant for the capacity planner (issue 6).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from novacron_ml.core.schema import Alert, parse_rfc3339_ms
from novacron_ml.core.settings import SuppressionSettings

WEEK_MS = 7 * 86_400_000


@dataclass(frozen=True)
class Matcher:
    """Alert label equality; None matches anything."""

    clusters: frozenset[str] | None = None
    hosts: frozenset[str] | None = None
    types: frozenset[str] | None = None
    metrics: frozenset[str] | None = None
    severities: frozenset[str] | None = None

    def matches(self, alert: Alert) -> bool:
        return (
            (self.clusters is None or alert.cluster in self.clusters)
            and (self.hosts is None or alert.host in self.hosts)
            and (self.types is None or alert.type in self.types)
            and (self.metrics is None or alert.metric in self.metrics)
            and (self.severities is None or alert.severity in self.severities)
        )


@dataclass(frozen=True)
class Rule:
    """Suppress matching alerts whose window starts in [start_ms, end_ms) (weekly if set)."""

    kind: str
    """'maintenance' or 'silence'."""
    name: str
    start_ms: int
    end_ms: int
    matcher: Matcher
    weekly: bool = False

    def active_at(self, ts_ms: int) -> bool:
        if not self.weekly:
            return self.start_ms <= ts_ms < self.end_ms
        if ts_ms < self.start_ms:
            return False
        return (ts_ms - self.start_ms) % WEEK_MS < self.end_ms - self.start_ms

    @property
    def reason(self) -> str:
        return f"{self.kind}:{self.name}"


def suppression_for(alert: Alert, rules: Sequence[Rule]) -> str | None:
    """The reason the first matching rule gives, or None."""
    if not rules:
        return None
    ts = parse_rfc3339_ms(alert.window_start)
    for rule in rules:
        if rule.active_at(ts) and rule.matcher.matches(alert):
            return rule.reason
    return None


def rules_from_settings(settings: SuppressionSettings) -> list[Rule]:
    """The `suppression` settings group as rules: maintenance windows first, then silences
    (the detect flow and the capacity planner use the same)."""

    def opt(values: list[str] | None) -> frozenset[str] | None:
        return None if values is None else frozenset(values)

    rules = []
    for kind, entries in (("maintenance", settings.maintenance), ("silence", settings.silences)):
        for r in entries:
            rules.append(
                Rule(
                    kind=kind,
                    name=r.name,
                    start_ms=int(r.start.timestamp() * 1000),
                    end_ms=int(r.end.timestamp() * 1000),
                    weekly=r.weekly,
                    matcher=Matcher(
                        opt(r.clusters),
                        opt(r.hosts),
                        opt(r.types),
                        opt(r.metrics),
                        opt(r.severities),
                    ),
                )
            )
    return rules
