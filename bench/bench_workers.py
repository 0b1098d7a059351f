"""One worker against a cluster of worker processes, no broker (issue 18's "two workers ≥ 1.7×
one"): the default detect flow over the same simulated fleet, each process reading its own
hosts (as Kafka partitions keyed by host or series would hand them out), the processes
exchanging events by shard as the production flow does between cluster members.

`bench_processes.py` measures the same from a broker on this machine, where the broker's
Java process takes a share of the same 2 cores; here the input is generated in each process
beforehand, so the figure is the flow's own scaling: Bytewax's exchange between processes
(every batch of events whose shard lives on the other worker is pickled across a socket) and
whatever the cores share. Each run is `--processes` processes of one worker each
(`bytewax.testing.cluster_main` on loopback ports), alternated 1, N, 1, N by default; the
rate is all events over the time from the first process's first message to the last
process's end (message making and process start not counted). Outputs are counted in each
process (alerts summed), so a lost or doubled window would show as a different alert count.

    python bench/bench_workers.py                    # 1,000 series, 3 h, JSON objects
    python bench/bench_workers.py --format json-array --order 1 2 2 1
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python bench/...` too

from dataflows.io import MessageSource
from novacron_ml.cli.run import free_loopback_ports


def share_of(key: bytes, count: int) -> int:
    """Which process reads a message: by host (a json message is keyed cluster/host/metric, a
    json-array one by host), so a series' events stay in order in one process."""
    parts = key.split(b"/")
    host = parts[1] if len(parts) == 3 else key
    return zlib.crc32(host) % count


class ShareSource(MessageSource):
    """This process's share of the messages as its own partition: each cluster member lists
    only its own, so Bytewax reads it there."""

    def __init__(self, make: Callable[[], Iterator[tuple[bytes, bytes]]], part: str) -> None:
        super().__init__(make, 1000)
        self._part = part

    def list_parts(self) -> list[str]:
        return [self._part]


def run_members(command: list[str], processes: int, env: dict[str, str] | None = None) -> list[Any]:
    """`command` as `processes` cluster members (`--addresses` of free loopback ports and
    `--index i` added); each member's last stdout line, as JSON."""
    addresses = ";".join(f"127.0.0.1:{p}" for p in free_loopback_ports(processes))
    root = str(Path(__file__).resolve().parents[1])
    procs = [
        subprocess.Popen(
            [*command, "--addresses", addresses, "--index", str(i)],
            stdout=subprocess.PIPE,
            env=env,
            text=True,
            cwd=root,
        )
        for i in range(processes)
    ]
    rows = []
    for p in procs:
        out, _ = p.communicate()
        if p.returncode:
            raise SystemExit(f"a cluster member exited {p.returncode}")
        rows.append(json.loads(out.strip().splitlines()[-1]))
    return rows


def child(args: argparse.Namespace) -> None:
    """One member: make this process's share of the fleet, run, print a JSON line."""
    from bytewax.testing import cluster_main

    from bench.bench_scale import fleet
    from dataflows.detect import build_flow
    from dataflows.io import CallbackSink
    from novacron_ml.core import metrics as obs
    from novacron_ml.core.schema import Alert
    from novacron_ml.core.settings import Settings

    sim = fleet(args.series, args.hours)
    mine = [m for m in sim.messages(args.format) if share_of(m[0], args.processes) == args.index]
    events = sum(m[1].count(b'"ts"') for m in mine)
    counts = {"alerts": 0, "first": 0.0}

    def collect(items: list[Any]) -> None:
        counts["alerts"] += sum(isinstance(i, Alert) for i in items)

    def timed() -> Iterator[tuple[bytes, bytes]]:  # notes when the first message is read
        counts["first"] = time.time()
        yield from mine

    settings = Settings(
        ingest={"max_event_age_s": 0, "max_event_future_s": 0},
        features={"shards": args.shards} if args.shards else {},
    )
    source = ShareSource(timed, str(args.index))
    flow = build_flow(settings, source, CallbackSink(collect), kafka_output=False)
    cluster_main(flow, args.addresses.split(";"), args.index)
    end = time.time()
    windows = obs.counter_value(obs.WINDOWS)  # closed in this process's feature step
    print(
        json.dumps(
            {
                "events": events,
                "alerts": counts["alerts"],
                "first": counts["first"],
                "end": end,
                "windows": windows,
            }
        )
    )


def cluster(args: argparse.Namespace, processes: int) -> dict[str, float]:
    command = [sys.executable, __file__, "--series", str(args.series), "--hours", str(args.hours)]
    command += ["--format", args.format, "--processes", str(processes)]
    command += ["--shards", str(args.shards)] if args.shards else []
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    rows = run_members(command, processes, env)
    seconds = max(r["end"] for r in rows) - min(r["first"] for r in rows if r["first"])
    events = sum(r["events"] for r in rows)
    total = sum(r["windows"] for r in rows)
    split = " / ".join(f"{r['windows'] / total:.0%}" for r in rows)
    return {
        "split": split,
        "events": events,
        "alerts": sum(r["alerts"] for r in rows),
        "seconds": seconds,
        "events_per_s": events / seconds,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--series", type=int, default=1000)
    ap.add_argument("--hours", type=float, default=3.0, help="simulated hours (5 s samples)")
    ap.add_argument("--format", choices=("json", "json-array"), default="json")
    ap.add_argument(
        "--order",
        type=int,
        nargs="+",
        default=[1, 2, 1, 2],
        help="process counts, run one after another",
    )
    ap.add_argument("--shards", type=int, help="features.shards (default: the setting's)")
    ap.add_argument("--processes", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--index", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--addresses", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.index is not None:
        child(args)
        return
    print(f"{args.series:,} series, {args.hours:g} h, {args.format}; {os.cpu_count()} cores")
    runs: dict[int, list[float]] = {}
    for n in args.order:
        r = cluster(args, n)
        runs.setdefault(n, []).append(r["events_per_s"])
        print(
            f"  {n} process(es): {r['events_per_s']:>10,.0f} events/s ({r['events']:,} events "
            f"in {r['seconds']:.1f} s, {r['alerts']} alert records; windows per process "
            f"{r['split']})",
            flush=True,
        )
    if 1 in runs and len(runs) > 1:
        one = max(runs[1])
        for n, rates in sorted(runs.items()):
            if n > 1:
                print(f"  {n} ÷ 1 (best of each): {max(rates) / one:.2f}x")


if __name__ == "__main__":
    main()
