"""What every translator shares: the description of one output channel, block iteration over
reader arrays, metadata flattening and the writer of the USID file.

A translator turns its input into a list of :class:`Channel` objects. Each channel becomes
``/Measurement_000/Channel_NNN/Raw_Data`` (a USID Main dataset) with its instrument metadata
in ``Channel_NNN/Metadata`` (flattened attributes, nested keys joined by ``.``); metadata that all
channels share go to ``/Measurement_000/Metadata``. The data are written block by block from the
reader's (memory-mapped, lazy or h5py) array, so no second full copy is ever held.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import numpy as np

from ..core.errors import FileProblem, InvalidInput
from ..usid.dimension import Dimension

#: Bytes of one block handed from the reader to HDF5.
BLOCK_BYTES = 64 * 1024**2
#: Longer metadata values are stored as datasets in the Metadata group (attributes are limited).
MAX_ATTR_BYTES = 16 * 1024

#: Longest reader message quoted in an error (readers quote raw file bytes in theirs).
MAX_REASON_CHARS = 160

Block = tuple[slice, slice, np.ndarray]  # rows (positions), columns (spectroscopic), 2-D data


def reason(exc: BaseException) -> str:
    """A reader's error as a short, printable clause for a one-line message.

    Reader libraries put whatever they were parsing into their messages — a damaged file's raw
    bytes, kilobytes of them — so only the first line is kept, non-printable characters are
    escaped, and it is cut at :data:`MAX_REASON_CHARS`.
    """
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    line = "".join(c if c.isprintable() else repr(c)[1:-1] for c in line)
    return line if len(line) <= MAX_REASON_CHARS else line[: MAX_REASON_CHARS - 1] + "…"


@contextlib.contextmanager
def quiet_logger(name: str) -> Iterator[None]:
    """Silence the ``logging`` logger ``name`` (and its children) while a reader runs.

    Some readers log an error before raising it (igor2 logs the whole data buffer of a cut
    wave); with no logging configured Python prints that to stderr, ahead of usidgpu's own
    one-line error, which already says what went wrong.
    """
    logger = logging.getLogger(name)  # its children without a level of their own inherit this one
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        logger.setLevel(level)


@dataclass
class Channel:
    """One Main dataset to write.

    ``blocks`` is a callable returning an iterator of ``(row_slice, col_slice, block)``; together
    the blocks cover the (n_positions, n_spectral) dataset.
    """

    name: str
    quantity: str
    units: str
    pos_dims: list[Dimension]
    spec_dims: list[Dimension]
    dtype: np.dtype
    blocks: Callable[[], Iterator[Block]]
    metadata: Mapping[str, Any] = field(default_factory=dict)
    attrs: Mapping[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        return (
            int(np.prod([d.size for d in self.pos_dims])),
            int(np.prod([d.size for d in self.spec_dims])),
        )


def axis_values(size: int, scale: float = 1.0, offset: float = 0.0) -> np.ndarray:
    return offset + scale * np.arange(size, dtype=np.float64)


def row_blocks(
    array: Any, pos_axes: Sequence[int], spec_axes: Sequence[int], transform: Callable | None = None
) -> Callable[[], Iterator[Block]]:
    """Blocks of whole positions from an n-d array-like (NumPy, memmap, h5py, dask).

    ``pos_axes`` / ``spec_axes`` are the array axes of the position and spectroscopic dimensions,
    each listed slowest first. Only slices along the first position axis are read at a time.
    ``transform`` (optional) is applied to each n-d slice after reading (e.g. a flip).
    """
    pos_axes, spec_axes = list(pos_axes), list(spec_axes)
    shape = tuple(int(s) for s in array.shape)
    order = pos_axes + spec_axes
    if sorted(order) != list(range(len(shape))):
        raise InvalidInput(f"axes {order} do not cover an array of shape {shape}")
    n_spec = int(np.prod([shape[a] for a in spec_axes])) if spec_axes else 1
    itemsize = np.dtype(array.dtype).itemsize

    def gen() -> Iterator[Block]:
        if not pos_axes:  # a single position
            nd = np.asarray(array[()] if hasattr(array, "id") else array)
            if transform is not None:
                nd = transform(nd, slice(None))
            yield slice(0, 1), slice(0, n_spec), np.transpose(nd, order).reshape(1, n_spec)
            return
        lead = pos_axes[0]
        n_lead = shape[lead]
        per_lead = max(1, int(np.prod(shape)) // max(n_lead, 1)) * itemsize
        step = max(1, BLOCK_BYTES // max(per_lead, 1))
        row = 0
        for start in range(0, n_lead, step):
            stop = min(n_lead, start + step)
            index = [slice(None)] * len(shape)
            index[lead] = slice(start, stop)
            nd = np.asarray(array[tuple(index)])
            if transform is not None:
                nd = transform(nd, slice(start, stop))
            rows = nd.size // n_spec
            yield slice(row, row + rows), slice(0, n_spec), np.transpose(nd, order).reshape(rows, n_spec)
            row += rows

    return gen


# ----------------------------------------------------------------------------- metadata
def _jsonable(value: Any) -> Any:
    if isinstance(value, (bytes, np.bytes_)):
        return bytes(value).split(b"\x00", 1)[0].decode("utf-8", errors="replace")
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def flatten(meta: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one level, keys joined by ``.``; values made JSON-able."""
    out: dict[str, Any] = {}
    for key, value in meta.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if hasattr(value, "as_dictionary"):  # hyperspy/rsciio DictionaryTreeBrowser
            value = value.as_dictionary()
        if isinstance(value, Mapping):
            if value:
                out.update(flatten(value, name))
            continue
        out[name] = _jsonable(value)
    return out


def _attr_value(value: Any) -> Any:
    """An HDF5-storable form of a JSON-able value."""
    if value is None:
        return "None"
    if isinstance(value, float) and math.isnan(value):
        return np.nan
    if isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, list):
        arr = None
        try:
            arr = np.asarray(value)
        except (ValueError, TypeError):
            pass
        if arr is not None and arr.size and arr.dtype.kind in "biuf" and arr.ndim >= 1:
            return arr
        if arr is not None and arr.size and arr.dtype.kind == "U" and arr.ndim == 1:
            return np.array([s.encode("utf-8") for s in arr.tolist()])
    return json.dumps(value)


def write_metadata(group: Any, meta: Mapping[str, Any]) -> None:
    """Flattened metadata as attributes of ``group``; long values as datasets of the same name."""
    for key, value in flatten(meta).items():
        key = key.replace("/", "∕") or "_"
        val = _attr_value(value)
        size = len(val.encode("utf-8")) if isinstance(val, str) else getattr(val, "nbytes", 8)
        try:
            if size > MAX_ATTR_BYTES:
                group.create_dataset(key, data=val)
            else:
                group.attrs[key] = val
        except (TypeError, ValueError):
            group.attrs[key] = json.dumps(value)


def split_common(metas: Sequence[Mapping[str, Any]]) -> tuple[dict, list[dict]]:
    """Metadata shared by every channel, and what is left per channel (all flattened)."""
    flat = [flatten(m) for m in metas]
    if len(flat) < 2:
        return {}, flat
    common = {k: v for k, v in flat[0].items() if all(k in f and f[k] == v for f in flat[1:])}
    return common, [{k: v for k, v in f.items() if k not in common} for f in flat]


# ----------------------------------------------------------------------------- writing
def write_channels(
    out_path: str | BinaryIO, channels: Sequence[Channel], file_attrs: Mapping[str, Any], metadata: Mapping[str, Any]
) -> list[str]:
    """Write every channel into a new HDF5 file; returns the Main dataset paths.

    ``out_path`` is a path or an open binary file object (h5py's ``fileobj`` driver), handed to
    ``h5py.File`` unchanged: :mod:`usidgpu.translate` passes a guarded file that keeps a full
    disk's failed write away from the HDF5 library (:mod:`usidgpu.storage.staging`).
    """
    import h5py

    from ..usid.write import write_main

    if not channels:
        raise FileProblem(f"{file_attrs.get('original_file', '')}: the file holds no data to translate")
    paths = []
    common, per_channel = split_common([c.metadata for c in channels])
    with h5py.File(out_path, "w-") as f:
        meas = f.create_group("Measurement_000")
        for k, v in file_attrs.items():
            meas.attrs[k] = _attr_value(_jsonable(v))
        write_metadata(meas.create_group("Metadata"), {**flatten(metadata), **common})
        for i, ch in enumerate(channels):
            grp = meas.create_group(f"Channel_{i:03d}")
            grp.attrs["channel"] = ch.name
            m = write_main(
                grp,
                "Raw_Data",
                ch.shape,
                ch.quantity or "Intensity",
                ch.units or "",
                ch.pos_dims,
                ch.spec_dims,
                dtype=ch.dtype,
                attrs={"channel": ch.name, **{k: _attr_value(_jsonable(v)) for k, v in ch.attrs.items()}},
            )
            written = 0
            for rows, cols, block in ch.blocks():
                m.h5[rows, cols] = np.asarray(block, dtype=ch.dtype)
                written += block.size
            if written != ch.shape[0] * ch.shape[1]:
                raise FileProblem(
                    f"{file_attrs.get('original_file', '')}: channel {ch.name!r} delivered {written} values, "
                    f"expected {ch.shape[0] * ch.shape[1]}"
                )
            md = grp.create_group("Metadata")
            write_metadata(md, per_channel[i])
            paths.append(m.name)
    return paths


def clean_label(text: Any) -> str:
    """A label from bytes/str: cut at the first NUL, stripped."""
    if isinstance(text, (bytes, np.bytes_)):
        text = bytes(text).split(b"\x00", 1)[0].decode("utf-8", errors="replace")
    return str(text).split("\x00", 1)[0].strip()
