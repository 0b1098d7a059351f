"""Bytewax sources and sinks besides Kafka's own: the simulator, a collecting sink, a time-range
replay of a topic (`TimeRangeKafkaSource`), and the flow's delivery-checked Kafka sink
(`CheckedKafkaSink`, which replaces Bytewax's `KafkaSink`: that one produces without delivery
reports, so a refused or timed-out record vanished with nothing logged).

The metrics inputs hand the flow one `MessageBatch` per consumed batch (a partition's
messages as lists) instead of one `KafkaSourceMessage` per message: building a dataclass and
moving an item through Bytewax per message cost ~20 % of the whole flow (issue 18,
docs/BENCHMARKS.md). `BatchedKafkaSource` is Bytewax's `KafkaSource` doing that;
`MessageSource` (the simulator, the demo, the benchmarks) yields the same batches, so they run
the exact production flow (parsing included) without a broker. A step that wants single
messages (feedback, `dwcp.config`) takes them apart with `messages_of`.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bytewax.connectors.kafka import (
    KafkaError,
    KafkaSinkMessage,
    KafkaSource,
    KafkaSourceMessage,
    _KafkaSourcePartition,
)
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from confluent_kafka import KafkaError as ConfluentKafkaError

from novacron_ml.core.delivery import CheckedProducer
from novacron_ml.core.kafka import PartitionRange, RangeReader, plan
from novacron_ml.core.simulator import FleetSimulator

Message = KafkaSourceMessage[bytes | None, bytes | None]


@dataclass(slots=True)
class MessageBatch:
    """Messages consumed together from one partition, as one dataflow item: `keys[i]`,
    `values[i]` and `offsets[i]` are message i's. `timestamp` is the last message's
    (Kafka's `(type, ms)`), for the lag gauges. Consumer errors travel beside it as
    `KafkaError` items, never inside."""

    topic: str
    partition: int
    keys: list[bytes | None]
    values: list[bytes | None]
    offsets: list[int]
    timestamp: tuple[int, int] | None = None

    def __len__(self) -> int:
        return len(self.values)

    def source(self, i: int) -> str:
        """Where message i came from, `topic:partition:offset` (dead letters)."""
        return f"{self.topic}:{self.partition}:{self.offsets[i]}"

    def message(self, i: int) -> Message:
        return KafkaSourceMessage(
            key=self.keys[i],
            value=self.values[i],
            topic=self.topic,
            partition=self.partition,
            offset=self.offsets[i],
            timestamp=self.timestamp if i == len(self.values) - 1 else None,
        )


def messages_of(item: Any) -> list[Any]:
    """A `MessageBatch` as its single messages; any other item (a message, an error) as is."""
    if type(item) is MessageBatch:
        return [item.message(i) for i in range(len(item))]
    return [item]


class _IteratorPartition(StatefulSourcePartition[MessageBatch, int]):
    def __init__(self, make: Callable[[], Iterator[tuple[bytes, bytes]]], skip: int, batch: int):
        self._it = make()
        self._offset = skip
        self._batch = batch
        self._topic = "simulator"
        if skip:
            next(itertools.islice(self._it, skip - 1, skip), None)

    def next_batch(self) -> list[MessageBatch]:
        chunk = list(itertools.islice(self._it, self._batch))
        if not chunk:
            raise StopIteration
        start = self._offset
        self._offset += len(chunk)
        keys, values = (list(col) for col in zip(*chunk, strict=True))
        return [MessageBatch(self._topic, 0, keys, values, list(range(start, start + len(chunk))))]

    def next_awake(self) -> datetime | None:
        return None

    def snapshot(self) -> int:
        return self._offset


class MessageSource(FixedPartitionedSource[MessageBatch, int]):
    """One partition over an iterable of (key, value) messages, in `MessageBatch`es of
    `batch_size`; resumable by offset."""

    def __init__(self, make: Callable[[], Iterator[tuple[bytes, bytes]]], batch_size: int = 1000):
        self._make = make
        self._batch_size = batch_size

    def list_parts(self) -> list[str]:
        return ["0"]

    def build_part(
        self, step_id: str, for_part: str, resume_state: int | None
    ) -> _IteratorPartition:
        return _IteratorPartition(self._make, resume_state or 0, self._batch_size)


def simulator_source(
    sim: FleetSimulator, fmt: str = "json", batch_size: int = 1000
) -> MessageSource:
    return MessageSource(lambda: sim.messages(fmt), batch_size)


class _CallbackPartition(StatelessSinkPartition[Any]):
    def __init__(self, callback: Callable[[list[Any]], None]) -> None:
        self._callback = callback

    def write_batch(self, items: list[Any]) -> None:
        self._callback(items)


class CallbackSink(DynamicSink[Any]):
    """Hands every output batch to a callback (in-process runs: demo, tests, benchmarks)."""

    def __init__(self, callback: Callable[[list[Any]], None]) -> None:
        self._callback = callback

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _CallbackPartition:
        return _CallbackPartition(self._callback)


class _CheckedPartition(StatelessSinkPartition[KafkaSinkMessage[bytes | None, bytes | None]]):
    def __init__(self, producer: CheckedProducer) -> None:
        self._producer = producer

    def write_batch(self, items: list[KafkaSinkMessage[bytes | None, bytes | None]]) -> None:
        self._producer.send(items)  # type: ignore[arg-type]  # same attributes as OutRecord

    def close(self) -> None:
        self._producer.close()


class CheckedKafkaSink(DynamicSink[KafkaSinkMessage[bytes | None, bytes | None]]):
    """Kafka output where every record is delivered, cut to fit, dead-lettered or counted lost
    and logged (`novacron_ml.core.delivery`); each worker has its own producer. Every
    message must name its topic (`dataflows.encode` does)."""

    def __init__(
        self, config: dict[str, Any], dlq_topic: str | None, delivery_timeout_s: float
    ) -> None:
        self._config = config
        self._dlq_topic = dlq_topic
        self._timeout_s = delivery_timeout_s

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _CheckedPartition:
        return _CheckedPartition(
            CheckedProducer(self._config, self._dlq_topic, delivery_timeout_s=self._timeout_s)
        )


class RangePartition(StatefulSourcePartition[Message, int]):
    """One partition of a time-range replay (`novacron_ml.core.kafka.RangeReader`)."""

    def __init__(
        self, bootstrap: str, topic: str, part: PartitionRange, to_ms: int, resume: int | None
    ) -> None:
        self._topic = topic
        self._reader = RangeReader(bootstrap, topic, part, to_ms, resume)

    def next_batch(self) -> list[Message]:
        return [
            KafkaSourceMessage(
                key=r.key,
                value=r.value,
                topic=self._topic,
                partition=r.partition,
                offset=r.offset,
                timestamp=r.timestamp,
            )
            for r in self._reader.next_batch()
        ]

    def snapshot(self) -> int:
        return self._reader.next_offset

    def close(self) -> None:
        self._reader.close()


class TimeRangeKafkaSource(FixedPartitionedSource[Message, int]):
    """Records of `topic` with Kafka timestamps in [from_ms, to_ms], partition by partition."""

    def __init__(self, bootstrap: str, topic: str, from_ms: int, to_ms: int) -> None:
        self._bootstrap, self._topic = bootstrap, topic
        self._to_ms = to_ms
        self._ranges = {str(r.partition): r for r in plan(bootstrap, topic, from_ms, to_ms)}

    @property
    def ranges(self) -> list[PartitionRange]:
        return list(self._ranges.values())

    def list_parts(self) -> list[str]:
        return list(self._ranges)

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> RangePartition:
        return RangePartition(
            self._bootstrap, self._topic, self._ranges[for_part], self._to_ms, resume_state
        )


class _BatchedKafkaPartition(_KafkaSourcePartition):
    """Bytewax 0.21.1's Kafka partition (its consumer, offsets, lag stats, end-of-partition and
    error handling) with `next_batch` returning one `MessageBatch`, the consumer errors beside
    it, instead of a `KafkaSourceMessage` per message."""

    def next_batch(self) -> list[Any]:
        if self._eof:
            raise StopIteration()
        msgs = self._consumer.consume(self._batch_size, 0.001)
        keys: list[bytes | None] = []
        values: list[bytes | None] = []
        offsets: list[int] = []
        out: list[Any] = []
        last = stamp = None
        for msg in msgs:
            error = msg.error()
            if error is not None:
                if error.code() == ConfluentKafkaError._PARTITION_EOF:
                    self._eof = True  # StopIteration at the next call: this batch goes out
                    break
                if self._raise_on_errors:
                    raise RuntimeError(
                        f"error consuming from Kafka topic `{self._topic!r}`: {error}"
                    )
                inner = KafkaSourceMessage(
                    key=msg.key(),
                    value=msg.value(),
                    topic=msg.topic(),
                    partition=msg.partition(),
                    offset=msg.offset(),
                    timestamp=msg.timestamp(),
                )
                out.append(KafkaError(error, inner))
            else:
                keys.append(msg.key())
                values.append(msg.value())
                offsets.append(msg.offset())  # type: ignore[arg-type]  # a consumed one has it
                stamp = msg
            last = msg
        if last is not None:
            self._offset = last.offset() + 1  # type: ignore[operator]  # resume after it (Bytewax's rule, errors too)
        if stamp is not None:
            out.append(
                MessageBatch(self._topic, self._part_idx, keys, values, offsets, stamp.timestamp())
            )
        return out


class BatchedKafkaSource(KafkaSource):
    """Bytewax's `KafkaSource` (same arguments, partitions, recovery state), yielding
    `MessageBatch`es: for the metrics inputs, whose parse step takes a batch at a time."""

    def build_part(
        self, step_id: str, for_part: str, resume_state: int | None
    ) -> _BatchedKafkaPartition:
        part = super().build_part(step_id, for_part, resume_state)
        part.__class__ = _BatchedKafkaPartition  # the same object; only `next_batch` differs
        return part  # type: ignore[return-value]


STOP = threading.Event()
"""Set by a signal handler (`novacron-ml run` on Ctrl-C or SIGTERM): every `Stoppable` input
ends its partitions at their next batch, so the flow drains, its sinks flush and it exits
normally; steps leave open windows open (`stopping()`), for a restart to resume."""


def stopping() -> bool:
    return STOP.is_set()


class _StoppablePartition(StatefulSourcePartition[Any, Any]):
    def __init__(self, inner: StatefulSourcePartition[Any, Any]) -> None:
        self._inner = inner

    def next_batch(self) -> list[Any]:
        if STOP.is_set():
            raise StopIteration
        return list(self._inner.next_batch())

    def next_awake(self) -> datetime | None:
        return None if STOP.is_set() else self._inner.next_awake()

    def snapshot(self) -> Any:
        return self._inner.snapshot()

    def close(self) -> None:
        self._inner.close()


class Stoppable(FixedPartitionedSource[Any, Any]):
    """Any partitioned source (Bytewax's `KafkaSource`), ending cleanly once `STOP` is set."""

    def __init__(self, inner: FixedPartitionedSource[Any, Any]) -> None:
        self._inner = inner

    def list_parts(self) -> list[str]:
        return self._inner.list_parts()

    def build_part(self, step_id: str, for_part: str, resume_state: Any) -> _StoppablePartition:
        return _StoppablePartition(self._inner.build_part(step_id, for_part, resume_state))
