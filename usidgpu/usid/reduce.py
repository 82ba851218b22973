"""Streamed reductions of a Main dataset over named dimensions.

Reducing over spectroscopic dimensions is local to each block of whole positions. Reducing over
position dimensions combines blocks, so only reductions that decompose into running sums,
minima and maxima are accepted there: sums, means, variances (as shifted sums of squares in
float64, which keeps the cancellation of ``E[x²] − E[x]²`` small), minima and maxima, each also
in a NaN-ignoring form.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..backend import Device, asnumpy, memory_budget, select_device
from ..errors import NotAGridError

if TYPE_CHECKING:
    from .dataset import MainDataset

STREAMABLE = {"sum", "mean", "min", "max", "var", "std"}
_ALIASES = {"amin": "min", "amax": "max", "average": "mean"}


def reduction_name(func: Any) -> str | None:
    """Canonical name (``"mean"``, ``"nanvar"``, ...) of a streamable reduction, else None."""
    name = func if isinstance(func, str) else getattr(func, "__name__", None)
    if not isinstance(name, str):
        return None
    nan = name.startswith("nan")
    base = _ALIASES.get(name[3:] if nan else name, name[3:] if nan else name)
    if base not in STREAMABLE:
        return None
    return ("nan" if nan else "") + base


def _scatter(xp, op: str, acc, cells, values) -> None:
    """acc[cells] op= values, with repeated cells combined (np.ufunc.at / cupyx.scatter_*)."""
    if xp is np:
        {"add": np.add, "min": np.minimum, "max": np.maximum}[op].at(acc, cells, values)
    else:  # pragma: no cover - GPU only
        import cupyx

        {"add": cupyx.scatter_add, "min": cupyx.scatter_min, "max": cupyx.scatter_max}[op](acc, cells, values)


class _Accumulator:
    """Running statistics per output cell (rows) × remaining spectroscopic point (columns)."""

    def __init__(self, xp, name: str, n_cells: int, n_cols: int, complex_data: bool):
        self.xp = xp
        self.nan = name.startswith("nan")
        self.base = name[3:] if self.nan else name
        if complex_data and self.base in ("min", "max"):
            raise TypeError(f"'{name}' is not defined for complex data")
        self.sum_dtype = np.complex128 if complex_data else np.float64
        self.count = xp.zeros((n_cells, n_cols), dtype=np.float64)
        self.shift = None
        if self.base in ("min", "max"):
            fill = np.inf if self.base == "min" else -np.inf
            self.extreme = xp.full((n_cells, n_cols), fill, dtype=np.float64)
        else:
            self.s1 = xp.zeros((n_cells, n_cols), dtype=self.sum_dtype)
            if self.base in ("var", "std"):
                self.s2 = xp.zeros((n_cells, n_cols), dtype=np.float64)

    def add(self, values, cells) -> None:
        """Fold in ``values`` (rows × reduced points × columns) for output ``cells``.

        ``cells`` is a slice (row i of ``values`` feeds cell ``cells.start + i``) or an integer
        array naming each row's cell (repeats are combined).
        """
        xp = self.xp
        counted = ~xp.isnan(values) if self.nan else None
        if counted is None:
            n = xp.full((values.shape[0], values.shape[2]), values.shape[1], dtype=np.float64)
        else:
            n = counted.sum(axis=1, dtype=np.float64)
        if self.base in ("min", "max"):
            v = values if counted is None else xp.where(counted, values, np.inf if self.base == "min" else -np.inf)
            part = (v.min(axis=1) if self.base == "min" else v.max(axis=1)).astype(np.float64)
            self._combine(self.base, "extreme", part, cells)
        else:
            if self.base in ("var", "std") and self.shift is None:
                # shift by a representative value per column to keep sums of squares well scaled
                self.shift = xp.nan_to_num(values[0].mean(axis=0, dtype=self.sum_dtype))
            v = values - self.shift if self.shift is not None else values
            if counted is not None:
                v = xp.where(counted, v, 0)
            self._combine("add", "s1", v.sum(axis=1, dtype=self.sum_dtype), cells)
            if self.base in ("var", "std"):
                self._combine("add", "s2", (v * v.conj()).real.sum(axis=1, dtype=np.float64), cells)
        self._combine("add", "count", n, cells)

    def _combine(self, op: str, attr: str, part, cells) -> None:
        acc = getattr(self, attr)
        if isinstance(cells, slice):
            if op == "add":
                acc[cells] += part
            else:
                acc[cells] = (self.xp.minimum if op == "min" else self.xp.maximum)(acc[cells], part)
        else:
            _scatter(self.xp, op, acc, cells, part)

    def result(self):
        xp = self.xp
        with np.errstate(invalid="ignore", divide="ignore"):
            empty = self.count == 0
            if self.base in ("min", "max"):
                return xp.where(empty, np.nan, self.extreme)
            if self.base == "sum":
                return self.s1
            mean = self.s1 / self.count
            if self.base == "mean":
                return mean
            var = xp.maximum(self.s2 / self.count - (mean * mean.conj()).real, 0)
            return xp.sqrt(var) if self.base == "std" else var


def reduce_main(
    main: MainDataset,
    dims: str | Sequence[str],
    func: Any = "mean",
    budget: int | str | None = None,
    device: str | Device | None = "cpu",
    progress: bool | str = False,
) -> np.ndarray:
    """Implementation of :meth:`MainDataset.reduce`."""
    names = [dims] if isinstance(dims, str) else list(dims)
    if not names:
        raise ValueError("name at least one dimension to reduce over")
    pos_names = [d.name for d in main.pos_dims]
    spec_names = [d.name for d in main.spec_dims]
    unknown = [n for n in names if n not in pos_names and n not in spec_names]
    if unknown:
        raise KeyError(f"{main.name} has no dimension(s) {unknown}; its dimensions are {pos_names + spec_names}")
    pos_red = [c for c, n in enumerate(pos_names) if n in names]
    spec_red = [c for c, n in enumerate(spec_names) if n in names]
    spec_all = len(spec_red) == len(spec_names)
    pos_all = len(pos_red) == len(pos_names)
    if spec_red and not spec_all and not main.spec_layout.is_grid:
        raise NotAGridError(f"{main.name}: spectroscopic points are not a full grid; reduce over all of them or none")
    if pos_red and not pos_all and not main.pos_layout.is_grid:
        raise NotAGridError(f"{main.name}: positions are not a full grid; reduce over all of them or none")
    name = reduction_name(func)
    if name is None and pos_red:
        raise ValueError(
            f"{func!r} cannot be streamed over position dimensions; use one of "
            f"{sorted(STREAMABLE)} or their nan-variants"
        )
    if main.dtype.fields is not None:
        raise TypeError(f"{main.name}: cannot reduce compound dtype {main.dtype}; reduce one field")
    dev = select_device(device)
    xp = dev.xp
    # the read buffers get a sixth of the budget: the per-block temporaries (a float64 copy,
    # the shifted values, NaN masks) take the rest
    block_budget = max(1, memory_budget(budget, dev) // 6)
    complex_data = main.dtype.kind == "c"

    # spectroscopic side: which slowest-first axes are reduced, and the shape that remains
    spec_sf, red_axes, keep_axes = _side_axes(main.spec_layout, spec_red, main.n_spectral)
    rest_sizes = tuple(spec_sf[a] for a in keep_axes)
    n_rest = int(np.prod(rest_sizes, dtype=np.int64))
    n_red = int(np.prod([spec_sf[a] for a in red_axes], dtype=np.int64))
    # position side: which output cell every row folds into
    pos_layout, spec_layout = main.pos_layout, main.spec_layout
    pos_sf, _pos_red_axes, pos_keep = _side_axes(pos_layout, pos_red, main.n_positions)
    cell_sizes = tuple(pos_sf[a] for a in pos_keep)
    n_cells = int(np.prod(cell_sizes, dtype=np.int64))

    if name is None:  # arbitrary callable, spectroscopic dims only: apply per block
        out = np.empty((main.n_positions, n_rest), dtype=np.result_type(main.dtype, np.float64))
        for block in main.blocks(budget=block_budget, device=dev, progress=progress):
            nd = block.data.reshape((block.stop - block.start,) + spec_sf)
            r = func(nd, axis=tuple(a + 1 for a in red_axes))
            out[block.start : block.stop] = asnumpy(r).reshape(block.stop - block.start, n_rest)
        flat = out
    else:
        acc = _Accumulator(xp, name, n_cells, n_rest, complex_data)
        # move reduced spectroscopic axes together: (rows, reduced..., kept...) -> (rows, n_red, n_rest)
        perm = (0,) + tuple(a + 1 for a in red_axes) + tuple(a + 1 for a in keep_axes)
        for block in main.blocks(budget=block_budget, device=dev, progress=progress):
            n_rows = block.stop - block.start
            data = block.data.reshape((n_rows,) + spec_sf).transpose(perm).reshape(n_rows, n_red, n_rest)
            if data.dtype.kind not in "fc":
                data = data.astype(np.float64)
            if not pos_red:
                cells = slice(block.start, block.stop)
            elif pos_all:
                data = data.reshape(1, n_rows * n_red, n_rest)
                cells = slice(0, 1)
            else:
                rows = np.arange(block.start, block.stop)
                multi = np.unravel_index(rows, pos_sf)
                cells = xp.asarray(np.ravel_multi_index(tuple(multi[a] for a in pos_keep), cell_sizes))
            acc.add(data, cells)
        flat = asnumpy(acc.result())

    # shape the result: remaining position axes then remaining spectroscopic axes, file order
    out_sf = cell_sizes + rest_sizes
    result = flat.reshape(out_sf) if out_sf else flat.reshape(())
    pos_file = _kept_file_axes(pos_layout, pos_red) if pos_layout.is_grid else ([0] if not pos_red else [])
    spec_file = _kept_file_axes(spec_layout, spec_red) if spec_layout.is_grid else ([0] if not spec_red else [])
    axes = tuple(pos_file) + tuple(len(pos_file) + a for a in spec_file)
    return np.transpose(result, axes) if axes else result


def _side_axes(layout, reduced_cols: Sequence[int], n_entries: int):
    """Slowest-first sizes of one side, and which of those axes are reduced and kept.

    A non-grid side is one flat axis (reduced entirely or not at all).
    """
    if layout.is_grid:
        sizes = layout.slow_to_fast_sizes
        reduced = tuple(layout.order.index(c) for c in reduced_cols)
    else:
        sizes = (n_entries,)
        reduced = (0,) if reduced_cols else ()
    kept = tuple(a for a in range(len(sizes)) if a not in reduced)
    return sizes, reduced, kept


def _kept_file_axes(layout, reduced_cols: Sequence[int]) -> list[int]:
    """Transpose (kept dims slowest-first) -> (kept dims in file order)."""
    kept_sf = [c for c in layout.order if c not in reduced_cols]  # columns, slowest first
    kept_file = sorted(kept_sf)  # columns in file order
    return [kept_sf.index(c) for c in kept_file]
