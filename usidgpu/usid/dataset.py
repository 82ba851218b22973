"""A USID Main dataset: the data plus its position and spectroscopic dimensions."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core.arrays import asnumpy
from ..core.device import Device
from ..core.errors import BudgetError, FileProblem, InvalidInput, NotAGridError, NotMainError, UnknownName
from ..core.memory import MEMORY_ENV, format_bytes, free_memory, memory_budget
from ..core.stream import Block, BlockPlan, BufferPool, iter_blocks, plan_for
from ..storage import DatasetNode, is_dataset, is_open, open_file
from ..storage.h5 import damage_reported
from ..storage.nodes import require_filters
from .ancillary import Layout, dims_from_tables, infer_layout, table_cost
from .attrs import decode_str, decode_str_list, read_attrs
from .dimension import Dimension
from .reduce import reduce_main
from .rules import ANCILLARY_REFS, ERROR, Problem, index_problems, main_problems
from .selection import read_rows_cols, selection_plan


class MainDataset:
    """A USID Main dataset (positions × spectroscopic points) with its dimensions.

    Open one with :func:`usidgpu.open` and ``f.main_datasets()`` / ``f[path]``, or wrap a
    dataset directly (an ``h5py.Dataset``, or one of a zarr store opened by usidgpu). Nothing
    here reads the Main data until asked: ``to_ndim()``, ``sel()``, ``reduce()`` and
    ``blocks()`` stream it.

    Parameters
    ----------
    dataset : h5py.Dataset or another :class:`~usidgpu.storage.DatasetNode`
        A dataset that follows the USID Main rules.

    Raises
    ------
    NotMainError
        When ``dataset`` breaks a rule of the USID Main model; the message names it.
    FileProblem
        The file is damaged (HDF5 cannot read the dataset's structure), or its data need a
        compression filter no installed package provides.
    MissingDependency
        Its data need hdf5plugin's compression filters, and hdf5plugin is not installed.

    Notes
    -----
    ``pos_dims`` and ``spec_dims`` list the dimensions in the order of the ancillary columns in
    the file (pyUSID's ``pos_dim_labels`` order), and ``to_ndim()`` puts its axes in that order,
    exactly like pyUSID's ``get_n_dim_form``. Whether the file lists the slowest or the fastest
    dimension first is read from the index values.

    The ancillary tables are read on first use of the dimensions (or :meth:`check_tables`), within
    the memory budget and checked against :func:`usidgpu.validate`'s index rules: a dataset whose
    tables are huge or whose indices are not non-negative integers opens, but has no dimensions
    (:class:`~usidgpu.core.errors.BudgetError`, :class:`~usidgpu.core.errors.NotMainError`).
    """

    def __init__(self, dataset: DatasetNode):
        if not is_dataset(dataset):
            raise NotMainError(f"{getattr(dataset, 'name', dataset)} is not an HDF5 dataset")
        with damage_reported(dataset.file.filename):
            self._open(dataset)

    def _open(self, dataset: DatasetNode) -> None:
        if not isinstance(dataset.name, str):  # h5py hands out a name it cannot decode as bytes
            raise FileProblem(
                f"{dataset.file.filename}: damaged HDF5 file: the path of a dataset is not valid UTF-8 "
                f"({bytes(dataset.name)[:60]!r})"
            )
        errors = [p for p in main_problems(dataset) if p.severity == ERROR]
        if errors:
            more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
            raise NotMainError(
                f"{dataset.file.filename}: {dataset.name} is not a USID Main dataset: {errors[0].message}{more}"
            )
        self._dataset = dataset
        self._path = dataset.file.filename
        self._dataset_name = dataset.name
        self._buffers = BufferPool()  # read buffers kept between passes (see release_buffers)
        self._link_ancillaries(dataset)
        for anc in (self.h5_pos_inds, self.h5_pos_vals, self.h5_spec_inds, self.h5_spec_vals):
            if anc.dtype.kind not in "iufb":
                raise NotMainError(
                    f"{dataset.file.filename}: {dataset.name} is not a USID Main dataset: its ancillary "
                    f"{anc.name} holds {anc.dtype} instead of numbers"
                )
        for node in (dataset, *self._anc.values()):
            require_filters(node)  # names a missing compression plugin before any read fails
        self._tables_read: _Tables | None = None  # read on first use: see _tables()

    def _tables(self) -> _Tables:
        """The index tables, dimensions and layouts, read on first use.

        Reading waits until something needs them, so a dataset whose tables are too large for
        the memory budget can still be opened and described by its shape; they are checked
        against the budget and against validate's index rules before they are used.
        """
        if self._tables_read is None:
            with damage_reported(self.filename):
                pos = self._read_side(self.h5_pos_inds, self.h5_pos_vals, spectroscopic=False)
                spec = self._read_side(self.h5_spec_inds, self.h5_spec_vals, spectroscopic=True)
            self._tables_read = _Tables(*pos, *spec)
        return self._tables_read

    def _read_side(
        self, inds: DatasetNode, vals: DatasetNode, spectroscopic: bool
    ) -> tuple[list[Dimension], Layout, np.ndarray]:
        """Dimensions, layout and (entries × dims) index table of one side, within the budget."""
        n_entries, n_dims = (inds.shape[1], inds.shape[0]) if spectroscopic else inds.shape[:2]
        cost = table_cost(n_entries, n_dims)
        budget = memory_budget()
        if cost > budget:
            raise BudgetError(
                f"{self.filename}: {self.name}: its {inds.name.rsplit('/', 1)[-1]} table declares "
                f"{n_entries} entries × {n_dims} dimensions, which need about {format_bytes(cost)} to "
                f"read, more than the memory budget ({format_bytes(budget)}); set {MEMORY_ENV} "
                "higher if this machine has the memory"
            )
        self._refuse(index_problems(inds, None))  # the dtype, before reading anything
        table, values = inds[()], vals[()]
        table, values = (table.T, values.T) if spectroscopic else (table, values)
        self._refuse(index_problems(inds, table))
        dims, layout = dims_from_tables(
            table,
            values,
            decode_str_list(inds.attrs["labels"]),
            decode_str_list(inds.attrs["units"]),
            infer_layout(table),
        )
        return dims, layout, table

    def _refuse(self, problems: list[Problem]) -> None:
        """Refuse index tables that break a rule :func:`usidgpu.validate` calls an error, in its words."""
        if problems:
            raise NotMainError(f"{self.filename}: {self.name} is not a usable USID Main dataset: {problems[0]}")

    def check_tables(self) -> None:
        """Read the ancillary tables now and check them (analyses call this before any work).

        Raises
        ------
        BudgetError
            The tables are larger than the memory budget.
        NotMainError
            The index tables break a rule of :func:`usidgpu.validate` (not integers, negative).
        """
        self._tables()

    @property
    def pos_dims(self) -> list[Dimension]:
        """Position dimensions, in the order of the ancillary columns."""
        return self._tables().pos_dims

    @property
    def pos_layout(self) -> Layout:
        return self._tables().pos_layout

    @property
    def spec_dims(self) -> list[Dimension]:
        """Spectroscopic dimensions, in the order of the ancillary rows."""
        return self._tables().spec_dims

    @property
    def spec_layout(self) -> Layout:
        return self._tables().spec_layout

    def _link_ancillaries(self, dataset: DatasetNode) -> None:
        f = dataset.file
        self._anc = {name: f[dataset.attrs[name]] for name in ANCILLARY_REFS}

    @property
    def _h5(self) -> DatasetNode:
        # Attaching results to the source file closes it (HDF5 cannot hold one file open for
        # reading and writing at once); the dataset then reopens itself, read-only, on first use.
        if not is_open(self._dataset):
            self._file = open_file(self._path, "r")  # kept: the reopened file lives as long as we do
            self._dataset = self._file[self._dataset_name]
            self._link_ancillaries(self._dataset)
        return self._dataset

    # ---------------------------------------------------------------- description
    @property
    def h5(self) -> DatasetNode:
        """The underlying dataset (``h5py.Dataset``, or a dataset of a zarr store)."""
        return self._h5

    def _ancillary(self, name: str) -> DatasetNode:
        _ = self._h5  # reopens the file if it was closed
        return self._anc[name]

    @property
    def h5_pos_inds(self) -> DatasetNode:
        return self._ancillary("Position_Indices")

    @property
    def h5_pos_vals(self) -> DatasetNode:
        return self._ancillary("Position_Values")

    @property
    def h5_spec_inds(self) -> DatasetNode:
        return self._ancillary("Spectroscopic_Indices")

    @property
    def h5_spec_vals(self) -> DatasetNode:
        return self._ancillary("Spectroscopic_Values")

    @property
    def name(self) -> str:
        """HDF5 path of the dataset, e.g. ``/Measurement_000/Channel_000/Raw_Data``."""
        return self._dataset_name

    @property
    def filename(self) -> str:
        return self._path

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self._h5.shape)

    @property
    def dtype(self) -> np.dtype:
        return self._h5.dtype

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    @property
    def n_positions(self) -> int:
        return self.shape[0]

    @property
    def n_spectral(self) -> int:
        return self.shape[1]

    @property
    def chunks(self) -> tuple[int, int] | None:
        return self._h5.chunks

    @property
    def compression(self) -> str | None:
        return self._h5.compression

    @property
    def quantity(self) -> str:
        return decode_str(self._h5.attrs["quantity"]).strip()

    @property
    def units(self) -> str:
        return decode_str(self._h5.attrs["units"]).strip()

    @property
    def attrs(self) -> dict[str, Any]:
        """The dataset's attributes with strings decoded (references are kept as references)."""
        return read_attrs(self._h5)

    @property
    def dims(self) -> list[Dimension]:
        """Position then spectroscopic dimensions, in file order."""
        return list(self.pos_dims) + list(self.spec_dims)

    @property
    def dim_names(self) -> list[str]:
        return [d.name for d in self.dims]

    @property
    def pos_sizes(self) -> tuple[int, ...]:
        return tuple(d.size for d in self.pos_dims)

    @property
    def spec_sizes(self) -> tuple[int, ...]:
        return tuple(d.size for d in self.spec_dims)

    @property
    def is_grid(self) -> bool:
        """True when positions and spectroscopic points both fill full grids (an n-d view exists)."""
        return self.pos_layout.is_grid and self.spec_layout.is_grid

    @property
    def nd_shape(self) -> tuple[int, ...]:
        """Shape of :meth:`to_ndim`: position sizes then spectroscopic sizes, in file order.

        Raises
        ------
        NotAGridError
            For sparse or irregular sampling.
        """
        self._require_grid()
        return self.pos_sizes + self.spec_sizes

    @property
    def position_indices(self) -> np.ndarray:
        """Position index table (positions × position dims), file column order."""
        return self._tables().pos_table

    @property
    def spectroscopic_indices(self) -> np.ndarray:
        """Spectroscopic index table transposed to (points × spectroscopic dims)."""
        return self._tables().spec_table

    def __repr__(self) -> str:
        if self._tables_read is None:  # a repr reads nothing: the tables may be huge or broken
            return f"<usidgpu.MainDataset {self.name!r} {self.shape} {self.dtype}; {self.quantity} ({self.units})>"
        dims = ", ".join(f"{d.name}: {d.size}" + (f" {d.units}" if d.units else "") for d in self.pos_dims)
        spec = ", ".join(f"{d.name}: {d.size}" + (f" {d.units}" if d.units else "") for d in self.spec_dims)
        return (
            f"<usidgpu.MainDataset {self.name!r} {self.shape} {self.dtype}; {self.quantity} ({self.units}); "
            f"positions [{dims}]; spectroscopic [{spec}]>"
        )

    def __getitem__(self, key: Any) -> np.ndarray:
        """2-D hyperslab of the raw (positions × spectroscopic) data, as h5py reads it."""
        return self._h5[key]

    def __len__(self) -> int:
        return self.shape[0]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MainDataset) and other._h5 == self._h5

    def __hash__(self) -> int:
        return hash((self.filename, self.name))

    # ---------------------------------------------------------------- n-d views
    def _require_grid(self, positions: bool = True, spectroscopic: bool = True) -> None:
        for side, layout, wanted in (
            ("positions", self.pos_layout, positions),
            ("spectroscopic points", self.spec_layout, spectroscopic),
        ):
            if wanted and not layout.is_grid:
                raise NotAGridError(
                    f"{self.filename}: {self.name}: the {side} do not fill a full grid "
                    f"({layout.kind} layout, {layout.n_entries} entries, dimension sizes "
                    f"{list(layout.sizes)}), so there is no n-d view; stream it with blocks() "
                    f"or read it as 2-D with ds[...]"
                )

    def dim(self, name: str) -> Dimension:
        """The dimension called ``name``."""
        for d in self.dims:
            if d.name == name:
                return d
        raise UnknownName(f"{self.name} has no dimension {name!r}; its dimensions are {self.dim_names}")

    def to_ndim(self) -> np.ndarray:
        """The whole dataset as an n-d NumPy array, axes in file order (pyUSID's ``get_n_dim_form``).

        The data are read straight into the result (no second copy); the result is a transposed
        view when the file lists the fastest dimension first.

        Raises
        ------
        NotAGridError
            For sparse or irregular sampling.
        BudgetError
            When the dataset is larger than the available RAM.
        """
        self._require_grid()
        available = free_memory("cpu")
        if self.nbytes > available:
            raise BudgetError(
                f"{self.filename}: {self.name} holds {format_bytes(self.nbytes)} but only "
                f"{format_bytes(available)} of RAM is available; use sel(), reduce() or blocks()"
            )
        # A grid's entries are in C order of its slowest-first dimensions by definition, so the
        # rows and columns read as stored; only the axes need permuting to file order.
        sf_shape = self.pos_layout.slow_to_fast_sizes + self.spec_layout.slow_to_fast_sizes
        out = np.empty(sf_shape, dtype=self.dtype)
        if self.nbytes:
            self._h5.read_direct(out.reshape(self.shape))
        return np.transpose(out, nd_axes(self.pos_layout, self.spec_layout))

    def sel(self, **selection: int | slice | Sequence[int]) -> np.ndarray:
        """Select by dimension name, like pyUSID's ``USIDataset.slice``.

        Parameters
        ----------
        **selection
            ``name=index`` (the axis is dropped), ``name=slice(...)`` or ``name=[i, j, ...]``
            (the axis is kept). Unnamed dimensions are kept whole.

        Returns
        -------
        numpy.ndarray
            n-d array, remaining axes in file order. Positions (or spectroscopic points) that
            fill no grid — sparse sampling, an aborted scan, dependent dimensions — stay one
            flat axis; naming their dimensions keeps the entries whose index-table values are
            selected, as pyUSID's ``slice`` does.

        Raises
        ------
        SelectionError
            An index out of range, or no entry of a non-grid side matches.

        Examples
        --------
        >>> ds.sel(Bias=0)                       # the image at the first bias
        >>> ds.sel(X=slice(0, 10), Cycle=[0, 2])
        """
        plan = selection_plan(self, selection)
        return read_rows_cols(self, plan)

    def reduce(
        self,
        dims: str | Sequence[str],
        func: Any = "mean",
        budget: int | str | None = None,
        device: str | Device | None = "cpu",
        progress: bool | str = False,
    ) -> np.ndarray:
        """Reduce over named dimensions, streaming the data in blocks.

        Parameters
        ----------
        dims : str or sequence of str
            Dimensions to reduce over (position and/or spectroscopic).
        func : str or callable
            ``"mean"``, ``"sum"``, ``"min"``, ``"max"``, ``"var"``, ``"std"`` or their ``nan``
            variants (NumPy/CuPy functions of those names are accepted too). Any other callable
            taking ``axis=`` works when only spectroscopic dimensions are reduced.
        budget : int or str, optional
            Memory budget for the blocks.
        device : {"cpu", "gpu", "auto"}
            Where the reduction runs; the result is always a NumPy array.
        progress : bool or str
            Progress bar.

        Returns
        -------
        numpy.ndarray
            Remaining dimensions in file order (positions of a non-grid dataset as one flat axis).
        """
        return reduce_main(self, dims, func, budget=budget, device=device, progress=progress)

    # ---------------------------------------------------------------- interop and viewing
    def to_dask(self, ndim: bool = False, chunks: Any = "auto") -> Any:
        """Lazy dask array, chunked like the file: 2-D as stored, or ``ndim=True`` like :meth:`to_ndim`.

        See :func:`usidgpu.usid.interop.to_dask`.
        """
        from .interop import to_dask

        return to_dask(self, ndim=ndim, chunks=chunks)

    def to_hyperspy(self, lazy: bool = False) -> Any:
        """A HyperSpy signal: positions as navigation axes, spectroscopic dimensions as signal
        axes, slowest first, with units, uniform or non-uniform axes and the quantity (one signal
        per field for compound data). See :func:`usidgpu.usid.hyperspy.to_hyperspy`."""
        from .hyperspy import to_hyperspy

        return to_hyperspy(self, lazy=lazy)

    def to_sidpy(self, lazy: bool = True) -> Any:
        """A ``sidpy.Dataset`` (pyNSID, pycroscopy ≥ 0.63) with dimensions typed SPATIAL /
        SPECTRAL / TEMPORAL from their units and names. See :func:`usidgpu.usid.sidpy.to_sidpy`."""
        from .sidpy import to_sidpy

        return to_sidpy(self, lazy=lazy)

    def to_xarray(self, lazy: bool = True, chunks: Any = "auto") -> Any:
        """``xarray.DataArray`` with named dims, coordinates with units, dask-backed when ``lazy``.

        See :func:`usidgpu.usid.interop.to_xarray`.
        """
        from .interop import to_xarray

        return to_xarray(self, lazy=lazy, chunks=chunks)

    def visualize(self, **kwargs: Any) -> Any:
        """Interactive viewer (ipywidgets): sliders over every dimension, map beside spectrum.

        See :class:`usidgpu.viz.viewer.MainViewer` for the keyword arguments.
        """
        from ..viz.viewer import MainViewer

        return MainViewer(self, **kwargs)

    # ---------------------------------------------------------------- streaming
    def block_plan(
        self, budget: int | str | None = None, device: str | Device | None = "cpu", prefetch: bool = True
    ) -> BlockPlan:
        """The block plan :meth:`blocks` would follow with these arguments."""
        return plan_for(self._h5, budget, device, prefetch)

    def blocks(
        self,
        budget: int | str | None = None,
        device: str | Device | None = "cpu",
        prefetch: bool = True,
        copy: bool = False,
        progress: bool | str = False,
        start: int = 0,
        stop: int | None = None,
    ) -> Iterator[Block]:
        """Iterate over blocks of whole positions, within a memory budget.

        Parameters
        ----------
        budget : int or str, optional
            Bytes for the read buffers (``"256MB"``); default a fraction of free memory.
        device : {"cpu", "gpu", "auto"}
            ``cpu`` yields NumPy arrays, ``gpu`` CuPy arrays (via pinned memory and asynchronous
            copies); ``gpu`` without a usable GPU is an error.
        prefetch : bool
            Read the next block in the background while this one is processed.
        copy : bool
            Yield fresh arrays instead of views of reused buffers.
        progress : bool or str
            Progress bar (shown for passes longer than a second).
        start, stop : int, optional
            Range of positions (rows).

        Yields
        ------
        Block
            ``(start, stop, data)`` with ``data`` of shape (stop - start, n_spectral). Without
            ``copy`` it is valid until the next block is requested.

        Notes
        -----
        The buffers of a finished pass are kept for the next one (fresh memory costs page faults
        on every pass); :meth:`release_buffers` frees them.
        """
        return iter_blocks(
            self._h5,
            budget=budget,
            device=device,
            prefetch=prefetch,
            copy=copy,
            progress=progress,
            start=start,
            stop=stop,
            pool=self._buffers,
        )

    def release_buffers(self) -> None:
        """Free the read buffers :meth:`blocks` keeps for the next pass (at most one pass's worth)."""
        self._buffers.clear()

    # ---------------------------------------------------------------- writing
    def write_rows(self, start: int, data: Any) -> None:
        """Write a block of whole positions starting at row ``start`` (incremental writing).

        Parameters
        ----------
        start : int
            First row (position) of the block.
        data : array-like (NumPy or CuPy)
            Shape (n, n_spectral).
        """
        block = asnumpy(data)
        if block.ndim == 1:
            block = block.reshape(1, -1)
        if block.ndim != 2 or block.shape[1] != self.shape[1]:
            raise InvalidInput(f"{self.name}: a block must have shape (n, {self.shape[1]}), got {block.shape}")
        stop = start + block.shape[0]
        if not 0 <= start <= stop <= self.shape[0]:
            raise InvalidInput(f"{self.name}: rows [{start}, {stop}) are outside [0, {self.shape[0]})")
        if self._h5.dtype.fields is None:
            block = block.astype(self._h5.dtype, copy=False)
        self._h5.write_direct(np.ascontiguousarray(block), dest_sel=np.s_[start:stop])


@dataclass(frozen=True)
class _Tables:
    """What a Main dataset's ancillary tables say, read once."""

    pos_dims: list[Dimension]
    pos_layout: Layout
    pos_table: np.ndarray
    spec_dims: list[Dimension]
    spec_layout: Layout
    spec_table: np.ndarray


def nd_axes(pos: Layout, spec: Layout) -> tuple[int, ...]:
    """Transpose taking (positions slowest-first, spectroscopic slowest-first) axes to file order."""
    n_pos = pos.n_dims
    return tuple(pos.file_axes()) + tuple(n_pos + a for a in spec.file_axes())
