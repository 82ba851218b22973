"""Neighbour-aware refinement: each column refitted on the image minus its neighbours' models.

The single-column fit (:func:`usidgpu.atoms.fit.refine` with ``neighbours="none"``) cuts each
column's fit disk halfway to its neighbours; where columns overlap, their tails still reach into
that disk — a dim column between bright ones sees a rim of bright tails a third of its own
height — and pull its position. And it weighs every pixel alike, where shot noise makes a
column's peak ten times as noisy as its background. After that fit, here:

1. the image's noise is measured as a function of its mean, ``alpha + beta · mean``
   (:func:`usidgpu.atoms.model_image.fit_noise`);
2. the columns are sorted into kinds by amplitude (:func:`amplitude_groups`), and each column is
   drawn into one model image with its own amplitude and position and the median shape of its
   kind (:func:`pooled_models`, :func:`usidgpu.atoms.model_image.column_image`);
3. each column is refitted on ``image − model + its own drawn model`` — its neighbours removed,
   itself left — on a disk of max(half the spacing, 2.5σ, 4 px) cut only where it comes nearer
   another column, each pixel weighted by the inverse of its noise variance (the Poisson
   maximum-likelihood fit, to second order), starting from the first fit;
4. a refit that turned into no column (a ridge, a needle, a dome on a negative background, or a
   hop of more than a quarter radius onto a neighbour's residue) is not taken: the column keeps
   its first fit and counts as fitted alone;
5. the reported position errors are scaled for what the neighbours' own uncertainty adds
   (:func:`error_inflation`).

``sweeps`` > 1 repeats 2–4 with the new fits (only for the columns that, or whose neighbours,
moved). One sweep is the default, and what the tests hold to the Cramér–Rao bound. More is no
better: a repeated subtraction with a background per column is no descent on one objective, and
on noisy images its fixed point drifted to wider columns on lower backgrounds, 20–30 % above
the bound where one sweep is within a few percent of it.

Why the drawn shapes are pooled: a neighbour's tail in a column's disk moves with the
neighbour's widths, and widths fitted to one column's noise scatter by several percent; drawn
with them, the dim columns of issue 19's example came out 20 % less precise than drawn with
their kind's median widths, which are known to a fraction of a percent.

Step 3 is the same Levenberg–Marquardt iteration as the single-column fit, run by the same
engines — the NumPy/CuPy array code, the compiled CPU engine and the CUDA kernel: the
subtraction and the weights only change the pixels an engine is handed.

Where it does not reach the bound (measured by ``benchmarks/bench_atoms.py --sections grid``):
columns a quarter of the cell wide (σ = spacing/4), whose neighbours' first fits are too poor
to subtract; a joint fit of overlapping clusters would be needed there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.linalg
from scipy.spatial import cKDTree

from ..core.arrays import asnumpy
from ..core.linalg import one_blas_thread
from .fit_settings import ERROR_RIDGE
from .gaussian import AMPLITUDE, BACKGROUND, QA, QB, QC, SIGMA_X, SIGMA_Y, THETA, X, Y, quadratic_form, to_physical
from .model_image import NoiseModel, column_image, fit_noise, own_model, render_radius
from .windows import gather

#: Sweeps stop when no column moved by more than this fraction of its position error.
SWEEP_TOL = 0.01
#: A neighbour counts as subtracted (``ColumnFit.n_neighbours``) where its model exceeds this
#: fraction of the noise standard deviation somewhere in the column's fit disk.
NEIGHBOUR_NOISE = 0.1
#: Default fit-disk radius of the neighbour-aware fit, in widths (σ of the major axis): the
#: pixels beyond hold < 2 % of a column's position information.
RADIUS_SIGMAS = 2.5
#: ... and at least this many pixels: a column 1.2 px wide fitted on a disk of 2.5σ (28 pixels
#: for seven parameters) scatters 12 % more than its covariance says; on a disk of 4 px, 2 %.
RADIUS_MIN = 4.0


@dataclass
class NeighbourFit:
    """Results of :func:`refine_neighbours` (reported parameters, as :class:`~.fit.ColumnFit`)."""

    params: np.ndarray
    errors: np.ndarray
    converged: np.ndarray
    n_iter: np.ndarray
    rms: np.ndarray
    n_pixels: np.ndarray
    n_neighbours: np.ndarray
    radius: float
    sweeps: int
    noise: NoiseModel
    parameters: dict = field(default_factory=dict)
    #: (N,) kind of each column (:func:`amplitude_groups`) and whether its fit was plausible
    groups: np.ndarray | None = None
    reliable: np.ndarray | None = None


def fitted_form(params: np.ndarray) -> np.ndarray:
    """Reported parameters (σx, σy, θ) back to the fitted quadratic form (qa, qb, qc)."""
    p = np.array(params, dtype=np.float64, copy=True)
    p[:, QA], p[:, QB], p[:, QC] = quadratic_form(p[:, SIGMA_X], p[:, SIGMA_Y], p[:, THETA])
    return p


def default_radius(params: np.ndarray, radius0: float) -> float:
    """The fit-disk radius: at least the single-column fit's, :data:`RADIUS_SIGMAS` times the
    median major-axis width of the columns, and :data:`RADIUS_MIN`."""
    sigma = np.asarray(params, dtype=np.float64)[:, SIGMA_X]
    sigma = sigma[np.isfinite(sigma)]
    wide = RADIUS_SIGMAS * float(np.median(sigma)) if sigma.size else radius0
    return float(max(radius0, wide, RADIUS_MIN))


def refine_neighbours(
    xp: Any,
    image: Any,
    start: np.ndarray,
    first: tuple[np.ndarray, ...],
    radius0: float,
    radius: float,
    engine: str,
    max_iter: int,
    tol: float,
    precision: str,
    batch: int,
    sweeps: int,
    near: np.ndarray | None = None,
) -> NeighbourFit:
    """Refit every column on the image minus its neighbours (see the module docstring).

    Parameters
    ----------
    xp : module
        The array module of ``image`` (NumPy, or CuPy for the GPU engines).
    image : 2-D float64 array on ``xp``
    start : (N, 2) start positions (host): the window centres; the centre stays within
        ``radius0`` of them, as in the single-column fit
    first : (params, errors, converged, n_iter, rms, n_pixels)
        The single-column fit (host arrays, reported parameters): the first model.
    radius0 : float
        The single-column fit's radius.
    radius : float
        Fit-disk radius of the sweeps (columns whose disk of this radius would cross the image
        border keep ``radius0``: beyond the border lie columns nobody fitted).
    engine : {"array", "numba", "kernel"}
    max_iter, tol, precision
        As :func:`usidgpu.atoms.fit.refine`.
    batch : int
        Columns per batch of the array and kernel engines.
    sweeps : int
        Model-subtract-refit rounds.
    near : (N, K, 2), optional
        The columns that may clip each fit disk of ``radius`` (:func:`usidgpu.atoms.fit._neighbours`),
        when the caller has them.

    Returns
    -------
    NeighbourFit
    """
    params0, errors0, conv0, iters0, rms0, npx0 = first
    n = len(start)
    shape = (int(image.shape[0]), int(image.shape[1]))
    host = asnumpy(image)
    p = fitted_form(params0)
    out = {
        "params": np.array(params0, dtype=np.float64),
        "errors": np.array(errors0, dtype=np.float64),
        "converged": np.array(conv0, dtype=bool),
        "n_iter": np.array(iters0, dtype=np.int64),
        "rms": np.array(rms0, dtype=np.float64),
        "n_pixels": np.array(npx0, dtype=np.int64),
    }
    widths = _typical_widths(out["params"])
    # a column whose single fit is implausible (a border column reaching for a neighbour outside
    # the frame, a false column on noise) is neither drawn nor refitted: it keeps that fit
    reliable = _plausible(out["params"], widths)
    groups = amplitude_groups(out["params"][:, AMPLITUDE], reliable)
    noise = fit_noise(host, p[reliable], start[reliable], radius0)
    h, w = shape
    radii = np.full(n, float(radius))
    cut = (start < radius - 0.5).any(axis=1) | (start[:, 0] > h - 0.5 - radius) | (start[:, 1] > w - 0.5 - radius)
    radii[cut] = radius0
    near = _near_columns(start, radius) if near is None else near
    # the box every drawn model fills: set by the pooled shapes, which are what is drawn
    rho = render_radius(pooled_models(p, groups, reliable)[reliable], cap=4.0 * radius)
    pairs = _pairs(start, radius + rho + 1.0)
    active = reliable.copy()
    joined = np.zeros(n, dtype=bool)  # refitted with its neighbours subtracted at least once
    done = 0
    while done < sweeps and active.any():
        done += 1
        drawn = pooled_models(p, groups, reliable)
        before = {key: value.copy() for key, value in out.items()}
        if engine == "numba":
            from .fit_numba import fit_numba_subtract, render_numba

            model = render_numba(shape, drawn, rho)
            new = fit_numba_subtract(
                host, model, start, near, drawn, p, active, radii, radius0, rho,
                (noise.alpha, noise.beta, noise.floor), max_iter, tol, ERROR_RIDGE, out,
            )  # fmt: skip
        else:
            model = column_image(xp, shape, xp.asarray(drawn), rho)
            new = p.copy()
            idx = np.flatnonzero(active)
            for s in range(0, len(idx), batch):
                i = idx[s : s + batch]
                fitted, parts = _fit_batch(
                    xp, image, model, start[i], near[i], drawn[i], p[i], radii[i], radius0, rho, noise, engine,
                    max_iter, tol, precision,
                )  # fmt: skip
                new[i] = fitted
                for key, value in zip(("params", "errors", "converged", "rms", "n_iter", "n_pixels"), parts):
                    out[key][i] = value + before["n_iter"][i] if key == "n_iter" else value
        # a refit that turned into something no column is (a ridge, a needle, a dome on a negative
        # background) is not taken: drawn, it would corrupt its neighbours' data
        bad = active & ~_plausible(out["params"], widths)
        # nor is a refit that left its first fit by more than a quarter of the first radius (and
        # four of its errors): a hop onto a neighbour's residue, not a correction
        shift = np.hypot(*(out["params"][:, [Y, X]] - params0[:, [Y, X]]).T)
        first_error = np.hypot(*errors0[:, [Y, X]].T)
        bad |= active & (shift > np.maximum(0.25 * radius0, 4.0 * np.where(np.isfinite(first_error), first_error, 0.0)))
        for key, value in out.items():
            value[bad] = before[key][bad]
        new[bad] = p[bad]
        joined |= active & ~bad
        moved = _changed(p, new, out["errors"]) & active
        p = new
        # next sweep: the columns that moved and those whose fit disk a moved column reaches
        active = moved.copy()
        active[pairs[moved[pairs[:, 0]], 1]] = True
        active[pairs[moved[pairs[:, 1]], 0]] = True
        active &= reliable
    drawn = pooled_models(p, groups, reliable)
    n_nb = np.where(joined, _count_neighbours(start, drawn, radii, noise, pairs), 0)
    inflation = error_inflation(shape, drawn, groups, reliable, noise, 2.0 * radius0, errors0)
    for g, factor in inflation.items():
        scaled = joined & (groups == g)
        out["errors"][scaled, Y] *= factor
        out["errors"][scaled, X] *= factor
    return NeighbourFit(
        params=out["params"],
        errors=out["errors"],
        converged=out["converged"],
        n_iter=out["n_iter"],
        rms=out["rms"],
        n_pixels=out["n_pixels"],
        n_neighbours=n_nb,
        radius=radius,
        sweeps=done,
        noise=noise,
        parameters=dict(
            render_radius=rho,
            noise=noise.as_dict(),
            sweeps=done,
            sweeps_converged=not active.any(),
            alone=int((~joined).sum()),
            shape_groups=int(groups.max() + 1) if len(groups) else 0,
            error_inflation=inflation,
        ),
        groups=groups,
        reliable=reliable,
    )


def error_inflation(
    shape: tuple[int, int],
    drawn: np.ndarray,
    groups: np.ndarray,
    reliable: np.ndarray,
    noise: NoiseModel,
    spacing: float,
    first_errors: np.ndarray,
) -> dict[int, float]:
    """How much more uncertain a column's position is than its fit says, per group of columns.

    A fit on the image minus its neighbours' models reports its uncertainty *given* those
    models; but they are fits to the same noisy image, and where columns overlap, their errors
    move the column too. To first order a neighbour j's amplitude and position errors δθⱼ shift
    column i by −F_ii⁻¹·F_ij·δθⱼ (F the Fisher information of the image model: F_ii the column's
    own block with the background, F_ij its coupling to j); with δθⱼ as uncertain as j's first
    fit says, the variance they add is Σⱼ (F_ii⁻¹F_ij)·Cⱼ·(F_ii⁻¹F_ij)ᵀ. This is computed on a
    square region at the centre of the image (three spacings plus one and a half on each side) for the
    region's core columns, from the fitted model and the noise model, and compared with what the
    neighbours' unknowns cost the joint fit of all columns (the (y, x) diagonal of F⁻¹ against
    that of F_ii⁻¹); each group's reported position errors are scaled by the median over its
    columns of the larger of the two ratios √(total / own) (1 where the columns do not overlap;
    1.05–1.2 where a dim sublattice sits between bright columns).
    """
    from .evaluate import region_fisher

    h, w = shape
    ok = reliable & (drawn[:, AMPLITUDE] > 0) & np.isfinite(drawn).all(axis=1)
    index = np.flatnonzero(ok)
    pos, amp = drawn[ok][:, [Y, X]], drawn[ok, AMPLITUDE]
    det = np.maximum(drawn[ok, QA] * drawn[ok, QC] - drawn[ok, QB] ** 2, 1e-12)
    sig = (4.0 * det) ** -0.25  # √(σx·σy): the round column of the same area
    core, margin = max(3.0 * spacing, 20.0), 1.5 * spacing
    centre = np.array([h, w]) / 2.0
    lo_core, hi_core = centre - core / 2, centre + core / 2
    lo = np.maximum(np.floor(lo_core - margin), 0).astype(int)
    hi = np.minimum(np.ceil(hi_core + margin), [h, w]).astype(int)
    free = np.flatnonzero(((pos >= lo) & (pos <= hi - 1)).all(axis=1))
    inner = ((pos[free] >= lo_core) & (pos[free] < hi_core)).all(axis=1)
    if inner.sum() < 2:
        return {}
    shifted = drawn[index[free]].copy()
    shifted[:, Y] -= lo[0]
    shifted[:, X] -= lo[1]
    mean = column_image(np, tuple(hi - lo), shifted, render_radius(shifted, cap=4.0 * spacing))
    mean += float(np.median(drawn[ok, BACKGROUND]))
    fisher = region_fisher(pos[free], amp[free], sig[free], noise.variance(np, mean), lo)
    n = len(free)
    # the first fits' (amplitude, y, x) variances: what each neighbour's drawn model is off by
    first_var = np.asarray(first_errors, dtype=np.float64)[index[free]][:, [AMPLITUDE, Y, X]] ** 2
    first_var = np.where(np.isfinite(first_var), first_var, 0.0)
    # the (y, x) diagonal of F⁻¹ for the core columns only: one Cholesky factorization and a
    # solve for those unit vectors, a third of the work of inverting F (F is positive definite
    # wherever the model is identifiable; where it is not, no inflation is computed)
    wanted = (6 * np.flatnonzero(inner)[:, None] + np.array([1, 2])[None, :]).ravel()  # (y, x) of each
    unit = np.zeros((fisher.shape[0], len(wanted)))
    unit[wanted, np.arange(len(wanted))] = 1.0
    joint = np.zeros(fisher.shape[0])
    with one_blas_thread():
        try:
            factor = scipy.linalg.cho_factor(fisher, check_finite=False)
        except np.linalg.LinAlgError:
            return {}
        joint[wanted] = np.einsum("ij,ij->j", unit, scipy.linalg.cho_solve(factor, unit, check_finite=False))
    ratios, which = [], []
    for k in np.flatnonzero(inner):
        own = np.r_[6 * k : 6 * k + 6, 6 * n]
        try:
            own_inv = np.linalg.inv(fisher[np.ix_(own, own)])
        except np.linalg.LinAlgError:
            continue
        coupled = np.flatnonzero(np.abs(fisher[6 * k + 1 : 6 * k + 3, : 6 * n]).reshape(2, n, 6).max(axis=(0, 2)) > 0)
        coupled = coupled[coupled != k]
        # every coupled neighbour's (amplitude, y, x) at once: gain (7, 3m) = ∂θᵢ/∂θⱼ up to the sign
        gain = own_inv @ fisher[own][:, (6 * coupled[:, None] + np.arange(3)).ravel()]
        added = (gain * first_var[coupled].ravel()) @ gain.T
        base = np.diag(own_inv)[1:3]
        propagated = np.sum(base + np.diag(added)[1:3]) / np.sum(base)
        # and never less than what the neighbours' unknowns cost the joint fit of all columns
        ratios.append(np.sqrt(max(propagated, np.sum(joint[6 * k + 1 : 6 * k + 3]) / np.sum(base))))
        which.append(groups[index[free[k]]])
    ratio, kind = np.array(ratios), np.array(which)
    return {int(g): float(np.median(ratio[kind == g])) for g in np.unique(kind)}


def amplitude_groups(amplitude: np.ndarray, reliable: np.ndarray) -> np.ndarray:
    """Columns of one kind share a shape: 0 for all, or 0/1 (dim/bright) where the amplitudes of
    the reliable columns fall into two groups (a 1-D two-means split whose groups are each at
    least 5 % of the columns and stand apart by Ashman's D > 2)."""
    a = np.asarray(amplitude, dtype=np.float64)
    groups = np.zeros(len(a), dtype=np.int64)
    good = a[reliable & np.isfinite(a)]
    if len(good) < 8:
        return groups
    threshold = float(np.median(good))
    for _ in range(50):
        low, high = good[good < threshold], good[good >= threshold]
        if len(low) == 0 or len(high) == 0:
            return groups
        new = 0.5 * (low.mean() + high.mean())
        if new == threshold:
            break
        threshold = new
    spread = np.sqrt(low.var() + high.var())
    d = np.sqrt(2) * (high.mean() - low.mean()) / spread if spread > 0 else np.inf
    if d > 2 and min(len(low), len(high)) >= 0.05 * len(good):
        groups[a >= threshold] = 1
    return groups


def pooled_models(p: np.ndarray, groups: np.ndarray, reliable: np.ndarray) -> np.ndarray:
    """The models drawn for the neighbours: each column's own amplitude and position with the
    median shape (qa, qb, qc) of its group; unreliable columns with amplitude 0 (not drawn).

    A column's own widths scatter with its noise — and their error moves its tails on every
    neighbour: tails drawn with the widths of single fits at 60 counts per unit amplitude made
    the dim columns beside them 20 % less precise than tails drawn with the group's median,
    which is known to a fraction of a percent.
    """
    drawn = np.array(p, dtype=np.float64, copy=True)
    for g in np.unique(groups):
        members = (groups == g) & reliable
        if members.any():
            drawn[groups == g, QA : QC + 1] = np.median(p[members, QA : QC + 1], axis=0)
    drawn[~reliable, AMPLITUDE] = 0.0
    drawn[~reliable] = np.where(np.isfinite(drawn[~reliable]), drawn[~reliable], 0.0)
    return drawn


def _near_columns(start: np.ndarray, radius: float) -> np.ndarray:
    """The columns that may clip each fit disk of ``radius`` (as the single-column fit's)."""
    from .fit import _neighbours

    return _neighbours(start, radius)


def _pairs(start: np.ndarray, reach: float) -> np.ndarray:
    """All column pairs (i < j) closer than ``reach``: (P, 2)."""
    if len(start) < 2:
        return np.zeros((0, 2), dtype=np.int64)
    tree = cKDTree(start, balanced_tree=False, compact_nodes=False)
    return tree.query_pairs(reach, output_type="ndarray").astype(np.int64)


#: A refit is plausible when its major-axis width is at most this many times the typical one and
#: its minor-axis width at least this fraction of the typical one.
WIDTH_RANGE = (2.0, 0.4)


def _typical_widths(params: np.ndarray) -> tuple[float, float]:
    """Median major- and minor-axis widths (reported parameters) of the first fit."""
    ok = np.isfinite(params).all(axis=1)
    if not ok.any():
        return (np.inf, 0.0)
    return float(np.median(params[ok, SIGMA_X])), float(np.median(params[ok, SIGMA_Y]))


def _plausible(params: np.ndarray, widths: tuple[float, float]) -> np.ndarray:
    """Columns whose widths lie in :data:`WIDTH_RANGE` of the typical ones, no more elongated
    than twice the typical elongation, finite."""
    major, minor = widths
    with np.errstate(invalid="ignore", divide="ignore"):
        return (
            np.isfinite(params).all(axis=1)
            & (params[:, SIGMA_X] <= WIDTH_RANGE[0] * major)
            & (params[:, SIGMA_Y] >= WIDTH_RANGE[1] * minor)
            & (params[:, SIGMA_X] <= 2.0 * (major / minor) * params[:, SIGMA_Y])
            & (params[:, AMPLITUDE] > 0)
        )


def _changed(old: np.ndarray, new: np.ndarray, errors: np.ndarray) -> np.ndarray:
    """Columns whose position moved by more than :data:`SWEEP_TOL` of its error, or whose
    amplitude or widths changed by more than that fraction of their errors."""
    moved = np.zeros(len(old), dtype=bool)
    for k in (Y, X):
        moved |= np.abs(new[:, k] - old[:, k]) > SWEEP_TOL * np.maximum(errors[:, k], 1e-12)
    moved |= np.abs(new[:, AMPLITUDE] - old[:, AMPLITUDE]) > SWEEP_TOL * np.maximum(errors[:, AMPLITUDE], 1e-12)
    for k in (QA, QC):  # the widths: a relative change against the relative width error
        rel = np.abs(new[:, k] - old[:, k]) / np.maximum(np.abs(old[:, k]), 1e-300)
        width_err = errors[:, SIGMA_Y] / np.maximum(np.abs(new[:, SIGMA_Y]), 1e-300)
        moved |= rel > 2 * SWEEP_TOL * width_err
    return moved


def _count_neighbours(start, p, radius, noise: NoiseModel, pairs) -> np.ndarray:
    """How many other columns put more than :data:`NEIGHBOUR_NOISE` of the noise standard
    deviation into each column's fit disk (their models were subtracted there)."""
    n = len(p)
    count = np.zeros(n, dtype=np.int64)
    if len(pairs) == 0:
        return count
    i, j = pairs[:, 0], pairs[:, 1]
    d = np.hypot(*(p[i][:, [Y, X]] - p[j][:, [Y, X]]).T)
    lam = 0.5 * (p[:, QA] + p[:, QC]) - np.sqrt((0.5 * (p[:, QA] - p[:, QC])) ** 2 + p[:, QB] ** 2)
    lam = np.maximum(lam, 1e-12)
    gap_i = np.maximum(d - radius[i], 0.0)  # from column j's centre to column i's disk
    gap_j = np.maximum(d - radius[j], 0.0)
    std = np.sqrt(noise.variance(np, p[:, BACKGROUND]))
    # the largest value of column b's model in column a's disk (along b's major axis: an upper bound)
    a_in_b = p[j, AMPLITUDE] * np.exp(-lam[j] * gap_i * gap_i) > NEIGHBOUR_NOISE * std[i]
    b_in_a = p[i, AMPLITUDE] * np.exp(-lam[i] * gap_j * gap_j) > NEIGHBOUR_NOISE * std[j]
    np.add.at(count, i[a_in_b], 1)
    np.add.at(count, j[b_in_a], 1)
    return count


def _pack(xp: Any, mask: Any, grid: Any, *values: Any) -> tuple[Any, ...]:
    """The masked pixels of every window packed to the front of a row cut at the largest count
    (as :func:`usidgpu.atoms.fit.compact_pixels`), for several value arrays at once."""
    n, s = mask.shape[0], mask.shape[1]
    flat = mask.reshape(n, -1)
    m = max(int(flat.sum(axis=1).max()), 1)
    order = xp.argsort((~flat).astype(np.int8), axis=1, kind="stable")[:, :m]
    yy = xp.broadcast_to(grid[:, 0, :, None], (n, s, s)).reshape(n, -1)
    xx = xp.broadcast_to(grid[:, 1, None, :], (n, s, s)).reshape(n, -1)
    take = xp.take_along_axis
    packed = [take(a.reshape(n, -1), order, axis=1) for a in (yy, xx, flat, *values)]
    packed[2] = packed[2].astype(np.float64)
    return tuple(packed)


def prepare_subtract(
    xp: Any,
    image: Any,
    model: Any,
    start: Any,
    near: Any,
    drawn: Any,
    own: Any,
    radii: Any,
    rho: int,
    noise: NoiseModel,
) -> tuple[Any, Any, Any, Any]:
    """Packed fit pixels of a batch of columns on ``image − model`` plus each one's own drawn
    model, with noise weights (the array-engine twin of
    :func:`usidgpu.atoms.fit_numba._gather_subtract`).

    Parameters
    ----------
    start : (N, 2) window centres; near : (N, K, 2) the columns that clip the disks
    drawn : (N, 7) the models drawn into ``model``; own : (N, 7) the columns' own fits
    radii : (N,) disk radii

    Returns
    -------
    yy, xx, data, weight : (N, M); weight 1/√variance on the fit pixels, 0 on the padding
    """
    from .fit import fit_masks

    r_int = int(math.ceil(float(radii.max())))
    values, inside, grid = gather(xp, image, start, r_int)
    drawn_values, _, _ = gather(xp, model, start, r_int)
    mask = fit_masks(xp, start, grid, inside, radii[:, None, None], near)
    yy, xx, used, residual, mean = _pack(xp, mask, grid, values - drawn_values, drawn_values)
    data = residual + own_model(xp, drawn, yy, xx, rho)
    variance = noise.variance(xp, mean + own[:, BACKGROUND : BACKGROUND + 1])
    weight = used / xp.sqrt(variance)
    return yy, xx, data * used, weight


def _fit_batch(xp, image, model, start_np, near_np, drawn_np, p_np, radii_np, bound, rho, noise, engine, max_iter, tol,
               precision):  # fmt: skip
    """Refit one batch on the array or kernel engine: (new fitted-form parameters (host),
    (params, errors, converged, n_iter, rms, n_pixels) as NumPy)."""
    from .fit import _finish, _project, covariance, lm_array

    start = xp.asarray(start_np)
    p = xp.asarray(p_np)
    yy, xx, data, weight = prepare_subtract(
        xp, image, model, start, xp.asarray(near_np), xp.asarray(drawn_np), p, xp.asarray(radii_np), rho, noise
    )
    p0 = _project(xp, p.copy(), start, bound)
    if engine == "array":
        fitted, conv, iters = lm_array(xp, yy, xx, data, weight, p0, start, bound, max_iter, tol)
    else:
        from .fit_kernel import lm_kernel

        fitted, conv, iters = lm_kernel(yy, xx, data, weight, p0, start, bound, max_iter, tol, precision)
    cov, rms, npx = covariance(xp, fitted, yy, xx, data, weight)
    parts = _finish(xp, *to_physical(xp, fitted, cov), conv, iters, rms, npx)
    if (parts[4] < 0).any():
        raise RuntimeError("the column-fit kernel refused its launch configuration; no column was fitted")
    return asnumpy(fitted), parts
