"""NumPy ``.npy`` arrays and TIFF stacks.

Readers: NumPy itself (``np.load(mmap_mode="r")``: nothing is read until a block is written) and
tifffile (the reference TIFF library that rosettasciio and scikit-image use underneath; it
memory-maps uncompressed stacks and reads any other page by page, and exposes the ImageJ / OME /
resolution tags that we keep as metadata). rosettasciio's TIFF plugin would load the whole stack
through dask and adds nothing for plain stacks.

Layout: (H, W) → positions (Y, X); (frames, H, W) → positions (Y, X), spectroscopic Frame;
a 1-D array → one position, spectroscopic Index. For ``.npy`` a 3-D array may instead be a
spectrum image (Y, X, spectrum): ``layout="spectrum_image"``. Higher ranks: every axis but the
last is a position, the last is spectroscopic.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import FileProblem
from ..usid.dimension import Dimension
from ._common import BLOCK_BYTES, Channel, reason, row_blocks


def _layout(shape: tuple[int, ...], layout: str) -> tuple[list, list, list[int], list[int]]:
    """(pos dims, spec dims, pos axes, spec axes) for an array of ``shape``."""
    if len(shape) == 1:
        return [Dimension("Position", "", 1)], [Dimension("Index", "", shape[0])], [], [0]
    if len(shape) == 2:
        return (
            [Dimension("Y", "px", shape[0]), Dimension("X", "px", shape[1])],
            [Dimension("Frame", "", 1)],
            [0, 1],
            [],
        )
    if len(shape) == 3 and layout == "stack":
        return (
            [Dimension("Y", "px", shape[1]), Dimension("X", "px", shape[2])],
            [Dimension("Frame", "", shape[0])],
            [1, 2],
            [0],
        )
    if len(shape) == 3:
        return (
            [Dimension("Y", "px", shape[0]), Dimension("X", "px", shape[1])],
            [Dimension("Spectral", "", shape[2])],
            [0, 1],
            [2],
        )
    n = len(shape)
    pos = [Dimension(f"Dim_{i}", "", shape[i]) for i in range(n - 1)]
    return pos, [Dimension(f"Dim_{n - 1}", "", shape[-1])], list(range(n - 1)), [n - 1]


def read_npy(path: Path, layout: str = "stack", **_: Any) -> tuple[list[Channel], dict, dict]:
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise FileProblem(f"{path}: not a readable .npy file ({reason(exc)})") from None
    if arr.ndim == 0 or arr.size == 0:
        raise FileProblem(f"{path}: the array is empty or a scalar (shape {arr.shape})")
    if arr.dtype.hasobject:
        raise FileProblem(f"{path}: object arrays cannot be translated")
    if layout not in ("stack", "spectrum_image"):
        raise FileProblem(f"layout {layout!r}: use 'stack' or 'spectrum_image'")
    pos, spec, pa, sa = _layout(arr.shape, layout)
    ch = Channel("npy", "Intensity", "a. u.", pos, spec, arr.dtype, row_blocks(arr, pa, sa))
    return (
        [ch],
        {"format": "NumPy .npy", "reader": "numpy", "reader_version": np.__version__},
        {
            "npy.shape": list(arr.shape),
            "npy.dtype": str(arr.dtype),
            "npy.layout": layout if arr.ndim == 3 else "",
        },
    )


def _tiff_meta(tif: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    page = tif.pages[0]
    for tag in page.tags.values():
        if tag.code in (273, 279, 324, 325):  # strip/tile offsets and byte counts
            continue
        value = tag.value
        if isinstance(value, (bytes, bytearray)) and len(value) > 4096:
            continue
        meta[f"tiff.{tag.name}"] = value.name if hasattr(value, "name") and not isinstance(value, str) else value
    if tif.imagej_metadata:
        meta["imagej"] = dict(tif.imagej_metadata)
    if tif.ome_metadata:
        meta["ome_xml"] = tif.ome_metadata
    return meta


def read_tiff(path: Path, **_: Any) -> tuple[list[Channel], dict, dict]:
    import tifffile

    try:
        tif = tifffile.TiffFile(path)
        series = tif.series[0]
        shape, dtype = tuple(series.shape), np.dtype(series.dtype)
        meta = _tiff_meta(tif)
    except Exception as exc:  # tifffile raises TiffFileError, ValueError, struct.error...
        raise FileProblem(f"{path}: not a readable TIFF file ({reason(exc)})") from None
    tif.close()
    # colour samples: keep as the last axis → spectroscopic "Channel"
    squeezed = tuple(s for s in shape if s != 1) or (1,)
    if len(squeezed) > 3:
        squeezed = (int(np.prod(squeezed[:-2])),) + squeezed[-2:]
    pos, spec, pa, sa = _layout(squeezed, "stack")

    def blocks():
        # uncompressed contiguous stacks are memory-mapped; anything else goes a group of
        # frames at a time (a column block of the Main dataset)
        try:
            mm = tifffile.memmap(path, mode="r").reshape(squeezed)
        except Exception:
            mm = None
        if mm is not None:
            yield from row_blocks(mm, pa, sa)()
            return
        with tifffile.TiffFile(path) as t:
            if len(squeezed) < 3 or len(t.series[0].pages) != squeezed[0]:
                yield from row_blocks(t.series[0].asarray().reshape(squeezed), pa, sa)()
                return
            n, h, w = squeezed
            step = max(1, BLOCK_BYTES // max(h * w * dtype.itemsize, 1))
            pages = t.series[0].pages
            for start in range(0, n, step):
                stop = min(n, start + step)
                frames = np.stack([pages[k].asarray().reshape(h, w) for k in range(start, stop)])
                yield slice(0, h * w), slice(start, stop), frames.reshape(stop - start, h * w).T

    info = {"format": "TIFF", "reader": "tifffile", "reader_version": tifffile.__version__}
    return [Channel("tiff", "Intensity", "a. u.", pos, spec, dtype, blocks, metadata=meta)], info, {}
