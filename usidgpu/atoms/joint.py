"""Joint fit of every column at once: one weighted least-squares problem for the whole image.

Where columns overlap strongly (σ a quarter of the cell: a dim column sits 2.8σ from four bright
ones), fitting each column on the image minus its neighbours' models is not enough: the
neighbours' models come from fits that were themselves pulled by the column, and a background per
fit window absorbs part of every tail. Here all columns are fitted together, as one model of the
image::

    I(y, x) = B(y, x) + Σᵢ Aᵢ · exp(−E_g(y − yᵢ, x − xᵢ))

with each column's amplitude and position (Aᵢ, yᵢ, xᵢ), one quadratic-form shape E_g per kind of
column (the amplitude groups of :func:`usidgpu.atoms.neighbours.amplitude_groups`: bright and dim
columns each share their width, known then to a fraction of a percent), and a smooth background B
(a quadratic surface). Pixels are weighted by the inverse of the image's noise variance
(:class:`usidgpu.atoms.model_image.NoiseModel`): the Poisson maximum-likelihood fit to second
order.

Levenberg–Marquardt on the sparse normal equations: the Jacobian is assembled sparse (a column
reaches only the pixels of its box), ``JᵀWJ`` is a banded matrix of 3N + 3G + 6 unknowns, solved
by SuperLU (SciPy). Written here because no library fits thousands of overlapping peaks jointly
with shared shapes; SciPy provides the sparse algebra.

Where it does not apply: every column of a kind is drawn with one shape, so a scan that changes
the columns' shapes across the frame (the flyback compression of the shipped DM3 survey, drift)
breaks the model — there it tripled the strain's spread; the neighbour-aware fit, whose columns
keep their own widths, is the one for such images.

Position errors: the (y, x) block of the inverse normal matrix restricted to each column and its
first ring of neighbours (a Schur complement over the neighbours' amplitude and position, the
couplings among the neighbours left out), scaled by the reduced χ² of the fit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import sparse
from scipy.sparse.linalg import splu

from .gaussian import AMPLITUDE, BACKGROUND, QA, QB, QC, SIGMA_X, SIGMA_Y, THETA, X, Y, widths_and_angle
from .model_image import NoiseModel

#: Each column is modelled in the box where its group's shape falls below this fraction of its
#: peak (the tails beyond change no position by more than 1e-3 of its error).
JOINT_CUTOFF = 1e-3
#: Pixels nearer the border than this many widths (σ of the widest kind) are left out of the cost.
BORDER_SIGMAS = 2.0
#: The joint fit needs at least this share of the image clear of the border band (and four
#: pixels per unknown); else the neighbour-aware fit stands.
MIN_KEPT = 0.3
#: Background terms: a plane (constant and the two gradients).
N_BACKGROUND = 3
#: Iterations stop when the weighted cost falls by less than this fraction ...
JOINT_TOL = 1e-6
#: ... or after this many: on the two-sublattice images at σ = a quarter of the cell, five
#: iterations from the neighbour-aware fit took the dim columns' RMS from 7.2 to 0.55 × the
#: Cramér–Rao bound, thirty to 0.52.
JOINT_ITER = 8


class JointNotApplicable(ValueError):
    """The image leaves too little for a joint fit (columns wide against a small frame)."""


@dataclass
class JointFit:
    """Result of :func:`refine_joint`: per column (amplitude, y, x) and their errors, the shapes."""

    amplitude: np.ndarray
    positions: np.ndarray  #: (N, 2) (y, x)
    position_errors: np.ndarray  #: (N, 2)
    amplitude_errors: np.ndarray
    shapes: np.ndarray  #: (G, 3) quadratic forms (qa, qb, qc) of each group
    background: np.ndarray  #: (6,) coefficients of the quadratic background surface
    converged: bool
    n_iter: int
    reduced_chi2: float
    parameters: dict = field(default_factory=dict)


def _smallest_eigenvalue(shapes: np.ndarray) -> float:
    """Of the widest shape's quadratic form: E = λ·r² along its major axis."""
    lam = 0.5 * (shapes[:, 0] + shapes[:, 2]) - np.sqrt((0.5 * (shapes[:, 0] - shapes[:, 2])) ** 2 + shapes[:, 1] ** 2)
    return max(float(lam.min()), 1e-12)


def _box_radius(shapes: np.ndarray) -> int:
    return int(math.ceil(math.sqrt(math.log(1.0 / JOINT_CUTOFF) / _smallest_eigenvalue(shapes))))


def _major_sigma(shapes: np.ndarray) -> float:
    return math.sqrt(0.5 / _smallest_eigenvalue(shapes))


class _Problem:
    """The columns' boxes and the background basis on an image of this shape."""

    def __init__(self, shape: tuple[int, int], groups: np.ndarray, radius: int):
        self.h, self.w = shape
        self.groups = groups
        self.n_groups = int(groups.max()) + 1 if len(groups) else 1
        self.off = np.arange(-radius, radius + 1)
        v = np.linspace(-1.0, 1.0, self.h)[:, None] * np.ones((1, self.w))
        u = np.ones((self.h, 1)) * np.linspace(-1.0, 1.0, self.w)[None, :]
        self.basis = np.stack([np.ones_like(u), v, u]).reshape(N_BACKGROUND, -1)

    def evaluate(self, amp, pos, shapes, bg, jacobian: bool, linear_only: bool = False):
        """Model image (flat) and, if asked, the Jacobian (:class:`_Jacobian`); ``linear_only``:
        only the rows of the unknowns the model is linear in (amplitudes, background)."""
        n = len(amp)
        rows = np.rint(pos[:, 0]).astype(np.int64)[:, None] + self.off  # (n, S)
        cols = np.rint(pos[:, 1]).astype(np.int64)[:, None] + self.off
        inside = ((rows >= 0) & (rows < self.h))[:, :, None] & ((cols >= 0) & (cols < self.w))[:, None, :]
        pix = np.clip(rows, 0, self.h - 1)[:, :, None] * self.w + np.clip(cols, 0, self.w - 1)[:, None, :]
        dy = (rows - pos[:, 0:1])[:, :, None]
        dx = (cols - pos[:, 1:2])[:, None, :]
        qa, qb, qc = (shapes[self.groups, k][:, None, None] for k in range(3))
        g = np.exp(-(qa * dx * dx + 2 * qb * dx * dy + qc * dy * dy))
        ag = amp[:, None, None] * g
        model = self.basis.T @ bg
        p_in = pix[inside]
        model += np.bincount(p_in, weights=ag[inside], minlength=self.h * self.w)
        if not jacobian:
            return model, None
        # each column's rows hold the pixels of its box in raster order: the CSR arrays are
        # laid out directly (no sorting of coordinates), one row per unknown of the column
        per_column = inside.reshape(n, -1).sum(axis=1)
        kinds = (g,) if linear_only else (g, 2 * ag * (qb * dx + qc * dy), 2 * ag * (qa * dx + qb * dy))
        m = len(kinds)
        values = np.stack([np.broadcast_to(v, g.shape) for v in kinds], axis=1)  # (n, m, S, S)
        mask = np.broadcast_to(inside[:, None], values.shape)
        indices = np.broadcast_to(pix[:, None], values.shape)[mask]
        indptr = np.concatenate([[0], np.cumsum(np.repeat(per_column, m))])
        columns = sparse.csr_matrix((values[mask], indices, indptr), shape=(m * n, self.h * self.w))
        columns.has_sorted_indices = True
        if linear_only:
            return model, _Jacobian(columns, self.basis)
        # the shared unknowns (each kind's shape, the background) reach every pixel: dense rows
        shared = np.zeros((3 * self.n_groups, self.h * self.w))
        group_in = np.broadcast_to(self.groups[:, None, None], g.shape)[inside]
        for k, d in enumerate((-ag * dx * dx, -2 * ag * dx * dy, -ag * dy * dy)):
            d_in = np.broadcast_to(d, g.shape)[inside]
            for grp in range(self.n_groups):
                sel = group_in == grp
                shared[3 * grp + k] = np.bincount(p_in[sel], weights=d_in[sel], minlength=self.h * self.w)
        return model, _Jacobian(columns, np.vstack([shared, self.basis]))


class _Jacobian:
    """∂model/∂unknowns: the columns' own unknowns (sparse rows) above the shared ones (dense)."""

    def __init__(self, columns: sparse.csr_matrix, shared: np.ndarray):
        self.columns, self.shared = columns, shared

    def normal(self, weight: np.ndarray) -> tuple[sparse.csc_matrix, sparse.csr_matrix]:
        """JᵀWJ (CSC), and its block of the columns' unknowns alone (CSR)."""
        weighted = self.columns.multiply(weight[None, :]).tocsr()
        cc = (weighted @ self.columns.T).tocsr()
        shared_w = self.shared * weight[None, :]
        cs = np.asarray(self.columns @ shared_w.T)
        ss = shared_w @ self.shared.T
        full = sparse.bmat(
            [[cc, sparse.csr_matrix(cs)], [sparse.csr_matrix(cs.T), sparse.csr_matrix(ss)]], format="csc"
        )
        return full, cc

    def project(self, values: np.ndarray) -> np.ndarray:
        """Jᵀ-side product J·values (values per pixel)."""
        return np.concatenate([self.columns @ values, self.shared @ values])


def _solve_spd(matrix: sparse.csc_matrix, rhs: np.ndarray) -> np.ndarray:
    """Solve a sparse symmetric positive definite system: SuperLU in its symmetric mode (minimum
    degree ordering on A + Aᵀ, pivots on the diagonal) keeps a tenth of the fill-in of its
    default column ordering on these lattice-banded matrices, and factorizes 10–15× faster."""
    lu = splu(matrix, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0, options=dict(SymmetricMode=True))
    return lu.solve(rhs)


def _schur_errors(normal: sparse.csr_matrix, n: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """(amplitude, y, x) standard errors of each column from its block of the normal matrix
    minus what its first ring of neighbours' (amplitude, y, x) take (one-ring Schur complement)."""
    block = normal[: 3 * n, : 3 * n].tocoo()
    bi, bj = block.row // 3, block.col // 3
    pair = bi * n + bj
    keys, where = np.unique(pair, return_inverse=True)
    blocks = np.zeros((len(keys), 3, 3))
    np.add.at(blocks, (where, block.row % 3, block.col % 3), block.data)
    ki, kj = keys // n, keys % n
    diag = np.zeros((n, 3, 3))
    diag[ki[ki == kj]] = blocks[ki == kj]
    diag += 1e-12 * np.eye(3) * np.maximum(np.abs(diag).max(axis=(1, 2)), 1e-300)[:, None, None]
    inv_diag = np.linalg.inv(diag)
    off = ki != kj
    b = blocks[off]
    taken = np.einsum("kab,kbc,kdc->kad", b, inv_diag[kj[off]], b)
    schur = diag.copy()
    np.add.at(schur, ki[off], -taken)
    try:
        cov = np.linalg.inv(schur)
    except np.linalg.LinAlgError:
        cov = inv_diag
    var = np.diagonal(cov, axis1=1, axis2=2) * scale
    var = np.where(var > 0, var, np.nan)
    return np.sqrt(var[:, 0]), np.sqrt(var[:, 1:3])


def refine_joint(
    image: np.ndarray,
    fitted: np.ndarray,
    groups: np.ndarray,
    noise: NoiseModel,
    reach: float,
    max_iter: int = JOINT_ITER,
    tol: float = JOINT_TOL,
) -> JointFit:
    """Fit all columns jointly (see the module docstring).

    Parameters
    ----------
    image : 2-D float64 array (host)
    fitted : (N, 7) fitted-form parameters of a previous fit (amplitude, y, x, qa, qb, qc, background):
        the start. Each column's position stays within ``reach`` of it.
    groups : (N,) int
        The kind of each column (0, or 0/1 for dim/bright): columns of one kind share a shape.
    noise : NoiseModel
        Pixel variance as a function of the mean, for the weights.
    reach : float
        How far a position may move from its start (px).
    max_iter, tol
        Levenberg–Marquardt iterations at most; relative decrease of the cost that ends them.

    Returns
    -------
    JointFit
    """
    image = np.asarray(image, dtype=np.float64)
    start = np.asarray(fitted, dtype=np.float64)
    n = len(start)
    groups = np.asarray(groups, dtype=np.int64)
    n_groups = int(groups.max()) + 1
    shapes = np.array([np.median(start[groups == k][:, [QA, QB, QC]], axis=0) for k in range(n_groups)])
    amp, pos = start[:, AMPLITUDE].copy(), start[:, [Y, X]].copy()
    problem = _Problem(image.shape, groups, _box_radius(shapes))
    bg = np.zeros(N_BACKGROUND)
    bg[0] = float(np.median(start[:, -1]))
    flat = image.ravel()

    def cost_of(model: np.ndarray, weight: np.ndarray) -> float:
        r = flat - model
        return float(np.dot(r * r, weight))

    def linear_part(amp, bg, weight):
        """Amplitudes and background are linear in the model: their exact weighted least-squares
        values for the current positions and shapes (the slow direction of a plain LM, where
        wide tails and the background trade against each other)."""
        _m, lin = problem.evaluate(np.ones(n), pos, shapes, np.zeros(N_BACKGROUND), True, linear_only=True)
        normal, _cc = lin.normal(weight)
        ridge = 1e-12 * max(normal.diagonal().max(), 1e-300)
        normal = normal + sparse.diags(np.full(normal.shape[0], ridge), format="csc")
        try:
            sol = _solve_spd(normal, lin.project(weight * flat))
        except RuntimeError:
            return amp, bg
        new_amp = sol[:n]
        if (new_amp <= 0).any():  # a negative amplitude is no column: keep the LM's values there
            new_amp = np.where(new_amp > 0, new_amp, amp)
        return new_amp, sol[n:]

    # the frame cuts the lattice: columns beyond it, which nobody found, reach into a band along
    # the border with their tails. Left in, the background and the widths bend to fit that band
    # (at σ = a quarter of the cell, the background came out 3× too high and every width 12 %
    # too narrow); the band of two widths is left out of the cost, and the columns in it are
    # fitted on what remains
    margin = int(math.ceil(BORDER_SIGMAS * _major_sigma(shapes)))
    inner = np.zeros(image.shape)
    inner[margin : image.shape[0] - margin, margin : image.shape[1] - margin] = 1.0
    keep = inner.ravel()
    if keep.sum() < max(MIN_KEPT * keep.size, 4 * (3 * n + 3 * n_groups + N_BACKGROUND)):
        raise JointNotApplicable(
            f"columns {_major_sigma(shapes):.1f} px wide leave {int(keep.sum())} of {keep.size} pixels clear of the "
            f"border band: too few for a joint fit of {n} columns"
        )
    model, _ = problem.evaluate(amp, pos, shapes, bg, False)
    weight = keep / noise.variance(np, np.maximum(model, 0.0))
    amp, bg = linear_part(amp, bg, weight)
    model, jac = problem.evaluate(amp, pos, shapes, bg, True)
    weight = keep / noise.variance(np, np.maximum(model, 0.0))
    cost = cost_of(model, weight)
    lam, converged, done = 1e-3, False, 0
    n_unknowns = 3 * n + 3 * n_groups + N_BACKGROUND
    while done < max_iter:
        done += 1
        normal, _cc = jac.normal(weight)
        grad = jac.project(weight * (flat - model))
        diag = normal.diagonal()
        step_ok = False
        for _ in range(10):
            damped = normal + sparse.diags(lam * np.maximum(diag, 1e-12 * max(diag.max(), 1e-300)), format="csc")
            try:
                delta = _solve_spd(damped, grad)
            except RuntimeError:  # singular even when damped
                lam *= 10
                continue
            new_amp = np.maximum(amp + delta[0 : 3 * n : 3], 1e-12)
            new_pos = pos + delta[: 3 * n].reshape(n, 3)[:, 1:]
            new_pos = np.clip(new_pos, start[:, [Y, X]] - reach, start[:, [Y, X]] + reach)
            new_shapes = shapes + delta[3 * n : 3 * n + 3 * n_groups].reshape(n_groups, 3)
            new_shapes[:, [0, 2]] = np.maximum(new_shapes[:, [0, 2]], 1e-6)
            limit = 0.999 * np.sqrt(new_shapes[:, 0] * new_shapes[:, 2])
            new_shapes[:, 1] = np.clip(new_shapes[:, 1], -limit, limit)
            new_bg = bg + delta[3 * n + 3 * n_groups :]
            new_model, _ = problem.evaluate(new_amp, new_pos, new_shapes, new_bg, False)
            new_cost = cost_of(new_model, weight)
            if new_cost <= cost:
                step_ok = True
                break
            lam *= 10
        if not step_ok:
            converged = True  # no step lowers the cost: a minimum (to the damping's resolution)
            break
        decrease = (cost - new_cost) / max(cost, 1e-300)
        amp, pos, shapes, bg = new_amp, new_pos, new_shapes, new_bg
        lam = max(lam / 10, 1e-9)
        amp, bg = linear_part(amp, bg, weight)
        model, jac = problem.evaluate(amp, pos, shapes, bg, True)
        weight = keep / noise.variance(np, np.maximum(model, 0.0))
        cost = cost_of(model, weight)
        if decrease < tol:
            converged = True
            break
    _normal, columns_block = jac.normal(weight)
    dof = max(int(keep.sum()) - n_unknowns, 1)
    chi2 = cost / dof
    amp_err, pos_err = _schur_errors(columns_block, n, max(chi2, 1e-300))
    return JointFit(
        amplitude=amp,
        positions=pos,
        position_errors=pos_err,
        amplitude_errors=amp_err,
        shapes=shapes,
        background=bg,
        converged=converged,
        n_iter=done,
        reduced_chi2=chi2,
        parameters=dict(box_radius=len(problem.off) // 2, border_margin=margin, unknowns=n_unknowns, groups=n_groups),
    )


def joint_columns(image: np.ndarray, fit, start: np.ndarray, reach: float) -> tuple[np.ndarray, np.ndarray, dict]:
    """The joint fit started from a neighbour-aware one, as reported parameters and errors.

    Parameters
    ----------
    image : 2-D float64 array (host)
    fit : :class:`~usidgpu.atoms.neighbours.NeighbourFit`
        Its groups, noise model and fits are the start; a column whose fit was implausible starts
        at its start position with its group's median amplitude.
    start : (N, 2) the find positions
    reach : float
        How far a position may move from its start (px).

    Returns
    -------
    params, errors : (N, 7) reported parameters (:data:`~usidgpu.atoms.gaussian.PARAMETERS`):
        amplitude, position and their errors from the joint fit; widths and angle those of the
        column's kind (errors: the neighbour-aware fit's); background the fitted plane there
    parameters : dict
        What the fit did (iterations, χ², shapes, border margin).
    """
    from .neighbours import fitted_form

    p = fitted_form(fit.params)
    groups, reliable = fit.groups, fit.reliable
    # each kind's shape starts as its reliable columns' median; an unreliable column starts at
    # its find position with its kind's median amplitude
    for g in np.unique(groups):
        members = reliable & (groups == g)
        if members.any():
            p[~reliable & (groups == g), AMPLITUDE] = np.median(p[members, AMPLITUDE])
            p[groups == g, QA : QC + 1] = np.median(p[members, QA : QC + 1], axis=0)
    p[~reliable, Y], p[~reliable, X] = start[~reliable, 0], start[~reliable, 1]
    result = refine_joint(image, p, groups, fit.noise, reach)
    params = np.array(fit.params, dtype=np.float64, copy=True)
    errors = np.array(fit.errors, dtype=np.float64, copy=True)
    params[:, AMPLITUDE] = result.amplitude
    params[:, [Y, X]] = result.positions
    sx, sy, th = widths_and_angle(np, *(result.shapes[groups, k] for k in range(3)))
    params[:, SIGMA_X], params[:, SIGMA_Y], params[:, THETA] = sx, sy, th
    h, w = image.shape
    v = 2 * result.positions[:, 0] / max(h - 1, 1) - 1
    u = 2 * result.positions[:, 1] / max(w - 1, 1) - 1
    params[:, BACKGROUND] = result.background[0] + result.background[1] * v + result.background[2] * u
    errors[:, AMPLITUDE] = result.amplitude_errors
    errors[:, [Y, X]] = result.position_errors
    info = dict(
        joint_iterations=result.n_iter,
        joint_converged=result.converged,
        joint_reduced_chi2=result.reduced_chi2,
        joint_shapes=[
            dict(zip(("sigma_x", "sigma_y", "theta"), map(float, v)))
            for v in zip(*widths_and_angle(np, *result.shapes.T))
        ],  # fmt: skip
        **{f"joint_{k}": v for k, v in result.parameters.items()},
    )
    return params, errors, info
