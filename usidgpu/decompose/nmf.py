"""Non-negative matrix factorization ``X ≈ W·H``, streamed: one pass over the data per iteration.

Each iteration updates the abundances ``W`` block by block (they are rows of the data's
positions) and accumulates ``WᵀX`` and ``WᵀW`` in the same pass; ``H`` is then updated from
those small matrices. Two update rules, both as scikit-learn's solvers (Frobenius loss, no
regularization), so results can be compared iteration for iteration:

``hals`` (default)
    Hierarchical alternating least squares — scikit-learn's ``solver="cd"`` coordinate descent:
    each column of ``W``, then each row of ``H``, is set to its non-negative least-squares
    optimum in turn.
``mu``
    Lee–Seung multiplicative updates — scikit-learn's ``solver="mu"``.

The reconstruction error ``‖X − WH‖_F`` comes from the accumulated matrices
(``‖X‖² − 2⟨WᵀX, H⟩ + ⟨WᵀW, HHᵀ⟩``) at no extra cost; convergence is tested as in
scikit-learn every 10 iterations: ``(previous − current) / initial < tol``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..core.arrays import asnumpy
from ..core.device import Device, select_device
from ..core.errors import InvalidInput
from ..core.linalg import sum_squares
from ..core.memory import memory_budget
from .results import NMFResult
from .source import BlockSource, describe_source, matrix_shape, work_dtype
from .svd import svd

EPS = 1e-12  # guards the multiplicative updates against 0/0, as scikit-learn's EPSILON


def _data_stats(src: BlockSource) -> tuple[float, float, float, tuple[int, int]]:
    """Minimum (and where), mean and ‖X‖²_F in one pass.

    Each block's figures stay on the device and come to the host together after the pass: one
    synchronization instead of several per block.
    """
    xp = src.xp
    starts, per_block = [], []
    for a, _b, x in src.blocks("NMF: checking the data"):
        starts.append(a)
        per_block.append(
            xp.stack(
                [
                    x.min().astype(np.float64),
                    xp.argmin(x).astype(np.float64),
                    x.sum(dtype=np.float64),
                    sum_squares(xp, x).astype(np.float64),
                ]
            )
        )
    stats = asnumpy(xp.stack(per_block))  # (blocks, 4)
    i = int(np.argmin(stats[:, 0]))
    flat = int(stats[i, 1])
    n = src.shape[1]
    where = (starts[i] + flat // n, flat % n)
    return float(stats[i, 0]), float(stats[:, 2].sum()) / (src.shape[0] * n), float(stats[:, 3].sum()), where


def _nndsvd(src: BlockSource, k: int, mean: float, variant: str, budget: int, work: np.dtype) -> tuple:
    """NNDSVD initialization (Boutsidis & Gallopoulos 2008) from a streamed SVD of the same
    source; ``nndsvda`` fills the zeros with the data mean, as scikit-learn does."""
    r = svd(src, k, device=src.device, budget=budget)
    u, s, v = r.U, r.S.astype(np.float64), r.V
    m, n = u.shape[0], v.shape[1]
    w = np.zeros((m, k), dtype=work)
    h = np.zeros((k, n), dtype=work)
    w[:, 0] = np.sqrt(s[0]) * np.abs(u[:, 0])
    h[0] = np.sqrt(s[0]) * np.abs(v[0])
    for j in range(1, k):
        x, y = u[:, j], v[j]
        xp_, yp_ = np.maximum(x, 0), np.maximum(y, 0)
        xn_, yn_ = np.abs(np.minimum(x, 0)), np.abs(np.minimum(y, 0))
        xpn, ypn = np.linalg.norm(xp_), np.linalg.norm(yp_)
        xnn, ynn = np.linalg.norm(xn_), np.linalg.norm(yn_)
        mp, mn = xpn * ypn, xnn * ynn
        if mp > mn:
            uu, vv, sigma = xp_ / max(xpn, EPS), yp_ / max(ypn, EPS), mp
        else:
            uu, vv, sigma = xn_ / max(xnn, EPS), yn_ / max(ynn, EPS), mn
        lbd = np.sqrt(s[j] * sigma)
        w[:, j] = lbd * uu
        h[j] = lbd * vv
    w[w < EPS] = 0
    h[h < EPS] = 0
    if variant == "nndsvda":
        w[w == 0] = mean
        h[h == 0] = mean
    return w.astype(work), h.astype(work)


def _hals_sweep(xp: Any, factor: Any, cross: Any, gram_: Any) -> None:
    """One HALS sweep over the columns of ``factor`` (rows × k) in place:
    ``factor[:, j] ← max(0, factor[:, j] + (cross[:, j] − factor · gram_[:, j]) / gram_[j, j])``,
    columns whose ``gram_[j, j]`` is not positive left as they are.

    The test of ``gram_[j, j]`` is an element-wise select, not an ``if``: on a GPU an ``if`` on a
    device value would stop the host for every column of every block."""
    for j in range(factor.shape[1]):
        hess = gram_[j, j]
        positive = hess > 0
        grad = factor @ gram_[:, j] - cross[:, j]
        updated = xp.maximum(factor[:, j] - grad / xp.where(positive, hess, 1), 0)
        factor[:, j] = xp.where(positive, updated, factor[:, j])


def nmf(
    data: Any,
    k: int,
    solver: str = "hals",
    init: str | tuple[Any, Any] = "nndsvda",
    max_iter: int = 200,
    tol: float = 1e-4,
    device: str | Device | None = None,
    budget: int | str | None = None,
    random_state: Any = 0,
    progress: bool = False,
) -> NMFResult:
    """Non-negative matrix factorization of a Main dataset or array, streamed.

    Parameters
    ----------
    data : MainDataset or array-like, shape (positions, spectroscopic points), non-negative
    k : int
        Number of components.
    solver : {"hals", "mu"}
        Coordinate descent (scikit-learn's ``cd``) or multiplicative updates (``mu``).
    init : {"nndsvda", "nndsvd", "random"} or (W, H)
        Initial factors; a pair gives them explicitly (scikit-learn's ``init="custom"``).
    max_iter : int
    tol : float
        Relative decrease of the error, checked every 10 iterations; 0 runs all ``max_iter``.
    device, budget, random_state, progress
        As for :func:`usidgpu.svd`.

    Returns
    -------
    NMFResult
        ``W`` (m × k), ``H`` (k × n), ``reconstruction_err``, ``errors`` per iteration.

    Raises
    ------
    ValueError
        For data with negative values (the message says the minimum and where it is) or
        complex data.
    """
    if solver not in ("hals", "mu"):
        raise InvalidInput(f"solver must be 'hals' or 'mu', got {solver!r}")
    if not isinstance(max_iter, (int, np.integer)) or max_iter < 1:
        raise InvalidInput(f"max_iter must be a positive integer, got {max_iter!r}")
    (m, n), dtype = matrix_shape(data)
    if not isinstance(k, (int, np.integer)) or not 1 <= k <= min(m, n):
        raise InvalidInput(f"k must be an integer in [1, {min(m, n)}], got {k!r}")
    work = work_dtype(dtype)
    if work.kind == "c":
        raise InvalidInput("NMF needs real, non-negative data; these data are complex (take the amplitude first)")
    dev = select_device(device)
    total_budget = memory_budget(budget, dev)
    reserve = (m * k + 4 * k * n + 4 * k * k) * 8
    src = BlockSource(data, dev, total_budget, reserve=reserve, progress=progress)
    xp = src.xp
    lowest, mean, norm_sq, where = _data_stats(src)
    if not (np.isfinite(lowest) and np.isfinite(mean) and np.isfinite(norm_sq)):
        name = src.main.name if src.main is not None else "the data"
        raise InvalidInput(f"{name} contains NaN or infinite values; NMF needs finite, non-negative data")
    if lowest < 0:
        name = src.main.name if src.main is not None else "the data"
        raise InvalidInput(
            f"NMF needs non-negative data, but {name} has values down to {lowest:g} "
            f"(position {where[0]}, point {where[1]}); shift or clip the data first"
        )
    if isinstance(init, tuple):
        w0, h0 = (np.asarray(asnumpy(a), dtype=work) for a in init)
        if w0.shape != (m, k) or h0.shape != (k, n):
            raise InvalidInput(f"init=(W, H) needs shapes ({m}, {k}) and ({k}, {n}), got {w0.shape} and {h0.shape}")
        if (w0 < 0).any() or (h0 < 0).any() or not (np.isfinite(w0).all() and np.isfinite(h0).all()):
            raise InvalidInput("init=(W, H) must be finite and non-negative")
        init_name = "custom"
    elif init in ("nndsvd", "nndsvda"):
        w0, h0 = _nndsvd(src, k, mean, init, total_budget, work)
        init_name = init
    elif init == "random":
        rng = np.random.default_rng(random_state)
        avg = np.sqrt(mean / k)
        h0 = (avg * np.abs(rng.standard_normal((k, n)))).astype(work)
        w0 = (avg * np.abs(rng.standard_normal((m, k)))).astype(work)
        init_name = "random"
    else:
        raise InvalidInput(f"init must be 'nndsvda', 'nndsvd', 'random' or a (W, H) pair, got {init!r}")
    w = xp.array(w0, copy=True)  # updated in place: never the caller's arrays
    h = xp.array(h0, copy=True)
    pending: list[Any] = []  # errors² of the iterations since the last check, on the device
    errors: list[float] = []
    initial = previous = None
    it = 0
    for it in range(1, max_iter + 1):
        hht = h @ h.T
        wtx = xp.zeros((k, n), dtype=np.float64)
        wtw = xp.zeros((k, k), dtype=np.float64)
        for a, b, x in src.blocks(f"NMF iteration {it}"):
            wb = w[a:b]
            xht = x @ h.T
            if solver == "hals":
                _hals_sweep(xp, wb, xht, hht)
            else:
                wb *= xht / xp.maximum(wb @ hht, EPS)
            wtx += (wb.T @ x).astype(np.float64)
            wtw += (wb.T @ wb).astype(np.float64)
        wtx_w, wtw_w = wtx.astype(work), wtw.astype(work)
        if solver == "hals":
            ht = h.T.copy()
            _hals_sweep(xp, ht, wtx_w.T, wtw_w)
            h = xp.ascontiguousarray(ht.T)
        else:
            h = h * (wtx_w / xp.maximum(wtw_w @ h, EPS))
        h64 = h.astype(np.float64)
        pending.append(norm_sq - 2 * xp.sum(wtx * h64) + xp.sum(wtw * (h64 @ h64.T)))
        # the errors come to the host only when the stopping rule reads them (every 10
        # iterations) and at the end: one synchronization per check, not two per iteration
        if (tol > 0 and it % 10 == 0) or it == 1:
            errors.extend(np.sqrt(np.maximum(asnumpy(xp.stack(pending)), 0.0)).tolist())
            pending = []
            err = errors[-1]
            if initial is None:
                initial = previous = err
            if tol > 0 and it % 10 == 0:
                if (previous - err) / max(initial, EPS) < tol:
                    break
                previous = err
    if pending:
        errors.extend(np.sqrt(np.maximum(asnumpy(xp.stack(pending)), 0.0)).tolist())
    params = dict(num_components=k, solver=solver, init=init_name, max_iter=max_iter, tol=tol, engine="usidgpu")
    return NMFResult(
        W=asnumpy(w),
        H=asnumpy(h),
        reconstruction_err=errors[-1] if errors else float("nan"),
        n_iter=it,
        errors=np.asarray(errors),
        **describe_source(src, parameters=params),
    )
