"""The detect flow run in this process, its outputs sorted by kind (demo, NAB, replay,
capacity simulate): one Bytewax worker, `run_main`, the same flow as production."""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from bytewax.inputs import FixedPartitionedSource, Source
from bytewax.testing import run_main

from dataflows.detect import FLOW_ID, build_flow
from dataflows.io import STOP, CallbackSink, Stoppable
from novacron_ml.core import metrics as obs
from novacron_ml.core.deadletter import DeadLetter
from novacron_ml.core.features import FeatureWindow
from novacron_ml.core.memory import quiet_collection
from novacron_ml.core.schema import Alert, Incident
from novacron_ml.core.settings import Settings
from operators.aggregate.hourly import HourlyAggregate
from operators.detection.series import WindowScore
from operators.ingest.parse import wall_clock_ms


@dataclass
class FlowOutputs:
    """What one in-process run produced, by kind, in arrival order."""

    alerts: list[Alert] = field(default_factory=list)
    """Firing alerts (what fires, what evaluations score)."""
    resolved: list[Alert] = field(default_factory=list)
    """The `resolved` records that close alert episodes."""
    incidents: list[Incident] = field(default_factory=list)
    """Incident records (opened, updated, resolved), in arrival order."""
    dead_letters: list[DeadLetter] = field(default_factory=list)
    windows: list[FeatureWindow] = field(default_factory=list)
    scores: list[WindowScore] = field(default_factory=list)
    hourly: list[HourlyAggregate] = field(default_factory=list)
    other: list[object] = field(default_factory=list)
    """Forecasts and host windows, when their topics are set."""
    messages: int = 0
    events: int = 0
    windows_scored: int = 0
    seconds: float = 0.0

    def add(self, items: list[Any]) -> None:
        for item in items:
            if isinstance(item, Alert):
                (self.resolved if item.status == "resolved" else self.alerts).append(item)
            elif isinstance(item, Incident):
                self.incidents.append(item)
            elif isinstance(item, DeadLetter):
                self.dead_letters.append(item)
            elif isinstance(item, FeatureWindow):
                self.windows.append(item)
            elif isinstance(item, WindowScore):
                self.scores.append(item)
            elif isinstance(item, HourlyAggregate):
                self.hourly.append(item)
            else:
                self.other.append(item)


@contextlib.contextmanager
def stop_on_interrupt() -> Iterator[list[int]]:
    """Ctrl-C or SIGTERM during a Bytewax run ends its `Stoppable` inputs instead of raising
    inside Bytewax (a Rust panic); the list holds the signal once one came. Main thread only;
    elsewhere, and after the run, signals behave as before."""
    received: list[int] = []

    def handle(signum: int, _frame: object) -> None:
        if received:
            raise KeyboardInterrupt
        received.append(signum)
        STOP.set()

    try:
        previous = {s: signal.signal(s, handle) for s in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread
        yield received
        return
    try:
        yield received
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        STOP.clear()


def run_in_process(
    settings: Settings,
    source: Source[Any],
    *,
    emit_scores: bool = False,
    flow_id: str = FLOW_ID,
    on_items: Callable[[list[Any]], None] | None = None,
    progress: Callable[[int], None] | None = None,
    snapshots: bool = False,
    clock: Callable[[], int] = wall_clock_ms,
) -> FlowOutputs:
    """Run the detect flow over `source` to its end; `on_items` sees each output batch as it
    arrives, `progress` the events parsed so far. There is no recovery state here, so the
    steps skip their epoch snapshots unless `snapshots` (a benchmark of what a run with
    recovery pays). `clock`: what event ages are checked against (`build_flow`). With
    `runtime.quiet_gc` the collector is set as `novacron-ml run` sets it, and each full
    pass's survivors are frozen too, for this run only
    (`novacron_ml.core.memory.quiet_collection`). Counts come from the flow's own
    Prometheus counters, as differences, so several runs in one process do not add up."""
    out = FlowOutputs()

    before = (
        obs.counter_value(obs.MESSAGES),
        obs.counter_value(obs.EVENTS),
        obs.counter_value(obs.WINDOWS),
    )

    def collect(items: list[Any]) -> None:
        out.add(items)
        if on_items is not None:
            on_items(items)
        if progress is not None:
            progress(int(obs.counter_value(obs.EVENTS) - before[1]))

    flow = build_flow(
        settings,
        Stoppable(source) if isinstance(source, FixedPartitionedSource) else source,
        CallbackSink(collect),
        kafka_output=False,
        emit_scores=emit_scores,
        flow_id=flow_id,
        recovery=snapshots,
        clock=clock,
    )
    collection = quiet_collection() if settings.runtime.quiet_gc else contextlib.nullcontext(False)
    start = time.perf_counter()
    with stop_on_interrupt() as interrupted, collection:
        run_main(flow)
    out.seconds = time.perf_counter() - start
    if interrupted:  # the inputs ended at Ctrl-C, the outputs flushed: now say so
        raise KeyboardInterrupt
    out.messages = int(obs.counter_value(obs.MESSAGES) - before[0])
    out.events = int(obs.counter_value(obs.EVENTS) - before[1])
    out.windows_scored = int(obs.counter_value(obs.WINDOWS) - before[2])
    return out


def run_tune_in_process(
    settings: Settings,
    source: Source[Any],
    on_items: Callable[[list[Any]], None],
    *,
    ctx: Any = None,
) -> float:
    """Run the tuning flow (`dataflows.tune`) over `source` to its end in this process; its
    recommendations and settings go to `on_items` as they come (the demo's closed loop feeds
    the settings back to its simulator there). Returns the seconds it ran."""
    from dataflows.tune import build_flow as build_tune_flow

    flow = build_tune_flow(
        settings,
        Stoppable(source) if isinstance(source, FixedPartitionedSource) else source,
        CallbackSink(on_items),
        kafka_output=False,
        ctx=ctx,
    )
    start = time.perf_counter()
    with stop_on_interrupt() as interrupted:
        run_main(flow)
    if interrupted:
        raise KeyboardInterrupt
    return time.perf_counter() - start
