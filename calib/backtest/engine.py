"""Where the steps run: in this process, a local process pool, or a Dask cluster.

Every engine maps one top-level function over picklable tasks and returns
the results in task order, so a backtest gives the same rows whichever runs
it. Workers read the harvest by path: on a cluster the data root must be
storage every worker sees (a shared disk, or object storage through fsspec).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from calib.errors import InvalidInputError
from calib.process import tune_process

_T = TypeVar("_T")
# glibc's environment names for `tune_process`'s mallopt settings, and its thread and page settings.
WORKER_ENVIRON: dict[str, str | int] = {
    "MALLOC_TRIM_THRESHOLD_": 1 << 30, "MALLOC_TOP_PAD_": 64 << 20, "MALLOC_MMAP_THRESHOLD_": 32 << 20,
    "MALLOC_ARENA_MAX": 1, "OPENBLAS_NUM_THREADS": 1, "OMP_NUM_THREADS": 1, "MKL_NUM_THREADS": 1,
    "NUMPY_MADVISE_HUGEPAGE": 0,
}
OnDone = Callable[[int, int], None]  # (tasks done, tasks total)


class Engine(Protocol):
    name: str
    workers: int

    def map(self, fn: Callable[..., _T], tasks: Sequence[tuple[Any, ...]], *, on_done: OnDone | None = None
            ) -> list[_T]: ...


@dataclass(slots=True)
class SerialEngine:
    """In this process, one task after the other (one worker, or a single task)."""

    name: str = "serial"
    workers: int = 1

    def map(self, fn: Callable[..., _T], tasks: Sequence[tuple[Any, ...]], *, on_done: OnDone | None = None
            ) -> list[_T]:
        out = []
        for i, args in enumerate(tasks):
            out.append(fn(*args))
            if on_done:
                on_done(i + 1, len(tasks))
        return out


@dataclass(slots=True)
class PoolEngine:
    """A local process pool (spawned workers: no fork of a process that runs threads)."""

    pool: ProcessPoolExecutor
    workers: int
    name: str = "process-pool"

    def map(self, fn: Callable[..., _T], tasks: Sequence[tuple[Any, ...]], *, on_done: OnDone | None = None
            ) -> list[_T]:
        futures = {self.pool.submit(fn, *args): i for i, args in enumerate(tasks)}
        out: list[Any] = [None] * len(tasks)
        for done, fut in enumerate(as_completed(futures), start=1):
            out[futures[fut]] = fut.result()
            if on_done:
                on_done(done, len(tasks))
        return out


@dataclass(slots=True)
class DaskEngine:
    """A `dask.distributed` client: a LocalCluster it owns, or an existing scheduler."""

    client: Any
    workers: int
    name: str

    def map(self, fn: Callable[..., _T], tasks: Sequence[tuple[Any, ...]], *, on_done: OnDone | None = None
            ) -> list[_T]:
        from dask.distributed import as_completed as dask_completed

        futures = [self.client.submit(fn, *args, pure=False) for args in tasks]
        index = {f.key: i for i, f in enumerate(futures)}
        out: list[Any] = [None] * len(tasks)
        for done, fut in enumerate(dask_completed(futures), start=1):
            out[index[fut.key]] = fut.result()
            if on_done:
                on_done(done, len(tasks))
        return out


def default_workers() -> int:
    """The cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


@contextmanager
def open_engine(cluster: str | None = None, *, workers: int | None = None, n_tasks: int | None = None,
                local_processes: bool = True) -> Iterator[Engine]:
    """The engine for `cluster`: None a local process pool, ``"local"`` a Dask LocalCluster,
    ``"tcp://HOST:PORT"`` an existing Dask scheduler.

    `workers` defaults to the cores (a pool larger than `n_tasks` is not
    started); one worker without a cluster runs in this process.
    `local_processes=False` makes the LocalCluster's workers threads of this
    process (tests).
    """
    n = workers if workers is not None else default_workers()
    if n < 1:
        raise InvalidInputError(f"`--workers` must be at least 1; got {n}")
    if n_tasks is not None:
        n = max(1, min(n, n_tasks))
    if cluster is None:
        if n == 1:
            yield SerialEngine()
            return
        with ProcessPoolExecutor(max_workers=n, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=tune_process) as pool:
            yield PoolEngine(pool=pool, workers=n)
        return
    if cluster != "local" and not cluster.startswith("tcp://"):
        raise InvalidInputError(f"`--cluster` must be 'local' or a scheduler address tcp://HOST:PORT; got {cluster!r}")
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError as e:  # pragma: no cover - a dependency of the package
        raise InvalidInputError("`--cluster` needs dask.distributed: pip install 'dask[distributed]'") from e
    if cluster == "local":
        import dask

        # Dask's nanny makes glibc return freed memory at once (MALLOC_TRIM_THRESHOLD_=64 KiB): every
        # calibration would then fault its large temporaries in afresh (measured 2x slower than the pool).
        # Its workers get the CLI's allocator settings instead (`calib.process.tune_process`).
        with dask.config.set({"distributed.nanny.pre-spawn-environ": WORKER_ENVIRON}), LocalCluster(n_workers=n, threads_per_worker=1, processes=local_processes, dashboard_address=None,
                          silence_logs=logging.ERROR) as lc, Client(lc) as client:
            yield DaskEngine(client=client, workers=n, name="dask-local")
        return
    try:
        client = Client(cluster, timeout="10s")
    except (OSError, TimeoutError) as e:
        raise InvalidInputError(f"cannot reach the Dask scheduler at {cluster}: {e}") from e
    try:
        info = client.scheduler_info()
        yield DaskEngine(client=client, workers=max(1, len(info.get("workers", {}))), name=f"dask {cluster}")
    finally:
        client.close()
