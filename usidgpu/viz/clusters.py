"""k-means results: the cluster label map beside the mean response of every cluster."""

from __future__ import annotations

import numpy as np

from ..core.errors import InvalidType
from ._data import (
    as_float,
    axis_label,
    cluster_labels,
    cluster_titles,
    data_label,
    kind_of,
    n_clusters,
    to_numpy,
    wrap_label,
)
from ._draw import (
    category_colors,
    category_scale,
    colorbar,
    draw_positions,
    draw_spectrum,
    integer_ticks,
    new_figure,
    parts,
)
from ._views import position_view, spectral_view


def draw_label_map(fig, ax, result):
    """Draw the cluster label of every position on ``ax``; returns the colour-mapped artist.

    Cluster ``i`` gets colour ``i`` of a categorical colour map, with a colour bar of the
    cluster ids. A single position gives a bar chart of the cluster sizes instead.
    """
    labels = cluster_labels(result)
    k = n_clusters(result)
    view = position_view(result, labels.size)
    if view.kind == "point":
        counts = to_numpy(getattr(result, "counts", None))
        if counts is None:
            counts = np.array([np.count_nonzero(labels == i) for i in range(k)])
        ax.bar(np.arange(k), counts[:k], color=category_colors(k), width=0.7)
        ax.set_xlabel("Cluster ID")
        ax.set_ylabel("Positions")
        integer_ticks(ax.xaxis)
        integer_ticks(ax.yaxis)
        ax.set_title("Cluster sizes", fontsize="medium")
        return None
    art = draw_positions(ax, view, labels, category_scale(k), categorical=True)
    if view.kind not in ("image",) and view.y is None:
        ax.set_ylabel("Cluster ID")
        ax.set_ylim(-0.5, k - 0.5)
        integer_ticks(ax.yaxis)
        ax.grid(True, alpha=0.25)
    colorbar(fig, art, ax, "Cluster ID", categories=k)
    ax.set_title("Cluster map", fontsize="medium")
    return art


def plot_clusters(result, fig=None):
    """Draw a k-means result: the label map, beside the mean response of each cluster.

    The map (an image on a 2-D position grid, a scatter plot for sparse positions, points
    against the position for one dimension) uses a categorical colour map with a colour bar of
    the cluster ids; the mean responses are drawn in the same colours against the spectroscopic
    dimension, in the data's units, with a legend giving each cluster's size. Mean responses
    that are images (two spectroscopic dimensions) get one panel per cluster; complex ones are
    drawn as amplitude and phase.

    Parameters
    ----------
    result : KMeansResult
    fig : matplotlib.figure.Figure or SubFigure, optional
        Where to draw; a new figure when omitted.

    Returns
    -------
    matplotlib.figure.Figure or SubFigure
    """
    if kind_of(result) != "kmeans":
        raise InvalidType(f"plot_clusters needs a KMeansResult, got {type(result).__name__}")
    k = n_clusters(result)
    mean = np.atleast_2d(as_float(result.mean_response))
    view = spectral_view(result, mean.shape[1])
    colors = category_colors(k)
    titles = cluster_titles(result, k)
    quantity = getattr(result, "quantity", "Data") or "Data"
    units = getattr(result, "units", "") or ""

    if view.kind == "image":
        from .components import plot_components

        fig = fig if fig is not None else new_figure((12.0, 5.5))
        left, right = fig.subfigures(1, 2, width_ratios=[1, 1.4])
        draw_label_map(left, left.add_subplot(), result)
        plot_components(result, n=k, fig=right)
        right.suptitle("Mean response")
        fig.suptitle(f"k-means clusters of {data_label(result)}")
        return fig

    pieces = parts(mean, quantity, units)
    fig = fig if fig is not None else new_figure((10.5, 4.2 if len(pieces) == 1 else 5.2))
    gs = fig.add_gridspec(len(pieces), 2, width_ratios=[1, 1.25])
    draw_label_map(fig, fig.add_subplot(gs[:, 0]), result)
    axes = []
    for i, (vals, name, u) in enumerate(pieces):
        ax = fig.add_subplot(gs[i, 1], sharex=axes[0] if axes else None)
        axes.append(ax)
        if view.kind == "point":
            ax.bar(np.arange(k), np.nan_to_num(vals[:, 0]), color=colors, width=0.7)
            ax.axhline(0, color="0.3", lw=0.8)
            ax.set_xlabel("Cluster ID")
            integer_ticks(ax.xaxis)
        else:
            for j in range(k):
                draw_spectrum(ax, view, vals[j], color=colors[j], label=titles[j])
        ax.set_ylabel(wrap_label(axis_label(name, u)))
        ax.grid(True, alpha=0.25)
        if i < len(pieces) - 1:
            ax.set_xlabel("")
            ax.tick_params(labelbottom=False)
        if name.endswith("phase"):
            ax.set_ylim(-np.pi * 1.05, np.pi * 1.05)
            ax.set_yticks([-np.pi, 0, np.pi], ["−π", "0", "π"])
    axes[0].set_title("Mean response", fontsize="medium")
    if view.kind != "point":
        axes[0].legend(fontsize="small", frameon=False, ncols=1 if k <= 8 else 2)
    fig.suptitle(f"k-means clusters of {data_label(result)}")
    return fig
