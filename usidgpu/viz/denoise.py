"""Figure 1 of the USID/pycroscopy paper: raw, cleaned, removed noise — and the scree plot that chose k."""

from __future__ import annotations

import numpy as np

from ._data import axis_label, si_scaled
from ._draw import new_figure
from .rank_line import threshold_of


def _pixel_scale(dim) -> tuple[float, str]:
    """Size of one pixel along ``dim`` and its units (pixels when the values are not a ramp)."""
    values = np.asarray(dim.values, dtype=np.float64)
    if values.size >= 2 and dim.units and dim.units != "px":
        steps = np.diff(values)
        if np.all(steps > 0) and np.allclose(steps, steps[0], rtol=1e-3):
            scaled, units = si_scaled(np.array([steps[0] * values.size]), dim.units)
            return float(scaled[0]) / values.size, units
    return 1.0, "px"


def _nice_length(target: float) -> float:
    """1, 2 or 5 × 10ⁿ just below ``target``."""
    if target <= 0:
        return 1.0
    exp = np.floor(np.log10(target))
    for mult in (5, 2, 1):
        if mult * 10**exp <= target:
            return float(mult * 10**exp)
    return float(10**exp)


def _scale_bar(ax, width: float, height: float, units: str) -> None:
    """A white bar of a round length (about a quarter of the image) with its length, lower right;
    the axes' data coordinates are lengths in ``units``."""
    from matplotlib.offsetbox import AnchoredOffsetbox, AuxTransformBox, TextArea, VPacker
    from matplotlib.patches import Rectangle

    length = _nice_length(0.25 * width)
    box = AuxTransformBox(ax.transData)
    box.add_artist(Rectangle((0, 0), length, height / 100, color="white"))
    label = TextArea(f"{length:g} {units}", textprops=dict(color="white", fontsize=8, fontweight="bold"))
    packed = VPacker(children=[box, label], align="center", pad=0, sep=2)
    ax.add_artist(AnchoredOffsetbox(loc="lower right", child=packed, frameon=False, pad=0.4, borderpad=0.5))


def plot_denoise(result, frame: int = 0):
    """Raw | cleaned | removed noise, with a scale bar, and the scree plot with the chosen k.

    Parameters
    ----------
    result : WindowedSVDResult
    frame : int
        Which frame of a stack.

    Returns
    -------
    matplotlib.figure.Figure
    """
    raw = np.asarray(result.raw if result.raw.ndim == 2 else result.raw[frame], dtype=np.float64)
    cleaned = np.asarray(result.cleaned if result.cleaned.ndim == 2 else result.cleaned[frame], dtype=np.float64)
    noise = raw - cleaned
    h, w = raw.shape
    ydim, xdim = result.pos_dims[0], result.pos_dims[1]
    px_x, units_x = _pixel_scale(xdim)
    px_y, _units_y = _pixel_scale(ydim)
    fig = new_figure((13.5, 3.8))
    grid = fig.add_gridspec(1, 4, width_ratios=[1, 1, 1, 1.1])
    lo, hi = np.nanpercentile(raw, [0.5, 99.5])
    data_label = axis_label(result.quantity, result.units)
    images = (
        ("Raw", raw, dict(cmap="gray", vmin=lo, vmax=hi)),
        (f"Cleaned (k = {result.k})", cleaned, dict(cmap="gray", vmin=lo, vmax=hi)),
        (
            "Removed noise",
            noise,
            dict(
                cmap="RdBu_r", vmin=-np.nanpercentile(np.abs(noise), 99.5), vmax=np.nanpercentile(np.abs(noise), 99.5)
            ),
        ),
    )
    for i, (title, arr, style) in enumerate(images):
        ax = fig.add_subplot(grid[0, i])
        extent = (0, w * px_x, h * px_y, 0)
        art = ax.imshow(arr, extent=extent, interpolation="nearest", **style)
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
        _scale_bar(ax, w * px_x, h * px_y, units_x)
        cbar = fig.colorbar(art, ax=ax, shrink=0.8, pad=0.02)
        cbar.ax.tick_params(labelsize=7)
        if i == 2:
            cbar.set_label(data_label, fontsize=8)
    ax = fig.add_subplot(grid[0, 3])
    s = np.asarray(result.singular_values, dtype=np.float64)
    idx = np.arange(1, s.size + 1)
    ax.semilogy(idx, s, ".", ms=3, color="0.4", label="singular values")
    ax.semilogy(idx[: result.k], s[: result.k], ".", ms=4, color="C3", label=f"kept (k = {result.k})")
    threshold = threshold_of(result)
    if threshold is not None:
        ax.axhline(threshold, color="C0", lw=1, ls="--", label="threshold")
    ax.axvline(result.k + 0.5, color="C3", lw=0.8, ls=":")
    ax.set_xscale("log")
    ax.set_xlabel("Component")
    ax.set_ylabel("Singular value")
    ax.set_title(f"Scree ({result.window[0]}×{result.window[1]} px windows)", fontsize=10)
    ax.legend(fontsize=7, frameon=False)
    return fig
