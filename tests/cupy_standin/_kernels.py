"""``cupy.RawModule`` / ``cupy.RawKernel``, routed to the CPU kernel harness ``tests/cudasim``.

Compilation happens on first use, as CuPy's (``cupy/_core/raw.pyx``). A launch
``kernel(grid, block, args, shared_mem=0, stream=None)`` converts each argument as CuPy's
``cupy/cuda/function.pyx _pointer`` does:

* a device array → a pointer to its data: the harness gets the NumPy array holding them and
  writes into it in place. It must be C-contiguous: CuPy would pass the data pointer of a
  strided view and the kernel would read the wrong elements, so the stand-in raises TypeError;
* a NumPy array of size 1 → passed by value (its dtype is the C type), of any other size →
  CuPy's TypeError ("... Only numpy.ndarrays of size one can be passed by value ...");
* ``None`` → a null pointer (passed on as ``None``);
* a scalar → ``_scalar.CScalar``: Python ``int`` → int64 (uint64 from 2**63 on), ``float`` →
  float64, ``bool`` → bool, ``complex`` → complex128, NumPy scalars keep their dtype; anything
  else raises ``TypeError('Unsupported type ...')``.

``grid`` and ``block`` must be tuples (CuPy's ``Function.__call__(tuple grid, tuple block,
...)``). The launch runs at once, after the work queued on its stream, and is counted.
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np

from . import _convert, _counters, _streams


def _cscalar(value: Any) -> np.generic:
    t = type(value)
    if t is bool:
        return np.bool_(value)
    if t is float:
        return np.float64(value)
    if t is complex:
        return np.complex128(value)
    if t is int:
        if value >= 0x8000000000000000:
            return np.uint64(value)  # OverflowError beyond 2**64, as PyArray_Pack
        return np.int64(value)
    if isinstance(value, np.generic):
        return value
    raise TypeError(f"Unsupported type {type(value)}")


def kernel_argument(x: Any) -> Any:
    """What the harness receives for one kernel argument (CuPy's ``_pointer`` rules)."""
    if x is None:
        return None
    if type(x) is _convert.ndarray:
        if not x._a.flags.c_contiguous:
            raise TypeError(
                f"cupy_standin: a non-C-contiguous device array (shape {x.shape}, strides {x.strides}) was passed to "
                "a RawKernel: CuPy passes only its data pointer, so the kernel would read the elements of the "
                "strided view from the wrong places; pass cupy.ascontiguousarray(x)"
            )
        return x._a
    if isinstance(x, np.ndarray):
        if x.size == 1:
            return x.reshape(())[()]
        raise TypeError(
            f"You are trying to pass a numpy.ndarray of shape {x.shape} as a kernel parameter. Only "
            "numpy.ndarrays of size one can be passed by value. If you meant to pass a pointer to __global__ "
            "memory, you need to pass a cupy.ndarray instead."
        )
    return _cscalar(x)


def _harness() -> Any:
    try:
        return importlib.import_module("cudasim")
    except ImportError as exc:
        raise RuntimeError(
            "cupy_standin routes RawModule/RawKernel to the CPU kernel harness `cudasim` (tests/cudasim), "
            f"which cannot be imported: {exc}"
        ) from exc


class RawKernel:
    """``cupy.RawKernel(code, name, options=(), backend='nvrtc', *, translate_cucomplex=False,
    enable_cooperative_groups=False, jitify=None)``."""

    def __init__(
        self,
        code: str,
        name: str,
        options: tuple = (),
        backend: str = "nvrtc",
        *,
        translate_cucomplex: bool = False,
        enable_cooperative_groups: bool = False,
        jitify: Any = None,
    ):
        if not isinstance(code, str) or not isinstance(name, str):
            raise TypeError("RawKernel(code, name): code and name must be str")
        if not isinstance(options, tuple):
            raise TypeError(f"Argument 'options' has incorrect type (expected tuple, got {type(options).__name__})")
        self.code, self.name, self.options, self.backend = code, name, options, backend
        self.translate_cucomplex = translate_cucomplex
        self.enable_cooperative_groups = enable_cooperative_groups
        self.file_path = None
        self.name_expressions: tuple[str, ...] | None = None
        self.__name__ = name
        self._module: Any = None  # the harness module this kernel comes from
        self._kernel: Any = None

    @property
    def kernel(self) -> Any:
        """The compiled kernel (compiled on first use)."""
        if self._kernel is None:
            if self._module is None:
                self._module = _harness().Module(self.code, (), self.options, filename=None)
            self._kernel = self._module.get_function(self.name)
        return self._kernel

    def compile(self, log_stream: Any = None) -> None:
        self._kernel = None
        self.kernel  # noqa: B018

    def __call__(self, grid: Any, block: Any, args: Any, *, shared_mem: int = 0, stream: Any = None) -> None:
        if not isinstance(grid, tuple):
            raise TypeError(f"Argument 'grid' has incorrect type (expected tuple, got {type(grid).__name__})")
        if not isinstance(block, tuple):
            raise TypeError(f"Argument 'block' has incorrect type (expected tuple, got {type(block).__name__})")
        converted = [kernel_argument(a) for a in args]
        kernel = self.kernel
        _streams.compute(stream)
        _counters.record("launches", f"{self.name} grid={grid} block={block}")
        kernel(grid, block, converted, shared_mem=shared_mem)

    def __repr__(self) -> str:
        return f"<cupy.RawKernel {self.name}>"

    def __getattr__(self, name: str) -> Any:
        if name in (
            "attributes",
            "max_threads_per_block",
            "num_regs",
            "shared_size_bytes",
            "local_size_bytes",
            "ptx_version",
        ):
            raise NotImplementedError(f"cupy_standin: RawKernel.{name} is not imitated")
        raise AttributeError(f"'cupy._core.raw.RawKernel' object has no attribute '{name}'")


class RawModule:
    """``cupy.RawModule(*, code=None, path=None, options=(), backend='nvrtc',
    translate_cucomplex=False, enable_cooperative_groups=False, name_expressions=None,
    jitify=None)``: ``path`` (a cubin/PTX file) cannot run on the CPU and raises."""

    def __init__(
        self,
        *,
        code: str | None = None,
        path: str | None = None,
        options: tuple = (),
        backend: str = "nvrtc",
        translate_cucomplex: bool = False,
        enable_cooperative_groups: bool = False,
        name_expressions: Any = None,
        jitify: Any = None,
    ):
        if (code is None) == (path is None):
            raise TypeError("Exactly one of `code` and `path` keyword arguments must be given.")
        if not isinstance(options, tuple):
            raise TypeError(f"Argument 'options' has incorrect type (expected tuple, got {type(options).__name__})")
        if name_expressions is not None:
            if code is None:
                raise ValueError("need CUDA C++ code for the requested kernels")
            if backend != "nvrtc":
                raise ValueError("only nvrtc supports retrieving the mangled names for the given name expressions")
            name_expressions = tuple(name_expressions)
        if path is not None:
            raise NotImplementedError("cupy_standin cannot run precompiled cubin/PTX modules (RawModule(path=...))")
        self.code, self.file_path, self.options, self.backend = code, path, options, backend
        self.name_expressions = name_expressions
        self.translate_cucomplex = translate_cucomplex
        self.enable_cooperative_groups = enable_cooperative_groups
        self._module: Any = None

    @property
    def module(self) -> Any:
        if self._module is None:
            self._module = _harness().Module(self.code, self.name_expressions or (), self.options, filename=None)
            self._module.compile()
        return self._module

    def compile(self, log_stream: Any = None) -> None:
        self.module  # noqa: B018

    def get_function(self, name: str) -> RawKernel:
        if not isinstance(name, str):
            raise TypeError(f"Argument 'name' has incorrect type (expected str, got {type(name).__name__})")
        kernel = RawKernel(self.code, name, self.options, self.backend, translate_cucomplex=self.translate_cucomplex)
        kernel.name_expressions = self.name_expressions
        kernel._module = self.module
        kernel.kernel  # noqa: B018  (compiled and looked up now, as CuPy's)
        return kernel

    def get_global(self, name: str) -> Any:
        raise NotImplementedError("cupy_standin: RawModule.get_global is not imitated")


RawKernel.__module__ = RawModule.__module__ = "cupy"
