"""Scan distortion of a STEM image, fitted from its lattice of columns, and its correction.

A scanned image samples the specimen at ``(Y(r), X(c) + S(r))`` for pixel (row r, column c):
``X`` is the fast scan along a line, the same for every line; ``Y`` the slow scan from line to
line; ``S`` the sideways drift of each line. Image rows are scan lines, scanned from column 0 —
as microscopes store them (the last, fastest position dimension of a USID image is x); an image
turned or flipped after acquisition has its flyback elsewhere. An ideal scan has X(c) = c,
Y(r) = r, S = 0. Real ones do not: after each flyback the beam lags, so the first part of every
line is *compressed* (in the shipped DM3 survey the first columns are about 70 % as far apart as
the rest), and the specimen drifts while the frame is scanned, so the line spacing changes down
the frame (by 7 % there). Measured against one affine lattice this reads as −19 % strain,
displaced columns and vacancies.

The model
---------
The columns' positions, mapped by the scan to the specimen, lie on one lattice::

    Y(r_k)          = origin_y + i·a_y + j·b_y + t_y[m]
    X(c_k) + S(r_k) = origin_x + i·a_x + j·b_x + t_x[m]

with X(c) = c + g(c) and Y(r) = r + h(r). Everything is linear in the unknowns — lattice,
motif offsets, and the B-spline coefficients of g, h and S — so it is one least-squares solve,
with a light second-difference (P-spline) penalty, repeated without the outliers. The cell
indices (i, j, m) come from walking neighbour to neighbour
(:func:`usidgpu.atoms.indexing.walk_indices`), again on the corrected positions until no more
columns join: a line start compressed by a third would otherwise put columns in the wrong cell.

Which part of a distortion is knowable (and which is not)
--------------------------------------------------------
An affine part of the scan (a uniform scale, a shear) cannot be told from the lattice's own
cell, so it is left in the lattice, and:

- ``g`` is nonzero only within ``fast_window`` (35 %) of the line start, where flyback lives, and
  joins the line's linear rest smoothly: the reference for the fast scan is that rest of the
  line (X′ = 1 there) — more exactly the band just beyond the window, against whose lattice g is
  refitted, so that a real strain further along the line (a layer) does not leak into it;
- ``h`` and ``S`` have no constant or linear part over the frame: the reference for the slow
  scan is its mean.

A real strain that varies only along x within the line start, or only along y, is, in one
image, indistinguishable from such a scan distortion, and is taken as one (smoothly: the slow
knots are three columns apart). Strain elsewhere — a layer beyond the line start, a strain field
that varies in both directions — is kept. To measure strain that the model would absorb, turn the
correction off (``analyze(..., scan_distortion=False)``) and check the reported profiles against
a second image scanned at 90°.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike
from scipy.interpolate import BSpline
from scipy.linalg import null_space
from scipy.spatial import cKDTree

from ..core.errors import InvalidInput
from .indexing import walk_indices
from .lattice import Lattice, _check_positions, _ideal_differences

#: Fraction of each line from its start in which the fast-scan (flyback) distortion may live.
FAST_WINDOW = 0.35
#: B-spline knot spacing of the fast-scan model, in column spacings (nearest-neighbour distance).
FAST_KNOT = 1.5
#: ... and of the slow-scan model: drift is smooth over many lines.
SLOW_KNOT = 3.0
#: Weight of the second-difference penalty on the spline coefficients (a hundredth of one column:
#: it only settles coefficients that the columns leave undetermined).
PENALTY = 0.01
#: Fewest columns for a distortion fit.
MIN_COLUMNS = 30
#: A column whose residual exceeds this many robust standard deviations (or ``OUTLIER`` of the
#: site separation) does not pull the fit.
CLIP = 4.0
OUTLIER = 0.3


def _interp(x: np.ndarray, grid: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``values`` (sampled on the increasing ``grid``) at ``x``, linear, extrapolated linearly."""
    x = np.asarray(x, dtype=np.float64)
    out = np.interp(x, grid, values)
    lo, hi = x < grid[0], x > grid[-1]
    out[lo] = values[0] + (x[lo] - grid[0]) * (values[1] - values[0]) / (grid[1] - grid[0])
    out[hi] = values[-1] + (x[hi] - grid[-1]) * (values[-1] - values[-2]) / (grid[-1] - grid[-2])
    return out


@dataclass
class ScanDistortion:
    """The scan's map from image pixels to the specimen, fitted from a lattice of columns.

    Attributes
    ----------
    fast : ndarray, (W,)
        X(c): specimen x (pixels of the undistorted line rest) of image column c.
    slow : ndarray, (H,)
        Y(r): specimen y (pixels of the mean line spacing) of image row r.
    shift : ndarray, (H,)
        S(r): sideways (x) shift of line r, pixels.
    fast_error, slow_error : ndarray, (W,) and (H,)
        One standard error of :attr:`fast_spacing` and :attr:`slow_spacing`.
    fast_window : float
        Columns beyond this one are the fast scan's reference (no fast-scan distortion there).
    n_columns : int
        Columns that the fit used (outliers left out).
    rms_affine, rms : float
        RMS distance (px) of those columns from their sites: under one affine lattice, and after
        the correction.
    """

    fast: np.ndarray
    slow: np.ndarray
    shift: np.ndarray
    fast_error: np.ndarray
    slow_error: np.ndarray
    fast_window: float
    n_columns: int = 0
    rms_affine: float = float("nan")
    rms: float = float("nan")
    parameters: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) of the image."""
        return len(self.slow), len(self.fast)

    @property
    def fast_spacing(self) -> np.ndarray:
        """(W,) apparent spacing along a line relative to the line's undistorted rest, 1/X′(c):
        below 1 where the scan compresses the image (a flyback at the line start)."""
        return 1.0 / np.gradient(self.fast)

    @property
    def slow_spacing(self) -> np.ndarray:
        """(H,) apparent line spacing relative to the frame's mean, 1/Y′(r)."""
        return 1.0 / np.gradient(self.slow)

    def correct(self, positions: ArrayLike) -> np.ndarray:
        """Image positions (y, x) mapped to the specimen: (Y(r), X(c) + S(r)), in pixels."""
        pos = _check_positions(positions, minimum=0)
        h, w = self.shape
        rows, cols = np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64)
        y = _interp(pos[:, 0], rows, self.slow)
        x = _interp(pos[:, 1], cols, self.fast) + _interp(pos[:, 0], rows, self.shift)
        return np.column_stack([y, x])

    def to_image(self, positions: ArrayLike) -> np.ndarray:
        """Specimen positions (y, x) mapped back to image pixels: the inverse of :meth:`correct`."""
        pos = _check_positions(positions, minimum=0)
        h, w = self.shape
        rows, cols = np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64)
        r = _interp(pos[:, 0], self.slow, rows)
        c = _interp(pos[:, 1] - _interp(r, rows, self.shift), self.fast, cols)
        return np.column_stack([r, c])

    def table(self) -> dict[str, np.ndarray]:
        """One row per pixel index p (0 … max(H, W) − 1): the fast-scan profile at column p and the
        slow-scan profile at row p (NaN beyond the image's width or height).

        ``fast_spacing`` / ``slow_spacing``: apparent spacing relative to the reference
        (dimensionless, with ``*_error`` one standard error); ``fast_offset`` = X(p) − p and
        ``slow_offset`` = Y(p) − p: where the scan put the pixel, in pixels; ``slow_shift`` = S(p).
        """
        h, w = self.shape
        n = max(h, w)

        def pad(values: np.ndarray) -> np.ndarray:
            out = np.full(n, np.nan)
            out[: len(values)] = values
            return out

        return {
            "pixel": np.arange(n),
            "fast_spacing": pad(self.fast_spacing),
            "fast_spacing_error": pad(self.fast_error),
            "fast_offset": pad(self.fast - np.arange(w)),
            "slow_spacing": pad(self.slow_spacing),
            "slow_spacing_error": pad(self.slow_error),
            "slow_offset": pad(self.slow - np.arange(h)),
            "slow_shift": pad(self.shift),
        }

    def to_csv(self, path: str | os.PathLike) -> str:
        """Write :meth:`table` as CSV (a header row of names, one row per pixel index)."""
        table = self.table()
        with open(path, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(list(table))
            for row in zip(*table.values()):
                writer.writerow([f"{float(v):.6g}" for v in row])
        return str(path)

    def significant(self) -> tuple[np.ndarray, np.ndarray]:
        """Where the fast- and slow-scan spacing profiles differ from 1 by more than 1 % and by more
        than three standard errors: (W,) and (H,) booleans."""
        fast = np.abs(self.fast_spacing - 1.0)
        slow = np.abs(self.slow_spacing - 1.0)
        return (fast > np.maximum(0.01, 3 * self.fast_error)), (slow > np.maximum(0.01, 3 * self.slow_error))

    def summary(self) -> str:
        """The distortion in one line, for reports (a deviation within 1 % or three standard errors
        is no distortion)."""
        fast_off, slow_off = self.significant()
        fast, slow = self.fast_spacing, self.slow_spacing
        if fast_off.any():
            where = np.flatnonzero(fast_off)
            first = f"fast scan line start at {fast[where[0]]:.1%} of the spacing, back within 1 % after column "
            first += str(where.max() + 1)
        else:
            first = "fast scan undistorted (within 1 % or 3σ along the line)"
        if slow_off.any():
            second = f"slow scan {slow.min():.1%} … {slow.max():.1%} of the mean line spacing"
        else:
            second = "slow scan undistorted (within 1 % or 3σ of the mean line spacing)"
        return (
            f"{first}; {second}, lines shifted sideways by up to {float(np.ptp(self.shift)):.2f} px; columns off the "
            f"lattice by {self.rms_affine:.2f} px RMS under one affine lattice, {self.rms:.2f} px with the scan fitted"
        )


def _basis(x: np.ndarray, knots: np.ndarray) -> np.ndarray:
    """Cubic B-splines on ``knots`` (each spans 5 consecutive knots) at ``x``: (len(x), K), zero
    outside each spline's support."""
    cols = []
    for i in range(len(knots) - 4):
        b = BSpline.basis_element(knots[i : i + 5], extrapolate=False)(x)
        cols.append(np.nan_to_num(b, nan=0.0))
    return np.column_stack(cols) if cols else np.zeros((len(x), 0))


def _second_differences(k: int, pad: int = 0) -> np.ndarray:
    """(k + pad − 2, k) second differences of k coefficients followed by ``pad`` zeros."""
    d = np.diff(np.eye(k + pad), n=2, axis=0)
    return d[:, :k]


class _Models:
    """The spline bases of g (fast), h and S (slow) on a (H, W) image."""

    def __init__(self, shape: tuple[int, int], spacing: float, fast_window: float, fast_knot: float, slow_knot: float):
        h, w = shape
        self.shape = (h, w)
        self.cw = fast_window * (w - 1)
        # the fast model needs a reference rest of the line (two cells at least) and room for a knot
        self.has_fast = self.cw >= fast_knot * spacing and (w - 1 - self.cw) >= 2 * spacing
        if self.has_fast:
            n = int(np.ceil(self.cw / (fast_knot * spacing)))
            step = self.cw / n
            self.fast_knots = self.cw + step * np.arange(-(n + 3), 1)
        else:
            self.fast_knots = np.zeros(0)
        n = max(1, int(np.ceil((h - 1) / (slow_knot * spacing))))
        step = (h - 1) / n
        self.slow_knots = step * np.arange(-3, n + 4)
        rows = np.arange(h, dtype=np.float64)
        grid = _basis(rows, self.slow_knots)
        # no constant or linear part over the frame: those belong to the lattice
        self.gauge = null_space(np.vstack([grid.sum(axis=0), rows @ grid]))
        self.fast_penalty = _second_differences(len(self.fast_knots) - 4, pad=2) if self.has_fast else np.zeros((0, 0))
        self.slow_penalty = _second_differences(grid.shape[1]) @ self.gauge

    def fast(self, c: np.ndarray) -> np.ndarray:
        return _basis(c, self.fast_knots) if self.has_fast else np.zeros((len(c), 0))

    def slow(self, r: np.ndarray) -> np.ndarray:
        return _basis(r, self.slow_knots) @ self.gauge


def _lattice_columns(idx: np.ndarray, n_sites: int) -> np.ndarray:
    """Design columns of the lattice part: 1, i, j and one indicator per motif site beyond the first."""
    cols = [np.ones(len(idx)), idx[:, 0].astype(float), idx[:, 1].astype(float)]
    cols += [(idx[:, 2] == s).astype(float) for s in range(1, n_sites)]
    return np.column_stack(cols)


def _solve(design: np.ndarray, target: np.ndarray, penalty: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Penalized least squares; returns the coefficients and the unscaled covariance."""
    a = np.vstack([design, penalty])
    b = np.concatenate([target, np.zeros(len(penalty))])
    coef, *_ = np.linalg.lstsq(a, b, rcond=None)
    cov = np.linalg.pinv(a.T @ a)
    return coef, cov


def _block(penalties: list[np.ndarray | None], widths: list[int]) -> np.ndarray:
    """Penalty rows for a design whose columns are blocks of ``widths`` (None: no penalty)."""
    rows = []
    start = 0
    total = sum(widths)
    for pen, width in zip(penalties, widths):
        if pen is not None and len(pen):
            block = np.zeros((len(pen), total))
            block[:, start : start + width] = pen
            rows.append(block)
        start += width
    return np.vstack(rows) if rows else np.zeros((0, total))


def fit_scan_distortion(
    positions: ArrayLike,
    lattice: Lattice,
    shape: tuple[int, int],
    fast_window: float = FAST_WINDOW,
    fast_knot: float = FAST_KNOT,
    slow_knot: float = SLOW_KNOT,
    penalty: float = PENALTY,
) -> tuple[ScanDistortion, np.ndarray]:
    """Fit the scan's fast- and slow-scan distortion to the columns of one image.

    Parameters
    ----------
    positions : array_like, (N, 2)
        Column positions (y, x) in image pixels.
    lattice : Lattice
        The lattice of the columns (e.g. :func:`~usidgpu.atoms.lattice.lattice_fit` on them):
        its vectors and motif index the columns (:func:`~usidgpu.atoms.indexing.walk_indices`);
        its origin and vectors are refitted here.
    shape : (int, int)
        Image shape (H, W).
    fast_window : float
        Fraction of each line from its start in which fast-scan distortion is fitted (module
        docstring); 0 fits none.
    fast_knot, slow_knot : float
        Knot spacings of the fast- and slow-scan splines, in nearest-neighbour spacings.
    penalty : float
        Weight of the splines' second-difference penalty.

    Returns
    -------
    distortion : ScanDistortion
    inliers : ndarray of bool, (N,)
        The columns the fit used.

    Raises
    ------
    ValueError
        Fewer than :data:`MIN_COLUMNS` columns, a bad shape or window, or a fitted scan that
        folds back on itself (not a scan distortion: too few columns, or not one lattice).
    """
    pos = _check_positions(positions)
    if len(pos) < MIN_COLUMNS:
        raise InvalidInput(f"{len(pos)} columns: a scan distortion needs at least {MIN_COLUMNS}")
    size = tuple(int(s) for s in shape)
    if len(size) != 2 or min(size) < 2:
        raise InvalidInput(f"shape must be an image shape (H, W), got {shape!r}")
    h, w = size
    if not 0 <= fast_window < 1:
        raise InvalidInput(f"fast_window must be a fraction in [0, 1), got {fast_window}")
    spacing = lattice.min_separation
    models = _Models((h, w), spacing, fast_window, fast_knot, slow_knot)
    bf, bs = models.fast(pos[:, 1]), models.slow(pos[:, 0])
    n_lat = 3 + lattice.n_sites - 1
    kf, ks = bf.shape[1], bs.shape[1]
    root = np.sqrt(penalty)
    pen_y = _block([None, root * models.slow_penalty], [n_lat, ks])
    pen_x = _block([None, root * models.fast_penalty, root * models.slow_penalty], [n_lat, kf, ks])

    # Index by walking from neighbour to neighbour; where the scan compresses the image too much
    # for an unambiguous step the walk stops, so fit what it reached, correct, and walk again on
    # the corrected positions, until no more columns join.
    idx, use = walk_indices(pos, lattice)
    for _ in range(6):
        lat = _lattice_columns(idx, lattice.n_sites)
        cy, _ = _solve(np.hstack([lat, -bs])[use], pos[use, 0], pen_y)
        cx, _ = _solve(np.hstack([lat, -bf, -bs])[use], pos[use, 1], pen_x)
        corrected = np.column_stack(
            [pos[:, 0] + bs @ cy[n_lat:], pos[:, 1] + bf @ cx[n_lat : n_lat + kf] + bs @ cx[n_lat + kf :]]
        )
        vectors = np.array([[cy[1], cx[1]], [cy[2], cx[2]]])
        offsets = np.vstack([np.zeros(2), np.column_stack([cy[3:n_lat], cx[3:n_lat]])])
        try:
            frame = Lattice(np.array([cy[0], cx[0]]), vectors, offsets @ np.linalg.inv(vectors))
        except ValueError:  # the columns reached so far hold no 2-D lattice
            break
        new_idx, reached = walk_indices(corrected, frame)
        if reached.sum() <= use.sum():
            break
        idx, use = new_idx, reached
    for _ in range(8):
        lat = _lattice_columns(idx, lattice.n_sites)
        ay = np.hstack([lat, -bs])
        ax = np.hstack([lat, -bf, -bs])
        cy, cov_y = _solve(ay[use], pos[use, 0], pen_y)
        cx, cov_x = _solve(ax[use], pos[use, 1], pen_x)
        # residuals in specimen coordinates (a column's site minus where the scan put it)
        res = np.column_stack([ay @ cy - pos[:, 0], ax @ cx - pos[:, 1]])
        dist = np.hypot(res[:, 0], res[:, 1])
        sigma = np.median(dist[use]) / np.sqrt(2 * np.log(2))  # the median of a 2-D normal's radius
        limit = min(max(CLIP * sigma, 1e-3 * spacing), OUTLIER * spacing)
        new_use = dist <= limit
        # a spline that lost most of its columns would be left to the penalty there, misfit the
        # rest, and lose them too: a misfit that is regional is the model's, not the columns'
        support = np.abs(np.hstack([bf, bs])) > 1e-6
        kept = (support & new_use[:, None]).sum(axis=0)
        starved = kept < 0.5 * support.sum(axis=0)
        if starved.any():
            new_use |= support[:, starved].any(axis=1) & (dist <= OUTLIER * spacing)
        if new_use.sum() < max(MIN_COLUMNS, n_lat + kf + ks):
            new_use = dist <= np.quantile(dist, 0.5)
        # re-index against the corrected lattice: a walk error shows up as a whole-cell residual
        vectors = np.column_stack([cy[1:3], cx[1:3]]).T
        frac = res @ np.linalg.inv(vectors)
        jump = np.rint(frac).astype(np.int64)
        moved = np.any(jump != 0, axis=1)
        idx[moved, :2] -= jump[moved]
        if np.array_equal(new_use, use) and not moved.any():
            break
        use = new_use

    lat = _lattice_columns(idx, lattice.n_sites)
    cf_cov = cov_x[n_lat : n_lat + kf, n_lat : n_lat + kf]
    if kf:
        # The fast scan's reference is the line just beyond the window, not the frame's mean
        # lattice: a real strain elsewhere (a stretched layer) moves that mean, and a window fitted
        # against it would take the difference for flyback. So the flyback is refitted against a
        # lattice of the window and the band after it, then the rest again with that flyback.
        band = models.cw + max(0.5 * models.cw, 3 * spacing)
        near = use & (pos[:, 1] <= band)
        pen_f = _block([None, root * models.fast_penalty], [n_lat, kf])
        local, cov_local = _solve(np.hstack([lat, -bf])[near], pos[near, 1] + (bs @ cx[n_lat + kf :])[near], pen_f)
        cx[n_lat : n_lat + kf], cf_cov = local[n_lat:], cov_local[n_lat:, n_lat:]
        pen_s = _block([None, root * models.slow_penalty], [n_lat, ks])
        rest, _ = _solve(np.hstack([lat, -bs])[use], (pos[:, 1] + bf @ cx[n_lat : n_lat + kf])[use], pen_s)
        cx[:n_lat], cx[n_lat + kf :] = rest[:n_lat], rest[n_lat:]
    res = np.column_stack([np.hstack([lat, -bs]) @ cy - pos[:, 0], np.hstack([lat, -bf, -bs]) @ cx - pos[:, 1]])

    rows, cols = np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64)
    grid_f, grid_s = models.fast(cols), models.slow(rows)
    g = grid_f @ cx[n_lat : n_lat + kf]
    hy, sx = grid_s @ cy[n_lat:], grid_s @ cx[n_lat + kf :]
    fast, slow, shift = cols + g, rows + hy, sx
    if np.gradient(fast).min() <= 0.2 or np.gradient(slow).min() <= 0.2:
        raise InvalidInput(
            "the fitted scan folds back on itself (a spacing below 20 % of the mean): the columns do not "
            "form one distorted lattice"
        )
    # standard errors of the spacing profiles: var(X′) = B′ C B′ᵀ with C the coefficient covariance
    dof = max(int(use.sum()) - n_lat - kf - ks, 1)
    s2 = float(np.sum(res[use] ** 2) / (2 * dof))
    d_f = np.gradient(grid_f, axis=0)
    d_s = np.gradient(grid_s, axis=0)
    cs = cov_y[n_lat:, n_lat:]
    var_f = np.einsum("ij,jk,ik->i", d_f, cf_cov, d_f) * s2 if kf else np.zeros(w)
    var_s = np.einsum("ij,jk,ik->i", d_s, cs, d_s) * s2
    fast_error = np.sqrt(np.maximum(var_f, 0)) / np.gradient(fast) ** 2
    slow_error = np.sqrt(np.maximum(var_s, 0)) / np.gradient(slow) ** 2

    # how far the columns are from one affine lattice, for the report
    affine = np.column_stack([lat @ np.linalg.lstsq(lat[use], pos[use, k], rcond=None)[0] for k in (0, 1)])
    rms_affine = float(np.sqrt(np.mean(np.sum((affine - pos)[use] ** 2, axis=1))))
    rms = float(np.sqrt(np.mean(np.sum(res[use] ** 2, axis=1))))
    distortion = ScanDistortion(
        fast=fast,
        slow=slow,
        shift=shift,
        fast_error=fast_error,
        slow_error=slow_error,
        fast_window=float(models.cw if models.has_fast else 0.0),
        n_columns=int(use.sum()),
        rms_affine=rms_affine,
        rms=rms,
        parameters=dict(fast_window=fast_window, fast_knot=fast_knot, slow_knot=slow_knot, penalty=penalty),
    )
    return distortion, use


def neighbour_spacings(
    positions: ArrayLike, specimen: ArrayLike, lattice: Lattice, axis: int
) -> tuple[np.ndarray, np.ndarray]:
    """What the columns themselves say about the scan: the apparent spacing of neighbouring
    columns along ``axis`` (0 = y, the slow scan; 1 = x, the fast scan) over their ideal spacing on
    the specimen lattice — the quantity :attr:`ScanDistortion.fast_spacing` and
    :attr:`ScanDistortion.slow_spacing` model — for neighbour pairs whose ideal difference runs
    mostly along that axis, as medians in bins of half a site separation.

    Parameters
    ----------
    positions : array_like, (N, 2)
        The columns in image pixels.
    specimen : array_like, (N, 2)
        The same columns on the specimen (:meth:`ScanDistortion.correct`).
    lattice : Lattice
        The lattice in the specimen frame.
    axis : {0, 1}

    Returns
    -------
    centres : ndarray
        Bin centres along ``axis``, image pixels.
    ratio : ndarray
        Median apparent/ideal spacing in each bin.
    """
    pos = _check_positions(positions, minimum=0)
    spec = _check_positions(specimen, "specimen", minimum=0)
    if len(pos) < 3 or spec.shape != pos.shape:
        return np.zeros(0), np.zeros(0)
    k = min(4, len(pos) - 1)
    _, idx = cKDTree(spec).query(spec, k=k + 1)
    a, b = np.repeat(np.arange(len(pos)), k), idx[:, 1:].ravel()
    ideal = _ideal_differences(spec[b] - spec[a], lattice)
    along = np.abs(ideal[:, axis]) > 0.8 * np.hypot(ideal[:, 0], ideal[:, 1])
    ratio = (pos[b, axis] - pos[a, axis])[along] / ideal[along, axis]
    mid = 0.5 * (pos[a, axis] + pos[b, axis])[along]
    if not len(mid):
        return mid, ratio
    step = 0.5 * lattice.min_separation
    bins = np.floor(mid / step).astype(np.int64)
    keys = np.unique(bins)
    return (keys + 0.5) * step, np.array([np.median(ratio[bins == key]) for key in keys])
