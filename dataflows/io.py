"""Bytewax sources and sinks besides Kafka's own: the simulator, a collecting sink, a time-range
replay of a topic (`TimeRangeKafkaSource`), and the flow's delivery-checked Kafka sink
(`CheckedKafkaSink`, which replaces Bytewax's `KafkaSink`: that one produces without delivery
reports, so a refused or timed-out record vanished with nothing logged).

`SimulatorSource` yields the same `KafkaSourceMessage`s a Kafka topic would, so the demo and
the benchmarks run the exact production flow (parsing included) without a broker.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from bytewax.connectors.kafka import KafkaSinkMessage, KafkaSourceMessage
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from novacron_ml.core.delivery import CheckedProducer
from novacron_ml.core.kafka import PartitionRange, RangeReader, plan
from novacron_ml.core.simulator import FleetSimulator

Message = KafkaSourceMessage[bytes | None, bytes | None]


class _IteratorPartition(StatefulSourcePartition[Message, int]):
    def __init__(self, make: Callable[[], Iterator[tuple[bytes, bytes]]], skip: int, batch: int):
        self._it = make()
        self._offset = skip
        self._batch = batch
        self._topic = "simulator"
        if skip:
            next(itertools.islice(self._it, skip - 1, skip), None)

    def next_batch(self) -> list[Message]:
        chunk = list(itertools.islice(self._it, self._batch))
        if not chunk:
            raise StopIteration
        start = self._offset
        self._offset += len(chunk)
        return [
            KafkaSourceMessage(key=k, value=v, topic=self._topic, partition=0, offset=start + i)
            for i, (k, v) in enumerate(chunk)
        ]

    def next_awake(self) -> datetime | None:
        return None

    def snapshot(self) -> int:
        return self._offset


class MessageSource(FixedPartitionedSource[Message, int]):
    """One partition over an iterable of (key, value) messages; resumable by offset."""

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
