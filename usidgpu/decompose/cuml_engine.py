"""``engine="cuml"``: RAPIDS cuML's TruncatedSVD, PCA and KMeans, for data that fit the GPU.

cuML holds the whole matrix in device memory, so this engine is for data that fit there; the
usidgpu engine streams. Results come back as the same result objects.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np

from ..core.arrays import asnumpy
from ..core.device import select_device
from ..core.errors import BudgetError, DeviceError, InvalidInput
from ..core.memory import format_bytes, free_memory


def _require_cuml() -> Any:
    if importlib.util.find_spec("cuml") is None:
        raise DeviceError(
            "engine='cuml' needs RAPIDS cuML (pip install 'usidgpu[cuml-cu12]' or '[cuml-cu13]'); "
            "engine='usidgpu' runs everywhere"
        )
    select_device("gpu")  # cuML runs only on a GPU: say so plainly when there is none
    import cuml

    return cuml


def _on_device(src: Any) -> Any:
    """The whole matrix on the GPU, for cuML. cuML holds it and about twice as much workspace;
    that, not the streaming budget of the usidgpu engine, is what must fit."""
    need = 3 * src.nbytes_work
    have = free_memory("gpu")
    hint = "use engine='usidgpu', which streams"
    if need > have:
        raise BudgetError(
            f"engine='cuml' needs the data on the GPU (about {format_bytes(need)} with workspace) but "
            f"{format_bytes(have)} is free; {hint}"
        )
    return src.to_memory(max_bytes=have // 3, hint=hint)


def cuml_svd(data: Any, k: int, device: Any = None, center: bool = False) -> Any:
    """TruncatedSVD (or PCA with ``center``) through cuML."""
    cuml = _require_cuml()
    from .results import PCAResult, SVDResult
    from .source import BlockSource, describe_source

    src = BlockSource(data, "gpu")
    x = _on_device(src)
    import cupy

    if center:
        model = cuml.PCA(n_components=k, output_type="cupy").fit(x)
        s = cupy.asnumpy(model.singular_values_)
        u = cupy.asnumpy(model.transform(x)) / np.where(s > 0, s, 1)
        var = asnumpy(model.explained_variance_)
        return PCAResult(
            U=u,
            S=s,
            V=asnumpy(model.components_),
            method="cuml",
            mean=asnumpy(model.mean_),
            explained_variance=var,
            explained_variance_ratio=asnumpy(model.explained_variance_ratio_),
            total_energy=float(var.sum() / max(asnumpy(model.explained_variance_ratio_).sum(), 1e-300))
            * (src.shape[0] - 1),
            **describe_source(src, parameters=dict(num_components=k, svd_method="cuml", engine="cuml")),
        )
    model = cuml.TruncatedSVD(n_components=k, output_type="cupy").fit(x)
    s = cupy.asnumpy(model.singular_values_)
    u = cupy.asnumpy(model.transform(x)) / np.where(s > 0, s, 1)
    return SVDResult(
        U=u,
        S=s,
        V=asnumpy(model.components_),
        method="cuml",
        total_energy=float(cupy.sum(cupy.abs(x) ** 2)),
        **describe_source(src, parameters=dict(num_components=k, svd_method="cuml", engine="cuml")),
    )


def cuml_kmeans(
    src: Any,
    raw: Any,
    k: int,
    init: Any,
    max_iter: int,
    tol: float,
    random_state: Any,
    features: str,
    n_components: Any,
) -> Any:
    """KMeans through cuML on the features of ``src``; mean spectra from the raw data."""
    cuml = _require_cuml()
    from .kmeans_steps import cluster_sums
    from .results import KMeansResult
    from .source import describe_source

    x = _on_device(src)
    if isinstance(init, str) and init not in ("k-means++", "random"):
        raise InvalidInput(f"init must be 'k-means++', 'random' or an array of centres, got {init!r}")
    init_arg = init if isinstance(init, str) else asnumpy(init)
    model = cuml.KMeans(
        n_clusters=k,
        init=init_arg,
        max_iter=max_iter,
        tol=tol,
        random_state=0 if random_state is None else int(random_state),
        output_type="numpy",
    ).fit(x)
    labels = np.asarray(model.labels_).astype(np.int64)
    _i, sums, counts, _f = cluster_sums(raw, labels, k)
    mean = asnumpy(sums / raw.xp.asarray(np.maximum(counts, 1))[:, None]).astype(raw.work)
    params = dict(n_clusters=k, features=features, engine="cuml", max_iter=max_iter, tol=tol)
    if n_components:
        params["n_components"] = n_components
    return KMeansResult(
        labels=labels.astype(np.uint32),
        centroids=np.asarray(model.cluster_centers_),
        mean_response=mean,
        counts=counts,
        inertia=float(model.inertia_),
        n_iter=int(getattr(model, "n_iter_", 0)),
        features=features,
        **describe_source(raw, parameters=params),
    )
