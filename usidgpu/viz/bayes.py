"""Maps of a G-mode I–V Bayesian inference: R at chosen biases and C, with units."""

from __future__ import annotations

from typing import Any

import numpy as np

from ._draw import new_figure


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _grid_shape(group: Any) -> tuple[tuple[int, ...], list[str], list[str]]:
    """Position grid (slowest first), labels and units of the Resistance dataset of a results group."""
    from ..usid.dataset import MainDataset

    ds = MainDataset(group["Resistance"])
    dims = ds.pos_dims
    return tuple(d.size for d in dims), [d.name for d in dims], [d.units for d in dims]


def plot_giv_maps(result: Any, voltages: Any = None, *, shape: Any = None, fig: Any = None):
    """Maps of R(V) at a few biases (forward sweep) and of C per sweep.

    Parameters
    ----------
    result : h5py.Group or GIVResult
        A ``-Bayesian_Inference_NNN`` results group, or the in-memory result of
        :func:`usidgpu.bayes.giv_bayesian` (then give ``shape``).
    voltages : sequence of float, optional
        Biases of the R maps (nearest forward-sweep grid point); default −⅔, −⅓, ⅓, ⅔ of the range.
    shape : (rows, cols), optional
        Position grid of an in-memory result (default: one row).
    fig : matplotlib Figure, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    labels, units = ["Y", "X"], ["", ""]
    if hasattr(result, "resistance"):
        r = np.asarray(result.resistance, dtype=np.float64)
        c = np.asarray(result.capacitance, dtype=np.float64)
        bias = np.asarray(result.bias)
        ru, cu = result.units.get("resistance", ""), result.units.get("capacitance", "")
        grid = tuple(shape) if shape is not None else (1, r.shape[0])
    else:
        r = np.asarray(result["Resistance"][()], dtype=np.float64)
        c = np.asarray(result["Capacitance"][()], dtype=np.float64)
        bias = np.asarray(result["Resistance_Spectroscopic_Values"][()]).ravel()
        ru = _text(result["Resistance"].attrs.get("units", ""))
        cu = _text(result["Capacitance"].attrs.get("units", ""))
        grid, labels, units = _grid_shape(result)
    if len(grid) == 1:
        grid, labels, units = (1, grid[0]), ["", labels[0]], ["", units[0]]
    elif len(grid) > 2:
        grid = (int(np.prod(grid[:-1])), grid[-1])
    k = bias.size // 2
    fwd = bias[:k]
    if voltages is None:
        span = float(np.abs(fwd).max())
        voltages = [-2 * span / 3, -span / 3, span / 3, 2 * span / 3]
    cols = [int(np.argmin(np.abs(fwd - v))) for v in voltages]
    n = len(cols) + 2
    ncol = min(n, 3)
    nrow = -(-n // ncol)
    fig = fig if fig is not None else new_figure((4.0 * ncol, 3.4 * nrow))
    panels = [(r[:, j], f"R at {fwd[j]:.3g} V (forward)", "Resistance", ru) for j in cols]
    panels += [(c[:, 0], "C, forward sweep", "Capacitance", cu), (c[:, 1], "C, reverse sweep", "Capacitance", cu)]
    for i, (vals, title, q, u) in enumerate(panels):
        ax = fig.add_subplot(nrow, ncol, i + 1)
        img = vals.reshape(grid)
        finite = img[np.isfinite(img)]
        lo, hi = np.percentile(finite, [1, 99]) if finite.size else (0, 1)
        im = ax.imshow(img, origin="lower", cmap="viridis", vmin=lo, vmax=hi if hi > lo else lo + 1, aspect="auto")
        ax.set_title(title)
        ax.set_xlabel(f"{labels[1]} ({units[1]})" if units[1] else labels[1] or "position")
        if labels[0]:
            ax.set_ylabel(f"{labels[0]} ({units[0]})" if units[0] else labels[0])
        cb = fig.colorbar(im, ax=ax)
        cb.set_label(f"{q} ({u})" if u else q)
    fig.suptitle("G-mode I–V Bayesian inference")
    return fig
