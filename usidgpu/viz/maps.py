"""Per-position maps of a decomposition on the position grid."""

from __future__ import annotations

import numpy as np

from ._data import axis_label, data_label, kind_of, n_panels, position_series, tool_name, wrap_label
from ._draw import color_scale, colorbar, draw_positions, extend_of, integer_ticks, new_figure, panel_grid, parts
from ._views import position_view


def plot_maps(result, n: int | None = None, fig=None, *, scores: bool = False):
    """Draw the map of each component over the positions, one panel each.

    SVD/PCA: columns of ``U`` (or of the scores ``U·S`` with ``scores=True``, in the data's
    units); NMF: columns of ``W``; k-means: the label map (as :func:`plot_clusters`' left panel).

    Two position dimensions give images: rows follow the slower dimension (y axis), columns the
    faster (x axis), every pixel centred on its dimension values (``origin="lower"``, so y grows
    upwards), equal aspect when both axes share units, a colour bar each; signed maps use a
    diverging colour map centred on zero. One position dimension gives curves; one position
    gives one bar per component; non-grid (sparse) positions give scatter plots at the
    coordinates of the dimensions named X and Y (else the first two). Complex maps are drawn
    as amplitude. NaN values are left blank.

    Parameters
    ----------
    result : SVDResult, PCAResult, NMFResult or KMeansResult
    n : int, optional
        Number of components (the first ``n``); default ``min(k, 9)``, never more than ``k``.
    fig : matplotlib.figure.Figure or SubFigure, optional
        Where to draw; a new figure when omitted.
    scores : bool
        SVD/PCA only: draw ``U·S`` instead of ``U``.

    Returns
    -------
    matplotlib.figure.Figure or SubFigure
    """
    if kind_of(result) == "kmeans":
        from .clusters import draw_label_map

        fig = fig if fig is not None else new_figure((4.8, 4.0))
        draw_label_map(fig, fig.add_subplot(), result)
        return fig
    series = position_series(result, scores=scores)
    n = n_panels(n, series.k)
    values = series.values[:n]
    view = position_view(result, values.shape[1])
    what = "score" if scores else "abundance"
    title = f"{tool_name(result)} {what} maps of {data_label(result)}"

    if view.kind == "point":
        fig = fig if fig is not None else new_figure((4.8, 3.6))
        ax = fig.add_subplot()
        vals, name, units = parts(values[:, 0], series.name, series.units, phase=False)[0]
        ax.bar(np.arange(1, n + 1), np.nan_to_num(vals), width=0.7, color="C0")
        ax.axhline(0, color="0.3", lw=0.8)
        ax.set_xlabel("Component")
        ax.set_ylabel(wrap_label(axis_label(name, units)))
        integer_ticks(ax.xaxis)
        ax.grid(True, axis="y", alpha=0.25)
        fig.suptitle(title)
        return fig

    fig, panels = panel_grid(fig, n)
    for j, panel in enumerate(panels):
        ax = panel.axes[0]
        vals, name, units = parts(values[j], series.name, series.units, phase=False)[0]
        label = axis_label(name, units)
        scale = color_scale(vals)
        art = draw_positions(ax, view, vals, scale)
        if art is not None:  # colour bars all show the same quantity: label the last column's
            colorbar(fig, art, ax, label if panel.right else None, extend=extend_of(vals, scale))
        else:
            ax.set_ylabel(wrap_label(label))
            ax.grid(True, alpha=0.25)
        if not panel.left:
            ax.set_ylabel("")
        if not panel.bottom:
            ax.set_xlabel("")
        ax.set_title(series.titles[j], fontsize="medium")
    fig.suptitle(title)
    return fig
