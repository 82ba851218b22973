"""Scree plot of an SVD or PCA: singular values and the cumulative share of the signal."""

from __future__ import annotations

import numpy as np

from ..core.errors import InvalidType
from ._data import as_float, energy_fractions, kind_of, tool_name
from ._draw import integer_ticks, new_figure


def plot_scree(result, ax=None):
    """Singular values (log scale) and cumulative energy against the component number.

    Parameters
    ----------
    result : SVDResult or PCAResult
    ax : matplotlib.axes.Axes, optional
        Where to draw; a new figure when omitted.

    Returns
    -------
    matplotlib.axes.Axes
        The axes of the singular values (line 0 holds them, x = 1 … k). The cumulative share,
        in percent, is drawn on a twin axes on the right (``ax.figure.axes``); it is the
        share of ‖X‖²_F for an SVD (``energy_ratio``) and of the variance for a PCA
        (``explained_variance_ratio``). When ``total_energy`` is unknown it is the share of
        the ``k`` components' energy, and the label says so.

    Raises
    ------
    TypeError
        For results without singular values (NMF, k-means).
    """
    kind = kind_of(result)
    if kind not in ("svd", "pca"):
        raise InvalidType(f"a scree plot needs singular values; {type(result).__name__} has none")
    if ax is None:
        ax = new_figure((4.6, 3.4)).add_subplot()
    s = as_float(result.S).real.ravel()
    k = s.size
    x = np.arange(1, k + 1)
    units = getattr(result, "units", "") or ""
    shown = np.where(s > 0, s, np.nan)  # zeros have no place on a log axis
    (sv_line,) = ax.plot(x, shown, "o-", color="C0", ms=4, lw=1.2, label="Singular value")
    if np.any(np.isfinite(shown)):
        ax.set_yscale("log")
    ax.set_xlabel("Component")
    ax.set_ylabel(f"Singular value ({units})" if units else "Singular value", color="C0")
    ax.tick_params(axis="y", colors="C0")
    integer_ticks(ax.xaxis)
    ax.set_xlim(0.5, k + 0.5)
    ax.grid(True, which="major", alpha=0.3)

    frac = energy_fractions(result)
    what = "variance" if kind == "pca" else "energy"
    of = "total"
    if not np.all(np.isfinite(frac)):
        energy = np.where(np.isfinite(s), s, 0.0) ** 2
        frac = energy / energy.sum() if energy.sum() > 0 else np.full(k, np.nan)
        of = f"{k} components"
    twin = ax.twinx()
    cum = 100 * np.cumsum(np.where(np.isfinite(frac), frac, 0.0))
    cum[~np.isfinite(frac)] = np.nan
    (cum_line,) = twin.plot(x, cum, "s--", color="C1", ms=3.5, lw=1.2, label=f"Cumulative {what}")
    twin.set_ylabel(f"Cumulative {what} (% of {of})", color="C1")
    twin.tick_params(axis="y", colors="C1")
    top = np.nanmax(cum) if np.any(np.isfinite(cum)) else 100.0
    twin.set_ylim(0, max(100.0, top) * 1.04)
    ax.legend(handles=[sv_line, cum_line], loc="center right", fontsize="small", frameon=False)
    ax.set_title(f"{tool_name(result)} scree")
    return ax
