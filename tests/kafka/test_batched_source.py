"""`BatchedKafkaSource` on the real broker: every message once, in partition order, as
`MessageBatch`es of one partition each, and a resume from the partition's snapshot."""

from __future__ import annotations

import uuid

import pytest
from bytewax import operators as op
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, run_main

from dataflows.io import BatchedKafkaSource, MessageBatch
from novacron_ml.core.kafka import delete_topics, ensure_topics, produce

pytestmark = pytest.mark.kafka


def _read(bootstrap: str, topic: str, batch_size: int) -> list[object]:
    flow = Dataflow("batched_source_test")
    source = BatchedKafkaSource([bootstrap], [topic], tail=False, batch_size=batch_size,
                                raise_on_errors=False)  # fmt: skip
    out: list[object] = []
    op.output("out", op.input("in", flow, source), TestingSink(out))
    run_main(flow)
    return out


def test_every_message_arrives_once_in_batches_of_one_partition(kafka_bootstrap: str) -> None:
    topic = f"test.{uuid.uuid4().hex[:10]}.batched"
    ensure_topics(kafka_bootstrap, [topic], partitions=3)
    try:
        sent = [(f"k{i % 50}".encode(), f'{{"i":{i}}}'.encode()) for i in range(2_500)]
        produce(kafka_bootstrap, topic, sent)
        items = _read(kafka_bootstrap, topic, batch_size=100)
        assert items and all(type(b) is MessageBatch for b in items)
        batches = [b for b in items if isinstance(b, MessageBatch)]
        assert all(len(b) <= 100 and b.topic == topic for b in batches)
        seen: dict[int, list[tuple[int, bytes | None, bytes | None]]] = {0: [], 1: [], 2: []}
        for b in batches:
            assert len(b.keys) == len(b.values) == len(b.offsets)
            assert b.timestamp is not None and b.timestamp[1] > 0
            seen[b.partition].extend(zip(b.offsets, b.keys, b.values, strict=True))
        assert sum(len(s) for s in seen.values()) == len(sent)
        for p in range(3):  # the partitioner spreads the keys; each partition in send order
            assert [o for o, _, _ in seen[p]] == list(range(len(seen[p])))  # no gap, no repeat
            keys = {k for _, k, _ in seen[p]}
            assert [(k, v) for _, k, v in seen[p]] == [m for m in sent if m[0] in keys]
        assert batches[0].source(1) == f"{topic}:{batches[0].partition}:{batches[0].offsets[1]}"
        # a partition resumes where its snapshot says (the recovery state is Bytewax's offset)
        part = BatchedKafkaSource([kafka_bootstrap], [topic], tail=False).build_part(
            "in", f"1-{topic}", 300
        )
        try:
            got: list[MessageBatch] = []
            while True:
                try:
                    got.extend(b for b in part.next_batch() if isinstance(b, MessageBatch))
                except StopIteration:
                    break
            offsets = [o for b in got for o in b.offsets]
            assert len(seen[1]) > 300 and offsets == list(range(300, len(seen[1])))
            assert part.snapshot() == len(seen[1])
        finally:
            part.close()
    finally:
        delete_topics(kafka_bootstrap, [topic])


def test_it_reads_what_kafkas_own_tools_wrote_and_read(kafka_bootstrap: str) -> None:
    """Messages produced by Debian's kcat, keys included, are exactly those kcat's consumer
    reads back: the same partition, offset, key and value for each."""
    from tests.kafka.test_tune_kafka import kcat

    topic = f"test.{uuid.uuid4().hex[:10]}.batched"
    ensure_topics(kafka_bootstrap, [topic], partitions=2)
    try:
        lines = "".join(f'h{i % 7}|{{"host":"h{i % 7}","i":{i}}}\n' for i in range(300))
        kcat("-P", "-K", "|", "-t", topic, stdin=lines, bootstrap=kafka_bootstrap)
        seen_by_kcat = kcat("-C", "-e", "-q", "-f", "%p %o %k %s\n", "-t", topic,
                            bootstrap=kafka_bootstrap).splitlines()  # fmt: skip
        ours = [
            f"{b.partition} {o} {(k or b'').decode()} {(v or b'').decode()}"
            for b in _read(kafka_bootstrap, topic, batch_size=50)
            if isinstance(b, MessageBatch)
            for o, k, v in zip(b.offsets, b.keys, b.values, strict=True)
        ]
        assert len(ours) == 300 and sorted(ours) == sorted(seen_by_kcat)
    finally:
        delete_topics(kafka_bootstrap, [topic])
