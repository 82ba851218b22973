"""Atomic columns drawn over their image: sublattices, vacancies, displacements; column tracks."""

from __future__ import annotations

import numpy as np

from ..core.errors import InvalidInput
from ._data import axis_label, si_scaled, to_numpy
from ._draw import category_colors, new_figure, plain_ticks

#: the median displacement arrow is drawn about this fraction of the column spacing long
ARROW_FRACTION = 0.25


def _frame(image, frame: int = 0) -> np.ndarray:
    """One 2-D image (float) from an image, a stack or a Main dataset."""
    if hasattr(image, "pos_dims"):  # a MainDataset
        from ..usid.frames import frames_of

        image = frames_of(image)[0]
    arr = np.asarray(to_numpy(image), dtype=np.float64)
    if arr.ndim == 3:
        arr = arr[frame]
    if arr.ndim != 2:
        raise InvalidInput(f"expected an image (H, W) or a stack (frames, H, W), got shape {arr.shape}")
    return arr


def _scale(pixel_size, units: str) -> tuple[float, float, str]:
    """Size of a pixel along y and x in display units (an SI prefix where the units take one)."""
    py, px = (float(v) for v in pixel_size)
    units = (units or "px").strip() or "px"
    if units == "px":
        return 1.0, 1.0, "px"
    scaled, shown = si_scaled(np.array([py, px]) * 1000.0, units)  # the scale of a 1000 px image
    factor = float(scaled[0]) / (py * 1000.0) if py else 1.0
    return py * factor, px * factor, shown


def _nice(value: float) -> float:
    """1, 2 or 5 × 10ⁿ nearest below ``value`` (at least 1)."""
    if not np.isfinite(value) or value <= 1:
        return 1.0
    exp = np.floor(np.log10(value))
    for mult in (5, 2, 1):
        if mult * 10**exp <= value:
            return float(mult * 10**exp)
    return float(10**exp)


def _spacing_of(analysis) -> float:
    spacing = analysis.parameters.get("spacing") if getattr(analysis, "parameters", None) else None
    if spacing is None or not np.isfinite(spacing):
        spacing = getattr(getattr(analysis, "found", None), "spacing", None)
    return float(spacing) if spacing else 10.0


def _image_axes(ax, image: np.ndarray, sy: float, sx: float, units: str):
    """Grayscale image with pixel centres at (i·sy, j·sx), axes labelled in ``units``."""
    h, w = image.shape
    finite = image[np.isfinite(image)]
    lo, hi = np.percentile(finite, [0.5, 99.8]) if finite.size else (0.0, 1.0)
    ax.imshow(
        image,
        cmap="gray",
        vmin=lo,
        vmax=hi if hi > lo else lo + 1,
        extent=(-0.5 * sx, (w - 0.5) * sx, (h - 0.5) * sy, -0.5 * sy),
        interpolation="nearest",
    )
    ax.set_xlabel(axis_label("x", units))
    ax.set_ylabel(axis_label("y", units))
    plain_ticks(ax.xaxis, np.array([w * sx]))
    plain_ticks(ax.yaxis, np.array([h * sy]))
    ax.set_xlim(-0.5 * sx, (w - 0.5) * sx)
    ax.set_ylim((h - 0.5) * sy, -0.5 * sy)


def _figure(ax, shape: tuple[int, int], legend_room: bool = True):
    if ax is not None:
        return ax.figure, ax
    h, w = shape
    width = 6.0
    fig = new_figure((width + (2.2 if legend_room else 0.0), max(3.0, width * h / max(w, 1) + 0.6)))
    return fig, fig.add_subplot()


def plot_columns(analysis, image, ax=None, show_displacements: bool = True, arrow_scale: float | None = None):
    """The image with every column marked by sublattice, the vacancies and the displacements.

    Parameters
    ----------
    analysis : ColumnAnalysis
        From :func:`usidgpu.atoms.analysis.analyze`.
    image : ndarray (H, W), stack (frames, H, W) or MainDataset
        The analyzed image (of a stack, the frame the analysis was of).
    ax : matplotlib.axes.Axes, optional
        Draw here (default: a new figure).
    show_displacements : bool
        Arrows from each column's ideal lattice site to where it is, magnified.
    arrow_scale : float, optional
        Magnification of the arrows (default: a round factor that draws the median arrow about a
        quarter of the column spacing long); the legend states it, e.g. "displacements ×20".

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.lines import Line2D

    img = _frame(image, getattr(analysis, "frame", 0))
    if tuple(img.shape) != tuple(analysis.image_shape):
        raise InvalidInput(
            f"the image is {img.shape[0]}×{img.shape[1]} px but the analysis was of a "
            f"{analysis.image_shape[0]}×{analysis.image_shape[1]} px image"
        )
    sy, sx, units = _scale(analysis.pixel_size, analysis.units)
    fig, ax = _figure(ax, img.shape)
    _image_axes(ax, img, sy, sx, units)
    pos = np.asarray(analysis.positions, dtype=np.float64)
    labels = np.asarray(analysis.sublattice, dtype=np.int64)
    n = len(pos)
    spacing = _spacing_of(analysis)
    diameter = 0.35 * spacing * 5.0 * 72.0 / max(img.shape)  # points, on a ~5 inch wide image
    size = float(np.clip(diameter**2, 4.0, 100.0))
    kinds = np.unique(labels) if n else np.zeros(0, dtype=np.int64)
    colors = category_colors(max(int(kinds.max()) + 1 if kinds.size else 1, 1))
    for s in kinds:
        sel = labels == s
        ax.scatter(
            pos[sel, 1] * sx,
            pos[sel, 0] * sy,
            s=size,
            color=colors[s],
            edgecolors="white",
            linewidths=0.4,
            label=f"sublattice {s} (n = {int(sel.sum())})",
            zorder=3,
        )
    vac = getattr(analysis, "vacancies", None)
    if vac is not None and len(vac):
        vp = np.asarray(vac.positions, dtype=np.float64)
        counts = np.bincount(np.asarray(vac.sublattice, dtype=np.int64))
        per = ", ".join(f"{int(c)} on {s}" for s, c in enumerate(counts) if c)
        ax.scatter(
            vp[:, 1] * sx,
            vp[:, 0] * sy,
            s=size * 2.5,
            marker="s",
            facecolors="none",
            edgecolors="red",
            linewidths=1.2,
            label=f"vacancies (n = {len(vp)}: {per})",
            zorder=4,
        )
    title = f"{n} atomic column{'s' if n != 1 else ''}"
    if kinds.size > 1:
        title += f", {kinds.size} sublattices"
    shift = np.asarray(analysis.displacement, dtype=np.float64)
    ok = np.isfinite(shift).all(axis=1) if n else np.zeros(0, dtype=bool)
    lattice = getattr(analysis, "lattice", None)
    inliers = getattr(lattice, "inliers", None)
    outliers = 0
    if inliers is not None and len(inliers) == n:  # far from any site: an arrow ×20 would cross the image
        outliers = int((ok & ~np.asarray(inliers, dtype=bool)).sum())
        ok = ok & np.asarray(inliers, dtype=bool)
    handles = []
    if show_displacements and ok.any():
        length = np.hypot(shift[ok, 0], shift[ok, 1])
        median = float(np.median(length))
        if arrow_scale is None:
            arrow_scale = _nice(ARROW_FRACTION * spacing / median) if median > 0 else 1.0
        arrow_scale = float(arrow_scale)
        if median > 0:
            label = f"displacements ×{arrow_scale:g} (median {median:.3g} px)"
            if outliers:
                label += f"\n{outliers} off-lattice column{'s' if outliers != 1 else ''} without arrow"
            ax.quiver(
                (pos[ok, 1] - shift[ok, 1]) * sx,
                (pos[ok, 0] - shift[ok, 0]) * sy,
                shift[ok, 1] * sx * arrow_scale,
                shift[ok, 0] * sy * arrow_scale,
                angles="xy",
                scale_units="xy",
                scale=1.0,
                color="gold",
                width=0.003,
                headwidth=4,
                headlength=4,
                headaxislength=3.5,
                zorder=5,
            )
            handles.append(
                Line2D(
                    [],
                    [],
                    color="gold",
                    marker=r"$\rightarrow$",
                    markersize=12,
                    linestyle="none",
                    label=label,
                )
            )
            title += f"; displacements ×{arrow_scale:g}"
    ax.set_title(title, fontsize=10)
    existing, names = ax.get_legend_handles_labels()
    if existing or handles:
        ax.legend(
            handles=existing + handles,
            labels=names + [h.get_label() for h in handles],
            loc="upper left",
            bbox_to_anchor=(1.02, 1.0),
            fontsize=8,
            frameon=False,
            borderaxespad=0.0,
        )
    return fig


def plot_tracks(tracks, image=None, ax=None):
    """Trajectories of the tracked columns, each in its own colour, over the first frame.

    Parameters
    ----------
    tracks : Tracks
        From :func:`usidgpu.atoms.track.track` or :func:`~usidgpu.atoms.track.link`.
    image : ndarray (H, W), stack (frames, H, W) or MainDataset, optional
        The frames tracked; the first is drawn underneath.
    ax : matplotlib.axes.Axes, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.collections import LineCollection
    from matplotlib.lines import Line2D

    table = np.asarray(tracks.table, dtype=np.float64)
    img = _frame(image, 0) if image is not None else None
    if img is not None:
        shape = img.shape
    elif len(table):
        shape = (int(np.ceil(table[:, 2].max())) + 1, int(np.ceil(table[:, 3].max())) + 1)
    else:
        shape = (1, 1)
    fig, ax = _figure(ax, shape, legend_room=False)
    if img is not None:
        _image_axes(ax, img, 1.0, 1.0, "px")
    else:
        ax.set_xlabel(axis_label("x", "px"))
        ax.set_ylabel(axis_label("y", "px"))
        ax.set_aspect("equal")
        ax.invert_yaxis()
    n_tracks = int(tracks.n_tracks)
    colors = category_colors(20)
    order = np.lexsort((table[:, 0], table[:, 1])) if len(table) else np.zeros(0, dtype=int)
    rows = table[order]
    ids = rows[:, 1].astype(np.int64)
    bounds = np.flatnonzero(np.diff(ids)) + 1
    chunks = np.split(rows, bounds) if len(rows) else []
    segments = [chunk[:, [3, 2]] for chunk in chunks if len(chunk) > 1]
    seg_colors = [colors[int(chunk[0, 1]) % len(colors)] for chunk in chunks if len(chunk) > 1]
    if segments:
        ax.add_collection(LineCollection(segments, colors=seg_colors, linewidths=1.2, zorder=3))
    starts = rows[np.r_[0, bounds]] if len(rows) else np.zeros((0, 4))
    if len(starts):
        ax.scatter(
            starts[:, 3],
            starts[:, 2],
            s=6,
            c=[colors[int(t) % len(colors)] for t in starts[:, 1]],
            edgecolors="none",
            zorder=4,
        )
    drift = np.asarray(tracks.drift, dtype=np.float64)
    total = drift[-1] if len(drift) else np.zeros(2)
    full = sum(1 for chunk in chunks if len(chunk) == tracks.n_frames)
    ax.set_title(
        f"{n_tracks} track{'s' if n_tracks != 1 else ''} over {tracks.n_frames} frame"
        f"{'s' if tracks.n_frames != 1 else ''}; drift ({total[0]:.2f}, {total[1]:.2f}) px",
        fontsize=10,
    )
    handles = [
        Line2D([], [], color=colors[0], lw=1.2, marker="o", ms=3, label=f"trajectory (start ●), {full} in every frame")
    ]
    ax.legend(handles=handles, loc="lower left", fontsize=8, framealpha=0.8)
    return fig


#: Panels of :func:`plot_strain`: component of the StrainMap, label, display factor, units.
STRAIN_PANELS = (
    (0, r"$\varepsilon_{xx}$", 100.0, "%"),
    (1, r"$\varepsilon_{yy}$", 100.0, "%"),
    (2, r"$\varepsilon_{xy}$", 100.0, "%"),
    (3, "rotation", 180.0 / np.pi, "°"),
)


def plot_strain(analysis, strain=None, reference=None, neighbours: int = 8, show_columns: bool = True):
    """Maps of the local strain (ε_xx, ε_yy, ε_xy in %) and lattice rotation (in degrees).

    The three strain maps share one symmetric colour scale, so their magnitudes compare at a
    glance; the rotation has its own. Areas outside the columns' convex hull stay blank.

    Parameters
    ----------
    analysis : ColumnAnalysis
        From :func:`usidgpu.atoms.analysis.analyze` (positions, lattice, pixel size, units).
    strain : StrainMap, optional
        Precomputed :meth:`ColumnAnalysis.strain <usidgpu.atoms.analysis.ColumnAnalysis.strain>`;
        default computed here with ``reference`` and ``neighbours``.
    reference, neighbours
        As :meth:`ColumnAnalysis.strain`: the unstrained lattice or the columns of a reference
        region (default: the lattice fitted on all columns).
    show_columns : bool
        Mark the columns (small dots) where the values come from.

    Returns
    -------
    matplotlib.figure.Figure
    """
    from ._draw import color_scale, colorbar, extend_of

    if strain is None:
        strain = analysis.strain(reference=reference, neighbours=neighbours)
    if strain.maps is None:
        raise InvalidInput("the strain has no maps: compute it with the image shape (ColumnAnalysis.strain does)")
    sy, sx, units = _scale(analysis.pixel_size, analysis.units)
    h, w = strain.maps.shape[1:]
    fig = new_figure((10.5, max(4.0, 2 * 4.2 * h / max(w, 1) + 0.8)))
    axes = fig.subplots(2, 2, sharex=True, sharey=True).ravel()
    shown = [strain.maps[k] * factor for k, _, factor, _ in STRAIN_PANELS]
    strains = np.concatenate([m[np.isfinite(m)] for m in shown[:3]])
    common = color_scale(strains)
    limit = max(abs(common["vmin"]), abs(common["vmax"]), 1e-6)
    pos = np.asarray(strain.positions, dtype=np.float64)
    extent = (-0.5 * sx, (w - 0.5) * sx, (h - 0.5) * sy, -0.5 * sy)
    for ax, (k, name, _, unit), values in zip(axes, STRAIN_PANELS, shown):
        if k < 3:
            scale = {"vmin": -limit, "vmax": limit, "cmap": "RdBu_r"}
        else:
            scale = color_scale(values)
            m = max(abs(scale["vmin"]), abs(scale["vmax"])) or 1.0
            scale = {"vmin": -m, "vmax": m, "cmap": "PuOr_r"}
        art = ax.imshow(values, extent=extent, interpolation="nearest", **scale)
        if show_columns and len(pos):
            ax.scatter(pos[:, 1] * sx, pos[:, 0] * sy, s=1.5, color="black", edgecolors="none", alpha=0.5)
        colorbar(fig, art, ax, f"{name} ({unit})", extend=extend_of(values, scale))
        finite = values[np.isfinite(values)]
        summary = f"mean {finite.mean():+.3g} {unit}, sd {finite.std():.3g}" if finite.size else "no values"
        sign = " (+ from x toward y)" if k == 3 else ""
        ax.set_title(f"{name}{sign}: {summary}", fontsize=9)
        ax.set_xlim(extent[0], extent[1])
        ax.set_ylim(extent[2], extent[3])
        ax.set_aspect("equal")
    for ax in axes[2:]:
        ax.set_xlabel(axis_label("x", units))
        plain_ticks(ax.xaxis, np.array([w * sx]))
    for ax in axes[::2]:
        ax.set_ylabel(axis_label("y", units))
        plain_ticks(ax.yaxis, np.array([h * sy]))
    fig.suptitle(f"Strain and rotation of {len(pos)} columns relative to {strain.reference}", fontsize=10)
    return fig
