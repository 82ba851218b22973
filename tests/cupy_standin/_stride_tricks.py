"""``cupy.lib.stride_tricks`` (``cupy/lib/stride_tricks.py``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _convert, _counters
from ._array import ndarray


def as_strided(x: Any, shape: Any = None, strides: Any = None) -> ndarray:
    """A view with the given shape and strides (writable, as CuPy's)."""
    if type(x) is not ndarray:
        raise _convert.host_error(x)
    return _convert.call(np.lib.stride_tricks.as_strided, (x,), {"shape": shape, "strides": strides})


def sliding_window_view(
    x: Any, window_shape: Any, axis: Any = None, *, subok: bool = False, writeable: bool = False
) -> ndarray:
    """Sliding windows, as a view (read-only here; CuPy has no read-only arrays but refuses
    ``writeable=True``).

    CuPy converts ``x`` with ``cupy.array(x, copy=False)``, so a NumPy array is uploaded (a
    transfer), and checks ``window_shape`` on the device, reading each entry back (host waits).
    """
    from ._creation import array

    if writeable:
        raise NotImplementedError("Writeable views are not supported.")
    x = array(x, copy=False, subok=subok)
    shape = tuple(window_shape) if np.iterable(window_shape) else (window_shape,)
    _counters.record("h2d", "sliding_window_view: cupy.array(window_shape)")
    for _dim in shape:  # ``for dim in cupy.array(window_shape): if dim < 0`` in CuPy
        _counters.record("d2h", "sliding_window_view: window_shape entry read back")
        _counters.record("syncs", "sliding_window_view: `dim < 0` on a device array")
    return _convert.call(np.lib.stride_tricks.sliding_window_view, (x, window_shape), {"axis": axis})


as_strided.__module__ = sliding_window_view.__module__ = "cupy.lib.stride_tricks"
