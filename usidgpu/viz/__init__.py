"""Publication figures of decomposition results (SVD, PCA, NMF, k-means), with units on every axis.

Matplotlib only, drawn on :class:`matplotlib.figure.Figure` objects (no GUI backend, no pyplot):

>>> from usidgpu.viz import plot_decomposition, save_figure
>>> fig = plot_decomposition(result)          # doctest: +SKIP
>>> save_figure(fig, "figures/svd.pdf")       # doctest: +SKIP

``import usidgpu`` does not import this package (nor matplotlib).
"""

from .atoms import plot_columns, plot_strain, plot_tracks
from .bayes import plot_giv_maps
from .clusters import plot_clusters
from .components import plot_components
from .denoise import plot_denoise
from .maps import plot_maps
from .save import save_figure
from .scan_distortion import plot_scan_distortion
from .scree import plot_scree
from .summary import plot_decomposition

__all__ = [
    "plot_clusters",
    "plot_columns",
    "plot_components",
    "plot_decomposition",
    "plot_denoise",
    "plot_giv_maps",
    "plot_maps",
    "plot_scan_distortion",
    "plot_scree",
    "plot_strain",
    "plot_tracks",
    "save_figure",
]
