"""Delivery-checked output: every record the flow writes ends delivered, cut to fit, moved to the
dead-letter topic, or counted as lost and logged; never silently dropped.

`CheckedProducer.send(records)` blocks until each record of the batch has one of those ends
(the Bytewax sink in `dataflows.io` calls it once per output batch, so a batch is settled
before the flow's next epoch, and a recovery snapshot never covers unsettled output):

- delivered: counted in `novacron_output_records_total{topic}`;
- the broker away, no leader, a transport error: librdkafka retries in order until the
  producer's `message.timeout.ms`, which is `kafka.delivery_timeout_s` (0: no bound) unless the
  configuration sets its own; a record that timed out before the bound is produced again, with
  a pause (`novacron_output_retries_total{cause}`, the first of each cause logged);
- too large for its topic (`max.message.bytes`): a dead letter is cut to what the topic
  accepts (header `novacron.truncated_from`, `novacron_output_cut_total{topic}`); any other
  record goes to the dead-letter topic whole or cut, reason `delivery_failed`, with the topic it
  was meant for in `novacron.source` (`output:<topic>`: an oversized incident is still kept);
  records refused only because they shared a batch with a too-large one are sent again alone;
- refused for good (authorisation, an unknown topic, ...): to the dead-letter topic as above;
- what none of that saves, including retriable failures past the bound, is counted in
  `novacron_output_lost_total{topic,cause}` and logged once per (topic, cause), with the cause.

The design note is docs/MESSAGES.md "Delivery".
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, ConfigResource

from novacron_ml.core import metrics
from novacron_ml.core.deadletter import DeadLetter, Reason

LOG = logging.getLogger("novacron.delivery")

TOO_LARGE = frozenset({KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE})
"""Broker or client refusals of a record's size."""

RETRIABLE = frozenset(
    {
        KafkaError._MSG_TIMED_OUT,
        KafkaError._TIMED_OUT,
        KafkaError._TIMED_OUT_QUEUE,
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError.NOT_ENOUGH_REPLICAS,
        KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.NOT_LEADER_FOR_PARTITION,
    }
)
"""Failures that a later attempt may not meet (besides those librdkafka marks retriable)."""

SIZE_MARGIN_BYTES = 512
"""Room left for the record batch's framing when a payload is cut to a topic's limit."""


@dataclass
class OutRecord:
    """One record to write. `send` reads only these attributes, so Bytewax's
    `KafkaSinkMessage` (same names; its topic must be set) is passed as it is."""

    topic: str
    value: bytes | None
    key: bytes | None = None
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    timestamp: int = 0
    cut_once: bool = False
    """Already retried alone or cut once: a further size refusal cuts (further)."""


def _size(record: Any) -> int:
    return (
        len(record.value or b"")
        + len(record.key or b"")
        + sum(len(k) + len(v or b"") for k, v in record.headers)
    )


@dataclass
class SendReport:
    """What one `send` did, by topic (the counters hold the running totals)."""

    delivered: Counter[str] = field(default_factory=Counter)
    retried: int = 0
    cut: int = 0
    dead_lettered: int = 0
    lost: Counter[str] = field(default_factory=Counter)


def _error_of(exc: KafkaException) -> KafkaError:
    err = exc.args[0] if exc.args else None
    return err if isinstance(err, KafkaError) else KafkaError(KafkaError._FAIL, str(exc))


class CheckedProducer:
    """A confluent-kafka producer whose every record is accounted for (see the module doc).

    `config` is the librdkafka producer configuration (bootstrap servers, security settings,
    idempotence); `dlq_topic` receives records their own topic refused for good.
    """

    def __init__(
        self,
        config: dict[str, Any],
        dlq_topic: str | None,
        *,
        delivery_timeout_s: float = 900.0,
        retry_pause_s: float = 1.0,
        wait_log_s: float = 30.0,
    ) -> None:
        self._config = dict(config)
        # librdkafka keeps retrying a record in order until message.timeout.ms: make that our
        # bound (0 is librdkafka's "no bound" too) unless the configuration sets its own.
        self._config.setdefault("message.timeout.ms", str(int(delivery_timeout_s * 1000)))
        # Reports of failures only: a delivered record costs no Python call (delivered = sent
        # minus failed), which keeps the checked sink near the unchecked loop's speed.
        self._config["delivery.report.only.error"] = True
        self._producer = Producer(self._config)
        self.dlq_topic = dlq_topic
        self.delivery_timeout_s = delivery_timeout_s
        self.retry_pause_s = retry_pause_s
        self.wait_log_s = wait_log_s
        self._limits: dict[str, int] = {}
        self._logged: set[tuple[str, str]] = set()
        self._failed: list[tuple[int, OutRecord, KafkaError]] = []
        self._reported: list[tuple[tuple[str, bytes | None, bytes | None], KafkaError]] = []

    # -- librdkafka callbacks --------------------------------------------------------------
    def _on_failure(self, err: KafkaError | None, msg: Any) -> None:
        if err is not None:
            self._reported.append(((msg.topic(), msg.key(), msg.value()), err))

    def _match_reported(self, records: list[OutRecord]) -> None:
        """Failed records, found by content among those just produced: delivery reports carry
        no headers, so the record itself (with its headers) is what is tried next."""
        if not self._reported:
            return
        where: dict[tuple[str, bytes | None, bytes | None], list[int]] = {}
        for i, r in enumerate(records):
            where.setdefault((r.topic, r.key, r.value), []).append(i)
        for content, err in self._reported:
            matches = where.get(content)
            if not matches:  # not one of this round's records: nothing to retry, but counted
                metrics.OUTPUT_LOST.labels(topic=content[0], cause=err.name()).inc()
                LOG.error("output: an unmatched failed record for %s (%s)", content[0], err.str())
                continue
            i = matches.pop(0)
            self._failed.append((i, records[i], err))
        self._reported = []

    # -- public ----------------------------------------------------------------------------
    def send(self, records: Iterable[OutRecord]) -> SendReport:
        """Write `records` and return when each one is settled (module doc)."""
        report = SendReport()
        deadline = (
            time.monotonic() + self.delivery_timeout_s if self.delivery_timeout_s > 0 else None
        )
        pending = list(records)
        alone = False
        while pending:
            self._produce_all(pending, deadline, alone)
            self._drain(deadline)
            self._match_reported(pending)
            failures, self._failed = sorted(self._failed, key=lambda f: f[0]), []
            report.delivered.update(Counter(r.topic for r in pending))
            report.delivered.subtract(Counter(r.topic for _, r, _ in failures))
            pending = []
            for _, record, err in failures:
                pending.extend(self._settle(record, err, deadline, report))
            if pending:
                # After a size refusal each record goes in a batch of its own: a batch that is
                # too large fails every record in it, and the small ones must not share the
                # next batch with a large one.
                alone = any(e.code() in TOO_LARGE for _, _, e in failures)
                report.retried += len(pending)
                if not alone:
                    time.sleep(self.retry_pause_s)
        report.delivered = +report.delivered  # drop topics with nothing delivered
        for topic, n in report.delivered.items():
            metrics.OUTPUT_RECORDS.labels(topic=topic).inc(n)
        return report

    def close(self) -> None:
        self.send([])

    def __len__(self) -> int:
        return len(self._producer)

    # -- internals -------------------------------------------------------------------------
    def _produce_all(self, records: list[OutRecord], deadline: float | None, alone: bool) -> None:
        for index, record in enumerate(records):
            while True:
                try:
                    self._producer.produce(
                        record.topic,
                        value=record.value,
                        key=record.key,
                        headers=record.headers,  # type: ignore[arg-type]
                        timestamp=record.timestamp,
                        on_delivery=self._on_failure,
                    )
                    break
                except BufferError:
                    # The local queue is full (the broker is slow or away): wait for room.
                    self._producer.poll(0.1)
                    if deadline is not None and time.monotonic() > deadline:
                        full = KafkaError(KafkaError._QUEUE_FULL, "local queue full")
                        self._failed.append((index, record, full))
                        break
                except KafkaException as exc:
                    # Refused before it left: too large for the client's message.max.bytes, or
                    # an unknown topic or partition.
                    self._failed.append((index, record, _error_of(exc)))
                    break
            if alone:
                self._producer.flush(5.0)
            elif index % 64 == 0:
                self._producer.poll(0)

    def _drain(self, deadline: float | None) -> None:
        """Wait until librdkafka has reported every record; past the deadline, purge."""
        started = last_log = time.monotonic()
        while len(self._producer) > 0:
            self._producer.flush(1.0)
            now = time.monotonic()
            if len(self._producer) and now - last_log >= self.wait_log_s:
                last_log = now
                LOG.warning(
                    "output: %d records waiting for the broker for %.0f s (client log: "
                    "observability.client_log)",
                    len(self._producer),
                    now - started,
                )
            if deadline is not None and now > deadline and len(self._producer):
                # Queued records fail now (_PURGE_QUEUE, counted lost); an in-flight request
                # cannot be purged with idempotence and ends at request.timeout.ms.
                self._producer.purge(in_queue=True, in_flight=False)
                self._producer.flush(5.0)

    def _settle(
        self, record: OutRecord, err: KafkaError, deadline: float | None, report: SendReport
    ) -> list[OutRecord]:
        """What to try next for a failed record (an empty list when it is settled)."""
        code = err.code()
        if err.fatal():
            # An idempotent producer's fatal error (e.g. a sequence gap after an outage): the
            # producer cannot go on; a new one re-sends what is pending.
            self._log_once(record.topic, err, "a new producer is started")
            self._producer = Producer(self._config)
            return [record]
        if code in TOO_LARGE:
            return self._too_large(record, err, report)
        past = deadline is not None and time.monotonic() > deadline
        if (err.retriable() or code in RETRIABLE) and not past:
            metrics.OUTPUT_RETRIES.labels(cause=err.name()).inc()
            self._log_once(record.topic, err, "retrying")
            return [record]
        if (
            code in RETRIABLE
            or err.retriable()
            or code
            in (
                KafkaError._PURGE_QUEUE,
                KafkaError._PURGE_INFLIGHT,
                KafkaError._QUEUE_FULL,
            )
        ):
            # Past the bound: the broker stayed away; the dead-letter topic is on it too.
            return self._lose(record, err, report, "kafka.delivery_timeout_s passed")
        return self._to_dead_letters(record, err, report)

    def _too_large(self, record: OutRecord, err: KafkaError, report: SendReport) -> list[OutRecord]:
        limit = self._limit(record.topic)
        if _size(record) + SIZE_MARGIN_BYTES <= limit and not getattr(record, "cut_once", False):
            # It fits alone: it was refused with the batch it shared with a larger record.
            return [
                OutRecord(
                    record.topic,
                    record.value,
                    record.key,
                    list(record.headers),
                    record.timestamp,
                    True,
                )
            ]
        if record.topic != self.dlq_topic:
            return self._to_dead_letters(record, err, report)
        value = record.value or b""
        room = limit - (_size(record) - len(value)) - SIZE_MARGIN_BYTES
        target = room if len(value) > room else len(value) // 2
        if target <= 0:
            return self._lose(record, err, report, "nothing of it fits the topic")
        headers = [(k, v) for k, v in record.headers if k != "novacron.truncated_from"]
        original = dict(record.headers).get("novacron.truncated_from", str(len(value)).encode())
        headers.append(("novacron.truncated_from", original))
        metrics.OUTPUT_CUT.labels(topic=record.topic).inc()
        report.cut += 1
        self._log_once(record.topic, err, f"cut to {target} bytes")
        return [
            OutRecord(record.topic, value[:target], record.key, headers, record.timestamp, True)
        ]

    def _to_dead_letters(
        self, record: OutRecord, err: KafkaError, report: SendReport
    ) -> list[OutRecord]:
        if self.dlq_topic is None or record.topic == self.dlq_topic:
            return self._lose(record, err, report, "no dead-letter topic takes it")
        letter = DeadLetter(
            Reason.DELIVERY_FAILED,
            f"{err.name()}: {err.str()}",
            record.value or b"",
            record.key,
            source=f"output:{record.topic}",
        )
        headers = letter.headers()
        metrics.DEAD_LETTERS.labels(reason=Reason.DELIVERY_FAILED.value).inc()
        report.dead_lettered += 1
        self._log_once(record.topic, err, f"sent to {self.dlq_topic} as delivery_failed")
        return [OutRecord(self.dlq_topic, letter.payload, record.key, headers, record.timestamp)]

    def _lose(
        self, record: OutRecord, err: KafkaError, report: SendReport, why: str
    ) -> list[OutRecord]:
        metrics.OUTPUT_LOST.labels(topic=record.topic, cause=err.name()).inc()
        report.lost[record.topic] += 1
        key = (record.topic, f"lost:{err.name()}")
        if key not in self._logged:
            self._logged.add(key)
            LOG.error(
                "output: a record for %s is LOST (%s: %s; %s); counted in "
                "novacron_output_lost_total",
                record.topic,
                err.name(),
                err.str(),
                why,
            )
        return []

    def _log_once(self, topic: str, err: KafkaError, action: str) -> None:
        key = (topic, err.name())
        if key not in self._logged:
            self._logged.add(key)
            LOG.warning("output to %s failed: %s: %s; %s", topic, err.name(), err.str(), action)

    def _limit(self, topic: str) -> int:
        """The most bytes a record of `topic` may have: the topic's `max.message.bytes`, or
        half of what the client allows when the topic's configuration cannot be read."""
        if topic not in self._limits:
            client_max = int(self._config.get("message.max.bytes", 1_000_000))
            limit = client_max
            try:
                admin = AdminClient(_admin_config(self._config))
                resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
                described = admin.describe_configs([resource], request_timeout=10)
                entries = described[resource].result(timeout=15)
                limit = min(client_max, int(entries["max.message.bytes"].value))
            except Exception as exc:  # any failure: fall back to halving
                LOG.warning("output: cannot read %s's max.message.bytes (%s)", topic, exc)
                limit = client_max // 2
            self._limits[topic] = limit
        return self._limits[topic]


_PRODUCER_ONLY = frozenset(
    {
        "enable.idempotence",
        "linger.ms",
        "compression.type",
        "acks",
        "queue.buffering.max.messages",
        "queue.buffering.max.kbytes",
        "message.timeout.ms",
        "delivery.timeout.ms",
        "batch.size",
        "batch.num.messages",
        "retries",
        "retry.backoff.ms",
        "max.in.flight.requests.per.connection",
    }
)


def _admin_config(config: dict[str, Any]) -> dict[str, Any]:
    """The producer's connection and security settings, for an admin client."""
    return {k: v for k, v in config.items() if k not in _PRODUCER_ONLY}
