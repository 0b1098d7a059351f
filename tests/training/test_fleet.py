"""Capacity work at fleet scale: one task per series on a Dask LocalCluster with 2 workers (the
default engine) and on a process pool give the same results as one process, in job order."""

from __future__ import annotations

import os

import numpy as np
import pytest

pytest.importorskip("dask.distributed")
pytest.importorskip("statsforecast")

from novacron_ml.core.settings import CapacitySettings, Settings
from training.fleet import run_tasks
from training.planner import HourlyHistory, plan_all


def _square_and_pid(x: int) -> tuple[int, int]:
    return x * x, os.getpid()


@pytest.mark.parametrize("engine", ["dask", "processes"])
def test_run_tasks_in_order_on_other_processes(engine: str) -> None:
    seen: list[tuple[int, int]] = []
    out = run_tasks(
        _square_and_pid,
        list(range(12)),
        engine=engine,  # type: ignore[arg-type]
        workers=2,
        progress=lambda done, total: seen.append((done, total)),
    )
    assert [v for v, _pid in out] == [x * x for x in range(12)]
    pids = {pid for _v, pid in out}
    assert os.getpid() not in pids and 1 <= len(pids) <= 2  # ran on the workers
    assert seen == [(k, 12) for k in range(1, 13)]


def test_one_worker_runs_here() -> None:
    out = run_tasks(_square_and_pid, [3, 4], engine="dask", workers=1)
    assert out == [(9, os.getpid()), (16, os.getpid())]


def _histories(n: int) -> list[HourlyHistory]:
    out = []
    hours = np.arange(21 * 24)
    for i in range(n):
        rng = np.random.default_rng(i)
        y = 0.4 + 0.002 * i * hours / 24 + 0.1 * np.sin(2 * np.pi * hours / 24)
        y = y + rng.normal(0, 0.01, len(hours))
        out.append(HourlyHistory(f"c{i}", "cpu_util", 1_767_225_600.0 + hours * 3600.0, y))
    return out


def test_plan_on_a_dask_local_cluster_equals_one_process() -> None:
    histories = _histories(4)
    base = CapacitySettings(models=["seasonal_naive", "auto_ets", "mstl"], cv_windows=2)
    one = Settings(capacity=base.model_copy(update={"workers": 1}))
    dask = Settings(capacity=base.model_copy(update={"workers": 2, "engine": "dask"}))
    p1, e1 = plan_all(histories, one)
    p2, e2 = plan_all(histories, dask)
    assert e1 == e2 == []
    assert [p.key for p in p1] == [p.key for p in p2] == [f"c{i}/cpu_util" for i in range(4)]
    for a, b in zip(p1, p2, strict=True):
        assert a.model == b.model and a.urgency == b.urgency
        np.testing.assert_allclose(a.hi, b.hi, rtol=1e-9)
    # the fastest-growing series is the most urgent: the plans are not all alike
    assert p1[3].days_to_exhaustion is not None
    assert p1[0].days_to_exhaustion is None or p1[0].days_to_exhaustion > p1[3].days_to_exhaustion
