"""Deprecated: the block-wise windowed SVD moved to :mod:`usidgpu.denoise.blockwise` (``windowed_svd``
there is ``windowed_svd_blockwise``). Names looked up here still work and warn; runs stored under
this module's class name still resume."""

from __future__ import annotations

from .._deprecated import moved

__getattr__ = moved(
    __name__, "usidgpu.denoise.blockwise", {"WindowedSVD": "WindowedSVD", "windowed_svd": "windowed_svd_blockwise"}
)
