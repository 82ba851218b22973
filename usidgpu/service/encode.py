"""Array responses: NumPy ``.npy``, raw little-endian bytes, JSON, PNG.

``.npy`` is the format any Python user can read with ``numpy.load`` and MATLAB users with
``readNPY``; raw bytes carry their shape and dtype in headers for clients without a ``.npy``
reader; JSON only for small selections; PNG for 2-D views, with contrast limits and a
matplotlib colormap (matplotlib's colormaps, so the page and the figures agree).
"""

from __future__ import annotations

import io
import json
import math
from typing import Any

import numpy as np

from ..core.errors import InvalidInput, UnknownName

FORMATS = ("npy", "raw", "json", "png", "csv")
MEDIA_TYPES = {
    "npy": "application/x-npy",
    "raw": "application/octet-stream",
    "json": "application/json",
    "png": "image/png",
    "csv": "text/csv",
}
#: CSV is for tables a spreadsheet opens: up to this many values.
MAX_CSV_ELEMENTS = 1 << 22
#: JSON is for small selections; larger ones use .npy or raw bytes.
MAX_JSON_ELEMENTS = 65536


def little_endian(a: np.ndarray) -> np.ndarray:
    """``a`` with a little-endian (or byte-order-free) dtype, C-contiguous."""
    a = np.ascontiguousarray(a)
    if a.dtype.byteorder == ">" or (a.dtype.byteorder == "=" and not np.little_endian):
        a = a.astype(a.dtype.newbyteorder("<"))
    return a


def npy_bytes(a: np.ndarray) -> bytes:
    """The array as a ``.npy`` file's bytes."""
    buf = io.BytesIO()
    np.save(buf, little_endian(a), allow_pickle=False)
    return buf.getvalue()


def npy_parts(a: np.ndarray) -> list[bytes | memoryview]:
    """A ``.npy`` file as its header and the array's own memory (nothing copied for a
    little-endian C-ordered array; see :class:`usidgpu.service.app.PartsResponse`)."""
    a = little_endian(a)
    return [npy_header(a.shape, a.dtype), raw_view(a)]


def raw_view(a: np.ndarray) -> memoryview:
    """The bytes of a little-endian C-ordered array, without copying them."""
    return little_endian(a).data.cast("B")


def npy_header(shape: tuple[int, ...], dtype: np.dtype) -> bytes:
    """The header of a ``.npy`` file of this shape and dtype (the data follow in C order), so a
    large selection can be streamed in parts after it."""
    buf = io.BytesIO()
    dtype = np.dtype(dtype)
    le = dtype.newbyteorder("<") if dtype.byteorder in (">", "=") and dtype.itemsize > 1 else dtype
    header = {"descr": np.lib.format.dtype_to_descr(le), "fortran_order": False, "shape": tuple(shape)}
    np.lib.format.write_array_header_1_0(buf, header)
    return buf.getvalue()


def raw_headers(shape: tuple[int, ...], dtype: np.dtype) -> dict[str, str]:
    """HTTP headers that describe raw little-endian bytes."""
    dtype = np.dtype(dtype)
    le = dtype.newbyteorder("<") if dtype.byteorder in (">", "=") and dtype.itemsize > 1 else dtype
    return {"X-Array-Shape": ",".join(str(int(s)) for s in shape), "X-Array-Dtype": le.str}


def json_bytes(a: np.ndarray, dims: list[str]) -> bytes:
    """Small arrays as JSON ``{"dims", "shape", "dtype", "data"}``; NaN and inf become null,
    complex values ``[re, im]``."""
    if a.size > MAX_JSON_ELEMENTS:
        raise InvalidInput(
            f"the selection holds {a.size} values; JSON is for up to {MAX_JSON_ELEMENTS}: use format=npy or raw"
        )
    if a.dtype.names:
        data: Any = {n: _finite_list(a[n]) for n in a.dtype.names}
    elif np.iscomplexobj(a):
        data = np.stack([a.real, a.imag], axis=-1).tolist()
    else:
        data = _finite_list(a)
    return json.dumps({"dims": dims, "shape": list(a.shape), "dtype": a.dtype.str, "data": data}).encode()


def _finite_list(a: np.ndarray) -> Any:
    if a.dtype.kind == "f":
        obj = a.astype(object)
        obj[~np.isfinite(a)] = None
        return obj.tolist()
    return a.tolist()


def contrast_limits(a: np.ndarray, vmin: float | None = None, vmax: float | None = None) -> tuple[float, float]:
    """The contrast limits of a view: those given, else the 0.5 and 99.5 percentiles of the finite
    values (sent back as ``X-Contrast-Limits``, so a page can draw other views alike)."""
    values = np.asarray(a, dtype=np.float64)
    finite = values[np.isfinite(values)]
    lo = float(np.percentile(finite, 0.5)) if vmin is None and finite.size else (vmin if vmin is not None else 0.0)
    hi = float(np.percentile(finite, 99.5)) if vmax is None and finite.size else (vmax if vmax is not None else 1.0)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise InvalidInput("vmin and vmax must be finite numbers")
    return lo, hi


def png_bytes(a: np.ndarray, vmin: float | None = None, vmax: float | None = None, cmap: str = "viridis") -> bytes:
    """A 2-D selection as a PNG through a colormap.

    Parameters
    ----------
    vmin, vmax : float, optional
        Contrast limits (default: the 0.5 and 99.5 percentiles of the finite values).
    cmap : str
        A matplotlib colormap name.
    """
    import matplotlib
    from PIL import Image

    if a.ndim != 2:
        raise InvalidInput(
            f"PNG needs a 2-D selection; this one has shape {a.shape}: select single indices of the other dimensions"
        )
    if a.dtype.names or np.iscomplexobj(a):
        raise InvalidInput("PNG shows real numbers: select one field of compound data, or use format=npy")
    try:
        colormap = matplotlib.colormaps[cmap]
    except KeyError:
        raise UnknownName(f"no colormap {cmap!r}; e.g. viridis, gray, magma, inferno, cividis, RdBu_r") from None
    values = a.astype(np.float64)
    lo, hi = contrast_limits(values, vmin, vmax)
    scaled = (values - lo) / (hi - lo) if hi > lo else np.zeros_like(values)
    rgba = colormap(np.clip(np.nan_to_num(scaled, nan=0.0), 0, 1), bytes=True)
    missing = ~np.isfinite(values)
    buf = io.BytesIO()
    if missing.any():
        rgba[missing] = 0  # missing values transparent
        image = Image.fromarray(rgba, mode="RGBA")
    else:
        image = Image.fromarray(np.ascontiguousarray(rgba[..., :3]), mode="RGB")
    # zlib's fastest level: views are drawn many times a second (scrubbing) and sent over a
    # local network, where a third more bytes costs less than three times the encoding
    image.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def csv_bytes(a: np.ndarray, dims: list[str], coordinates: list[np.ndarray | None]) -> bytes:
    """A 1-D or 2-D selection as CSV: a header naming the dimensions, then one row per index of the
    first dimension (its coordinate first when known), one column per index of the second.

    Parameters
    ----------
    dims : list of str
        The selection's dimensions (axis order).
    coordinates : list
        Each dimension's values (None where unknown).
    """
    if a.dtype.names and a.ndim >= 1 and a.size == a.shape[0]:  # one record per row: a table
        return records_csv(a.reshape(-1))
    if a.ndim not in (1, 2) or a.dtype.names or np.iscomplexobj(a):
        raise InvalidInput(
            f"CSV holds 1-D or 2-D real tables; this selection is {a.ndim}-D {a.dtype}: select fewer "
            "dimensions, or use format=npy"
        )
    if a.size > MAX_CSV_ELEMENTS:
        raise InvalidInput(f"the selection holds {a.size} values; CSV is for up to {MAX_CSV_ELEMENTS}: use format=npy")
    table = a.reshape(a.shape[0], -1)
    rows_coord = coordinates[0] if coordinates and coordinates[0] is not None else np.arange(table.shape[0])
    if a.ndim == 2:
        cols = coordinates[1] if coordinates[1] is not None else np.arange(table.shape[1])
        header = f"{dims[0]} \\ {dims[1]}," + ",".join(f"{c:.9g}" for c in np.asarray(cols, dtype=float))
    else:
        header = f"{dims[0]},value"
    buf = io.StringIO()
    buf.write(header + "\n")
    np.savetxt(
        buf, np.column_stack([np.asarray(rows_coord, dtype=float), table.astype(float)]), delimiter=",", fmt="%.9g"
    )
    return buf.getvalue().encode()


def records_csv(records: np.ndarray) -> bytes:
    """A table of records (a 1-D compound array, e.g. fitted atomic columns) as CSV: a header with
    the field names, then one line per record (sub-arrays of a field flattened into columns)."""
    if records.size > MAX_CSV_ELEMENTS:
        raise InvalidInput(f"the table holds {records.size} rows; CSV is for up to {MAX_CSV_ELEMENTS}: use format=npy")
    names: list[str] = []
    columns = []
    for field in records.dtype.names or ():
        values = np.asarray(records[field]).reshape(len(records), -1)
        if values.dtype.kind not in "biuf":
            raise InvalidInput(f"field {field!r} is {values.dtype}: CSV holds real numbers; use format=npy")
        names += [field] if values.shape[1] == 1 else [f"{field}[{i}]" for i in range(values.shape[1])]
        columns.append(values)
    buf = io.StringIO()
    buf.write(",".join(names) + "\n")
    if len(records):
        np.savetxt(buf, np.hstack([c.astype(float) for c in columns]), delimiter=",", fmt="%.10g")
    return buf.getvalue().encode()
