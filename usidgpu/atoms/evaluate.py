"""Judging found and fitted columns against a known truth: matching, missed and false columns,
the Cramér–Rao bound of the positions, and the coverage of the reported errors.

The tests and ``benchmarks/bench_atoms.py`` hold the finder and the fit to these numbers on
synthetic images (:func:`usidgpu.atoms.synthetic.two_sublattice`), whose truth nobody fitted.
The bound is that of the whole image: every column's amplitude, position and elliptical width
are unknown, as in :func:`usidgpu.atoms.refine`, and so is the background; the noise is Poisson
(variance = mean / dose). No unbiased estimator of a position does better, so a fit whose
error RMS is close to it leaves nothing on the table, and a fit far above it does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.spatial import cKDTree

from ..core.errors import InvalidInput


@dataclass
class Matching:
    """Found columns paired one-to-one with true ones."""

    truth_index: np.ndarray  #: (M,) index into the truth of each pair
    found_index: np.ndarray  #: (M,) index into the found columns of each pair
    missed: np.ndarray  #: indices of true columns without a partner
    false: np.ndarray  #: indices of found columns without a partner


def match(truth: np.ndarray, found: np.ndarray, tolerance: float) -> Matching:
    """Pair found columns with true ones, one-to-one, closest pairs first (an optimal assignment
    among the pairs closer than ``tolerance``); the rest are missed or false.

    Parameters
    ----------
    truth, found : (N, 2), (M, 2) positions (y, x)
    tolerance : float
        Largest distance of a pair (px); a quarter to a third of the nearest-neighbour distance.
    """
    truth = np.asarray(truth, dtype=np.float64).reshape(-1, 2)
    found = np.asarray(found, dtype=np.float64).reshape(-1, 2)
    empty = np.zeros(0, dtype=np.int64)
    if len(truth) == 0 or len(found) == 0:
        return Matching(empty, empty, np.arange(len(truth)), np.arange(len(found)))
    pairs = cKDTree(truth).sparse_distance_matrix(cKDTree(found), tolerance, output_type="coo_matrix")
    rows_t, cols_f = np.unique(pairs.row), np.unique(pairs.col)
    cost = np.full((len(rows_t), len(cols_f)), 1e6)  # "not a pair", far above any real distance
    cost[np.searchsorted(rows_t, pairs.row), np.searchsorted(cols_f, pairs.col)] = pairs.data
    r, c = linear_sum_assignment(cost)
    ok = cost[r, c] <= tolerance
    ti, fi = rows_t[r[ok]], cols_f[c[ok]]
    return Matching(
        truth_index=ti,
        found_index=fi,
        missed=np.setdiff1d(np.arange(len(truth)), ti),
        false=np.setdiff1d(np.arange(len(found)), fi),
    )


def position_crb(
    positions: np.ndarray,
    amplitudes: np.ndarray,
    sigma: float | np.ndarray,
    background: float,
    shape: tuple[int, int],
    dose: float,
    others: tuple[np.ndarray, np.ndarray] | None = None,
    tile: int | None = None,
    margin: float | None = None,
) -> np.ndarray:
    """Cramér–Rao bound of every column's (y, x) under Poisson noise: the square roots of the
    (y, x) diagonal of the inverse Fisher information of the true image model.

    The model is the background plus a Gaussian per column, sampled at the pixel centres, each
    column with unknown (amplitude, y, x, qa, qb, qc) — the elliptical form that
    :func:`usidgpu.atoms.refine` fits (round truth: qa = qc = 1/2σ², qb = 0) — and one unknown
    background. The Fisher information is ``Σ_pixels ∂μ ∂μᵀ / var`` with ``var = μ / dose``,
    assembled sparse (a column's derivatives vanish beyond 5σ) and inverted whole: in a dense
    lattice the unknowns of a column's neighbours, of their neighbours and so on all cost it
    information (a cluster of the neighbours within 5σ alone gives bounds 30 % too low at
    σ = spacing / 4).

    Parameters
    ----------
    positions : (N, 2) true (y, x) of the columns whose bound is wanted
    amplitudes : (N,) their peak heights above the background
    sigma : float or (N,) widths (px)
    background : float
    shape : (int, int) image shape
    dose : float
        Counts per unit intensity (image = Poisson(dose · μ) / dose).
    others : (positions (K, 2), amplitudes (K,)), optional
        Further columns that are part of the image, e.g. those just outside the frame: they add
        signal and noise, but count as known (a column of which only a faint tail enters the
        frame has parameters no image determines; it would make the information singular).
    tile : int, optional
        Images with more than 300 columns are cut into square tiles of this core size (px,
        default: about 100 columns each), each computed on its core plus ``margin`` as if the
        image were cropped there (the columns beyond count as known, like those outside the
        frame).
    margin : float, optional
        Default 3 × the largest nearest-neighbour distance, at least 12σ: the bounds of core
        columns then agree with those of the whole image to well under 1 %.

    Returns
    -------
    (N, 2) one-sigma bounds of y and x (px)
    """
    pos = np.asarray(positions, dtype=np.float64).reshape(-1, 2)
    amp = np.asarray(amplitudes, dtype=np.float64).reshape(-1)
    n = len(pos)
    sig = np.broadcast_to(np.asarray(sigma, dtype=np.float64), (n,)).copy()
    if not dose > 0:
        raise InvalidInput(f"the dose must be positive, got {dose}")
    if others is not None and len(others[0]):
        o_pos = np.asarray(others[0], dtype=np.float64).reshape(-1, 2)
        o_amp = np.asarray(others[1], dtype=np.float64).reshape(-1)
        o_sig = np.full(len(o_pos), np.median(sig) if n else 1.0)
    else:
        o_pos, o_amp, o_sig = np.zeros((0, 2)), np.zeros(0), np.zeros(0)
    all_pos, all_amp, all_sig = np.concatenate([pos, o_pos]), np.concatenate([amp, o_amp]), np.concatenate([sig, o_sig])
    mean = _render(shape, all_pos, all_amp, all_sig, background)
    out = np.full((n, 2), np.nan)
    if n == 0:
        return out
    h, w = shape
    nn = float(cKDTree(pos).query(pos, k=2)[0][:, 1].max()) if n > 1 else float(max(h, w))
    margin = max(3.0 * nn, 12.0 * float(sig.max())) if margin is None else float(margin)
    if tile is None:
        tile = max(int(np.sqrt(h * w * 100.0 / n)), 8) if n > 300 else max(h, w)
    for ty in range(0, h, tile):
        for tx in range(0, w, tile):
            core = (pos[:, 0] >= ty) & (pos[:, 0] < ty + tile) & (pos[:, 1] >= tx) & (pos[:, 1] < tx + tile)
            if not core.any():
                continue
            lo = (max(int(ty - margin), 0), max(int(tx - margin), 0))
            hi = (min(int(np.ceil(ty + tile + margin)), h), min(int(np.ceil(tx + tile + margin)), w))
            free = (pos[:, 0] >= lo[0]) & (pos[:, 0] <= hi[0] - 1) & (pos[:, 1] >= lo[1]) & (pos[:, 1] <= hi[1] - 1)
            idx = np.flatnonzero(free)
            cov_yx = _crb_region(pos[idx], amp[idx], sig[idx], mean[lo[0] : hi[0], lo[1] : hi[1]] / dose, lo)
            take = core[idx]
            out[idx[take]] = cov_yx[take]
    return out


def _crb_region(pos, amp, sig, var, origin) -> np.ndarray:
    """√ of the (y, x) diagonal of the inverse Fisher information of the columns ``pos`` (all
    parameters free, plus the background) over the pixels of ``var`` (their variance), whose
    top-left pixel is ``origin``."""
    from scipy.linalg import cholesky, solve_triangular

    n = len(pos)
    fisher = region_fisher(pos, amp, sig, var, origin)
    # only the (y, x) entries of the inverse are needed: with F = L·Lᵀ they are the squared
    # column norms of L⁻¹·e for those unit vectors e
    chol = cholesky(fisher, lower=True)
    want = np.concatenate([6 * np.arange(n) + 1, 6 * np.arange(n) + 2])
    unit = np.zeros((6 * n + 1, 2 * n))
    unit[want, np.arange(2 * n)] = 1.0
    half = solve_triangular(chol, unit, lower=True, check_finite=False)
    var_yx = np.einsum("ij,ij->j", half, half)
    return np.sqrt(np.stack([var_yx[:n], var_yx[n:]], axis=1))


def region_fisher(pos, amp, sig, var, origin) -> np.ndarray:
    """Dense Fisher information of round Gaussian columns ``pos`` (amplitude ``amp``, width
    ``sig``) over the pixels of ``var`` (their noise variance; top-left pixel ``origin``): per
    column (amplitude, y, x, qa, qb, qc), then one background — (6N + 1)², assembled sparse."""
    from scipy import sparse

    rh, rw = var.shape
    n = len(pos)
    r = int(np.ceil(5.0 * sig.max()))
    off = np.arange(-r, r + 1)
    rows = np.rint(pos[:, 0])[:, None].astype(np.int64) + off  # (n, S) absolute rows
    cols = np.rint(pos[:, 1])[:, None].astype(np.int64) + off
    dy = (rows - pos[:, 0:1])[:, :, None]  # (n, S, 1)
    dx = (cols - pos[:, 1:2])[:, None, :]  # (n, 1, S)
    q = (0.5 / sig**2)[:, None, None]
    g = np.exp(-q * (dx * dx + dy * dy))
    ag = amp[:, None, None] * g
    parts = (g, 2 * ag * q * dy, 2 * ag * q * dx, -ag * dx * dx, -2 * ag * dx * dy, -ag * dy * dy)
    ry, rx = rows - origin[0], cols - origin[1]
    inside = ((ry >= 0) & (ry < rh))[:, :, None] & ((rx >= 0) & (rx < rw))[:, None, :]
    pix = ry[:, :, None] * rw + rx[:, None, :]  # (n, S, S)
    weight = np.zeros_like(g)
    weight[inside] = 1.0 / np.sqrt(var.ravel()[pix[inside]])
    data, r_idx, c_idx = [], [], []
    for k, d in enumerate(parts):
        v = np.broadcast_to(d, g.shape) * weight
        data.append(v[inside])
        r_idx.append(np.broadcast_to((6 * np.arange(n) + k)[:, None, None], g.shape)[inside])
        c_idx.append(pix[inside])
    data.append(1.0 / np.sqrt(var.ravel()))
    r_idx.append(np.full(rh * rw, 6 * n))
    c_idx.append(np.arange(rh * rw))
    jac = sparse.csr_matrix(
        (np.concatenate(data), (np.concatenate(r_idx), np.concatenate(c_idx))), shape=(6 * n + 1, rh * rw)
    )
    return (jac @ jac.T).toarray()


def _render(shape, positions, amplitudes, sigma, background) -> np.ndarray:
    """The noise-free image: background plus every Gaussian (cut at 6σ)."""
    h, w = shape
    image = np.full(shape, float(background))
    rows, cols = np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64)
    for (y, x), a, s in zip(positions, amplitudes, sigma):
        r = int(np.ceil(6 * s))
        y0, y1 = max(int(np.floor(y)) - r, 0), min(int(np.ceil(y)) + r + 1, h)
        x0, x1 = max(int(np.floor(x)) - r, 0), min(int(np.ceil(x)) + r + 1, w)
        if y0 < y1 and x0 < x1:
            gy = np.exp(-0.5 * ((rows[y0:y1] - y) / s) ** 2)
            gx = np.exp(-0.5 * ((cols[x0:x1] - x) / s) ** 2)
            image[y0:y1, x0:x1] += a * gy[:, None] * gx[None, :]
    return image


def coverage(errors: np.ndarray, reported: np.ndarray, k: float = 1.0) -> float:
    """Fraction of the |error| ≤ k × reported sigma, over all coordinates (nominal for Gaussian
    errors: 0.683 at k = 1, 0.954 at k = 2)."""
    e = np.abs(np.asarray(errors, dtype=np.float64)).ravel()
    s = np.asarray(reported, dtype=np.float64).ravel()
    ok = np.isfinite(e) & np.isfinite(s)
    return float(np.mean(e[ok] <= k * s[ok])) if ok.any() else float("nan")


def rms_ratio(errors: np.ndarray, bound: np.ndarray) -> float:
    """sqrt(Σ|error|² / Σ bound²) over all columns and coordinates: 1 for an efficient estimator."""
    e = np.asarray(errors, dtype=np.float64)
    b = np.asarray(bound, dtype=np.float64)
    return float(np.sqrt(np.sum(e * e) / np.sum(b * b)))


def curve_fit_windows(image: np.ndarray, positions: np.ndarray, half: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """The per-column oracle of issue 19: ``scipy.optimize.curve_fit`` of one elliptical Gaussian
    plus background on the (2·half + 1)² window around each rounded start position (11 × 11 by
    default), the raw image, nothing masked — what a careful script does one column at a time.

    Returns
    -------
    positions : (N, 2) fitted (y, x), NaN where curve_fit failed or left the window
    errors : (N, 2) its one-sigma errors (from curve_fit's covariance)
    """
    import warnings

    from scipy.optimize import OptimizeWarning, curve_fit

    from .reference import gaussian, gaussian_jacobian

    img = np.asarray(image, dtype=np.float64)
    h, w = img.shape
    start = np.asarray(positions, dtype=np.float64).reshape(-1, 2)
    out = np.full((len(start), 2), np.nan)
    err = np.full((len(start), 2), np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OptimizeWarning)
        for i, (y, x) in enumerate(start):
            cy, cx = int(round(y)), int(round(x))
            y0, y1, x0, x1 = max(cy - half, 0), min(cy + half + 1, h), max(cx - half, 0), min(cx + half + 1, w)
            yy, xx = np.mgrid[y0:y1, x0:x1]
            data = img[y0:y1, x0:x1].ravel()
            coords = np.stack([yy.ravel(), xx.ravel()]).astype(np.float64)
            low = float(data.min())
            p0 = [max(float(data.max()) - low, 1e-6), y, x, 1.05 * half / 2.5, 0.95 * half / 2.5, 0.0, low]
            try:
                popt, pcov = curve_fit(gaussian, coords, data, p0=p0, jac=gaussian_jacobian, method="lm", maxfev=2000)
            except (RuntimeError, ValueError):
                continue
            if abs(popt[1] - y) <= half and abs(popt[2] - x) <= half:
                out[i] = popt[1:3]
                err[i] = np.sqrt(np.abs(np.diag(pcov)[1:3]))
    return out, err
