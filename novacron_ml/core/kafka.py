"""Small confluent-kafka helpers shared by the CLI, flows, training, tests and benchmarks.

Also the time-range reader behind replays: Bytewax's Kafka source starts at an offset, not a
time, and either tails or reads to the end. `plan` finds every partition's first offset at
`offsets_for_times(from)` and `RangeReader` stops each partition at its first record stamped
after `to` (or at the end offset seen when planned), so a replay reads exactly the records
whose Kafka timestamps fall in the range. Producers should stamp records with event time
(`novacron-ml produce` does)."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, cast

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from novacron_ml.core.clients import CLIENT_PROPERTIES
from novacron_ml.core.schema import rfc3339_ms

# Producer limit above the flow's default 1 MiB message limit, so oversized test messages reach
# the flow (and its DLQ) instead of being refused by the client.
PRODUCER_MAX_BYTES = "2097152"

CLIENT_LOG = logging.getLogger("novacron.librdkafka")
"""librdkafka's own log lines (connection refused, retries): kept out of the terminal, where a
broker that cannot be reached is one line naming the bootstrap servers; they go to
`client_log_path()` and, with `novacron-ml --verbose`, to stderr too."""
CLIENT_LOG.propagate = False
CLIENT_LOG.setLevel(logging.INFO)


class _LastClientError(logging.Handler):
    """The client's last error line, for the one-line message of a broker that cannot be
    reached (an authentication failure says so instead of "transport failure")."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.last = ""

    def emit(self, record: logging.LogRecord) -> None:
        # "FAIL [rdkafka#producer-1] [thrd:...]: host:port/bootstrap: the cause (after ...)"
        message = record.getMessage().rsplit("]: ", 1)[-1]
        self.last = message.split(": ", 1)[-1].split(" (after ", 1)[0]


LAST_CLIENT_ERROR = _LastClientError()
CLIENT_LOG.addHandler(LAST_CLIENT_ERROR)


def client_log_path() -> Path:
    """`observability.client_log`, read from the environment before the settings (the CLI
    routes the lines before anything else happens)."""
    return Path(os.environ.get("NOVACRON_OBSERVABILITY_CLIENT_LOG", "/tmp/novacron-ml-kafka.log"))


def log_client_lines(verbose: bool = False) -> None:
    """Send librdkafka's lines to the log file (and stderr when `verbose`); call once."""
    if any(h is not LAST_CLIENT_ERROR for h in CLIENT_LOG.handlers):
        return
    try:
        handler: logging.Handler = logging.FileHandler(client_log_path())
    except OSError:
        handler = logging.NullHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    CLIENT_LOG.addHandler(handler)
    if verbose:
        CLIENT_LOG.addHandler(logging.StreamHandler())


def client_config(bootstrap: str, **extra: Any) -> dict[str, Any]:
    """The configuration every client we create starts from: the security properties, and
    its logger is ours."""
    return {**CLIENT_PROPERTIES, "bootstrap.servers": bootstrap, "logger": CLIENT_LOG, **extra}


def with_client_log(config: dict[str, str]) -> dict[str, str]:
    """`config` over the security properties, plus our logger, for clients others build
    (Bytewax's Kafka source; confluent-kafka takes a Logger object in its config although it
    is typed str)."""
    return cast(dict[str, str], {**CLIENT_PROPERTIES, **config, "logger": CLIENT_LOG})


ORDERED_PRODUCER = {"enable.idempotence": "true"}
"""Producer properties every novacron producer starts from. Without idempotence librdkafka may
write a partition's batches out of order when a request is retried while later ones are in
flight: into a broker's first minute, 5 of 8 four-day simulator replays landed with early
hours after later ones, which the flow dead-letters as late events (bench/produce_order.py).
Idempotence keeps the order (and drops retried duplicates); it needs acks=all, librdkafka's
default."""


def wait_ready(bootstrap: str, timeout_s: float = 60.0) -> None:
    """Block until the cluster answers a metadata request."""
    admin = AdminClient(client_config(bootstrap))
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            admin.list_topics(timeout=2)
            return
        except KafkaException as exc:
            last = exc
            admin.poll(0.25)  # serves the client's log lines to CLIENT_LOG (and waits)
    admin.poll(0)
    reason = last.args[0].str() if last is not None and last.args else "no answer"
    if LAST_CLIENT_ERROR.last:
        reason += f"; the client's last error: {LAST_CLIENT_ERROR.last}"
    raise TimeoutError(f"cannot reach Kafka at {bootstrap} (waited {timeout_s:g} s): {reason}")


def ensure_topics(
    bootstrap: str, names: Iterable[str], partitions: int = 1, compacted: Iterable[str] = ()
) -> None:
    """Create the topics that do not exist yet (idempotent) and wait until they are visible;
    those in `compacted` keep the latest record per key (`cleanup.policy=compact`)."""
    names = list(names)
    compact = set(compacted)
    admin = AdminClient(client_config(bootstrap))
    existing = set(admin.list_topics(timeout=10).topics)
    wanted = [n for n in dict.fromkeys([*names, *compact]) if n not in existing]
    if wanted:
        futures = admin.create_topics(
            [
                NewTopic(
                    n,
                    num_partitions=partitions,
                    replication_factor=1,
                    config={"cleanup.policy": "compact"} if n in compact else {},
                )
                for n in wanted
            ]
        )
        for name, fut in futures.items():
            try:
                fut.result()
            except KafkaException as exc:
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise RuntimeError(f"could not create topic {name}: {exc}") from exc
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        topics = admin.list_topics(timeout=10).topics
        if all(n in topics and not topics[n].error for n in [*names, *compact]):
            return
        time.sleep(0.1)
    raise TimeoutError(f"topics not visible: {list(names)}")


def delete_topics(bootstrap: str, names: Iterable[str]) -> None:
    admin = AdminClient(client_config(bootstrap))
    for fut in admin.delete_topics(list(names), operation_timeout=30).values():
        with contextlib.suppress(KafkaException):
            fut.result()


@dataclass
class ProduceReport:
    messages: int = 0
    bytes: int = 0
    errors: int = 0
    seconds: float = 0.0


def produce(
    bootstrap: str,
    topic: str,
    messages: Iterable[tuple[bytes | None, bytes] | tuple[bytes | None, bytes, int]],
    *,
    rate: float = 0.0,
    config: dict[str, str] | None = None,
    progress: Callable[[ProduceReport], None] | None = None,
) -> ProduceReport:
    """Write (key, value[, timestamp ms]) messages; `rate` > 0 caps messages per second.

    A third element sets the record's Kafka timestamp (the simulator passes event time, so that
    replays by time select the right records). Raises on delivery failures.
    """
    conf: dict[str, object] = {
        **ORDERED_PRODUCER,
        **client_config(bootstrap),
        "linger.ms": "20",
        "compression.type": "lz4",
        "message.max.bytes": PRODUCER_MAX_BYTES,
        "queue.buffering.max.messages": "500000",
    }
    conf.update(config or {})
    producer = Producer(conf)
    report = ProduceReport()
    failures: list[str] = []

    def on_delivery(err: object, _msg: object) -> None:
        if err is not None:
            report.errors += 1
            if len(failures) < 5:
                failures.append(str(err))

    start = time.monotonic()
    last_progress = start
    for message in messages:
        key, value = message[0], message[1]
        timestamp = message[2] if len(message) > 2 else 0
        while True:
            try:
                producer.produce(
                    topic, value=value, key=key, on_delivery=on_delivery, timestamp=timestamp
                )
                break
            except BufferError:
                producer.poll(0.05)
        report.messages += 1
        report.bytes += len(value)
        if rate > 0:
            ahead = report.messages / rate - (time.monotonic() - start)
            if ahead > 0:
                producer.poll(0)
                time.sleep(ahead)
        if report.messages % 1000 == 0:
            producer.poll(0)
            now = time.monotonic()
            if progress is not None and now - last_progress >= 1.0:
                report.seconds = now - start
                progress(report)
                last_progress = now
    producer.flush(60)
    report.seconds = time.monotonic() - start
    if report.errors:
        raise RuntimeError(f"{report.errors} messages failed to deliver to {topic}: {failures}")
    return report


@dataclass(frozen=True)
class Record:
    key: bytes | None
    value: bytes
    headers: dict[str, bytes]
    partition: int
    offset: int


def read_topic(bootstrap: str, topic: str, timeout_s: float = 30.0) -> list[Record]:
    """Every record currently in a topic (all partitions, from the start to the end offsets)."""
    return list(iter_topic(bootstrap, topic, timeout_s))


def iter_topic(bootstrap: str, topic: str, timeout_s: float = 30.0) -> Iterator[Record]:
    consumer = Consumer(
        client_config(
            bootstrap,
            **{
                "group.id": f"novacron-reader-{time.monotonic_ns()}",
                "enable.auto.commit": "false",
                "enable.partition.eof": "true",
            },
        )
    )
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        parts = sorted(meta.partitions)
        ends = {}
        for p in parts:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if high > low:
                ends[p] = high
        if not ends:
            return
        consumer.assign([TopicPartition(topic, p, 0) for p in ends])
        done: set[int] = set()
        deadline = time.monotonic() + timeout_s
        while len(done) < len(ends):
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic} timed out")
            for msg in consumer.consume(1000, 0.5):
                if msg.error() is not None:
                    continue
                p, offset = msg.partition() or 0, msg.offset() or 0
                raw_headers = msg.headers() or []
                pairs = raw_headers.items() if isinstance(raw_headers, dict) else raw_headers
                headers = {
                    k: v if isinstance(v, bytes) else str(v or "").encode() for k, v in pairs
                }
                key = msg.key()
                value = msg.value()
                yield Record(
                    key if isinstance(key, bytes) or key is None else str(key).encode(),
                    value if isinstance(value, bytes) else (value or "").encode(),
                    headers,
                    p,
                    offset,
                )
                if offset + 1 >= ends[p]:
                    done.add(p)
    finally:
        consumer.close()


class ReplayError(ValueError):
    """A replay that cannot run: missing topic, empty or inverted range."""


def _consumer(bootstrap: str) -> Consumer:
    return Consumer(
        client_config(
            bootstrap,
            **{
                "group.id": "novacron-replay",
                "enable.auto.commit": "false",
                "enable.partition.eof": "false",
            },
        )
    )


@dataclass(frozen=True)
class PartitionRange:
    partition: int
    start: int
    """First offset with a timestamp >= from."""
    end: int
    """Offset after the last record that existed when the replay was planned."""
    deleted_before: int = 0
    """When the range starts at the partition's oldest kept record and older ones were
    deleted (retention): that offset, else 0."""
    first_kept_ms: int | None = None
    """The Kafka timestamp of that oldest kept record (when `deleted_before`)."""

    def retention_note(self) -> str | None:
        """One line when records of the range may have been deleted, else None: Kafka's
        offsets_for_times answers with the oldest kept record, so a range that began before
        it would otherwise be read short without a word."""
        if not self.deleted_before:
            return None
        stamped = (
            "" if self.first_kept_ms is None else f", stamped {rfc3339_ms(self.first_kept_ms)}"
        )
        return (
            f"partition {self.partition}: its records before offset {self.deleted_before} were "
            f"deleted (the topic's retention), so the replay starts at the oldest one kept"
            f"{stamped}; any of the range older than that are gone"
        )


def plan(bootstrap: str, topic: str, from_ms: int, to_ms: int) -> list[PartitionRange]:
    """Offsets to read per partition; raises ReplayError with a one-line reason."""
    if from_ms > to_ms:
        raise ReplayError(f"--from {rfc3339_ms(from_ms)} is after --to {rfc3339_ms(to_ms)}")
    consumer = _consumer(bootstrap)
    try:
        meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if meta is None or meta.error is not None or not meta.partitions:
            raise ReplayError(f"topic {topic!r} does not exist on {bootstrap}")
        parts = sorted(meta.partitions)
        found = consumer.offsets_for_times(
            [TopicPartition(topic, p, from_ms) for p in parts], timeout=10
        )
        ranges = []
        for tp in found:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, tp.partition), timeout=10
            )
            start = tp.offset if tp.offset >= 0 else high
            part = PartitionRange(tp.partition, start, high)
            if 0 < low == start < high:  # older records were deleted: say what is kept
                stamp = _timestamp_at(consumer, TopicPartition(topic, tp.partition, start))
                part = PartitionRange(tp.partition, start, high, start, stamp)
            ranges.append(part)
        return ranges
    finally:
        consumer.close()


def _timestamp_at(consumer: Consumer, where: TopicPartition) -> int | None:
    """The Kafka timestamp of the record at `where` (None if it cannot be read in 10 s)."""
    consumer.assign([where])
    for msg in consumer.consume(1, 10):
        if msg.error() is None:
            return msg.timestamp()[1]
    return None


class RangeRecord(NamedTuple):
    key: bytes | None
    value: bytes | None
    partition: int
    offset: int
    timestamp: tuple[int, int]


class RangeReader:
    """Reads one partition from `part.start` until a record stamped after `to_ms` or the end
    offset planned: `next_batch` until StopIteration (the replay source and training both)."""

    def __init__(
        self, bootstrap: str, topic: str, part: PartitionRange, to_ms: int, resume: int | None
    ) -> None:
        self._topic = topic
        self._part = part
        self._to_ms = to_ms
        self.next_offset = part.start if resume is None else resume
        self._done = self.next_offset >= part.end
        self._consumer = _consumer(bootstrap)
        if not self._done:
            self._consumer.assign([TopicPartition(topic, part.partition, self.next_offset)])

    def next_batch(self) -> list[RangeRecord]:
        if self._done:
            raise StopIteration
        batch: list[RangeRecord] = []
        for msg in self._consumer.consume(1000, 0.5):
            if msg.error() is not None:
                continue
            offset = msg.offset() or 0
            _kind, ts = msg.timestamp()
            if ts > self._to_ms or offset >= self._part.end:
                self._done = True
                break
            key, value = msg.key(), msg.value()
            batch.append(
                RangeRecord(
                    key if isinstance(key, bytes) or key is None else str(key).encode(),
                    value if isinstance(value, bytes) or value is None else value.encode(),
                    self._part.partition,
                    offset,
                    (_kind, ts),
                )
            )
            self.next_offset = offset + 1
            if self.next_offset >= self._part.end:
                self._done = True
                break
        return batch

    def close(self) -> None:
        self._consumer.close()


CONSUMED: dict[tuple[str, int], tuple[int, int]] = {}
"""(topic, partition) -> (offset, Kafka timestamp ms) of the last record the flow consumed in
this process (the parse step writes it; `LagMonitor` reads it)."""


class LagMonitor:
    """Samples the flow's consumer lag every `interval_s` into `novacron_consumer_lag_messages`
    and `novacron_consumer_lag_seconds` (per topic and partition), from the end offsets of the
    partitions the flow consumed; one daemon thread per process (`start` is idempotent)."""

    _started: LagMonitor | None = None

    def __init__(self, bootstrap: str, interval_s: float = 15.0) -> None:
        import threading

        self.bootstrap = bootstrap
        self.interval_s = interval_s
        self.stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="novacron-lag", daemon=True)

    @classmethod
    def start(cls, bootstrap: str, interval_s: float = 15.0) -> LagMonitor:
        if cls._started is None:
            cls._started = cls(bootstrap, interval_s)
            cls._started._thread.start()
        return cls._started

    def sample(self, consumer: Consumer) -> None:
        from novacron_ml.core import metrics

        now_ms = time.time() * 1000
        for (topic, partition), (offset, ts_ms) in list(CONSUMED.items()):
            try:
                _low, high = consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=5, cached=False
                )
            except KafkaException:
                continue  # the broker is away: keep the last figures
            lag = max(high - offset - 1, 0)
            labels = {"topic": topic, "partition": str(partition)}
            metrics.CONSUMER_LAG.labels(**labels).set(lag)
            seconds = max(now_ms - ts_ms, 0.0) / 1000 if lag and ts_ms > 0 else 0.0
            metrics.CONSUMER_LAG_SECONDS.labels(**labels).set(seconds)

    def _run(self) -> None:
        consumer = Consumer(client_config(self.bootstrap, **{"group.id": "novacron-lag"}))
        try:
            while not self.stop.wait(self.interval_s):
                self.sample(consumer)
        finally:
            consumer.close()
