"""Squared distances between many rows and a few centres, the step k-means repeats (in memory
and block-wise), on NumPy or CuPy."""

from __future__ import annotations

from typing import Any

import numpy as np


def squared_distances(xp: Any, x: Any, centers: Any, c_sq: Any, x_sq: Any) -> Any:
    """Squared Euclidean distances of rows to centres, (rows × k), via ‖x‖² − 2·Re(x·cᴴ) + ‖c‖².

    Parameters
    ----------
    xp : module
    x : (rows, n) array
    centers : (k, n) array
    c_sq, x_sq : squared norms of the centres (k,) and of the rows (rows,), float64

    Returns
    -------
    (rows, k) float64 array, clipped at 0
    """
    # the product runs in the data's precision, as scikit-learn's (float32 data: float32 GEMM)
    cross = (x @ centers.astype(x.dtype, copy=False).conj().T).real.astype(np.float64)
    return xp.maximum(x_sq[:, None] - 2 * cross + c_sq[None, :], 0)
