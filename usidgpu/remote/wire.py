"""What the server and its clients agree on: how dtypes and selections travel.

Shared by :mod:`usidgpu.service` (which writes them) and :mod:`usidgpu.remote` (which reads
them), so the two cannot drift apart.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..core.errors import InvalidInput


def dtype_descr(dtype: np.dtype) -> Any:
    """A JSON-able descriptor of a dtype (compound ones included), as ``.npy`` headers write it."""
    return np.lib.format.dtype_to_descr(np.dtype(dtype))


def dtype_of(description: dict[str, Any]) -> np.dtype:
    """The NumPy dtype of a described dataset (``dtype_descr``; JSON turned its tuples into lists)."""

    def tuples(descr: Any) -> Any:
        if isinstance(descr, list):
            return [tuple(tuples(x) for x in field) if isinstance(field, list) else field for field in descr]
        return descr

    return np.lib.format.descr_to_dtype(tuples(description["dtype_descr"]))


def selection_text(value: Any) -> str:
    """One dimension's selection as the query string carries it: ``10``, ``0:64:2``, ``1,5,9``."""
    if isinstance(value, slice):
        return ":".join("" if v is None else str(int(v)) for v in (value.start, value.stop, value.step))
    if isinstance(value, (list, tuple, np.ndarray)):
        return ",".join(str(int(v)) for v in value)
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return str(int(value))
    raise InvalidInput(f"a selection is an int, a slice or a list of ints, got {value!r}")
