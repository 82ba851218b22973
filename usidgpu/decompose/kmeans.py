"""k-means clustering of positions, streamed: one pass over the data per Lloyd iteration.

Initialization is scikit-learn's greedy k-means++ (each new centre is the best of
``2 + ⌊ln k⌋`` candidates drawn with probability ∝ D²), streamed as one pass per centre; the
Lloyd iterations follow scikit-learn's ``algorithm="lloyd"`` step for step (assign, update,
stop on unchanged labels or a centre shift below ``tol × mean variance``, final assignment to
the final centres), so from the same initial centres both give the same labels.

Clustering can run on the raw spectra or on SVD scores (``features="svd"``: the data are
reduced to ``n_components`` scores first, which makes each iteration cheap); the mean spectrum
of each cluster is always computed from the raw data.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..core.arrays import asnumpy
from ..core.device import Device, select_device
from ..core.errors import InvalidInput
from ..core.linalg import sum_squares
from ..core.memory import memory_budget
from .kmeans_steps import assign, cluster_sums, farthest, kmeans_plusplus, read_rows
from .results import KMeansResult
from .source import BlockSource, describe_source, matrix_shape, resolve_engine, work_dtype
from .svd import svd


def kmeans(
    data: Any,
    k: int,
    features: str = "raw",
    n_components: int | None = None,
    init: str | Any = "k-means++",
    max_iter: int = 300,
    tol: float = 1e-4,
    device: str | Device | None = None,
    budget: int | str | None = None,
    random_state: Any = 0,
    progress: bool = False,
    engine: str = "auto",
) -> KMeansResult:
    """k-means clustering of the positions of a Main dataset or the rows of an array, streamed.

    Parameters
    ----------
    data : MainDataset or array-like, shape (positions, spectroscopic points)
    k : int
        Number of clusters.
    features : {"raw", "svd"}
        Cluster the spectra themselves, or their first ``n_components`` SVD scores.
    n_components : int, optional
        Scores kept with ``features="svd"`` (default ``min(16, n)``).
    init : "k-means++", "random" or array (k, n_features)
        Initial centres; an array gives them explicitly.
    max_iter : int
    tol : float
        Stop when the centres move less than ``tol`` × the mean per-feature variance (as
        scikit-learn).
    device, budget, random_state, progress
        As for :func:`usidgpu.svd`.
    engine : {"auto", "usidgpu", "cuml"}
        The implementation: usidgpu's streamed code (``auto``), or cuML's KMeans on the GPU (the
        features must fit in device memory).

    Returns
    -------
    KMeansResult
        ``labels`` (uint32), ``centroids``, ``mean_response`` (k × spectroscopic points, from the
        raw data), ``counts``, ``inertia``, ``n_iter``.
    """
    if features not in ("raw", "svd"):
        raise InvalidInput(f"features must be 'raw' or 'svd', got {features!r}")
    engine = resolve_engine(engine)
    (m, n), dtype = matrix_shape(data)
    if not isinstance(k, (int, np.integer)) or not 1 <= k <= m:
        raise InvalidInput(f"k must be an integer in [1, {m}] (the number of positions), got {k!r}")
    k = int(k)
    dev = select_device(device)
    total_budget = memory_budget(budget, dev)
    work = work_dtype(dtype)
    reserve = 2 * m * 8 + 4 * k * n * 16 + (2 + int(math.log(k))) * m * 8  # labels, row norms, k-means++ trials
    row_overhead = 5 * 8 * k  # distances, cross products, one-hot rows per position
    raw = BlockSource(
        data, dev, total_budget, reserve=reserve, progress=progress, row_overhead=row_overhead, shift=features == "raw"
    )
    if features == "svd":
        n_components = int(n_components or min(16, n, m))
        if not 1 <= n_components <= min(m, n):
            raise InvalidInput(f"n_components must be in [1, {min(m, n)}] for {m} × {n} data, got {n_components}")
        r = svd(data, n_components, device=dev, budget=total_budget // 2, progress=progress)
        feats = (r.U * r.S).astype(work)
        src = BlockSource(feats, dev, total_budget, reserve=reserve, row_overhead=row_overhead, shift=True)
    else:
        src = raw
    if engine == "cuml":
        from .cuml_engine import cuml_kmeans

        return cuml_kmeans(src, raw, k, init, max_iter, tol, random_state, features, n_components)
    xp = src.xp
    rng = np.random.default_rng(random_state)
    n_feat = src.shape[1]

    # the mean per-feature variance scales tol, as in scikit-learn
    shift = src.offset  # blocks arrive as x − shift
    acc = np.complex128 if src.is_complex else np.float64
    s1 = xp.zeros(n_feat, dtype=acc)
    s2 = xp.zeros(n_feat, dtype=np.float64)
    row_sq = xp.empty(m, dtype=np.float64)  # ‖x − shift‖² of every position: computed once, used every pass
    with np.errstate(over="ignore", invalid="ignore"):  # non-finite data are reported just below
        for a, b, y in src.blocks("k-means: data statistics"):
            row_sq[a:b] = sum_squares(xp, y, axis=1)
            s1 += y.sum(axis=0, dtype=acc)
            s2 += sum_squares(xp, y, axis=0)
    if not (bool(xp.isfinite(s1).all()) and bool(xp.isfinite(s2).all())):
        name = raw.main.name if raw.main is not None else "the data"
        raise InvalidInput(f"{name} contains NaN or infinite values; k-means needs finite data")
    tol_abs = tol * float(xp.mean(s2 / m - xp.abs(s1 / m) ** 2))
    if isinstance(init, str) and init == "k-means++":
        centers = kmeans_plusplus(src, k, rng, row_sq)
        init_name = "k-means++"
    elif isinstance(init, str) and init == "random":
        centers = read_rows(src, rng.choice(m, size=k, replace=False))
        init_name = "random"
    elif not isinstance(init, str):
        given = xp.asarray(asnumpy(init)).astype(np.complex128 if src.is_complex else np.float64)
        if given.shape != (k, n_feat):
            raise InvalidInput(f"initial centres must have shape ({k}, {n_feat}), got {given.shape}")
        centers = given - shift
        init_name = "custom"
    else:
        raise InvalidInput(f"init must be 'k-means++', 'random' or an array of centres, got {init!r}")
    centers = centers.astype(np.complex128 if src.is_complex else np.float64)

    labels = xp.full(m, -1, dtype=np.int64)
    previous = xp.full(m, -2, dtype=np.int64)
    strict = False
    it = 0
    for it in range(1, max_iter + 1):
        _inertia, sums, counts, far = assign(src, centers, labels, row_sq, f"k-means iteration {it}")
        new = sums / xp.maximum(counts, 1)[:, None]
        # one transfer per iteration: counts (empty clusters?), centre movement, labels changed?
        state = asnumpy(
            xp.concatenate(
                [
                    counts.astype(np.float64),
                    xp.sum(xp.abs(new - centers) ** 2)[None],
                    xp.any(labels != previous).astype(np.float64)[None],
                ]
            )
        )
        counts_h, movement, changed = state[:k], state[k], bool(state[k + 1])
        empty = np.flatnonzero(counts_h == 0)
        if empty.size:  # refill empty clusters with the farthest points, as scikit-learn relocates them
            new[xp.asarray(empty)] = read_rows(src, farthest(xp, far, empty.size)).astype(new.dtype)
            movement = float(xp.sum(xp.abs(new - centers) ** 2))
        centers = new
        if not changed:
            strict = True
            break
        if movement <= tol_abs:
            break
        previous[:] = labels
    inertia, sums, counts, _far = assign(src, centers, labels, row_sq, "k-means: final assignment")
    labels = asnumpy(labels)
    if features == "svd":  # the mean spectra come from the raw data, not the scores
        _i, sums, counts, _f = cluster_sums(raw, labels, k)
        mean_response = sums / xp.maximum(xp.asarray(counts), 1)[:, None]
    else:  # sums of the shifted blocks
        mean_response = sums / xp.maximum(counts, 1)[:, None] + shift
    inertia, counts = float(inertia), asnumpy(counts)
    mean_response = asnumpy(mean_response).astype(raw.work)
    centers = centers + shift
    params = dict(
        n_clusters=k,
        features=features,
        init=init_name,
        max_iter=max_iter,
        tol=tol,
        strict_convergence=strict,
        engine="usidgpu",
    )
    if features == "svd":
        params["n_components"] = n_components
    return KMeansResult(
        labels=labels.astype(np.uint32),
        centroids=asnumpy(centers).astype(src.work),
        mean_response=mean_response,
        counts=counts,
        inertia=inertia,
        n_iter=it,
        features=features,
        **describe_source(raw, parameters=params),
    )
