"""Slices by dimension name from a query string, e.g. ``?Bias=10&X=0:64&Y=1,5,9``.

Each dimension takes an index (``Bias=10``: the axis is dropped), a Python-style slice
(``X=0:64``, ``X=::4``, ``X=-10:``: the axis is kept) or a comma-separated list of indices
(``Y=1,5,9``: kept). Dimensions not named are kept whole. The selection goes to
:meth:`usidgpu.MainDataset.sel`, which reads only what is selected.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..core.errors import InvalidInput, SelectionError, UnknownName

#: Query parameters that are options of the response, not dimensions.
RESERVED = frozenset({"format", "vmin", "vmax", "cmap", "limit"})


def parse_key(text: str, dim: str) -> int | slice | list[int]:
    """One dimension's selection from its query-string text.

    Raises
    ------
    SelectionError
        Text that is neither an integer, a slice ``start:stop[:step]`` nor a list ``i,j,k``.
    """
    text = text.strip()
    try:
        if ":" in text:
            parts = text.split(":")
            if len(parts) > 3:
                raise ValueError
            start, stop, step = ([int(p) if p.strip() else None for p in parts] + [None])[:3]
            if step == 0:
                raise SelectionError(f"{dim}={text}: a slice step cannot be 0")
            return slice(start, stop, step)
        if "," in text:
            return [int(p) for p in text.split(",") if p.strip()]
        return int(text)
    except ValueError:
        raise SelectionError(
            f"{dim}={text!r}: give an index (10), a slice (0:64, ::2) or a list of indices (1,5,9)"
        ) from None


def selection_from_query(params: Mapping[str, str], dim_names: list[str]) -> dict[str, Any]:
    """The ``sel`` keywords named by a request's query parameters.

    Raises
    ------
    UnknownName
        A parameter that is neither a dimension nor a response option.
    """
    selection: dict[str, Any] = {}
    for key, text in params.items():
        if key in RESERVED:
            continue
        if key not in dim_names:
            raise UnknownName(f"no dimension {key!r}; the dimensions are {', '.join(dim_names)}")
        selection[key] = parse_key(text, key)
    return selection


def selected_shape(sizes: Mapping[str, int], selection: Mapping[str, Any]) -> tuple[int, ...]:
    """Shape of the selection's result, computed without reading (for the size limit).

    ``sizes`` maps every dimension name to its size, in file order.
    """
    shape = []
    for name, size in sizes.items():
        key = selection.get(name, slice(None))
        if isinstance(key, int):
            if not -size <= key < size:
                raise SelectionError(f"index {key} is out of range for dimension {name!r} of size {size}")
            continue
        if isinstance(key, slice):
            shape.append(len(range(*key.indices(size))))
        else:
            arr = np.asarray(key, dtype=np.int64)
            if arr.size and (arr.min() < -size or arr.max() >= size):
                raise SelectionError(f"indices {arr.tolist()} are out of range for dimension {name!r} of size {size}")
            shape.append(int(arr.size))
    return tuple(shape)


class TooLarge(InvalidInput):
    """A selection larger than the service's per-request limit."""


def check_size(nbytes: int, limit: int) -> None:
    """Refuse a selection larger than the service's per-request limit (:class:`TooLarge`)."""
    if nbytes > limit:
        raise TooLarge(
            f"the selection holds {nbytes} bytes, more than this service's limit of {limit} bytes per "
            "request; select less (e.g. a range of a dimension) and fetch it in parts"
        )
