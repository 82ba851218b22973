"""The Gram matrix ``XᵀX`` of all step-1 windows of an image, without the patch matrix.

For window offsets ``q = (a, b)``, ``q' = q + d``, and origins ``p`` over the valid rectangle,

    G[q, q'] = Σ_p I(p + q)·I(p + q + d) = Σ_{r ∈ R_q} J_d(r),   J_d(r) = I(r)·I(r + d),

where ``R_q`` is the image minus a band of ``a`` rows at the top, ``wy − 1 − a`` at the bottom,
``b`` columns on the left and ``wx − 1 − b`` on the right. So by inclusion–exclusion

    G = Tot_d − top_d(a) − bottom_d(wy−1−a) − left_d(b) − right_d(wx−1−b) + four corners,

with ``Tot_d`` the image's autocorrelation at lag ``d`` (one FFT for all lags), the band terms
row (column) cross-correlations of the ``wy − 1`` border rows (columns), and the corners small
products. That is O(HW log HW + w²·(H + W)·w) work instead of the O(HW·w⁴) of ``XᵀX``
— for a 1024² image and 32 × 32 windows about 4·10⁹ fewer multiply-adds than the patch
matrix's 10¹² — and O(w⁴) memory. Everything is float64, on NumPy or CuPy.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..core.fft import irfft, irfft2, next_fast_len, rfft, rfft2


def _autocorrelation(xp: Any, image: Any, wy: int, wx: int) -> Any:
    """``Tot[dy + wy − 1, dx + wx − 1] = Σ_r I(r)·I(r + d)`` for |dy| < wy, |dx| < wx."""
    h, w = image.shape
    hp, wp = next_fast_len(h + wy - 1), next_fast_len(w + wx - 1)
    spec = rfft2(xp, image, (hp, wp))
    corr = irfft2(xp, spec.conj() * spec, (hp, wp))
    dy = xp.arange(-(wy - 1), wy) % hp
    dx = xp.arange(-(wx - 1), wx) % wp
    return corr[dy[:, None], dx[None, :]]


def _row_band_terms(xp: Any, image: Any, wy: int, wx: int) -> tuple[Any, Any]:
    """Prefix sums of ``RowS_d(y) = Σ_x J_d(y, x)`` over the top rows and suffix sums over the
    bottom rows: ``top[dyi, dxi, a] = Σ_{y<a}``, ``bottom[dyi, dxi, t] = Σ_{y ≥ H−t}``, a, t < wy."""
    h, w = image.shape
    n = next_fast_len(w + wx - 1)
    pad = xp.zeros((h + 2 * (wy - 1), w), dtype=image.dtype)
    pad[wy - 1 : wy - 1 + h] = image
    top_rows = xp.arange(0, min(wy - 1, h))
    bottom_rows = xp.arange(max(0, h - (wy - 1)), h)
    lags = xp.arange(-(wx - 1), wx) % n

    def band(rows: Any) -> Any:
        # out[dyi, dxi, row] = Σ_x I[row, x]·I[row + dy, x + dx]
        out = xp.zeros((2 * wy - 1, 2 * wx - 1, rows.size), dtype=np.float64)
        if rows.size == 0:
            return out
        base = rfft(xp, image[rows], n)
        for dyi in range(2 * wy - 1):
            partner = rfft(xp, pad[rows + dyi], n)  # row + dy in the padded image
            corr = irfft(xp, base.conj() * partner, n)  # (rows, lags)
            out[dyi] = corr[:, lags].T
        return out

    top = band(top_rows)
    bottom = band(bottom_rows)
    zeros = xp.zeros((2 * wy - 1, 2 * wx - 1, 1), dtype=np.float64)
    top_prefix = xp.concatenate([zeros, xp.cumsum(top, axis=2)], axis=2)  # index a: rows [0, a)
    bottom_suffix = xp.concatenate([zeros, xp.cumsum(bottom[:, :, ::-1], axis=2)], axis=2)  # last t rows
    return _pad_last(xp, top_prefix, wy), _pad_last(xp, bottom_suffix, wy)


def _pad_last(xp: Any, a: Any, size: int) -> Any:
    """Extend the last axis to ``size`` by repeating its last entry (short images: fewer rows)."""
    if a.shape[-1] >= size:
        return a[..., :size]
    reps = xp.repeat(a[..., -1:], size - a.shape[-1], axis=-1)
    return xp.concatenate([a, reps], axis=-1)


def compiled_corners() -> bool:
    """Whether the compiled corner tables (numba) are used on the CPU; ``USIDGPU_NO_NUMBA=1``
    turns them off (the tests compare both)."""
    import importlib.util
    import os

    return importlib.util.find_spec("numba") is not None and not os.environ.get("USIDGPU_NO_NUMBA")


def _corner_slices(xp: Any, image: Any, wy: int, wx: int):
    """For each ``dyi = dy + wy − 1``: sums of ``J_d`` over the four image corners, all dx at once.

    ``tl[dxi, a, b] = Σ_{y<a, x<b} J_d`` (top-left), ``tr[dxi, a, u] = Σ_{y<a, x≥W−u}``,
    ``bl[dxi, t, b] = Σ_{y≥H−t, x<b}``, ``br[dxi, t, u] = Σ_{y≥H−t, x≥W−u}``; each (2wx−1, wy, wx).
    One ``dy`` at a time keeps the tables O(w³) instead of O(w⁴).
    """
    h, w = image.shape
    hy, hx = min(wy - 1, h), min(wx - 1, w)
    pad = xp.zeros((h + 2 * (wy - 1), w + 2 * (wx - 1)), dtype=image.dtype)
    pad[wy - 1 : wy - 1 + h, wx - 1 : wx - 1 + w] = image
    r_bottom, c_right = h - hy, w - hx

    def summing(n_out: int, n_in: int, from_end: bool) -> Any:
        """Row t sums the first t (or the last t) of n_in entries, t = 0 … n_out − 1."""
        t = xp.arange(n_out)[:, None]
        i = xp.arange(n_in)[None, :]
        return ((i >= n_in - t) if from_end else (i < t)).astype(np.float64)

    if xp is np and compiled_corners():
        from .gram_numba import corner_tables

        for dyi in range(2 * wy - 1):
            yield dyi, corner_tables(image, pad, dyi, wy, wx)
        return

    sums = {flip: (summing(wy, hy, flip), summing(wx, hx, flip)) for flip in (False, True)}
    corners = {
        "tl": (0, 0, False, False),
        "tr": (0, c_right, False, True),
        "bl": (r_bottom, 0, True, False),
        "br": (r_bottom, c_right, True, True),
    }

    def table(dyi: int, r0: int, c0: int, from_bottom: bool, from_right: bool) -> Any:
        block = image[r0 : r0 + hy, c0 : c0 + hx]
        rows = pad[r0 + dyi : r0 + dyi + hy, c0 : c0 + hx + 2 * (wx - 1)]
        # (hy, 2wx−1, hx): the partner row segment per dx, as a strided view. Not
        # sliding_window_view: CuPy's uploads its window shape and reads it back, a host
        # synchronization per call (four per dy here)
        step_y, step_x = rows.strides
        partners = xp.lib.stride_tricks.as_strided(rows, (hy, 2 * wx - 1, hx), (step_y, step_x, step_x))
        j = xp.moveaxis(partners * block[:, None, :], 1, 0)  # (dxi, y, x)
        # 2-D prefix (or suffix) sums as products with 0/1 summing matrices: BLAS, not strided cumsums
        return sums[from_bottom][0] @ j @ sums[from_right][1].T  # (dxi, wy, wx)

    for dyi in range(2 * wy - 1):
        yield dyi, {name: table(dyi, *spec) for name, spec in corners.items()}


def gram_step1(xp: Any, image: Any, window: tuple[int, int]) -> Any:
    """``XᵀX`` (float64, wy·wx × wy·wx) of all step-1 windows of ``image``, exactly.

    Parameters
    ----------
    xp : module
        numpy or cupy.
    image : 2-D array
    window : (wy, wx)
    """
    wy, wx = window
    img = image.astype(np.float64)
    tot = _autocorrelation(xp, img, wy, wx)
    top, bottom = _row_band_terms(xp, img, wy, wx)
    left_t, right_t = _row_band_terms(xp, img.T, wx, wy)  # columns = rows of the transpose
    left, right = xp.swapaxes(left_t, 0, 1), xp.swapaxes(right_t, 0, 1)  # back to [dyi, dxi, ·]
    g = xp.zeros((wy, wx, wy, wx), dtype=np.float64)  # G[a, b, a', b']
    b = xp.arange(wx)[:, None]  # rows: b, columns: b'
    dxi = xp.arange(wx)[None, :] - b + wx - 1
    tb = wx - 1 - b
    for dyi, corner in _corner_slices(xp, img, wy, wx):
        dy = dyi - (wy - 1)
        a = xp.arange(max(0, -dy), min(wy, wy - dy))[:, None, None]  # a and a + dy inside the window
        if a.size == 0:
            continue
        ta = wy - 1 - a
        g[a[:, 0, 0], :, a[:, 0, 0] + dy, :] = (
            tot[dyi, dxi][None]
            - top[dyi][dxi[None], a]
            - bottom[dyi][dxi[None], ta]
            - left[dyi][dxi, b][None]
            - right[dyi][dxi, tb][None]
            + corner["tl"][dxi[None], a, b[None]]
            + corner["tr"][dxi[None], a, tb[None]]
            + corner["bl"][dxi[None], ta, b[None]]
            + corner["br"][dxi[None], ta, tb[None]]
        )
    return g.reshape(wy * wx, wy * wx)
