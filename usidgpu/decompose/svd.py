"""Truncated SVD and PCA streamed over the rows of a matrix, on NumPy or CuPy.

Methods
    ``gram``
        One pass accumulates the Gram matrix of the smaller side — ``XᴴX`` (n × n) for tall
        data, ``XXᴴ`` (m × m) for wide data, read by column slabs — in float64; its top-k
        eigenpairs give ``V`` (or ``U``) and ``S``; a second pass projects the data for the other
        factor. Exact up to rounding, fastest while the smaller side is at most a few thousand.
        Forming the Gram matrix squares the condition number: a singular value ``S[j]`` comes
        out with a relative error of about ``1e-16 · (S[0] / S[j])²`` (float64 accumulation),
        which is far below the noise for the leading components of measured data; products are
        formed from blocks shifted by a provisional mean, so float32 data with a large offset
        lose nothing more.
    ``randomized``
        Halko–Martinsson–Tropp range finder with power iterations: each iteration is one pass
        that applies ``XᴴX`` to an n × (k + oversamples) block (with a QR in between), and a
        last pass forms ``X · Z``. For data whose both sides are large.
    ``exact``
        LAPACK/cuSOLVER SVD of the whole matrix; only for data that fit in memory.
    ``auto``
        ``gram`` when the smaller side's Gram matrix fits comfortably (≤ 8192), else
        ``randomized``; ``exact`` only when asked for. The choice and its reason are returned
        (``result.method``, ``result.parameters['method_reason']``).

Centring (PCA) never materializes ``X − mean``: the Gram matrix is corrected by ``m·μμᴴ``
and the randomized passes by the same rank-one term.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from ..core.arrays import asnumpy
from ..core.device import Device
from ..core.errors import BudgetError, InvalidInput
from ..core.linalg import (
    acc_dtype,
    column_sums,
    gram,
    normalize_signs,
    orthonormalize,
    sum_squares,
    svd_small,
    top_eigh,
)
from ..core.memory import format_bytes
from .results import PCAResult, SVDResult
from .source import BlockSource, describe_source, matrix_shape, resolve_engine, work_dtype

log = logging.getLogger("usidgpu")

METHODS = ("auto", "gram", "randomized", "exact")
#: Largest Gram matrix side ``auto`` accepts (an 8192² float64 matrix is 512 MiB).
GRAM_MAX_SIDE = 8192


def _reserve(method: str, m: int, n: int, k: int, l: int, work: np.dtype) -> int:
    """Bytes each method keeps besides the streamed blocks."""
    acc = acc_dtype(work).itemsize
    out = m * k * work.itemsize + k * n * work.itemsize + 4 * n * acc  # U, V, mean, column sums
    if method == "gram":
        side = min(m, n)
        return out + 3 * side * side * acc  # Gram matrix, the eigensolver's copy and eigenvectors
    if method == "randomized":
        return out + 4 * n * l * acc + m * l * work.itemsize + min(m * l, 2**20) * acc  # Z and its QR, Y, a chunk of Y
    return out + 3 * m * n * work.itemsize  # exact: the matrix, a copy and the factors


def choose_method(m: int, n: int, k: int, budget: int, work: np.dtype, slabs_reread: bool = False) -> tuple[str, str]:
    """The method ``auto`` picks, and why.

    ``slabs_reread``: the data are wide, stay on disk and are chunked across many columns, so
    the column slabs of the wide Gram method would decompress the whole file once per slab.
    """
    side = min(m, n)
    l = min(k + 10, side)
    need = {meth: _reserve(meth, m, n, k, l, work) for meth in ("gram", "randomized")}
    which = "XᴴX" if n <= m else "XXᴴ"
    if side <= GRAM_MAX_SIDE and need["gram"] <= budget // 2 and not (n > m and slabs_reread):
        return "gram", (
            f"gram: the smaller side ({side}) gives a {side}×{side} {which} "
            f"({format_bytes(side * side * 8)}) that fits the budget ({format_bytes(budget)})"
        )
    if need["randomized"] <= budget // 2:
        why = (
            "the data are wide, chunked across columns and larger than memory"
            if slabs_reread
            else f"a {side}×{side} Gram matrix would not fit the budget ({format_bytes(budget)}) "
            f"or exceeds {GRAM_MAX_SIDE}"
        )
        return "randomized", f"randomized: {why}"
    best = min(need, key=need.get)
    if need[best] < budget:
        return best, f"{best}: the leaner of the two streamed methods within the budget ({format_bytes(budget)})"
    raise BudgetError(
        f"neither streamed SVD of a {m}×{n} matrix with k={k} fits the memory budget ({format_bytes(budget)}): "
        f"gram needs {format_bytes(need['gram'])}, randomized {format_bytes(need['randomized'])}"
    )


def _slabs_reread(data: Any, m: int, n: int, budget: int, work: np.dtype) -> bool:
    """Wide data that would stay on disk, in chunks spanning many columns (see choose_method)."""
    from ..usid.dataset import MainDataset

    if n <= m or not isinstance(data, MainDataset) or data.chunks is None:
        return False
    fits = m * n * work.itemsize <= budget // 4  # would be kept in memory after one pass
    return not fits and data.chunks[1] > 1


def _factorize(
    data: Any,
    k: int,
    method: str,
    device: Any,
    budget: Any,
    n_iter: Any,
    oversamples: int,
    random_state: Any,
    center: bool,
    progress: bool,
) -> tuple[BlockSource, dict[str, Any]]:
    """Shared body of :func:`svd` and :func:`pca`."""
    if method not in METHODS:
        raise InvalidInput(f"method must be one of {METHODS}, got {method!r}")
    (m, n), dtype = matrix_shape(data)
    side = min(m, n)
    if not isinstance(k, (int, np.integer)) or not 1 <= k <= side:
        raise InvalidInput(f"k must be an integer in [1, {side}] for a {m}×{n} matrix, got {k!r}")
    k = int(k)
    work = work_dtype(dtype)
    from ..core.device import select_device
    from ..core.memory import memory_budget

    dev = select_device(device)
    total_budget = memory_budget(budget, dev)
    reason = f"{method}: requested"
    if method == "auto":
        method, reason = choose_method(m, n, k, total_budget, work, _slabs_reread(data, m, n, total_budget, work))
    l = min(k + int(oversamples), side)
    reserve = _reserve(method, m, n, k, l, work)
    if reserve >= total_budget:
        raise BudgetError(
            f"the {method} SVD of a {m}×{n} matrix with k={k} keeps {format_bytes(reserve)}, more than the "
            f"memory budget ({format_bytes(total_budget)}); raise the budget (--memory)"
            + ("" if method == "randomized" else " or use method='randomized'")
        )
    # tall Gram and randomized passes read mean-shifted blocks (see the note above _gram); an
    # existing source (e.g. NMF's initialization) keeps its resident copy: no second one
    shift = method == "randomized" or (method == "gram" and n <= m)
    src = (
        data
        if isinstance(data, BlockSource)
        else BlockSource(data, dev, total_budget, reserve=reserve, progress=progress, shift=shift)
    )
    log.info("SVD of %d×%d (%s) on %s, k=%d: %s", m, n, src.work, dev, k, reason)
    if method == "gram":
        out = _gram(src, k, center) if n <= m else _gram_wide(src, k, center)
    elif method == "randomized":
        if n_iter == "auto":
            n_iter = 7 if k < 0.1 * side else 4
        out = _randomized(src, k, l, int(n_iter), random_state, center)
        out["n_iter"] = int(n_iter)
    else:
        out = _exact(src, k, center)
    xp = src.xp
    u, v = normalize_signs(xp, out["U"], out["V"])
    out.update(U=u, V=v, method=method, reason=reason)
    return src, out


def _real(dtype: np.dtype) -> np.dtype:
    """The real dtype of the same precision (float32 for complex64)."""
    return np.zeros(1, dtype=dtype).real.dtype


# ------------------------------------------------------------------------------------ gram
# Every product below is formed from blocks shifted by a provisional mean row c (X = Y + 1c):
# float32 data with a large offset would otherwise lose the small components to cancellation
# (an offset of 1000 on unit-variance data leaves nothing of them). The exact products of X
# follow in float64 from those of Y and the column sums s1 = Yᴴ1 (conjugated as needed).


def _require_finite(xp: Any, a: Any, src: BlockSource) -> None:
    if not bool(xp.isfinite(a).all()):
        name = src.main.name if src.main is not None else "the data"
        raise InvalidInput(
            f"{name} contains NaN or infinite values; the SVD needs finite data (clean or mask them first)"
        )


def _gram(src: BlockSource, k: int, center: bool) -> dict[str, Any]:
    """Tall data: eigenvectors of XᴴX are V."""
    xp = src.xp
    m, n = src.shape
    acc = acc_dtype(src.work)
    c64 = src.offset.astype(acc)
    g = xp.zeros((n, n), dtype=acc)
    s1 = xp.zeros(n, dtype=acc)
    for _a, _b, y in src.blocks("SVD (gram) pass 1/2"):  # y = x − offset
        g += gram(y)
        s1 += column_sums(xp, y, acc)
    _require_finite(xp, g, src)
    mean = c64 + s1 / m
    if center:  # X̃ᴴX̃ = YᴴY − m·conj(μ_y)μ_yᵀ, with μ_y the mean of Y
        g -= xp.outer((s1 / m).conj(), s1 / m) * m
        offset = c64 - mean  # rows of X̃ are y + (c − μ)
    else:  # XᴴX = YᴴY + conj(c)s1ᵀ + conj(s1)cᵀ + m·conj(c)cᵀ
        g += xp.outer(c64.conj(), s1) + xp.outer(s1.conj(), c64) + m * xp.outer(c64.conj(), c64)
        offset = c64
    total = float(xp.real(xp.trace(g)))
    vals, vecs = top_eigh(xp, g, k)
    s = xp.sqrt(xp.maximum(vals.real, 0))
    v = vecs.T.conj()  # k × n
    inv = xp.where(s > 0, 1 / xp.where(s > 0, s, 1), 0)
    proj64 = vecs * inv[None, :]
    proj = proj64.astype(src.work)
    shift = (offset @ proj64).astype(src.work)
    u = xp.empty((m, k), dtype=src.work)
    for a, b, y in src.blocks("SVD (gram) pass 2/2"):
        u[a:b] = y @ proj
        u[a:b] += shift
    return dict(U=u, S=s.astype(_real(src.work)), V=v.astype(src.work), mean=mean, total=total)


def _gram_wide(src: BlockSource, k: int, center: bool) -> dict[str, Any]:
    """Wide data (few positions, many points): eigenvectors of XXᴴ are U; read by column slabs.

    Each slab holds every row, so it is shifted by its exact column means μ (X = Y + 1μ):
    XXᴴ = YYᴴ + a1ᵀ + 1aᴴ + ‖μ‖², with a = Y·conj(μ).
    """
    xp = src.xp
    m, n = src.shape
    acc = acc_dtype(src.work)
    g = xp.zeros((m, m), dtype=acc)
    colsum = xp.zeros(n, dtype=acc)
    a_vec = xp.zeros(m, dtype=acc)
    mu_sq = xp.zeros((), dtype=np.float64)  # on the device: no host sync per slab
    for c0, c1, x in src.column_slabs("SVD (gram) pass 1/2"):
        mu = x.sum(axis=0, dtype=acc) / m
        colsum[c0:c1] = mu * m
        y = x - mu.astype(src.work)[None, :]
        g += gram(y.T.conj()).astype(acc)  # Y·Yᴴ of this slab
        if not center:
            a_vec += y.astype(acc) @ mu.conj()
            mu_sq += xp.sum(xp.abs(mu) ** 2)
    _require_finite(xp, g, src)
    mean = colsum / m
    if not center:
        g += a_vec[:, None] + a_vec.conj()[None, :] + mu_sq
    total = float(xp.real(xp.trace(g)))
    vals, vecs = top_eigh(xp, g, k)
    s = xp.sqrt(xp.maximum(vals.real, 0))
    inv = xp.where(s > 0, 1 / xp.where(s > 0, s, 1), 0)
    u = vecs.astype(src.work)  # m × k
    uh1 = vecs.conj().T.sum(axis=1)  # Uᴴ1, for the offset of the uncentred case
    v = xp.zeros((k, n), dtype=acc)
    for c0, c1, x in src.column_slabs("SVD (gram) pass 2/2"):
        mu = mean[c0:c1]
        y = x - mu.astype(src.work)[None, :]
        block = (u.conj().T @ y).astype(acc)
        if not center:
            block += xp.outer(uh1, mu)
        v[:, c0:c1] = block * inv[:, None]
    return dict(U=u, S=s.astype(_real(src.work)), V=v.astype(src.work), mean=mean, total=total)


# ------------------------------------------------------------------------------ randomized
def _randomized(src: BlockSource, k: int, l: int, n_iter: int, random_state: Any, center: bool) -> dict[str, Any]:
    """Subspace iteration on XᴴX from a Gaussian start, one pass per iteration.

    Passes work on Y = X − 1c (see the note above); with s1 = column sums of Y and μ_y = s1/m,
    XᴴXZ = YᴴYZ + conj(c)(s1ᵀZ) + conj(s1)(cᵀZ) + m·conj(c)(cᵀZ) and, centred,
    X̃ᴴX̃Z = YᴴYZ − m·conj(μ_y)(μ_yᵀZ): rank-one corrections, never a centred copy of the data.
    """
    if n_iter < 1:
        raise InvalidInput(f"n_iter (passes applying XᴴX) must be at least 1, got {n_iter}")
    xp = src.xp
    m, n = src.shape
    acc = acc_dtype(src.work)
    rng = np.random.default_rng(random_state)
    omega = rng.standard_normal((n, l))
    if src.is_complex:
        omega = omega + 1j * rng.standard_normal((n, l))
    z = orthonormalize(xp, xp.asarray(omega)).astype(src.work)
    c64 = src.offset.astype(acc)
    s1 = xp.zeros(n, dtype=acc)
    energy = xp.zeros((), dtype=np.float64)  # on the device: no host sync per block
    passes = n_iter + 1
    for it in range(passes):
        last = it == passes - 1
        out = xp.empty((m, l), dtype=src.work) if last else xp.zeros((n, l), dtype=acc)
        for a, b, y in src.blocks(f"SVD (randomized) pass {it + 1}/{passes}"):  # y = x − offset
            if it == 0:
                s1 += column_sums(xp, y, acc)
                energy += sum_squares(xp, y)
            if last:
                out[a:b] = y @ z
            else:
                out += (y.conj().T @ (y @ z)).astype(acc)
        mu_y = s1 / m
        z64 = z.astype(acc)
        if last:
            # Y_final = XZ = YZ + 1(cᵀZ), or centred YZ − 1(μ_yᵀZ)
            row = -(mu_y @ z64) if center else (c64 @ z64)
            out += row.astype(src.work)[None, :]
            y_final = out
        else:
            _require_finite(xp, out, src)
            if center:
                out -= m * xp.outer(mu_y.conj(), mu_y @ z64)
            else:
                out += (
                    xp.outer(c64.conj(), s1 @ z64)
                    + xp.outer(s1.conj(), c64 @ z64)
                    + m * xp.outer(c64.conj(), c64 @ z64)
                )
            z = orthonormalize(xp, out).astype(src.work)
    if center:
        total = float(energy - m * xp.sum(xp.abs(mu_y) ** 2))
    else:
        total = float(energy + 2 * xp.real(xp.vdot(c64, s1)) + m * xp.sum(xp.abs(c64) ** 2))
    mean = c64 + mu_y
    # X ≈ XZZᴴ = Y_f·Zᴴ; with Y_fᴴY_f = WΛWᴴ (a small l × l problem, in float64 by row chunks):
    # U = Y_f·W·Λ^(-1/2), S = Λ^(1/2), V = (ZW)ᴴ — no m × l workspace beyond Y_f itself
    yty = xp.zeros((l, l), dtype=acc)
    step = max(1, 2**20 // max(l, 1))
    for a in range(0, m, step):
        yty += gram(y_final[a : a + step].astype(acc))
    _require_finite(xp, yty, src)
    vals, w = top_eigh(xp, yty, k)
    s = xp.sqrt(xp.maximum(vals.real, 0))
    inv = xp.where(s > 0, 1 / xp.where(s > 0, s, 1), 0)
    u = y_final @ (w * inv[None, :]).astype(src.work)
    v = (z.astype(acc) @ w).conj().T.astype(src.work)
    return dict(U=u, S=s.astype(_real(src.work)), V=v, mean=mean, total=total)


# ----------------------------------------------------------------------------------- exact
def _exact(src: BlockSource, k: int, center: bool) -> dict[str, Any]:
    xp = src.xp
    x = src.to_memory()
    acc = acc_dtype(src.work)
    mean = x.mean(axis=0, dtype=acc)
    _require_finite(xp, mean, src)
    if center:
        x -= mean.astype(src.work)[None, :]
        # the rounded mean leaves a small offset in float32; a second, now accurate, pass removes it
        x -= x.mean(axis=0, dtype=acc).astype(src.work)[None, :]
    total = float(sum_squares(xp, x))
    u, s, vh = svd_small(xp, x)
    return dict(U=u[:, :k], S=s[:k], V=vh[:k], mean=mean, total=total)


# ------------------------------------------------------------------------------ public API
def svd(
    data: Any,
    k: int,
    method: str = "auto",
    device: str | Device | None = None,
    budget: int | str | None = None,
    n_iter: int | str = "auto",
    oversamples: int = 10,
    random_state: Any = 0,
    progress: bool = False,
    engine: str = "auto",
) -> SVDResult:
    """Truncated SVD ``X ≈ U · diag(S) · V`` of a Main dataset or a 2-D array, streamed.

    Parameters
    ----------
    data : MainDataset or array-like (NumPy or CuPy), shape (positions, spectroscopic points)
    k : int
        Number of components.
    method : {"auto", "gram", "randomized", "exact"}
        See the module documentation; ``auto`` reports what it picked in ``result.method``.
    device : {"auto", "cpu", "gpu"}, optional
        Default: ``USIDGPU_DEVICE`` or auto.
    budget : int or str, optional
        Memory budget, e.g. ``"4GB"``; the data may be many times larger.
    n_iter : int or "auto"
        Passes of the randomized method that apply ``XᴴX`` (at least 1; auto: 7, or 4 when
        k ≥ 10% of the smaller side, as scikit-learn's default). ``n_iter`` here spans the same
        Krylov power as scikit-learn's ``n_iter − 1`` and measured more accurate at equal
        values (float64 accumulation, Rayleigh–Ritz on the final subspace).
    oversamples : int
        Extra random vectors of the randomized method.
    random_state : int or None
        Seed of the randomized method.
    progress : bool
        Progress bars for passes over file data.
    engine : {"auto", "usidgpu", "cuml"}
        The implementation: usidgpu's streamed code (``auto``), or cuML's TruncatedSVD on the GPU
        (the data must fit in device memory).

    Returns
    -------
    SVDResult
        ``U`` (m × k), ``S`` (k), ``V`` (k × n) as NumPy arrays in the data's precision (float32
        for float32 and 8/16-bit integers), signs fixed so the largest entry of each ``V`` row is
        positive.
    """
    engine = resolve_engine(engine)
    if engine == "cuml":
        from .cuml_engine import cuml_svd

        return cuml_svd(data, k, device=device, center=False)
    src, out = _factorize(data, k, method, device, budget, n_iter, oversamples, random_state, False, progress)
    params = dict(num_components=k, svd_method=out["method"], method_reason=out["reason"], engine="usidgpu")
    if "n_iter" in out:
        params.update(n_iter=out["n_iter"], oversamples=oversamples)
    return SVDResult(
        U=asnumpy(out["U"]),
        S=asnumpy(out["S"]),
        V=asnumpy(out["V"]),
        method=out["method"],
        total_energy=out["total"],
        **describe_source(src, parameters=params),
    )


def pca(
    data: Any,
    k: int,
    method: str = "auto",
    device: str | Device | None = None,
    budget: int | str | None = None,
    n_iter: int | str = "auto",
    oversamples: int = 10,
    random_state: Any = 0,
    progress: bool = False,
    engine: str = "auto",
) -> PCAResult:
    """Principal component analysis: the truncated SVD of the data centred on its mean spectrum.

    Parameters are those of :func:`svd`.

    Returns
    -------
    PCAResult
        ``V`` are the principal axes (scikit-learn's ``components_``), ``scores = U · diag(S)``,
        ``explained_variance``, ``explained_variance_ratio`` and ``mean`` as in scikit-learn.
    """
    engine = resolve_engine(engine)
    if engine == "cuml":
        from .cuml_engine import cuml_svd

        return cuml_svd(data, k, device=device, center=True)
    src, out = _factorize(data, k, method, device, budget, n_iter, oversamples, random_state, True, progress)
    m = src.shape[0]
    s = asnumpy(out["S"])
    var = s.astype(np.float64) ** 2 / max(m - 1, 1)
    total_var = out["total"] / max(m - 1, 1)
    params = dict(num_components=k, svd_method=out["method"], method_reason=out["reason"], engine="usidgpu")
    return PCAResult(
        U=asnumpy(out["U"]),
        S=s,
        V=asnumpy(out["V"]),
        method=out["method"],
        total_energy=out["total"],
        mean=asnumpy(out["mean"]).astype(src.work),
        explained_variance=var,
        explained_variance_ratio=var / total_var if total_var > 0 else np.full_like(var, np.nan),
        **describe_source(src, parameters=params),
    )
