"""The bridge against a real Alertmanager (Debian's prometheus-alertmanager, loopback only):
alerts arrive with their labels, are grouped, a silence made with amtool suppresses them, and
they resolve when their episode's resolved record comes."""

from __future__ import annotations

import shutil
import subprocess
import time
from typing import Any

import msgspec
import pytest

from novacron_ml.app.alertmanager import AlertmanagerClient, Episodes, alert_consumer, forward
from novacron_ml.core.kafka import produce
from novacron_ml.core.schema import Alert, alert_id_for, rfc3339_ms

pytestmark = pytest.mark.kafka

T0 = int(time.time() * 1000) // 60_000 * 60_000 - 600_000


def alert(host: str, cluster: str = "c1", status: str = "firing", i: int = 0) -> Alert:
    series = f"{cluster}/{host}/latency_p99_ms"
    start = T0 + i * 60_000
    episode = alert_id_for(series, T0, "latency_spike:episode")
    return Alert(
        alert_id=alert_id_for(series, start, "latency_spike" if status == "firing" else "r"),
        type="latency_spike",
        severity="high",
        host=host,
        cluster=cluster,
        metric="latency_p99_ms",
        window_start=rfc3339_ms(start),
        window_end=rfc3339_ms(start + 60_000),
        value=400.0,
        expected=100.0,
        score=12.5,
        detector="robust_z",
        status=status,
        episode_id=episode,
        episode_start=rfc3339_ms(T0),
        ends_at=rfc3339_ms(start + 60_000) if status == "resolved" else None,
    )


def bridge(kafka_bootstrap: str, topic: str, am_url: str, group: str) -> None:
    consumer = alert_consumer(kafka_bootstrap, topic, group, True)
    try:
        stats = forward(
            consumer, AlertmanagerClient(am_url), Episodes(resend_s=30.0), None, 100, 3.0
        )
    finally:
        consumer.close()
    assert stats.undelivered == 0 and stats.rejected == 0


def active(am: Any) -> dict[str, dict[str, Any]]:
    return {a["labels"]["host"]: a for a in am.get("/api/v2/alerts")}


def test_alerts_arrive_grouped_silenced_and_resolved(
    kafka_bootstrap: str, kafka_topics: dict[str, str], alertmanager: Any
) -> None:
    topic = kafka_topics["alerts"]
    drifting = rfc3339_ms(T0 - 180_000)  # the detect step dated h1's deviation earlier
    firing = [
        msgspec.structs.replace(alert("h1"), onset=drifting),
        alert("h2"),
        alert("h3", cluster="c2"),
    ]
    produce(kafka_bootstrap, topic, [(a.alert_id.encode(), msgspec.json.encode(a)) for a in firing])
    bridge(kafka_bootstrap, topic, alertmanager.url, "am-test")

    got = active(alertmanager)
    assert set(got) == {"h1", "h2", "h3"}
    h1 = got["h1"]
    assert h1["labels"]["alertname"] == "novacron_latency_spike"
    assert h1["labels"]["severity"] == "high" and h1["status"]["state"] == "active"
    assert h1["annotations"]["alert_id"] == firing[0].alert_id
    assert h1["annotations"]["onset"] == drifting
    assert f"deviating since {drifting}" in h1["annotations"]["description"]
    assert "onset" not in got["h2"]["annotations"]
    assert h1["startsAt"].startswith(rfc3339_ms(T0)[:19])
    assert h1["generatorURL"].startswith("http://127.0.0.1:3000/")
    groups = {
        g["labels"]["cluster"]: sorted(a["labels"]["host"] for a in g["alerts"])
        for g in alertmanager.get("/api/v2/alerts/groups")
    }
    assert groups == {"c1": ["h1", "h2"], "c2": ["h3"]}  # grouped by alertname and cluster

    amtool = shutil.which("amtool")
    assert amtool is not None
    subprocess.run(
        [amtool, "silence", "add", "host=h2", "--duration=1h", "--comment=maintenance",
         "--author=test", f"--alertmanager.url={alertmanager.url}"],
        check=True, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while active(alertmanager)["h2"]["status"]["state"] != "suppressed":
        assert time.monotonic() < deadline, "the silence never applied"
        time.sleep(0.2)
    assert active(alertmanager)["h2"]["status"]["silencedBy"]
    assert active(alertmanager)["h1"]["status"]["state"] == "active"

    resolved = alert("h1", status="resolved", i=2)
    produce(kafka_bootstrap, topic, [(resolved.alert_id.encode(), msgspec.json.encode(resolved))])
    bridge(kafka_bootstrap, topic, alertmanager.url, "am-test")  # a new bridge, same group
    deadline = time.monotonic() + 10
    while "h1" in active(alertmanager):
        assert time.monotonic() < deadline, "h1 never resolved"
        time.sleep(0.2)
    assert {"h2", "h3"} <= set(active(alertmanager))
    deadline = time.monotonic() + 15
    while not any(
        n["status"] == "resolved" and any(a["labels"]["host"] == "h1" for a in n["alerts"])
        for n in alertmanager.notifications
    ):
        assert time.monotonic() < deadline, "Alertmanager never notified h1's resolution"
        time.sleep(0.2)


def test_an_incidents_alerts_reach_alertmanager_as_one_group_by_the_shipped_route(
    kafka_bootstrap: str, kafka_topics: dict[str, str], alertmanager_shipped_route: Any
) -> None:
    """The incident step's label through the real Alertmanager, routed as
    deploy/alertmanager/alertmanager.yml routes (group_by cluster and incident): one fault's
    alerts on two metrics of h1 are one group; another host's incident is another."""
    am = alertmanager_shipped_route
    topic = kafka_topics["alerts"]
    p99 = msgspec.structs.replace(alert("h1"), incident_id="inc-h1")
    p50 = msgspec.structs.replace(
        p99,
        alert_id=alert_id_for("c1/h1/latency_p50_ms", T0, "latency_spike"),
        metric="latency_p50_ms",
        episode_id=alert_id_for("c1/h1/latency_p50_ms", T0, "latency_spike:episode"),
    )
    other = msgspec.structs.replace(alert("h2"), incident_id="inc-h2")
    sent = [p99, p50, other]
    produce(kafka_bootstrap, topic, [(a.alert_id.encode(), msgspec.json.encode(a)) for a in sent])
    bridge(kafka_bootstrap, topic, am.url, "am-incidents")
    labels = [a["labels"] for a in am.get("/api/v2/alerts")]
    assert sorted(lb["incident"] for lb in labels) == ["inc-h1", "inc-h1", "inc-h2"]
    groups = {
        g["labels"]["incident"]: sorted(a["labels"]["metric"] for a in g["alerts"])
        for g in am.get("/api/v2/alerts/groups")
    }
    assert groups == {"inc-h1": ["latency_p50_ms", "latency_p99_ms"], "inc-h2": ["latency_p99_ms"]}
