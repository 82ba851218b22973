"""The second pass of the column finder: columns that the first pass could not see, found in the
image minus the columns it did see.

A dim column beside bright ones is a small bump on their tails: a local maximum of the image
only where the tails are flat, and always below the first pass's prominence threshold (a
fraction of the typical, i.e. bright, column's) when its amplitude is near that fraction. Here
the first pass's columns are fitted and subtracted (:mod:`usidgpu.atoms.model_image`), and the
rest is searched with the matched filter of a column: the correlation with the column's
Gaussian, made zero-mean over its window so that a locally constant background cancels, divided
by its noise standard deviation (from the image's noise model). Under noise alone that is a
standard normal number at every pixel; a column of amplitude A stands ``A·√(Σg²/variance)``
noise units tall. A candidate must stand :data:`MIN_SNR` noise units and a tenth of the typical
column's amplitude above its surroundings (the second keeps the subtraction's small misfits on
real columns from counting at high dose), be the strongest within half a spacing, and lie
farther than :data:`EXCLUSION` × the spacing from every column already found (a misfit of a
column is a ring or a dipole on it, not a peak half a spacing away). No trial fit decides: a
seven-parameter fit of a weak column on a small window can fall into a wide dome on a negative
background even where the column is plain, which would drop real columns.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from .gaussian import AMPLITUDE, SIGMA_X, SIGMA_Y

#: Matched-filter signal-to-noise a second-pass column needs (false columns on pure noise: about
#: 3e-7 per independent patch of the image, well under one per 10⁶ columns' area).
MIN_SNR = 5.0
#: ... and its amplitude, as a fraction of the typical (90th percentile) fitted amplitude.
MIN_FRACTION = 0.1
#: A candidate closer than this × the column spacing to a column already found is that column's
#: own misfit, not a column.
EXCLUSION = 0.5


def residual_search(
    image: np.ndarray,
    positions: np.ndarray,
    spacing: float,
    edge: int = 1,
    min_snr: float = MIN_SNR,
    neighbours: str = "none",
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Columns missing from ``positions``, found in the image minus the fitted ``positions``.

    Parameters
    ----------
    image : 2-D float64 array (host)
    positions : (N, 2) columns already found (y, x)
    spacing : float
        Nearest-neighbour column distance (px).
    edge : int
        Candidates closer than this to the border are dropped (as in the first pass).
    min_snr : float
        Matched-filter signal-to-noise a new column needs.
    neighbours : {"none", "subtract"}
        The fit whose columns are subtracted (:func:`usidgpu.atoms.fit.refine`). The single-column
        fit (default): a neighbour-aware one subtracts every column's errors from its neighbours
        too, and the holes a bad fit leaves in the residual ring it with false peaks.

    Returns
    -------
    new : (M, 2) start positions of the new columns
    snr : (M,) their matched-filter signal-to-noise
    info : dict
        The filter width, noise model and thresholds used.
    """
    from .fit import refine
    from .model_image import column_image, fit_noise, render_radius
    from .neighbours import _plausible, _typical_widths, amplitude_groups, fitted_form, pooled_models

    img = np.asarray(image, dtype=np.float64)
    h, w = img.shape
    empty: tuple[np.ndarray, np.ndarray, dict] = (np.zeros((0, 2)), np.zeros(0), {})
    if len(positions) < 2:
        return empty
    fit = refine(img, positions, radius=0.5 * spacing, device="cpu", neighbours=neighbours)
    params = fit.params
    widths = _typical_widths(params)
    reliable = _plausible(params, widths)
    if reliable.sum() < 2:
        return empty
    p = fitted_form(params)
    drawn = pooled_models(p, amplitude_groups(params[:, AMPLITUDE], reliable), reliable)
    rho = render_radius(p[reliable], cap=2.0 * spacing)
    residual = img - column_image(np, (h, w), drawn, rho)
    noise = fit_noise(img, p[reliable], fit.start[reliable], 0.5 * spacing)
    sigma = float(np.median(np.sqrt(params[reliable, SIGMA_X] * params[reliable, SIGMA_Y])))
    score, amplitude = matched_filter(residual, sigma, noise.variance(np, ndimage.gaussian_filter(img, sigma)))
    typical = float(np.percentile(params[reliable, AMPLITUDE], 90))
    info = dict(filter_sigma=sigma, min_snr=min_snr, min_amplitude=MIN_FRACTION * typical, noise=noise.as_dict())
    candidates = (score >= min_snr) & (amplitude >= MIN_FRACTION * typical)
    footprint = _disk(max(1.0, 0.5 * spacing))
    peak = candidates & (score == ndimage.maximum_filter(score, footprint=footprint, mode="nearest"))
    ys, xs = np.nonzero(peak)
    keep = (ys >= edge) & (ys < h - edge) & (xs >= edge) & (xs < w - edge)
    ys, xs = ys[keep], xs[keep]
    if len(ys):
        d, _ = cKDTree(positions).query(np.stack([ys, xs], axis=1).astype(np.float64))
        ys, xs = ys[d > EXCLUSION * spacing], xs[d > EXCLUSION * spacing]
    if len(ys) == 0:
        return np.zeros((0, 2)), np.zeros(0), info
    snr = score[ys, xs]
    # strongest first, a minimum separation of half the spacing between new columns
    order = np.argsort(-snr, kind="stable")
    ys, xs, snr = ys[order], xs[order], snr[order]
    chosen: list[int] = []
    for k in range(len(ys)):
        if all((ys[k] - ys[c]) ** 2 + (xs[k] - xs[c]) ** 2 >= (0.5 * spacing) ** 2 for c in chosen):
            chosen.append(k)
    return _vertex(score, ys[chosen], xs[chosen]), snr[chosen], info


def matched_filter(residual: np.ndarray, sigma: float, variance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Signal-to-noise and amplitude maps of a Gaussian column of width ``sigma`` on a locally
    constant background.

    At each pixel: the least-squares amplitude of a Gaussian centred there plus a constant, over
    the pixels of the image within its (2⌈3σ⌉+1)² box — the correlation with the Gaussian made
    zero-mean over those pixels (a background level cancels; at the border over the pixels that
    exist, not over padding), divided by its squared norm — and that amplitude over its standard
    deviation (the variance taken as locally constant).
    """
    r = max(1, int(math.ceil(3.0 * sigma)))
    y, x = np.mgrid[-r : r + 1, -r : r + 1]
    g = np.exp(-(x * x + y * y) / (2.0 * sigma * sigma))
    box = np.ones_like(g)
    ones = np.ones_like(residual, dtype=np.float64)

    def corr(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
        return ndimage.correlate(image, kernel, mode="constant", cval=0.0)

    count, g_sum, g2_sum = corr(ones, box), corr(ones, g), corr(ones, g * g)
    mean_g = g_sum / count  # the Gaussian's mean over the box's pixels inside the image
    signal = corr(residual, g) - mean_g * corr(residual, box)
    norm = np.maximum(g2_sum - g_sum * mean_g, 1e-300)  # Σ (g − mean)² over those pixels
    amplitude = signal / norm
    score = signal / np.sqrt(np.maximum(variance, 1e-300) * norm)
    return score, amplitude


def _vertex(score: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Sub-pixel maxima of ``score`` at the integer peaks (a parabola through each axis)."""
    h, w = score.shape
    out = np.stack([ys, xs], axis=1).astype(np.float64)
    for axis, (dy, dx) in enumerate(((1, 0), (0, 1))):
        ok = (ys - dy >= 0) & (ys + dy < h) & (xs - dx >= 0) & (xs + dx < w)
        m = score[np.clip(ys - dy, 0, h - 1), np.clip(xs - dx, 0, w - 1)]
        c = score[ys, xs]
        p = score[np.clip(ys + dy, 0, h - 1), np.clip(xs + dx, 0, w - 1)]
        d = m - 2 * c + p
        shift = np.where(ok & (d < 0), 0.5 * (m - p) / np.where(d < 0, d, -1.0), 0.0)
        out[:, axis] += np.clip(shift, -0.5, 0.5)
    return out


def _disk(radius: float) -> np.ndarray:
    r = int(np.floor(radius))
    y, x = np.mgrid[-r : r + 1, -r : r + 1]
    return (y * y + x * x) <= radius * radius
