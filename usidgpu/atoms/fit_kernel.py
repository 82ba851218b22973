"""The GPU engine of :func:`usidgpu.atoms.refine`: ``kernels/fit_gaussian2d.cu``, one thread
block per column, the whole LM iteration on the device (see the kernel's header)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..backend import get_kernel
from .fit import LAMBDA_DOWN, LAMBDA_MAX, LAMBDA_START, LAMBDA_UP, STEP_TOL, q_bounds

#: Threads per column: the packed fit disks hold ~50–400 pixels, a few per thread.
THREADS = 64


def lm_kernel(yy: Any, xx: Any, data: Any, weight: Any, p0: Any, start: Any, radius: float, max_iter: int, tol: float):
    """Run the batched LM kernel on CuPy arrays (see :func:`usidgpu.atoms.fit.lm_array`).

    Returns
    -------
    p : (N, 7), converged : (N,) bool, n_iter : (N,) int64 — CuPy arrays
    """
    import cupy as cp

    n, m = data.shape
    params = cp.ascontiguousarray(p0, dtype=cp.float64).copy()
    converged = cp.zeros(n, dtype=cp.bool_)
    n_iter = cp.zeros(n, dtype=cp.int64)
    if n == 0:
        return params, converged, n_iter
    q_lo, q_hi = q_bounds(radius)
    kernel = get_kernel("fit_gaussian2d.cu", "fit_gaussian2d")
    args = (
        cp.ascontiguousarray(yy, dtype=cp.float64),
        cp.ascontiguousarray(xx, dtype=cp.float64),
        cp.ascontiguousarray(data, dtype=cp.float64),
        cp.ascontiguousarray(weight, dtype=cp.float64),
        params,
        cp.ascontiguousarray(start, dtype=cp.float64),
        np.int32(n),
        np.int32(m),
        np.float64(radius),
        np.float64(q_lo),
        np.float64(q_hi),
        np.int32(max_iter),
        np.float64(tol),
        np.float64(LAMBDA_START),
        np.float64(LAMBDA_DOWN),
        np.float64(LAMBDA_UP),
        np.float64(LAMBDA_MAX),
        np.float64(STEP_TOL),
        converged,
        n_iter,
    )
    kernel((n,), (THREADS,), args)
    return params, converged, n_iter
