"""Refine every atomic column at once: a batched Levenberg–Marquardt fit of 2-D Gaussians.

atomap and pycroscopy fit one column at a time in Python (a HyperSpy model or
``scipy.optimize.leastsq`` per atom); here the columns are a batch. Each column gets a disk of
pixels around its start position that stops halfway to its nearest neighbours (Voronoi-clipped,
so a neighbour's intensity never enters its fit), and all columns take their LM steps together:
residuals and Jacobians (N, 7, M), the 7 × 7 normal equations of every column by one batched
matrix product, all solved by one batched ``solve``. Each column keeps its own damping, accepts
or rejects its own step and stops on its own tolerance; converged columns leave the active set.

Three engines run this same iteration (same damping rule, bounds and stopping tests):

- ``array`` — the NumPy/CuPy code above, the reference of the other two;
- ``numba`` — each column's whole fit (pixels, start values, iteration, covariance, reported
  parameters) compiled into one function, columns spread over the CPU cores. NumPy's per-call
  overhead and its memory traffic through (N, 7, M) temporaries cap the array engine at about
  ten thousand fits per second on two cores; the compiled engine runs each pass over a
  column's pixels as SIMD code and fits about 20 times as many (see
  ``usidgpu/atoms/fit_numba.py`` and benchmarks/bench_atoms.py);
- ``kernel`` — ``kernels/fit_gaussian2d.cu`` on a GPU: one thread block per column keeps its
  pixels in shared memory and iterates without a round trip to the host, which the array
  engine on CuPy, with its many small kernel launches per iteration, cannot do. It fits in
  float64 (the array engine's iteration) or, on cards with slow double precision, in float32
  (see ``usidgpu/atoms/fit_kernel.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.spatial import cKDTree

from ..core.arrays import asnumpy
from ..core.device import Device, select_device
from ..core.errors import InvalidInput
from ..core.memory import memory_budget
from .fit_settings import (
    ERROR_RIDGE,
    LAMBDA_DOWN,
    LAMBDA_MAX,
    LAMBDA_START,
    LAMBDA_UP,
    POSITION_FREE,
    STEP_TOL,
    q_bounds,
)
from .gaussian import AMPLITUDE, PARAMETERS, QA, QB, QC, SIGMA_X, X, Y, model_and_jacobian, start_values, to_physical
from .windows import gather


@dataclass
class ColumnFit:
    """Fitted 2-D Gaussian of every column; positions (y, x) in pixels."""

    params: np.ndarray  #: (N, 7) in the order of :data:`~usidgpu.atoms.gaussian.PARAMETERS`
    errors: np.ndarray  #: (N, 7) one-sigma uncertainties from s²·(JᵀJ)⁻¹
    converged: np.ndarray  #: (N,) the step or cost change fell below the tolerance
    rms_residual: np.ndarray  #: (N,) root-mean-square residual over the fitted pixels
    n_iter: np.ndarray  #: (N,) iterations taken
    n_pixels: np.ndarray  #: (N,) pixels in each fit
    start: np.ndarray  #: (N, 2) start positions
    radius: float  #: fit disk radius (px)
    device: str = "cpu"
    engine: str = "array"
    parameters: dict = field(default_factory=dict)
    #: (N,) how many neighbouring columns' models were subtracted in each column's fit disk (those
    #: reaching above a tenth of the noise there); 0 everywhere with ``neighbours="none"``
    n_neighbours: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.n_neighbours is None:
            self.n_neighbours = np.zeros(len(self.params), dtype=np.int64)

    @property
    def with_neighbours(self) -> np.ndarray:
        """(N,) bool: the column was fitted with its neighbours' models subtracted."""
        return np.asarray(self.n_neighbours) > 0

    @property
    def positions(self) -> np.ndarray:
        """(N, 2) refined (y, x)."""
        return self.params[:, [Y, X]]

    @property
    def position_errors(self) -> np.ndarray:
        return self.errors[:, [Y, X]]

    def __len__(self) -> int:
        return len(self.params)

    def table(self) -> dict[str, np.ndarray]:
        """Column-wise table: every parameter, its error, convergence and residual."""
        out: dict[str, np.ndarray] = {}
        for i, name in enumerate(PARAMETERS):
            out[name] = self.params[:, i]
            out[f"{name}_error"] = self.errors[:, i]
        out["converged"] = self.converged
        out["rms_residual"] = self.rms_residual
        out["n_iter"] = self.n_iter
        out["n_pixels"] = self.n_pixels
        out["n_neighbours"] = np.asarray(self.n_neighbours)
        return out


ENGINES = ("auto", "array", "numba", "kernel")
#: Stopping tolerance of the single-column fit that the neighbour-aware fit starts from.
FIRST_TOL = 1e-6


def numba_available() -> bool:
    """Whether the compiled CPU engine can run (numba importable)."""
    import importlib.util

    return importlib.util.find_spec("numba") is not None


def choose_engine(engine: str, dev: Device) -> str:
    """Resolve ``auto`` and check that the engine fits the device.

    ``auto``: the CUDA kernel on a GPU; on the CPU the numba engine where numba is installed,
    else the NumPy array engine.
    """
    if engine not in ENGINES:
        raise InvalidInput(f"engine must be one of {ENGINES}, got {engine!r}")
    if engine == "auto":
        return "kernel" if dev.is_gpu else ("numba" if numba_available() else "array")
    if engine == "kernel" and not dev.is_gpu:
        raise InvalidInput("engine='kernel' is the CUDA kernel: it needs device='gpu'")
    if engine == "numba":
        if dev.is_gpu:
            raise InvalidInput("engine='numba' is the compiled CPU engine: use device='cpu'")
        if not numba_available():
            raise InvalidInput("engine='numba' needs numba (pip install 'usidgpu[fast]'); engine='array' needs nothing")
    return engine


def nearest_neighbour_distance(positions: np.ndarray) -> float:
    """Median distance from each position to its nearest other one."""
    pos = asnumpy(positions).astype(np.float64)
    if len(pos) < 2:
        raise InvalidInput("need at least two columns to infer their spacing; give radius explicitly")
    d, _ = cKDTree(pos).query(pos, k=2)
    if d[:, 1].min() < 1e-6:
        raise InvalidInput("duplicate start positions: each column must be given once")
    return float(np.median(d[:, 1]))


def fit_masks(xp: Any, positions: Any, grid: Any, inside: Any, radius: float, neighbours: Any) -> Any:
    """Window pixels of each column: inside the image, within ``radius`` of its start position,
    and not closer to a neighbouring column than to it (Voronoi cell).

    Parameters
    ----------
    neighbours : (N, K, 2)
        Start positions of each column's K nearest other columns (far away where fewer exist).
    """
    gy = grid[:, 0, :, None]  # (N, S, 1)
    gx = grid[:, 1, None, :]  # (N, 1, S)
    own = (gy - positions[:, 0, None, None]) ** 2 + (gx - positions[:, 1, None, None]) ** 2
    mask = inside & (own <= radius * radius)
    for k in range(neighbours.shape[1]):
        other = (gy - neighbours[:, k, 0, None, None]) ** 2 + (gx - neighbours[:, k, 1, None, None]) ** 2
        mask &= own <= other
    return mask


def _neighbours(positions: np.ndarray, radius: float) -> np.ndarray:
    """Every other column within 2·radius of each column: (N, K, 2), K the largest such count,
    padded with far-away points.

    Columns farther away cannot clip a fit disk of this radius (a pixel within r of its own
    column is then more than r from the other), so these are all the neighbours the Voronoi cut
    of :func:`fit_masks` needs. With numba a parallel grid search
    (:func:`usidgpu.atoms.fit_numba.neighbour_lists`), else one pair search over a KD-tree.

    Raises
    ------
    ValueError
        If two positions coincide (to 1e-6 px).
    """
    n = len(positions)
    if numba_available():
        from .fit_numba import neighbour_lists

        out, closest = neighbour_lists(positions, radius)
    else:
        # an unbalanced tree builds three times faster and answers a fixed-radius search as quickly
        tree = cKDTree(positions, balanced_tree=False, compact_nodes=False)
        pairs = tree.query_pairs(2.0 * radius, output_type="ndarray")
        close = np.square(positions[pairs[:, 0]] - positions[pairs[:, 1]]).sum(axis=1)
        closest = float(np.sqrt(close.min(initial=np.inf)))
        src = np.concatenate([pairs[:, 0], pairs[:, 1]])
        order = np.argsort(src, kind="stable")
        src, dst = src[order], np.concatenate([pairs[:, 1], pairs[:, 0]])[order]
        counts = np.bincount(src, minlength=n)
        slot = np.arange(len(src)) - np.repeat(np.cumsum(counts) - counts, counts)
        out = np.full((n, max(int(counts.max(initial=0)), 1), 2), 1e9)
        out[src, slot] = positions[dst]
    if closest < 1e-6:
        raise InvalidInput("duplicate start positions: each column must be given once")
    return out


def refine(
    image: Any,
    positions: Any,
    radius: float | None = None,
    max_iter: int = 100,
    tol: float = 1e-10,
    device: str | Device | None = None,
    engine: str = "auto",
    batch: int | None = None,
    precision: str = "auto",
    neighbours: str = "none",
    sweeps: int = 1,
) -> ColumnFit:
    """Fit an elliptical 2-D Gaussian (A, y0, x0, σx, σy, θ, background) to every column at once.

    Two fits. ``neighbours="none"`` (default): each column alone, on the pixels of a disk cut
    halfway to its neighbours (a Voronoi cell), unweighted — exact where the columns do not
    overlap, what per-column scripts do, and the fastest. ``neighbours="subtract"``: that fit,
    then each column refitted on the image minus its neighbours' fitted models (their own
    amplitudes and positions, the median shape of columns like them), on a disk of 2.5σ cut
    only where it comes nearer another column, weighted by the image's measured noise (shot
    noise + a constant) — :mod:`usidgpu.atoms.neighbours`. Use it where columns overlap (σ above
    about a tenth of the cell: a dim sublattice between bright columns, whose tails pull its
    positions by more than their statistical error) and wherever the shot noise varies across a
    column (peaks ten times their background, where the unweighted fit loses 5–15 %): on the
    two-sublattice test images of issue 19 it brings every sublattice's position RMS to within
    a few percent of the Cramér–Rao bound, where the single-column fit is 10–45 % above it. It
    costs about twice the single-column fit. :func:`usidgpu.atoms.analyze` uses it by default.

    Parameters
    ----------
    image : 2-D array
    positions : (N, 2) array of (y, x) start positions, or the result of
        :func:`~usidgpu.atoms.find.find_columns` (its spacing then sets the default radius).
    radius : float, optional
        Fit-disk radius in pixels. ``neighbours="none"``: default half the column spacing (the disk
        ends halfway to the nearest neighbour), and pixels closer to another column are excluded
        whatever the radius. ``"subtract"``: the single-column fit uses that default, the sweeps
        a full disk of max(half the spacing, 2.5 × the median fitted width); a radius given here
        is used by both.
    max_iter : int
        Levenberg–Marquardt iterations at most.
    tol : float
        A column converges when an accepted step lowers its cost by less than ``tol`` (relative),
        or when a step moves the centre by at most 1e-6 px and every other parameter by at most
        1e-6·(1 + |value|).
    device : {"auto", "cpu", "gpu"}, optional
    engine : {"auto", "array", "numba", "kernel"}
        ``array``: the batched NumPy/CuPy code (the reference of the others); ``numba``: the
        same iteration compiled per column, columns in parallel over the CPU cores (needs numba);
        ``kernel``: the CUDA kernel (GPU only); ``auto``: the kernel on a GPU, numba on the CPU
        where installed, else the array code.
    batch : int, optional
        Columns per batch on the array and kernel paths (default: about 64 MB of Jacobians on the
        CPU; on a GPU the memory budget — a share of its free memory, or ``USIDGPU_MEMORY`` — up
        to 8 GB); the numba engine keeps no per-pixel arrays and fits all columns in one call.
    precision : {"auto", "float64", "float32"}
        Arithmetic of the CUDA kernel: ``auto`` takes float32 on cards whose double precision is
        slow (an FP32:FP64 throughput ratio of 8 or more, e.g. GeForce/RTX), else float64. The
        array and numba engines fit in float64 (``float32`` is refused there).
    neighbours : {"none", "subtract", "joint", "auto"}
        Whether each column is fitted on the image minus its neighbours' models (see above), or
        ``"auto"``: that, then the joint fit where the columns' median width reaches
        :data:`JOINT_ABOVE` of their neighbour distance (``parameters["neighbours_rule"]`` says
        which and why), or ``"joint"``: after that, every column fitted at once as one model of the image
        (:mod:`usidgpu.atoms.joint`: shared widths per kind of column, a plane background, the
        border band left out) — for columns wider than about a fifth of the cell, where the
        subtraction leaves a dim sublattice several times above the Cramér–Rao bound. It costs
        about a second per thousand columns (a sparse Levenberg–Marquardt on the CPU, whatever the
        device), against milliseconds for the others.
        ``ColumnFit.n_neighbours`` says how many neighbours' models reached into each column's fit
        disk (above a tenth of the noise) and were subtracted there.
    sweeps : int
        ``neighbours="subtract"``: subtract-and-refit rounds (default 1; a second refits only the
        columns that moved, and is seldom better — see :mod:`usidgpu.atoms.neighbours`).

    Returns
    -------
    ColumnFit
        With ``neighbours="subtract"``, ``n_iter`` counts the iterations of every round,
        ``rms_residual`` is that of the image minus the neighbours, and ``parameters`` hold the
        noise model (``noise``: variance = alpha + beta · mean) and the number of ``sweeps``.
    """
    if neighbours not in ("subtract", "none", "joint", "auto"):
        raise InvalidInput(f"neighbours must be 'none', 'subtract', 'joint' or 'auto', got {neighbours!r}")
    if not (isinstance(sweeps, (int, np.integer)) and sweeps >= 1):
        raise InvalidInput(f"sweeps must be a positive integer, got {sweeps!r}")
    dev = select_device(device)
    xp = dev.xp
    engine = choose_engine(engine, dev)
    if engine == "kernel":
        from .fit_kernel import choose_precision

        precision = choose_precision(precision)
    elif precision == "float32":
        raise InvalidInput(f"precision='float32' is the CUDA kernel's; the {engine} engine fits in float64")
    elif precision not in ("auto", "float64"):
        raise InvalidInput(f"precision must be 'auto', 'float64' or 'float32', got {precision!r}")
    else:
        precision = "float64"
    spacing = getattr(positions, "spacing", None)
    # start positions may come as device arrays; the neighbour search runs on the host
    start = asnumpy(getattr(positions, "positions", positions)).astype(np.float64)
    img = asnumpy(image) if not dev.is_gpu else image
    if np.ndim(img) != 2:
        raise InvalidInput(f"refine needs a 2-D image, got shape {np.shape(img)}")
    if start.ndim != 2 or start.shape[1] != 2:
        raise InvalidInput(f"positions must be an (N, 2) array of (y, x), got shape {start.shape}")
    if len(start) == 0:
        empty = np.zeros((0, 7))
        return ColumnFit(empty, empty, np.zeros(0, bool), np.zeros(0), np.zeros(0, int), np.zeros(0, int), start, 0.0)
    h, w = np.shape(img)
    if not ((start[:, 0] >= -0.5) & (start[:, 0] < h - 0.5) & (start[:, 1] >= -0.5) & (start[:, 1] < w - 0.5)).all():
        raise InvalidInput("every start position must lie inside the image")
    if not bool(xp.isfinite(xp.asarray(img)).all()):
        raise InvalidInput("the image contains NaN or infinite values")
    radius_given = radius
    if radius is None:
        radius = 0.5 * (spacing if spacing is not None else nearest_neighbour_distance(start))
    radius = float(radius)
    if not (radius >= 1 and math.isfinite(radius)):
        raise InvalidInput(f"the fit radius must be a finite number of at least 1 px, got {radius}")
    near = _neighbours(start, radius)  # also refuses duplicate positions
    img_dev = xp.asarray(img, dtype=np.float64)
    # the neighbour-aware fit refits every column: its first fit only has to be a model of the
    # neighbours, and a relative cost change of 1e-6 moves a position by < 1 % of its error
    tol_first = max(tol, FIRST_TOL) if neighbours != "none" else tol
    if engine == "numba":  # no per-pixel arrays: one call for all columns
        from .fit_numba import fit_numba

        parts = [_finish(np, *fit_numba(img_dev, start, near, radius, max_iter, tol_first, ERROR_RIDGE))]
    else:
        if batch is None:
            # ~(N, 7, M) Jacobians three times over: 64 MB keeps the CPU array engine in cache;
            # a GPU takes far larger batches (a launch per batch and step costs the same for any
            # size), up to a share of its free memory
            budget = min(memory_budget(device=dev), 8e9) if dev.is_gpu else 64e6
            batch = max(1, int(budget // ((2 * int(math.ceil(radius)) + 1) ** 2 * 7 * 8 * 3)))
        parts = [
            _fit_batch(
                xp, img_dev, start[i : i + batch], near[i : i + batch], radius, engine, max_iter, tol_first, precision
            )
            for i in range(0, len(start), batch)
        ]
    params, errors, conv, rms, iters, npx = (np.concatenate([p[j] for p in parts]) for j in range(6))
    extra: dict[str, Any] = {"neighbours": neighbours}
    n_neighbours = None
    radius0 = radius
    if neighbours != "none":
        from .neighbours import default_radius, refine_neighbours

        fit_radius = default_radius(params, radius) if radius_given is None else radius
        if batch is None:
            batch = max(1, int(64e6 // ((2 * int(math.ceil(fit_radius)) + 1) ** 2 * 7 * 8 * 3)))
        joint = refine_neighbours(
            xp, img_dev, start, (params, errors, conv, iters, rms, npx), radius0, fit_radius, engine, max_iter, tol,
            precision, batch, sweeps, near=near if fit_radius == radius0 else None,
        )  # fmt: skip
        params, errors, conv, iters, rms, npx = (
            joint.params, joint.errors, joint.converged, joint.n_iter, joint.rms, joint.n_pixels
        )  # fmt: skip
        n_neighbours, radius = joint.n_neighbours, fit_radius
        extra.update(joint.parameters, first_radius=radius0)
        if neighbours == "auto":
            neighbours, rule = _choose_joint(params, joint.reliable, start)
            extra.update(neighbours=neighbours, neighbours_rule=rule)
        if neighbours == "joint":
            from .joint import JointNotApplicable, joint_columns

            try:
                params, errors, info = joint_columns(asnumpy(img_dev), joint, start, radius0)
                extra.update(info)
            except JointNotApplicable as exc:  # the neighbour-aware fit stands, saying why
                extra.update(neighbours="subtract", joint_skipped=str(exc))
    return ColumnFit(
        params=params,
        errors=errors,
        converged=conv,
        rms_residual=rms,
        n_iter=iters,
        n_pixels=npx,
        start=start,
        radius=radius,
        device=dev.kind,
        engine=engine,
        parameters=dict(
            radius=radius,
            max_iter=max_iter,
            tol=tol,
            engine=engine,
            precision=precision,
            model="elliptical Gaussian + background",
            **extra,
        ),
        n_neighbours=n_neighbours,
    )


#: ``neighbours="auto"`` fits all columns jointly where their median width (σ of the major axis)
#: is at least this fraction of the nearest-neighbour distance: there the subtraction left the
#: dim columns of the two-sublattice grid (benchmarks/bench_atoms.py) up to 4 × the Cramér–Rao
#: bound at σ = 0.18 × the cell (0.25 × the neighbour distance), the joint fit within 1.35 × ...
JOINT_ABOVE = 0.2
#: ... unless there are more columns than this (the joint fit takes about 1 s per thousand on
#: two cores, 7.5 s for 8065 on a 1024² image; beyond, tens of seconds and more).
JOINT_MAX_COLUMNS = 20_000


def _choose_joint(params: np.ndarray, reliable: Any, start: np.ndarray) -> tuple[str, str]:
    """``neighbours="auto"``: "joint" or "subtract", and why."""
    widths = params[np.asarray(reliable, dtype=bool), SIGMA_X] if reliable is not None else params[:, SIGMA_X]
    widths = widths[np.isfinite(widths)]
    if len(start) < 2 or not len(widths):
        return "subtract", "too few columns to compare their widths with their spacing"
    ratio = float(np.median(widths)) / nearest_neighbour_distance(start)
    if ratio < JOINT_ABOVE:
        return "subtract", f"median width {ratio:.2f} × the neighbour distance, below {JOINT_ABOVE}"
    if len(start) > JOINT_MAX_COLUMNS:
        return "subtract", f"width {ratio:.2f} × the neighbour distance, but {len(start)} columns > {JOINT_MAX_COLUMNS}"
    return "joint", f"median width {ratio:.2f} × the neighbour distance, at least {JOINT_ABOVE}"


def _project(xp: Any, p: Any, start: Any, radius: float) -> Any:
    """Keep parameters physical: amplitude > 0, centre within the fit disk's square, widths in
    [SIGMA_MIN, 2·radius] on both axes of the quadratic form, which stays positive definite
    (|qb| ≤ 0.999·√(qa·qc))."""
    q_lo, q_hi = q_bounds(radius)
    p[:, AMPLITUDE] = xp.maximum(p[:, AMPLITUDE], 1e-12)
    p[:, Y] = xp.clip(p[:, Y], start[:, 0] - radius, start[:, 0] + radius)
    p[:, X] = xp.clip(p[:, X], start[:, 1] - radius, start[:, 1] + radius)
    p[:, QA] = xp.clip(p[:, QA], q_lo, q_hi)
    p[:, QC] = xp.clip(p[:, QC], q_lo, q_hi)
    limit = 0.999 * xp.sqrt(p[:, QA] * p[:, QC])
    p[:, QB] = xp.clip(p[:, QB], -limit, limit)
    return p


def compact_pixels(xp: Any, values: Any, mask: Any, grid: Any) -> tuple[Any, Any, Any, Any]:
    """The fit pixels of every column packed to the front of a short row.

    A disk of radius r uses about π/4 of its (2r+1)² box; packing the masked pixels first and
    cutting every row at the largest count drops the rest from all later work.

    Returns
    -------
    yy, xx, data, weight : (N, M) with M the largest number of fit pixels of any column
    """
    n, s = values.shape[0], values.shape[1]
    flat = mask.reshape(n, -1)
    m = max(int(flat.sum(axis=1).max()), 1)
    order = xp.argsort((~flat).astype(np.int8), axis=1, kind="stable")[:, :m]  # masked pixels first
    yy = xp.broadcast_to(grid[:, 0, :, None], (n, s, s)).reshape(n, -1)
    xx = xp.broadcast_to(grid[:, 1, None, :], (n, s, s)).reshape(n, -1)
    take = xp.take_along_axis
    return (
        take(yy, order, axis=1),
        take(xx, order, axis=1),
        take(values.reshape(n, -1), order, axis=1),
        take(flat, order, axis=1).astype(np.float64),
    )


def prepare(xp: Any, image: Any, start: Any, neighbours: Any, radius: float) -> tuple[Any, ...]:
    """Fit pixels (packed), data and start parameters of a batch of columns.

    Returns
    -------
    yy, xx, data, weight : (N, M)
    p0 : (N, 7) start parameters, already within the bounds
    """
    start = xp.asarray(start)
    values, inside, grid = gather(xp, image, start, int(math.ceil(radius)))
    mask = fit_masks(xp, start, grid, inside, radius, xp.asarray(neighbours))
    yy, xx, data, weight = compact_pixels(xp, values, mask, grid)
    p0 = _project(xp, start_values(xp, data, weight, start), start, radius)
    return yy, xx, data, weight, p0


def lm_array(
    xp: Any, yy: Any, xx: Any, data: Any, weight: Any, p0: Any, start: Any, radius: float, max_iter: int, tol: float
):
    """Batched Levenberg–Marquardt, all columns of the batch in each array operation.

    Returns
    -------
    p : (N, 7), converged : (N,) bool, n_iter : (N,) int
    """
    n = data.shape[0]
    p = p0.copy()
    lam = xp.full(n, LAMBDA_START)
    n_iter = xp.zeros(n, dtype=np.int64)
    converged = xp.zeros(n, dtype=bool)
    f, jac = model_and_jacobian(xp, p, yy, xx)
    res = (f - data) * weight
    jac *= weight[:, None, :]
    cost = (res * res).sum(axis=1)
    active = xp.arange(n)
    eye = xp.eye(7)
    free = xp.asarray(POSITION_FREE)  # on the device once: CuPy refuses NumPy operands
    for _ in range(max_iter):
        if active.size == 0:
            break
        ja, ra, pa = jac[active], res[active], p[active]
        jtj = ja @ ja.transpose(0, 2, 1)  # (n, 7, 7): one small GEMM per column
        grad = (ja @ ra[:, :, None])[..., 0]
        diag = xp.diagonal(jtj, axis1=1, axis2=2)
        # Marquardt scaling, floored so a parameter the data do not constrain (θ of a round
        # column) still gets a solvable, heavily damped equation
        scale = diag + 1e-9 * diag.max(axis=1, keepdims=True) + 1e-30
        lhs = jtj + (lam[active][:, None] * scale)[:, :, None] * eye
        step = -xp.linalg.solve(lhs, grad[..., None])[..., 0]
        trial = _project(xp, pa + step, start[active], radius)
        wa = weight[active]
        f_t, j_t = model_and_jacobian(xp, trial, yy[active], xx[active])
        r_t = (f_t - data[active]) * wa
        c_t = (r_t * r_t).sum(axis=1)
        c_old = cost[active]
        better = c_t < c_old
        small_step = (xp.abs(trial - pa) <= STEP_TOL * (1 + free * xp.abs(pa))).all(axis=1)
        small_gain = better & ((c_old - c_t) <= tol * c_old)
        n_iter[active] += 1
        # accepted steps replace the state
        acc = active[better]
        p[acc] = trial[better]
        res[acc] = r_t[better]
        jac[acc] = j_t[better] * wa[better][:, None, :]
        cost[acc] = c_t[better]
        lam[active] = xp.where(better, xp.maximum(lam[active] * LAMBDA_DOWN, 1e-12), lam[active] * LAMBDA_UP)
        done = small_gain | small_step | (lam[active] > LAMBDA_MAX)
        converged[active[done]] = (small_gain | small_step)[done]
        active = active[~done]
    return p, converged, n_iter


def covariance(xp: Any, p: Any, yy: Any, xx: Any, data: Any, weight: Any) -> tuple[Any, Any, Any]:
    """Covariance of the fitted parameters, RMS residual and pixel count of every column.

    The covariance is s²·(JᵀWJ + ε·I)⁻¹ at the solution, s² the (weighted) residual variance and
    ε = ERROR_RIDGE × the largest diagonal entry: negligible for a well-determined column, while a
    parameter the data do not determine gets a huge error instead of a singular matrix. Weights
    are 0/1 masks in the single-column fit and noise weights (square roots of inverse variances)
    in the neighbour-aware one; the pixel count is that of the nonzero weights and the RMS
    residual is unweighted either way.
    """
    f, jac = model_and_jacobian(xp, p, yy, xx)
    used = weight > 0
    diff = (f - data) * used
    res = diff * weight
    jac *= weight[:, None, :]
    cost = (res * res).sum(axis=1)
    jtj = jac @ jac.transpose(0, 2, 1)
    npx = used.sum(axis=1)
    dof = xp.maximum(npx - 7, 1)
    ridge = ERROR_RIDGE * xp.diagonal(jtj, axis1=1, axis2=2).max(axis=1) + 1e-300
    cov = xp.linalg.inv(jtj + ridge[:, None, None] * xp.eye(7)) * (cost / dof)[:, None, None]
    rms = xp.sqrt((diff * diff).sum(axis=1) / xp.maximum(npx, 1))
    return cov, rms, npx.astype(np.int64)


def _fit_batch(xp, image, start_np, neighbours_np, radius, engine, max_iter, tol, precision="float64"):
    """Fit one batch of columns with the array or kernel engine; everything returned as NumPy."""
    start = xp.asarray(start_np)
    yy, xx, data, weight, p0 = prepare(xp, image, start, neighbours_np, radius)
    if engine == "array":
        p, conv, iters = lm_array(xp, yy, xx, data, weight, p0, start, radius, max_iter, tol)
    else:
        from .fit_kernel import lm_kernel

        p, conv, iters = lm_kernel(yy, xx, data, weight, p0, start, radius, max_iter, tol, precision)
    cov, rms, npx = covariance(xp, p, yy, xx, data, weight)
    out = _finish(xp, *to_physical(xp, p, cov), conv, iters, rms, npx)
    if (out[4] < 0).any():  # blocks that refused to run (see the kernel's launch contract)
        raise RuntimeError("the column-fit kernel refused its launch configuration; no column was fitted")
    return out


def _finish(xp, params, errors, conv, iters, rms, npx):
    """The reported results of a fitted batch, everything as NumPy."""
    # 7 parameters need more than 7 pixels: with fewer the fit interpolates and its errors are
    # meaningless (a perfect fit has no residual), so such columns do not count as converged
    few = npx <= 7
    conv = conv & ~few
    errors = xp.where(few[:, None], xp.inf, errors)
    return tuple(asnumpy(a) for a in (params, errors, conv, rms, iters, npx))
