"""Ancillary index/value tables: building them from Dimensions, and reading their layout back.

A USID Main dataset of shape (positions × spectroscopic points) is described by two pairs of
tables. ``Position_Indices``/``Position_Values`` have one row per position and one column per
position dimension; ``Spectroscopic_Indices``/``Spectroscopic_Values`` have one row per
spectroscopic dimension and one column per spectroscopic point. Below, both are handled in the
"entries × dims" orientation; which orientation a table has comes from its role (position or
spectroscopic), never from its shape — pyUSID's ``shape[0] > shape[1]`` guess misfires on tiny
tables (pyUSID#82).

Column order is a known conflict: the USID specification text lists the fastest-varying dimension
first, pyUSID ≥ 0.0.6 writes the slowest first. :func:`infer_layout` therefore reads the order
from how often each index column changes, and usidgpu writes slowest-first by default.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..core.errors import InvalidInput
from .dimension import Dimension

INDICES_DTYPE = np.uint32
VALUES_DTYPE = np.float32

#: bytes held per entry and per dimension while an index/value table pair is read and its layout
#: inferred: both tables as read (up to 8 bytes each), int64 ranks; plus per entry the sort,
#: inverse, linear-index and ramp temporaries of one column (see :func:`table_cost`)
BYTES_PER_CELL = 24
BYTES_PER_ENTRY = 40

GRID = "grid"
SPARSE = "sparse"
IRREGULAR = "irregular"


@dataclass(frozen=True)
class Layout:
    """How the entries of an index table map onto dimensions.

    Attributes
    ----------
    kind : {"grid", "sparse", "irregular"}
        ``grid``: the entries enumerate every combination of the dimensions' indices in C order
        (slowest dimension outermost) — the only layout with an n-d view. ``sparse``: USID's
        sparse-sampling layout, every column runs 0…N-1 and the values hold the coordinates.
        ``irregular``: anything else (an aborted scan, a non-canonical ordering).
    sizes : tuple of int
        Number of distinct indices per column, in file order.
    order : tuple of int
        Column numbers from slowest to fastest varying (inferred from the index changes).
    n_entries : int
    """

    kind: str
    sizes: tuple[int, ...]
    order: tuple[int, ...]
    n_entries: int

    @property
    def is_grid(self) -> bool:
        return self.kind == GRID

    @property
    def n_dims(self) -> int:
        return len(self.sizes)

    @property
    def slow_to_fast_sizes(self) -> tuple[int, ...]:
        return tuple(self.sizes[c] for c in self.order)

    def file_axes(self) -> tuple[int, ...]:
        """Axis permutation taking a slowest-first n-d array to file column order."""
        return tuple(self.order.index(c) for c in range(self.n_dims))


def table_cost(n_entries: int, n_dims: int) -> int:
    """Bytes of memory reading an (entries × dims) index/value pair and inferring its layout takes.

    Known from the declared shape alone, so a table too large for the memory budget is refused
    before a byte of it is read.
    """
    return int(n_entries) * (BYTES_PER_CELL * int(n_dims) + BYTES_PER_ENTRY)


def _unique_column(column: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``np.unique(column, return_index=True, return_inverse=True)``, in linear time for the
    usual index column (non-negative integers not much larger than its length) — sorting four
    million position indices takes most of a second, counting them a few milliseconds."""
    n = column.size
    if column.dtype.kind in "iu" and n:
        lo, hi = int(column.min()), int(column.max())
        if lo >= 0 and hi <= 4 * n + 1024:
            present = np.zeros(hi + 1, dtype=bool)
            present[column] = True
            uniq = np.flatnonzero(present)
            rank = np.cumsum(present) - 1
            inverse = rank[column]
            first = np.full(uniq.size, n, dtype=np.int64)
            np.minimum.at(first, inverse, np.arange(n))  # unbuffered: the smallest position of each value
            return uniq.astype(column.dtype, copy=False), first, inverse
    uniq, first, inverse = np.unique(column, return_index=True, return_inverse=True)
    return uniq, first, inverse.reshape(-1)


def infer_layout(indices: np.ndarray) -> Layout:
    """Infer the layout of an index table given as (entries × dims).

    Parameters
    ----------
    indices : ndarray of int, shape (n_entries, n_dims)
        Position indices as stored, or spectroscopic indices transposed.

    Returns
    -------
    Layout
    """
    inds = np.asarray(indices)
    if inds.ndim != 2:
        raise InvalidInput(f"an index table must be 2-D, got shape {inds.shape}")
    n, d = inds.shape
    if n == 0 or d == 0:
        return Layout(IRREGULAR, (0,) * d, tuple(range(d)), n)
    ranks = np.empty((n, d), dtype=np.int64)
    sizes = []
    changes = []
    for c in range(d):
        uniq, _first, inverse = _unique_column(inds[:, c])
        ranks[:, c] = inverse
        sizes.append(int(uniq.size))
        changes.append(int(np.count_nonzero(inds[1:, c] != inds[:-1, c])))
    # Slowest first: fewest index changes first (stable, so ties keep file order).
    order = tuple(int(c) for c in np.argsort(np.asarray(changes), kind="stable"))
    sizes_t = tuple(sizes)
    if int(np.prod([sizes[c] for c in order], dtype=np.int64)) == n:
        linear = np.zeros(n, dtype=np.int64)
        stride = 1
        for c in reversed(order):
            linear += ranks[:, c] * stride
            stride *= sizes[c]
        if np.array_equal(linear, np.arange(n)):
            return Layout(GRID, sizes_t, order, n)
    ramp = np.arange(n)
    if d > 1 and all(np.array_equal(inds[:, c], ramp) for c in range(d)):
        return Layout(SPARSE, sizes_t, tuple(range(d)), n)
    return Layout(IRREGULAR, sizes_t, order, n)


def unit_values(indices: np.ndarray, values: np.ndarray) -> list[np.ndarray]:
    """The values of each dimension, one per distinct index, in index order.

    Each dimension's value at index ``k`` is read from the first entry where that dimension's
    index is ``k`` (for a grid, where all faster dimensions are at index 0).
    """
    inds = np.asarray(indices)
    vals = np.asarray(values)
    out = []
    for c in range(inds.shape[1]):
        _uniq, first, _inverse = _unique_column(inds[:, c])
        out.append(vals[first, c])
    return out


def build_tables(dims: Sequence[Dimension], fastest_first: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Index and value tables (entries × dims) for dimensions listed slowest first.

    Parameters
    ----------
    dims : sequence of Dimension
        Slowest-varying first. Either all complete (a grid) or all ``incomplete`` with equal
        lengths (sparse sampling).
    fastest_first : bool
        Put the fastest dimension in the first column (the USID specification text's order)
        instead of pyUSID's slowest-first.

    Returns
    -------
    indices : ndarray of uint32, shape (n_entries, n_dims)
    values : ndarray of float32, shape (n_entries, n_dims)
    """
    if len(dims) == 0:
        raise InvalidInput("at least one Dimension is needed")
    incomplete = {d.incomplete for d in dims}
    if len(incomplete) > 1:
        raise InvalidInput("cannot mix incomplete (sparse) and complete dimensions on one side")
    if incomplete.pop():
        n = dims[0].size
        if any(d.size != n for d in dims):
            raise InvalidInput(
                "incomplete (sparse) dimensions must all list one value per position; got lengths "
                + ", ".join(f"{d.name}={d.size}" for d in dims)
            )
        inds = np.tile(np.arange(n, dtype=INDICES_DTYPE)[:, None], (1, len(dims)))
        vals = np.stack([d.values for d in dims], axis=1).astype(VALUES_DTYPE)
    else:
        sizes = [d.size for d in dims]
        grids = np.indices(sizes, dtype=np.int64).reshape(len(dims), -1).T
        inds = grids.astype(INDICES_DTYPE)
        vals = np.empty(inds.shape, dtype=VALUES_DTYPE)
        for c, d in enumerate(dims):
            vals[:, c] = np.asarray(d.values, dtype=np.float64)[grids[:, c]]
    if fastest_first:
        inds, vals = inds[:, ::-1], vals[:, ::-1]
    return np.ascontiguousarray(inds), np.ascontiguousarray(vals)


def dims_from_tables(
    indices: np.ndarray,
    values: np.ndarray,
    labels: Sequence[str],
    units: Sequence[str],
    layout: Layout | None = None,
) -> tuple[list[Dimension], Layout]:
    """Dimensions (in file column order) and the layout of an (entries × dims) table pair."""
    layout = layout or infer_layout(indices)
    uvals = unit_values(indices, values)
    sparse = layout.kind == SPARSE
    dims = [
        Dimension(str(name) or f"Dim_{c}", str(unit), v, incomplete=sparse)
        for c, (name, unit, v) in enumerate(zip(labels, units, uvals))
    ]
    return dims, layout
