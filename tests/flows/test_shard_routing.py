"""The shard keys spread over a cluster's workers (Bytewax's own routing, real workers).

Bytewax sends a key to worker `hash(key) % workers`; with the shards named "0".."3" all four
went to worker 1 of 2, so a second worker did no feature or detection work
(bench/bench_workers.py). `dataflows.steps.SHARD_KEYS` are names chosen so shard i goes to
worker i % W; these tests run Bytewax clusters (threads of one process) to check it.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import bytewax.operators as op
import msgspec
from bytewax.dataflow import Dataflow
from bytewax.inputs import DynamicSource, StatelessSourcePartition
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.testing import cluster_main

from dataflows.detect import build_flow
from dataflows.io import MessageSource
from dataflows.steps import SHARD_KEYS, ShardRouter, shard_key
from novacron_ml.core.schema import WireEvent
from novacron_ml.core.settings import Settings
from operators.detection.series import WindowScore


class _Part(StatelessSinkPartition[Any]):
    def __init__(self, worker: int, seen: list[tuple[int, Any]]) -> None:
        self.worker, self.seen = worker, seen

    def write_batch(self, items: list[Any]) -> None:
        self.seen.extend((self.worker, item) for item in items)


class WorkerSink(DynamicSink[Any]):
    """Records which worker wrote each item (an output is written where it was made)."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, Any]] = []

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Part:
        return _Part(worker_index, self.seen)


class _Once(StatelessSourcePartition[Any]):
    def __init__(self, items: list[Any]) -> None:
        self.items: list[Any] | None = items

    def next_batch(self) -> list[Any]:
        if self.items is None:
            raise StopIteration
        items, self.items = self.items, None
        return items


class FirstWorker(DynamicSource[Any]):
    def __init__(self, items: list[Any]) -> None:
        self.items = items

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Once:
        return _Once(self.items if worker_index == 0 else [])


def workers_of(keys: list[str], workers: int) -> dict[str, int]:
    """Where Bytewax's stateful steps keep each key, on a cluster of `workers`."""
    flow = Dataflow("probe_routing")
    keyed = op.input("in", flow, FirstWorker([(k, k) for k in keys]))
    kept = op.stateful_map("state", keyed, lambda state, value: (value, value))
    sink = WorkerSink()
    op.output("out", kept, sink)
    cluster_main(flow, [], 0, worker_count_per_proc=workers)
    return {key: worker for worker, (key, _) in sink.seen}


def test_shard_i_lives_on_worker_i_mod_w() -> None:
    for workers in (2, 4, 8):
        where = workers_of(list(SHARD_KEYS), workers)
        assert [where[k] for k in SHARD_KEYS] == [i % workers for i in range(64)], workers
    assert shard_key(64) == "64" and shard_key(3) == SHARD_KEYS[3]


def test_the_plain_names_would_not_spread() -> None:
    """Why the keys are named: the default 4 shards as "0".."3" land on one worker of 2."""
    where = workers_of(["0", "1", "2", "3"], 2)
    assert len(set(where.values())) == 1


def test_two_workers_share_the_default_flows_windows() -> None:
    """The whole flow on a 2-worker cluster: both workers score windows (half the shards
    each) and every window is scored once."""
    start = int(time.time() // 60 * 60_000) - 3_600_000
    hosts = [f"h{i}" for i in range(16)]
    messages = [
        (b"k", msgspec.json.encode(WireEvent(start + t * 5000, h, "c1", "cpu_util", 0.5)))
        for t in range(24)  # two one-minute windows
        for h in hosts
    ]
    sink = WorkerSink()
    flow = build_flow(
        Settings(),
        MessageSource(lambda: iter(messages)),
        sink,
        kafka_output=False,
        emit_scores=True,
    )
    cluster_main(flow, [], 0, worker_count_per_proc=2)
    scored = [(w, s.series) for w, s in sink.seen if isinstance(s, WindowScore)]
    per_worker = Counter(w for w, _ in scored)
    router = ShardRouter(Settings().features.shards)
    expected = Counter(SHARD_KEYS.index(router.shard_of(h)) % 2 for h in hosts)
    assert Counter(series for _, series in scored) == {f"c1/{h}/cpu_util": 2 for h in hosts}
    assert per_worker == Counter({w: n * 2 for w, n in expected.items()})
    assert set(per_worker) == {0, 1}


def test_run_says_when_the_shards_do_not_cover_the_workers() -> None:
    from novacron_ml.cli.run import shard_advice

    assert shard_advice(4, 1) is None and shard_advice(4, 2) is None and shard_advice(8, 4) is None
    assert "4 of them only parse" in (shard_advice(4, 8) or "")
    assert "NOVACRON_FEATURES_SHARDS=8" in (shard_advice(4, 8) or "")
    assert "not 3" in (shard_advice(6, 3) or "")
    assert "some get 2 shards, others 1" in (shard_advice(6, 4) or "")
