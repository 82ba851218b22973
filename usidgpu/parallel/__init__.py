"""Scale out: the block-wise Process framework on in-process, thread, dask and dask-cuda executors,
with concurrent zarr block stores and resume after any interruption.

The block-wise analyses built on it live with their analyses — :mod:`usidgpu.decompose.blockwise`
(``GramSVD``, ``BlockKMeans``, ``svd_blockwise``, ``kmeans_blockwise``) and
:mod:`usidgpu.denoise.blockwise` (``WindowedSVD``, ``windowed_svd_blockwise``); their old names
here still work and warn.
"""

from .._deprecated import moved
from ..storage.locks import RunInProgress
from ..storage.sidecar import BlockStore
from .executors import DaskExecutor, Executor, ThreadExecutor, get_executor
from .fits import PolynomialFit
from .process import Output, Process, load_class
from .resume import partial_runs, resume

_OLD = {"GramSVD": "GramSVD", "BlockKMeans": "BlockKMeans", "svd": "svd_blockwise", "kmeans": "kmeans_blockwise"}
_decompose = moved(__name__, "usidgpu.decompose.blockwise", _OLD)
_denoise = moved(
    __name__, "usidgpu.denoise.blockwise", {"WindowedSVD": "WindowedSVD", "windowed_svd": "windowed_svd_blockwise"}
)


def __getattr__(name: str):
    # the block-wise analyses sit above this package: looked up lazily, with a deprecation
    return _decompose(name) if name in _OLD else _denoise(name)


__all__ = [
    "BlockStore",
    "DaskExecutor",
    "Executor",
    "Output",
    "PolynomialFit",
    "Process",
    "RunInProgress",
    "ThreadExecutor",
    "get_executor",
    "load_class",
    "partial_runs",
    "resume",
]
