"""`retain_freed_memory`: after it, a large block freed stays in the process's heap for reuse
(glibc's `mallinfo2`), where by default it goes back to the system. `quiet_collector` (for
`run`) and `quiet_collection` (for an in-process run): what they freeze and thin, each in a
fresh interpreter."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from novacron_ml.core.memory import ENVIRONMENT

PROBE = """
import ctypes, ctypes.util, sys
import numpy as np
from novacron_ml.core.memory import retain_freed_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]

libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.mallinfo2.restype = MallInfo2
said = retain_freed_memory() if sys.argv[1] == "retain" else "-"
block = np.ones(100 * 2**20 // 8)  # 100 MiB, touched
del block
print(libc.mallinfo2().fordblks // 2**20, said)
"""


def _free_heap_mib(mode: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    clean = {k: v for k, v in os.environ.items() if k not in ENVIRONMENT}
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode],
        capture_output=True,
        text=True,
        check=True,
        env=clean | (env or {}),
    ).stdout.split(maxsplit=1)
    return int(out[0]), out[1].strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_a_freed_block_stays_in_the_heap_once_retained_and_not_by_default() -> None:
    kept, said = _free_heap_mib("retain")
    assert kept >= 100 and said.startswith("freed memory kept for reuse (glibc")
    default, _ = _free_heap_mib("default")
    assert default < 50


def test_a_users_malloc_variable_wins() -> None:
    kept, said = _free_heap_mib("retain", {"MALLOC_TRIM_THRESHOLD_": "131072"})
    assert said == "allocator left as MALLOC_TRIM_THRESHOLD_ set it" and kept < 50


COLLECTOR = """
import gc, sys, weakref
from novacron_ml.core.memory import quiet_collector

if sys.argv[1] == "off":
    gc.disable()
made_at_start = [[i] for i in range(1000)]  # containers: tracked by the collector
said = quiet_collector()
in_passes = any(o is made_at_start for o in gc.get_objects())

class Node:
    pass

later = Node()
later.me = later  # a reference cycle made after start-up
gone = weakref.ref(later)
del later
gc.enable()
gc.collect()
print(gc.get_threshold()[2], gc.get_freeze_count(), in_passes, gone() is None, "|", said)
"""


def _collector(mode: str) -> tuple[list[str], str]:
    out = subprocess.run(
        [sys.executable, "-c", COLLECTOR, mode], capture_output=True, text=True, check=True
    ).stdout
    figures, said = out.split("|")
    return figures.split(), said.strip()


def test_quiet_collector_freezes_start_up_and_thins_full_passes_but_still_frees_cycles() -> None:
    (full_every, frozen, in_passes, freed), said = _collector("on")
    assert full_every == "100"  # Python's default is 10
    assert int(frozen) >= 1000 and in_passes == "False"  # start-up is out of every pass
    assert freed == "True"  # a cycle made later is still collected
    expected = f"garbage collector: {int(frozen):,} start-up objects frozen, a full pass every"
    assert said == f"{expected} 100 middle ones"


def test_quiet_collector_leaves_a_disabled_collector_alone() -> None:
    (full_every, frozen, in_passes, _), said = _collector("off")
    assert (full_every, frozen, in_passes) == ("10", "0", "True")
    assert said == "garbage collector left off"


IN_PROCESS = """
import gc, json, sys, weakref
from dataflows.inprocess import run_in_process
from dataflows.io import MessageSource
from novacron_ml.core.memory import quiet_collector
from novacron_ml.core.settings import Settings

mode = sys.argv[1]
settings = Settings(
    runtime={"quiet_gc": mode != "off"}, ingest={"max_event_age_s": 0, "max_event_future_s": 0}
)
if mode == "outer":
    quiet_collector()
made_before = [[i] for i in range(1000)]
lines = [
    b'{"ts": %d, "host": "h", "metric": "cpu_util", "value": 1.0}' % (1_790_000_000_000 + i * 5000)
    for i in range(200)
]
seen, cycles = [], []

class Node:
    pass

def during(items):
    if not seen:
        node = Node()
        node.me = node  # a reference cycle made during the run
        cycles.append(weakref.ref(node))
        in_passes = any(o is made_before for o in gc.get_objects())
        frozen = gc.get_freeze_count()
        survivor = [[1]]  # alive at the full pass below
        gc.collect()
        seen.append([frozen, gc.get_threshold()[2], in_passes])
        seen.append([gc.get_freeze_count() - frozen, any(o is survivor for o in gc.get_objects())])

run_in_process(settings, MessageSource(lambda: ((b"", v) for v in lines), 50), on_items=during)
gc.collect()
after = [gc.get_freeze_count(), gc.get_threshold()[2], cycles[0]() is None]
print(json.dumps({"during": seen[0], "survivors": seen[1], "after": after}))
"""


def _in_process(mode: str) -> tuple[list[object], list[object], list[object]]:
    out = subprocess.run(
        [sys.executable, "-c", IN_PROCESS, mode], capture_output=True, text=True, check=True
    ).stdout
    figures = json.loads(out.splitlines()[-1])
    return figures["during"], figures["survivors"], figures["after"]


def test_an_in_process_run_quiets_the_collector_for_its_length_only() -> None:
    (frozen, full_every, in_passes), (newly_frozen, in_passes_after), after = _in_process("scoped")
    assert frozen >= 1000 and full_every == 100 and in_passes is False
    assert newly_frozen > 0 and in_passes_after is False  # a full pass's survivors: frozen
    assert after == [0, 10, True]  # thawed, Python's threshold back, the run's cycle freed


def test_an_in_process_run_leaves_the_collector_alone_when_told_or_already_set() -> None:
    during, survivors, after = _in_process("off")  # runtime.quiet_gc = false
    assert during == [0, 10, True] and survivors == [0, True] and after == [0, 10, True]
    (frozen, full_every, in_passes), survivors, (frozen_after, full_every_after, freed) = (
        _in_process("outer")
    )
    assert frozen >= 1000 and full_every == 100 and in_passes is True  # made after the freeze
    assert survivors == [0, True]  # `run`'s collector: survivors stay in the passes
    assert frozen_after == frozen and full_every_after == 100 and freed is True  # not undone
