"""Does a replay reach its partition in order? Plain vs idempotent producer on fresh brokers.

The situation CI is in: `scripts/kafka.sh` starts a broker on an empty data directory and a
replay is produced into a new topic at once. For each run and each producer mode (alternated),
a private broker is started on its own directory and port, a flow's six topics (`--topics`)
are created together, the simulator's `--days` of a
`--hosts`-host fleet (json, one message per event) are produced with `kafka_io.produce`, with
`enable.idempotence` false or true, and the partition is read back: a run is reordered when
an offset holds an event more than a minute older than the one before it. Prints per mode the
runs reordered, the largest step back and the produce rate (docs/MESSAGES.md).

    python bench/produce_order.py                 # 5 runs per mode, port 9192
    python bench/produce_order.py --runs 8 --topics 1   # only the metrics topic
    python bench/produce_order.py --runs 10 --json out/produce_order.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from itertools import pairwise
from pathlib import Path

import msgspec

from novacron_ml.core.kafka import ensure_topics, produce, read_topic
from novacron_ml.core.simulator import FleetConfig, FleetSimulator

ROOT = Path(__file__).resolve().parents[1]
HOUR_MS = 3_600_000
TOPICS = ["metrics", "alerts", "dlq", "hourly", "capacity.forecasts", "capacity.alerts"]


def broker(action: str, directory: str, port: int) -> None:
    env = dict(os.environ, NOVACRON_BROKER_DIR=directory, NOVACRON_BROKER_PORT=str(port))
    subprocess.run(
        ["bash", str(ROOT / "scripts" / "kafka.sh"), action],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )


def one_run(
    messages: list[tuple[bytes, bytes, int]], idempotent: bool, port: int, topics: int
) -> dict:
    directory = tempfile.mkdtemp(prefix="novacron-order-")
    bootstrap = f"127.0.0.1:{port}"
    try:
        broker("start", directory, port)
        ensure_topics(bootstrap, TOPICS[:topics])  # created together, as the tests do
        start = time.perf_counter()
        produce(
            bootstrap,
            "metrics",
            messages,
            config={"enable.idempotence": "true" if idempotent else "false"},
        )
        rate = len(messages) / (time.perf_counter() - start)
        records = sorted(read_topic(bootstrap, "metrics", timeout_s=120), key=lambda r: r.offset)
    finally:
        broker("stop", directory, port)
        shutil.rmtree(directory, ignore_errors=True)
    ts = [msgspec.json.decode(r.value)["ts"] for r in records]
    back = max((a - b for a, b in pairwise(ts)), default=0)
    return {"records": len(ts), "step_back_h": max(back, 0) / HOUR_MS, "msg_per_s": rate}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per producer mode")
    parser.add_argument("--days", type=float, default=4.0)
    parser.add_argument("--hosts", type=int, default=2)
    parser.add_argument("--port", type=int, default=9192, help="the private brokers' port")
    parser.add_argument(
        "--topics",
        type=int,
        default=len(TOPICS),
        choices=range(1, len(TOPICS) + 1),
        help="how many of a flow's topics to create (metrics first)",
    )
    parser.add_argument("--json", metavar="FILE", help="also write every run as JSON")
    args = parser.parse_args()
    start_ms = int(time.time() // 3600 * 3600 * 1000) - int(args.days * 86_400_000)
    sim = FleetSimulator(
        FleetConfig(
            hosts=args.hosts,
            clusters=1,
            step_s=300,
            duration_s=args.days * 86_400,
            start_ms=start_ms,
            anomalies_per_host_per_hour=0.0,
        )
    )
    messages = list(sim.timed_messages("json"))
    runs: dict[str, list[dict]] = {"plain": [], "idempotent": []}
    for i in range(args.runs):
        for mode, done in runs.items():
            r = one_run(messages, mode == "idempotent", args.port, args.topics)
            done.append(r)
            print(
                f"run {i + 1} {mode:10s} {r['records']:,} records, largest step back "
                f"{r['step_back_h']:.1f} h, {r['msg_per_s']:,.0f} msg/s",
                flush=True,
            )
    print(f"\n{len(messages):,} messages per run, a fresh broker each")
    print(f"{'producer':10s} {'runs':>4s} {'reordered':>9s} {'max step back h':>15s} {'msg/s':>9s}")
    for mode, rs in runs.items():
        reordered = sum(r["step_back_h"] > 1 / 60 for r in rs)
        print(
            f"{mode:10s} {len(rs):4d} {reordered:9d} {max(r['step_back_h'] for r in rs):15.1f} "
            f"{statistics.median(r['msg_per_s'] for r in rs):9,.0f}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(runs, indent=2))


if __name__ == "__main__":
    main()
