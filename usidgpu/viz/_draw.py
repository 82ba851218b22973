"""Drawing primitives shared by the plots: figures, panel grids, colour scales, maps, spectra."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from matplotlib import colors as mcolors
from matplotlib.figure import Figure

from ._data import wrap_label
from ._views import Axis, View, same_scale

#: size of one small panel, inches (width, height)
PANEL = (2.9, 2.3)
LINESTYLES = ("-", "--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)))
PHASE_CMAP = "twilight"


def new_figure(size: tuple[float, float]) -> Figure:
    """A figure with constrained layout, attached to no GUI backend."""
    return Figure(figsize=size, layout="constrained")


def grid_shape(n: int) -> tuple[int, int]:
    """(rows, columns) for ``n`` panels: up to 3 in a row, then as square as possible."""
    ncols = n if n <= 3 else math.ceil(math.sqrt(n))
    return math.ceil(n / ncols), ncols


@dataclass
class Panel:
    """The axes of one component (two stacked ones for amplitude and phase)."""

    axes: list
    left: bool  # first column: gets the y label
    bottom: bool  # nothing below it: gets the x label
    right: bool  # last in its row


def panel_grid(fig, n: int, rows_per: int = 1, panel: tuple[float, float] = PANEL):
    """A figure (new when ``fig`` is None) with ``n`` panels of ``rows_per`` stacked axes each."""
    nrows, ncols = grid_shape(n)
    if fig is None:
        fig = new_figure((max(4.0, ncols * panel[0]), max(3.0, nrows * rows_per * panel[1] + 0.5)))
    gs = fig.add_gridspec(nrows * rows_per, ncols)
    panels = []
    for j in range(n):
        r, c = divmod(j, ncols)
        axes = []
        for i in range(rows_per):
            axes.append(fig.add_subplot(gs[r * rows_per + i, c], sharex=axes[0] if axes else None))
        for ax in axes[:-1]:
            ax.tick_params(labelbottom=False)
        panels.append(Panel(axes, left=c == 0, bottom=j + ncols >= n, right=c == ncols - 1 or j == n - 1))
    return fig, panels


def finite_range(values: np.ndarray) -> tuple[float, float] | None:
    finite = np.asarray(values)[np.isfinite(values)]
    if finite.size == 0:
        return None
    return float(finite.min()), float(finite.max())


def color_scale(values: np.ndarray, cmap: str = "viridis", signed_cmap: str = "RdBu_r") -> dict:
    """``vmin``, ``vmax`` and ``cmap`` for ``values``: symmetric and diverging when of both signs.

    A few outliers do not set the scale: when the full range is more than 1.5 times the range
    of the central 99 % of the values, the limits are the 0.5th and 99.5th percentiles (the
    colour bar then shows an arrow at the clipped end, see :func:`extend_of`).
    """
    finite = np.asarray(values)[np.isfinite(values)]
    if finite.size == 0:
        return {"vmin": 0.0, "vmax": 1.0, "cmap": cmap}
    lo, hi = float(finite.min()), float(finite.max())
    plo = float(np.percentile(finite, 0.5, method="higher"))  # actual values, never an outlier
    phi = float(np.percentile(finite, 99.5, method="lower"))  # blended into its neighbour
    if phi > plo and hi - lo > 1.5 * (phi - plo):
        lo, hi = plo, phi
    if lo < 0 < hi:
        m = max(-lo, hi)
        return {"vmin": -m, "vmax": m, "cmap": signed_cmap}
    if lo == hi:
        pad = abs(lo) * 0.05 or 0.5
        return {"vmin": lo - pad, "vmax": hi + pad, "cmap": cmap}
    return {"vmin": lo, "vmax": hi, "cmap": cmap}


def extend_of(values: np.ndarray, scale: dict) -> str:
    """``colorbar(extend=...)`` for values drawn with ``scale``: which ends are clipped."""
    r = finite_range(values)
    if r is None or "vmin" not in scale:
        return "neither"
    below, above = r[0] < scale["vmin"], r[1] > scale["vmax"]
    return {(False, False): "neither", (True, False): "min", (False, True): "max"}.get((below, above), "both")


def phase_scale() -> dict:
    return {"vmin": -np.pi, "vmax": np.pi, "cmap": PHASE_CMAP}


def parts(values: np.ndarray, name: str, units: str, phase: bool = True) -> list:
    """``[(real values, name, units)]``, or amplitude (and phase) of complex values."""
    if np.iscomplexobj(values):
        out = [(np.abs(values), f"{name} amplitude", units)]
        if phase:
            out.append((np.angle(values), f"{name} phase", "rad"))
        return out
    return [(np.asarray(values, dtype=np.float64), name, units)]


def category_colors(k: int) -> list:
    """``k`` distinct colours (tab10, tab20, then evenly spaced along turbo)."""
    from matplotlib import colormaps

    if k <= 10:
        return [colormaps["tab10"](i) for i in range(k)]
    if k <= 20:
        return [colormaps["tab20"](i) for i in range(k)]
    return [colormaps["turbo"](x) for x in np.linspace(0.05, 0.95, k)]


def category_scale(k: int) -> dict:
    """Colour map and norm giving cluster ``i`` the colour ``category_colors(k)[i]``."""
    cmap = mcolors.ListedColormap(category_colors(k), name="clusters").with_extremes(
        bad="white", under="lightgrey", over="lightgrey"
    )
    return {"cmap": cmap, "norm": mcolors.BoundaryNorm(np.arange(k + 1) - 0.5, k)}


def plain_ticks(axis, values: np.ndarray) -> None:
    """Tick labels such as ``2e-09`` instead of a ``1e-9`` multiplier above the axes.

    The multiplier would sit on a panel's title; it is only needed for values far from 1,
    which :func:`si_scaled` leaves only for units without an SI prefix to take.
    """
    r = finite_range(np.abs(values))
    if r is None or r[1] == 0 or 1e-3 <= r[1] < 1e5:
        return
    from matplotlib.ticker import FuncFormatter

    axis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:.3g}"))


def label_axes(ax, x: Axis | None, y: Axis | None = None) -> None:
    """Axis labels with units, and plain tick labels for extreme coordinates."""
    if x is not None:
        ax.set_xlabel(x.label)
        plain_ticks(ax.xaxis, x.values)
    if y is not None:
        ax.set_ylabel(y.label)
        plain_ticks(ax.yaxis, y.values)


def _image(ax, x: Axis, y: Axis, arr: np.ndarray, scale: dict):
    if x.uniform and y.uniform:
        return ax.imshow(
            arr,
            origin="lower",
            extent=(*x.extent, *y.extent),
            aspect="equal" if same_scale(x, y) else "auto",
            interpolation="nearest",
            **scale,
        )
    mesh = ax.pcolormesh(x.edges, y.edges, arr, shading="flat", **scale)
    if same_scale(x, y):
        ax.set_aspect("equal")
    return mesh


def _marker_size(n: int) -> float:
    return float(np.clip(3000.0 / max(n, 1), 4.0, 60.0))


def draw_positions(ax, view: View, values: np.ndarray, scale: dict, categorical: bool = False):
    """Draw one value per position; returns the colour-mapped artist (None for a plain curve).

    Labels the axes that carry coordinates; the caller labels the value axis of curves.
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    if view.kind == "image":
        art = _image(ax, view.x, view.y, view.arrange(values), scale)
        label_axes(ax, view.x, view.y)
        return art
    if view.kind == "scatter" and view.y is not None:
        art = ax.scatter(view.x.values, view.y.values, c=values, s=_marker_size(view.n), edgecolors="none", **scale)
        if same_scale(view.x, view.y):
            ax.set_aspect("equal", adjustable="datalim")
        label_axes(ax, view.x, view.y)
        return art
    x = view.x.values if view.x is not None else np.arange(values.size, dtype=np.float64)
    if view.x is not None:
        label_axes(ax, view.x)
    else:
        ax.set_xlabel("Position index")
    if categorical:
        return ax.scatter(x, values, c=values, s=_marker_size(view.n), edgecolors="none", **scale)
    if view.kind == "scatter":  # one scattered coordinate: points in coordinate order
        order = np.argsort(x, kind="stable")
        ax.plot(x[order], values[order], marker="o", ms=3, lw=1)
    else:
        ax.plot(x, values, lw=1.2, marker="o" if values.size <= 30 else None, ms=3)
    return None


def draw_spectrum(ax, view: View, values: np.ndarray, color=None, label: str | None = None, scale=None):
    """Draw one spectrum (real values) along the spectroscopic points; returns an image or None.

    ``view.kind`` is ``line``, ``lines``, ``index`` or ``image`` (``point`` is drawn as bars
    by the callers). Labels the x axis (and the y axis of an image).
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    if view.kind == "image":
        art = _image(ax, view.x, view.y, view.arrange(values), scale or color_scale(values))
        label_axes(ax, view.x, view.y)
        return art
    label_axes(ax, view.x)
    if view.kind == "lines":
        curves = view.arrange(values)
        for i, (curve, s) in enumerate(zip(curves, view.series.values)):
            tag = f"{view.series.name} = {s:g}" + (f" {view.series.units}" if view.series.units else "")
            if view.series.indexed:
                tag = f"{view.series.name} {i}"
            if color is None:
                ax.plot(view.x.values, curve, lw=1.2, label=tag)
            else:
                style = LINESTYLES[i % len(LINESTYLES)]
                ax.plot(view.x.values, curve, lw=1.2, color=color, ls=style, label=label if i == 0 else None)
        return None
    marker = "o" if values.size <= 30 else None
    ax.plot(view.x.values, values, lw=1.2, color=color, label=label, marker=marker, ms=3)
    return None


def colorbar(fig, art, ax, label: str | None, categories: int | None = None, extend: str = "neither"):
    """A colour bar beside ``ax``; integer ticks for ``categories`` clusters."""
    cb = fig.colorbar(art, ax=ax, shrink=0.9, pad=0.02, extend=extend)
    if label:
        cb.set_label(wrap_label(label))
    if categories is not None:
        if categories <= 20:
            cb.set_ticks(np.arange(categories))
        else:
            from matplotlib.ticker import MaxNLocator

            cb.locator = MaxNLocator(integer=True)
            cb.update_ticks()
        cb.minorticks_off()
    return cb


def integer_ticks(axis) -> None:
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))
