"""One way to stream a matrix — a Main dataset or an in-memory array — to the algorithms.

Every decomposition reads its input through :class:`BlockSource`: blocks of whole rows
(positions) in the *work dtype* (float32 for float32 and small integers, float64 for float64
and wide integers, complex kept complex), as NumPy or CuPy arrays on the chosen device, within
the memory budget. Data that fit in half of what the budget leaves after the algorithm's own
state are kept resident after the first pass, so iterative methods re-read them from memory
(on the device, for a GPU) instead of from the file.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from ..core.arrays import asnumpy, is_cupy_array
from ..core.device import Device, select_device
from ..core.errors import BudgetError, InvalidInput, InvalidType
from ..core.linalg import sum_squares
from ..core.memory import format_bytes, memory_budget
from ..storage import is_dataset
from ..usid.dataset import MainDataset

#: ``shift=True`` shifts the blocks only where the first rows' mean row holds more than this
#: times their energy around it (the float32 products' cancellation is then worth a copy).
SHIFT_ABOVE = 1.0


def work_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype arithmetic runs in: float32 in, float32 out; float64 where 32 bits lose data."""
    dtype = np.dtype(dtype)
    if dtype.fields is not None:
        raise InvalidType(f"cannot decompose compound dtype {dtype}; decompose one field (e.g. data['Amplitude'])")
    if dtype.kind == "c":
        return np.dtype(np.complex128 if dtype.itemsize > 8 else np.complex64)
    if dtype.kind == "f":
        return np.dtype(np.float64 if dtype.itemsize > 4 else np.float32)
    if dtype.kind in "biu":
        return np.dtype(np.float32 if dtype.itemsize <= 2 else np.float64)
    raise InvalidType(f"cannot decompose data of dtype {dtype}")


class BlockSource:
    """Rows of a 2-D matrix streamed in blocks, in the work dtype, on a device.

    Parameters
    ----------
    data : MainDataset, h5py.Dataset, or 2-D NumPy/CuPy array
    device : {"auto", "cpu", "gpu"} or Device, optional
    budget : int or str, optional
        Total memory budget of the computation (default: a fraction of free memory).
    reserve : int
        Bytes the algorithm keeps besides the blocks (Gram matrix, factors, ...).
    row_overhead : int
        Bytes of per-block temporaries the algorithm needs for each row beyond the row itself
        (e.g. k distances per position in k-means); blocks shrink to keep them in the budget.
    shift : bool
        Deliver ``X − 1·offset`` instead of ``X``, with ``offset`` a provisional mean row from the
        first rows, where that mean is large against the rows' spread (:data:`SHIFT_ABOVE`;
        ``offset`` is zero otherwise): float32 products of data far from the origin then keep
        their small components (the algorithms add the offset's exact contribution back in
        float64). The
        subtraction is done in place wherever the block is the source's own memory, and the
        resident copy is kept shifted, so later passes pay nothing.
    progress : bool
        Progress bars on passes over file data.
    """

    def __init__(
        self,
        data: Any,
        device: str | Device | None = None,
        budget: int | str | None = None,
        reserve: int = 0,
        progress: bool = False,
        row_overhead: int = 0,
        shift: bool = False,
    ):
        self.device = select_device(device)
        self.xp = self.device.xp
        self.progress = progress
        self._main: MainDataset | None = None
        self._array = None
        if isinstance(data, MainDataset):
            self._main = data
        elif is_dataset(data):  # an h5py or zarr dataset
            self._main = MainDataset(data)
        else:
            arr = data if is_cupy_array(data) else np.asarray(data)
            if arr.ndim != 2:
                raise InvalidInput(f"expected a 2-D array (positions × spectroscopic points), got shape {arr.shape}")
            self._array = arr
        if self._main is not None:
            # the rules validate applies to the index tables, and their size, before any work
            self._main.check_tables()
        self.shape: tuple[int, int] = tuple(int(s) for s in (self._main.shape if self._main else self._array.shape))
        self.dtype = np.dtype(self._main.dtype if self._main else self._array.dtype)
        self.work = work_dtype(self.dtype)
        if min(self.shape) < 1:
            raise InvalidInput(f"cannot decompose an empty matrix of shape {self.shape}")
        self.budget = memory_budget(budget, self.device)
        available = self.budget - int(reserve)
        row = self.shape[1] * self.work.itemsize + int(row_overhead)
        self._row_bytes = row
        # blocks: two read buffers plus about two work-dtype temporaries per block
        if available < 8 * row:
            raise BudgetError(
                f"memory budget {format_bytes(self.budget)} is too small: the algorithm keeps "
                f"{format_bytes(reserve)} and needs at least {format_bytes(8 * row)} more for blocks"
            )
        self.block_budget = available // 4
        self.resident_ok = self.nbytes_work <= available // 2
        self._cache: list[tuple[int, int, Any]] | None = None
        # host data are checked for NaN and infinities as they arrive, until one whole pass has
        # been (on a GPU the algorithms check their products: a check per block would stop the
        # host for the device each time, and CuPy warns of nothing)
        self._finite_seen = self.device.is_gpu
        self.offset = self.xp.zeros(self.shape[1], dtype=self.work)
        self._shifted = False
        if shift:
            head_mean, spread = self._head_statistics()
            # the shift costs a copy of every block on every pass; data whose mean row is no
            # larger than their spread around it lose at most one bit to cancellation unshifted
            # (a product's rounding error scales with |x|² = |x − c|² + |c|², at most twice
            # the shifted one's), so they are read as they are
            if float(self.xp.sum(head_mean.real**2 + head_mean.imag**2)) > SHIFT_ABOVE * spread:
                self.offset, self._shifted = head_mean, True

    @property
    def main(self) -> MainDataset | None:
        """The Main dataset, when the data came from one."""
        return self._main

    @property
    def nbytes_work(self) -> int:
        return self.shape[0] * self.shape[1] * self.work.itemsize

    @property
    def is_complex(self) -> bool:
        return self.work.kind == "c"

    def _rows_per_block(self) -> int:
        return max(1, self.block_budget // 2 // max(1, self._row_bytes))

    @property
    def _reader_budget(self) -> int:
        """Budget for the file reader's two buffers, such that blocks have ``_rows_per_block`` rows."""
        return 2 * self._rows_per_block() * self.shape[1] * self.dtype.itemsize

    def _to_work(self, block: Any) -> Any:
        xp = self.xp
        if self.device.is_gpu and not is_cupy_array(block):
            if not block.dtype.isnative:  # CuPy has no byte order: convert on the host
                block = block.astype(block.dtype.newbyteorder("="))
            block = xp.asarray(block)
        elif not self.device.is_gpu and is_cupy_array(block):
            block = asnumpy(block)
        return block.astype(self.work, copy=False)

    def blocks(self, desc: str | None = None, cache: bool = True) -> Iterator[tuple[int, int, Any]]:
        """One pass: ``(start, stop, block)`` with ``block`` of shape (stop - start, n) in the work dtype.

        Blocks are valid until the next one is requested (unless the data are resident).
        """
        if self._cache is not None:
            yield from self._cache
            return
        keep = self.resident_ok and cache
        cache_list: list[tuple[int, int, Any]] = []
        if self._array is not None:
            step = self._rows_per_block()  # bounded blocks keep the algorithms' temporaries bounded
            converts = self._array.dtype != self.work or self.device.is_gpu != is_cupy_array(self._array)
            for a in range(0, self.shape[0], step):
                b = min(a + step, self.shape[0])
                block = self._shifted_block(self._checked(self._to_work(self._array[a:b]), a), private=converts)
                if keep:
                    cache_list.append((a, b, block))
                yield a, b, block
        elif keep and not self.device.is_gpu and self._main.dtype.newbyteorder("=") == self.work:
            # kept in memory and no conversion needed: read straight into the resident matrix,
            # so the first pass costs no copy
            yield from self._read_resident(desc)
            return
        else:
            for blk in self._main.blocks(
                budget=max(self._reader_budget, 2 * self.shape[1] * self.dtype.itemsize),
                device=self.device,
                progress=(desc or False) if self.progress else False,
            ):
                block = self._checked(self._to_work(blk.data), blk.start)
                if keep and block.dtype == blk.data.dtype:
                    block = block.copy()  # no conversion happened: the reader will reuse this buffer
                block = self._shifted_block(block, private=True)  # the reader's buffer or a copy
                if keep:
                    cache_list.append((blk.start, blk.stop, block))
                yield blk.start, blk.stop, block
        self._finite_seen = True  # a whole pass arrived: its values are known to be finite
        if keep:
            self._cache = cache_list

    def _read_resident(self, desc: str | None) -> Iterator[tuple[int, int, Any]]:
        """First pass over data kept in memory: each block is read into its place in the resident
        matrix while the caller works on the previous one (disjoint slices: no buffer reuse)."""
        from concurrent.futures import ThreadPoolExecutor

        from ..core.stream import plan_blocks, progress_bar

        h5 = self._main.h5
        resident = np.empty(self.shape, dtype=self.work)
        plan = plan_blocks(
            self.shape[0],
            self.shape[1] * self.work.itemsize,
            self._rows_per_block() * self.shape[1] * self.work.itemsize,
            h5.chunks[0] if h5.chunks else None,
            1,
        )
        ranges = list(plan)
        bar = progress_bar(desc or False if self.progress else False, plan)
        cache = []

        def read(i: int) -> None:
            a, b = ranges[i]
            h5.read_direct(resident, np.s_[a:b], np.s_[a:b])

        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="usidgpu-resident") as pool:
            pending = pool.submit(read, 0)
            try:
                for i, (a, b) in enumerate(ranges):
                    pending.result()
                    if i + 1 < len(ranges):
                        pending = pool.submit(read, i + 1)
                    self._shifted_block(self._checked(resident[a:b], a), private=True)
                    cache.append((a, b, resident[a:b]))
                    yield a, b, resident[a:b]
                    if bar is not None:
                        bar.update(b - a)
            finally:
                pending.cancel()
                if bar is not None:
                    bar.close()
        self._finite_seen = True
        self._cache = cache

    def column_slabs(self, desc: str | None = None) -> Iterator[tuple[int, int, Any]]:
        """One pass by columns: ``(c0, c1, X[:, c0:c1])`` for matrices with few rows and many columns."""
        if self._shifted:
            raise RuntimeError("column slabs of a shifted source are not provided")
        m, n = self.shape
        width = max(1, self.block_budget // 2 // max(1, m * self.work.itemsize))
        if self._cache is None and self._array is None and self.resident_ok:
            for _ in self.blocks(desc):  # one pass by rows fills the resident copy
                pass
        if self._cache is not None or self._array is not None:
            full = self._cache_matrix() if self._array is None else None
            for c0 in range(0, n, width):
                c1 = min(c0 + width, n)
                src = full if full is not None else self._array
                yield c0, c1, self._to_work(src[:, c0:c1])
            return
        h5 = self._main.h5
        if h5.chunks and h5.chunks[1] < n:
            width = max(h5.chunks[1], width - width % h5.chunks[1])  # whole chunks across
        buf = None
        for c0 in range(0, n, width):
            c1 = min(c0 + width, n)
            if buf is None or buf.shape[1] != c1 - c0:
                buf = np.empty((m, c1 - c0), dtype=h5.dtype.newbyteorder("="))
            h5.read_direct(buf, np.s_[:, c0:c1])
            yield c0, c1, self._to_work(buf)

    def _head_statistics(self) -> tuple[Any, float]:
        """Mean row of the first rows (up to 1024), in the work dtype on the device, and their
        mean squared distance from it (float)."""
        rows = min(self.shape[0], self._rows_per_block(), 1024)
        head = self._array[:rows] if self._array is not None else self._main.h5[0:rows]
        head = self._checked(self._to_work(head), 0)
        acc = np.complex128 if self.is_complex else np.float64
        mean = self.xp.nan_to_num(head.mean(axis=0, dtype=acc))
        spread = float(sum_squares(self.xp, head - mean.astype(self.work))) / rows
        return mean.astype(self.work), spread

    def _checked(self, block: Any, start: int) -> Any:
        """``block`` (rows from ``start``), refused when a value is NaN or infinite.

        Checked where the data arrive, before any arithmetic: NaN and infinities would otherwise
        raise NumPy's RuntimeWarnings (overflow, invalid value) in every product before an
        algorithm's own check refuses the result.
        """
        if self._finite_seen or self.xp is not np:
            return block
        # screened by one BLAS product (a NaN or an infinity anywhere makes its column sum
        # non-finite) at a third of the cost of isfinite over every value; only a block that
        # fails the screen is searched value by value (finite values whose sum overflows pass)
        with np.errstate(over="ignore", invalid="ignore"):
            sums = np.ones(block.shape[0], dtype=block.dtype) @ block
        if block.size and np.isfinite(sums).all():
            return block
        bad = ~np.isfinite(block)
        if bad.any():
            row = start + int(np.unravel_index(int(np.argmax(bad)), bad.shape)[0])
            name = self._main.name if self._main is not None else "the data"
            raise InvalidInput(
                f"{name} contains NaN or infinite values (first at position {row}); the analyses need "
                "finite data (clean or mask them first)"
            )
        return block

    def _shifted_block(self, block: Any, private: bool) -> Any:
        if not self._shifted:
            return block
        if private:
            block -= self.offset
            return block
        return block - self.offset  # a view of the caller's array: never modified

    def _cache_matrix(self) -> Any:
        return self.xp.concatenate([blk for _a, _b, blk in self._cache], axis=0)

    def to_memory(self, max_bytes: int | None = None, hint: str | None = None) -> Any:
        """A copy of the whole matrix ``X`` (never shifted) in the work dtype on the device, for
        methods that need it all.

        Parameters
        ----------
        max_bytes : int, optional
            Largest matrix allowed (default: half of the memory budget).
        hint : str, optional
            What to do instead, for the error message (default: the streaming SVD methods).
        """
        limit = self.budget // 2 if max_bytes is None else int(max_bytes)
        if self.nbytes_work > limit:
            raise BudgetError(
                f"the data ({format_bytes(self.nbytes_work)} in {self.work}) do not fit in "
                f"{format_bytes(limit)}"
                + (" (half of the memory budget)" if max_bytes is None else "")
                + f"; {hint or 'use method=gram or randomized, which stream'}"
            )
        out = self.xp.empty(self.shape, dtype=self.work)  # a fresh array: callers may modify it
        for a, b, block in self.blocks("loading", cache=False):
            out[a:b] = block
        if self._shifted:
            out += self.offset  # blocks arrive as x − offset
        return out


def matrix_shape(data: Any) -> tuple[tuple[int, int], np.dtype]:
    """(rows, columns) and dtype of a Main dataset or a 2-D array, without reading it."""
    from ..usid.dataset import MainDataset

    if isinstance(data, MainDataset):
        return data.shape, data.dtype
    shape = getattr(data, "shape", None)
    if shape is None:
        data = np.asarray(data)
        shape = data.shape
    if len(shape) != 2:
        raise InvalidInput(f"expected a 2-D matrix (positions × spectroscopic points), got shape {tuple(shape)}")
    return (int(shape[0]), int(shape[1])), np.dtype(data.dtype)


def describe_source(src: BlockSource, **kwargs: Any) -> dict[str, Any]:
    """The :class:`~usidgpu.usid.described.Described` fields of a result computed from ``src``
    (its dimensions, quantity, units, layout, source and device), plus ``kwargs``."""
    from ..usid.dimension import Dimension

    main = src.main
    if main is not None:
        return dict(
            pos_dims=list(main.pos_dims),
            spec_dims=list(main.spec_dims),
            quantity=main.quantity,
            units=main.units,
            pos_grid=main.pos_layout.is_grid,
            spec_grid=main.spec_layout.is_grid,
            source=main,
            device=src.device.kind,
            **kwargs,
        )
    m, n = src.shape
    return dict(
        pos_dims=[Dimension("Position", "", m)],
        spec_dims=[Dimension("Point", "", n)],
        device=src.device.kind,
        **kwargs,
    )


#: Implementations of the decompositions (``engine=``): usidgpu's own streamed code, or RAPIDS
#: cuML on the GPU for data that fit there. As everywhere in usidgpu, ``engine`` names which
#: implementation computes the same result, and ``auto`` lets usidgpu choose.
ENGINES = ("auto", "usidgpu", "cuml")


def resolve_engine(engine: str) -> str:
    """``auto`` → ``usidgpu`` (cuML only when asked for: it needs all the data on the device)."""
    if engine not in ENGINES:
        raise InvalidInput(f"engine must be one of {', '.join(map(repr, ENGINES))}, got {engine!r}")
    return "usidgpu" if engine == "auto" else engine
