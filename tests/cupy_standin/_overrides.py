"""CuPy functions that behave differently from NumPy's of the same name.

* ``take``/``take_along_axis``/``put``: out-of-bounds indices wrap around (CuPy's kernels),
  host index arrays are uploaded;
* ``diagonal``: a writable view (NumPy's is read-only);
* ``argmax``/``argmin`` take ``dtype`` (CuPy's third positional parameter);
* ``sort``/``argsort``: only stable sorting, ``kind`` anything else raises NotImplementedError;
* names NumPy 2 removed that CuPy keeps (``msort``, ``asfarray``, ``in1d``, the type helpers)
  and the ones CuPy turned into RuntimeErrors (``find_common_type`` ...);
* ``fuse`` (runs the Python function), ``memoize``, ``r_``/``c_``/``mgrid``/``ogrid``.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from . import _convert, _indexing, _streams
from ._array import ndarray
from ._creation import asarray


def _device_indices(indices: Any, what: str) -> Any:
    if type(indices) is ndarray:
        return indices
    if _convert.is_scalar(indices):
        return indices
    return _convert.from_numpy(_indexing.host_to_device(indices, what, dtype=np.int64))


def take(a: Any, indices: Any, axis: Any = None, out: Any = None) -> ndarray:
    """``cupy.take``: host indices are copied up; out-of-bounds indices wrap around."""
    if type(a) is not ndarray:
        raise AttributeError(f"'{type(a).__name__}' object has no attribute 'take'")
    idx = _device_indices(indices, "take indices")
    return _convert.call(np.take, (a, idx), {"axis": axis, "out": out, "mode": "wrap"})


def take_along_axis(a: Any, indices: Any, axis: Any) -> ndarray:
    """``cupy.take_along_axis``: fancy indexing underneath, so out-of-bounds indices wrap."""
    if type(a) is not ndarray or type(indices) is not ndarray:
        bad = a if type(a) is not ndarray else indices
        raise _convert.host_error(bad)
    if axis is None:
        a, axis = a.ravel(), 0
    _streams.compute()
    n = a.shape[axis]
    wrapped = _convert.from_numpy(np.mod(indices._a, n)) if n else indices
    return _convert.call(np.take_along_axis, (a, wrapped), {"axis": axis})


def put(a: Any, ind: Any, v: Any, mode: str = "wrap") -> None:
    if mode not in ("raise", "wrap", "clip"):
        raise ValueError("clipmode not understood")
    if type(a) is not ndarray:
        raise TypeError(f"Unsupported type {type(a)}")
    idx = _device_indices(ind, "put indices")
    val = (
        v
        if (type(v) is ndarray or _convert.is_scalar(v))
        else _convert.from_numpy(_indexing.host_to_device(v, "put values", dtype=a.dtype))
    )
    _convert.call(np.put, (a, idx, val), {"mode": mode})


def diagonal(a: Any, offset: int = 0, axis1: int = 0, axis2: int = 1) -> ndarray:
    """``cupy.diagonal``: a writable view (NumPy's is read-only)."""
    if type(a) is not ndarray:
        raise _convert.host_error(a)
    _streams.compute()
    d = np.diagonal(a._a, offset, axis1, axis2)
    if a._a.flags.writeable:
        d.flags.writeable = True
    return _convert.wrap(d)


def _arg_reduction(np_func: Any, name: str):
    def f(a: Any, axis: Any = None, dtype: Any = None, out: Any = None, keepdims: bool = False) -> ndarray:
        res = _convert.call(np_func, (a,), {"axis": axis, "keepdims": keepdims})
        if dtype is not None:
            res = res.astype(dtype, copy=False)
        if out is not None:
            if type(out) is not ndarray:
                raise _convert.host_error(out)
            out[...] = res
            return out
        return res

    return f


argmax = _arg_reduction(np.argmax, "argmax")
argmin = _arg_reduction(np.argmin, "argmin")


def sort(a: Any, axis: Any = -1, kind: Any = None) -> ndarray:
    """``cupy.sort``: a sorted copy (``kind`` other than 'stable' raises, as CuPy's)."""
    if type(a) is not ndarray:
        raise AttributeError(f"'{type(a).__name__}' object has no attribute 'copy'")
    ret = a.flatten() if axis is None else a.copy()
    ret.sort(axis=-1 if axis is None else axis, kind=kind)
    return ret


def argsort(a: Any, axis: Any = -1, kind: Any = None) -> ndarray:
    if type(a) is not ndarray:
        raise AttributeError(f"'{type(a).__name__}' object has no attribute 'argsort'")
    if axis is None:
        return a.ravel().argsort(kind=kind)
    return a.argsort(axis=axis, kind=kind)


def msort(a: Any) -> ndarray:
    return _convert.call(np.sort, (a,), {"axis": 0})


def asfarray(a: Any, dtype: Any = np.float64) -> ndarray:
    if not np.issubdtype(dtype, np.inexact):
        dtype = np.float64
    return asarray(a, dtype=dtype)


def in1d(ar1: Any, ar2: Any, assume_unique: bool = False, invert: bool = False, *, kind: Any = None) -> ndarray:
    return _convert.call(np.isin, (ar1, ar2), {"assume_unique": assume_unique, "invert": invert, "kind": kind}).ravel()


def fuse(*args: Any, **kwargs: Any) -> Any:
    """``cupy.fuse``: the kernel fusion is not modelled; the function runs as written."""
    if len(args) == 1 and callable(args[0]) and not kwargs:
        return args[0]
    return lambda f: f


def memoize(for_each_device: bool = False) -> Any:
    def decorator(f: Any) -> Any:
        cached = functools.cache(f)
        _MEMOS.append(cached)
        return cached

    return decorator


_MEMOS: list = []


def clear_memo() -> None:
    for m in _MEMOS:
        m.cache_clear()


class _IndexTrick:
    """``cupy.r_``, ``c_``, ``mgrid``, ``ogrid``: NumPy's, with device results."""

    def __init__(self, np_obj: Any):
        self._np = np_obj

    def __getitem__(self, key: Any) -> Any:
        return _convert.call(self._np.__getitem__, (key,), {})

    def __len__(self) -> int:
        return 0


def _removed_in_numpy2(recommendation: str) -> Any:
    def f(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"This function has been removed in NumPy v2.\nUse {recommendation} instead.\n")

    return f


def obj2sctype(rep: Any, default: Any = None) -> Any:
    if isinstance(rep, type) and issubclass(rep, np.generic):
        return rep
    if isinstance(rep, np.ndarray):
        return rep.dtype.type
    try:
        return np.dtype(rep).type
    except Exception:
        return default


def issubclass_(arg1: Any, arg2: Any) -> bool:
    try:
        return issubclass(arg1, arg2)
    except TypeError:
        return False


def issubsctype(arg1: Any, arg2: Any) -> bool:
    return issubclass(obj2sctype(arg1), obj2sctype(arg2))


def sctype2char(sctype: Any) -> str:
    t = obj2sctype(sctype)
    if t is None:
        raise ValueError("unrecognized type")
    return np.dtype(t).char


def issctype(rep: Any) -> bool:
    if not isinstance(rep, (type, np.dtype)):
        return False
    try:
        t = obj2sctype(rep)
        return bool(t and t != np.object_)
    except Exception:
        return False
