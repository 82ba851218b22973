"""The border between device and host: wrapping NumPy results, refusing NumPy inputs.

* :func:`unwrap` turns stand-in arrays (also inside lists and tuples) into the NumPy arrays that
  hold their data, and refuses NumPy arrays with CuPy's ``TypeError("Unsupported type <class
  'numpy.ndarray'>")``: CuPy passes every non-CuPy argument of a kernel to ``_scalar.CScalar``
  (``cupy/_core/_kernel.pyx _preprocess_arg``), which accepts only Python and NumPy *scalars*,
  so a host array reaching device code fails instead of being copied silently.
* :func:`wrap` turns NumPy results into stand-in arrays; NumPy scalars become 0-d device arrays,
  because CuPy's reductions and elementwise operations always return device arrays.
* Ownership: a stand-in array either owns its buffer (``base is None``, counted in the memory
  pool) or is a view of the array that owns it (``base`` is that array), as in CuPy.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

import numpy as np

from . import _memory, _streams

#: Set by ``_array`` (the class is defined there).
ndarray: Any = None

_PY_SCALARS = frozenset({bool, int, float, complex})
_OWNERS: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
_OWNERS_LOCK = threading.Lock()


def host_error(value: Any) -> TypeError:
    """The error CuPy raises for a non-scalar, non-CuPy argument (``_scalar.CScalar``)."""
    return TypeError(f"Unsupported type {type(value)}")


def is_scalar(value: Any) -> bool:
    """A value CuPy accepts as a kernel scalar (``_scalar.scalar_type_set``): exact Python
    ``bool/int/float/complex`` or a NumPy scalar of a numeric type."""
    t = type(value)
    return t in _PY_SCALARS or (isinstance(value, np.generic) and value.dtype.kind in "biufc")


def check_dtype(dtype: Any) -> np.dtype:
    """A dtype CuPy can hold (``cupy/_core/_dtype.pyx check_supported_dtype``), else ValueError."""
    dt = np.dtype(dtype)
    if not dt.isnative:
        raise ValueError(f"Unsupported dtype {dt} with big-endian byte-order")
    if dt.kind in "biufc":
        return dt
    if dt.kind == "V" and dt.subdtype is None and dt.itemsize and not dt.hasobject:
        return dt  # structured and void dtypes: bytes only
    raise ValueError(f"Unsupported dtype {dt}")


def unwrap(value: Any, seen: dict[int, Any] | None = None) -> Any:
    """NumPy-level view of an argument: stand-in arrays → their data; NumPy arrays refused."""
    t = type(value)
    if t is ndarray:
        if seen is not None:
            seen[id(value._a)] = value
        return value._a
    if isinstance(value, np.ndarray):
        raise host_error(value)
    if t is list or t is tuple:
        return t(unwrap(v, seen) for v in value)
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return t(*(unwrap(v, seen) for v in value))
    return value


def contains_device(value: Any) -> bool:
    if type(value) is ndarray:
        return True
    if type(value) in (list, tuple):
        return any(contains_device(v) for v in value)
    return False


def root_of(a: np.ndarray) -> np.ndarray:
    """The NumPy array at the bottom of a chain of views."""
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


def adopt(x: Any, a: np.ndarray) -> Any:
    """Make the (new) stand-in array ``x`` hold ``a``: a view of the array owning ``a``'s buffer,
    or the owner itself, counted in the memory pool until it dies."""
    check_dtype(a.dtype)
    x._a = a
    x._device = _streams.TLS.device
    root = root_of(a)
    with _OWNERS_LOCK:
        owner = _OWNERS.get(id(root))
        if owner is not None and root_of(owner._a) is root:
            x._base = owner
            return x
        n = _memory.DEFAULT_POOL.malloc(root.nbytes)
        x._base = None
        _OWNERS[id(root)] = x
    weakref.finalize(x, _memory.DEFAULT_POOL._release, n)
    return x


def from_numpy(a: np.ndarray) -> Any:
    """A stand-in array on the NumPy array ``a`` (which must not be host memory a caller owns)."""
    return adopt(ndarray.__new__(ndarray), a)


def wrap(result: Any, seen: dict[int, Any] | None = None) -> Any:
    """Stand-in arrays for the NumPy arrays and scalars in ``result``.

    A result that *is* the data of an argument (``out=``, ``asarray(x)``, ``astype(copy=False)``)
    comes back as that very argument. Tuples come back as plain tuples (CuPy returns no named
    tuples from ``linalg``), lists as lists.
    """
    if isinstance(result, np.ndarray):
        if seen:
            hit = seen.get(id(result))
            if hit is not None:
                return hit
        return from_numpy(result)
    if isinstance(result, np.generic) and result.dtype.kind in "biufcV":
        return from_numpy(np.array(result))
    if isinstance(result, tuple):
        return tuple(wrap(r, seen) for r in result)
    if isinstance(result, list):
        return [wrap(r, seen) for r in result]
    return result


def call(fn: Any, args: tuple, kwargs: dict) -> Any:
    """Run a NumPy function on the data of device arguments and wrap its result.

    NumPy arrays among the arguments are refused; the call runs after the work queued on the
    current stream, and floating-point errors never warn (GPU kernels do not report them).
    """
    seen: dict[int, Any] = {}
    uargs = [unwrap(a, seen) for a in args]
    ukwargs = {k: unwrap(v, seen) for k, v in kwargs.items()}
    _streams.compute()
    with np.errstate(all="ignore"):
        result = fn(*uargs, **ukwargs)
    return wrap(result, seen)
