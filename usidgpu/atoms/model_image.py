"""The fitted columns as an image, and the image's noise as a function of its mean.

:func:`column_image` draws the sum of the fitted Gaussians (without their backgrounds): the
neighbour-aware fit subtracts it to take every column's neighbours out of its fit window
(:mod:`usidgpu.atoms.neighbours`), and the finder searches what it leaves for the columns it
missed (:func:`usidgpu.atoms.find.find_columns`). Each column is drawn in a square box of
:func:`render_radius` around its rounded centre — the same box whose pixels get the column's own
model added back, so that subtracting and adding back cancel exactly.

:func:`fit_noise` estimates the variance of a pixel as ``alpha + beta · mean``: shot noise
(``beta`` = 1 / counts per unit intensity) on top of a constant (read noise). Least squares
weighted by its inverse is the maximum-likelihood fit of Poisson data; unweighted least squares
loses 5–15 % in position RMS on a column whose peak stands ten times above its background.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .gaussian import AMPLITUDE, QA, QB, QC, X, Y, model_and_jacobian
from .windows import gather

#: A column's Gaussian is drawn to where it falls below this fraction of its peak.
RENDER_CUTOFF = 1e-4


def render_radius(params: np.ndarray, cap: float) -> int:
    """Half-size of the box every column is drawn in: where the widest (95th percentile of the
    major-axis widths) of the fitted Gaussians falls to :data:`RENDER_CUTOFF`, at most ``cap``.

    One box for all columns keeps the drawing and the add-back vectorized; the few columns wider
    than the 95th percentile are cut where they are below 1e-4 × (their width ratio)² anyway.
    """
    p = np.asarray(params, dtype=np.float64)
    ok = np.isfinite(p).all(axis=1) & (p[:, AMPLITUDE] > 0)
    if not ok.any():
        return 1
    qa, qb, qc = p[ok, QA], p[ok, QB], p[ok, QC]
    # smallest eigenvalue of the quadratic form: the major axis, E = λ_min·r² along it
    lam = 0.5 * (qa + qc) - np.sqrt((0.5 * (qa - qc)) ** 2 + qb * qb)
    lam = np.maximum(lam, 1e-12)
    reach = math.sqrt(math.log(1.0 / RENDER_CUTOFF) / float(np.percentile(lam, 5)))
    return int(max(1, min(math.ceil(reach), math.ceil(cap))))


def column_image(xp: Any, shape: tuple[int, int], params: Any, rho: int, chunk: int = 4096) -> Any:
    """Sum of the columns' Gaussians ``A·exp(−E)`` (fitted form, no background), each drawn in
    the (2ρ+1)² box around its rounded centre.

    Parameters
    ----------
    xp : module
        numpy or cupy: the image is built there (a scatter-add by ``bincount``).
    shape : (int, int)
    params : (N, 7) fitted parameters (:data:`~usidgpu.atoms.gaussian.FIT_PARAMETERS`); columns
        with a non-finite parameter are left out.
    rho : int
        Box half-size (:func:`render_radius`).

    Returns
    -------
    (H, W) float64 array on ``xp``
    """
    h, w = shape
    p = xp.asarray(params, dtype=np.float64)
    out = xp.zeros(h * w, dtype=np.float64)
    off = xp.arange(-rho, rho + 1)
    for s in range(0, p.shape[0], chunk):
        q = p[s : s + chunk]
        q = q[xp.isfinite(q).all(axis=1)]
        if q.shape[0] == 0:
            continue
        rows = xp.rint(q[:, Y : Y + 1]).astype(np.int64) + off  # (n, S)
        cols = xp.rint(q[:, X : X + 1]).astype(np.int64) + off
        dy = (rows - q[:, Y : Y + 1])[:, :, None]
        dx = (cols - q[:, X : X + 1])[:, None, :]
        e = q[:, QA, None, None] * dx * dx + 2 * q[:, QB, None, None] * dx * dy + q[:, QC, None, None] * dy * dy
        val = q[:, AMPLITUDE, None, None] * xp.exp(-e)
        inside = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]
        flat = rows[:, :, None] * w + cols[:, None, :]
        out += xp.bincount(flat[inside], weights=val[inside], minlength=h * w)
    return out.reshape(h, w)


def own_model(xp: Any, params: Any, yy: Any, xx: Any, rho: int) -> Any:
    """Each column's own Gaussian (fitted form, no background) at its pixels (N, M), zero outside
    the box :func:`column_image` drew it in — what adding it back to ``image − column_image``
    must restore."""
    p = xp.asarray(params)
    cy = xp.rint(p[:, Y : Y + 1])
    cx = xp.rint(p[:, X : X + 1])
    in_box = (xp.abs(yy - cy) <= rho) & (xp.abs(xx - cx) <= rho)
    dy, dx = yy - p[:, Y : Y + 1], xx - p[:, X : X + 1]
    e = p[:, QA : QA + 1] * dx * dx + 2 * p[:, QB : QB + 1] * dx * dy + p[:, QC : QC + 1] * dy * dy
    return xp.where(in_box, p[:, AMPLITUDE : AMPLITUDE + 1] * xp.exp(-e), 0.0)


@dataclass
class NoiseModel:
    """Pixel variance ``alpha + beta · mean`` (image units)."""

    alpha: float
    beta: float

    def variance(self, xp: Any, mean: Any) -> Any:
        """The variance at these mean intensities, floored at a millionth of its largest value on
        the image's range so that no weight is infinite."""
        v = self.alpha + self.beta * mean
        return xp.maximum(v, self.floor)

    @property
    def floor(self) -> float:
        return max(1e-6 * (abs(self.alpha) + abs(self.beta)), 1e-300)

    def as_dict(self) -> dict[str, float]:
        return {"alpha": float(self.alpha), "beta": float(self.beta)}


#: Pixels per intensity bin in :func:`fit_noise` (fewer bins where the image has fewer pixels).
NOISE_BIN = 2000  # pixels per bin: its variance to ~3 %
#: The median of χ²₁: a Gaussian residual's median square is this × its variance.
MEDIAN_CHI2_1 = 0.454936423119572


def fit_noise(
    image: np.ndarray, params: np.ndarray, start: np.ndarray, radius: float, max_columns: int = 400
) -> NoiseModel:
    """Variance of the image's noise as ``alpha + beta · mean``, from the residuals of fitted
    columns (host NumPy).

    The residual of each pixel is taken against its own column's fit (Gaussian + background)
    in the inner three quarters of that column's fit disk (from its peak to near its background, so
    that both terms show, short of the rim where the neighbours' tails are largest), and
    divided by √(1 − leverage) (a fit of seven parameters to a few dozen pixels follows the noise
    at the ones that pin it: read plainly, the residuals of a column two pixels wide are half as
    variable as its noise); the pixels are binned by their fitted mean, the variance of each bin is read robustly (the
    median squared deviation from the bin's median over that of χ²₁: misfit pixels do not pull
    it), and a line is fitted through the bins. A negative slope or intercept means that term
    is not there (set to 0).

    Parameters
    ----------
    image : 2-D array
    params : (N, 7) fitted parameters (fitted form)
    start : (N, 2) positions the fit windows were centred on
    radius : float
        Their fit radius.
    max_columns : int
        At most this many columns (evenly spread over the list) are read: some 20 000 pixels,
        ten bins of the variance, each known to 3 %.

    Returns
    -------
    NoiseModel
    """
    img = np.asarray(image, dtype=np.float64)
    p = np.asarray(params, dtype=np.float64)
    ok = np.flatnonzero(np.isfinite(p).all(axis=1))
    if len(ok) > max_columns:
        ok = ok[np.linspace(0, len(ok) - 1, max_columns).astype(np.int64)]
    if len(ok) == 0:
        return NoiseModel(float(np.var(img)) or 1.0, 0.0)
    p, c = p[ok], np.asarray(start, dtype=np.float64)[ok]
    n = len(p)
    r_int = int(math.ceil(radius))
    values, inside, grid = gather(np, img, c, r_int)
    yy = np.broadcast_to(grid[:, 0, :, None], values.shape).reshape(n, -1)
    xx = np.broadcast_to(grid[:, 1, None, :], values.shape).reshape(n, -1)
    d2 = (yy - c[:, 0, None]) ** 2 + (xx - c[:, 1, None]) ** 2
    disk = inside.reshape(n, -1) & (d2 <= radius * radius)
    model, jac = model_and_jacobian(np, p, yy, xx)
    jac = jac * disk[:, None, :]
    # a fit bends towards the noise at the pixels that pin its parameters (near a column's peak,
    # a third to a half of them, "leverage" h): their residuals have variance (1 − h)·σ², not σ²
    normal = jac @ jac.transpose(0, 2, 1)
    ridge = 1e-12 * np.diagonal(normal, axis1=1, axis2=2).max(axis=1) + 1e-300
    inverse = np.linalg.inv(normal + ridge[:, None, None] * np.eye(7))
    leverage = np.einsum("npm,npq,nqm->nm", jac, inverse, jac)
    keep = disk & (d2 <= (0.75 * radius) ** 2) & (leverage < 0.9)
    resid = (values.reshape(n, -1) - model) / np.sqrt(np.clip(1.0 - leverage, 0.1, 1.0))
    mean, resid = model[keep], resid[keep]
    if mean.size < 50:
        return NoiseModel(float(np.mean(resid * resid)) if mean.size else 1.0, 0.0)
    order = np.argsort(mean)
    n_bins = int(np.clip(mean.size // NOISE_BIN, 2, 40))
    centres, variances, counts = [], [], []
    for part in np.array_split(order, n_bins):
        r = resid[part]
        variances.append(np.median((r - np.median(r)) ** 2) / MEDIAN_CHI2_1)
        centres.append(np.mean(mean[part]))
        counts.append(len(part))
    x, v, wgt = np.array(centres), np.array(variances), np.array(counts, dtype=np.float64)
    # a noise-free (simulated) image has no variance to read: a floor far below any real noise
    # keeps the weights finite (and the fit weighted alike everywhere)
    floor = 1e-12 * max(float(np.max(np.abs(x))) ** 2, 1e-300)
    v = np.maximum(v, floor)
    # a weighted line through the bins: each bin's variance is known to ~sqrt(2/n) relative
    wgt = wgt / v**2
    a = np.stack([np.ones_like(x), x], axis=1)
    alpha, beta = np.linalg.lstsq(a * np.sqrt(wgt)[:, None], v * np.sqrt(wgt), rcond=None)[0]
    if beta <= 0:
        return NoiseModel(float(np.average(v, weights=wgt)), 0.0)
    if alpha < 0:
        beta = float(np.sum(wgt * x * v) / np.sum(wgt * x * x))
        alpha = 0.0
    return NoiseModel(float(alpha), float(beta))
