"""Compute device, memory budget, array-module helpers and CUDA kernel loading.

One algorithm body runs on NumPy and on CuPy: functions take the array module from their input
(:func:`get_array_module`) and never import CuPy at module import time, so ``import usidgpu`` works
on machines without CUDA.

Device choice
    ``auto`` (default) uses a GPU when CuPy is installed and a CUDA device answers, else the CPU;
    ``gpu`` raises :class:`~usidgpu.errors.DeviceError` when no GPU is usable (never a silent CPU
    run); ``cpu`` always uses NumPy. The environment variable ``USIDGPU_DEVICE`` sets the default.

Memory budget
    Bytes that a streamed computation may hold at once. Default: a fraction of the free device
    memory (GPU) or of the available RAM (CPU). ``USIDGPU_MEMORY`` sets the default; strings such
    as ``"2GB"``, ``"512MiB"`` or plain byte counts are accepted everywhere.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from .errors import BudgetError, DeviceError

log = logging.getLogger("usidgpu")

DEVICE_ENV = "USIDGPU_DEVICE"
MEMORY_ENV = "USIDGPU_MEMORY"
DEVICES = ("auto", "cpu", "gpu")
#: Fraction of free memory a computation takes when no budget is given.
DEFAULT_BUDGET_FRACTION = 0.25

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kb": 1000,
    "kib": 1024,
    "m": 1024**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "g": 1024**3,
    "gb": 1000**3,
    "gib": 1024**3,
    "t": 1024**4,
    "tb": 1000**4,
    "tib": 1024**4,
}


def parse_bytes(value: int | float | str) -> int:
    """Turn a memory size into a number of bytes.

    Parameters
    ----------
    value : int, float or str
        Bytes as a number, or a string such as ``"2GB"`` (decimal, 2·10⁹), ``"2GiB"`` or ``"2G"``
        (binary, 2·2³⁰), ``"512 MiB"``, ``"1.5e9"``.

    Returns
    -------
    int
        The size in bytes (at least 1).

    Raises
    ------
    BudgetError
        When the value cannot be read or is not positive.
    """
    if isinstance(value, bool):
        raise BudgetError(f"memory size must be a number of bytes or a string like '2GB', not {value!r}")
    if isinstance(value, (int, np.integer, float, np.floating)):
        n = float(value)
    elif isinstance(value, str):
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*", value)
        if not m or m.group(2).lower() not in _UNITS:
            raise BudgetError(
                f"cannot read memory size {value!r}: use bytes or a number with a unit "
                "(kB, MB, GB, TB, KiB, MiB, GiB, TiB)"
            )
        n = float(m.group(1)) * _UNITS[m.group(2).lower()]
    else:
        raise BudgetError(f"memory size must be a number of bytes or a string like '2GB', not {value!r}")
    if not np.isfinite(n) or n < 1:
        raise BudgetError(f"memory size must be positive, got {value!r}")
    return int(n)


def format_bytes(n: float) -> str:
    """Human-readable size with binary units, e.g. ``1.5 GiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


# --------------------------------------------------------------------------------------------
# GPU discovery
# --------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def gpu_status() -> tuple[bool, str]:
    """Whether a CUDA GPU is usable through CuPy, and why (not).

    Returns
    -------
    usable : bool
    description : str
        The GPU's name when usable, otherwise the reason it is not (CuPy missing, no driver, ...).
    """
    if importlib.util.find_spec("cupy") is None:
        return False, "CuPy is not installed (pip install 'usidgpu[cuda12]' or '[cuda13]')"
    try:
        import cupy

        n = cupy.cuda.runtime.getDeviceCount()
        if n < 1:
            return False, "CuPy found no CUDA device"
        dev = cupy.cuda.Device()
        props = cupy.cuda.runtime.getDeviceProperties(dev.id)
        name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
        # A tiny allocation proves that the driver and runtime really work together.
        cupy.zeros(1, dtype=np.float32).sum().item()
        return True, f"GPU {dev.id}: {name}"
    except Exception as exc:  # any CUDA/driver failure means "not usable"
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return False, f"CuPy cannot use a GPU ({msg})"


def gpu_available() -> bool:
    """True when CuPy is installed and a CUDA device works."""
    return gpu_status()[0]


@dataclass(frozen=True)
class Device:
    """The compute device a call will use.

    Attributes
    ----------
    kind : {"cpu", "gpu"}
    requested : {"auto", "cpu", "gpu"}
        What the caller asked for.
    description : str
        For GPUs the device name; for the CPU why it was chosen (e.g. ``auto`` without CuPy).
    """

    kind: str
    requested: str
    description: str

    @property
    def xp(self) -> ModuleType:
        """The array module of this device: :mod:`numpy` or :mod:`cupy`."""
        if self.kind == "gpu":
            import cupy

            return cupy
        return np

    @property
    def is_gpu(self) -> bool:
        return self.kind == "gpu"

    def __str__(self) -> str:
        if self.requested == "auto":
            return f"{self.kind} (auto: {self.description})"
        return f"{self.kind} ({self.description})"


def select_device(device: str | Device | None = None) -> Device:
    """Resolve ``auto | cpu | gpu`` into the device that will run.

    Parameters
    ----------
    device : {"auto", "cpu", "gpu"}, Device or None
        None reads ``USIDGPU_DEVICE`` (default ``auto``).

    Returns
    -------
    Device
        Its ``str()`` says which device was chosen and why, for logs and CLI output.

    Raises
    ------
    DeviceError
        ``gpu`` was requested and no GPU is usable, or the name is unknown.
    """
    if isinstance(device, Device):
        return device
    requested = (device if device is not None else os.environ.get(DEVICE_ENV, "auto")).strip().lower()
    if requested not in DEVICES:
        raise DeviceError(f"unknown device {requested!r}: choose one of {', '.join(DEVICES)}")
    if requested == "cpu":
        return Device("cpu", "cpu", "NumPy")
    usable, why = gpu_status()
    if requested == "gpu":
        if not usable:
            raise DeviceError(f"--device gpu was requested but no GPU is usable: {why}")
        return Device("gpu", "gpu", why)
    chosen = Device("gpu", "auto", why) if usable else Device("cpu", "auto", f"NumPy; no GPU: {why}")
    log.info("device: %s", chosen)
    return chosen


# --------------------------------------------------------------------------------------------
# Memory budget
# --------------------------------------------------------------------------------------------


def free_memory(device: str | Device = "cpu") -> int:
    """Bytes free right now on the device (GPU: free device memory + CuPy pool; CPU: available RAM)."""
    dev = select_device(device)
    if dev.is_gpu:
        import cupy

        free, _total = cupy.cuda.Device().mem_info
        return int(free + cupy.get_default_memory_pool().free_bytes())
    import psutil

    return int(psutil.virtual_memory().available)


def memory_budget(
    budget: int | float | str | None = None,
    device: str | Device = "cpu",
    fraction: float = DEFAULT_BUDGET_FRACTION,
) -> int:
    """The memory budget, in bytes, of a computation on ``device``.

    Parameters
    ----------
    budget : int, float, str or None
        An explicit size (``"2GB"``, bytes). None reads ``USIDGPU_MEMORY`` and otherwise takes
        ``fraction`` of :func:`free_memory`.
    device : str or Device
        Device whose free memory sets the default.
    fraction : float
        Share of free memory used by default.

    Returns
    -------
    int
    """
    if budget is None:
        budget = os.environ.get(MEMORY_ENV) or None
    if budget is not None:
        return parse_bytes(budget)
    if not 0 < fraction <= 1:
        raise BudgetError(f"budget fraction must be in (0, 1], got {fraction}")
    return max(1, int(free_memory(device) * fraction))


# --------------------------------------------------------------------------------------------
# Array helpers: one algorithm body for NumPy and CuPy
# --------------------------------------------------------------------------------------------


def is_cupy_array(x: Any) -> bool:
    """True for CuPy arrays, without importing CuPy."""
    return type(x).__module__.split(".")[0] == "cupy"


def get_array_module(*arrays: Any) -> ModuleType:
    """:mod:`cupy` if any argument is a CuPy array, else :mod:`numpy`."""
    for a in arrays:
        if is_cupy_array(a):
            import cupy

            return cupy
    return np


def asnumpy(x: Any) -> np.ndarray:
    """Copy a CuPy array to the host; NumPy arrays (and array-likes) pass through."""
    if is_cupy_array(x):
        return x.get()
    return np.asarray(x)


def to_device(x: Any, device: str | Device = "cpu") -> Any:
    """Move an array to ``device`` (NumPy for ``cpu``, CuPy for ``gpu``)."""
    dev = select_device(device)
    if dev.is_gpu:
        import cupy

        return cupy.asarray(x)
    return asnumpy(x)


# --------------------------------------------------------------------------------------------
# CUDA kernels (CuPy RawModule), compiled once per device and dtype
# --------------------------------------------------------------------------------------------

_CTYPES = {
    np.dtype(np.float32): "float",
    np.dtype(np.float64): "double",
    np.dtype(np.int32): "int",
    np.dtype(np.uint32): "unsigned int",
    np.dtype(np.int64): "long long",
    np.dtype(np.uint64): "unsigned long long",
    np.dtype(np.uint8): "unsigned char",
    np.dtype(np.uint16): "unsigned short",
    np.dtype(np.int16): "short",
    np.dtype(np.complex64): "complex<float>",
    np.dtype(np.complex128): "complex<double>",
}


def kernel_dir() -> Path:
    """Folder holding the CUDA sources (``*.cu``).

    In an installed wheel they live in ``usidgpu/kernels/`` (force-included at build time); in a
    source checkout or editable install in the repository's top-level ``kernels/``.
    """
    here = Path(__file__).resolve().parent
    for candidate in (here / "kernels", here.parent / "kernels"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"usidgpu's CUDA kernel folder is missing (looked in {here / 'kernels'} and "
        f"{here.parent / 'kernels'}); the installation is incomplete"
    )


def kernel_path(filename: str | os.PathLike) -> Path:
    """Where a CUDA source is: a bare file name (``"fit_gaussian2d.cu"``) always means the shipped
    kernel in :func:`kernel_dir` — never a file of that name in the current directory, which would
    otherwise be compiled instead; a path with a folder part is taken as given."""
    path = Path(filename)
    if len(path.parts) == 1:
        return kernel_dir() / path
    return path


def kernel_source(filename: str | os.PathLike) -> str:
    """Text of a CUDA source (see :func:`kernel_path`)."""
    return kernel_path(filename).read_text(encoding="utf-8")


def ctype_of(dtype: Any) -> str:
    """C++ type name used to instantiate a kernel template for ``dtype``."""
    dt = np.dtype(dtype)
    try:
        return _CTYPES[dt]
    except KeyError:
        raise TypeError(f"no CUDA kernel type for dtype {dt}") from None


@functools.cache
def _compiled_module(path: str, name_expressions: tuple[str, ...], options: tuple[str, ...], device_id: int):
    import cupy

    # the #line directive makes NVRTC's messages (and the CPU harness's) name the kernel's file
    code = f'#line 1 "{Path(path).name}"\n' + kernel_source(path)
    with cupy.cuda.Device(device_id):
        module = cupy.RawModule(code=code, options=options, name_expressions=name_expressions or None)
        module.compile()
    return module


def clear_kernel_cache() -> None:
    """Forget compiled kernels (e.g. after the CUDA device or the array library changed)."""
    _compiled_module.cache_clear()
    _kernel.cache_clear()


@functools.cache
def _kernel(path: str, expr: str, templated: bool, options: tuple[str, ...], device_id: int):
    # RawModule.get_function builds a new RawKernel object on every call: cache the kernel itself,
    # so a kernel is looked up once and the same object comes back
    module = _compiled_module(path, (expr,) if templated else (), options, device_id)
    return module.get_function(expr)


def get_kernel(filename: str | os.PathLike, name: str, dtype: Any = None, options: tuple[str, ...] = ("-std=c++17",)):
    """A compiled CUDA kernel from a source in ``kernels/``, cached per device and dtype.

    Parameters
    ----------
    filename : str or path-like
        ``"overlap_add.cu"`` (the shipped kernel in :func:`kernel_dir`, see :func:`kernel_path`) or
        a path to a ``.cu`` file.
    name : str
        ``extern "C"`` function name, or the name of a ``template <typename T> __global__`` kernel
        when ``dtype`` is given.
    dtype : dtype, optional
        Instantiates the template as ``name<ctype>`` (float, double, complex<float>, ...).
    options : tuple of str
        NVRTC options.

    Returns
    -------
    cupy.RawKernel
        The same object for the same source, name, dtype, options and device.
    """
    import cupy

    path = kernel_path(filename)
    expr = f"{name}<{ctype_of(dtype)}>" if dtype is not None else name
    return _kernel(str(path.resolve()), expr, dtype is not None, tuple(options), cupy.cuda.Device().id)
