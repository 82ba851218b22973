"""CUDA kernels: finding the shipped ``.cu`` sources and compiling them with CuPy's NVRTC
(``RawModule``), once per source, template instantiation, options and device."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InvalidType

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
    package = Path(__file__).resolve().parent.parent  # usidgpu/
    for candidate in (package / "kernels", package.parent / "kernels"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"usidgpu's CUDA kernel folder is missing (looked in {package / 'kernels'} and "
        f"{package.parent / 'kernels'}); the installation is incomplete"
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
        raise InvalidType(f"no CUDA kernel type for dtype {dt}") from None


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
        ``"fit_gaussian2d.cu"`` (the shipped kernel in :func:`kernel_dir`, see :func:`kernel_path`) or
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
