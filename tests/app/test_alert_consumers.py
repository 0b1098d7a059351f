"""Alert consumers: the webhook v4 payload, retries through receiver downtime, and the tail."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import msgspec
import pytest

from novacron_ml.app.alertmanager import WebhookSender, alert_consumer, forward, webhook_payload
from novacron_ml.core.kafka import produce
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


def test_payload_follows_the_webhook_v4_shape() -> None:
    body = webhook_payload([make_alert(0), make_alert(1, host="h2")])
    assert body["version"] == "4" and body["status"] == "firing" and len(body["alerts"]) == 2
    first = body["alerts"][0]
    assert first["labels"] == {
        "alertname": "novacron_latency_spike",
        "severity": "high",
        "host": "h1",
        "cluster": "c1",
        "type": "latency_spike",
        "metric": "latency_p99_ms",
    }
    assert {"summary", "score", "model_versions", "top_features"} <= set(first["annotations"])
    assert first["startsAt"] == rfc3339_ms(T0)
    assert first["endsAt"] == rfc3339_ms(T0 + 60_000 + 300_000)
    assert first["fingerprint"] == make_alert(0).alert_id[:16]
    assert body["commonLabels"]["cluster"] == "c1" and "host" not in body["commonLabels"]


class Receiver:
    """A local webhook receiver that is 'down' (HTTP 503) for its first `down_for` requests."""

    def __init__(self, down_for: int) -> None:
        self.down_for = down_for
        self.requests = 0
        self.bodies: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.requests += 1
                if outer.requests <= outer.down_for:
                    self.send_response(503)
                else:
                    outer.bodies.append(json.loads(body))
                    self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def fingerprints(self) -> list[str]:
        return [a["fingerprint"] for b in self.bodies for a in b["alerts"]]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver(down_for=3)
    yield r
    r.server.shutdown()


def test_sender_retries_with_backoff_until_the_receiver_is_back(receiver: Receiver) -> None:
    waits: list[float] = []
    sender = WebhookSender(
        receiver.url, initial_backoff_s=0.5, max_backoff_s=1.5, sleep=waits.append
    )
    sender.post(webhook_payload([make_alert(0)]))
    assert waits == [0.5, 1.0, 1.5]  # three refusals, capped exponential backoff
    assert receiver.fingerprints() == [make_alert(0).alert_id[:16]]
    assert (sender.stats.batches, sender.stats.failures) == (1, 3)


@pytest.mark.kafka
def test_bridge_loses_nothing_while_the_receiver_is_down(
    kafka_bootstrap: str, kafka_topics: dict[str, str], receiver: Receiver
) -> None:
    alerts = [make_alert(i) for i in range(120)]
    messages = [(a.alert_id.encode(), msgspec.json.encode(a)) for a in alerts]
    muted = msgspec.structs.replace(make_alert(500), suppressed_by="maintenance:upgrade")
    messages += [(muted.alert_id.encode(), msgspec.json.encode(muted))]  # kept, not forwarded
    produce(kafka_bootstrap, kafka_topics["alerts"], messages + messages[:10])  # 10 duplicates
    consumer = alert_consumer(kafka_bootstrap, kafka_topics["alerts"], "bridge-test", True)
    try:
        stats = forward(consumer, WebhookSender(receiver.url, initial_backoff_s=0.01), 50, 3.0)
    finally:
        consumer.close()
    assert sorted(receiver.fingerprints()) == sorted(a.alert_id[:16] for a in alerts)
    assert stats.failures == 3 and stats.batches < 120  # batched, retried, nothing lost


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
