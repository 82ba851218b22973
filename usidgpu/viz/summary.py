"""One summary figure per decomposition result."""

from __future__ import annotations

import numpy as np

from ._data import as_float, data_label, kind_of, n_panels, spectral_series, tool_name
from ._draw import grid_shape, integer_ticks, new_figure
from .clusters import plot_clusters
from .components import plot_components
from .maps import plot_maps
from .scree import plot_scree


def plot_decomposition(result, n: int | None = None):
    """The figure that sums up a result.

    SVD/PCA: scree plot, spectral components and abundance maps side by side; NMF: error per
    iteration (when ``errors`` is there), components and maps; k-means: :func:`plot_clusters`.

    Parameters
    ----------
    result : SVDResult, PCAResult, NMFResult or KMeansResult
    n : int, optional
        Components shown; default ``min(k, 9)``.

    Returns
    -------
    matplotlib.figure.Figure
    """
    kind = kind_of(result)
    if kind == "kmeans":
        return plot_clusters(result)
    k = spectral_series(result).k
    n = n_panels(n, k)
    nrows, ncols = grid_shape(n)
    errors = getattr(result, "errors", None) if kind == "nmf" else None
    errors = None if errors is None else as_float(errors).real.ravel()
    has_first = kind in ("svd", "pca") or (errors is not None and errors.size > 0)
    panel_w, panel_h = 2.8, 2.3
    height = max(4.2, nrows * panel_h + 0.9)
    side = 4.2 if has_first else 0.0
    fig = new_figure((side + 2 * ncols * panel_w, height))
    ratios = ([side] if has_first else []) + [ncols * panel_w, ncols * panel_w]
    subs = fig.subfigures(1, len(ratios), width_ratios=ratios, wspace=0.02)
    if has_first:
        first, comp, maps = subs
        if nrows > 1:  # a scree plot of sensible height, centred
            ax = first.add_subplot(first.add_gridspec(3, 1, height_ratios=[1, 2.2, 1])[1])
        else:
            ax = first.add_subplot()
        if kind == "nmf":
            _plot_errors(ax, errors, result)
        else:
            plot_scree(result, ax=ax)
    else:
        comp, maps = subs
    plot_components(result, n=n, fig=comp)
    comp.suptitle("Components")
    plot_maps(result, n=n, fig=maps)
    maps.suptitle("Abundance maps")
    fig.suptitle(f"{tool_name(result)} of {data_label(result)}", fontsize="x-large")
    return fig


def _plot_errors(ax, errors: np.ndarray, result) -> None:
    """‖X − WH‖_F after each NMF iteration, log scale."""
    it = np.arange(1, errors.size + 1)
    ax.plot(it, errors, "-", color="C0", lw=1.2, marker="o" if errors.size <= 30 else None, ms=3)
    if np.any(errors > 0):
        ax.set_yscale("log")
    units = getattr(result, "units", "") or ""
    ax.set_xlabel("Iteration")
    ax.set_ylabel("‖X − WH‖$_F$" + (f" ({units})" if units else ""))
    integer_ticks(ax.xaxis)
    ax.grid(True, which="major", alpha=0.3)
    ax.set_title("NMF convergence")
