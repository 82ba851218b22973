"""A read-only zarr v3 view of every catalogued Main dataset, over plain HTTP.

Why zarr v3: a client that has never heard of usidgpu — zarr-python, zarr.js, tensorstore,
xarray — opens ``http://host/zarr/<id>`` as an n-d array with named dimensions and reads it by
chunk. The view is computed, not stored: ``zarr.json`` is written from the catalog's
description, and each chunk is read from the HDF5 file when asked for (uncompressed
little-endian bytes; loopback and LAN bandwidth make compression a cost, not a gain, here).

Grids become n-d arrays in pyUSID's dimension order (positions, then spectroscopic values, as
:meth:`usidgpu.MainDataset.sel` returns them) with ``dimension_names``; sparse or irregular
sampling stays the 2-D (positions × spectroscopic) table. Attributes carry the quantity, units
and each dimension's units and values. Compound (structured) data have no zarr v3 data type and
are not offered.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..core.errors import InvalidInput, SelectionError
from ..remote.wire import dtype_of

#: Chunks hold about this many bytes (whole spectra where they fit).
CHUNK_BYTES = 2 << 20

_V3_TYPES = {
    "b": "bool",
    "i1": "int8",
    "i2": "int16",
    "i4": "int32",
    "i8": "int64",
    "u1": "uint8",
    "u2": "uint16",
    "u4": "uint32",
    "u8": "uint64",
    "f2": "float16",
    "f4": "float32",
    "f8": "float64",
    "c8": "complex64",
    "c16": "complex128",
}


class NoZarrType(InvalidInput):
    """Data with no zarr v3 data type (compound, strings)."""


def data_type(dtype: np.dtype) -> str:
    """The zarr v3 name of a NumPy dtype."""
    dtype = np.dtype(dtype)
    key = "b" if dtype.kind == "b" else f"{dtype.kind}{dtype.itemsize}"
    if dtype.names or key not in _V3_TYPES:
        raise NoZarrType(f"{dtype} data have no zarr v3 data type; read them with format=npy")
    return _V3_TYPES[key]


def layout(description: dict[str, Any]) -> tuple[list[str], list[int]]:
    """Dimension names and shape of the view: the n-d grid, or the 2-D table."""
    if description.get("nd_shape"):
        return [d["name"] for d in description["dims"]], list(description["nd_shape"])
    return ["Positions", "Spectroscopic"], list(description["shape"])


def chunk_shape(shape: list[int], itemsize: int, target: int = CHUNK_BYTES) -> list[int]:
    """Chunks of about ``target`` bytes: the slowest dimensions are split first, so a chunk holds
    whole spectra (the fastest dimensions) whenever they fit."""
    chunks = [max(1, s) for s in shape]
    axis = 0
    while math.prod(chunks) * itemsize > target and axis < len(chunks):
        if chunks[axis] > 1:
            chunks[axis] = max(1, chunks[axis] // 2)
        else:
            axis += 1
    return chunks


def array_metadata(description: dict[str, Any]) -> dict[str, Any]:
    """The ``zarr.json`` of a dataset's view."""
    dtype = dtype_of(description)
    names, shape = layout(description)
    fill: Any = False if dtype.kind == "b" else (0.0 if dtype.kind in "fc" else 0)
    if dtype.kind == "c":
        fill = [0.0, 0.0]
    return {
        "zarr_format": 3,
        "node_type": "array",
        "shape": shape,
        "data_type": data_type(dtype),
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": chunk_shape(shape, dtype.itemsize)}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": fill,
        "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}]
        if dtype.itemsize > 1 or dtype.kind == "b"
        else [{"name": "bytes"}],
        "dimension_names": names,
        "attributes": {
            "quantity": description["quantity"],
            "units": description["units"],
            "usid_dims": [{k: d[k] for k in ("name", "units", "role", "values")} for d in description["dims"]],
            "source": description["path"],
        },
    }


def chunk_selection(description: dict[str, Any], key: str) -> tuple[dict[str, slice], list[int], list[int]]:
    """For a chunk key ``c/i/j/...``: the ``sel`` keywords, the chunk's full shape and the shape
    of the part inside the array (edge chunks are padded to full size, as zarr v3 stores them).

    Raises
    ------
    SelectionError
        Not a chunk key of this array.
    """
    names, shape = layout(description)
    chunks = array_metadata(description)["chunk_grid"]["configuration"]["chunk_shape"]
    parts = key.split("/")
    if parts[0] != "c" or len(parts) != len(shape) + 1 or not all(p.isdigit() for p in parts[1:]):
        raise SelectionError(f"{key!r} is not a chunk of this {len(shape)}-d array")
    index = [int(p) for p in parts[1:]]
    selection, inner = {}, []
    for name, i, c, s in zip(names, index, chunks, shape):
        if i * c >= s:
            raise SelectionError(f"chunk {key!r} is outside the array")
        selection[name] = slice(i * c, min((i + 1) * c, s))
        inner.append(min((i + 1) * c, s) - i * c)
    return selection, chunks, inner


def chunk_bytes(values: np.ndarray, chunk: list[int], dtype: np.dtype) -> bytes:
    """A chunk's stored bytes: ``values`` padded to the full chunk shape, little-endian, C order."""
    values = np.asarray(values)
    if list(values.shape) != chunk:
        padded = np.zeros(chunk, dtype=values.dtype)
        padded[tuple(slice(0, n) for n in values.shape)] = values
        values = padded
    le = np.dtype(dtype).newbyteorder("<") if np.dtype(dtype).itemsize > 1 else np.dtype(dtype)
    return np.ascontiguousarray(values, dtype=le).tobytes()
