"""One process vs a two-process cluster from Kafka (issue 18): `novacron-ml run --once
--processes N` over the same 1,000-series fleet (3 h at 5 s) produced to a fresh 4-partition
topic of a broker, alternated 1, 2, 1, 2, whole runs timed (process start included), recovery
off. The broker runs on the same machine, so on 2 cores it competes with the flow.

    python bench/bench_processes.py --bootstrap 127.0.0.1:9092 [--format json-array]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python bench/...` too

from bench.bench_scale import fleet
from novacron_ml.core.kafka import delete_topics, ensure_topics, produce


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--bootstrap", default="127.0.0.1:9092")
    ap.add_argument("--format", choices=("json", "json-array"), default="json")
    ap.add_argument("--series", type=int, default=1000)
    args = ap.parse_args()
    topic = f"bench.processes.{uuid.uuid4().hex[:6]}"
    topics = [topic, f"{topic}.alerts", f"{topic}.dlq", f"{topic}.incidents"]
    ensure_topics(args.bootstrap, topics, partitions=4)
    sim = fleet(args.series, 3)
    n_events = sim.config.hosts * 10 * sim.n_ticks
    try:
        messages = list(sim.messages(args.format))
        produce(args.bootstrap, topic, messages)
        print(f"{len(messages):,} {args.format} messages ({n_events:,} events), 4 partitions")
        del messages
        env = dict(
            os.environ,
            NOVACRON_KAFKA_BOOTSTRAP_SERVERS=args.bootstrap,
            NOVACRON_TOPICS_METRICS=topic,
            NOVACRON_TOPICS_ALERTS=topics[1],
            NOVACRON_TOPICS_DLQ=topics[2],
            NOVACRON_TOPICS_INCIDENTS=topics[3],
            NOVACRON_KAFKA_STARTING_OFFSET="beginning",
            NOVACRON_INGEST_MAX_EVENT_AGE_S="0",
            NOVACRON_INGEST_MAX_EVENT_FUTURE_S="0",
            NOVACRON_RECOVERY_ENABLED="false",
        )
        for processes in (1, 2, 1, 2):
            command = [sys.executable, "-m", "novacron_ml.cli", "run", "--once"]
            command += ["--processes", str(processes)]
            start = time.perf_counter()
            run = subprocess.run(
                command,
                env=env,
                capture_output=True,
                text=True,
            )
            seconds = time.perf_counter() - start
            print(
                f"--processes {processes}: exit {run.returncode}, {seconds:.1f} s, "
                f"{n_events / seconds:,.0f} events/s",
                flush=True,
            )
            if run.returncode:
                print(run.stderr[-2000:])
    finally:
        delete_topics(args.bootstrap, topics)


if __name__ == "__main__":
    main()
