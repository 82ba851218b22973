"""Selecting parts of a Main dataset by dimension name, reading only what is selected."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core.errors import InvalidType, NotAGridError, SelectionError, UnknownName
from ..core.memory import memory_budget
from .ancillary import Layout

if TYPE_CHECKING:
    from .dataset import MainDataset

#: Above this many separate row runs, one streamed pass over the spanned rows is cheaper.
MAX_ROW_RUNS = 1024
#: Above this many separate column runs, whole rows are read and the columns picked in memory.
MAX_COL_RUNS = 64


@dataclass(frozen=True)
class SelectionPlan:
    """Rows and columns to read, and how to shape them.

    ``rows``/``cols`` are in output order (C order over the selected dimensions, slowest first);
    ``sf_shape`` is the output shape in that order, ``axes`` the transpose to file order and
    ``drop`` the file-order axes selected by a single integer.
    """

    rows: np.ndarray
    cols: np.ndarray
    sf_shape: tuple[int, ...]
    axes: tuple[int, ...]
    drop: tuple[int, ...]


def _indices_for(key: Any, size: int, name: str) -> tuple[np.ndarray, bool]:
    """Positions along one dimension selected by ``key``; True when the axis is dropped."""
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        k = int(key)
        if not -size <= k < size:
            raise SelectionError(f"index {k} is out of range for dimension {name!r} of size {size}")
        return np.array([k % size]), True
    if isinstance(key, slice):
        idx = np.arange(size)[key]
    else:
        arr = np.asarray(key)
        if arr.dtype == bool:
            if arr.shape != (size,):
                raise SelectionError(f"boolean selection for {name!r} must have length {size}, got {arr.shape}")
            idx = np.flatnonzero(arr)
        elif arr.ndim == 1 and (arr.size == 0 or np.issubdtype(arr.dtype, np.integer)):
            if arr.size and (arr.min() < -size or arr.max() >= size):
                raise SelectionError(f"indices {arr.tolist()} are out of range for dimension {name!r} of size {size}")
            idx = arr.astype(np.int64) % size
        else:
            raise InvalidType(f"selection for {name!r} must be an int, a slice or a 1-D list of ints, got {key!r}")
    if idx.size == 0:
        raise SelectionError(f"the selection for dimension {name!r} is empty")
    return idx, False


def _matching_entries(
    table: np.ndarray, names: Sequence[str], sizes: Sequence[int], selection: dict[str, Any], side: str, path: str
) -> np.ndarray:
    """Entries of a side that is no full grid whose index in every selected dimension is one of
    those selected — pyUSID's ``USIDataset.slice`` on such data, which matches the values of the
    index table (``table``: one row per entry, one column per dimension)."""
    keep = np.ones(table.shape[0], dtype=bool)
    for j, (name, size) in enumerate(zip(names, sizes)):
        if name in selection:
            wanted, _dropped = _indices_for(selection[name], size, name)
            keep &= np.isin(table[:, j], wanted)
    entries = np.flatnonzero(keep)
    if entries.size == 0:
        chosen = {n: selection[n] for n in names if n in selection}
        raise SelectionError(f"{path}: no {side} have the indices {chosen} (the {side} do not fill a grid)")
    return entries


def _side_plan(
    layout: Layout, names: Sequence[str], selection: dict[str, Any], n_entries: int, side: str, path: str,
    index_table: Any = None, sizes: Sequence[int] = (),
) -> tuple[np.ndarray, tuple[int, ...], tuple[int, ...], list[bool]]:  # fmt: skip
    """Entries (rows or columns) to read for one side, its slowest-first shape, file axes, drops.

    A side that is no full grid stays one flat axis; naming its dimensions keeps the entries whose
    indices match (``index_table()`` gives the side's index table, one row per entry).
    """
    chosen = [n for n in names if n in selection]
    if not layout.is_grid:
        if not chosen:
            return np.arange(n_entries), (n_entries,), (0,), [False]
        if index_table is None:
            raise NotAGridError(
                f"{path}: the {side} dimensions {chosen} cannot be selected by name because the "
                f"{side} do not fill a full grid ({layout.kind} layout)"
            )
        entries = _matching_entries(np.asarray(index_table()), names, sizes, selection, side, path)
        return entries.astype(np.int64), (entries.size,), (0,), [False]
    per_dim = []
    drops = []
    for name, size in zip(names, layout.sizes):
        if name in selection:
            idx, dropped = _indices_for(selection[name], size, name)
        else:
            idx, dropped = np.arange(size), False
        per_dim.append(idx)
        drops.append(dropped)
    sf_idx = [per_dim[c] for c in layout.order]
    sf_sizes = layout.slow_to_fast_sizes
    grids = np.meshgrid(*sf_idx, indexing="ij")
    entries = np.ravel_multi_index(tuple(g.reshape(-1) for g in grids), sf_sizes) if grids else np.zeros(1, int)
    shape = tuple(len(i) for i in sf_idx)
    return entries.astype(np.int64), shape, layout.file_axes(), drops


def selection_plan(main: MainDataset, selection: dict[str, Any]) -> SelectionPlan:
    """Turn ``{dim name: index | slice | list}`` into rows/columns to read and a shape."""
    pos_names = [d.name for d in main.pos_dims]
    spec_names = [d.name for d in main.spec_dims]
    unknown = [k for k in selection if k not in pos_names and k not in spec_names]
    if unknown:
        raise UnknownName(f"{main.name} has no dimension(s) {unknown}; its dimensions are {pos_names + spec_names}")
    spec_selection = {k: v for k, v in selection.items() if k not in pos_names}
    pos_selection = {k: v for k, v in selection.items() if k in pos_names}
    rows, pshape, paxes, pdrop = _side_plan(
        main.pos_layout, pos_names, pos_selection, main.n_positions, "positions", main.name,
        lambda: main.h5_pos_inds[()], [d.size for d in main.pos_dims],
    )  # fmt: skip
    cols, sshape, saxes, sdrop = _side_plan(
        main.spec_layout, spec_names, spec_selection, main.n_spectral, "spectroscopic points", main.name,
        lambda: np.asarray(main.h5_spec_inds[()]).T, [d.size for d in main.spec_dims],
    )  # fmt: skip
    axes = tuple(paxes) + tuple(len(pshape) + a for a in saxes)
    drop = tuple(i for i, d in enumerate(pdrop + sdrop) if d)
    return SelectionPlan(rows, cols, pshape + sshape, axes, drop)


def _run_count(sorted_unique: np.ndarray) -> int:
    """How many contiguous runs a sorted array of distinct integers has (without listing them:
    a strided selection of a large image has a million)."""
    return 0 if sorted_unique.size == 0 else int(np.count_nonzero(np.diff(sorted_unique) != 1)) + 1


def _runs(sorted_unique: np.ndarray) -> list[tuple[int, int]]:
    """Contiguous runs [a, b) of a sorted array of distinct integers."""
    if sorted_unique.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(sorted_unique) != 1) + 1
    starts = np.concatenate(([0], breaks))
    stops = np.concatenate((breaks, [sorted_unique.size]))
    return [(int(sorted_unique[s]), int(sorted_unique[e - 1]) + 1) for s, e in zip(starts, stops)]


def read_rows_cols(main: MainDataset, plan: SelectionPlan, budget: int | str | None = None) -> np.ndarray:
    """Read the planned rows × columns of ``main`` and shape them (see :class:`SelectionPlan`)."""
    dset = main.h5
    rows_u, rows_inv = np.unique(plan.rows, return_inverse=True)
    cols_u, cols_inv = np.unique(plan.cols, return_inverse=True)
    out = np.empty((rows_u.size, cols_u.size), dtype=dset.dtype)
    itemsize = dset.dtype.itemsize
    nbytes = memory_budget(budget, "cpu")
    if _run_count(rows_u) <= MAX_ROW_RUNS and _run_count(cols_u) <= MAX_COL_RUNS:
        row_runs, col_runs = _runs(rows_u), _runs(cols_u)
        # hyperslab reads of only the selected rows × columns, a bounded number of rows at a time
        row_pos = 0
        col_offsets = np.cumsum([0] + [b - a for a, b in col_runs])
        width = int(col_offsets[-1])
        step = max(1, nbytes // max(1, 2 * width * itemsize))
        for a, b in row_runs:
            for s in range(a, b, step):
                e = min(b, s + step)
                for (ca, cb), off in zip(col_runs, col_offsets):
                    dset.read_direct(out, np.s_[s:e, ca:cb], np.s_[row_pos : row_pos + e - s, off : off + cb - ca])
                row_pos += e - s
    else:
        # many scattered pieces: stream whole rows over the spanned range and pick in memory
        from ..core.stream import iter_blocks

        span_start, span_stop = int(rows_u[0]), int(rows_u[-1]) + 1
        for block in iter_blocks(dset, budget=nbytes, device="cpu", start=span_start, stop=span_stop):
            lo = np.searchsorted(rows_u, block.start)
            hi = np.searchsorted(rows_u, block.stop)
            if hi > lo:
                out[lo:hi] = block.data[rows_u[lo:hi] - block.start][:, cols_u]
    if not np.array_equal(rows_u, plan.rows):
        out = out[rows_inv.reshape(-1)]
    if not np.array_equal(cols_u, plan.cols):
        out = out[:, cols_inv.reshape(-1)]
    result = np.transpose(out.reshape(plan.sf_shape), plan.axes)
    if plan.drop:
        result = result[tuple(0 if i in plan.drop else slice(None) for i in range(result.ndim))]
    return result
