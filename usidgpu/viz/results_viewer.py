"""Interactive viewers of analysis results for notebooks (ipywidgets + matplotlib).

The counterparts of :class:`~usidgpu.viz.viewer.MainViewer` for what the analyses return:

>>> v = usidgpu.svd(ds, 8).visualize()     # component slider: map, loading, scree
>>> v.set(3)                               # component number 3 (``U[:, 2]``), as the slider
>>> v = usidgpu.kmeans(ds, 4).visualize()  # cluster picker: label map, mean responses
>>> v = analysis.visualize(image)          # atomic columns: picked column's fit, toggles

Every viewer has a ``widget`` (what a notebook displays; the viewer itself displays as it), a
``figure``, and attributes holding the arrays drawn, so that tests (and users) can check what is
shown. As with :class:`MainViewer`, the figure is an ipympl canvas (clickable) when ipympl is
installed and a Jupyter kernel runs, else a PNG redrawn on every change (``interactive=False``).
"""

from __future__ import annotations

import dataclasses
import html
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from ..core.errors import InvalidInput, InvalidType, SelectionError
from ._data import (
    ARBITRARY,
    as_float,
    axis_label,
    cluster_labels,
    cluster_titles,
    kind_of,
    n_clusters,
    position_series,
    spectral_series,
    tool_name,
    wrap_label,
)
from ._draw import (
    category_colors,
    color_scale,
    draw_positions,
    draw_spectrum,
    phase_scale,
)
from ._views import Axis, View, position_view, spectral_view
from .viewer import COMPLEX_PARTS, _nearest, attach_canvas, refresh_canvas

_PART_FUNCS = {"abs": np.abs, "phase": np.angle, "real": np.real, "imag": np.imag}
_PART_NAMES = {"abs": "amplitude", "phase": "phase", "real": "real part", "imag": "imaginary part"}


def _take_part(values: np.ndarray, part: str | None, name: str, units: str) -> tuple[np.ndarray, str, str]:
    """Real values to draw, and their name and units (``part`` of complex values)."""
    values = np.asarray(values)
    if not np.iscomplexobj(values):
        return np.asarray(values, dtype=np.float64), name, units
    part = part or "abs"
    out = np.asarray(_PART_FUNCS[part](values), dtype=np.float64)
    return out, f"{name} {_PART_NAMES[part]}", "rad" if part == "phase" else units


def _scale_for(values: np.ndarray, part: str | None, complex_: bool) -> dict:
    return phase_scale() if complex_ and part == "phase" else color_scale(values)


def _spec_view(result, n: int) -> View:
    """The spectral view, with a single spectroscopic point drawn as one point on an index axis."""
    view = spectral_view(result, n)
    if view.kind == "point":
        return View("index", n, x=Axis.index("Spectroscopic point", n), shape=(n,))
    return view


class _FigureViewer:
    """Figure, canvas and output widget of a viewer (as :class:`MainViewer`'s)."""

    figure: Figure
    interactive: bool

    def _make_figure(self, figsize, interactive) -> None:

        self.figure = Figure(figsize=figsize, layout="constrained")
        self.interactive, self._manager, self._output = attach_canvas(self.figure, interactive, self._on_click)

    def _refresh(self) -> None:
        refresh_canvas(self.figure, self.interactive, self._output)

    def _on_click(self, event) -> None:  # pragma: no cover - overridden
        pass

    def _part_dropdown(self, complex_: bool, part: str | None):
        """A drop-down of the complex parts (None for real results)."""
        import ipywidgets as w

        if not complex_:
            if part is not None:
                raise InvalidInput("part is only for complex results")
            return None
        if part is not None and part not in COMPLEX_PARTS:
            raise InvalidInput(f"part must be one of {COMPLEX_PARTS}, got {part!r}")
        self.part = part or "abs"
        dd = w.Dropdown(options=list(COMPLEX_PARTS), value=self.part, description="show")
        dd.observe(self._on_part, names="value")
        return dd

    def _on_part(self, change) -> None:
        self.part = change["new"]
        self._redraw()

    def _redraw(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)


def _colorbar(fig, art, ax, cb, label: str):
    """A colour bar for ``art`` beside ``ax``, reusing ``cb`` (its axes stay in the layout)."""
    if cb is None:
        cb = fig.colorbar(art, ax=ax, shrink=0.9, pad=0.02)
    else:
        cb.update_normal(art)
    cb.set_label(wrap_label(label))
    return cb


# ====================================================================================== SVD / NMF
class SVDViewer(_FigureViewer):
    """A component slider; the component's map beside its loading, and the scree.

    SVD/PCA: the map is column ``j`` of ``U`` (or of the scores ``U·S`` with ``scores=True``),
    the loading row ``j`` of ``V``, and the scree (singular values and cumulative energy) marks
    the component shown. NMF: column ``j`` of ``W`` and row ``j`` of ``H``, no scree.

    The map is an image over two position dimensions, a curve over one, a scatter plot of sparse
    positions; the loading is a curve against the spectroscopic dimension (an image over two,
    curves per value of a short second one).

    Parameters
    ----------
    result : SVDResult, PCAResult or NMFResult
    scores : bool
        SVD/PCA: map ``U·S`` (in the data's units) instead of ``U``.
    part : {"abs", "phase", "real", "imag"}, optional
        What to show of complex components (default ``"abs"``); a drop-down offers the others.
    interactive : bool, optional
        As :class:`MainViewer`: ipympl canvas (True) or PNG (False); default ipympl in a kernel.
    figsize : (float, float), optional

    Attributes
    ----------
    widget : ipywidgets.VBox
    figure : matplotlib.figure.Figure
    slider : ipywidgets.IntSlider
        The component *number*, 1 … k (as the scree's x axis and the static plots' titles).
    index : int
        The component shown, 0-based (``slider.value - 1``).
    ax_map, ax_loading, ax_scree : matplotlib.axes.Axes
        ``ax_scree`` is None for NMF.
    pos_view, spec_view : View
        How positions and spectroscopic points are laid out.
    map_data : ndarray
        The map's values in the layout drawn (``pos_view.arrange(U[:, index])``: rows = y).
    loading_data : ndarray
        The loading's values (``V[index]``, flat).
    map_artist : the image, scatter or line of the map
    loading_artist : the line (or image) of the loading
    colorbar, loading_colorbar : matplotlib.colorbar.Colorbar or None
    """

    def __init__(
        self,
        result,
        scores: bool = False,
        part: str | None = None,
        interactive: bool | None = None,
        figsize: tuple[float, float] | None = None,
    ):
        import ipywidgets as w

        self.kind = kind_of(result)
        if self.kind == "kmeans":
            raise InvalidType("a k-means result has a label map, not components: use ClusterViewer")
        if scores and self.kind == "nmf":
            raise InvalidInput("scores=True is for SVD/PCA results")
        self.result = result
        self.maps = position_series(result, scores=scores)
        self.loadings = spectral_series(result)
        self.k = min(self.maps.k, self.loadings.k)
        self.pos_view = position_view(result, self.maps.values.shape[1])
        self.spec_view = _spec_view(result, self.loadings.values.shape[1])
        self.part = None
        complex_ = np.iscomplexobj(self.maps.values) or np.iscomplexobj(self.loadings.values)
        self.part_dropdown = self._part_dropdown(complex_, part)

        self.slider = w.IntSlider(
            value=1,
            min=1,
            max=self.k,
            description="Component",
            disabled=self.k <= 1,
            style={"description_width": "initial"},
            layout=w.Layout(width="340px"),
        )
        self.slider.observe(self._on_slider, names="value")
        self._readout = w.Label()
        controls = [self.slider, self._readout] + ([self.part_dropdown] if self.part_dropdown else [])

        has_scree = self.kind in ("svd", "pca")
        if figsize is None:
            figsize = (14.0, 4.2) if has_scree else (10.0, 4.2)
        self._make_figure(figsize, interactive)
        if has_scree:
            self.ax_map, self.ax_loading, self.ax_scree = self.figure.subplots(1, 3, width_ratios=(1.15, 1, 0.95))
        else:
            (self.ax_map, self.ax_loading), self.ax_scree = self.figure.subplots(1, 2, width_ratios=(1.1, 1)), None
        self.colorbar = self.loading_colorbar = None
        if has_scree:
            self._draw_scree()
        self._redraw()
        self.widget = w.VBox([w.HBox(controls), self._output])

    # ------------------------------------------------------------ state
    @property
    def index(self) -> int:
        return int(self.slider.value) - 1

    def set(self, component: int) -> None:
        """Show component number ``component`` (1 … k, as the slider)."""
        self.slider.value = int(component)

    def _on_slider(self, change) -> None:
        self._redraw()

    # ------------------------------------------------------------ drawing
    def _draw_scree(self) -> None:
        from .scree import plot_scree

        plot_scree(self.result, ax=self.ax_scree)
        s = as_float(self.result.S).real.ravel()
        self._scree_s = np.where(s > 0, s, np.nan)
        self._scree_line = self.ax_scree.axvline(1, color="red", lw=1, alpha=0.6)
        (self._scree_marker,) = self.ax_scree.plot([], [], "o", ms=11, mfc="none", mec="red", mew=2, zorder=5)

    def _redraw(self) -> None:
        j = self.index
        title = self.loadings.titles[j]
        self._readout.value = title
        self._draw_map(j, title)
        self._draw_loading(j, title)
        if self.ax_scree is not None:
            self._scree_line.set_xdata([j + 1, j + 1])
            self._scree_marker.set_data([j + 1], [self._scree_s[j]])
        self._refresh()

    def _draw_map(self, j: int, title: str) -> None:
        ax, view = self.ax_map, self.pos_view
        raw = self.maps.values[j]
        self.map_data = view.arrange(raw)
        vals, name, units = _take_part(raw, self.part, self.maps.name, self.maps.units)
        label = axis_label(name, units)
        ax.cla()
        art = draw_positions(ax, view, vals, _scale_for(vals, self.part, np.iscomplexobj(raw)))
        if art is not None:
            self.colorbar = _colorbar(self.figure, art, ax, self.colorbar, label)
            self.map_artist = art
        else:
            ax.set_ylabel(wrap_label(label))
            ax.grid(True, alpha=0.25)
            self.map_artist = ax.lines[-1]
        what = "score" if self.maps.name != "Abundance" else "abundance"
        ax.set_title(f"{title}: {what}", fontsize=10)

    def _draw_loading(self, j: int, title: str) -> None:
        ax, view = self.ax_loading, self.spec_view
        raw = self.loadings.values[j]
        self.loading_data = raw
        vals, name, units = _take_part(raw, self.part, self.loadings.name, self.loadings.units)
        label = axis_label(name, units)
        ax.cla()
        art = draw_spectrum(ax, view, vals, scale=_scale_for(vals, self.part, np.iscomplexobj(raw)))
        if art is not None:
            self.loading_colorbar = _colorbar(self.figure, art, ax, self.loading_colorbar, label)
            self.loading_artist = art
        else:
            self.loading_artist = ax.lines[0]  # the first curve (the only one but for "lines")
            ax.set_ylabel(wrap_label(label))
            ax.axhline(0, color="0.6", lw=0.6, zorder=0)
            ax.grid(True, alpha=0.25)
            if view.kind == "lines":
                ax.legend(fontsize="x-small", frameon=False)
            if self.part == "phase" and np.iscomplexobj(raw):
                ax.set_ylim(-np.pi * 1.05, np.pi * 1.05)
        ax.set_title(f"{title}: {'loading' if self.kind != 'nmf' else 'component'}", fontsize=10)

    # ------------------------------------------------------------ clicks
    def _on_click(self, event) -> None:
        """A click on the scree picks the component nearest to it."""
        if self.ax_scree is None or event.inaxes is None or not self.ax_scree.bbox.contains(event.x, event.y):
            return
        x, _ = self.ax_scree.transData.inverted().transform((event.x, event.y))  # the twin axes is on top
        self.set(int(np.clip(round(x), 1, self.k)))

    def __repr__(self) -> str:
        return (
            f"<usidgpu SVDViewer of a {tool_name(self.result)} result: {self.k} components, {self.pos_view.kind} maps>"
        )


# ====================================================================================== k-means
class ClusterViewer(_FigureViewer):
    """The cluster label map; picking a cluster highlights it and its mean response.

    The other clusters fade on the map and their mean responses are drawn faint. Pick with the
    drop-down (``"all"`` highlights none), :meth:`set`, or by clicking the map.

    Parameters
    ----------
    result : KMeansResult
    part : {"abs", "phase", "real", "imag"}, optional
        What to show of complex mean responses.
    interactive : bool, optional
    figsize : (float, float)

    Attributes
    ----------
    widget, figure
    dropdown : ipywidgets.Dropdown
        Value: the cluster id, or -1 for all.
    cluster : int or None
        The cluster picked (None for all).
    ax_map, ax_mean : matplotlib.axes.Axes
    labels_data : ndarray
        The label of every position in the layout drawn (``pos_view.arrange(labels)``).
    highlight : ndarray of bool
        Which positions are highlighted, in the same layout (all True for all clusters).
    mean_data : ndarray
        The mean response of the picked cluster (``mean_response[c]``), or all of them.
    mean_lines : list of list of Line2D
        The curves of each cluster's mean response (empty when they are images).
    map_artist : the label map's image or scatter (None for a single position)
    """

    #: opacity of what is not picked
    FAINT = 0.18

    def __init__(
        self,
        result,
        part: str | None = None,
        interactive: bool | None = None,
        figsize: tuple[float, float] = (11.0, 4.4),
    ):
        import ipywidgets as w

        from .clusters import draw_label_map

        if kind_of(result) != "kmeans":
            raise InvalidType(f"ClusterViewer needs a KMeansResult, got {type(result).__name__}")
        self.result = result
        self.k = n_clusters(result)
        self.labels = cluster_labels(result)
        self.mean = np.atleast_2d(as_float(result.mean_response))
        self.pos_view = position_view(result, self.labels.size)
        self.spec_view = _spec_view(result, self.mean.shape[1])
        self.titles = cluster_titles(result, self.k)
        self.colors = category_colors(self.k)
        self.quantity = getattr(result, "quantity", "Data") or "Data"
        self.units = getattr(result, "units", ARBITRARY) or ""
        self.part = None
        self.part_dropdown = self._part_dropdown(np.iscomplexobj(self.mean), part)

        self.dropdown = w.Dropdown(
            options=[("all", -1)] + [(t, j) for j, t in enumerate(self.titles)],
            value=0,
            description="Cluster",
        )
        self.dropdown.observe(lambda change: self._redraw(), names="value")
        controls = [self.dropdown] + ([self.part_dropdown] if self.part_dropdown else [])

        self._make_figure(figsize, interactive)
        self.ax_map, self.ax_mean = self.figure.subplots(1, 2, width_ratios=(1, 1.2))
        self.labels_data = self.pos_view.arrange(self.labels) if self.pos_view.kind != "point" else self.labels
        self.map_artist = draw_label_map(self.figure, self.ax_map, result)
        self._veil = None
        if self.pos_view.kind == "image":  # white over the clusters not picked
            from matplotlib.colors import ListedColormap

            from ._draw import _image

            white = ListedColormap(["white"]).with_extremes(bad=(0, 0, 0, 0))
            self._veil = _image(
                self.ax_map, self.pos_view.x, self.pos_view.y, self.labels_data * np.nan, {"cmap": white}
            )
            self._veil.set_clim(0, 1)
            self._veil.set_alpha(1 - self.FAINT)
        self._bars = list(self.ax_map.patches) if self.pos_view.kind == "point" else []
        self.mean_colorbar = None
        self.mean_lines: list[list] = []
        self._draw_means(first=True)
        self._redraw()
        self.widget = w.VBox([w.HBox(controls), self._output])

    # ------------------------------------------------------------ state
    @property
    def cluster(self) -> int | None:
        c = int(self.dropdown.value)
        return None if c < 0 else c

    def set(self, cluster: int | None) -> None:
        """Pick cluster ``cluster`` (None or -1: all)."""
        self.dropdown.value = -1 if cluster is None else int(cluster)

    @property
    def value_label(self) -> str:
        _, name, units = _take_part(self.mean[:1], self.part, self.quantity, self.units)
        return axis_label(name, units)

    # ------------------------------------------------------------ drawing
    def _values(self) -> np.ndarray:
        return _take_part(self.mean, self.part, self.quantity, self.units)[0]

    def _draw_means(self, first: bool = False) -> None:
        """Curves of every cluster's mean response (images are drawn per pick in :meth:`_redraw`)."""
        ax, view = self.ax_mean, self.spec_view
        if view.kind == "image":
            return
        ax.cla()
        vals = self._values()
        self.mean_lines = []
        for j in range(self.k):
            before = len(ax.lines)
            draw_spectrum(ax, view, vals[j], color=self.colors[j], label=self.titles[j])
            self.mean_lines.append(ax.lines[before:])
        ax.set_ylabel(wrap_label(self.value_label))
        ax.grid(True, alpha=0.25)
        if self.part == "phase" and np.iscomplexobj(self.mean):
            ax.set_ylim(-np.pi * 1.05, np.pi * 1.05)
        if self.k <= 12:
            ax.legend(fontsize="x-small", frameon=False, ncols=1 if self.k <= 6 else 2)

    def _on_part(self, change) -> None:
        self.part = change["new"]
        self._draw_means()
        self._redraw()

    def _redraw(self) -> None:
        c = self.cluster
        sel = np.ones(self.labels.shape, dtype=bool) if c is None else self.labels == c
        self.highlight = self.pos_view.arrange(sel) if self.pos_view.kind != "point" else sel
        # the map
        if self._veil is not None:
            self._veil.set_array(np.where(self.highlight, np.nan, 1.0))
        elif self.map_artist is not None:  # scatter: fade the points of the others
            self.map_artist.set_alpha(np.where(sel, 1.0, self.FAINT))
        for j, bar in enumerate(self._bars):
            bar.set_alpha(1.0 if c is None or j == c else self.FAINT)
        self.ax_map.set_title("Cluster map" if c is None else f"Cluster map: {self.titles[c]}", fontsize=10)
        # the mean responses
        self.mean_data = self.mean if c is None else self.mean[c]
        if self.spec_view.kind == "image":
            self._draw_mean_image(0 if c is None else c)
        else:
            for j, lines in enumerate(self.mean_lines):
                on = c is None or j == c
                for ln in lines:
                    ln.set_alpha(1.0 if on else self.FAINT)
                    ln.set_linewidth(2.2 if (on and c is not None) else 1.2)
                    ln.set_zorder(3 if on else 2)
            what = "Mean responses" if c is None else f"Mean response: {self.titles[c]}"
            self.ax_mean.set_title(what, fontsize=10, color="black" if c is None else self.colors[c])
        self._refresh()

    def _draw_mean_image(self, c: int) -> None:
        ax = self.ax_mean
        ax.cla()
        vals = self._values()[c]
        scale = _scale_for(vals, self.part, np.iscomplexobj(self.mean))
        art = draw_spectrum(ax, self.spec_view, vals, scale=scale)
        self.mean_artist = art
        self.mean_colorbar = _colorbar(self.figure, art, ax, self.mean_colorbar, self.value_label)
        ax.set_title(f"Mean response: {self.titles[c]}", fontsize=10, color=self.colors[c])

    # ------------------------------------------------------------ clicks
    def _on_click(self, event) -> None:
        if event.inaxes is not self.ax_map or event.xdata is None or event.ydata is None:
            return
        view = self.pos_view
        if view.kind == "image":
            label = self.labels_data[_nearest(view.y.values, event.ydata), _nearest(view.x.values, event.xdata)]
        elif view.kind == "scatter" and view.y is not None:
            span_x = np.ptp(view.x.values) or 1.0
            span_y = np.ptp(view.y.values) or 1.0
            d = ((view.x.values - event.xdata) / span_x) ** 2 + ((view.y.values - event.ydata) / span_y) ** 2
            label = self.labels[int(np.argmin(d))]
        elif view.kind == "point":
            label = _nearest(np.arange(self.k), event.xdata)
        else:
            x = view.x.values if view.x is not None else np.arange(self.labels.size)
            label = self.labels[_nearest(x, event.xdata)]
        if np.isfinite(label):
            self.set(int(label))

    def __repr__(self) -> str:
        return f"<usidgpu ClusterViewer: {self.k} clusters, {self.pos_view.kind} map>"


# ====================================================================================== columns
class ColumnsViewer(_FigureViewer):
    """Atomic columns over their image; pick a column to read its fitted parameters.

    The overlay is :func:`usidgpu.viz.plot_columns`'s (sublattices, vacancies, displacement
    arrows); a slider (or a click on the image) picks a column, which is ringed in red with its
    ideal lattice site marked, and its fit — every parameter with its one-sigma error, in pixels
    and in the image's units — is listed beside the image. Check boxes show or hide the
    displacement arrows and the vacancies.

    Parameters
    ----------
    analysis : ColumnAnalysis
    image : ndarray (H, W), stack or MainDataset, optional
        The analyzed image (default: the analysis's source dataset).
    show_displacements, show_vacancies : bool
    arrow_scale : float, optional
        Magnification of the arrows (see :func:`plot_columns`).
    interactive : bool, optional
    figsize : (float, float)

    Attributes
    ----------
    widget, figure, ax
    slider : ipywidgets.IntSlider
        The column number (row of ``analysis.table()``).
    displacements, vacancies : ipywidgets.Checkbox
    text : ipywidgets.HTML
        The picked column's fit.
    column : int
    marker : Line2D
        The ring around the picked column (in the axes' coordinates, i.e. scaled to the units).
    """

    def __init__(
        self,
        analysis,
        image=None,
        show_displacements: bool = True,
        show_vacancies: bool = True,
        arrow_scale: float | None = None,
        interactive: bool | None = None,
        figsize: tuple[float, float] = (8.5, 6.0),
    ):
        import ipywidgets as w

        from .atoms import _frame, _scale

        if image is None:
            image = getattr(analysis, "source", None)
            if image is None:
                raise InvalidInput("give the analyzed image: the analysis has no source dataset")
        self.analysis = analysis
        self.image = _frame(image, getattr(analysis, "frame", 0))  # read once, not on every redraw
        self.arrow_scale = arrow_scale
        self.sy, self.sx, self.display_units = _scale(analysis.pixel_size, analysis.units)
        self.table = analysis.table()
        self.n = int(analysis.n_columns)
        if self.n == 0:
            raise InvalidInput("the analysis has no columns")
        self._pos = np.asarray(analysis.positions, dtype=np.float64)

        self.slider = w.IntSlider(
            value=0,
            min=0,
            max=self.n - 1,
            description="Column",
            disabled=self.n <= 1,
            style={"description_width": "initial"},
            layout=w.Layout(width="340px"),
        )
        self.slider.observe(lambda change: self._pick(), names="value")
        has_vac = getattr(analysis, "vacancies", None) is not None and len(analysis.vacancies) > 0
        self.displacements = w.Checkbox(value=bool(show_displacements), description="displacements", indent=False)
        self.vacancies = w.Checkbox(
            value=bool(show_vacancies) and has_vac, description="vacancies", indent=False, disabled=not has_vac
        )
        for cb in (self.displacements, self.vacancies):
            cb.observe(lambda change: self._redraw(), names="value")
        self.text = w.HTML(layout=w.Layout(min_width="300px"))

        self._make_figure(figsize, interactive)
        self.ax = self.figure.add_subplot()
        self._redraw()
        controls = w.HBox([self.slider, self.displacements, self.vacancies])
        self.widget = w.VBox([controls, w.HBox([self._output, self.text])])

    # ------------------------------------------------------------ state
    @property
    def column(self) -> int:
        return int(self.slider.value)

    def set(self, column: int | None = None, displacements: bool | None = None, vacancies: bool | None = None) -> None:
        """Pick a column and/or toggle the arrows and vacancies."""
        if displacements is not None:
            self.displacements.value = bool(displacements)
        if vacancies is not None:
            self.vacancies.value = bool(vacancies) and not self.vacancies.disabled
        if column is not None:
            if not 0 <= int(column) < self.n:
                raise SelectionError(f"column {column} does not exist ({self.n} columns)")
            self.slider.value = int(column)

    # ------------------------------------------------------------ drawing
    def _redraw(self) -> None:
        from .atoms import plot_columns

        shown = self.analysis
        if not self.vacancies.value and getattr(shown, "vacancies", None) is not None:
            shown = dataclasses.replace(shown, vacancies=None)
        self.ax.cla()
        plot_columns(
            shown, self.image, ax=self.ax, show_displacements=self.displacements.value, arrow_scale=self.arrow_scale
        )
        (self._site,) = self.ax.plot([], [], "+", color="red", ms=10, mew=1.5, zorder=6)
        (self.marker,) = self.ax.plot([], [], "o", mfc="none", mec="red", ms=16, mew=2, zorder=7)
        self._pick()

    def _pick(self) -> None:
        i = self.column
        y, x = self._pos[i]
        self.marker.set_data([x * self.sx], [y * self.sy])
        d = np.asarray(self.analysis.displacement[i], dtype=np.float64)
        if np.all(np.isfinite(d)):
            self._site.set_data([(x - d[1]) * self.sx], [(y - d[0]) * self.sy])
        else:
            self._site.set_data([], [])
        self.text.value = "<pre style='font-size: 12px'>" + html.escape(self.describe(i)) + "</pre>"
        self._refresh()

    def describe(self, i: int) -> str:
        """The fit of column ``i`` as text (what the text widget shows)."""
        t = self.table
        units = self.display_units
        physical = units != "px"

        def row(name: str, unit: str = "", scale: float | None = None) -> str:
            v, e = float(t[name][i]), float(t[f"{name}_error"][i])
            s = f"{name:<10} = {v:.3f} ± {e:.3f}" + (f" {unit}" if unit else "")
            if scale is not None and physical:
                s += f"  ({v * scale:.4g} ± {e * scale:.2g} {units})"
            return s

        lines = [f"Column {i} of {self.n}, sublattice {int(t['sublattice'][i])}"]
        if int(t["cell_i"][i]) >= 0:
            lines[0] += f", cell ({int(t['cell_i'][i])}, {int(t['cell_j'][i])}) site {int(t['site'][i])}"
        lines += [
            row("x", "px", self.sx),
            row("y", "px", self.sy),
            row("amplitude", "(image units)"),
            row("sigma_x", "px", self.sx),
            row("sigma_y", "px", self.sy),
            row("theta", "rad"),
            row("background", "(image units)"),
        ]
        dy, dx = float(t["dy"][i]), float(t["dx"][i])
        if np.isfinite(dx) and np.isfinite(dy):
            s = f"displacement dx = {dx:.3f} px, dy = {dy:.3f} px, |d| = {np.hypot(dx, dy):.3f} px"
            if physical:
                s += f" ({np.hypot(dx * self.sx, dy * self.sy):.3g} {units})"
            lines.append(s)
        else:
            lines.append("displacement: no lattice")
        conv = "yes" if bool(t["converged"][i]) else "NO"
        lines.append(
            f"converged: {conv}, {int(t['n_iter'][i])} iterations, {int(t['n_pixels'][i])} px, "
            f"rms residual {float(t['rms_residual'][i]):.3g}"
        )
        lines.append(f"start (y, x) = ({float(t['y_start'][i]):.2f}, {float(t['x_start'][i]):.2f}) px")
        return "\n".join(lines)

    # ------------------------------------------------------------ clicks
    def _on_click(self, event) -> None:
        if event.inaxes is not self.ax or event.xdata is None or event.ydata is None:
            return
        d = (self._pos[:, 1] - event.xdata / self.sx) ** 2 + (self._pos[:, 0] - event.ydata / self.sy) ** 2
        self.set(int(np.argmin(d)))

    def __repr__(self) -> str:
        return f"<usidgpu ColumnsViewer: {self.n} columns on a {self.image.shape[0]}×{self.image.shape[1]} px image>"


def visualize(result, *args: Any, **kwargs: Any):
    """The viewer of ``result``: :class:`SVDViewer`, :class:`ClusterViewer` or :class:`ColumnsViewer`."""
    if hasattr(result, "fit") and hasattr(result, "sublattice"):
        return ColumnsViewer(result, *args, **kwargs)
    if kind_of(result) == "kmeans":
        return ClusterViewer(result, *args, **kwargs)
    return SVDViewer(result, *args, **kwargs)


__all__ = ["ClusterViewer", "ColumnsViewer", "SVDViewer", "visualize"]
