"""Where blocks run: in this process, on threads, or on a dask cluster — one interface for all.

usidgpu has no scheduler of its own. ``inline`` and ``threads`` need nothing; everything else is
dask.distributed: a ``LocalCluster`` of worker processes on this machine (``local``), dask-cuda's
``LocalCUDACluster`` with one worker pinned to each GPU (``cuda``), or any running scheduler
(``tcp://host:8786``: an HPC allocation started by dask-jobqueue or dask-mpi, see
docs/hpc.md). A worker that dies has its tasks rerun by dask (``retries``).

Reductions are combined in a fixed binary tree over the block order, on every executor, so the
floating-point result is the same whichever executor ran the blocks.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from typing import Any

from ..core.errors import DeviceError, InvalidInput

SCHEDULERS = ("inline", "threads", "local", "cuda")


class Executor:
    """Runs functions over items; subclasses decide where."""

    name = "inline"

    def __init__(self) -> None:
        self.n_workers = 1

    def map_unordered(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> Iterator[tuple[int, Any]]:
        """``(index, fn(items[index]))`` for every item, in the order they finish."""
        for i, item in enumerate(items):
            yield i, fn(item)

    def tree_reduce(self, fn: Callable[[Any], Any], combine: Callable[[Any, Any], Any], items: Sequence[Any]) -> Any:
        """``combine`` the ``fn(item)`` of all items pairwise, neighbours first (a fixed tree)."""
        parts: list[Any] = [None] * len(items)
        for i, value in self.map_unordered(fn, items):
            parts[i] = value
        return _combine_tree(parts, combine)

    def close(self) -> None:
        """Release the workers (a cluster started here is shut down)."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name}, workers={self.n_workers})"


def _combine_tree(parts: list[Any], combine: Callable[[Any, Any], Any]) -> Any:
    if not parts:
        raise InvalidInput("nothing to reduce: no blocks")
    while len(parts) > 1:
        parts = [combine(parts[i], parts[i + 1]) if i + 1 < len(parts) else parts[i] for i in range(0, len(parts), 2)]
    return parts[0]


class ThreadExecutor(Executor):
    """A pool of threads in this process: NumPy, h5py reads and BLAS release the GIL."""

    name = "threads"

    def __init__(self, workers: int | None = None) -> None:
        self.n_workers = int(workers or os.cpu_count() or 1)
        self._pool = ThreadPoolExecutor(max_workers=self.n_workers, thread_name_prefix="usidgpu")

    def map_unordered(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> Iterator[tuple[int, Any]]:
        futures = {self._pool.submit(fn, item): i for i, item in enumerate(items)}
        pending = set(futures)
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    yield futures[fut], fut.result()
        finally:
            for fut in pending:
                fut.cancel()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class DaskExecutor(Executor):
    """Tasks on a dask.distributed cluster (one started here, or a running scheduler)."""

    def __init__(self, client: Any, cluster: Any = None, name: str = "dask", retries: int = 2, owned: bool = True):
        self.client, self.cluster, self.name, self.retries, self.owned = client, cluster, name, retries, owned
        info = client.scheduler_info()
        self.n_workers = max(len(info.get("workers", {})), 1)

    def map_unordered(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> Iterator[tuple[int, Any]]:
        from distributed import as_completed

        futures = self.client.map(fn, list(items), pure=False, retries=self.retries)
        index = {fut.key: i for i, fut in enumerate(futures)}
        try:
            for fut in as_completed(futures):
                yield index[fut.key], fut.result()
        finally:
            self.client.cancel([f for f in futures if not f.done()])

    def tree_reduce(self, fn: Callable[[Any], Any], combine: Callable[[Any, Any], Any], items: Sequence[Any]) -> Any:
        # the combines run on the workers too: only the final value travels back here
        parts = self.client.map(fn, list(items), pure=False, retries=self.retries)
        if not parts:
            raise InvalidInput("nothing to reduce: no blocks")
        while len(parts) > 1:
            parts = [
                self.client.submit(combine, parts[i], parts[i + 1], pure=False, retries=self.retries)
                if i + 1 < len(parts)
                else parts[i]
                for i in range(0, len(parts), 2)
            ]
        return parts[0].result()

    def close(self) -> None:
        if not self.owned:
            return  # the caller's client: theirs to close
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def _local_cluster(workers: int | None) -> DaskExecutor:
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise ImportError(
            "scheduler 'local' needs dask.distributed: pip install 'usidgpu[dask-cuda]' or 'distributed'"
        ) from None
    n = int(workers or os.cpu_count() or 1)
    # one thread per worker process: the blocks' NumPy/BLAS work is the parallelism
    cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0")
    return DaskExecutor(Client(cluster), cluster, name="local")


def _cuda_cluster(workers: int | None) -> DaskExecutor:
    from ..core.device import gpu_status

    ok, why = gpu_status()
    if not ok:
        raise DeviceError(f"scheduler 'cuda' needs a usable GPU: {why}")
    try:
        from dask_cuda import LocalCUDACluster
        from distributed import Client
    except ImportError:
        raise ImportError("scheduler 'cuda' needs dask-cuda: pip install 'usidgpu[dask-cuda]'") from None
    kwargs: dict[str, Any] = {"dashboard_address": ":0"}
    if workers:
        # The GPUs are those this process may use: a batch scheduler (SLURM, PBS) or the user
        # hands them over in CUDA_VISIBLE_DEVICES, which dask-cuda reads and which must not be
        # replaced by "0..n-1". n_workers takes the first n of them.
        import cupy

        visible = cupy.cuda.runtime.getDeviceCount()
        if int(workers) > visible:
            mask = os.environ.get("CUDA_VISIBLE_DEVICES")
            where = f" (CUDA_VISIBLE_DEVICES={mask})" if mask is not None else ""
            raise DeviceError(f"--workers {workers} asks for more GPUs than this process can use: {visible}{where}")
        kwargs["n_workers"] = int(workers)
    cluster = LocalCUDACluster(**kwargs)  # one worker per GPU, each sees its GPU as device 0
    return DaskExecutor(Client(cluster), cluster, name="cuda")


def get_executor(scheduler: str | Executor | Any | None = None, workers: int | None = None) -> Executor:
    """An executor for ``scheduler``.

    Parameters
    ----------
    scheduler : str, Executor or distributed.Client, optional
        ``None`` / ``"inline"``: this process, one block after another; ``"threads"``: a thread
        pool; ``"local"``: a dask ``LocalCluster`` of ``workers`` processes; ``"cuda"``: a
        dask-cuda ``LocalCUDACluster``, one worker per GPU; an address such as
        ``"tcp://10.0.0.5:8786"``: a running dask scheduler; or a ``distributed.Client``.
    workers : int, optional
        Threads or worker processes (default: the CPU count); GPUs for ``"cuda"``.

    Returns
    -------
    Executor
    """
    if isinstance(scheduler, Executor):
        return scheduler
    if scheduler is None or scheduler == "inline":
        return Executor()
    if scheduler == "threads":
        return ThreadExecutor(workers)
    if scheduler in ("local", "processes"):
        return _local_cluster(workers)
    if scheduler == "cuda":
        return _cuda_cluster(workers)
    if isinstance(scheduler, str) and "://" in scheduler:
        from distributed import Client

        try:
            client = Client(scheduler, timeout="20s")
        except OSError as exc:
            raise ConnectionError(f"cannot reach the dask scheduler at {scheduler}: {exc}") from None
        return DaskExecutor(client, None, name=scheduler)
    if type(scheduler).__name__ == "Client":
        return DaskExecutor(scheduler, None, name=str(getattr(scheduler, "scheduler", "dask")), owned=False)
    raise InvalidInput(
        f"unknown scheduler {scheduler!r}: use one of {SCHEDULERS} or a dask scheduler address (tcp://host:port)"
    )
