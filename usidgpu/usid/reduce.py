"""Streamed reductions of a Main dataset over named dimensions.

Reducing over spectroscopic dimensions is local to each block of whole positions. Reducing over
position dimensions combines blocks, so only reductions that decompose into running statistics
are accepted there: sums, means, variances and standard deviations (merged per output cell with
Chan's parallel formula), minima and maxima, each also in a NaN-ignoring form. Results have
NumPy's dtypes (float32 in, float32 out; integer sums exact in int64).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core.arrays import asnumpy
from ..core.device import Device, select_device
from ..core.errors import BudgetError, InvalidInput, InvalidType, NotAGridError, UnknownName
from ..core.memory import format_bytes, memory_budget
from ..core.scatter import scatter

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


def _output_dtype(base: str, dtype: np.dtype) -> np.dtype:
    """NumPy's result dtype of the reduction ``base`` on ``dtype`` (float32 in, float32 out)."""
    if base in ("min", "max"):
        return dtype
    if dtype.kind in "biu":
        if base == "sum":
            return np.dtype(np.uint64 if dtype.kind == "u" else np.int64)
        return np.dtype(np.float64)
    if base in ("var", "std") and dtype.kind == "c":
        return np.dtype(dtype.char.lower()) if dtype.char in "FDG" else np.dtype(np.float64)
    return dtype


class _Accumulator:
    """Running statistics per output cell (rows) × remaining spectroscopic point (columns).

    ``sum``/``mean`` keep running sums (float64, complex128, or int64 for integer sums, which
    stay exact); ``var``/``std`` keep count, mean and the sum of squared deviations per cell and
    merge blocks with Chan's parallel formula, so neither large offsets nor a non-finite value
    in one cell spoil the others; ``min``/``max`` keep extremes in the input dtype.
    """

    def __init__(self, xp, name: str, n_cells: int, n_cols: int, dtype: np.dtype):
        self.xp = xp
        self.nan = name.startswith("nan")
        self.base = name[3:] if self.nan else name
        self.dtype = np.dtype(dtype)
        if self.dtype.kind == "c" and self.base in ("min", "max"):
            raise InvalidType(f"'{name}' is not defined for complex data")
        self.out_dtype = _output_dtype(self.base, self.dtype)
        self.work = np.dtype(np.complex128 if self.dtype.kind == "c" else np.float64)
        shape = (n_cells, n_cols)
        self.count = xp.zeros(shape, dtype=np.float64)
        if self.base in ("min", "max"):
            self.fill = _extreme_fill(self.base, self.dtype)
            self.extreme = xp.full(shape, self.fill, dtype=self.dtype)
        elif self.base in ("sum", "mean"):
            total = self.out_dtype if (self.base == "sum" and self.dtype.kind in "biu") else self.work
            self.total = xp.zeros(shape, dtype=total)
        else:
            self.mean = xp.zeros(shape, dtype=self.work)
            self.m2 = xp.zeros(shape, dtype=np.float64)

    def add(self, values, cells) -> None:
        """Fold in ``values`` (rows × reduced points × columns) for output ``cells``.

        ``cells`` is a slice (row i of ``values`` feeds cell ``cells.start + i``) or an integer
        array naming each row's cell (repeats are combined).
        """
        xp = self.xp
        counted = ~xp.isnan(values) if (self.nan and values.dtype.kind in "fc") else None
        if counted is None:
            n_rows = xp.full((values.shape[0], values.shape[2]), values.shape[1], dtype=np.float64)
        else:
            n_rows = counted.sum(axis=1, dtype=np.float64)
        if self.base in ("min", "max"):
            v = values if counted is None else xp.where(counted, values, self.fill)
            part = v.min(axis=1) if self.base == "min" else v.max(axis=1)
            self._combine(self.base, "extreme", part, cells)
        elif self.base in ("sum", "mean"):
            v = values if counted is None else xp.where(counted, values, 0)
            self._combine("add", "total", v.sum(axis=1, dtype=self.total.dtype), cells)
        else:
            self._add_moments(values.astype(self.work), counted, n_rows, cells)
        self._combine("add", "count", n_rows, cells)

    def _add_moments(self, x, counted, n_rows, cells) -> None:
        xp = self.xp
        xz = x if counted is None else xp.where(counted, x, 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            if isinstance(cells, slice):
                region, n_b = cells, n_rows
                mean_b = xz.sum(axis=1) / n_rows
                mean_rows = mean_b
            else:
                region = slice(None)
                n_b = xp.zeros(self.count.shape, dtype=np.float64)
                scatter(xp, "add", n_b, cells, n_rows)
                s_b = xp.zeros(self.mean.shape, dtype=self.work)
                scatter(xp, "add", s_b, cells, xz.sum(axis=1))
                mean_b = s_b / n_b
                mean_rows = mean_b[cells]
            dev = x - mean_rows[:, None, :]
            if counted is not None:
                dev = xp.where(counted, dev, 0)
            sq = (dev * dev.conj()).real.sum(axis=1)
            if isinstance(cells, slice):
                m2_b = sq
            else:
                m2_b = xp.zeros(self.m2.shape, dtype=np.float64)
                scatter(xp, "add", m2_b, cells, sq)
            # Chan et al.: merge (n_a, mean_a, M2_a) with this block's (n_b, mean_b, M2_b)
            n_a, mean_a = self.count[region], self.mean[region]
            n = n_a + n_b
            has = n_b > 0
            w = xp.where(has, n_b / xp.where(n > 0, n, 1), 0)
            delta = xp.where(has, mean_b - mean_a, 0)
            self.mean[region] = mean_a + delta * w
            self.m2[region] += xp.where(has, m2_b + (delta * delta.conj()).real * n_a * w, 0)

    def _combine(self, op: str, attr: str, part, cells) -> None:
        acc = getattr(self, attr)
        if isinstance(cells, slice):
            if op == "add":
                acc[cells] += part
            else:
                acc[cells] = (self.xp.minimum if op == "min" else self.xp.maximum)(acc[cells], part)
        else:
            scatter(self.xp, op, acc, cells, part)

    def result(self):
        xp = self.xp
        with np.errstate(invalid="ignore", divide="ignore"):
            empty = self.count == 0
            if self.base in ("min", "max"):
                if self.nan and bool(empty.any()):
                    return xp.where(empty, np.nan, self.extreme)
                return self.extreme
            if self.base == "sum":
                return self.total.astype(self.out_dtype)
            if self.base == "mean":
                return (self.total / self.count).astype(self.out_dtype)
            var = xp.where(empty, np.nan, self.m2 / xp.where(empty, 1, self.count))
            return (xp.sqrt(var) if self.base == "std" else var).astype(self.out_dtype)


def _extreme_fill(base: str, dtype: np.dtype):
    """The identity of min (the largest value of ``dtype``) or max (the smallest)."""
    if dtype.kind == "b":
        return base == "min"
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return info.max if base == "min" else info.min
    return np.inf if base == "min" else -np.inf


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
        raise InvalidInput("name at least one dimension to reduce over")
    pos_names = [d.name for d in main.pos_dims]
    spec_names = [d.name for d in main.spec_dims]
    unknown = [n for n in names if n not in pos_names and n not in spec_names]
    if unknown:
        raise UnknownName(f"{main.name} has no dimension(s) {unknown}; its dimensions are {pos_names + spec_names}")
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
        raise InvalidInput(
            f"{func!r} cannot be streamed over position dimensions; use one of "
            f"{sorted(STREAMABLE)} or their nan-variants"
        )
    if main.dtype.fields is not None:
        raise InvalidType(f"{main.name}: cannot reduce compound dtype {main.dtype}; reduce one field")
    dev = select_device(device)
    xp = dev.xp
    # the read buffers get a sixth of the budget: the per-block temporaries (a float64 copy,
    # the shifted values, NaN masks) take the rest
    total = memory_budget(budget, dev)
    block_budget = total // 6
    row_bytes = main.n_spectral * main.dtype.itemsize
    if block_budget < 2 * row_bytes:
        raise BudgetError(
            f"memory budget {format_bytes(total)} is too small for reduce(): it needs about six times "
            f"two positions ({format_bytes(12 * row_bytes)}) for read buffers and temporaries"
        )

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
        acc = _Accumulator(xp, name, n_cells, n_rest, main.dtype)
        # move reduced spectroscopic axes together: (rows, reduced..., kept...) -> (rows, n_red, n_rest)
        perm = (0,) + tuple(a + 1 for a in red_axes) + tuple(a + 1 for a in keep_axes)
        for block in main.blocks(budget=block_budget, device=dev, progress=progress):
            n_rows = block.stop - block.start
            data = block.data.reshape((n_rows,) + spec_sf).transpose(perm).reshape(n_rows, n_red, n_rest)
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
