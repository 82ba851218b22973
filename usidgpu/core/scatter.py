"""Scatter-accumulate into an array: sums, minima and maxima of values that share a cell, on
NumPy or CuPy — the building block of streamed reductions over positions."""

from __future__ import annotations

import functools
import warnings
from typing import Any

import numpy as np

# dtypes the device scatters (CUDA atomics) take directly
_DEVICE_SCATTER = {np.dtype(t) for t in (np.int32, np.uint32, np.uint64, np.float32, np.float64)}


def _scatter_extreme(op: str, acc: Any, cells: Any, values: Any) -> None:
    """CuPy's scatter-min/max: ``cupyx.scatter_min``/``scatter_max``. CuPy 14 deprecates them in
    favour of ``cupy.minimum.at``/``maximum.at``, which it does not implement yet, so the
    deprecation warning is silenced here rather than shown to every user."""
    import cupyx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        (cupyx.scatter_min if op == "min" else cupyx.scatter_max)(acc, cells, values)


def scatter(xp: Any, op: str, acc: Any, cells: Any, values: Any) -> None:
    """``acc[cells] op= values`` in place, with repeated cells combined (``np.ufunc.at``; on CuPy
    ``cupy.add.at`` and cupyx's scatter-min/max, with the dtypes CUDA atomics lack handled exactly).

    Parameters
    ----------
    xp : module
        numpy or cupy.
    op : {"add", "min", "max"}
    acc : array
        Accumulator, indexed along its first axis by ``cells``.
    cells : integer array
    values : array
        One row per entry of ``cells``.
    """
    if xp is np:
        {"add": np.add, "min": np.minimum, "max": np.maximum}[op].at(acc, cells, values)
        return
    fn = xp.add.at if op == "add" else functools.partial(_scatter_extreme, op)
    dt = acc.dtype
    if dt in _DEVICE_SCATTER:
        fn(acc, cells, values.astype(dt, copy=False))
    elif op == "add" and dt.kind == "c":  # complex: add real and imaginary parts as floats
        part = values.astype(dt, copy=False)
        fn(acc.view(acc.real.dtype), cells, part.view(acc.real.dtype))
    elif op == "add" and dt == np.int64:  # two's complement: int64 sums are uint64 sums
        fn(acc.view(np.uint64), cells, values.astype(np.int64, copy=False).view(np.uint64))
    elif dt.kind in "biu" and dt.itemsize < 4:  # small integers and bools: exact in 32 bits
        wide = np.int32 if dt.kind == "i" or dt.kind == "b" else np.uint32
        tmp = acc.astype(wide)
        fn(tmp, cells, values.astype(wide))
        acc[...] = tmp.astype(dt)
    else:  # int64 min/max: no exact device scatter, so fold on the host
        host = acc.get()
        {"min": np.minimum, "max": np.maximum}[op].at(host, cells.get(), values.get())
        acc.set(host)
