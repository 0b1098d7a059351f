"""One task per series, on Dask or a local process pool: how `capacity plan` and `capacity
backtest` scale from a laptop to a fleet (docs/CAPACITY.md#scale).

- `engine="dask"` (the default): a `dask.distributed` LocalCluster of `workers` single-threaded
  processes on this machine, or the cluster at `scheduler` (`tcp://host:8786`), whose workers
  must have this package installed (`pip install 'novacron-ml[train]'`).
- `engine="processes"`: a `concurrent.futures` process pool (no Dask needed).

One worker (or one job) runs in this process. Results come back in the order of the jobs;
`progress(done, total)` is called as each task finishes, in whatever order they finish.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, Literal, TypeVar

T = TypeVar("T")
R = TypeVar("R")

Engine = Literal["dask", "processes"]


def default_workers(workers: int | None) -> int:
    return workers if workers else (os.cpu_count() or 1)


def run_tasks(
    fn: Callable[[T], R],
    jobs: Sequence[T],
    *,
    engine: Engine = "dask",
    workers: int | None = None,
    scheduler: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[R]:
    """`[fn(job) for job in jobs]`, one task per job, in parallel on `engine`."""
    n = default_workers(workers)
    total = len(jobs)
    if scheduler is None and (n <= 1 or total <= 1):
        out = []
        for done, job in enumerate(jobs, start=1):
            out.append(fn(job))
            if progress is not None:
                progress(done, total)
        return out
    if engine == "dask" or scheduler is not None:
        return _dask(fn, jobs, n, scheduler, progress)
    results: list[Any] = [None] * total
    with ProcessPoolExecutor(max_workers=min(n, total)) as pool:
        futures = {pool.submit(fn, job): i for i, job in enumerate(jobs)}
        for done, fut in enumerate(as_completed(futures), start=1):
            results[futures[fut]] = fut.result()
            if progress is not None:
                progress(done, total)
    return results


def _dask(
    fn: Callable[[T], R],
    jobs: Sequence[T],
    n_workers: int,
    scheduler: str | None,
    progress: Callable[[int, int], None] | None,
) -> list[R]:
    try:
        from dask.distributed import Client, LocalCluster
        from dask.distributed import as_completed as dask_completed
    except ImportError:
        raise RuntimeError(
            "the dask engine needs dask.distributed: pip install 'novacron-ml[train]'"
            " (or set capacity.engine=processes)"
        ) from None
    import logging

    logging.getLogger("distributed").setLevel(logging.WARNING)
    cluster = None
    if scheduler is None:
        cluster = LocalCluster(
            n_workers=min(n_workers, len(jobs)),
            threads_per_worker=1,  # the fits are single-threaded numpy/Stan work
            processes=True,
            dashboard_address=None,
            host="127.0.0.1",
            # workers' own log lines (a heartbeat retried on a busy 2-core machine) are noise:
            # a task's failure comes back with its result
            silence_logs=logging.CRITICAL,
        )
    client = Client(cluster if cluster is not None else scheduler)
    try:
        # the series' data goes to the workers directly, not inside the task graph
        data = client.scatter(list(jobs))
        futures = client.map(fn, data, pure=False)
        index = {f.key: i for i, f in enumerate(futures)}
        results: list[Any] = [None] * len(jobs)
        for done, fut in enumerate(dask_completed(futures), start=1):
            results[index[fut.key]] = fut.result()
            if progress is not None:
                progress(done, len(jobs))
        return results
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
