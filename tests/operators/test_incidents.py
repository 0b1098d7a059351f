"""Incidents: a host's overlapping alert episodes, ranked by probable cause."""

from __future__ import annotations

import pickle

import msgspec

from novacron_ml.core.schema import Alert, Incident, rfc3339_ms
from operators.alerting.episodes import on_alert, resolved_record
from operators.alerting.incidents import HostIncidents

T0 = 1_764_460_800_000  # 2025-11-30T00:00:00Z
MINUTE = 60_000


def alert(
    metric: str, minute: int, z: float, host: str = "h1", kind: str = "latency_spike"
) -> Alert:
    return Alert(
        alert_id=f"{host}-{metric}-{minute}",
        type=kind,
        severity="high" if z > 20 else "low",
        host=host,
        cluster="c1",
        metric=metric,
        window_start=rfc3339_ms(T0 + minute * MINUTE),
        window_end=rfc3339_ms(T0 + (minute + 1) * MINUTE),
        value=z * 10,
        expected=10.0,
        score=z,
        detector="novelty",
    )


def test_overlapping_episodes_of_a_host_are_one_incident_led_by_the_first_mover() -> None:
    host = HostIncidents()
    episodes: dict[str, object] = {}
    published: list[Incident] = []
    tagged: list[Alert] = []

    def feed(a: Alert) -> None:
        episode, records = on_alert(episodes.get(a.metric), a)  # type: ignore[arg-type]
        episodes[a.metric] = episode
        for record in records:
            out, incident = host.add(record)
            tagged.append(out)
            if incident is not None:
                published.append(incident)

    feed(alert("memory_util", 10, 8.0, kind="resource_exhaustion"))  # the root moves first
    feed(alert("latency_p99_ms", 12, 40.0))  # bigger, but later
    feed(alert("latency_p99_ms", 13, 45.0))
    feed(alert("error_rate", 12, 30.0, kind="error_burst"))
    assert all(a.incident_id == tagged[0].incident_id for a in tagged)
    # published when it opened and when each metric joined, not for every alert
    assert [len(i.causes) for i in published] == [1, 2, 3]
    latest = published[-1]
    assert latest.status == "open" and latest.probable_cause == "memory_util"
    assert [c.metric for c in latest.causes] == ["memory_util", "latency_p99_ms", "error_rate"]
    root = latest.causes[0]
    assert root.rank == 1 and root.lead_s == 120.0 and root.type == "resource_exhaustion"
    assert latest.causes[1].peak_z == 45.0 and latest.causes[1].alerts == 2
    assert latest.severity == "high" and latest.alerts == 4
    assert pickle.loads(pickle.dumps(host)).members.keys() == host.members.keys()
    # resolves with its last episode, not before
    for metric in ("memory_util", "latency_p99_ms"):
        out, incident = host.add(resolved_record(episodes[metric]))  # type: ignore[arg-type]
        assert incident is None and out.incident_id == latest.incident_id
    out, incident = host.add(resolved_record(episodes["error_rate"]))  # type: ignore[arg-type]
    assert incident is not None and incident.status == "resolved"
    assert incident.incident_id == latest.incident_id and host.incident_id is None
    # the next fault on the host is a new incident, with its own (deterministic) id
    again, opened = host.add(on_alert(None, alert("cpu_util", 90, 9.0))[1][0])
    assert opened is not None and again.incident_id not in {None, latest.incident_id}
    assert HostIncidents().add(again)[0].incident_id == again.incident_id


def test_alerts_without_an_episode_are_not_grouped() -> None:
    host = HostIncidents()
    forecast = alert("latency_p99_ms", 5, 4.0, kind="prediction_error")
    out, incident = host.add(forecast)
    assert out is forecast and incident is None and host.incident_id is None


def test_a_root_that_drifted_before_it_alerted_leads_a_follower_that_jumped() -> None:
    host = HostIncidents()
    follower = alert("latency_p50_ms", 12, 30.0)  # jumps past the bar at once
    root = msgspec.structs.replace(
        alert("memory_util", 13, 7.0, kind="resource_exhaustion"),
        onset=rfc3339_ms(T0 + 9 * MINUTE),  # drifting since minute 9 (the detect step's CUSUM)
    )
    host.add(on_alert(None, follower)[1][0])
    _, incident = host.add(on_alert(None, root)[1][0])
    assert incident is not None and incident.probable_cause == "memory_util"
    first, second = incident.causes
    assert first.onset == root.onset and first.first_alert == root.window_start
    assert first.lead_s == 180.0 and second.lead_s == -180.0
    assert second.onset == second.first_alert == follower.window_start
    # onsets dated to the same window: the earlier first alert leads, though smaller
    tie = HostIncidents()
    early = alert("latency_p50_ms", 12, 7.0)
    late = msgspec.structs.replace(
        alert("memory_util", 13, 30.0, kind="resource_exhaustion"), onset=early.window_start
    )
    for a in (early, late):
        _, incident = tie.add(on_alert(None, a)[1][0])
    assert incident is not None and incident.probable_cause == "latency_p50_ms"
