"""Scale out: block-wise processes on in-process, thread, dask and dask-cuda executors, with
concurrent zarr result stores and resume after any interruption."""

from .decompose import BlockKMeans, GramSVD, kmeans, svd
from .denoise import WindowedSVD, windowed_svd
from .executors import DaskExecutor, Executor, ThreadExecutor, get_executor
from .fits import PolynomialFit
from .process import Output, Process, load_class
from .resume import partial_runs, resume
from .store import BlockStore, RunInProgress

__all__ = [
    "BlockKMeans",
    "BlockStore",
    "GramSVD",
    "PolynomialFit",
    "RunInProgress",
    "WindowedSVD",
    "kmeans",
    "partial_runs",
    "resume",
    "svd",
    "windowed_svd",
    "DaskExecutor",
    "Executor",
    "Output",
    "Process",
    "ThreadExecutor",
    "get_executor",
    "load_class",
]
