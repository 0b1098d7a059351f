"""The process's memory for a long run: freed memory kept for the next epoch's snapshot
(glibc's allocator), and the garbage collector's full passes kept out of the bursts.

Snapshots.

Each epoch Bytewax asks every touched shard for a snapshot: the feature step deep-copies its
engine's arrays (~60 MB a shard of 2,500 series) and the detect step stacks its states' rings
(`dataflows.steps.ShardSnapshot`). glibc serves blocks this large with fresh pages (`mmap`,
or heap it trimmed back to the system when the last snapshot was freed), and on a VM the page
faults of fresh pages cost ~10× the copy itself: the feature snapshot took 1.6-2.0 s of each
40 s of a live run at 10,000 series, 0.14 s with freed memory kept (docs/BENCHMARKS.md). So
`novacron-ml run` raises glibc's mmap and trim thresholds once at start: freed blocks stay in
the heap and the next snapshot reuses them. The process's resident memory then stays near its
peak instead of shrinking between snapshots.

The collector. CPython frees most objects by reference counting; its cyclic collector also
runs a full pass (generation 2) over every tracked object after ten passes of the middle
generation. What start-up made (modules, models, the built flow: ~170,000 objects) is most of
what such a pass scans, and passes are set off by allocation, which the flow does in the
burst of windows that close together. At 10,000 series (40 minutes replayed, then two
live) a run made 86-87 full passes of ~260 ms each, the longest live 356-400 ms (`python -m
bench.bench_latency --gc`, docs/BENCHMARKS.md). `quiet_collector` freezes what start-up made
(it lives as long as the process) and runs the full passes a tenth as often: 23 passes of
30-45 ms. Acyclic garbage is still freed at once; only objects in reference cycles wait
longer for a full pass. The in-process commands (`replay`, `demo`, `nab`, `capacity
simulate`) do the same for the length of their run, and also freeze each full pass's
survivors (the outputs they keep), then thaw everything at the end (`quiet_collection`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
from collections.abc import Iterator
from contextlib import contextmanager

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
_TRIM_AT = 2**31 - 1
"""Free heap kept before glibc trims it back (the most `mallopt` takes: ~2 GiB)."""
_MMAP_FROM = 2**30
"""Blocks from this size (1 GiB) still get pages of their own."""
ENVIRONMENT = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_")
"""glibc's own variables: a user who set one of them decides, not us."""


def retain_freed_memory() -> str:
    """Raise glibc's trim and mmap thresholds (`mallopt`) for this process; returns what it
    did, for the start-up line. Nothing on another C library or when one of glibc's
    `MALLOC_*` variables is set."""
    chosen = [name for name in ENVIRONMENT if name in os.environ]
    if chosen:
        return f"allocator left as {', '.join(chosen)} set it"
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        version = libc.gnu_get_libc_version
    except (OSError, AttributeError, TypeError):
        return "allocator left as it is (not glibc)"
    version.restype = ctypes.c_char_p
    if not (
        libc.mallopt(M_TRIM_THRESHOLD, _TRIM_AT) and libc.mallopt(M_MMAP_THRESHOLD, _MMAP_FROM)
    ):
        return "allocator left as it is (mallopt refused)"
    return f"freed memory kept for reuse (glibc {version().decode()} mallopt)"


FULL_PASS_EVERY = 100
"""Middle-generation passes per full pass (CPython's default: 10)."""


def quiet_collector(full_every: int = FULL_PASS_EVERY) -> str:
    """Freeze every object start-up made (`gc.freeze`: out of all later passes) and run the
    collector's full passes once per `full_every` middle-generation passes; returns what it
    did, for the start-up line. Nothing when the collector is off (`gc.disable`)."""
    if not gc.isenabled():
        return "garbage collector left off"
    young, middle, _ = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(young, middle, full_every)
    return (
        f"garbage collector: {gc.get_freeze_count():,} start-up objects frozen, "
        f"a full pass every {full_every} middle ones"
    )


@contextmanager
def quiet_collection(full_every: int = FULL_PASS_EVERY) -> Iterator[bool]:
    """`quiet_collector` for the length of a block, for a flow run inside a longer-lived
    process (`dataflows.inprocess.run_in_process`): what exists at its start is frozen and
    the full passes thinned; and after each full pass its survivors are frozen too, so that
    no later pass scans them again. That matters for the in-process commands, which keep
    what the flow gives them (a replay of 10,000 series holds millions of windows and scores
    until its report): every full pass rescanned that growing pile. At the block's end all
    is thawed (garbage frozen with the survivors included: an object that was alive at a
    pass and later fell into a reference cycle waits until then) and the thresholds are
    restored; for `run`, which never ends, survivors are not frozen (a cycle would never be
    freed). Yields whether it changed anything: not when the collector is off or a
    `quiet_collector` (`novacron-ml run`, a benchmark) or an outer block has already frozen
    objects; the process is theirs to set."""
    if not gc.isenabled() or gc.get_freeze_count():
        yield False
        return
    thresholds = gc.get_threshold()

    def freeze_survivors(phase: str, info: dict[str, int]) -> None:
        if phase == "stop" and info["generation"] == 2:
            gc.freeze()

    gc.freeze()
    gc.set_threshold(thresholds[0], thresholds[1], full_every)
    gc.callbacks.append(freeze_survivors)
    try:
        yield True
    finally:
        gc.callbacks.remove(freeze_survivors)
        gc.set_threshold(*thresholds)
        gc.unfreeze()
