"""Is there a column at an empty lattice site? The image's answer, not the positions'.

A lattice site with no fitted column near it is a vacancy only if the image shows no column
there. A site can lack a fitted column for other reasons: the finder missed a dim column, or a
column sits further from its site than the tolerance (scan distortion, a real displacement).
So at each such site the image is asked directly, with a matched filter: the fitted columns of
the *other* sites around it are subtracted (their Gaussians, not their background; a fitted column
within half a site separation stays — it is this site's, however displaced), and a Gaussian of the
local column width plus a constant is fitted by linear least squares at every half-pixel offset
within 0.35 of the site separation (past the 0.3 tolerance of a found column); the largest fitted
amplitude, divided by the median fitted amplitude of the columns of the same sublattice nearby, is
the site's *evidence*. About 1: a column is there (found or not); about 0: nothing above the
background and the noise.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from scipy.spatial import cKDTree

from .gaussian import AMPLITUDE, SIGMA_X, SIGMA_Y, THETA, X, Y

#: Evidence below which an empty site is a vacancy (half the local column amplitude).
EVIDENCE = 0.5
#: Same-sublattice columns within this many site separations set the local amplitude and width.
LOCAL = 3.0
#: The filter's centre may move this fraction of the site separation from the site.
SEARCH = 0.35
#: A fitted column nearer the site than this fraction of the site separation is the site's own.
OWN = 0.5


def _model(params: np.ndarray, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """Sum of the columns' Gaussians without their background, at pixels (yy, xx)."""
    out = np.zeros(yy.shape)
    for p in params:
        c, s = np.cos(p[THETA]), np.sin(p[THETA])
        dx, dy = xx - p[X], yy - p[Y]
        u, v = c * dx + s * dy, -s * dx + c * dy
        out += p[AMPLITUDE] * np.exp(-0.5 * (u * u / p[SIGMA_X] ** 2 + v * v / p[SIGMA_Y] ** 2))
    return out


def site_evidence(
    image: ArrayLike,
    sites: ArrayLike,
    sublattice: ArrayLike,
    params: ArrayLike,
    labels: ArrayLike,
    separation: float,
) -> np.ndarray:
    """Column-like intensity at lattice sites, relative to the local columns (module docstring).

    Parameters
    ----------
    image : array_like, (H, W)
        The analyzed image.
    sites : array_like, (K, 2)
        Sites (y, x) in image pixels.
    sublattice : array_like of int, (K,)
        The sublattice each site belongs to (−1: any).
    params : array_like, (N, 7)
        Fitted columns (:data:`usidgpu.atoms.gaussian.PARAMETERS`).
    labels : array_like of int, (N,)
        Sublattice of each fitted column.
    separation : float
        Smallest distance between two lattice sites, pixels.

    Returns
    -------
    ndarray, (K,)
        The evidence of each site: the matched filter's amplitude over the local column
        amplitude (NaN where no column of that sublattice was fitted).
    """
    img = np.asarray(image, dtype=np.float64)
    pts = np.atleast_2d(np.asarray(sites, dtype=np.float64)).reshape(-1, 2)
    sub = np.asarray(sublattice, dtype=np.int64).reshape(-1)
    par = np.asarray(params, dtype=np.float64)
    lab = np.asarray(labels, dtype=np.int64)
    out = np.full(len(pts), np.nan)
    if not len(pts) or not len(par):
        return out
    h, w = img.shape
    centres = par[:, [Y, X]]
    tree = cKDTree(centres)
    width = np.sqrt(np.abs(par[:, SIGMA_X] * par[:, SIGMA_Y]))
    for k, (site, s) in enumerate(zip(pts, sub)):
        near = np.asarray(tree.query_ball_point(site, LOCAL * separation), dtype=np.int64)
        same = near[lab[near] == s] if s >= 0 else near
        if not len(same):
            same = np.flatnonzero(lab == s) if s >= 0 else np.arange(len(par))
        if not len(same):
            continue
        amplitude = float(np.median(par[same, AMPLITUDE]))
        sigma = float(np.median(width[same]))
        if not amplitude > 0 or not sigma > 0:
            continue
        reach = SEARCH * separation
        half = int(np.ceil(reach + 2.0 * sigma))
        r0, r1 = max(int(round(site[0])) - half, 0), min(int(round(site[0])) + half + 1, h)
        c0, c1 = max(int(round(site[1])) - half, 0), min(int(round(site[1])) + half + 1, w)
        if r1 - r0 < 3 or c1 - c0 < 3:
            continue
        yy, xx = np.mgrid[r0:r1, c0:c1].astype(np.float64)
        # the fitted columns of other sites whose tails reach the window, subtracted
        around = np.asarray(tree.query_ball_point(site, half * np.sqrt(2) + 4 * float(width.max())), dtype=np.int64)
        around = around[np.hypot(*(centres[around] - site).T) > OWN * separation]
        patch = img[r0:r1, c0:c1] - _model(par[around], yy, xx)
        # the filter: A·g + B on a disk of radius 1.5σ (at least 2 px) around each trial centre
        radius = max(1.5 * sigma, 2.0)
        step = 0.5 * np.arange(-np.floor(2 * reach), np.floor(2 * reach) + 1)
        best = -np.inf
        for dy in step:
            for dx in step:
                if dy * dy + dx * dx > reach * reach + 1e-9:
                    continue
                cy, cx = site[0] + dy, site[1] + dx
                d2 = (yy - cy) ** 2 + (xx - cx) ** 2
                disk = d2 <= radius * radius
                if disk.sum() < 5:
                    continue
                g = np.exp(-0.5 * d2[disk] / sigma**2)
                v = patch[disk]
                gc = g - g.mean()
                denom = float(gc @ gc)
                if denom > 0:
                    best = max(best, float(gc @ (v - v.mean())) / denom)
        if np.isfinite(best):
            out[k] = best / amplitude
    return out
