"""Telegraf's default output through the whole detect flow: a CPU-idle drop, a memory-available
drop and a disk-free drop each raise their alert, per-CPU series stay apart, and a counter
(net bytes) is scored as a rate."""

from __future__ import annotations

import time

import numpy as np
import pytest

from dataflows.inprocess import FlowOutputs, run_in_process
from dataflows.io import MessageSource
from novacron_ml.core.metrics import LOAD_RESIDUAL_WINDOWS, counter_value
from novacron_ml.core.settings import Settings
from operators.detection.load import OUTCOMES

INTERVAL_S = 10  # Telegraf's default `interval`
HOURS = 3
DROP_FROM_S = HOURS * 3600 - 20 * 60  # the last 20 minutes are the incident


def telegraf_lines(start_s: int) -> list[bytes]:
    """What `outputs.kafka` with `data_format = "influx"` sends for cpu, mem, disk and net on
    one host, one metric per message: nanosecond timestamps, integer suffixes, no cluster."""
    rng = np.random.default_rng(3)
    out = []
    recv = 0
    for i in range(HOURS * 3600 // INTERVAL_S):
        t = i * INTERVAL_S
        ns = (start_s + t) * 10**9
        incident = t >= DROP_FROM_S
        for cpu in ("cpu0", "cpu1", "cpu-total"):
            idle = 97.0 + rng.normal(0, 0.4)
            if incident and cpu != "cpu1":
                idle = 3.0 + rng.normal(0, 0.4)  # cpu0 pegged (and so the total)
            user = 100.0 - idle - 0.5
            out.append(
                f"cpu,cpu={cpu},host=web01 usage_guest=0,usage_idle={idle},usage_iowait=0,"
                f"usage_system=0.5,usage_user={user} {ns}".encode()
            )
        avail = (80.0 if not incident else 4.0) + rng.normal(0, 0.3)
        out.append(
            f"mem,host=web01 available={int(avail * 2e8)}i,available_percent={avail},"
            f"total=20000000000i,used_percent={100 - avail} {ns}".encode()
        )
        free = (4.0e11 if not incident else 2.0e9) + rng.normal(0, 1e8)
        out.append(
            f"disk,device=sda1,fstype=ext4,host=web01,mode=rw,path=/ free={int(free)}i,"
            f"total=500000000000i,used={int(5e11 - free)}i {ns}".encode()
        )
        recv += int(125_000 * INTERVAL_S * (1 + rng.normal(0, 0.02)))  # ~125 kB/s, cumulative
        out.append(
            f"net,host=web01,interface=eth0 bytes_recv={recv}i,bytes_sent={recv // 2}i,"
            f"err_in=0i {ns}".encode()
        )
        out.append(f'system,host=web01 uptime_format="{t // 60} min" {ns}'.encode())
    return out


@pytest.fixture(scope="module")
def outputs() -> FlowOutputs:
    start_s = int(time.time()) // 60 * 60 - HOURS * 3600 - 60
    lines = telegraf_lines(start_s)
    settings = Settings(features={"step_s": 10.0}, topics={"features": "metrics.features"})
    return run_in_process(settings, MessageSource(lambda: ((b"", v) for v in lines), 1000))


def test_nothing_is_dead_lettered(outputs: FlowOutputs) -> None:
    assert outputs.dead_letters == []
    assert outputs.events > 0


def alerted(outputs: FlowOutputs) -> dict[tuple[str, str], set[str]]:
    """(metric, tags) of every alert -> its types."""
    out: dict[tuple[str, str], set[str]] = {}
    for a in outputs.alerts:
        tags = ",".join(f"{k}={v}" for k, v in sorted((a.labels or {}).items()))
        out.setdefault((a.metric, tags), set()).add(a.type)
    return out


def test_cpu_idle_drop_alerts_on_that_cpu_only(outputs: FlowOutputs) -> None:
    got = alerted(outputs)
    assert got[("cpu_usage_idle", "cpu=cpu0")] == {"resource_exhaustion"}
    assert ("cpu_usage_idle", "cpu=cpu1") not in got  # per-CPU series stay apart
    assert all(a.cluster == "default" and a.host == "web01" for a in outputs.alerts)
    first = min(a.window_start for a in outputs.alerts if a.metric == "cpu_usage_idle")
    assert all(a.window_start >= first for a in outputs.alerts)


def test_memory_available_drop_alerts(outputs: FlowOutputs) -> None:
    got = alerted(outputs)
    assert got[("mem_available_percent", "")] == {"resource_exhaustion"}
    assert got[("mem_available", "")] == {"resource_exhaustion"}


def test_disk_free_drop_alerts_with_its_labels(outputs: FlowOutputs) -> None:
    got = alerted(outputs)
    assert got[("disk_free", "device=sda1,fstype=ext4,mode=rw,path=/")] == {"resource_exhaustion"}


def test_counters_are_rates_and_quiet(outputs: FlowOutputs) -> None:
    recv = [w for w in outputs.windows if "net_bytes_recv" in w.series]
    assert recv, "the counter's windows are published"
    means = np.array([w["mean"] for w in recv[5:]])
    assert np.all((means > 100_000) & (means < 150_000))  # bytes per second, not a level
    assert not any(a.metric.startswith("net_") for a in outputs.alerts)


def test_the_load_tier_finds_telegrafs_cpu_total_among_global_tags() -> None:
    """The README's setting for Telegraf, on its output with a `[global_tags]` entry (every
    series gains `dc=eu`): the tier finds the host's CPU total and fits the host's other
    series on it."""
    start_s = int(time.time()) // 60 * 60 - HOURS * 3600 - 60
    lines = [v.replace(b"host=web01", b"dc=eu,host=web01") for v in telegraf_lines(start_s)]
    settings = Settings(
        features={"step_s": 10.0},
        detector={"load_proxy": "cpu_usage_user{cpu=cpu-total}"},
    )
    before = {o: counter_value(LOAD_RESIDUAL_WINDOWS, outcome=o) for o in OUTCOMES}
    run = run_in_process(settings, MessageSource(lambda: ((b"", v) for v in lines), 1000))
    got = {o: counter_value(LOAD_RESIDUAL_WINDOWS, outcome=o) - before[o] for o in OUTCOMES}
    assert run.dead_letters == []
    assert got["no_proxy"] == 0, got
    assert got["scored"] + got["weak_fit"] > 1000, got  # past the warm-up, window by window
