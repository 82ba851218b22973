"""The per-column reference: ``scipy.optimize.curve_fit`` on one column at a time.

This is what users run today (pycroscopy 0.63's ``atom_refine`` and most scripts fit each column
in a Python loop). It fits the same Gaussian to the same pixels from the same start as
:func:`usidgpu.atoms.refine`, but written the way such scripts write it — in (σx, σy, θ), the
form :func:`usidgpu.atoms.refine` reports, not the quadratic form it iterates on — so it is an
independent oracle of the batched fit in the tests and the baseline of
``benchmarks/bench_atoms.py``.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import curve_fit

from .fit import _neighbours, _project, fit_masks, nearest_neighbour_distance
from .gaussian import QA, SIGMA_X, SIGMA_Y, THETA, start_values
from .windows import gather


def fit_windows(image: np.ndarray, positions: np.ndarray, radius: float | None = None):
    """The fit pixels and start values of every column, as the batched fit builds them.

    Returns
    -------
    list of (yy, xx, data, p0) per column (1-D pixel arrays of the Voronoi-clipped disk).
    """
    start = np.asarray(positions, dtype=np.float64)
    radius = 0.5 * nearest_neighbour_distance(start) if radius is None else float(radius)
    r_int = int(math.ceil(radius))
    values, inside, grid = gather(np, np.asarray(image, dtype=np.float64), start, r_int)
    mask = fit_masks(np, start, grid, inside, radius, _neighbours(start, radius))
    n, s = values.shape[:2]
    yy = np.broadcast_to(grid[:, 0, :, None], (n, s, s)).reshape(n, -1)
    xx = np.broadcast_to(grid[:, 1, None, :], (n, s, s)).reshape(n, -1)
    data = values.reshape(n, -1)
    weight = mask.reshape(n, -1).astype(np.float64)
    p0 = _project(np, start_values(np, data, weight, start), start, radius)
    # the round start in (σx, σy, θ); a 5% anisotropy keeps ∂f/∂θ from vanishing
    sigma = np.sqrt(0.5 / p0[:, QA])
    p0[:, SIGMA_X], p0[:, SIGMA_Y], p0[:, THETA] = 1.05 * sigma, 0.95 * sigma, 0.0
    out = []
    for i in range(n):
        keep = weight[i] > 0
        out.append((yy[i, keep], xx[i, keep], data[i, keep], p0[i]))
    return out


def gaussian(coords: np.ndarray, amplitude, y0, x0, sigma_x, sigma_y, theta, background) -> np.ndarray:
    """``A·exp(−u²/2σx² − v²/2σy²) + B`` with (u, v) the pixel offset rotated by θ."""
    yy, xx = coords
    c, s = np.cos(theta), np.sin(theta)
    u = c * (xx - x0) + s * (yy - y0)
    v = -s * (xx - x0) + c * (yy - y0)
    return amplitude * np.exp(-0.5 * (u * u / sigma_x**2 + v * v / sigma_y**2)) + background


def gaussian_jacobian(coords: np.ndarray, amplitude, y0, x0, sigma_x, sigma_y, theta, background) -> np.ndarray:
    """∂f/∂(A, y0, x0, σx, σy, θ, B), shape (M, 7)."""
    yy, xx = coords
    c, s = np.cos(theta), np.sin(theta)
    u = c * (xx - x0) + s * (yy - y0)
    v = -s * (xx - x0) + c * (yy - y0)
    ux, vy = u / sigma_x**2, v / sigma_y**2
    g = np.exp(-0.5 * (u * ux + v * vy))
    ag = amplitude * g
    return np.stack(
        [
            g,
            ag * (ux * s + vy * c),
            ag * (ux * c - vy * s),
            ag * u * ux / sigma_x,
            ag * v * vy / sigma_y,
            -ag * u * v * (1 / sigma_x**2 - 1 / sigma_y**2),
            np.ones_like(g),
        ],
        axis=1,
    )


def canonical(params: np.ndarray) -> np.ndarray:
    """σx ≥ σy (swap and turn θ by 90° where needed), θ in [−π/2, π/2), widths positive."""
    p = np.array(params, dtype=np.float64, copy=True)
    p[:, [SIGMA_X, SIGMA_Y]] = np.abs(p[:, [SIGMA_X, SIGMA_Y]])
    swap = p[:, SIGMA_X] < p[:, SIGMA_Y]
    p[swap, SIGMA_X], p[swap, SIGMA_Y] = p[swap, SIGMA_Y], p[swap, SIGMA_X].copy()
    p[swap, THETA] += np.pi / 2
    p[:, THETA] = (p[:, THETA] + np.pi / 2) % np.pi - np.pi / 2
    return p


def curve_fit_columns(image: np.ndarray, positions: np.ndarray, radius: float | None = None, windows=None):
    """Fit every column with its own ``curve_fit`` call (Levenberg–Marquardt, analytic Jacobian).

    Returns
    -------
    params : (N, 7) in :func:`canonical` form
    errors : (N, 7) square roots of the diagonal of curve_fit's covariance (NaN where it fails)
    ok : (N,) bool, False where curve_fit raised
    """
    windows = fit_windows(image, positions, radius) if windows is None else windows
    params = np.full((len(windows), 7), np.nan)
    errors = np.full((len(windows), 7), np.nan)
    ok = np.zeros(len(windows), dtype=bool)
    for i, (yy, xx, data, p0) in enumerate(windows):
        try:
            popt, pcov = curve_fit(
                gaussian, np.stack([yy, xx]), data, p0=p0, jac=gaussian_jacobian, method="lm", maxfev=2000
            )
        except (RuntimeError, ValueError):
            continue
        params[i] = popt
        errors[i] = np.sqrt(np.abs(np.diag(pcov)))
        ok[i] = True
    return canonical(params), errors, ok
