"""Alert consumers: a readable live tail, and the bridge to Alertmanager's API.

The bridge (`novacron-ml alerts forward`) does what Prometheus does for its own alerts: it
POSTs a JSON array of alerts to Alertmanager's `/api/v2/alerts` (labels, annotations,
startsAt, endsAt, generatorURL) and re-sends every firing alert each `resend_s` with endsAt a
few intervals ahead, so Alertmanager keeps it firing, groups, inhibits and silences it, until
its episode ends; then it sends it once more, resolved (endsAt in the past). An episode ends
with its `resolved` record on the alerts topic (`operators.alerting.episodes`), or, for alerts
that carry none (the forecaster's), `stale_s` after its last record.

Delivery: a 2xx is delivered; a 4xx is Alertmanager refusing these alerts, which no retry
changes: they go to a dead-letter topic with the status and the answer's body, are counted,
and the bridge goes on; a 5xx or a connection error is retried with capped exponential
backoff. Kafka offsets are committed only after a batch was delivered or dead-lettered, so a
bridge that stops (or an Alertmanager that is down) loses nothing; `idle_timeout_s` is time
without new alerts and holds while retrying: the bridge then stops and reports what it could
not deliver.
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import msgspec
from confluent_kafka import Consumer, Producer

from novacron_ml.core.kafka import client_config
from novacron_ml.core.schema import Alert, parse_rfc3339_ms, rfc3339_ms, score_text

_ALERT = msgspec.json.Decoder(Alert)
_LABEL_NAME = re.compile(r"[^a-zA-Z0-9_]")
OWN_LABELS = ("alertname", "severity", "cluster", "host", "metric", "type", "detector")

DEFAULT_GENERATOR_URL = (
    "http://127.0.0.1:3000/d/novacron-anomalies/anomaly-detection"
    "?var-cluster={cluster}&var-host={host}&var-metric={metric}&from={from_ms}&to={to_ms}"
)
"""Where an alert's generatorURL points: the Grafana anomaly dashboard, at its series and
time (fields: cluster, host, metric, from_ms, to_ms; settable with --generator-url)."""


def am_labels(alert: Alert) -> dict[str, str]:
    """Alertmanager labels: an alert's identity there, the same for every record of it. The
    series' tags join them, renamed to Alertmanager's label syntax (`tag_` before a clash)."""
    labels = {
        "alertname": f"novacron_{alert.type}",
        "severity": alert.severity,
        "cluster": alert.cluster,
        "host": alert.host,
        "metric": alert.metric,
        "type": alert.type,
        "detector": alert.detector,
    }
    if alert.incident_id:
        labels["incident"] = alert.incident_id
    for key, value in (alert.labels or {}).items():
        name = _LABEL_NAME.sub("_", key)
        if not name or name[0].isdigit() or name in labels or name.startswith("__"):
            name = f"tag_{name}"
        labels[name] = value
    return labels


def am_annotations(alert: Alert) -> dict[str, str]:
    explanation = "; ".join(
        f"{c.feature}={c.value:.4g} (baseline {c.baseline:.4g}, z {c.z:+.1f})"
        for c in alert.explanation or ()
    )
    annotations = {
        "summary": (
            f"{alert.type.replace('_', ' ')} on {alert.cluster}/{alert.host}: {alert.metric} "
            f"= {alert.value:.4g} (expected {alert.expected:.4g})"
        ),
        "description": (
            f"{score_text(alert, 2)}"
            + ("" if alert.probability is None else f", probability {alert.probability:.3f}")
            + f" for the window {alert.window_start} to {alert.window_end}"
            + (
                f", deviating since {alert.onset}"
                if alert.onset and alert.onset != alert.window_start
                else ""
            )
            + (f"; top features: {explanation}" if explanation else "")
        ),
        "value": f"{alert.value:.6g}",
        "expected": f"{alert.expected:.6g}",
        "score": f"{alert.score:.3f}",
        "alert_id": alert.alert_id,
    }
    if alert.probability is not None:
        annotations["probability"] = f"{alert.probability:.4f}"
    if alert.tiers:
        annotations["tiers"] = json.dumps(alert.tiers, sort_keys=True)
    if explanation:
        annotations["top_features"] = explanation
    if alert.episode_id:
        annotations["episode_id"] = alert.episode_id
    if alert.onset:
        annotations["onset"] = alert.onset
    return annotations


@dataclass
class _Active:
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: str
    generator_url: str
    last_record: float
    """When (monotonic) its last record arrived."""
    sent: float = -1e18
    ends_at: str | None = None
    """Set once the episode ended: sent once more with this endsAt, then forgotten."""
    resolved: bool = False


@dataclass
class Episodes:
    """The alerts the bridge keeps firing in Alertmanager, by episode."""

    resend_s: float = 60.0
    stale_s: float = 600.0
    generator_url: str = DEFAULT_GENERATOR_URL
    clock: Callable[[], float] = time.monotonic
    active: dict[str, _Active] = field(default_factory=dict)

    def update(self, alert: Alert) -> None:
        key = alert.episode_id or alert.alert_id
        now = self.clock()
        labels = am_labels(alert)
        current = self.active.get(key)
        if current is not None and not current.resolved:
            # the label carries the episode's highest severity: it changes only when the
            # episode escalates, not with every window's own severity
            labels["severity"] = max(labels["severity"], current.labels["severity"], key=_rank)
        if alert.status == "resolved":
            if current is None:  # opened before this bridge started: resolve it all the same
                current = self.active[key] = self._new(alert, labels, now)
            current.ends_at = alert.ends_at or alert.window_end
            current.resolved = True
            current.sent = -1e18  # due now
            return
        if current is not None and not current.resolved and current.labels != labels:
            # the episode escalated: Alertmanager sees a new alert; the old labelset ends now
            current.ends_at = rfc3339_ms(int(time.time() * 1000))
            current.resolved = True
            current.sent = -1e18
            self.active[f"{key}|{current.labels['severity']}"] = current  # sent once, dropped
            current = None
        if current is None or current.resolved:
            self.active[key] = self._new(alert, labels, now)
        else:
            current.annotations = am_annotations(alert)
            current.generator_url = self._url(alert)
            current.last_record = now
            current.sent = -1e18  # news: send now

    def _new(self, alert: Alert, labels: dict[str, str], now: float) -> _Active:
        start = alert.episode_start or alert.window_start
        return _Active(labels, am_annotations(alert), start, self._url(alert), now)

    def _url(self, alert: Alert) -> str:
        """The generatorURL: the series an hour either side of its episode."""
        start = alert.episode_start or alert.window_start
        return self.generator_url.format(
            cluster=alert.cluster,
            host=alert.host,
            metric=alert.metric,
            from_ms=parse_rfc3339_ms(start) - 3_600_000,
            to_ms=parse_rfc3339_ms(alert.window_end) + 3_600_000,
        )

    def due(self) -> list[tuple[str, dict[str, Any]]]:
        """(key, Alertmanager alert) for every alert to send now."""
        now = self.clock()
        wall_ms = int(time.time() * 1000)
        out = []
        for key, a in self.active.items():
            if not a.resolved and now - a.last_record >= self.stale_s:
                a.resolved, a.ends_at, a.sent = True, rfc3339_ms(wall_ms), -1e18
            if now - a.sent < self.resend_s:
                continue
            ends = a.ends_at if a.resolved else rfc3339_ms(wall_ms + int(4 * self.resend_s * 1000))
            out.append(
                (
                    key,
                    {
                        "labels": a.labels,
                        "annotations": a.annotations,
                        "startsAt": a.starts_at,
                        "endsAt": ends,
                        "generatorURL": a.generator_url,
                    },
                )
            )
        return out

    def sent(self, keys: Iterable[str]) -> None:
        now = self.clock()
        for key in keys:
            a = self.active.get(key)
            if a is None:
                continue
            if a.resolved:
                del self.active[key]
            else:
                a.sent = now

    @property
    def firing(self) -> int:
        return sum(1 for a in self.active.values() if not a.resolved)


_SEVERITIES = ("low", "medium", "high", "critical")


def _rank(severity: str) -> int:
    return _SEVERITIES.index(severity) if severity in _SEVERITIES else -1


class Rejected(Exception):
    """Alertmanager answered 4xx: these alerts will never be accepted as they are."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body[:200]}")
        self.status = status
        self.body = body


@dataclass
class Delivery:
    posts: int = 0
    alerts: int = 0
    resolved: int = 0
    failures: int = 0
    """Attempts that failed with a 5xx or a connection error (retried)."""
    rejected: int = 0
    """Alerts Alertmanager refused (4xx): dead-lettered."""
    undelivered: int = 0
    """Alerts still to send when the bridge stopped."""


class AlertmanagerClient:
    """POSTs alert arrays to `{url}/api/v2/alerts`; retries 5xx and connection errors with
    capped exponential backoff until `deadline()` (monotonic) passes; a 4xx raises Rejected."""

    def __init__(
        self,
        url: str,
        timeout_s: float = 5.0,
        initial_backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        base = url.rstrip("/")
        self.url = base if base.endswith("/api/v2/alerts") else f"{base}/api/v2/alerts"
        self.timeout_s = timeout_s
        self.initial_backoff_s = initial_backoff_s
        self.max_backoff_s = max_backoff_s
        self.sleep = sleep
        self.stats = Delivery()

    def post(self, alerts: list[dict[str, Any]], deadline: Callable[[], bool]) -> bool:
        """True when delivered, False when `deadline()` came first; raises Rejected."""
        data = json.dumps(alerts).encode()
        backoff = self.initial_backoff_s
        while True:
            request = urllib.request.Request(
                self.url, data=data, headers={"Content-Type": "application/json"}, method="POST"
            )
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    if 200 <= response.status < 300:
                        self.stats.posts += 1
                        return True
            except urllib.error.HTTPError as err:
                if 400 <= err.code < 500:
                    body = err.read().decode("utf-8", "replace")
                    raise Rejected(err.code, body) from None
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError):
                pass
            self.stats.failures += 1
            if deadline():
                return False
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
    """A consumer of the alerts topic; a group with committed offsets resumes from them,
    a new group starts at the oldest alert (`from_beginning`) or at the newest."""
    consumer = Consumer(
        client_config(
            bootstrap,
            **{
                "group.id": group,
                "enable.auto.commit": "false",
                "auto.offset.reset": "earliest" if from_beginning else "latest",
            },
        )
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


class DeadLetters:
    """The bridge's dead-letter topic: refused alerts with Alertmanager's status and answer."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self._producer = Producer(client_config(bootstrap, **{"enable.idempotence": "true"}))
        self.failed = 0

    def send(self, alerts: list[dict[str, Any]], rejected: Rejected) -> None:
        def delivered(err: object, _msg: object) -> None:
            if err is not None:
                self.failed += 1

        headers: list[tuple[str, str | bytes | None]] = [
            ("novacron.reason", b"alertmanager_rejected"),
            ("novacron.status", str(rejected.status).encode()),
            ("novacron.detail", rejected.body.encode("utf-8", "replace")[:1024]),
        ]
        for alert in alerts:
            key = alert["annotations"].get("alert_id", "").encode() or None
            self._producer.produce(
                self.topic, json.dumps(alert).encode(), key, headers=headers, on_delivery=delivered
            )
        self._producer.flush(30)
        if self.failed:
            raise RuntimeError(f"{self.failed} refused alerts could not be written to {self.topic}")


def _one_by_one(
    client: AlertmanagerClient,
    due: list[tuple[str, dict[str, Any]]],
    deadline: Callable[[], bool],
    stats: Delivery,
) -> tuple[bool, list[tuple[Rejected, tuple[str, dict[str, Any]]]]]:
    """Post each alert alone; (all sent or refused before the deadline, the refused ones)."""
    refused: list[tuple[Rejected, tuple[str, dict[str, Any]]]] = []
    for item in due:
        try:
            if not client.post([item[1]], deadline):
                return False, refused
        except Rejected as rejected:
            stats.rejected += 1
            refused.append((rejected, item))
    return True, refused


def forward(
    consumer: Consumer,
    client: AlertmanagerClient,
    episodes: Episodes,
    dead_letters: DeadLetters | None = None,
    batch_size: int = 100,
    idle_timeout_s: float | None = None,
    on_reject: Callable[[Rejected, int], None] | None = None,
) -> Delivery:
    """Forward alerts until `idle_timeout_s` passes with nothing new (None: forever)."""
    dedupe = Deduper()
    idle = IdleTimer(idle_timeout_s)
    stats = client.stats
    while True:
        messages = consumer.consume(batch_size, 0.5)
        if messages:
            idle.touch()
            for a in decode_alerts(messages):
                if a.suppressed_by is None and dedupe.first_time(a.alert_id):
                    episodes.update(a)
        due = episodes.due()
        if due:
            try:
                delivered = client.post([alert for _key, alert in due], idle.expired)
                refused: list[tuple[Rejected, tuple[str, dict[str, Any]]]] = []
            except Rejected:
                # one alert can spoil a batch: send each alone, so only the refused ones go
                delivered, refused = _one_by_one(client, due, idle.expired, stats)
                for rejected, (_key, alert) in refused:
                    if dead_letters is not None:
                        dead_letters.send([alert], rejected)
                    if on_reject is not None:
                        on_reject(rejected, 1)
            if delivered is False:  # idle timeout while Alertmanager was away
                stats.undelivered = len(due)
                return stats
            ended = {key for key, a in episodes.active.items() if a.resolved}
            refused_keys = {key for _r, (key, _a) in refused}
            stats.resolved += sum(1 for k, _ in due if k in ended and k not in refused_keys)
            stats.alerts += sum(1 for k, _ in due if k not in ended and k not in refused_keys)
            episodes.sent(key for key, _ in due)  # refused ones too: never accepted as they are
        if messages:
            consumer.commit(asynchronous=False)  # only after delivery (or the dead letter)
        if idle.expired():
            return stats
