"""Compiled corner tables of :func:`usidgpu.denoise.gram.gram_step1` (optional: needs numba).

The four corner tables of one row lag ``dy`` are 2-D prefix (or suffix) sums of
``J_d(y, x) = I(y, x)·I(y + dy, x + dx)`` over a (w−1) × (w−1) corner of the image, for every
column lag ``dx``: (2w − 1)·w² values per corner. NumPy builds them as products with 0/1 summing
matrices — BLAS-fast, but O(w) work per value, which makes them the largest cost of large
windows (0.5 s of 1.7 s for 48 × 48 windows on a 1024² image). A compiled running sum does O(1)
work per value. :func:`usidgpu.denoise.gram._corner_slices` is the reference; the tests check
that both give the same tables.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(parallel=True, cache=True, fastmath=False)
def _tables(image, pad, dyi, wy, wx, hy, hx, r0s, c0s, from_bottom, from_right, out):
    """out[corner, dxi, t, u]: sum of J over the first (or last) t rows and u columns of the corner."""
    for corner in range(4):
        r0, c0 = r0s[corner], c0s[corner]
        fb, fr = from_bottom[corner], from_right[corner]
        for dxi in prange(2 * wx - 1):
            acc = np.zeros((wy, wx))
            for t in range(1, wy):
                # the row added when t grows: the t-th from the top, or from the bottom
                if t <= hy:
                    y = (hy - t) if fb else (t - 1)
                    running = 0.0
                    for u in range(1, wx):
                        if u <= hx:
                            x = (hx - u) if fr else (u - 1)
                            running += image[r0 + y, c0 + x] * pad[r0 + dyi + y, c0 + x + dxi]
                        acc[t, u] = acc[t - 1, u] + running
                else:  # fewer rows than t: the sum saturates
                    for u in range(wx):
                        acc[t, u] = acc[t - 1, u]
            for t in range(wy):
                for u in range(wx):
                    out[corner, dxi, t, u] = acc[t, u]


def corner_tables(image: np.ndarray, pad: np.ndarray, dyi: int, wy: int, wx: int) -> dict[str, np.ndarray]:
    """The four (2wx−1, wy, wx) corner tables of lag ``dyi`` (see ``gram._corner_slices``)."""
    h, w = image.shape
    hy, hx = min(wy - 1, h), min(wx - 1, w)
    r_bottom, c_right = h - hy, w - hx
    r0s = np.array([0, 0, r_bottom, r_bottom], dtype=np.int64)
    c0s = np.array([0, c_right, 0, c_right], dtype=np.int64)
    from_bottom = np.array([False, False, True, True])
    from_right = np.array([False, True, False, True])
    out = np.empty((4, 2 * wx - 1, wy, wx))
    _tables(image, pad, dyi, wy, wx, hy, hx, r0s, c0s, from_bottom, from_right, out)
    return {"tl": out[0], "tr": out[1], "bl": out[2], "br": out[3]}
