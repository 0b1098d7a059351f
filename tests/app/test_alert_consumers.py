"""Alert consumers: the bridge's Alertmanager alerts, episodes, retries and dead letters, and
the tail (against a real broker; the real Alertmanager is tests/app/test_alertmanager.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import msgspec
import pytest

from novacron_ml.app.alertmanager import (
    AlertmanagerClient,
    DeadLetters,
    Episodes,
    Rejected,
    alert_consumer,
    am_annotations,
    am_labels,
    forward,
)
from novacron_ml.app.console import alert_line
from novacron_ml.core.kafka import delete_topics, ensure_topics, produce, read_topic
from novacron_ml.core.schema import Alert, alert_id_for, rfc3339_ms

T0 = 1_790_000_000_000


def make_alert(
    i: int, host: str = "h1", kind: str = "latency_spike", severity: str = "high"
) -> Alert:
    start = T0 + i * 60_000
    series = f"c1/{host}/latency_p99_ms"
    return Alert(
        alert_id=alert_id_for(series, start, kind),
        type=kind,
        severity=severity,
        host=host,
        cluster="c1",
        metric="latency_p99_ms",
        window_start=rfc3339_ms(start),
        window_end=rfc3339_ms(start + 60_000),
        value=400.0,
        expected=100.0,
        score=12.5,
        detector="robust_z",
    )


def test_labels_and_annotations_are_alertmanagers() -> None:
    alert = msgspec.structs.replace(
        make_alert(0), labels={"cpu": "cpu0", "host": "x", "k8s.pod": "p-1"}, probability=0.97
    )
    labels = am_labels(alert)
    assert labels == {
        "alertname": "novacron_latency_spike",
        "severity": "high",
        "cluster": "c1",
        "host": "h1",
        "metric": "latency_p99_ms",
        "type": "latency_spike",
        "detector": "robust_z",
        "cpu": "cpu0",
        "tag_host": "x",  # a tag that clashes with our own label keeps its value apart
        "k8s_pod": "p-1",  # Alertmanager's label syntax
    }
    notes = am_annotations(alert)
    assert {"summary", "description", "value", "expected", "score", "probability"} <= set(notes)
    assert notes["alert_id"] == alert.alert_id
    assert "onset" not in notes and "since" not in notes["description"]
    drifting = msgspec.structs.replace(alert, onset=rfc3339_ms(T0 - 180_000))
    notes = am_annotations(drifting)
    assert notes["onset"] == rfc3339_ms(T0 - 180_000)
    assert notes["description"].endswith(f"deviating since {rfc3339_ms(T0 - 180_000)}")
    since = rfc3339_ms(T0 - 180_000).replace("T", " ")[:19]
    assert alert_line(drifting).endswith(f"since {since}") and "since" not in alert_line(alert)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_firing_alerts_are_resent_until_their_episode_resolves() -> None:
    clock = Clock()
    episodes = Episodes(resend_s=60, stale_s=600, clock=clock)
    first = msgspec.structs.replace(make_alert(0), episode_id="e1", episode_start=rfc3339_ms(T0))
    episodes.update(first)
    ((key, sent),) = episodes.due()
    assert sent["startsAt"] == rfc3339_ms(T0) and sent["endsAt"] > rfc3339_ms(
        int(time.time() * 1000)
    )
    assert sent["generatorURL"].startswith("http://127.0.0.1:3000/")
    episodes.sent([key])
    assert episodes.due() == []  # not before the resend interval
    clock.now = 61
    assert [k for k, _ in episodes.due()] == ["e1"]  # re-sent, still firing
    episodes.sent(["e1"])
    resolved = msgspec.structs.replace(
        first, alert_id="r", status="resolved", ends_at=rfc3339_ms(T0 + 300_000)
    )
    episodes.update(resolved)
    ((_, last),) = episodes.due()
    assert last["endsAt"] == rfc3339_ms(T0 + 300_000) and last["labels"] == sent["labels"]
    episodes.sent(["e1"])
    assert episodes.active == {} and episodes.firing == 0


def test_an_episode_without_news_ends_after_the_stale_time() -> None:
    clock = Clock()
    episodes = Episodes(resend_s=60, stale_s=600, clock=clock)
    episodes.update(make_alert(0))  # a forecaster alert: no episode, no resolved record
    episodes.sent(k for k, _ in episodes.due())
    clock.now = 601
    ((_, last),) = episodes.due()
    assert last["endsAt"] <= rfc3339_ms(int(time.time() * 1000))
    episodes.sent([make_alert(0).alert_id])
    assert episodes.active == {}


class Receiver:
    """A local stand-in for Alertmanager's API that answers `status` to its first `bad`
    requests (503: down; 400: refusing), then 200."""

    def __init__(self, bad: int, status: int = 503) -> None:
        self.bad = bad
        self.status = status
        self.requests = 0
        self.bodies: list[list[dict[str, Any]]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.requests += 1
                if outer.requests <= outer.bad:
                    self.send_response(outer.status)
                    self.end_headers()
                    self.wfile.write(b'{"message":"start time must be before end time"}')
                    return
                assert self.path == "/api/v2/alerts"
                outer.bodies.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def alert_ids(self) -> list[str]:
        return [a["annotations"]["alert_id"] for b in self.bodies for a in b]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver(bad=3)
    yield r
    r.server.shutdown()


def test_client_retries_with_backoff_until_alertmanager_is_back(receiver: Receiver) -> None:
    waits: list[float] = []
    client = AlertmanagerClient(
        receiver.url, initial_backoff_s=0.5, max_backoff_s=1.5, sleep=waits.append
    )
    assert client.post(
        [{"labels": {"alertname": "x"}, "annotations": {"alert_id": "a"}}], lambda: False
    )
    assert waits == [0.5, 1.0, 1.5]  # three refusals, capped exponential backoff
    assert (client.stats.posts, client.stats.failures) == (1, 3)


def test_client_gives_up_at_the_deadline_and_4xx_is_not_retried() -> None:
    down = Receiver(bad=100)
    try:
        client = AlertmanagerClient(down.url, sleep=lambda _s: None)
        tries = iter(range(100))
        assert client.post([], lambda: next(tries) >= 4) is False
        assert client.stats.failures == 5
    finally:
        down.server.shutdown()
    refusing = Receiver(bad=1, status=400)
    try:
        with pytest.raises(Rejected) as info:
            AlertmanagerClient(refusing.url).post([], lambda: False)
        assert info.value.status == 400 and "start time" in info.value.body
        assert refusing.requests == 1
    finally:
        refusing.server.shutdown()


def alert_messages(alerts: list[Alert]) -> list[tuple[bytes, bytes]]:
    return [(a.alert_id.encode(), msgspec.json.encode(a)) for a in alerts]


@pytest.mark.kafka
def test_bridge_loses_nothing_while_alertmanager_is_down(
    kafka_bootstrap: str, kafka_topics: dict[str, str], receiver: Receiver
) -> None:
    alerts = [make_alert(i, host=f"h{i}") for i in range(120)]
    muted = msgspec.structs.replace(make_alert(500), suppressed_by="maintenance:upgrade")
    messages = alert_messages([*alerts, muted])  # the muted one is kept, not forwarded
    produce(kafka_bootstrap, kafka_topics["alerts"], messages + messages[:10])  # 10 duplicates
    consumer = alert_consumer(kafka_bootstrap, kafka_topics["alerts"], "bridge-test", True)
    client = AlertmanagerClient(receiver.url, initial_backoff_s=0.01)
    try:
        stats = forward(consumer, client, Episodes(), None, 50, 3.0)
    finally:
        consumer.close()
    assert sorted(set(receiver.alert_ids())) == sorted(a.alert_id for a in alerts)
    assert stats.failures == 3 and stats.undelivered == 0  # retried, nothing lost


class Refusing(Receiver):
    """Alertmanager's API that refuses (400) every request holding an alert of host `bad`."""

    def __init__(self) -> None:
        super().__init__(bad=0)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests += 1
                if any(a["labels"]["host"] == "bad" for a in body):
                    self.send_response(400)
                    self.end_headers()
                    self.wfile.write(b'{"message":"start time must be before end time"}')
                    return
                outer.bodies.append(body)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server.shutdown()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.mark.kafka
def test_refused_alerts_are_dead_lettered_and_the_bridge_goes_on(
    kafka_bootstrap: str, kafka_topics: dict[str, str]
) -> None:
    refusing = Refusing()
    dlq = f"{kafka_topics['alerts']}.dlq"
    ensure_topics(kafka_bootstrap, [dlq])
    try:
        bad, good = make_alert(0, host="bad"), make_alert(1, host="h2")
        produce(kafka_bootstrap, kafka_topics["alerts"], alert_messages([bad, good]))
        consumer = alert_consumer(kafka_bootstrap, kafka_topics["alerts"], "bridge-dlq", True)
        try:
            client = AlertmanagerClient(refusing.url)
            dead = DeadLetters(kafka_bootstrap, dlq)
            stats = forward(consumer, client, Episodes(), dead, 50, 2.0)
            later = make_alert(2, host="h3")
            produce(kafka_bootstrap, kafka_topics["alerts"], alert_messages([later]))
            stats = forward(consumer, client, Episodes(), dead, 50, 2.0)  # it goes on
        finally:
            consumer.close()
        assert stats.rejected == 1  # only the alert Alertmanager refuses, not its batch
        assert sorted(refusing.alert_ids()) == sorted([good.alert_id, later.alert_id])
        (record,) = read_topic(kafka_bootstrap, dlq, timeout_s=10)
        assert json.loads(record.value)["annotations"]["alert_id"] == bad.alert_id
        assert record.headers["novacron.status"] == b"400"
    finally:
        refusing.server.shutdown()
        delete_topics(kafka_bootstrap, [dlq])


@pytest.mark.kafka
def test_tail_prints_each_alert_once_and_filters(
    kafka_bootstrap: str, kafka_topics: dict[str, str]
) -> None:
    alerts = [
        make_alert(0),
        make_alert(1, host="h2"),
        make_alert(2, kind="error_burst", severity="low"),
    ]
    messages = [(a.alert_id.encode(), msgspec.json.encode(a)) for a in alerts]
    produce(kafka_bootstrap, kafka_topics["alerts"], messages + messages)
    env = dict(
        os.environ,
        NOVACRON_KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
        NOVACRON_TOPICS_ALERTS=kafka_topics["alerts"],
        NOVACRON_TOPICS_INCIDENTS=kafka_topics["incidents"],
    )
    cli = [
        sys.executable,
        "-m",
        "novacron_ml.cli",
        "alerts",
        "tail",
        "--from-beginning",
        "--timeout",
        "4",
    ]
    everything = subprocess.run(cli, env=env, capture_output=True, text=True, timeout=120)
    lines = everything.stdout.splitlines()[1:]
    assert everything.returncode == 0 and len(lines) == 3
    only = subprocess.run(
        [*cli, "--type", "latency_spike", "--host", "h2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert [ln for ln in only.stdout.splitlines()[1:]] == [lines[1]]


def test_the_severity_label_only_escalates_within_an_episode() -> None:
    clock = Clock()
    episodes = Episodes(resend_s=60, clock=clock)
    records = [
        msgspec.structs.replace(make_alert(i, severity=sev), episode_id="e1")
        for i, sev in enumerate(["medium", "high", "medium", "low"])
    ]
    sent: list[tuple[str, str, bool]] = []
    for record in records:
        episodes.update(record)
        due = episodes.due()
        for key, a in due:
            ended = a["endsAt"] <= rfc3339_ms(int(time.time() * 1000))
            sent.append((key, a["labels"]["severity"], ended))
        episodes.sent(k for k, _ in due)
    assert ("e1", "medium", False) in sent
    assert ("e1|medium", "medium", True) in sent  # the medium labelset ended at the escalation
    assert [s for _k, s, ended in sent if not ended][-1] == "high"  # and stays high
    assert sum(1 for _k, _s, ended in sent if ended) == 1
