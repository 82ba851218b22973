"""Garbage for uninitialized memory.

``cudaMalloc`` (and CuPy's pool, which recycles freed blocks) hands back whatever was there, so
code that reads ``cupy.empty`` before writing it works by luck when the block happens to be
zeros. NumPy's ``empty`` is often zeros too; the stand-in fills such memory with values that make
the mistake show: NaN for floating and complex types, a large integer, ``True``.
"""

from __future__ import annotations

import numpy as np


def sentinel(dtype: np.dtype):
    """The garbage value written into uninitialized memory of ``dtype`` (None: bytes 0xA5)."""
    dt = np.dtype(dtype)
    if dt.kind in "fc":
        return np.nan
    if dt.kind in "iu":
        return np.iinfo(dt).max - 7
    if dt.kind == "b":
        return True
    return None


def poison(a: np.ndarray) -> np.ndarray:
    """Fill ``a`` in place with garbage and return it."""
    value = sentinel(a.dtype)
    if value is None:
        a.view(np.uint8).fill(0xA5) if a.flags.c_contiguous else None
    else:
        a.fill(value)
    return a
