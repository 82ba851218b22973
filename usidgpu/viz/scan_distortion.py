"""The scan distortion fitted to an image's columns: fast- and slow-scan spacing profiles, line shift.

Each profile is drawn with its ±2σ band and, as points, what the columns themselves say: the
apparent spacing of neighbouring columns (in the image) over their ideal spacing (on the specimen
lattice), binned along the scan direction — the evidence the curve was fitted to.
"""

from __future__ import annotations

import numpy as np

from ..atoms.scan_distortion import neighbour_spacings
from ..core.errors import InvalidInput
from ._data import axis_label
from ._draw import new_figure


def plot_scan_distortion(analysis):
    """Fast-scan spacing along x, slow-scan spacing along y and the lines' sideways shift.

    Parameters
    ----------
    analysis : ColumnAnalysis
        From :func:`usidgpu.atoms.analysis.analyze` with a fitted ``distortion``.

    Returns
    -------
    matplotlib.figure.Figure
    """
    d = getattr(analysis, "distortion", None)
    if d is None:
        raise InvalidInput("this analysis has no fitted scan distortion (analyze(..., scan_distortion=True))")
    h, w = d.shape
    fig = new_figure((11.0, 3.4))
    fast_ax, slow_ax, shift_ax = fig.subplots(1, 3)
    for ax, axis, n, profile, error, name in (
        (fast_ax, 1, w, d.fast_spacing, d.fast_error, "fast scan (along a line)"),
        (slow_ax, 0, h, d.slow_spacing, d.slow_error, "slow scan (line to line)"),
    ):
        grid = np.arange(n)
        ax.fill_between(grid, 100 * (profile - 2 * error), 100 * (profile + 2 * error), color="C0", alpha=0.25, lw=0)
        ax.plot(grid, 100 * profile, color="C0", label="fitted (±2σ)")
        mid, ratio = neighbour_spacings(analysis.positions, analysis.specimen_positions, analysis.lattice, axis)
        ax.plot(mid, 100 * ratio, "o", ms=3, color="C3", label="neighbouring columns")
        ax.axhline(100, color="0.5", lw=0.8, ls=":")
        ax.set_xlabel(axis_label("x" if axis else "y", "px"))
        ax.set_ylabel("apparent spacing (%)")
        ax.set_title(name, fontsize=9)
        ax.set_xlim(0, n - 1)
    fast_ax.axvline(d.fast_window, color="0.5", lw=0.8, ls="--", label="flyback window")
    fast_ax.legend(fontsize=7, loc="lower right")
    shift_ax.plot(np.arange(h), d.shift, color="C2")
    shift_ax.set_xlabel(axis_label("y", "px"))
    shift_ax.set_ylabel(axis_label("line shift", "px"))
    shift_ax.set_title("sideways drift of the lines (linear part in the lattice)", fontsize=9)
    shift_ax.set_xlim(0, h - 1)
    fig.suptitle(
        f"scan distortion: columns off one affine lattice by {d.rms_affine:.2f} px RMS, "
        f"{d.rms:.2f} px with the scan fitted",
        fontsize=10,
    )
    return fig
