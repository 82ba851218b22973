"""``cupy.linalg`` with cuSOLVER's habits (``cupy/linalg/*.py``).

* NumPy arrays: ``svd``, ``qr``, ``cholesky``, ``inv``, ``pinv``, ``solve``, ``lstsq``,
  ``tensorinv`` raise ``LinAlgError('cupy.linalg only supports cupy.ndarray')``
  (``_util._assert_cupy_array``); the others the usual ``TypeError``.
* Shapes: ``svd``, ``qr``, ``eigh``, ``eigvalsh``, ``eig``, ``eigvals``, ``solve``, ``inv``,
  ``cholesky``, ``slogdet`` work on stacks of matrices; ``lstsq`` only on one 2-D matrix
  (``_assert_2d``), a stack raises ``LinAlgError``.
* Failures do not raise: cuSOLVER reports a singular or non-positive-definite matrix in a
  device-side ``info`` array that CuPy checks only under ``cupyx.errstate(linalg='raise')``
  (default ``'ignore'``), so ``cholesky``/``inv``/``solve`` return garbage silently. The
  stand-in returns NaN for each failing matrix (``LinAlgError`` under ``linalg='raise'``), so
  code that relies on catching ``LinAlgError`` for a fallback is caught out here as on a GPU.
* ``eig``/``eigvals`` always return complex arrays (``_geev``); ``lstsq``'s rank is a 0-d int32
  device array and its residual check reads it back (a host wait).
* Results are plain tuples, not NumPy's named tuples (``res.eigenvalues`` fails as with CuPy).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.linalg import LinAlgError

from . import _convert, _counters, _streams
from ._array import ndarray

#: ``cupyx.errstate(linalg=...)``: "ignore" (CuPy's default) or "raise".
_LINALG_MODE = {"linalg": "ignore"}


def _assert_cupy(*arrays: Any) -> None:
    for a in arrays:
        if type(a) is not ndarray:
            raise LinAlgError("cupy.linalg only supports cupy.ndarray")


def _assert_stacked_2d(*arrays: Any) -> None:
    for a in arrays:
        if a.ndim < 2:
            raise LinAlgError(f"{a.ndim}-dimensional array given. Array must be at least two-dimensional")


def _assert_2d(*arrays: Any) -> None:
    for a in arrays:
        if a.ndim != 2:
            raise LinAlgError(f"{a.ndim}-dimensional array given. Array must be two-dimensional")


def _assert_square(*arrays: Any) -> None:
    for a in arrays:
        m, n = a.shape[-2:]
        if m != n:
            raise LinAlgError("Last 2 dimensions of the array must be square")


def _data(x: Any) -> Any:
    if type(x) is ndarray:
        return x._a
    if isinstance(x, np.ndarray):
        raise _convert.host_error(x)
    return x


def _per_matrix(fn: Any, a: np.ndarray, *rest: np.ndarray) -> Any:
    """``fn`` over a stack of matrices, with NaN results for the matrices it fails on."""
    try:
        with np.errstate(all="ignore"):
            return fn(a, *rest)
    except LinAlgError:
        if _LINALG_MODE["linalg"] == "raise":
            raise
    if a.ndim == 2:
        eye = np.eye(a.shape[-1], dtype=a.dtype)
        with np.errstate(all="ignore"):
            res = fn(eye, *rest)
        return _nan_like(res)
    batch = np.broadcast_shapes(a.shape[:-2], *(r.shape[:-2] for r in rest if r.ndim > 2))
    a_b = np.broadcast_to(a, batch + a.shape[-2:])
    rest_b = [np.broadcast_to(r, batch + r.shape[-2:]) if r.ndim > 2 else r for r in rest]
    parts = [_per_matrix(fn, a_b[i], *(r[i] if r.ndim > 2 else r for r in rest_b)) for i in np.ndindex(*batch)]
    if isinstance(parts[0], tuple):
        return tuple(np.stack([p[k] for p in parts]).reshape(batch + parts[0][k].shape) for k in range(len(parts[0])))
    return np.stack(parts).reshape(batch + parts[0].shape)


def _nan_like(res: Any) -> Any:
    if isinstance(res, tuple):
        return tuple(_nan_like(r) for r in res)
    out = np.array(res, copy=True)
    if out.dtype.kind in "fc":
        out[...] = np.nan
    return out


def _run(fn: Any, *arrays: Any, **kwargs: Any) -> Any:
    _streams.compute()
    data = [_data(a) for a in arrays]
    res = _per_matrix(lambda *xs: fn(*xs, **kwargs), *data)
    return _convert.wrap(tuple(res) if isinstance(res, tuple) else res)


def cholesky(a: Any) -> ndarray:
    _assert_cupy(a)
    _assert_stacked_2d(a)
    _assert_square(a)
    return _run(np.linalg.cholesky, a)


def qr(a: Any, mode: str = "reduced") -> Any:
    _assert_cupy(a)
    _assert_stacked_2d(a)
    if mode not in ("reduced", "complete", "r", "raw"):
        raise ValueError(f"Unrecognized mode '{mode}'")
    return _run(np.linalg.qr, a, mode=mode)


def svd(a: Any, full_matrices: bool = True, compute_uv: bool = True) -> Any:
    _assert_cupy(a)
    return _run(np.linalg.svd, a, full_matrices=full_matrices, compute_uv=compute_uv)


def eigh(a: Any, UPLO: str = "L") -> tuple:
    _assert_stacked_2d(a)
    _assert_square(a)
    if UPLO not in ("L", "U"):
        raise ValueError("UPLO argument must be 'L' or 'U'")
    return _run(np.linalg.eigh, a, UPLO=UPLO)


def eigvalsh(a: Any, UPLO: str = "L") -> ndarray:
    _assert_stacked_2d(a)
    _assert_square(a)
    return _run(np.linalg.eigvalsh, a, UPLO=UPLO)


def eig(a: Any) -> tuple:
    _assert_stacked_2d(a)
    _assert_square(a)
    w, v = _run(np.linalg.eig, a)
    ct = np.result_type(a.dtype, np.complex64) if a.dtype.kind in "fc" else np.complex128
    return w.astype(ct, copy=False), v.astype(ct, copy=False)


def eigvals(a: Any) -> ndarray:
    _assert_stacked_2d(a)
    _assert_square(a)
    w = _run(np.linalg.eigvals, a)
    ct = np.result_type(a.dtype, np.complex64) if a.dtype.kind in "fc" else np.complex128
    return w.astype(ct, copy=False)


def solve(a: Any, b: Any) -> ndarray:
    _assert_cupy(a, b)
    _assert_stacked_2d(a)
    _assert_square(a)
    if b.ndim == 0:
        raise ValueError("b must have at least one dimension")
    if b.ndim == 1:
        if a.shape[-1] != b.size:
            raise ValueError("a must have (..., M, M) shape and b must have (M,) for one-dimensional b")
        # CuPy broadcasts a vector b over the stack (cupy.broadcast_to(b, a.shape[:-1]))
        return _run(lambda x, y: np.linalg.solve(x, np.broadcast_to(y, x.shape[:-1])[..., None])[..., 0], a, b)
    if a.shape[:-1] != b.shape[:-1]:
        # no broadcasting of the stack dimensions, unlike NumPy 2
        raise ValueError("a must have (..., M, M) shape and b must have (..., M, K) for multidimensional b")
    return _run(np.linalg.solve, a, b)


def inv(a: Any) -> ndarray:
    _assert_cupy(a)
    _assert_stacked_2d(a)
    _assert_square(a)
    return _run(np.linalg.inv, a)


def pinv(a: Any, rcond: float = 1e-15) -> ndarray:
    _assert_cupy(a)
    return _run(np.linalg.pinv, a, rcond=rcond)


def lstsq(a: Any, b: Any, rcond: Any = None) -> tuple:
    _assert_cupy(a, b)
    _assert_2d(a)
    if b.ndim > 2:
        raise LinAlgError(f"{b.ndim}-dimensional array given. Array must be at most two-dimensional")
    if a.shape[0] != b.shape[0]:
        raise LinAlgError("Incompatible dimensions")
    _streams.compute()
    with np.errstate(all="ignore"):
        x, resids, rank, s = np.linalg.lstsq(a._a, b._a, rcond=rcond)
    _counters.record("d2h", "cupy.linalg.lstsq: rank read back")
    _counters.record("syncs", "cupy.linalg.lstsq: `rank != n` on the host")
    return _convert.wrap(x), _convert.wrap(resids), _convert.wrap(np.array(rank, dtype=np.int32)), _convert.wrap(s)


def tensorinv(a: Any, ind: int = 2) -> ndarray:
    _assert_cupy(a)
    return _run(np.linalg.tensorinv, a, ind=ind)


def namespace() -> dict[str, Any]:
    """Objects for ``cupy.linalg``: the functions above and NumPy-computed ones for the rest."""
    from ._allowlist import NAMES
    from ._functions import Gap, generic

    mine = {
        "cholesky": cholesky,
        "qr": qr,
        "svd": svd,
        "eigh": eigh,
        "eigvalsh": eigvalsh,
        "eig": eig,
        "eigvals": eigvals,
        "solve": solve,
        "inv": inv,
        "pinv": pinv,
        "lstsq": lstsq,
        "tensorinv": tensorinv,
        "LinAlgError": LinAlgError,
    }
    ns: dict[str, Any] = {}
    for name in NAMES["cupy.linalg"]:
        if name in mine:
            obj = mine[name]
            if callable(obj) and not isinstance(obj, type):
                obj.__module__ = "cupy.linalg"
            ns[name] = obj
        elif name == "cross":
            ns[name] = generic("cupy.linalg", name, np.linalg.cross)
        elif hasattr(np.linalg, name):
            ns[name] = generic("cupy.linalg", name, getattr(np.linalg, name))
        else:
            ns[name] = Gap(f"cupy.linalg.{name}")
    return ns
