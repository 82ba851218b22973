"""Small dense linear algebra shared by the decompositions, on NumPy or CuPy."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np


def acc_dtype(work: np.dtype) -> np.dtype:
    """Accumulation dtype: float64 (complex128 for complex data)."""
    return np.dtype(np.complex128 if np.dtype(work).kind == "c" else np.float64)


def gram(block: Any) -> Any:
    """``blockᴴ · block`` in the block's dtype (NumPy dispatches ``aᵀa`` to BLAS syrk)."""
    return block.conj().T @ block


@functools.cache
def _blas_threads() -> Any:
    """The process's BLAS thread pools (threadpoolctl inspects the loaded libraries once)."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def one_blas_thread() -> Any:
    """A context in which BLAS and LAPACK run on one thread.

    For small dense problems (matrices of a few hundred rows, matrix-vector products): threaded,
    every call waits for all its threads, and one descheduled by another process stalls it — on
    a busy 2-core machine a 600² Cholesky took 8–15 ms on one thread and 10–400 ms on two.
    """
    return _blas_threads().limit(limits=1, user_api="blas")


def top_eigh(xp: Any, g: Any, k: int) -> tuple[Any, Any]:
    """The ``k`` largest eigenpairs of a Hermitian matrix, largest first."""
    n = g.shape[0]
    if xp is np and n >= 128 and k <= n // 4:
        import scipy.sparse.linalg

        # Lanczos (ARPACK) to full precision: for a 1024² Gram matrix and k = 16 about 13 ms,
        # against 50 ms for LAPACK's subset solver and 130 ms for all eigenpairs. Its
        # matrix-vector products are too small to share between BLAS threads: threaded, each
        # waits for every thread, and one descheduled by another process (a busy 2-core machine)
        # stalled the whole solve to 110 ms in half the runs
        try:
            v0 = np.random.default_rng(0).standard_normal(n).astype(g.dtype)
            with one_blas_thread():
                vals, vecs = scipy.sparse.linalg.eigsh(g, k=k, which="LA", tol=0, v0=v0)
            order = np.argsort(vals)[::-1]
            return vals[order], vecs[:, order]
        except scipy.sparse.linalg.ArpackError:
            pass  # no convergence, or a zero matrix (ARPACK needs a non-zero start): LAPACK
    if xp is np and k < n:
        import scipy.linalg

        vals, vecs = scipy.linalg.eigh(g, subset_by_index=[n - k, n - 1])
    else:
        vals, vecs = xp.linalg.eigh(g)
        vals, vecs = vals[n - k :], vecs[:, n - k :]
    return vals[::-1], vecs[:, ::-1]


def orthonormalize(xp: Any, a: Any) -> Any:
    """An orthonormal basis of the columns of ``a`` (thin QR)."""
    q, _r = xp.linalg.qr(a)
    return q


def normalize_signs(xp: Any, u: Any, v: Any) -> tuple[Any, Any]:
    """Make the largest-magnitude entry of each row of ``v`` real and positive.

    SVD factors are unique only up to a sign (a phase, for complex data) per component; this
    fixes one so results are reproducible across methods and devices. ``u · diag(s) · v`` is
    unchanged.
    """
    idx = xp.argmax(xp.abs(v), axis=1)
    pivot = v[xp.arange(v.shape[0]), idx]
    phase = pivot / xp.where(xp.abs(pivot) == 0, 1, xp.abs(pivot))
    phase = xp.where(xp.abs(pivot) == 0, 1, phase)
    return u * phase[None, :], v * phase.conj()[:, None]


def svd_small(xp: Any, a: Any) -> tuple[Any, Any, Any]:
    """Thin SVD of a matrix that fits in memory."""
    return xp.linalg.svd(a, full_matrices=False)


def sum_squares(xp: Any, x: Any, axis: int | None = None) -> Any:
    """Σ|x|² (over ``axis``, or all) accumulated in float64 without a float64 copy of ``x``."""
    spec = {None: "ij,ij->", 0: "ij,ij->j", 1: "ij,ij->i"}[axis]
    parts = (x.real, x.imag) if x.dtype.kind == "c" else (x,)
    if xp is np:
        # einsum casts through a small buffer: no full-size temporary, unlike abs(x)**2
        return sum(np.einsum(spec, p, p, dtype=np.float64) for p in parts)
    return sum(xp.sum(p * p, axis=axis, dtype=np.float64) for p in parts)


def column_sums(xp: Any, x: Any, acc: Any) -> Any:
    """Σ over rows as one BLAS product in the data's precision (4× faster than a float64
    reduction), returned in ``acc``; blocks are mean-shifted, so float32 loses nothing here."""
    return (xp.ones(x.shape[0], dtype=x.dtype) @ x).astype(acc)
