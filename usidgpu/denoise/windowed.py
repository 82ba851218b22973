"""Windowed SVD denoising of images (Fig. 1 of the USID/pycroscopy paper), without a patch matrix.

Every ``window``-sized patch of the image (origins every ``step`` pixels) is a row of an implicit
matrix ``X``. Its Gram matrix ``XᵀX`` is accumulated exactly — by FFT autocorrelation and border
corrections for step 1 (:mod:`.gram`), by bounded chunks of patches otherwise — and
eigendecomposed into eigen-windows and singular values; the image is rebuilt from the first
``k`` eigen-windows by FFT correlation and overlap-add, and divided by the number of windows
covering each pixel (:mod:`.rebuild`). The removed noise is the difference from the raw image.

Faithful to pycroscopy 0.60's ``ImageWindow`` where it is right — windows at every pixel by
default, overlaps averaged, the window from the lattice period of the tapered FFT, uncentred
windows — and free of its faults: the coverage count cannot overflow, any step works (including
steps that do not divide the image), non-square images and windows, and ``k`` is chosen by a
stated rule (:mod:`.rank`) when not given.

Large images are processed in tiles: the Gram matrix as a sum over disjoint blocks of window
origins, the rebuild per output tile with a halo of ``window − 1`` pixels. Both give exactly the
untiled result (up to floating-point rounding). Pixels no window covers (possible with
``step > window``) keep their raw value.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..core.arrays import asnumpy
from ..core.device import Device, select_device
from ..core.errors import BudgetError, InvalidInput
from ..core.linalg import top_eigh
from ..core.memory import format_bytes, memory_budget
from ..usid.described import Described
from ..usid.frames import frames_of
from .gram import gram_step1
from .patches import gram_by_patches, origins
from .rank import choose_rank
from .rebuild import coverage, project_and_rebuild
from .window_size import window_from_fft

#: Bytes per pixel of a tile while it is transformed (image, spectra, correlation, accumulator).
BYTES_PER_TILE_PIXEL = 96


@dataclass
class WindowedSVDResult(Described):
    """Result of :func:`windowed_svd`.

    Attributes
    ----------
    raw : ndarray
        The input image (H, W) or stack (frames, H, W), as float.
    cleaned : ndarray
        Rebuilt from the first ``k`` eigen-windows, same shape as ``raw``.
    noise : ndarray
        ``raw − cleaned``: what was removed.
    components : ndarray, (k, wy, wx)
        The eigen-windows used (rows of V), largest first.
    singular_values : ndarray
        All singular values of the windows matrix, descending (for the scree plot). With ``k``
        given they are computed on first use (an eigendecomposition of the Gram matrix the
        denoising itself does not need).
    k : int
    k_rule : str
        How ``k`` was chosen (the user's value, or the stated rule and its numbers).
    window, step : (int, int)
    window_rule : str
        How the window was chosen.
    scores : ndarray or None
        Score maps (k, ny, nx) of the first frame, when asked for and not tiled.
    n_windows : int
        Windows per frame.
    """

    raw: np.ndarray | None = None
    cleaned: np.ndarray | None = None
    noise: np.ndarray | None = None
    components: np.ndarray | None = None
    spectrum: Any = field(default=None, repr=False)  # singular values, or a callable giving them
    k: int = 0
    k_rule: str = ""
    window: tuple = (0, 0)
    step: tuple = (1, 1)
    window_rule: str = ""
    scores: Any = None
    n_windows: int = 0

    tool = "Windowed_SVD"

    @property
    def singular_values(self) -> np.ndarray:
        if callable(self.spectrum):
            self.spectrum = self.spectrum()
        return self.spectrum

    def write(self, main: Any = None, output: str | os.PathLike | None = None) -> str:
        """Write as ``<Source>-Windowed_SVD_NNN`` next to ``main`` (default: the source dataset)."""
        from .write import write_windowed

        return write_windowed(self, main, output)


def _pair(value: int | tuple[int, int] | None, name: str) -> tuple[int, int] | None:
    if value is None:
        return None
    pair = (int(value), int(value)) if isinstance(value, (int, np.integer)) else tuple(int(v) for v in value)
    if len(pair) != 2 or min(pair) < 1:
        raise InvalidInput(f"{name} must be a positive integer or a pair of them, got {value!r}")
    return (pair[0], pair[1])


def _require_finite(frames: np.ndarray, info: dict[str, Any]) -> None:
    """Refuse NaN or infinite pixels before any work, as the other analyses do: the Gram matrix of
    such an image is NaN, and the eigensolver only fails after the whole accumulation."""
    bad = ~np.isfinite(frames)
    if bad.any():
        source = info.get("source")
        name = source.name if source is not None else "the image"
        frame, row, col = (int(i) for i in np.unravel_index(int(np.argmax(bad)), frames.shape))
        where = f"frame {frame}, pixel ({row}, {col})" if frames.shape[0] > 1 else f"pixel ({row}, {col})"
        raise InvalidInput(
            f"{name} contains NaN or infinite values (first at {where}); denoising needs finite data "
            "(clean or mask them first)"
        )


def _tiles(n: int, size: int, align: int = 1) -> list[tuple[int, int]]:
    """Split ``range(n)`` into ranges of at most ``size`` (starts multiples of ``align``)."""
    size = max(align, size - size % align) if size >= align else align
    return [(a, min(a + size, n)) for a in range(0, n, size)]


def windowed_svd(
    image: Any,
    window: int | tuple[int, int] | None = None,
    step: int | tuple[int, int] = 1,
    k: int | None = None,
    device: str | Device | None = None,
    budget: int | str | None = None,
    keep_scores: bool = False,
    tile: int | None = None,
) -> WindowedSVDResult:
    """Denoise an image by the SVD of its overlapping windows (raw → cleaned → removed noise).

    Parameters
    ----------
    image : 2-D array, 3-D stack (frames, H, W), or MainDataset
        A Main dataset needs two position dimensions (the image grid); each spectroscopic point
        is a frame. Frames share one set of eigen-windows.
    window : int or (int, int), optional
        Window size in pixels; default about two lattice periods from the image's FFT.
    step : int or (int, int)
        Distance between window origins (1: every pixel, as pycroscopy).
    k : int, optional
        Components kept; default by the Gavish–Donoho rule (see :mod:`usidgpu.denoise.rank`).
    device : {"auto", "cpu", "gpu"}, optional
    budget : int or str, optional
        Memory budget of the working memory (Gram matrix, eigensolver, FFT tiles); larger images
        are processed in tiles. The input image and the two outputs (cleaned, removed noise)
        come on top of it.
    keep_scores : bool
        Also return the score (abundance) maps of the first frame (untiled images only).
    tile : int, optional
        Force a tile edge in pixels (mainly for tests); default from the budget.

    Returns
    -------
    WindowedSVDResult
    """
    dev = select_device(device)
    xp = dev.xp
    frames, info = frames_of(image)
    _require_finite(frames, info)
    single = info.pop("single")
    n_frames, h, w = frames.shape
    step_ = _pair(step, "step") or (1, 1)
    win = _pair(window, "window")
    if win is None:
        win = (window_from_fft(frames[0]),) * 2
        window_rule = f"{win[0]} px: about two lattice periods from the tapered FFT (pycroscopy's rule)"
    else:
        window_rule = "given"
    wy, wx = win
    if wy > h or wx > w:
        raise InvalidInput(f"a {wy}×{wx} window does not fit the {h}×{w} image")
    ny, nx = origins(h, wy, step_[0]), origins(w, wx, step_[1])
    n_pix = wy * wx
    total = memory_budget(budget, dev)
    # Gram matrix and its assembly, the eigensolver's copy and workspace, per-dy corner tables
    gram_bytes = 4 * n_pix * n_pix * 8 + 16 * (2 * max(wy, wx)) ** 3 * 8
    if gram_bytes > total:
        raise BudgetError(
            f"a {wy}×{wx} window needs about {format_bytes(gram_bytes)} for its Gram matrix and "
            f"eigendecomposition, more than the memory budget ({format_bytes(total)})"
        )
    edge = tile or int(math.sqrt(max(total - gram_bytes, 0) / BYTES_PER_TILE_PIXEL))
    if edge <= max(wy, wx):
        raise BudgetError(
            f"the memory budget ({format_bytes(total)}) leaves tiles of {edge} px, not more than the "
            f"{wy}×{wx} window; raise the budget"
        )

    # 1. Gram matrix: a sum over disjoint blocks of window origins
    g = xp.zeros((n_pix, n_pix), dtype=np.float64)
    # origins per Gram tile: its sub-image (origins + window − 1) must fit the tile edge
    per_tile = max(1, (edge - max(wy, wx)) // max(step_) + 1) if edge < max(h, w) else max(ny, nx)
    for f in range(n_frames):
        for i0, i1 in _tiles(ny, per_tile):
            for j0, j1 in _tiles(nx, per_tile):
                sub = frames[f, i0 * step_[0] : (i1 - 1) * step_[0] + wy, j0 * step_[1] : (j1 - 1) * step_[1] + wx]
                sub = xp.asarray(sub)
                g += gram_step1(xp, sub, win) if step_ == (1, 1) else gram_by_patches(xp, sub, win, step_)

    # 2. all singular values when the k rule needs them (else on first use: the scree plot, the
    # results group), then the top-k eigen-windows alone — for 64 × 64 windows a third of the
    # time of a full eigendecomposition
    if k is not None and (not isinstance(k, (int, np.integer)) or not 1 <= k <= n_pix):
        raise InvalidInput(f"k must be an integer in [1, {n_pix}] (pixels per window), got {k!r}")

    def spectrum(gram: Any = g) -> np.ndarray:
        return np.sqrt(np.maximum(asnumpy(xp.linalg.eigvalsh(gram))[::-1], 0))

    singular: Any  # the values, or the function that gives them
    if k is None:
        singular = spectrum()
        k, k_rule = choose_rank(singular, n_frames * ny * nx, n_pix)
    else:  # all singular values only when someone looks at them (scree plot, results group)
        singular = spectrum
        k, k_rule = int(k), "given"
    _top, vecs = top_eigh(xp, g, k)
    comps = vecs.T  # (k, P), orthonormal rows
    # fix each eigen-window's sign: its largest-magnitude pixel positive
    pivots = comps[xp.arange(k), xp.argmax(xp.abs(comps), axis=1)]
    comps = comps * xp.where(pivots < 0, -1.0, 1.0)[:, None]

    # 3. rebuild tile by tile (halo: window − 1), divide by the coverage
    cov = coverage(xp, (h, w), win, step_)
    cleaned = np.empty_like(frames)
    scores = None
    out_edge = max(1, edge - 2 * (max(wy, wx) - 1))
    tiled = out_edge < max(h, w)
    for f in range(n_frames):
        for ty0, ty1 in _tiles(h, out_edge if tiled else h):
            for tx0, tx1 in _tiles(w, out_edge if tiled else w):
                rec = _rebuild_tile(xp, frames[f], comps, win, step_, (ty0, ty1), (tx0, tx1), (ny, nx))
                c = cov[ty0:ty1, tx0:tx1]
                raw = xp.asarray(frames[f, ty0:ty1, tx0:tx1]).astype(np.float64)
                tile_clean = xp.where(c > 0, rec / xp.maximum(c, 1), raw)
                cleaned[f, ty0:ty1, tx0:tx1] = asnumpy(tile_clean)
        if f == 0 and keep_scores and not tiled:
            _rec, sc = project_and_rebuild(xp, xp.asarray(frames[0]), comps, win, step_, keep_scores=True)
            scores = asnumpy(sc)
    raw_out = frames[0] if single else frames
    clean_out = cleaned[0] if single else cleaned
    params = dict(
        window=list(win),
        step=list(step_),
        num_components=k,
        k_rule=k_rule,
        window_rule=window_rule,
        # from the free memory: recorded, but conditions, not identity (denoise/write.py)
        tiles=bool(tiled),
        tile_edge=int(edge),
    )
    return WindowedSVDResult(
        raw=raw_out,
        cleaned=clean_out,
        noise=raw_out - clean_out,
        components=asnumpy(comps).reshape(k, wy, wx),
        spectrum=singular,
        k=k,
        k_rule=k_rule,
        window=win,
        step=step_,
        window_rule=window_rule,
        scores=scores,
        n_windows=ny * nx,
        device=dev.kind,
        parameters=params,
        **info,
    )


def _rebuild_tile(
    xp: Any,
    image: np.ndarray,
    comps: Any,
    win: tuple[int, int],
    step: tuple[int, int],
    rows: tuple[int, int],
    cols: tuple[int, int],
    n_origins: tuple[int, int],
) -> Any:
    """Overlap-add sum for output pixels ``rows × cols`` from the windows that cover them."""
    ranges = []
    for (t0, t1), wlen, s, n in zip((rows, cols), win, step, n_origins):
        lo = max(0, -(-(t0 - wlen + 1) // s))  # first origin whose window reaches t0
        hi = min(n - 1, (t1 - 1) // s)  # last origin at or before t1 − 1
        ranges.append((lo, hi))
    (ilo, ihi), (jlo, jhi) = ranges
    out = xp.zeros((rows[1] - rows[0], cols[1] - cols[0]), dtype=np.float64)
    if ilo > ihi or jlo > jhi:
        return out  # no window covers this tile
    y0, x0 = ilo * step[0], jlo * step[1]
    y1, x1 = ihi * step[0] + win[0], jhi * step[1] + win[1]
    sub = xp.asarray(image[y0:y1, x0:x1])
    rec, _ = project_and_rebuild(xp, sub, comps, win, step)
    # the part of the sub-image's rebuild that falls in the tile
    ay0, ay1 = max(rows[0], y0), min(rows[1], y1)
    ax0, ax1 = max(cols[0], x0), min(cols[1], x1)
    out[ay0 - rows[0] : ay1 - rows[0], ax0 - cols[0] : ax1 - cols[0]] = rec[ay0 - y0 : ay1 - y0, ax0 - x0 : ax1 - x0]
    return out
