"""Cost of delivery checking: the flow's sink (`novacron_ml.core.delivery.CheckedProducer`)
against the write loop of Bytewax's own `KafkaSink` (produce + poll(0) per record, flush per
batch, no delivery report), writing the same records to the same broker, alternated.

Records are alert-sized (~700 bytes of JSON-like text, lz4 as the flow's producer), in
batches of `--batch` as the sink receives them from Bytewax.

    python bench/bench_sink.py --bootstrap 127.0.0.1:9092 [--records 200000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import time
import uuid

from confluent_kafka import Producer

from novacron_ml.core.delivery import CheckedProducer, OutRecord
from novacron_ml.core.kafka import ORDERED_PRODUCER, client_config, delete_topics, ensure_topics

CONFIG = {**ORDERED_PRODUCER, "linger.ms": "5", "compression.type": "lz4"}


def records(topic: str, n: int) -> list[OutRecord]:
    body = b'{"alert_id":"%032d","type":"latency_spike","severity":"high","score":0.99,' + (
        b'"explanation":"' + b"x" * 560 + b'"}'
    )
    return [OutRecord(topic, body % i, b"%032d" % i) for i in range(n)]


def bytewax_loop(bootstrap: str, batches: list[list[OutRecord]]) -> float:
    """What bytewax.connectors.kafka._KafkaSinkPartition.write_batch does."""
    producer = Producer(client_config(bootstrap, **CONFIG))
    start = time.perf_counter()
    for batch in batches:
        for r in batch:
            producer.produce(
                value=r.value,
                key=r.key,
                headers=r.headers,  # type: ignore[arg-type]
                topic=r.topic,
                timestamp=r.timestamp,
            )
            producer.poll(0)
        producer.flush()
    return time.perf_counter() - start


def checked(bootstrap: str, batches: list[list[OutRecord]]) -> float:
    producer = CheckedProducer(client_config(bootstrap, **CONFIG), None)
    start = time.perf_counter()
    for batch in batches:
        report = producer.send(batch)
        assert not report.lost
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=1000, help="records per write_batch")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    topic = f"bench.sink.{uuid.uuid4().hex[:8]}"
    ensure_topics(args.bootstrap, [topic])
    recs = records(topic, args.records)
    batches = [recs[i : i + args.batch] for i in range(0, len(recs), args.batch)]
    print(f"{args.records:,} records of {len(recs[0].value or b'')} bytes, batches of {args.batch}")
    rows = []
    try:
        for round_ in range(args.rounds):
            a = bytewax_loop(args.bootstrap, batches)
            b = checked(args.bootstrap, batches)
            rows.append((a, b))
            print(
                f"round {round_ + 1}: bytewax KafkaSink loop {args.records / a:9,.0f} records/s   "
                f"checked {args.records / b:9,.0f} records/s   checked/bytewax time {b / a:.2f}"
            )
    finally:
        delete_topics(args.bootstrap, [topic])
    ratios = sorted(b / a for a, b in rows)
    print(f"median time ratio checked/bytewax: {ratios[len(ratios) // 2]:.2f}")


if __name__ == "__main__":
    main()
