"""Spectral components of a decomposition against the spectroscopic dimensions."""

from __future__ import annotations

import numpy as np

from ._data import axis_label, data_label, kind_of, n_panels, spectral_series, tool_name, wrap_label
from ._draw import (
    category_colors,
    color_scale,
    colorbar,
    draw_spectrum,
    extend_of,
    integer_ticks,
    new_figure,
    panel_grid,
    parts,
    phase_scale,
)
from ._views import spectral_view


def plot_components(result, n: int | None = None, fig=None):
    """Draw the spectral components of ``result``, one small panel each.

    SVD/PCA: rows of ``V`` (titled with their share of the energy); NMF: rows of ``H``;
    k-means: rows of ``mean_response`` (the cluster colours of :func:`plot_clusters`).

    One spectroscopic dimension gives curves against its values; two give images (rows = the
    slower dimension) or, when one of them has at most 5 values, one curve per value of it;
    more dimensions or a non-grid layout give curves against the flat point number. A single
    spectroscopic point gives one bar per component. Complex components are drawn as amplitude
    (top) and phase in radians (below), and say so in their labels.

    Parameters
    ----------
    result : SVDResult, PCAResult, NMFResult or KMeansResult
    n : int, optional
        Number of components (the first ``n``); default ``min(k, 9)``, never more than ``k``.
    fig : matplotlib.figure.Figure or SubFigure, optional
        Where to draw; a new figure when omitted.

    Returns
    -------
    matplotlib.figure.Figure or SubFigure
    """
    series = spectral_series(result)
    n = n_panels(n, series.k)
    values = series.values[:n]
    view = spectral_view(result, values.shape[1])
    is_kmeans = kind_of(result) == "kmeans"
    colors = category_colors(series.k)[:n] if is_kmeans else [None] * n
    title = f"{tool_name(result)} {'mean responses' if is_kmeans else 'components'} of {data_label(result)}"

    if view.kind == "point":
        fig = fig if fig is not None else new_figure((4.8, 3.6))
        _bars(fig, values[:, 0], series, is_kmeans, colors)
        fig.suptitle(title)
        return fig

    complex_ = np.iscomplexobj(values)
    pieces = [parts(values[j], series.name, series.units) for j in range(n)]
    # Mean responses are in the data's units: one colour scale for all clusters, one colour bar.
    shared = is_kmeans and view.kind == "image"
    shared_scales = [
        phase_scale() if complex_ and i == 1 else color_scale(np.concatenate([p[i][0] for p in pieces]))
        for i in range(len(pieces[0]))
    ]
    shared_arts: list = [[] for _ in shared_scales]
    fig, panels = panel_grid(fig, n, rows_per=2 if complex_ else 1)
    for j, panel in enumerate(panels):
        for i, (ax, (vals, name, units)) in enumerate(zip(panel.axes, pieces[j])):
            is_phase = complex_ and i == 1
            scale = shared_scales[i] if shared or is_phase else color_scale(vals)
            art = draw_spectrum(ax, view, vals, color=colors[j], scale=scale)
            label = wrap_label(axis_label(name, units))
            if art is not None:  # an image: the value goes on a colour bar (labelled in the last column)
                if shared:
                    shared_arts[i].append(art)
                else:
                    colorbar(fig, art, ax, label if panel.right else None, extend=extend_of(vals, scale))
                if not panel.left:
                    ax.set_ylabel("")
            else:
                if panel.left:
                    ax.set_ylabel(label)
                if is_phase:
                    ax.set_ylim(-np.pi * 1.05, np.pi * 1.05)
                    ax.set_yticks([-np.pi, 0, np.pi], ["−π", "0", "π"])
                ax.grid(True, alpha=0.25)
            if not (panel.bottom and i == len(panel.axes) - 1):
                ax.set_xlabel("")
        panel.axes[0].set_title(series.titles[j], fontsize="medium", color=colors[j] or "black")
    for i, arts in enumerate(shared_arts):
        if arts:
            everything = np.concatenate([p[i][0] for p in pieces])
            name, units = pieces[0][i][1:]
            cb = fig.colorbar(
                arts[0], ax=[a.axes for a in arts], shrink=0.9, extend=extend_of(everything, shared_scales[i])
            )
            cb.set_label(wrap_label(axis_label(name, units)))
    if view.kind == "lines" and not is_kmeans:
        panels[0].axes[0].legend(fontsize="x-small", frameon=False)
    fig.suptitle(title)
    return fig


def _bars(fig, values: np.ndarray, series, is_kmeans: bool, colors) -> None:
    """One bar per component (single spectroscopic point); amplitude and phase when complex."""
    n = values.size
    x = np.arange(n) if is_kmeans else np.arange(1, n + 1)
    pieces = parts(values, series.name, series.units)
    axes = fig.subplots(len(pieces), 1, sharex=True, squeeze=False)[:, 0]
    bar_colors = colors if is_kmeans else "C0"
    for ax, (vals, name, units) in zip(axes, pieces):
        ax.bar(x, np.nan_to_num(vals), color=bar_colors, width=0.7)
        ax.axhline(0, color="0.3", lw=0.8)
        ax.set_ylabel(wrap_label(axis_label(name, units)))
        ax.grid(True, axis="y", alpha=0.25)
    axes[-1].set_xlabel("Cluster" if is_kmeans else "Component")
    integer_ticks(axes[-1].xaxis)
