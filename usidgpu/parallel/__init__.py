"""Scale out: block-wise processes on in-process, thread, dask and dask-cuda executors, with
concurrent zarr result stores and resume after any interruption."""

from .executors import DaskExecutor, Executor, ThreadExecutor, get_executor
from .process import Output, Process, load_class
from .store import BlockStore

__all__ = [
    "BlockStore",
    "DaskExecutor",
    "Executor",
    "Output",
    "Process",
    "ThreadExecutor",
    "get_executor",
    "load_class",
]
