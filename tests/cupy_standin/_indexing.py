"""``x[key]`` and ``x[key] = value`` as CuPy does them (``cupy/_core/_routines_indexing.pyx``).

* Index arrays given as NumPy arrays or lists are copied to the device first
  (``_prepare_slice_list`` → ``core.array(s)``): a host → device transfer.
* Out-of-bounds *integer-array* indices wrap around (modulo the axis length) instead of raising
  ``IndexError`` (CuPy's take/scatter kernels). Scalar integer indices still raise. A test that
  relies on NumPy's ``IndexError`` for an array index therefore passes on NumPy and silently
  reads the wrong element on a GPU: the stand-in reads the wrapped element too.
* A boolean mask makes the output size depend on the data: CuPy reads the number of ``True``
  back to the host (``int(mask_scanned[-1])``), a hidden device → host transfer and host wait.
* Assignment: a device array or a scalar is written; a NumPy array (or list) through basic
  indexing goes to ``fill``, which refuses anything but a scalar with ``ValueError`` (gh-2079:
  CuPy refuses implicit assignment from CPU arrays); through advanced indexing (integer or
  boolean arrays) the value is copied to the device (``core.array(value)``).
* Integer indexing down to one element gives a 0-d device array that is a view, not a scalar.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _convert, _counters, _streams


def host_to_device(value: Any, what: str, dtype: Any = None) -> np.ndarray:
    """Copy host data into fresh "device" memory (a private NumPy array), counting the transfer."""
    if _convert.contains_device(value):
        value = _convert.unwrap(value)
    arr = np.array(value, dtype=dtype)  # a stand-in array nested in a list fails in __array__
    _convert.check_dtype(arr.dtype)
    _counters.record("h2d", what)
    return arr


def _consumes(s: Any) -> int:
    if s is None:
        return 0
    if isinstance(s, np.ndarray) and s.dtype.kind == "b":
        return max(s.ndim, 1)
    return 1


def prepare(a: np.ndarray, key: Any) -> tuple[Any, bool]:
    """The NumPy key for ``a`` and whether it holds an index array (advanced indexing)."""
    items = list(key) if isinstance(key, tuple) else [key]
    out: list[Any] = []
    advanced = False
    for s in items:
        if s is None or s is Ellipsis or isinstance(s, slice):
            out.append(s)
            continue
        if type(s) is _convert.ndarray:
            out.append(s._a)
            advanced = True
            continue
        fix_empty = isinstance(s, (list, tuple))
        if np.isscalar(s) and not isinstance(s, (bool, np.bool_)):
            out.append(s)  # a scalar integer stays a scalar (a view, bounds-checked)
            continue
        if isinstance(s, np.ndarray) and s.dtype.kind not in "biu":
            raise IndexError(f"arrays used as indices must be of integer or boolean type (actual: {s.dtype.type})")
        arr = host_to_device(s, f"index array {type(s).__name__}")
        if fix_empty and arr.size == 0:
            arr = arr.astype(np.int32)
        out.append(arr)
        advanced = True
    if not advanced:
        return (tuple(out) if isinstance(key, tuple) else out[0]), False
    _streams.compute()  # index arrays are read below (and by the gather/scatter kernel)
    # wrap out-of-bounds integer-array indices around the axis they index
    n_ellipsis = a.ndim - sum(_consumes(s) for s in out if s is not Ellipsis)
    axis = 0
    for i, s in enumerate(out):
        if s is Ellipsis:
            axis += max(n_ellipsis, 0)
            continue
        if isinstance(s, np.ndarray) and s.dtype.kind in "iu" and axis < a.ndim and a.shape[axis] > 0:
            out[i] = np.mod(s.astype(np.int64, copy=False), a.shape[axis])
        if isinstance(s, np.ndarray) and s.dtype.kind == "b" and s.size:
            _counters.record("d2h", "boolean mask: number of True read back")
            _counters.record("syncs", "boolean mask: output size depends on the data")
        axis += _consumes(s)
    return tuple(out), True


def getitem(x: Any, key: Any) -> Any:
    k, _advanced = prepare(x._a, key)  # a view (basic indexing) touches no data: no stream order
    res = x._a[k]
    if not isinstance(res, np.ndarray):
        # an element: CuPy returns a 0-d view, NumPy a scalar; the Ellipsis makes NumPy agree
        res = x._a[(k if isinstance(k, tuple) else (k,)) + (Ellipsis,)]
    return _convert.wrap(res)


def setitem(x: Any, key: Any, value: Any) -> None:
    _streams.compute()
    k, advanced = prepare(x._a, key)
    if type(value) is _convert.ndarray:
        v = value._a
    elif _convert.is_scalar(value):
        v = value
    elif advanced:
        v = host_to_device(value, f"assigned value {type(value).__name__}", dtype=x.dtype)
    else:
        # CuPy's ``fill``: only a scalar (or 0-d array) may come from the host
        v = np.asarray(value, dtype=x.dtype)
        if v.shape != ():
            raise ValueError("non-scalar numpy.ndarray cannot be used for fill")
        v = v[()]
    x._a[k] = v
