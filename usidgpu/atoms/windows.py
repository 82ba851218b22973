"""Square windows around many image points at once: one gather, no Python loop over columns."""

from __future__ import annotations

from typing import Any

import numpy as np


def window_origins(xp: Any, positions: Any, radius: int) -> Any:
    """Integer (row, col) of the top-left pixel of the (2r+1)² window centred on each rounded position."""
    return xp.rint(positions).astype(np.int64) - radius


def gather(xp: Any, image: Any, positions: Any, radius: int) -> tuple[Any, Any, Any]:
    """Cut a (2r+1) × (2r+1) window around every position.

    Parameters
    ----------
    xp : module
        numpy or cupy.
    image : 2-D array
    positions : (N, 2) array of (y, x)
    radius : int

    Returns
    -------
    values : (N, S, S) float64
        Pixel values; 0 where the window leaves the image.
    inside : (N, S, S) bool
        Whether each window pixel lies in the image.
    grid : (N, 2, S) float64
        Absolute row (``grid[:, 0]``) and column (``grid[:, 1]``) coordinates of the window pixels.
    """
    h, w = image.shape
    size = 2 * radius + 1
    origin = window_origins(xp, positions, radius)  # (N, 2)
    offsets = xp.arange(size)
    rows = origin[:, 0:1] + offsets  # (N, S)
    cols = origin[:, 1:2] + offsets
    ok_r = (rows >= 0) & (rows < h)
    ok_c = (cols >= 0) & (cols < w)
    inside = ok_r[:, :, None] & ok_c[:, None, :]
    values = image[xp.clip(rows, 0, h - 1)[:, :, None], xp.clip(cols, 0, w - 1)[:, None, :]].astype(np.float64)
    values = xp.where(inside, values, 0.0)
    grid = xp.stack([rows, cols], axis=1).astype(np.float64)
    return values, inside, grid
