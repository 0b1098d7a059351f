"""Incidents: the alert episodes of one host that overlap in time, with a probable cause.

One fault moves several metrics of a host (a latency spike moves p50 and p99, exhausted
memory moves latency and errors after it). Each metric's alerts already form an episode
(`operators.alerting.episodes`); an incident is the connected run of overlapping episodes on
one host: it opens with the first episode's first alert, every episode that opens on the host
while the incident has an episode still open joins it, and it resolves when the last of its
episodes resolves. Its id is a hash of the host and the first alert's window, so a replay
gives the same ids.

The members are ranked as probable cause: earliest onset first (the metric that moved first
leads the others), then the earliest first alert, then the largest deviation (robust z, in
noise widths, comparable across metrics), then the most alerts. A member's onset is where its
deviation began (the alerts' `onset`, dated by a CUSUM in the detect step), not its first
alert: a root that drifts for a while before it crosses the alert bar still leads a follower
that jumps past it at once. Each member keeps its evidence: onset, first alert, how far it
led the median onset of the others, peak z with its value and expected value, alerts, type.

Every incident record is published on the `incidents` topic when the incident opens, when a
metric joins (the ranking may change) and when it resolves; each decision alert of the host is
tagged with its `incident_id` (the grouping label of the Alertmanager bridge).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

import msgspec

from novacron_ml.core.schema import (
    Alert,
    Cause,
    Incident,
    Severity,
    alert_id_for,
    parse_rfc3339_ms,
    rfc3339_ms,
)
from operators.alerting.episodes import RESOLVED

SEVERITY_ORDER = [s.value for s in Severity]


@dataclass
class Member:
    """One episode of the incident: a metric (series) and its alerts so far."""

    metric: str
    type: str
    onset_ms: int
    """The earliest estimated onset of its alerts' deviations (`Alert.onset`)."""
    peak_z: float
    value: float
    expected: float
    severity: str
    alerts: int = 1
    open: bool = True
    first_ms: int = 0
    """Window start of its first alert in the incident."""


@dataclass
class HostIncidents:
    """Per-host state (keyed by `cluster/host`): the open incident, if any. Picklable."""

    incident_id: str | None = None
    cluster: str = ""
    host: str = ""
    start_ms: int = 0
    members: dict[str, Member] = field(default_factory=dict)
    """By series key (a series whose episode resolved and reopened stays one member)."""

    def add(self, alert: Alert) -> tuple[Alert, Incident | None]:
        """Take one record of the host's alerts topic; returns it (tagged with the incident
        when it belongs to one) and the incident record to publish, if the incident opened,
        gained a member or resolved."""
        if alert.episode_id is None:  # forecaster alerts have no episode: not grouped
            return alert, None
        if alert.status == RESOLVED:
            return self._resolve(alert)
        start_ms = parse_rfc3339_ms(alert.window_start)
        changed = False
        if self.incident_id is None:
            self.incident_id = alert_id_for(f"{alert.cluster}/{alert.host}", start_ms, "incident")
            self.cluster, self.host, self.start_ms = alert.cluster, alert.host, start_ms
            self.members = {}
        onset_ms = min(start_ms, parse_rfc3339_ms(alert.onset)) if alert.onset else start_ms
        member = self.members.get(alert.series)
        if member is None:
            self.members[alert.series] = Member(
                alert.metric,
                alert.type,
                onset_ms,
                abs(alert.score),
                alert.value,
                alert.expected,
                alert.severity,
                first_ms=start_ms,
            )
            changed = True
        else:
            if onset_ms < member.onset_ms:
                member.onset_ms = onset_ms
                changed = True
            member.alerts += 1
            member.open = True
            if abs(alert.score) > member.peak_z:
                member.peak_z, member.value, member.expected = (
                    abs(alert.score),
                    alert.value,
                    alert.expected,
                )
            if SEVERITY_ORDER.index(alert.severity) > SEVERITY_ORDER.index(member.severity):
                member.severity = alert.severity
                changed = True
        tagged = msgspec.structs.replace(alert, incident_id=self.incident_id)
        return tagged, self.record(alert.window_end) if changed else None

    def _resolve(self, alert: Alert) -> tuple[Alert, Incident | None]:
        member = self.members.get(alert.series)
        if self.incident_id is None or member is None:
            return alert, None
        member.open = False
        tagged = msgspec.structs.replace(alert, incident_id=self.incident_id)
        if any(m.open for m in self.members.values()):
            return tagged, None
        record = self.record(alert.ends_at or alert.window_end, resolved=True)
        self.incident_id, self.members = None, {}
        return tagged, record

    def record(self, updated_at: str, resolved: bool = False) -> Incident:
        assert self.incident_id is not None
        causes = rank_causes(list(self.members.values()))
        severity = max((m.severity for m in self.members.values()), key=SEVERITY_ORDER.index)
        return Incident(
            incident_id=self.incident_id,
            cluster=self.cluster,
            host=self.host,
            status="resolved" if resolved else "open",
            started_at=rfc3339_ms(self.start_ms),
            updated_at=updated_at,
            severity=severity,
            probable_cause=causes[0].metric,
            causes=causes,
            alerts=sum(m.alerts for m in self.members.values()),
        )


def rank_causes(members: list[Member]) -> list[Cause]:
    """The members as probable causes, most probable first: earliest onset, then earliest
    first alert (onsets are dated to the window, so they tie), then largest peak z, then most
    alerts (and the metric name, so the order is stable)."""
    ordered = sorted(
        members, key=lambda m: (m.onset_ms, m.first_ms, -m.peak_z, -m.alerts, m.metric)
    )
    out = []
    for rank, m in enumerate(ordered, 1):
        others = [o.onset_ms for o in members if o is not m]
        lead_s = (statistics.median(others) - m.onset_ms) / 1000 if others else 0.0
        out.append(
            Cause(
                rank=rank,
                metric=m.metric,
                type=m.type,
                onset=rfc3339_ms(m.onset_ms),
                first_alert=rfc3339_ms(m.first_ms),
                lead_s=lead_s,
                peak_z=round(m.peak_z, 3),
                value=m.value,
                expected=m.expected,
                alerts=m.alerts,
            )
        )
    return out
