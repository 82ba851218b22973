"""Moving data between host and device: CuPy's constructors and converters.

* ``array``/``asarray``/``asanyarray`` copy host data (NumPy arrays, lists, scalars) into new
  device memory: an asynchronous copy on the current stream (``cupy/_core/core.pyx
  _array_default``), queued as in ``_streams``, counted as a host → device transfer. Device
  arrays are used in place (``asarray(x) is x``); a (nested) list of device arrays is stacked on
  the device; a device array mixed with host values fails in ``__array__``, as on CuPy.
* ``ascontiguousarray``/``asfortranarray`` take device arrays only (typed Cython arguments in
  CuPy) and return 0-d input as 1-d.
* ``empty``/``empty_like`` return garbage-filled memory (``_poison``).
* ``asnumpy`` copies down (counted); the file readers upload what NumPy read, the writers
  download first.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from . import _allowlist, _config, _convert, _counters, _memory, _streams
from ._array import ndarray
from ._poison import poison


def _is_device_sequence(obj: Any) -> bool:
    """A (nested) list/tuple whose leaves are all device arrays (stacked on the device)."""
    if type(obj) is ndarray:
        return True
    return type(obj) in (list, tuple) and len(obj) > 0 and all(_is_device_sequence(o) for o in obj)


def array(
    obj: Any,
    dtype: Any = None,
    copy: Any = True,
    order: Any = "K",
    subok: bool = False,
    ndmin: int = 0,
    *,
    blocking: bool = False,
) -> ndarray:
    """``cupy.array``: device arrays are copied on the device; host data are copied up.

    The upload is an asynchronous copy on the current stream (queued, see ``_streams``); from
    pinned memory it reads the host buffer when it runs, from pageable memory (and Python
    sequences) the data are staged now. ``blocking=True`` waits for it.
    """
    if subok:
        raise NotImplementedError
    order = "K" if order is None else order
    if dtype is not None:
        _convert.check_dtype(dtype)
    if type(obj) is ndarray:
        res = _convert.call(np.array, (obj,), {"dtype": dtype, "copy": copy, "order": order, "ndmin": ndmin})
        return res
    if _is_device_sequence(obj):
        return _convert.call(np.array, (obj,), {"dtype": dtype, "order": order, "ndmin": ndmin})
    return _upload(obj, dtype, order, ndmin, blocking, "cupy.array")


def _upload(obj: Any, dtype: Any, order: Any, ndmin: int, blocking: bool, what: str) -> ndarray:
    if isinstance(obj, np.ndarray) and str(order).upper() in ("K", "A"):
        order = "F" if (obj.flags.f_contiguous and not obj.flags.c_contiguous) else "C"
    elif str(order).upper() in ("K", "A"):
        order = "C"
    if _convert.contains_device(obj):
        obj = [o for o in obj]  # a device array mixed with host values: NumPy calls __array__
    host = np.array(obj, dtype=dtype, copy=None, ndmin=ndmin, order=order)
    if not host.dtype.isnative:
        host = host.astype(host.dtype.newbyteorder("="))  # CuPy swaps big-endian input
    _convert.check_dtype(host.dtype)
    late = isinstance(obj, np.ndarray) and host is obj and _memory.is_pinned(obj)
    if host.ndim == 0:
        _counters.record("h2d", f"{what} scalar {host.dtype}")
        _streams.compute()
        return _convert.from_numpy(np.array(host))
    dest = np.empty(host.shape, dtype=host.dtype, order=order)
    if _config.CONFIG.poison_empty:
        poison(dest)
    source = host if late else (host.copy(order=order) if host is obj else host)
    x = _convert.from_numpy(dest)
    _counters.record("h2d", f"{what} {host.shape} {host.dtype}{' (pinned)' if late else ''}")
    stream = _streams.get_current_stream()
    _streams.enqueue(stream, lambda: np.copyto(dest, source), f"{what} {host.shape} {host.dtype}")
    if blocking:
        stream.synchronize()
    return x


def asarray(a: Any, dtype: Any = None, order: Any = None, *, copy: Any = None, blocking: bool = False) -> ndarray:
    """``cupy.asarray``: the array itself when it is already a device array of that dtype."""
    return array(a, dtype, copy, order, blocking=blocking)


def asanyarray(a: Any, dtype: Any = None, order: Any = None, *, copy: Any = None, blocking: bool = False) -> ndarray:
    return array(a, dtype, copy, order, blocking=blocking)


def _typed(a: Any, fname: str) -> None:
    if type(a) is not ndarray:
        raise TypeError(
            f"Argument 'a' has incorrect type (expected cupy._core.core._ndarray_base, got {type(a).__name__})"
        )


def ascontiguousarray(a: Any, dtype: Any = None) -> ndarray:
    """``cupy.ascontiguousarray``: device arrays only; 0-d arrays come back 1-d (``core.pyx``)."""
    _typed(a, "ascontiguousarray")
    dt = a.dtype if dtype is None else _convert.check_dtype(dtype)
    if dt == a.dtype and a._a.flags.c_contiguous and a.ndim:
        return a
    res = _convert.call(np.array, (a,), {"dtype": dt, "order": "C", "copy": True})
    return res.reshape(1) if res.ndim == 0 else res


def asfortranarray(a: Any, dtype: Any = None) -> ndarray:
    _typed(a, "asfortranarray")
    dt = a.dtype if dtype is None else _convert.check_dtype(dtype)
    if dt == a.dtype and a._a.flags.f_contiguous and a.ndim:
        return a
    res = _convert.call(np.array, (a,), {"dtype": dt, "order": "F", "copy": True})
    return res.reshape(1) if res.ndim == 0 else res


def empty(shape: Any, dtype: Any = float, order: str = "C") -> ndarray:
    """``cupy.empty``: uninitialized memory, which the stand-in fills with garbage."""
    return ndarray(shape, dtype, order=order)


def empty_like(prototype: Any, dtype: Any = None, order: str = "K", subok: Any = None, shape: Any = None) -> ndarray:
    if type(prototype) is not ndarray:
        raise (
            _convert.host_error(prototype)
            if isinstance(prototype, np.ndarray)
            else TypeError(f"'{type(prototype).__name__}' is not a cupy.ndarray")
        )
    if subok:
        raise TypeError("subok is not supported yet")
    a = np.empty_like(prototype._a, dtype=dtype, order=order, shape=shape)
    if _config.CONFIG.poison_empty:
        poison(a)
    return _convert.from_numpy(a)


def asnumpy(a: Any, stream: Any = None, order: str = "C", out: Any = None, *, blocking: bool = True) -> np.ndarray:
    """``cupy.asnumpy``: device arrays are copied down (a transfer and a host wait), anything
    else goes through ``numpy.asarray``."""
    if type(a) is ndarray:
        return a.get(stream=stream, order=order, out=out, blocking=blocking)
    temp = np.asarray(a, order=order)
    if out is not None:
        out[...] = temp
        return out
    return temp


def get_array_module(*args: Any) -> Any:
    """The stand-in ``cupy`` module if any argument is a device array, else ``numpy``."""
    from ._modules import MODULES

    for a in args:
        if type(a) is ndarray:
            return MODULES["cupy"]
    return np


def is_available() -> bool:
    return True


def get_default_memory_pool() -> _memory.MemoryPool:
    return _memory.DEFAULT_POOL


def get_default_pinned_memory_pool() -> _memory.PinnedMemoryPool:
    return _memory.DEFAULT_PINNED_POOL


def show_config(*, _full: bool = False) -> None:
    sys.stdout.write(
        f"CuPy stand-in (cupy_standin, imitating CuPy {_allowlist.CUPY_REF}): {_config.CONFIG.device_name}\n"
    )


def _from_host_reader(np_func: Any, name: str) -> Any:
    def f(*args: Any, **kwargs: Any) -> Any:
        res = np_func(*args, **kwargs)
        return asarray(res) if isinstance(res, np.ndarray) else res

    return f


def _to_host_writer(np_func: Any, name: str) -> Any:
    def down(v: Any) -> Any:
        return v.get() if type(v) is ndarray else v

    def f(*args: Any, **kwargs: Any) -> Any:
        return np_func(*[down(a) for a in args], **{k: down(v) for k, v in kwargs.items()})

    return f


class _NpzFile:
    """``cupy.load`` of an ``.npz``: arrays come up to the device when read."""

    def __init__(self, npz: Any):
        self.npz, self.files = npz, npz.files

    def __getitem__(self, key: str) -> ndarray:
        return asarray(self.npz[key])

    def __enter__(self) -> _NpzFile:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self.npz.close()


def load(file: Any, mmap_mode: Any = None, allow_pickle: Any = None) -> Any:
    obj = np.load(file, mmap_mode=mmap_mode, allow_pickle=bool(allow_pickle))
    if isinstance(obj, np.ndarray):
        return asarray(obj)
    if hasattr(obj, "files"):
        return _NpzFile(obj)
    return obj
