"""usidgpu: USID (Universal Spectroscopic and Imaging Data) on GPUs and CPUs.

Read, write, validate, slice, reduce and stream USID HDF5 files — the files pyUSID and
pycroscopy write — on NumPy or CuPy, within a memory budget.

>>> import usidgpu
>>> with usidgpu.open("measurement.h5") as f:
...     ds = f.main_datasets()[0]
...     print(ds.pos_dims, ds.spec_dims, ds.nd_shape)
...     for block in ds.blocks(budget="1GB", device="auto"):
...         ...

Importing usidgpu never imports CuPy; the GPU is used only when asked for (``device="gpu"``)
or found (``device="auto"``).
"""

from . import atoms
from ._version import __version__
from .core.device import Device, gpu_available, select_device
from .core.errors import (
    BudgetError,
    DatasetNotFoundError,
    DeviceError,
    FileProblem,
    NotAGridError,
    NotMainError,
    NotUSIDError,
    ResultsError,
    UsidgpuError,
)
from .core.memory import memory_budget
from .core.stream import Block, BlockPlan
from .decompose import KMeansResult, NMFResult, PCAResult, SVDResult, kmeans, nmf, pca, svd
from .denoise import WindowedSVDResult, spectral_denoise, windowed_svd
from .remote import connect
from .usid import (
    Dimension,
    MainDataset,
    Problem,
    ResultsGroup,
    ResultsWriter,
    USIDFile,
    open,
    validate,
    write_main,
)
from .usid.hyperspy import from_hyperspy

__all__ = [
    "Block",
    "BlockPlan",
    "BudgetError",
    "DatasetNotFoundError",
    "Device",
    "DeviceError",
    "Dimension",
    "FileProblem",
    "KMeansResult",
    "MainDataset",
    "NMFResult",
    "NotAGridError",
    "NotMainError",
    "NotUSIDError",
    "PCAResult",
    "Problem",
    "ResultsError",
    "ResultsGroup",
    "ResultsWriter",
    "SVDResult",
    "USIDFile",
    "UsidgpuError",
    "WindowedSVDResult",
    "__version__",
    "atoms",
    "connect",
    "from_hyperspy",
    "gpu_available",
    "kmeans",
    "memory_budget",
    "nmf",
    "open",
    "pca",
    "select_device",
    "spectral_denoise",
    "svd",
    "validate",
    "windowed_svd",
    "write_main",
]
