"""Reading images from a Main dataset or an array: the one place that knows how a USID image
(two position dimensions on a grid, frames along the spectroscopic points) is laid out."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..core.arrays import asnumpy
from ..core.errors import InvalidInput, InvalidType, NotAGridError
from .dimension import Dimension


def frames_of(data: Any) -> tuple[np.ndarray, dict[str, Any]]:
    """Images as a (frames, H, W) float array on the host, and how they are described.

    A 2-D array is one image, a 3-D array a stack; a Main dataset needs two position dimensions
    on a grid (the image; the slower one gives the rows) and each spectroscopic point is a frame.
    Denoising, column finding and the image figures all read images this way.

    Returns
    -------
    frames : ndarray (frames, H, W)
        float32 (float64 for 64-bit input).
    info : dict
        ``pos_dims`` (rows, columns), ``spec_dims``, ``quantity``, ``units``, ``single`` (the
        input was one 2-D image), and ``source`` (the Main dataset) when there was one.
    """
    from .dataset import MainDataset

    if isinstance(data, MainDataset):
        if len(data.pos_dims) != 2 or not data.pos_layout.is_grid:
            raise NotAGridError(
                f"{data.name}: not an image: an image needs two position dimensions on a full grid; "
                f"found {[d.name for d in data.pos_dims]} ({data.pos_layout.kind})"
            )
        if data.dtype.kind not in "biuf":
            raise InvalidType(f"{data.name}: images must be real data, got {data.dtype}")
        rows, cols = data.pos_layout.slow_to_fast_sizes
        flat = np.empty(data.shape, dtype=np.float64 if data.dtype.itemsize > 4 else np.float32)
        for block in data.blocks():
            flat[block.rows] = block.data
        frames = np.ascontiguousarray(flat.T).reshape(data.n_spectral, rows, cols)
        order = data.pos_layout.order
        info = dict(
            pos_dims=[data.pos_dims[order[0]], data.pos_dims[order[1]]],
            spec_dims=list(data.spec_dims),
            quantity=data.quantity,
            units=data.units,
            source=data,
            single=False,
        )
        return frames, info
    arr = np.asarray(asnumpy(data))
    single = arr.ndim == 2
    if single:
        arr = arr[None]
    if arr.ndim != 3:
        raise InvalidInput(f"expected an image (H, W) or a stack (frames, H, W), got shape {arr.shape}")
    if arr.dtype.kind not in "biuf":
        raise InvalidType(f"images must be real data, got {arr.dtype}")
    arr = arr.astype(np.float64 if arr.dtype.itemsize > 4 else np.float32, copy=False)
    info = dict(
        pos_dims=[Dimension("Y", "px", arr.shape[1]), Dimension("X", "px", arr.shape[2])],
        spec_dims=[Dimension("Frame", "", arr.shape[0])],
        quantity="Intensity",
        units="a. u.",
        single=single,
    )
    return arr, info
