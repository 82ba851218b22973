"""SVD and k-means as :class:`~usidgpu.parallel.Process` es: the same results groups as
:func:`usidgpu.svd` / :func:`usidgpu.kmeans` followed by ``.write()``, computed on any executor.

``GramSVD``
    One :meth:`~usidgpu.parallel.Process.reduce` accumulates the Gram matrix ``XᴴX`` (float64,
    complex128 for complex data) and the column sums over all blocks, in the fixed tree of the
    executor; the top-k eigenpairs give ``S`` and ``V`` (signs fixed as :func:`usidgpu.svd`:
    the largest-magnitude entry of each row of ``V`` is real and positive); the per-block map
    projects the rows, ``U = X·Vᴴ·S⁻¹``. Written as ``<Source>-SVD_NNN`` with ``U``, ``S``,
    ``V`` laid out exactly as :func:`usidgpu.decompose.write.write_svd` does. The Gram matrix
    is n × n (n = spectroscopic points), so n is limited to 8192 — for wider data use
    ``usidgpu.svd(method="randomized")``. As in :func:`usidgpu.svd`, blocks are shifted by a
    provisional mean row before their products are formed, and the shift's exact contribution
    is added back in float64 (float32 data with a large offset lose nothing).
``BlockKMeans``
    Lloyd's algorithm with each iteration one reduction of per-block partial sums (per-cluster
    sums and counts, inertia, the farthest points to refill empty clusters, a digest of the
    labels for the strict-convergence test), then a map that writes ``Labels``. Initialization,
    stopping rule, empty-cluster handling and arithmetic mirror :func:`usidgpu.kmeans`
    (``features="raw"``): from the same ``random_state`` (or the same ``init`` centres) the
    labels are the same and the centroids equal to rounding (partial sums are added in a tree,
    not one after another). k-means++ runs in this process (k streamed passes, or none when
    the data fit in memory), with usidgpu's own :func:`~usidgpu.decompose.kmeans_steps.kmeans_plusplus`;
    ``init_sample=N`` runs it on N random positions instead, for data too large to stream k
    times from one machine.

Both give bit-identical results on every executor (inline, threads, a dask cluster) for the
same block plan: reductions combine in the same fixed tree everywhere.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from ..core.distances import squared_distances
from ..core.errors import InvalidInput, InvalidType
from ..core.linalg import acc_dtype, gram, normalize_signs, sum_squares, top_eigh
from ..parallel.process import Output, Process
from ..usid.dimension import Dimension
from ..usid.results import ResultsWriter
from .kmeans_steps import kmeans_plusplus
from .source import BlockSource, work_dtype
from .svd import GRAM_MAX_SIDE

#: Rows whose mean is the provisional shift of the blocks (as :class:`BlockSource`).
_SHIFT_ROWS = 1024


def _real(dtype: np.dtype) -> np.dtype:
    return np.zeros(1, dtype=dtype).real.dtype


def _provisional_mean(source: Any, work: np.dtype) -> np.ndarray:
    """Mean of the first rows (up to 1024) in the work dtype, as :class:`BlockSource` computes it."""
    rows = min(source.shape[0], _SHIFT_ROWS)
    head = np.asarray(source.h5[0:rows]).astype(work, copy=False)
    mean = head.mean(axis=0, dtype=np.complex128 if work.kind == "c" else np.float64)
    return np.nan_to_num(mean).astype(work)


def _add(a: Any, b: Any) -> Any:
    """Combine of partial sums: element-wise ``a + b`` of equal tuples of arrays."""
    return tuple(x + y for x, y in zip(a, b))


# ------------------------------------------------------------------------------------- SVD
class GramSVD(Process):
    """Truncated SVD ``X ≈ U · diag(S) · V`` through the Gram matrix, on any executor.

    Parameters
    ----------
    source : MainDataset
        Positions × spectroscopic points, at most 8192 points.
    k : int
        Components (``num_components`` is accepted too: the name in the results group).
    **run_options
        ``scheduler``, ``workers``, ``device``, ``budget``, ``output``, ``rows_per_block``,
        ``progress`` (see :class:`~usidgpu.parallel.Process`).

    After :meth:`run`: ``S``, ``V`` (NumPy, the data's precision) and ``total_energy``.
    """

    tool = "SVD"

    def __init__(
        self,
        source: Any,
        k: int | None = None,
        *,
        num_components: int | None = None,
        svd_method: str = "gram",
        **run_options: Any,
    ) -> None:
        super().__init__(source, **run_options)
        if k is None:
            k = num_components
        elif num_components is not None and int(num_components) != int(k):
            raise InvalidInput(f"k={k} and num_components={num_components} disagree")
        if svd_method != "gram":
            raise InvalidInput(f"GramSVD computes the Gram method only, got svd_method={svd_method!r}")
        m, n = self.source_shape
        side = min(m, n)
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or not 1 <= k <= side:
            raise InvalidInput(f"k must be an integer in [1, {side}] for a {m}×{n} matrix, got {k!r}")
        if n > GRAM_MAX_SIDE:
            raise InvalidInput(
                f"{source.name} has {n} spectroscopic points: its {n}×{n} Gram matrix is too large "
                f"(at most {GRAM_MAX_SIDE}); use usidgpu.svd(..., method='randomized')"
            )
        self.k = int(k)
        self.work = work_dtype(source.dtype)
        self.acc = acc_dtype(self.work)
        self.quantity, self.units = source.quantity, source.units
        # set by prepare()
        self.offset: np.ndarray | None = None
        self.proj: np.ndarray | None = None
        self.shift_row: np.ndarray | None = None
        self.S: np.ndarray | None = None
        self.V: np.ndarray | None = None
        self.total_energy = float("nan")

    def parameters(self) -> dict[str, Any]:
        # the names usidgpu.svd(method="gram") records: the groups compare equal
        return {"num_components": self.k, "svd_method": "gram", "method_reason": "gram: requested", "engine": "usidgpu"}

    @classmethod
    def from_parameters(cls, source: Any, parameters: dict[str, Any], **run_options: Any) -> GramSVD:
        p = dict(parameters)
        p.pop("method_reason", None)
        p.pop("engine", None)
        return cls(source, **p, **run_options)

    def outputs(self) -> dict[str, Output]:
        comp = [Dimension("Principal Component", "a. u.", self.k)]
        return {"U": Output(self.k, "Abundance", "a.u.", self.work, comp)}

    # -------------------------------------------------------------- the reduction
    def _gram_partial(self, block: Any, xp: Any) -> tuple[Any, Any]:
        """``(YᴴY, Σ rows of Y)`` of one block, ``Y = X − offset``, in float64."""
        y = block.astype(self.acc) - xp.asarray(self.offset, dtype=self.acc)
        return gram(y), y.sum(axis=0)

    def prepare(self) -> None:
        m = self.source_shape[0]
        self.offset = _provisional_mean(self.source, self.work).astype(self.acc)
        g, s1 = self.reduce(self._gram_partial, _add)
        c = self.offset
        # XᴴX = YᴴY + conj(c)s1ᵀ + conj(s1)cᵀ + m·conj(c)cᵀ
        g = g + np.outer(c.conj(), s1) + np.outer(s1.conj(), c) + m * np.outer(c.conj(), c)
        if not np.isfinite(g).all():
            raise InvalidInput(
                f"{self.source_name} contains NaN or infinite values; "
                "the SVD needs finite data (clean or mask them first)"
            )
        self.total_energy = float(np.real(np.trace(g)))
        vals, vecs = top_eigh(np, g, self.k)
        s = np.sqrt(np.maximum(vals.real, 0))
        _u, v = normalize_signs(np, np.ones((1, self.k), dtype=vecs.dtype), vecs.T.conj())  # k × n
        vecs = v.conj().T
        inv = np.where(s > 0, 1 / np.where(s > 0, s, 1), 0)
        self.proj = vecs * inv[None, :]
        self.shift_row = c @ self.proj
        self.S = s.astype(_real(self.work))
        self.V = v.astype(self.work)

    # -------------------------------------------------------------- the map
    def compute(self, block: Any, xp: Any) -> dict[str, Any]:
        y = block.astype(self.acc) - xp.asarray(self.offset)
        u = y @ xp.asarray(self.proj) + xp.asarray(self.shift_row)
        return {"U": u.astype(self.work)}

    # -------------------------------------------------------------- the results group
    def _write_outputs(self, writer: ResultsWriter, store: Any, specs: dict[str, Output]) -> None:
        # U with the ancillary names write_svd gives it (Spectroscopic_*, not U_Spectroscopic_*)
        comp = [Dimension("Principal Component", "a. u.", self.k)]
        writer.write_main("U", store.array("U"), "Abundance", "a.u.", self.source, comp)

    def finalize(self, writer: ResultsWriter) -> None:
        comp = [Dimension("Principal Component", "a. u.", self.k)]
        writer.group.create_dataset("S", data=self.S)
        writer.write_main("V", self.V, self.quantity, self.units, comp, self.source)
        writer.group.attrs["total_energy"] = self.total_energy


# ---------------------------------------------------------------------------------- k-means
def _labels_digest(labels: np.ndarray) -> bytes:
    return hashlib.sha256(np.ascontiguousarray(labels, dtype=np.int64).tobytes()).digest()


def _combine_assign(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Partial sums of two neighbouring runs of blocks (left first)."""
    out = {
        "inertia": a["inertia"] + b["inertia"],
        "sums": a["sums"] + b["sums"],
        "counts": a["counts"] + b["counts"],
        "digests": a["digests"] + b["digests"],
    }
    if "far" in a:
        k = len(a["counts"])
        # the k farthest points overall, farthest first (stable: left blocks win ties)
        far = sorted(a["far"] + b["far"], key=lambda t: -t[0])
        out["far"] = far[:k]
    return out


class BlockKMeans(Process):
    """k-means of the positions (raw spectra), each Lloyd iteration one reduction on the executor.

    Parameters
    ----------
    source : MainDataset
    k : int
        Clusters (``n_clusters`` is accepted too: the name in the results group).
    init : "k-means++", "random" or array (k, spectroscopic points)
        As :func:`usidgpu.kmeans`; an array gives the initial centres explicitly.
    max_iter, tol, random_state
        As :func:`usidgpu.kmeans`; ``random_state=None`` draws a seed, recorded in the
        parameters (a resumed run must start from the same centres).
    init_sample : int, optional
        Run k-means++ (or pick the random centres) on this many random positions instead of
        all of them (default: all, giving the same centres as :func:`usidgpu.kmeans`).
    features : "raw"
        Only raw spectra (for SVD scores, cluster the ``U`` of :class:`GramSVD`).
    **run_options
        ``scheduler``, ``workers``, ``device``, ``budget``, ``output``, ``rows_per_block``,
        ``progress`` (see :class:`~usidgpu.parallel.Process`).

    After :meth:`run`: ``centroids``, ``mean_response``, ``counts``, ``inertia``, ``n_iter``,
    ``strict_convergence``.
    """

    tool = "KMeans"

    def __init__(
        self,
        source: Any,
        k: int | None = None,
        *,
        n_clusters: int | None = None,
        init: str | Any = "k-means++",
        max_iter: int = 300,
        tol: float = 1e-4,
        random_state: int | None = 0,
        init_sample: int | None = None,
        features: str = "raw",
        **run_options: Any,
    ) -> None:
        super().__init__(source, **run_options)
        if k is None:
            k = n_clusters
        elif n_clusters is not None and int(n_clusters) != int(k):
            raise InvalidInput(f"k={k} and n_clusters={n_clusters} disagree")
        m, n = self.source_shape
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or not 1 <= k <= m:
            raise InvalidInput(f"k must be an integer in [1, {m}] (the number of positions), got {k!r}")
        if features != "raw":
            raise InvalidInput(f"BlockKMeans clusters raw spectra only (features='raw'), got {features!r}")
        if isinstance(init, str):
            if init not in ("k-means++", "random"):
                raise InvalidInput(f"init must be 'k-means++', 'random' or an array of centres, got {init!r}")
        else:
            init = np.asarray(init)
            if init.shape != (k, n):
                raise InvalidInput(f"initial centres must have shape ({k}, {n}), got {init.shape}")
        if int(max_iter) < 1:
            raise InvalidInput(f"max_iter must be at least 1, got {max_iter}")
        if init_sample is not None and not k <= int(init_sample) <= m:
            raise InvalidInput(f"init_sample must be in [{k}, {m}], got {init_sample}")
        self.k, self.init, self.max_iter, self.tol = int(k), init, int(max_iter), float(tol)
        if random_state is None and (isinstance(init, str) or init_sample is not None):
            # a seed drawn now and recorded: a resumed run must start from the same centres
            random_state = int(np.random.SeedSequence().entropy % 2**63)
        if random_state is not None and not isinstance(random_state, (int, np.integer)):
            raise InvalidType(
                f"random_state must be an int or None (it is recorded for resuming), got {random_state!r}"
            )
        self.random_state = None if random_state is None else int(random_state)
        self.init_sample = None if init_sample is None else int(init_sample)
        self.work = work_dtype(source.dtype)
        self.acc = np.dtype(np.complex128 if self.work.kind == "c" else np.float64)
        self.quantity, self.units = source.quantity, source.units
        # set by prepare()
        self.offset: np.ndarray | None = None
        self.centers: np.ndarray | None = None  # in the shifted coordinates, float64
        self.c_sq: np.ndarray | None = None
        self._with_far = True
        self.centroids = self.mean_response = self.counts = None
        self.inertia, self.n_iter, self.strict_convergence = float("nan"), 0, False

    def parameters(self) -> dict[str, Any]:
        init = self.init if isinstance(self.init, str) else self.init.tolist()
        return {
            "n_clusters": self.k,
            "features": "raw",
            "init": init,
            "max_iter": self.max_iter,
            "tol": self.tol,
            "random_state": self.random_state,
            "init_sample": self.init_sample,
        }

    def outputs(self) -> dict[str, Output]:
        return {"Labels": Output(1, "Cluster ID", "a. u.", np.uint32, [Dimension("Label", "a. u.", 1)])}

    # -------------------------------------------------------------- per block
    def _shifted(self, block: Any, xp: Any) -> Any:
        y = block.astype(self.work)  # always a copy: the block read stays as it was
        y -= xp.asarray(self.offset)
        return y

    def _distances(self, block: Any, xp: Any) -> Any:
        y = self._shifted(block, xp)
        row_sq = sum_squares(xp, y, axis=1)
        d = squared_distances(xp, y, xp.asarray(self.centers), xp.asarray(self.c_sq), row_sq)
        return y, d

    def _stats_partial(self, block: Any, xp: Any) -> tuple[Any, Any]:
        y = self._shifted(block, xp)
        with np.errstate(over="ignore", invalid="ignore"):
            return y.sum(axis=0, dtype=self.acc), sum_squares(xp, y, axis=0)

    def _assign_partial(self, block: Any, xp: Any) -> dict[str, Any]:
        """Labels of one block for the current centres: per-cluster sums and counts, inertia,
        its farthest points (to refill empty clusters), a digest of its labels."""
        from ..core.arrays import asnumpy

        y, d = self._distances(block, xp)
        rows = y.shape[0]
        lab = xp.argmin(d, axis=1)
        dmin = d[xp.arange(rows), lab]
        onehot = xp.zeros((rows, self.k), dtype=y.dtype)
        onehot[xp.arange(rows), lab] = 1
        lab_h = asnumpy(lab)
        out = {
            "inertia": float(dmin.sum()),
            "sums": (onehot.T @ y).astype(self.acc),
            "counts": np.bincount(lab_h, minlength=self.k).astype(np.int64),
            "digests": (_labels_digest(lab_h),),
        }
        if self._with_far:
            top = min(self.k, rows)
            dmin_h = asnumpy(dmin)
            idx = np.sort(np.argpartition(dmin_h, -top)[-top:])
            y_far = asnumpy(y[xp.asarray(idx)])
            out["far"] = [(float(dmin_h[i]), y_far[j]) for j, i in enumerate(idx)]
        return out

    def compute(self, block: Any, xp: Any) -> dict[str, Any]:
        _y, d = self._distances(block, xp)
        return {"Labels": xp.argmin(d, axis=1).astype(np.uint32)[:, None]}

    # -------------------------------------------------------------- global steps
    def _read_rows(self, rows: np.ndarray) -> np.ndarray:
        """Rows of the source (any order, repeats allowed) in the work dtype, not shifted."""
        rows = np.asarray(rows, dtype=np.int64)
        uniq, inverse = np.unique(rows, return_inverse=True)
        picked = np.asarray(self.source.h5[uniq.tolist()])  # h5py: increasing, unique indices
        return picked[inverse].astype(self.work)

    def _initial_centers(self, rng: np.random.Generator) -> np.ndarray:
        """Initial centres in absolute coordinates (float64) — or shifted ones, see below."""
        m = self.source_shape[0]
        if not isinstance(self.init, str):
            return self.init.astype(self.acc) - self.offset
        if self.init_sample is not None:
            sample_rows = np.sort(rng.choice(m, size=self.init_sample, replace=False))
            data = self._read_rows(sample_rows)
        else:
            data = None
        if self.init == "random":
            if data is None:
                picked = self._read_rows(rng.choice(m, size=self.k, replace=False))
            else:
                picked = data[rng.choice(len(data), size=self.k, replace=False)]
            return (picked - self.offset).astype(self.acc)
        # k-means++ with usidgpu's own function: on a BlockSource of the data (or of the sample),
        # in this process — the same centres as usidgpu.kmeans for the same random_state
        src = BlockSource(self.source if data is None else data, self.device, self.budget, shift=True)
        row_sq = src.xp.empty(src.shape[0], dtype=np.float64)
        for a, b, y in src.blocks("k-means: row norms"):
            row_sq[a:b] = sum_squares(src.xp, y, axis=1)
        from ..core.arrays import asnumpy

        centers = asnumpy(kmeans_plusplus(src, self.k, rng, row_sq)).astype(self.acc)
        src_offset = asnumpy(src.offset)
        if data is None and np.array_equal(src_offset, self.offset):
            return centers  # same shifted coordinates as usidgpu.kmeans: nothing rounded
        return centers + src_offset.astype(self.acc) - self.offset

    def prepare(self) -> None:
        m = self.source_shape[0]
        self.offset = _provisional_mean(self.source, self.work)
        s1, s2 = self.reduce(self._stats_partial, _add)
        if not (np.isfinite(s1).all() and np.isfinite(s2).all()):
            raise InvalidInput(f"{self.source_name} contains NaN or infinite values; k-means needs finite data")
        tol_abs = self.tol * float(np.mean(s2 / m - np.abs(s1 / m) ** 2))
        rng = np.random.default_rng(self.random_state)
        centers = self._initial_centers(rng)
        previous: tuple | None = None
        strict, n_iter = False, 0
        self._with_far = True
        for it in range(1, self.max_iter + 1):
            n_iter = it
            self._set_centers(centers)
            part = self.reduce(self._assign_partial, _combine_assign)
            counts = part["counts"]
            new = part["sums"] / np.maximum(counts, 1)[:, None]
            empty = np.flatnonzero(counts == 0)
            if empty.size:  # refill empty clusters with the farthest points, as usidgpu.kmeans
                new[empty] = np.stack([row for _d, row in part["far"][: empty.size]]).astype(new.dtype)
            movement = float(np.sum(np.abs(new - centers) ** 2))
            centers = new
            if previous is not None and part["digests"] == previous:
                strict = True
                break
            if movement <= tol_abs:
                break
            previous = part["digests"]
        self._set_centers(centers)
        self._with_far = False
        final = self.reduce(self._assign_partial, _combine_assign)
        self.counts = final["counts"]
        self.inertia = float(final["inertia"])
        self.mean_response = (final["sums"] / np.maximum(self.counts, 1)[:, None] + self.offset).astype(self.work)
        self.centroids = (centers + self.offset).astype(self.work)
        self.n_iter, self.strict_convergence = n_iter, strict

    def _set_centers(self, centers: np.ndarray) -> None:
        self.centers = np.asarray(centers, dtype=self.acc)
        self.c_sq = np.sum((self.centers * self.centers.conj()).real, axis=1, dtype=np.float64)

    # -------------------------------------------------------------- the results group
    def _write_outputs(self, writer: ResultsWriter, store: Any, specs: dict[str, Output]) -> None:
        # Labels with the ancillary names write_kmeans gives them
        writer.write_main(
            "Labels",
            store.array("Labels"),
            "Cluster ID",
            "a. u.",
            self.source,
            [Dimension("Label", "a. u.", 1)],
            aux_spec_prefix="Label_Spectroscopic_",
        )

    def finalize(self, writer: ResultsWriter) -> None:
        writer.write_main(
            "Mean_Response",
            self.mean_response,
            self.quantity,
            self.units,
            [Dimension("Cluster", "a. u.", self.k)],
            self.source,
            aux_pos_prefix="Cluster_",
        )
        writer.group.create_dataset("Centroids", data=self.centroids)
        writer.group.create_dataset("Counts", data=np.asarray(self.counts, dtype=np.int64))
        writer.group.attrs["inertia"] = self.inertia
        writer.group.attrs["n_iter"] = self.n_iter
        writer.group.attrs["strict_convergence"] = self.strict_convergence


# ----------------------------------------------------------------------------- convenience
def svd_blockwise(source: Any, k: int, scheduler: Any = None, workers: int | None = None, **opts: Any) -> str:
    """:class:`GramSVD` of ``source`` on ``scheduler``; returns the results group's path.

    ``opts``: ``device``, ``budget``, ``output``, ``rows_per_block``, ``progress``.
    """
    return GramSVD(source, k, scheduler=scheduler, workers=workers, **opts).run()


def kmeans_blockwise(
    source: Any,
    k: int,
    init: str | Any = "k-means++",
    max_iter: int = 300,
    tol: float = 1e-4,
    random_state: int | None = 0,
    init_sample: int | None = None,
    scheduler: Any = None,
    workers: int | None = None,
    **opts: Any,
) -> str:
    """:class:`BlockKMeans` of ``source`` on ``scheduler``; returns the results group's path.

    ``opts``: ``device``, ``budget``, ``output``, ``rows_per_block``, ``progress``.
    """
    process = BlockKMeans(
        source,
        k,
        init=init,
        max_iter=max_iter,
        tol=tol,
        random_state=random_state,
        init_sample=init_sample,
        scheduler=scheduler,
        workers=workers,
        **opts,
    )
    return process.run()


__all__ = ["BlockKMeans", "GramSVD", "kmeans_blockwise", "svd_blockwise"]
