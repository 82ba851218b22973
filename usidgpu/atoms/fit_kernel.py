"""The GPU engine of :func:`usidgpu.atoms.refine`: ``kernels/fit_gaussian2d.cu``, one thread
block per column, the whole LM iteration on the device (see the kernel's header).

Two precisions. ``float64`` runs exactly the iteration of the array engine. ``float32`` is for
cards whose double precision is a small fraction of their single precision (GeForce/RTX-class
cards next to many instruments run FP64 at 1/32–1/64 of FP32, which caps a float64 fit kernel
at roughly 0.4–2 M fits/s before overheads): the columns are handed over in a form float32
represents well — pixel coordinates relative to each column's start position, data shifted and
scaled to amplitude ≈ 1 — and solved with a scaled system and tolerances float32 can meet. Its
positions differ from the float64 ones by far less than their statistical error (the suite
compares both with the Cramér–Rao bound). ``auto`` picks float32 where the device reports an
FP32:FP64 throughput ratio of :data:`FP64_SLOW_RATIO` or more.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..core.errors import InvalidInput
from ..core.kernels import get_kernel
from .fit_settings import LAMBDA_DOWN, LAMBDA_MAX, LAMBDA_START, LAMBDA_UP, STEP_TOL, q_bounds

#: Threads per column: the packed fit disks hold ~50–400 pixels, a few per thread.
THREADS = 64
#: The kernel's reduction needs a multiple of 32 threads (full-mask shuffles), at least one per
#: normal-equation sum (36) and at most 32 warps (see the kernel's launch contract).
N_SUM = 36
MAX_THREADS = 1024
PRECISIONS = ("auto", "float64", "float32")
#: ``precision="auto"`` fits in float32 on devices whose FP32:FP64 throughput ratio is at least this
#: (data-centre cards: 2; GeForce/RTX and T4-class cards: 32–64).
FP64_SLOW_RATIO = 8
#: float32 stopping rules: a relative cost change below 2e-6 is float32 rounding of a sum over
#: a few hundred pixels, and a centre step below 1e-5 px is a hundred times below the statistical
#: error of any column worth fitting.
TOL_FLOAT32 = 2e-6
STEP_TOL_FLOAT32 = 1e-5
#: Floor of the Marquardt scaling, relative to the largest curvature (see lm_array): float32 needs
#: a floor above its own rounding.
DIAG_FLOOR = {"float64": 1e-9, "float32": 1e-6}


def check_threads(threads: int) -> int:
    """Validate the block size of the fit kernel (see its launch contract)."""
    if not isinstance(threads, (int, np.integer)) or threads % 32 or not N_SUM <= threads <= MAX_THREADS:
        raise InvalidInput(
            f"the fit kernel needs a block of a multiple of 32 threads between {N_SUM} and {MAX_THREADS}, "
            f"got {threads!r}"
        )
    return int(threads)


def fp64_ratio() -> int | None:
    """FP32:FP64 throughput ratio of the current CUDA device (None when it does not say)."""
    import cupy

    try:
        ratio = cupy.cuda.Device().attributes.get("SingleToDoublePrecisionPerfRatio")
    except Exception:  # an old driver or runtime without the attribute
        return None
    return int(ratio) if ratio else None


def choose_precision(precision: str) -> str:
    """Resolve ``auto`` for the current device; validate the name."""
    if precision not in PRECISIONS:
        raise InvalidInput(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision != "auto":
        return precision
    ratio = fp64_ratio()
    return "float32" if ratio is not None and ratio >= FP64_SLOW_RATIO else "float64"


def kernel_arguments(
    xp: Any,
    yy: Any,
    xx: Any,
    data: Any,
    weight: Any,
    p0: Any,
    start: Any,
    radius: float,
    max_iter: int,
    tol: float,
    precision: str = "float64",
) -> tuple[np.dtype, tuple, Any]:
    """The fit kernel's arguments for a batch of columns, in the kernel's precision.

    Parameters
    ----------
    xp : module
        numpy or cupy (the array module of the inputs).
    yy, xx, data, weight, p0, start, radius, max_iter, tol
        As for :func:`usidgpu.atoms.fit.lm_array`.
    precision : {"float64", "float32"}

    Returns
    -------
    dtype : numpy dtype
        The kernel instantiation (``fit_gaussian2d<float>`` or ``<double>``).
    args : tuple
        In the kernel's parameter order; ``args[4]`` (parameters), ``args[-2]`` (converged) and
        ``args[-1]`` (iterations) are written by the kernel.
    finish : callable
        ``finish(args[4])`` → the fitted parameters in float64 and absolute coordinates.
    """
    if precision not in ("float64", "float32"):
        raise InvalidInput(f"precision must be 'float64' or 'float32', got {precision!r}")
    n, m = data.shape
    q_lo, q_hi = q_bounds(radius)
    dtype: np.dtype
    if precision == "float64":
        dtype, tol_run, step_tol = np.dtype(np.float64), tol, STEP_TOL
        coords = (yy, xx)
        values = data
        params = xp.array(p0, dtype=np.float64)  # a copy: the kernel writes the result into it
        origin = xp.ascontiguousarray(start, dtype=np.float64)

        def finish(fitted: Any) -> Any:
            return fitted

    else:
        dtype, tol_run, step_tol = np.dtype(np.float32), max(tol, TOL_FLOAT32), max(STEP_TOL, STEP_TOL_FLOAT32)
        sy, sx = start[:, 0:1], start[:, 1:2]
        coords = (yy - sy, xx - sx)  # within ±radius of 0: no large magnitudes in float32
        scale = xp.where(p0[:, 0] > 0, p0[:, 0], 1.0)[:, None]
        offset = p0[:, 6:7]
        values = (data - offset) / scale * (weight > 0)
        scaled = xp.array(p0, dtype=np.float64)
        scaled[:, 0:1] /= scale
        scaled[:, 1:2] -= sy
        scaled[:, 2:3] -= sx
        scaled[:, 6:7] = (scaled[:, 6:7] - offset) / scale
        params = scaled.astype(np.float32)
        origin = xp.zeros((n, 2), dtype=np.float32)

        def finish(fitted: Any) -> Any:
            p = fitted.astype(np.float64)
            p[:, 0:1] *= scale
            p[:, 1:2] += sy
            p[:, 2:3] += sx
            p[:, 6:7] = p[:, 6:7] * scale + offset
            return p

    scalar = dtype.type
    args = (
        xp.ascontiguousarray(coords[0], dtype=dtype),
        xp.ascontiguousarray(coords[1], dtype=dtype),
        xp.ascontiguousarray(values, dtype=dtype),
        xp.ascontiguousarray(weight, dtype=dtype),
        params,
        origin,
        np.int32(n),
        np.int32(m),
        scalar(radius),
        scalar(q_lo),
        scalar(q_hi),
        np.int32(max_iter),
        scalar(tol_run),
        scalar(LAMBDA_START),
        scalar(LAMBDA_DOWN),
        scalar(LAMBDA_UP),
        scalar(LAMBDA_MAX),
        scalar(step_tol),
        scalar(DIAG_FLOOR[precision]),
        xp.zeros(n, dtype=np.bool_),
        xp.zeros(n, dtype=np.int64),
    )
    return dtype, args, finish


def lm_kernel(
    yy: Any,
    xx: Any,
    data: Any,
    weight: Any,
    p0: Any,
    start: Any,
    radius: float,
    max_iter: int,
    tol: float,
    precision: str = "float64",
    threads: int = THREADS,
):
    """Run the batched LM kernel on CuPy arrays (see :func:`usidgpu.atoms.fit.lm_array`).

    Parameters
    ----------
    yy, xx, data, weight : (N, M) device arrays
        Packed pixels of :func:`usidgpu.atoms.fit.prepare` (absolute coordinates), or of
        :func:`usidgpu.atoms.neighbours.prepare_subtract`: the kernel multiplies residuals and
        Jacobian rows by the weight, so besides 0/1 masks it takes the noise weights (square
        roots of inverse variances) of the neighbour-aware fit.
    p0 : (N, 7) start parameters; start : (N, 2) start positions
    precision : {"float64", "float32"}
    threads : int
        Threads per column (block size).

    Returns
    -------
    p : (N, 7) float64, converged : (N,) bool, n_iter : (N,) int64 — CuPy arrays. ``n_iter`` is −1
    for columns whose block refused to run (a launch that breaks the kernel's contract).
    """
    import cupy as cp

    threads = check_threads(threads)
    n = data.shape[0]
    if n == 0:
        return cp.array(p0, dtype=cp.float64), cp.zeros(0, dtype=cp.bool_), cp.zeros(0, dtype=cp.int64)
    dtype, args, finish = kernel_arguments(cp, yy, xx, data, weight, p0, start, radius, max_iter, tol, precision)
    kernel = get_kernel("fit_gaussian2d.cu", "fit_gaussian2d", dtype=dtype)
    kernel((n,), (threads,), args)
    return finish(args[4]), args[-2], args[-1]
