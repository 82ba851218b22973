"""The steps of streamed k-means, shared by the in-memory driver (:mod:`.kmeans`), the cuML
engine and the block-wise Process: reading chosen rows, greedy k-means++, one assignment pass,
the farthest points of a pass, per-cluster sums for given labels."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..core.arrays import asnumpy
from ..core.distances import squared_distances
from .source import BlockSource


def read_rows(src: BlockSource, rows: np.ndarray) -> Any:
    """Selected rows (e.g. k-means++ candidates) as the source delivers them (work dtype, on the
    device, minus the source's offset)."""
    rows = np.asarray(rows)
    if src.main is not None and src._cache is None:
        order = np.argsort(rows)
        uniq, inverse = np.unique(rows[order], return_inverse=True)
        picked = np.stack([src.main.h5[int(r)] for r in uniq])[inverse]
        out = np.empty_like(picked)
        out[order] = picked
        return src._to_work(out) - src.offset
    found = {}
    for a, b, x in src.blocks():
        for r in rows:
            if a <= r < b:
                found[int(r)] = x[int(r) - a].copy()
    return src.xp.stack([found[int(r)] for r in rows])


def kmeans_plusplus(src: BlockSource, k: int, rng: np.random.Generator, row_sq: Any) -> Any:
    """Greedy k-means++ centres (scikit-learn's), one streamed pass per centre, in the source's
    (shifted) coordinates; ``row_sq`` are the rows' squared norms.

    The distances stay on the device; the host sees only the few candidate rows it reads (one
    synchronization per centre, none per block)."""
    xp = src.xp
    m = src.shape[0]
    trials = 2 + int(math.log(k))
    centers = [read_rows(src, [int(rng.integers(m))])[0]]
    d2 = xp.empty(m, dtype=np.float64)
    c = centers[0][None, :]
    for a, b, x in src.blocks("k-means++ centre 1"):
        d2[a:b] = squared_distances(xp, x, c, xp.sum((c * c.conj()).real, axis=1), row_sq[a:b])[:, 0]
    for j in range(1, k):
        cumulative = xp.cumsum(d2)
        # one transfer: the total and the candidates' positions on the cumulative distances
        draws = xp.asarray(rng.random(trials))
        found = asnumpy(xp.concatenate([cumulative[-1:], xp.searchsorted(cumulative, draws * cumulative[-1])]))
        total, cand_rows = found[0], found[1:].astype(np.int64)
        if total <= 0:  # fewer distinct points than clusters: any point will do
            cand_rows = rng.integers(m, size=trials)
        cand_rows = np.clip(cand_rows, 0, m - 1)
        cand = read_rows(src, cand_rows)
        c_sq = xp.sum((cand * cand.conj()).real, axis=1)
        new_d2 = xp.empty((trials, m), dtype=np.float64)
        for a, b, x in src.blocks(f"k-means++ centre {j + 1}"):
            new_d2[:, a:b] = xp.minimum(d2[a:b][None, :], squared_distances(xp, x, cand, c_sq, row_sq[a:b]).T)
        best = xp.argmin(new_d2.sum(axis=1))
        centers.append(cand[best])
        d2 = new_d2[best]
    return xp.stack(centers)


def assign(src: BlockSource, centers: Any, labels: Any, row_sq: Any, desc: str, with_sums: bool = True) -> tuple:
    """One pass: labels (a device array, written in place) and inertia for ``centers``;
    per-cluster sums and counts, and each block's farthest points (to refill empty clusters).

    Everything is in the source's coordinates, shifted by a provisional mean: as scikit-learn
    centres the data, this keeps float32 distances accurate for data far from the origin. All of
    it stays on the device: the pass makes no host synchronization.
    """
    xp = src.xp
    k, n = centers.shape
    c_sq = xp.sum((centers * centers.conj()).real, axis=1, dtype=np.float64)
    sums = xp.zeros((k, n), dtype=np.complex128 if src.is_complex else np.float64)
    counts = xp.zeros(k, dtype=np.int64)
    inertia = xp.zeros((), dtype=np.float64)
    far_d, far_r = [], []  # distances and rows of each block's farthest points
    # on the CPU each block is taken in pieces that stay in the cache between the distances and
    # the sums (one read of the data from memory per pass, as scikit-learn's chunked Lloyd); on a
    # GPU a whole block is one launch
    piece = _cache_rows(n, centers.dtype.itemsize) if xp is np else None
    for a, b, x in src.blocks(desc):
        dmin = xp.empty(b - a, dtype=np.float64)
        step = piece or (b - a)
        for p0 in range(0, b - a, step):
            p1 = min(p0 + step, b - a)
            xs = x[p0:p1]
            d = squared_distances(xp, xs, centers, c_sq, row_sq[a + p0 : a + p1])
            lab = xp.argmin(d, axis=1)
            dmin[p0:p1] = d[xp.arange(p1 - p0), lab]
            labels[a + p0 : a + p1] = lab
            if with_sums:
                onehot = xp.zeros((p1 - p0, k), dtype=xs.dtype)
                onehot[xp.arange(p1 - p0), lab] = 1
                sums += (onehot.T @ xs).astype(sums.dtype)
                counts += xp.bincount(lab, minlength=k)
        inertia += dmin.sum()
        if with_sums:
            top = min(k, b - a)
            idx = xp.argpartition(dmin, b - a - top)[b - a - top :]
            far_d.append(dmin[idx])
            far_r.append(idx + a)
    return inertia, sums, counts, (far_d, far_r)


#: Bytes of data one piece of an assignment pass holds: inside a core's L2 cache (1 MB measured
#: fastest on the 2-core VM: 54 ms a pass over 65536×1024 float32, k = 8, against 78 ms unpieced).
CACHE_PIECE_BYTES = 1 << 20


def _cache_rows(n: int, itemsize: int) -> int:
    """Rows of an assignment piece: about :data:`CACHE_PIECE_BYTES`, at least 16."""
    return max(16, CACHE_PIECE_BYTES // max(1, n * itemsize))


def farthest(xp: Any, far: tuple, count: int) -> list[int]:
    """Rows of the ``count`` farthest points of a pass (ties: the later row first)."""
    dist = asnumpy(xp.concatenate(far[0]))
    rows = asnumpy(xp.concatenate(far[1]))
    order = np.lexsort((-rows, -dist))
    return rows[order[:count]].tolist()


def cluster_sums(src: BlockSource, labels: np.ndarray, k: int) -> tuple:
    """Per-cluster sums of the data (not shifted, whatever the source delivers) and counts for
    given labels, in one pass."""
    xp = src.xp
    n = src.shape[1]
    sums = xp.zeros((k, n), dtype=np.complex128 if src.is_complex else np.float64)
    for a, b, x in src.blocks("k-means: mean spectra"):
        lab = xp.asarray(labels[a:b])
        onehot = xp.zeros((b - a, k), dtype=x.dtype)
        onehot[xp.arange(b - a), lab] = 1
        sums += (onehot.T @ x).astype(sums.dtype)
    counts = np.bincount(labels, minlength=k)
    # the blocks of a shifted source are x − offset: add the offset's share back
    sums += xp.asarray(counts)[:, None] * src.offset.astype(sums.dtype)[None, :]
    return 0.0, sums, counts, []
