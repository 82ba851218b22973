"""cudasim: run the project's CUDA kernels on the CPU, checked, so CI without a GPU executes them.

A ``.cu`` source is compiled by the host C++ compiler (g++) together with ``runtime.hpp`` (the
CUDA keywords, built-in variables and intrinsics) and ``launcher.hpp`` (fibers, the grid loop,
fault trapping). Each thread of a block is a cooperative fiber that runs until it reaches
``__syncthreads``, a warp intrinsic or its end; the scheduler then checks the synchronization
against CUDA's rules (see ``runtime.hpp``). Each launch runs twice, threads resumed in ascending
and in descending order, on fresh copies of the arrays bounded by inaccessible guard pages, and
the two results must agree byte for byte. What the harness reports as :class:`KernelError`:

- a launch configuration CUDA refuses (block above 1024 threads, zero sizes, ...);
- an argument whose type does not match the kernel's parameter (a float64 scalar for a
  ``float`` parameter, a float32 array for ``double*``, a non-contiguous array, a read-only
  array for a non-const pointer);
- a warp intrinsic whose mask leaves out the caller, names lanes that do not exist (a full mask
  in a block that is not a multiple of 32 threads) or that do not arrive, or a shuffle that
  reads a lane outside the mask;
- ``__syncthreads`` reached while other threads exited, or at different call sites;
- results that differ between the two thread orders (a race: a missing barrier, a read of
  shared memory nobody wrote — shared memory is poisoned with a different byte in each run);
- an access outside an array (caught by the guard page at its end in the first run and at its
  start in the second), a write into a ``const`` input, a stack overflow, a kernel that runs past
  its time limit.

It is not a GPU: the arithmetic is the host's (no fused multiply-add: ``-ffp-contract=off``),
nothing is timed, and memory outside the kernel's arrays is not checked. Test-only: nothing here
ships in the wheel.

Usage (the CuPy stand-in routes ``cupy.RawModule`` / ``RawKernel`` here)::

    module = cudasim.Module(source_text, name_expressions=("gather_windows<float>",), filename="gather_windows.cu")
    kernel = module.get_function("gather_windows<float>")
    stats = kernel(grid=(n_blocks,), block=(256,), args=(image, out, np.int64(width), ...))
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
RUNTIME = HERE / "runtime.hpp"
LAUNCHER = HERE / "launcher.hpp"
#: The kernel-independent part, compiled once into a library every kernel module links against.
CORE_SOURCES = (HERE / "core.cpp", HERE / "core.hpp", RUNTIME)
#: Thread orders a launch runs in; "both" compares them.
ORDERS = {"ascending": 1, "descending": 2, "both": 3}
CXX_FLAGS = (
    "-std=gnu++17",  # GNU: a variadic macro may swallow the comma before an empty __VA_ARGS__
    "-O2",
    "-fPIC",
    "-shared",
    "-fno-strict-aliasing",
    # no fused multiply-add: the NumPy references do not fuse either
    "-ffp-contract=off",
    # shared variables are function statics switched between fibers; keep the optimizer from
    # reasoning that nobody else can see them
    "-fno-ipa-reference",
    "-U_FORTIFY_SOURCE",
    "-D__CUDA_ARCH__=900",
    "-DCUDASIM=1",
)

_EXTERN_C_KERNEL = re.compile(r'extern\s+"C"\s+__global__\s+void\s+(?:__launch_bounds__\s*\([^)]*\)\s*)?(\w+)\s*\(')
_C_TYPES = {
    ("f", 4): "float",
    ("f", 8): "double",
    ("i", 1): "signed char",
    ("i", 2): "short",
    ("i", 4): "int",
    ("i", 8): "long long",
    ("u", 1): "unsigned char",
    ("u", 2): "unsigned short",
    ("u", 4): "unsigned int",
    ("u", 8): "unsigned long long",
    ("b", 1): "bool",
}


class KernelError(RuntimeError):
    """A launch CUDA would refuse or a fault found while running the kernel on the CPU."""


class CompileError(RuntimeError):
    """The host compiler rejected the kernel source."""


@dataclass(frozen=True)
class Param:
    """One kernel parameter, as deduced from the compiled function's type."""

    pointer: bool
    const: bool
    kind: str  #: f (floating), i (signed), u (unsigned), b (bool), S (anything else)
    size: int  #: bytes of the value, or of the pointed-to element

    @property
    def ctype(self) -> str:
        base = _C_TYPES.get((self.kind, self.size), f"<{self.size}-byte type>")
        if self.pointer:
            return f"{'const ' if self.const else ''}{base}*"
        return base


def parse_signature(text: str) -> tuple[Param, ...]:
    """Parameters from the launcher's signature string (e.g. ``"Pcf8,Vi4"``)."""
    params = []
    for token in filter(None, text.split(",")):
        m = re.fullmatch(r"([PV])(c?)([fiubS])(\d+)", token)
        if not m:
            raise ValueError(f"unreadable signature token {token!r}")
        params.append(Param(m.group(1) == "P", m.group(2) == "c", m.group(3), int(m.group(4))))
    return tuple(params)


class _Stats(ctypes.Structure):
    _fields_ = [(name, ctypes.c_longlong) for name in ("blocks", "threads", "barriers", "warp_ops", "switches")]


class _Request(ctypes.Structure):
    _fields_ = [
        ("grid", ctypes.c_uint * 3),
        ("block", ctypes.c_uint * 3),
        ("n_args", ctypes.c_int),
        ("values", ctypes.POINTER(ctypes.c_void_p)),
        ("nbytes", ctypes.POINTER(ctypes.c_longlong)),
        ("orders", ctypes.c_int),
        ("timeout_s", ctypes.c_double),
    ]


class _Result(ctypes.Structure):
    _fields_ = [("error", ctypes.c_char * 4096), ("stats", _Stats)]


@dataclass(frozen=True)
class LaunchStats:
    """What one launch did (summed over the thread orders it ran in)."""

    blocks: int
    threads: int
    barriers: int
    warp_ops: int
    switches: int


def compiler() -> str:
    """The host C++ compiler (``$CXX``, else g++)."""
    cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if not cxx:
        raise CompileError("cudasim needs a C++ compiler (g++) to run CUDA kernels on the CPU")
    return cxx


@dataclass
class _Build:
    lib: ctypes.CDLL
    names: tuple[str, ...]


_BUILD_LOCK = threading.Lock()
#: One launch at a time: the C++ runtime keeps the running launch's state in globals.
_LAUNCH_LOCK = threading.Lock()
_LOADED: dict[str, ctypes.CDLL] = {}


def _cache_dir() -> Path:
    folder = os.environ.get("USIDGPU_CUDASIM_CACHE") or os.path.join(
        tempfile.gettempdir(), f"usidgpu-cudasim-{os.getuid()}"
    )
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _host_options(options: Sequence[str]) -> list[str]:
    """NVRTC options that mean something to the host compiler: macro definitions and include
    folders. Architecture, fast-math and language-standard flags are CUDA's business."""
    out: list[str] = []
    for opt in options:
        if opt.startswith(("-D", "-U", "-I")) or opt.startswith(("--define-macro=", "--include-path=")):
            out.append(opt.replace("--define-macro=", "-D").replace("--include-path=", "-I"))
    return out


def _compile(cxx: str, args: list[str], target: Path, what: str) -> None:
    """Compile into ``target`` atomically (a temporary name, then a rename), so concurrent test
    processes never load a half-written library."""
    tmp = target.with_name(f"{target.stem}.{os.getpid()}.{threading.get_ident()}.so")
    proc = subprocess.run([cxx, *CXX_FLAGS, *args, "-o", str(tmp)], capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise CompileError(f"{what}: the host compiler rejected the source:\n{proc.stderr[-6000:]}")
    os.replace(tmp, target)


def _core(cxx: str) -> Path:
    """The shared core library (built once per harness version and compiler)."""
    key = hashlib.sha256("\0".join([cxx, *CXX_FLAGS, *(p.read_text() for p in CORE_SOURCES)]).encode()).hexdigest()
    target = _cache_dir() / f"core-{key[:24]}.so"
    if not target.exists():
        _compile(cxx, [str(HERE / "core.cpp")], target, "cudasim core")
    return target


def _build(code: str, names: tuple[str, ...], options: tuple[str, ...], filename: str) -> _Build:
    cxx = compiler()
    host_opts = _host_options(options)
    exports = "\n".join(f"CUDASIM_EXPORT({i}, {name})" for i, name in enumerate(names))
    unit = (
        f'#include "{RUNTIME}"\n#line 1 "{filename}"\n{code}\n'
        f'#line 1 "<cudasim exports>"\n#include "{LAUNCHER}"\n{exports}\n'
    )
    with _BUILD_LOCK:
        core = _core(cxx)
        key = hashlib.sha256(
            "\0".join([unit, str(core), LAUNCHER.read_text(), (HERE / "core.hpp").read_text(), *host_opts]).encode()
        ).hexdigest()[:24]
        if key in _LOADED:
            return _Build(_LOADED[key], names)
        so = _cache_dir() / f"{key}.so"
        if not so.exists():
            src = so.with_suffix(".cpp")
            src.write_text(unit)
            # linked by absolute path: the module loads the one core, shared with every module
            _compile(cxx, [*host_opts, f"-I{HERE}", str(src), str(core)], so, filename)
        lib = ctypes.CDLL(str(so))
        _LOADED[key] = lib
        return _Build(lib, names)


def extern_c_kernels(code: str) -> list[str]:
    """Names of the ``extern "C" __global__`` kernels of a source."""
    return _EXTERN_C_KERNEL.findall(code)


class Module:
    """A CUDA source compiled for the CPU: the counterpart of ``cupy.RawModule``.

    Parameters
    ----------
    code : str
        The kernel source.
    name_expressions : sequence of str
        Template instantiations to make available (``"gather_windows<float>"``), as NVRTC's.
    options : sequence of str
        NVRTC options; ``-D``/``-U``/``-I`` reach the host compiler, the rest is ignored.
    filename : str, optional
        Name used in messages (``file:line``).
    """

    def __init__(
        self,
        code: str,
        name_expressions: Sequence[str] = (),
        options: Sequence[str] = (),
        filename: str | None = None,
    ):
        self.code = code
        self.options = tuple(options)
        self.filename = filename or "kernel.cu"
        self._names = list(dict.fromkeys([*extern_c_kernels(code), *name_expressions]))
        self._build: _Build | None = None
        self._lock = threading.Lock()

    def compile(self) -> None:
        """Compile now (otherwise the first :meth:`get_function` does)."""
        with self._lock:
            if self._build is None or self._build.names != tuple(self._names):
                self._build = _build(self.code, tuple(self._names), self.options, self.filename)

    def get_function(self, name: str) -> Kernel:
        """The kernel ``name``: an ``extern "C"`` kernel or a template instantiation."""
        with self._lock:
            if name not in self._names:
                self._names.append(name)  # NVRTC would need it in name_expressions; we instantiate it
        self.compile()
        assert self._build is not None
        return Kernel(self._build.lib, self._build.names.index(name), name)


def _check_pointer(name: str, i: int, p: Param, arg: Any) -> np.ndarray:
    if not isinstance(arg, np.ndarray):
        raise KernelError(f"{name}: argument {i} must be an array for parameter {p.ctype}, got {type(arg).__name__}")
    if not arg.flags.c_contiguous:
        raise KernelError(
            f"{name}: argument {i} is not C-contiguous: a kernel receives only the data pointer and would read "
            "the elements of a strided view from the wrong places"
        )
    dt = arg.dtype
    kind = {"c": "S", "V": "S"}.get(dt.kind, dt.kind)
    elem = dt.itemsize
    matches = (kind == p.kind or p.kind == "S") and elem == p.size
    if not matches:
        raise KernelError(f"{name}: argument {i} is a {dt} array but parameter {i} is {p.ctype}")
    if not p.const and not arg.flags.writeable:
        raise KernelError(f"{name}: argument {i} is read-only but parameter {i} ({p.ctype}) is written")
    return arg


def _check_value(name: str, i: int, p: Param, arg: Any) -> np.generic:
    if isinstance(arg, np.ndarray) and arg.size == 1:
        arg = arg.reshape(()).dtype.type(arg.reshape(())[()])
    if not isinstance(arg, np.generic):
        raise KernelError(
            f"{name}: argument {i} ({type(arg).__name__}) must be a NumPy scalar of the parameter's type {p.ctype}"
        )
    dt = arg.dtype
    kind = {"c": "S"}.get(dt.kind, dt.kind)
    if kind != p.kind or dt.itemsize != p.size:
        raise KernelError(
            f"{name}: argument {i} is a {dt} value ({dt.itemsize} bytes) but parameter {i} is {p.ctype} "
            f"({p.size} bytes): CUDA copies the parameter's size from the value's bytes and would read garbage"
        )
    return arg


def _dims(value: Any, what: str) -> tuple[int, int, int]:
    dims = (value,) if isinstance(value, (int, np.integer)) else tuple(value)
    if not 1 <= len(dims) <= 3 or not all(isinstance(d, (int, np.integer)) for d in dims):
        raise KernelError(f"{what} must be 1 to 3 integers, got {value!r}")
    dims = tuple(int(d) for d in dims) + (1,) * (3 - len(dims))
    if any(d < 0 or d >= 2**32 for d in dims):
        raise KernelError(f"invalid configuration argument: {what} {value!r}")
    return dims  # type: ignore[return-value]


class Kernel:
    """One compiled kernel; call it as CuPy's ``RawKernel``: ``kernel(grid, block, args)``."""

    def __init__(self, lib: ctypes.CDLL, index: int, name: str):
        self.name = name
        signature = getattr(lib, f"cudasim_signature_{index}")
        signature.restype = ctypes.c_char_p
        self.params = parse_signature(signature().decode())
        self._launch = getattr(lib, f"cudasim_launch_{index}")
        self._launch.restype = ctypes.c_int
        self._launch.argtypes = [ctypes.POINTER(_Request), ctypes.POINTER(_Result)]

    def __repr__(self) -> str:
        return f"<cudasim kernel {self.name}({', '.join(p.ctype for p in self.params)})>"

    def __call__(
        self,
        grid: Any,
        block: Any,
        args: Sequence[Any],
        shared_mem: int = 0,
        orders: str = "both",
        timeout: float = 120.0,
    ) -> LaunchStats:
        """Run the kernel over ``grid`` × ``block`` threads.

        Parameters
        ----------
        grid, block : int or tuple of 1 to 3 ints
        args : sequence
            C-contiguous NumPy arrays for pointer parameters (written back in place unless the
            pointer is const), NumPy scalars of exactly the parameter's type for value parameters.
        shared_mem : int
            Dynamic shared memory in bytes: must be 0 (not supported).
        orders : {"both", "ascending", "descending"}
            Thread orders to run; "both" fails on results that differ between them.
        timeout : float
            Seconds before the launch counts as hung.

        Returns
        -------
        LaunchStats

        Raises
        ------
        KernelError
        """
        if shared_mem:
            raise KernelError(f"{self.name}: dynamic shared memory is not supported by cudasim")
        if orders not in ORDERS:
            raise ValueError(f"orders must be one of {sorted(ORDERS)}, got {orders!r}")
        args = list(args)
        if len(args) != len(self.params):
            raise KernelError(f"{self.name} takes {len(self.params)} arguments, {len(args)} were given")
        n = len(args)
        values = (ctypes.c_void_p * max(n, 1))()
        nbytes = (ctypes.c_longlong * max(n, 1))()
        keep: list[Any] = []  # buffers that must outlive the call
        for i, (p, a) in enumerate(zip(self.params, args)):
            if p.pointer:
                arr = _check_pointer(self.name, i, p, a)
                keep.append(arr)
                values[i] = arr.ctypes.data if arr.size else None
                nbytes[i] = arr.nbytes
            else:
                scalar = _check_value(self.name, i, p, a)
                buf = ctypes.create_string_buffer(scalar.tobytes(), scalar.dtype.itemsize)
                keep.append(buf)
                values[i] = ctypes.addressof(buf)
                nbytes[i] = scalar.dtype.itemsize
        request = _Request(
            (ctypes.c_uint * 3)(*_dims(grid, "grid")),
            (ctypes.c_uint * 3)(*_dims(block, "block")),
            n,
            values,
            nbytes,
            ORDERS[orders],
            float(timeout),
        )
        result = _Result()
        with _LAUNCH_LOCK:
            rc = self._launch(ctypes.byref(request), ctypes.byref(result))
        if rc != 0:
            raise KernelError(f"{self.name}: {result.error.decode(errors='replace')}")
        s = result.stats
        return LaunchStats(s.blocks, s.threads, s.barriers, s.warp_ops, s.switches)
