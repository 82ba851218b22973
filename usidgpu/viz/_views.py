"""How the positions and the spectroscopic points of a result are laid out on a plot.

A result row (position) or column (spectroscopic point) number is the C-order multi-index over
the dimension sizes listed *slowest first*. The dimensions are stored in file order, which is
slowest first for pyUSID files but fastest first in some older ones; ``result.source.pos_layout``
(or ``spec_layout``) ``.order`` tells which, and without a source slowest first is assumed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ._data import axis_label, si_scaled, to_numpy

#: two spectroscopic dimensions are drawn as curves (one per value of the shorter one) up to this
LINES_MAX = 5


@dataclass(frozen=True)
class Axis:
    """Coordinates along one plot axis.

    Attributes
    ----------
    name, units : str
    values : ndarray of float64
        Coordinate of every point (the dimension's values, or point numbers when ``indexed``).
    indexed : bool
        The dimension's values could not be used (not finite, not strictly monotonic), so the
        axis shows point numbers.
    """

    name: str
    units: str
    values: np.ndarray
    indexed: bool = False

    @classmethod
    def coordinates(cls, name: str, units: str, values) -> Axis:
        """An axis at ``values``, in units with an SI prefix when they are a bare SI unit."""
        v, units = si_scaled(np.asarray(values, dtype=np.float64).ravel(), units)
        return cls(name, units, v)

    @classmethod
    def from_dim(cls, dim) -> Axis:
        """The axis of a grid dimension: its values, or point numbers when they are not usable."""
        v = np.asarray(to_numpy(dim.values)).real.astype(np.float64).ravel()
        if v.size > 1:
            d = np.diff(v)
            if not (np.all(np.isfinite(v)) and (np.all(d > 0) or np.all(d < 0))):
                return cls(dim.name, dim.units, np.arange(v.size, dtype=np.float64), True)
        elif not np.all(np.isfinite(v)):
            v = np.zeros(1)
        return cls.coordinates(dim.name, dim.units, v)

    @classmethod
    def index(cls, name: str, n: int) -> Axis:
        return cls(name, "", np.arange(n, dtype=np.float64), True)

    @property
    def size(self) -> int:
        return int(self.values.size)

    @property
    def label(self) -> str:
        if self.indexed:
            return self.name if "index" in self.name.lower() else f"{self.name} (index)"
        return axis_label(self.name, self.units)

    @property
    def uniform(self) -> bool:
        """Evenly spaced (an image with an ``extent`` places every point at its value)."""
        v = self.values
        if v.size < 3:
            return True
        d = np.diff(v)
        step = (v[-1] - v[0]) / (v.size - 1)
        return bool(np.allclose(d, step, rtol=1e-3, atol=abs(step) * 1e-3))

    @property
    def half_step(self) -> float:
        v = self.values
        if v.size < 2:
            return 0.5 if v[0] == 0 else 0.5 * abs(float(v[0]))
        return float(v[-1] - v[0]) / (v.size - 1) / 2

    @property
    def extent(self) -> tuple[float, float]:
        """Outer edges of the first and last points (first point first)."""
        h = self.half_step
        return float(self.values[0] - h), float(self.values[-1] + h)

    @property
    def edges(self) -> np.ndarray:
        """Cell edges for ``pcolormesh`` (midpoints between the values)."""
        v = self.values
        if v.size < 2:
            lo, hi = self.extent
            return np.array([lo, hi])
        mid = (v[1:] + v[:-1]) / 2
        return np.concatenate([[2 * v[0] - mid[0]], mid, [2 * v[-1] - mid[-1]]])

    @property
    def span(self) -> float:
        lo, hi = self.extent
        return abs(hi - lo)


def same_scale(a: Axis, b: Axis) -> bool:
    """Both axes are physical lengths in the same units: draw with an equal aspect ratio."""
    if a.indexed or b.indexed or not a.units or a.units != b.units:
        return False
    if a.span == 0 or b.span == 0:
        return False
    return 1 / 20 <= a.span / b.span <= 20


def slowest_first(result, side: str, n_dims: int) -> tuple[int, ...]:
    """Column numbers of the ``side`` ("pos" or "spec") dimensions from slowest to fastest."""
    layout = getattr(getattr(result, "source", None), f"{side}_layout", None)
    order = getattr(layout, "order", None)
    if order is not None:
        order = tuple(int(c) for c in order)
        if sorted(order) == list(range(n_dims)):
            return order
    return tuple(range(n_dims))


def _index_label(what: str, dims) -> str:
    if not dims:
        return f"{what} index"
    return f"{what} index ({' × '.join(d.name for d in dims)})"


@dataclass
class View:
    """How the ``n`` points of one side (positions or spectroscopic points) are drawn.

    Attributes
    ----------
    kind : str
        ``"image"`` (2-D grid; ``y`` = slower dimension, ``x`` = faster), ``"lines"`` (2-D grid
        drawn as curves along ``x``, one per value of ``series``), ``"line"`` (1-D, along ``x``),
        ``"scatter"`` (coordinates of scattered points in ``x.values`` and ``y.values``, 1 or 2
        dims), ``"point"`` (one point) or ``"index"`` (anything else, along the flat point number).
    n : int
    x, y, series : Axis or None
    shape : tuple of int
        Shape each flat vector is reshaped to (C order): ``(ny, nx)`` for an image, ``(nseries,
        nx)`` or ``(nx, nseries)`` for lines (``transpose`` tells which), ``(n,)`` otherwise.
    transpose : bool
        For ``"lines"``: the curves run along the slower dimension.
    """

    kind: str
    n: int
    x: Axis | None = None
    y: Axis | None = None
    series: Axis | None = None
    shape: tuple = field(default_factory=tuple)
    transpose: bool = False

    def arrange(self, values: np.ndarray) -> np.ndarray:
        """A flat vector of ``n`` values in the layout drawn (image rows, one curve per row)."""
        a = np.asarray(values).reshape(self.shape or (self.n,))
        return a.T if self.transpose else a


def _grid_view(dims, order, n: int, what: str, allow_lines: bool) -> View | None:
    slow = [dims[c] for c in order]
    sizes = [d.size for d in slow]
    if int(np.prod(sizes, dtype=np.int64)) != n:
        return None
    kept = [d for d in slow if d.size > 1]
    if not kept:
        return View("point", n)
    if len(kept) == 1:
        return View("line", n, x=Axis.from_dim(kept[0]), shape=(n,))
    if len(kept) == 2:
        ys, xs = kept
        if allow_lines and ys.size <= LINES_MAX:
            return View("lines", n, x=Axis.from_dim(xs), series=Axis.from_dim(ys), shape=(ys.size, xs.size))
        if allow_lines and xs.size <= LINES_MAX:
            return View(
                "lines", n, x=Axis.from_dim(ys), series=Axis.from_dim(xs), shape=(ys.size, xs.size), transpose=True
            )
        return View("image", n, x=Axis.from_dim(xs), y=Axis.from_dim(ys), shape=(ys.size, xs.size))
    return View("index", n, x=Axis.index(_index_label(what, slow), n))


def _scattered_coordinates(result, dims, n: int) -> np.ndarray | None:
    """Coordinates (n × dims) of non-grid positions, or None when they cannot be known."""
    if dims and all(d.size == n for d in dims):
        return np.stack([np.asarray(to_numpy(d.values)).real.astype(np.float64) for d in dims], axis=1)
    source = getattr(result, "source", None)
    table = getattr(source, "h5_pos_vals", None)
    try:
        vals = np.asarray(table[()] if table is not None else None, dtype=np.float64)
        if vals.shape == (n, len(dims)):
            return vals
    except Exception:  # a closed file, a table of another shape: fall back to the indices
        pass
    try:
        inds = np.asarray(getattr(source, "position_indices", None))
        if inds.shape == (n, len(dims)):
            out = np.empty((n, len(dims)))
            for c, d in enumerate(dims):
                uniq, inv = np.unique(inds[:, c], return_inverse=True)
                values = np.asarray(d.values, dtype=np.float64)
                if uniq.size != values.size:
                    return None
                out[:, c] = values[inv.ravel()]
            return out
    except Exception:
        pass
    return None


def _xy_columns(dims) -> tuple[int, int]:
    """Which two dimensions are x and y: those named X and Y, else the first two."""
    names = [d.name.strip().lower() for d in dims]
    if "x" in names and "y" in names:
        return names.index("x"), names.index("y")
    return 0, 1


def position_view(result, n: int) -> View:
    """How the ``n`` positions of ``result`` are drawn."""
    dims = list(getattr(result, "pos_dims", None) or [])
    if n == 1:
        return View("point", 1)
    if not dims:
        return View("index", n, x=Axis.index("Position", n))
    incomplete = any(getattr(d, "incomplete", False) for d in dims)
    if getattr(result, "pos_grid", True) and not incomplete:
        view = _grid_view(dims, slowest_first(result, "pos", len(dims)), n, "Position", allow_lines=False)
        if view is not None:
            return view
    coords = _scattered_coordinates(result, dims, n)
    if coords is None:
        return View("index", n, x=Axis.index(_index_label("Position", dims), n))
    if len(dims) == 1:
        return View("scatter", n, x=Axis.coordinates(dims[0].name, dims[0].units, coords[:, 0]))
    cx, cy = _xy_columns(dims)
    return View(
        "scatter",
        n,
        x=Axis.coordinates(dims[cx].name, dims[cx].units, coords[:, cx]),
        y=Axis.coordinates(dims[cy].name, dims[cy].units, coords[:, cy]),
    )


def spectral_view(result, n: int) -> View:
    """How the ``n`` spectroscopic points of ``result`` are drawn."""
    dims = list(getattr(result, "spec_dims", None) or [])
    if n == 1:
        return View("point", 1)
    if dims and getattr(result, "spec_grid", True) and not any(getattr(d, "incomplete", False) for d in dims):
        view = _grid_view(dims, slowest_first(result, "spec", len(dims)), n, "Spectroscopic point", True)
        if view is not None:
            return view
    return View("index", n, x=Axis.index(_index_label("Spectroscopic point", dims), n))
