"""Alert consumers: a readable live tail, and a bridge to Alertmanager-compatible webhooks.

The bridge posts Alertmanager's webhook payload (version 4) to any receiver that accepts it,
in batches, retrying with exponential backoff. It commits its Kafka offsets only after a batch
was accepted, so alerts are not lost while the receiver is down, nor when the bridge restarts
(delivery is at-least-once; receivers dedupe by `fingerprint`, derived from `alert_id`).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import msgspec
from confluent_kafka import Consumer

from novacron_ml.core.schema import Alert, parse_rfc3339_ms, rfc3339_ms

_ALERT = msgspec.json.Decoder(Alert)


def webhook_alert(alert: Alert, resolve_after: timedelta) -> dict[str, Any]:
    """One alert in Alertmanager's webhook (v4) format."""
    ends = parse_rfc3339_ms(alert.window_end) + int(resolve_after.total_seconds() * 1000)
    return {
        "status": "firing",
        "labels": {
            "alertname": f"novacron_{alert.type}",
            "severity": alert.severity,
            "host": alert.host,
            "cluster": alert.cluster,
            "type": alert.type,
            "metric": alert.metric,
        },
        "annotations": {
            "summary": (
                f"{alert.type.replace('_', ' ')} on {alert.cluster}/{alert.host}: "
                f"{alert.metric} = {alert.value:.4g} (expected {alert.expected:.4g})"
            ),
            "score": f"{alert.score:.2f}",
            "model_versions": alert.detector,
            "top_features": f"mean={alert.value:.4g}",
        },
        "startsAt": alert.window_start,
        "endsAt": rfc3339_ms(ends),
        "generatorURL": "",
        "fingerprint": alert.alert_id[:16],
    }


def webhook_payload(
    alerts: list[Alert], receiver: str = "novacron-ml", resolve_after: timedelta | None = None
) -> dict[str, Any]:
    """A webhook v4 body for a batch of alerts."""
    items = [webhook_alert(a, resolve_after or timedelta(minutes=5)) for a in alerts]
    common = {
        k: v
        for k, v in (items[0]["labels"].items() if items else ())
        if all(i["labels"].get(k) == v for i in items)
    }
    return {
        "version": "4",
        "groupKey": "{}:{novacron}",
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": receiver,
        "groupLabels": {},
        "commonLabels": common,
        "commonAnnotations": {},
        "externalURL": "",
        "alerts": items,
    }


@dataclass
class Delivery:
    batches: int = 0
    alerts: int = 0
    failures: int = 0


class WebhookSender:
    """POSTs batches, retrying each until accepted (2xx) with capped exponential backoff."""

    def __init__(
        self,
        url: str,
        timeout_s: float = 5.0,
        initial_backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.initial_backoff_s = initial_backoff_s
        self.max_backoff_s = max_backoff_s
        self.sleep = sleep
        self.stats = Delivery()

    def post(self, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        backoff = self.initial_backoff_s
        while True:
            request = urllib.request.Request(
                self.url, data=data, headers={"Content-Type": "application/json"}, method="POST"
            )
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    if 200 <= response.status < 300:
                        self.stats.batches += 1
                        self.stats.alerts += len(body.get("alerts", ()))
                        return
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError):
                pass
            self.stats.failures += 1
            self.sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff_s)


class Deduper:
    """Remembers the last `size` alert ids (bounded)."""

    def __init__(self, size: int = 100_000) -> None:
        self.size = size
        self._seen: OrderedDict[str, None] = OrderedDict()

    def first_time(self, alert_id: str) -> bool:
        if alert_id in self._seen:
            return False
        self._seen[alert_id] = None
        if len(self._seen) > self.size:
            self._seen.popitem(last=False)
        return True


class IdleTimer:
    """Stops a consumer loop after `timeout_s` without messages; None never stops.

    Until the first message arrives the allowance is at least `first_wait_s`, since joining a
    consumer group can take seconds on a busy broker.
    """

    def __init__(self, timeout_s: float | None, first_wait_s: float = 30.0) -> None:
        self.timeout_s = timeout_s
        self.first_wait_s = first_wait_s
        self._since = time.monotonic()
        self._seen = False

    def touch(self) -> None:
        self._since = time.monotonic()
        self._seen = True

    def expired(self) -> bool:
        if self.timeout_s is None:
            return False
        limit = self.timeout_s if self._seen else max(self.timeout_s, self.first_wait_s)
        return time.monotonic() - self._since >= limit


def alert_consumer(bootstrap: str, topic: str, group: str, from_beginning: bool) -> Consumer:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "enable.auto.commit": "false",
            "auto.offset.reset": "earliest" if from_beginning else "latest",
        }
    )
    consumer.subscribe([topic])
    return consumer


def decode_alert(value: bytes | None) -> Alert | None:
    """An alert record's value, or None for anything else (skipped: the topic is ours)."""
    if not value:
        return None
    try:
        return _ALERT.decode(value)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


def decode_alerts(messages: Iterable[Any]) -> list[Alert]:
    alerts = (decode_alert(msg.value()) for msg in messages if msg.error() is None)
    return [a for a in alerts if a is not None]


def forward(
    consumer: Consumer,
    sender: WebhookSender,
    batch_size: int = 50,
    idle_timeout_s: float | None = None,
    receiver: str = "novacron-ml",
) -> Delivery:
    """Forward alerts until `idle_timeout_s` passes with nothing new (None: forever)."""
    dedupe = Deduper()
    idle = IdleTimer(idle_timeout_s)
    while not idle.expired():
        messages = consumer.consume(batch_size, 0.5)
        if not messages:
            continue
        idle.touch()
        alerts = [
            a
            for a in decode_alerts(messages)
            if a.suppressed_by is None and dedupe.first_time(a.alert_id)
        ]
        if alerts:
            sender.post(webhook_payload(alerts, receiver))
        consumer.commit(asynchronous=False)  # only after the receiver accepted the batch
    return sender.stats
