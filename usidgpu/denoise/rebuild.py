"""Projection on eigen-windows and overlap-add, as FFT correlations — no patch matrix.

With ``X[p, q] = I(p + q)`` and components ``v_k`` (windows), the scores are the valid
cross-correlation ``s_k(p) = Σ_q I(p + q)·v_k(q)`` at the window origins, and the overlap-added
rank-k rebuild is ``Σ_k (s_k ∗ v_k)`` — each score map convolved with its eigen-window — divided
by the number of windows covering each pixel. One FFT size (≥ the image) serves both: the
valid correlation never wraps, nor does the convolution back onto the image. All in float64.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..core.fft import irfft2, next_fast_len, rfft2
from .patches import origins


def coverage(xp: Any, shape: tuple[int, int], window: tuple[int, int], step: tuple[int, int]) -> Any:
    """How many windows cover each pixel (separable: rows × columns)."""
    counts = []
    for size, w, s in zip(shape, window, step):
        n = origins(size, w, s)
        start = xp.zeros(size + 1, dtype=np.int64)
        start[xp.arange(n) * s] += 1
        start[xp.arange(n) * s + w] -= 1
        counts.append(xp.cumsum(start)[:size])
    return counts[0][:, None] * counts[1][None, :]


def origin_mask(xp: Any, shape: tuple[int, int], window: tuple[int, int], step: tuple[int, int]) -> Any:
    """1 at every window origin (the step grid within the valid range), 0 elsewhere."""
    mask = xp.zeros(shape, dtype=np.float64)
    ny, nx = (origins(n, w, s) for n, w, s in zip(shape, window, step))
    mask[: ny * step[0] : step[0], : nx * step[1] : step[1]] = 1.0
    return mask


def project_and_rebuild(
    xp: Any,
    image: Any,
    components: Any,
    window: tuple[int, int],
    step: tuple[int, int],
    keep_scores: bool = False,
) -> tuple[Any, Any | None]:
    """The overlap-add sum of the rank-k windows (not yet divided by the coverage), and optionally
    the score maps (k × ny × nx).

    Parameters
    ----------
    xp : module
    image : 2-D array (H, W)
    components : array (k, wy·wx)
        Orthonormal eigen-windows as rows.
    window, step : (int, int)
    keep_scores : bool
    """
    h, w = image.shape
    wy, wx = window
    shape = (next_fast_len(h), next_fast_len(w))
    spec_image = rfft2(xp, image.astype(np.float64), shape)
    mask = origin_mask(xp, shape, window, step)
    mask[h - wy + 1 :, :] = 0  # origins whose window would run off the image
    mask[:, w - wx + 1 :] = 0
    acc = xp.zeros_like(spec_image)
    ny, nx = origins(h, wy, step[0]), origins(w, wx, step[1])
    scores = xp.empty((components.shape[0], ny, nx), dtype=np.float64) if keep_scores else None
    for k in range(components.shape[0]):
        kernel = components[k].reshape(wy, wx).astype(np.float64)
        spec_kernel = rfft2(xp, kernel, shape)
        corr = irfft2(xp, spec_image * spec_kernel.conj(), shape) * mask  # s_k at the origins
        if scores is not None:
            scores[k] = corr[: ny * step[0] : step[0], : nx * step[1] : step[1]]
        acc += rfft2(xp, corr, shape) * spec_kernel
    rebuilt = irfft2(xp, acc, shape)[:h, :w]
    return rebuilt, scores
