"""Deprecated: the block-wise SVD and k-means moved to :mod:`usidgpu.decompose.blockwise`
(``svd`` and ``kmeans`` there are ``svd_blockwise`` and ``kmeans_blockwise``, which return a
results group's path and no longer shadow :func:`usidgpu.svd` / :func:`usidgpu.kmeans`). Names
looked up here still work and warn; runs stored under this module's class names still resume."""

from __future__ import annotations

from .._deprecated import moved

__getattr__ = moved(
    __name__,
    "usidgpu.decompose.blockwise",
    {"GramSVD": "GramSVD", "BlockKMeans": "BlockKMeans", "svd": "svd_blockwise", "kmeans": "kmeans_blockwise"},
)
