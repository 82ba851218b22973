"""Interactive viewer of a USID Main dataset for notebooks (ipywidgets + matplotlib).

>>> v = ds.visualize()          # in a notebook: shows sliders, the map and the spectrum
>>> v.set(Bias=3, X=10)         # or drive it from code (tests do)
>>> v.image_data, v.spectrum_data

One slider per dimension (position and spectroscopic). The left panel shows the positions at
the chosen spectroscopic point — an image over two position dimensions, a line over one, or the
scattered positions of sparse sampling — and the right panel the spectrum at the chosen position
along one spectroscopic dimension. Clicking the map picks the position, clicking the spectrum
picks the spectroscopic point (with the ipympl backend; with any other backend the figure is a
static picture redrawn on every change and the sliders do the picking).

Only the slices shown are read from the file (the same hyperslab reader as
:meth:`MainDataset.sel`): moving a spectroscopic slider re-reads the map only, moving a position
slider the spectrum only. Nothing here reads the whole dataset.
"""

from __future__ import annotations

import io
from contextlib import contextmanager
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from ..core.errors import InvalidInput, UnknownName
from ..usid.interop import FLAT_POSITION_DIM, FLAT_SPECTRAL_DIM, NdView
from ._data import axis_label, si_scaled, wrap_label
from ._draw import _image, color_scale, label_axes
from ._views import Axis

#: complex values can be shown as any of these
COMPLEX_PARTS = ("abs", "phase", "real", "imag")


def _in_kernel() -> bool:
    try:
        from IPython import get_ipython

        ip = get_ipython()
    except Exception:
        return False
    return ip is not None and getattr(ip, "kernel", None) is not None


def _fmt(value: float, units: str) -> str:
    return f"{value:.4g}" + (f" {units}" if units else "")


def attach_canvas(figure: Any, interactive: bool | None, on_click: Any) -> tuple[bool, Any, Any]:
    """Give ``figure`` a canvas: ipympl's clickable one in a notebook kernel that has ipympl
    (``interactive=None``) or when asked, else Agg with a PNG image widget redrawn on change.
    Returns (interactive, the ipympl figure manager or None, the widget to show)."""
    import ipywidgets as w

    if interactive is None:
        interactive = _in_kernel() and _has_ipympl()
    manager = None
    if interactive:
        from ipympl.backend_nbagg import Canvas, FigureManager

        canvas = Canvas(figure)
        manager = FigureManager(canvas, 0)
        canvas.header_visible = False
        output = canvas
    else:
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        FigureCanvasAgg(figure)
        output = w.Image(format="png")
    figure.canvas.mpl_connect("button_press_event", on_click)
    return bool(interactive), manager, output


def refresh_canvas(figure: Any, interactive: bool, output: Any) -> None:
    """Redraw: the ipympl canvas draws itself; the PNG widget gets the figure rendered anew."""
    if interactive:
        figure.canvas.draw_idle()
        return
    buf = io.BytesIO()
    figure.canvas.print_png(buf)
    output.value = buf.getvalue()


class MainViewer:
    """Sliders over every dimension, the map at the chosen spectroscopic point beside the spectrum.

    Parameters
    ----------
    main : MainDataset
    image_dims : (str, str), optional
        Position dimensions on the image's x and y axes. Default: the fastest-varying position
        dimension on x and the next one on y (dimensions of size 1 are passed over).
    spectrum_dim : str, optional
        Spectroscopic dimension along the spectrum. Default: the fastest-varying one.
    part : str, optional
        What to show of complex data (``"abs"``, ``"phase"``, ``"real"``, ``"imag"``; default
        ``"abs"``) or the field of compound data (default the first). A drop-down offers the
        others.
    interactive : bool, optional
        True: an ipympl canvas (clickable, needs ``ipympl``); False: a PNG redrawn on every
        change. Default: ipympl when it is installed and a Jupyter kernel is running.
    continuous_update : bool, optional
        Redraw while a slider is dragged (default: only for datasets under 256 MB).
    figsize : (float, float)

    Attributes
    ----------
    widget : ipywidgets.VBox
        Controls and figure; what a notebook displays.
    figure : matplotlib.figure.Figure
    sliders : dict of str to ipywidgets.IntSlider
        One per dimension (flat ``"Position"`` / ``"Spectroscopic"`` for a side that is not a
        full grid), value = index along that dimension.
    ax_map, ax_spectrum : matplotlib.axes.Axes
    map_kind : {"image", "line", "scatter"}
    image_axes : tuple of str
        Dimensions of :attr:`image_data`'s axes (``(y, x)`` for an image).
    image_data, spectrum_data : numpy.ndarray
        The values read for the panels (before taking a complex part or a compound field).
    reads : list of tuple
        ``(panel, shape)`` of every read from the file, for checking what was read.
    """

    def __init__(
        self,
        main,
        image_dims: tuple[str, str] | None = None,
        spectrum_dim: str | None = None,
        part: str | None = None,
        interactive: bool | None = None,
        continuous_update: bool | None = None,
        figsize: tuple[float, float] = (10.0, 4.2),
    ):
        import ipywidgets as w

        self.main = main
        self._view = NdView(main)
        self.reads: list[tuple[str, tuple[int, ...]]] = []
        self._vfactor, self._vunits = 1.0, main.units
        self._holding = False
        self._pending: set[str] = set()

        # ---- the axes of the n-d view and what each slider shows
        pos_grid, spec_grid = main.pos_layout.is_grid, main.spec_layout.is_grid
        pos_names = [d.name for d in main.pos_dims] if pos_grid else [FLAT_POSITION_DIM]
        spec_names = [d.name for d in main.spec_dims] if spec_grid else [FLAT_SPECTRAL_DIM]
        if len(set(pos_names + spec_names)) != len(pos_names + spec_names):
            raise InvalidInput(f"{main.name}: dimension names are not unique: {pos_names + spec_names}")
        self.pos_names, self.spec_names = pos_names, spec_names
        self.axis_names = pos_names + spec_names
        self.sizes = dict(zip(self.axis_names, self._view.shape))
        self._coords: dict[str, Axis] = {}  # readout and line-plot coordinates, SI-scaled
        for d in list(main.pos_dims if pos_grid else []) + list(main.spec_dims if spec_grid else []):
            self._coords[d.name] = _line_axis(d)
        if not pos_grid:
            self._coords[FLAT_POSITION_DIM] = Axis.index(FLAT_POSITION_DIM, main.n_positions)
        if not spec_grid:
            self._coords[FLAT_SPECTRAL_DIM] = Axis.index(FLAT_SPECTRAL_DIM, main.n_spectral)

        self._choose_map(image_dims)
        self._choose_spectrum(spectrum_dim)

        # ---- complex / compound values
        dtype = main.dtype
        self._parts: tuple[str, ...] = ()
        if dtype.fields:
            self._parts = tuple(dtype.names)
        elif dtype.kind == "c":
            self._parts = COMPLEX_PARTS
        if part is not None and part not in self._parts:
            raise InvalidInput(f"part must be one of {self._parts} for {dtype} data, got {part!r}")
        self.part = part or (self._parts[0] if self._parts else None)

        # ---- controls
        if continuous_update is None:
            continuous_update = main.nbytes < 256 * 2**20
        self.sliders: dict[str, Any] = {}
        self._readouts: dict[str, Any] = {}
        rows = []
        for name in self.axis_names:
            n = self.sizes[name]
            s = w.IntSlider(
                value=0,
                min=0,
                max=max(n - 1, 0),
                description=name,
                disabled=n <= 1,
                continuous_update=continuous_update,
                style={"description_width": "initial"},
                layout=w.Layout(width="340px"),
            )
            s.observe(self._on_slider, names="value")
            self.sliders[name] = s
            self._readouts[name] = w.Label(self._readout(name))
            rows.append(w.HBox([s, self._readouts[name]]))
        controls = [w.HTML("<b>Positions</b>"), *rows[: len(pos_names)]]
        controls += [w.HTML("<b>Spectroscopic</b>"), *rows[len(pos_names) :]]
        self.part_dropdown = None
        if self._parts:
            self.part_dropdown = w.Dropdown(options=list(self._parts), value=self.part, description="show")
            self.part_dropdown.observe(self._on_part, names="value")
            controls.append(self.part_dropdown)

        # ---- figure and canvas
        self.figure = Figure(figsize=figsize, layout="constrained")
        self.interactive, self._manager, self._output = attach_canvas(self.figure, interactive, self._on_click)
        self.ax_map, self.ax_spectrum = self.figure.subplots(1, 2, width_ratios=(1.1, 1))
        self._draw_first()
        self.widget = w.VBox([w.VBox(controls), self._output])

    # ------------------------------------------------------------ layout choices
    def _choose_map(self, image_dims) -> None:
        main = self.main
        if not main.pos_layout.is_grid:
            self.map_kind = "scatter" if len(main.pos_dims) >= 2 else "line"
            self.image_axes = (FLAT_POSITION_DIM,)
            table = np.asarray(main.h5_pos_vals[()], dtype=np.float64)  # ancillary tables are small
            names = [d.name for d in main.pos_dims]
            if image_dims is not None:
                cx, cy = (names.index(n) for n in image_dims)
            else:
                cx, cy = 0, min(1, len(names) - 1)
            self._scatter_x = Axis.coordinates(names[cx], main.pos_dims[cx].units, table[:, cx])
            self._scatter_y = Axis.coordinates(names[cy], main.pos_dims[cy].units, table[:, cy])
            return
        slow = [self.pos_names[c] for c in main.pos_layout.order]  # slowest first
        if image_dims is not None:
            x, y = image_dims
            for n in (x, y):
                if n not in self.pos_names:
                    raise InvalidInput(f"image_dims must be position dimensions {self.pos_names}, got {n!r}")
            if x == y:
                raise InvalidInput("image_dims must be two different dimensions")
        else:
            big = [n for n in slow if self.sizes[n] > 1]
            if len(big) >= 2:
                y, x = big[-2], big[-1]
            else:
                x, y = (big or slow)[-1], None
        if y is None:
            self.map_kind = "line"
            self.image_axes = (x,)
        else:
            self.map_kind = "image"
            self.image_axes = (y, x)
            self._img_x = Axis.from_dim(self.main.dim(x))
            self._img_y = Axis.from_dim(self.main.dim(y))

    def _choose_spectrum(self, spectrum_dim) -> None:
        main = self.main
        if not main.spec_layout.is_grid:
            if spectrum_dim not in (None, FLAT_SPECTRAL_DIM):
                raise InvalidInput(f"{main.name}: the spectroscopic points are not a grid; no {spectrum_dim!r} axis")
            self.spectrum_axis = FLAT_SPECTRAL_DIM
            return
        if spectrum_dim is not None:
            if spectrum_dim not in self.spec_names:
                raise InvalidInput(f"spectrum_dim must be one of {self.spec_names}, got {spectrum_dim!r}")
            self.spectrum_axis = spectrum_dim
            return
        slow = [self.spec_names[c] for c in main.spec_layout.order]
        big = [n for n in slow if self.sizes[n] > 1]
        self.spectrum_axis = (big or slow)[-1]

    # ------------------------------------------------------------ state
    @property
    def indices(self) -> dict[str, int]:
        """Current index along every dimension."""
        return {n: int(s.value) for n, s in self.sliders.items()}

    def set(self, **indices: int) -> None:
        """Move sliders (``v.set(X=3, Bias=10)``); the panels are redrawn once."""
        unknown = [n for n in indices if n not in self.sliders]
        if unknown:
            raise UnknownName(f"no slider for {unknown}; the dimensions are {self.axis_names}")
        with self.hold():
            for n, i in indices.items():
                self.sliders[n].value = int(i)

    @contextmanager
    def hold(self):
        """Batch slider changes: the panels are read and redrawn once, on leaving."""
        if self._holding:
            yield
            return
        self._holding = True
        try:
            yield
        finally:
            self._holding = False
            pending, self._pending = self._pending, set()
            if pending:
                self._update(pending)

    def _readout(self, name: str) -> str:
        ax = self._coords[name]
        i = int(self.sliders[name].value) if name in self.sliders else 0
        if ax.indexed:
            return f"[{i}]"
        return f"= {_fmt(float(ax.values[i]), ax.units)}  [{i}]"

    def _on_slider(self, change) -> None:
        name = change["owner"].description
        self._readouts[name].value = self._readout(name)
        if self._holding:
            self._pending.add(name)
        else:
            self._update({name})

    def _on_part(self, change) -> None:
        self.part = change["new"]
        self._choose_value_units()  # a compound field may need another SI prefix
        self._redraw_values(image=True, spectrum=True)
        self._refresh()

    # ------------------------------------------------------------ reading
    def _key(self, free: tuple[str, ...]) -> tuple:
        idx = self.indices
        return tuple(slice(None) if n in free else idx[n] for n in self.axis_names)

    def _read(self, panel: str, free: tuple[str, ...]) -> np.ndarray:
        arr = np.asarray(self._view[self._key(free)])
        self.reads.append((panel, arr.shape))
        return arr

    def _read_map(self) -> None:
        arr = self._read("map", self.image_axes)
        if self.map_kind == "image":
            order = [n for n in self.axis_names if n in self.image_axes]  # file order of the result
            if order != list(self.image_axes):
                arr = arr.T
        self.image_data = arr

    def _read_spectrum(self) -> None:
        self.spectrum_data = self._read("spectrum", (self.spectrum_axis,))

    def _real(self, arr: np.ndarray) -> np.ndarray:
        if arr.dtype.fields:
            arr = arr[self.part]
        phase = False
        if np.iscomplexobj(arr):
            arr = {"abs": np.abs, "phase": np.angle, "real": np.real, "imag": np.imag}[self.part](arr)
            phase = self.part == "phase"
        arr = np.asarray(arr, dtype=np.float64)
        return arr if phase else arr / self._vfactor

    def _choose_value_units(self) -> None:
        """An SI prefix for the values (m → nm) from the first map and spectrum read."""
        self._vfactor, self._vunits = 1.0, self.main.units
        vals = np.abs(np.concatenate([self._real(self.image_data).ravel(), self._real(self.spectrum_data).ravel()]))
        vals = vals[np.isfinite(vals)]
        if vals.size and vals.max() > 0:
            top = float(vals.max())
            scaled, units = si_scaled(np.array([top]), self.main.units)
            self._vfactor, self._vunits = top / float(scaled[0]), units

    @property
    def value_label(self) -> str:
        q, u = self.main.quantity or "value", self._vunits
        if self.part in COMPLEX_PARTS and np.iscomplexobj(np.empty(0, self.main.dtype)):
            if self.part == "phase":
                return f"{q} phase (rad)"
            q = {"abs": f"|{q}|", "real": f"Re {q}", "imag": f"Im {q}"}[self.part]
        elif self.part is not None:
            q = f"{q}: {self.part}"
        return axis_label(q, u)

    # ------------------------------------------------------------ drawing
    def _draw_first(self) -> None:
        self._read_map()
        self._read_spectrum()
        self._choose_value_units()
        fig, axm, axs = self.figure, self.ax_map, self.ax_spectrum
        values = self._real(self.image_data)
        self.colorbar = None
        if self.map_kind == "image":
            scale = color_scale(values)
            self.map_artist = _image(axm, self._img_x, self._img_y, values, scale)
            label_axes(axm, self._img_x, self._img_y)
            (self._marker,) = axm.plot([], [], "+", color="red", ms=14, mew=2)
            self.colorbar = fig.colorbar(self.map_artist, ax=axm, shrink=0.9, pad=0.02)
            self.colorbar.set_label(wrap_label(self.value_label))
        elif self.map_kind == "scatter":
            scale = color_scale(values)
            self.map_artist = axm.scatter(self._scatter_x.values, self._scatter_y.values, c=values, s=40, **scale)
            label_axes(axm, self._scatter_x, self._scatter_y)
            (self._marker,) = axm.plot([], [], "o", mfc="none", mec="red", ms=12, mew=2)
            self.colorbar = fig.colorbar(self.map_artist, ax=axm, shrink=0.9, pad=0.02)
            self.colorbar.set_label(wrap_label(self.value_label))
        else:
            xax = self._map_line_axis()
            (self.map_artist,) = axm.plot(xax.values, values, lw=1.2, marker="o" if values.size <= 30 else None)
            label_axes(axm, xax)
            axm.set_ylabel(wrap_label(self.value_label))
            self._marker = axm.axvline(xax.values[0], color="red", lw=1)
        sax = self._coords[self.spectrum_axis]
        spec = self._real(self.spectrum_data)
        (self.spectrum_line,) = axs.plot(sax.values, spec, lw=1.2, marker="o" if spec.size <= 30 else None, ms=3)
        label_axes(axs, sax)
        axs.set_ylabel(wrap_label(self.value_label))
        self._spec_marker = axs.axvline(sax.values[0], color="red", lw=1)
        self._update_markers()
        self._update_titles()
        self._refresh()

    def _map_line_axis(self) -> Axis:
        if self.map_kind == "line" and self.main.pos_layout.is_grid:
            return self._coords[self.image_axes[0]]
        if self.map_kind == "line":  # non-grid positions along one dimension: their coordinates
            return self._scatter_x
        raise AssertionError

    def _update(self, changed: set[str]) -> None:
        need_map = any(n not in self.image_axes for n in changed)
        need_spec = any(n != self.spectrum_axis for n in changed)
        if need_map:
            self._read_map()
        if need_spec:
            self._read_spectrum()
        self._redraw_values(need_map, need_spec)
        self._update_markers()
        self._update_titles()
        self._refresh()

    def _redraw_values(self, image: bool, spectrum: bool) -> None:
        if image:
            values = self._real(self.image_data)
            if self.map_kind in ("image", "scatter"):
                self.map_artist.set_array(values if self.map_kind == "image" else values.ravel())
                scale = color_scale(values)
                self.map_artist.set_clim(scale["vmin"], scale["vmax"])
                self.map_artist.set_cmap(scale["cmap"])
                if self.colorbar is not None:
                    self.colorbar.set_label(wrap_label(self.value_label))
            else:
                self.map_artist.set_ydata(values)
                self.ax_map.set_ylabel(wrap_label(self.value_label))
                self.ax_map.relim()
                self.ax_map.autoscale_view()
        if spectrum:
            self.spectrum_line.set_ydata(self._real(self.spectrum_data))
            self.ax_spectrum.set_ylabel(wrap_label(self.value_label))
            self.ax_spectrum.relim()
            self.ax_spectrum.autoscale_view()

    def _update_markers(self) -> None:
        idx = self.indices
        if self.map_kind == "image":
            y, x = self.image_axes
            self._marker.set_data([self._img_x.values[idx[x]]], [self._img_y.values[idx[y]]])
        elif self.map_kind == "scatter":
            i = idx[FLAT_POSITION_DIM]
            self._marker.set_data([self._scatter_x.values[i]], [self._scatter_y.values[i]])
        else:
            xv = self._map_line_axis().values[idx[self.image_axes[0]]]
            self._marker.set_xdata([xv, xv])
        sv = self._coords[self.spectrum_axis].values[idx[self.spectrum_axis]]
        self._spec_marker.set_xdata([sv, sv])

    def _where(self, names) -> str:
        parts = []
        for n in names:
            ax, i = self._coords[n], self.indices[n]
            parts.append(f"{n} [{i}]" if ax.indexed else f"{n} = {_fmt(float(ax.values[i]), ax.units)}")
        return ", ".join(parts)

    def _update_titles(self) -> None:
        fixed = [n for n in self.axis_names if n not in self.image_axes and self.sizes[n] > 1]
        self.ax_map.set_title(wrap_label(self._where(fixed), 48) if fixed else self.main.quantity, fontsize=9)
        fixed = [n for n in self.axis_names if n != self.spectrum_axis and self.sizes[n] > 1]
        self.ax_spectrum.set_title(wrap_label(self._where(fixed), 48) if fixed else "", fontsize=9)

    def _refresh(self) -> None:
        refresh_canvas(self.figure, self.interactive, self._output)

    # ------------------------------------------------------------ clicks
    def _on_click(self, event) -> None:
        if event.inaxes is None or event.xdata is None or event.ydata is None:
            return
        if event.inaxes is self.ax_map:
            if self.map_kind == "image":
                y, x = self.image_axes
                self.set(**{x: _nearest(self._img_x.values, event.xdata), y: _nearest(self._img_y.values, event.ydata)})
            elif self.map_kind == "scatter":
                sx, sy = self._scatter_x, self._scatter_y
                span_x = np.ptp(sx.values) or 1.0
                span_y = np.ptp(sy.values) or 1.0
                d = ((sx.values - event.xdata) / span_x) ** 2 + ((sy.values - event.ydata) / span_y) ** 2
                self.set(**{FLAT_POSITION_DIM: int(np.argmin(d))})
            else:
                self.set(**{self.image_axes[0]: _nearest(self._map_line_axis().values, event.xdata)})
        elif event.inaxes is self.ax_spectrum:
            self.set(**{self.spectrum_axis: _nearest(self._coords[self.spectrum_axis].values, event.xdata)})

    # ------------------------------------------------------------ display
    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

    def __repr__(self) -> str:
        return f"<usidgpu MainViewer of {self.main.name!r}: {self.map_kind} map, spectrum along {self.spectrum_axis}>"


def _nearest(values: np.ndarray, v: float) -> int:
    return int(np.nanargmin(np.abs(np.asarray(values) - v)))


def _line_axis(dim) -> Axis:
    """Coordinates for a line plot and a readout: the values (need not be monotonic), SI-scaled."""
    v = np.asarray(dim.values).real.astype(np.float64)
    if not np.all(np.isfinite(v)):
        return Axis.index(dim.name, v.size)
    return Axis.coordinates(dim.name, dim.units, v)


def _has_ipympl() -> bool:
    try:
        import ipympl  # noqa: F401
    except ImportError:
        return False
    return True


__all__ = ["MainViewer"]
