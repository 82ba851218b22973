"""Lazy views of a Main dataset for the wider ecosystem: dask arrays and xarray DataArrays.

Nothing is read when a view is made. A dask array reads its chunks from the HDF5 (or zarr)
dataset when computed; its chunks are whole multiples of the file's own chunks (dask's ``auto``
sizing with the file chunks as the grain), so a chunk never reads part of a stored chunk.

The n-d view (``to_dask(ndim=True)``) has the axes of :meth:`MainDataset.to_ndim` — position
dimensions then spectroscopic dimensions, in file order. Each of its chunks is a box of
positions × spectroscopic points that maps onto a few contiguous runs of rows and columns of
the 2-D dataset (the fast dimensions are kept whole, the slow ones split), read with the same
hyperslab reader as :meth:`MainDataset.sel`.

dask and xarray are imported only when these functions are called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..core.errors import InvalidType, SelectionError
from .ancillary import Layout
from .selection import SelectionPlan, read_rows_cols

if TYPE_CHECKING:
    from .dataset import MainDataset

#: name of the single axis that holds the positions (spectroscopic points) when they are not a grid
FLAT_POSITION_DIM = "Position"
FLAT_SPECTRAL_DIM = "Spectroscopic"


def _reopen(filename: str, name: str) -> MainDataset:
    """The Main dataset ``name`` of ``filename``, opened read-only (used when unpickling)."""
    from .file import USIDFile

    f = USIDFile(filename, "r")
    main = f[name]
    main._keep_file = f  # the file stays open as long as the dataset lives
    return main


class _Source:
    """Array-like handed to ``dask.array.from_array``: reads through the MainDataset on demand.

    Going through the :class:`MainDataset` (not a raw ``h5py.Dataset``) means a file that was
    closed and reopened by ``MainDataset`` is followed, and pickling (dask's distributed
    schedulers) sends the file name and dataset path, reopened read-only on the worker.
    """

    def __init__(self, main: MainDataset):
        self.main = main
        self.dtype = main.dtype

    def __reduce__(self):
        return (_rebuild, (type(self), self.main.filename, self.main.name))

    @property
    def ndim(self) -> int:
        return len(self.shape)


def _rebuild(cls, filename: str, name: str):
    return cls(_reopen(filename, name))


class Flat2D(_Source):
    """The (positions × spectroscopic points) dataset as stored."""

    def __init__(self, main: MainDataset):
        super().__init__(main)
        self.shape = tuple(main.shape)
        self.chunks = main.chunks

    def __getitem__(self, key: Any) -> np.ndarray:
        return np.asarray(self.main.h5[key])


def _axis_indices(key: Any, size: int) -> tuple[np.ndarray, bool]:
    """Indices along one axis chosen by ``key`` (int, slice or 1-D ints); True when dropped."""
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        k = int(key)
        if not -size <= k < size:
            raise SelectionError(f"index {k} is out of range for an axis of size {size}")
        return np.array([k % size]), True
    if isinstance(key, slice):
        return np.arange(size)[key], False
    arr = np.asarray(key)
    if arr.dtype == bool:
        return np.flatnonzero(arr), False
    if arr.ndim != 1 or not (arr.size == 0 or np.issubdtype(arr.dtype, np.integer)):
        raise InvalidType(f"unsupported index {key!r}")
    return arr.astype(np.int64) % max(size, 1), False


def _expand_key(key: Any, ndim: int) -> tuple:
    key = key if isinstance(key, tuple) else (key,)
    if any(k is None for k in key):
        raise InvalidType("new axes (None) are not supported here")
    if any(k is Ellipsis for k in key):
        i = key.index(Ellipsis)
        key = key[:i] + (slice(None),) * (ndim - len(key) + 1) + key[i + 1 :]
    if len(key) > ndim:
        raise SelectionError(f"too many indices: {len(key)} for {ndim} axes")
    return key + (slice(None),) * (ndim - len(key))


def _side(layout: Layout, keys: tuple, n_entries: int):
    """Entries, slowest-first shape, file-order transpose and drops for one side of a key."""
    if not layout.is_grid:
        idx, dropped = _axis_indices(keys[0], n_entries)
        return idx, (idx.size,), (0,), [dropped]
    per_dim = [_axis_indices(k, s) for k, s in zip(keys, layout.sizes)]
    sf_idx = [per_dim[c][0] for c in layout.order]
    grids = np.meshgrid(*sf_idx, indexing="ij")
    entries = np.ravel_multi_index(tuple(g.reshape(-1) for g in grids), layout.slow_to_fast_sizes)
    return entries.astype(np.int64), tuple(i.size for i in sf_idx), layout.file_axes(), [d for _, d in per_dim]


class NdView(_Source):
    """The n-d view: position dims then spectroscopic dims in file order.

    A side (positions or spectroscopic points) that is not a full grid stays one flat axis.
    """

    def __init__(self, main: MainDataset):
        super().__init__(main)
        self.n_pos_axes = main.pos_layout.n_dims if main.pos_layout.is_grid else 1
        pos = main.pos_sizes if main.pos_layout.is_grid else (main.n_positions,)
        spec = main.spec_sizes if main.spec_layout.is_grid else (main.n_spectral,)
        self.shape = tuple(pos) + tuple(spec)

    def __getitem__(self, key: Any) -> np.ndarray:
        main = self.main
        key = _expand_key(key, self.ndim)
        npa = self.n_pos_axes
        rows, pshape, paxes, pdrop = _side(main.pos_layout, key[:npa], main.n_positions)
        cols, sshape, saxes, sdrop = _side(main.spec_layout, key[npa:], main.n_spectral)
        drop = tuple(i for i, d in enumerate(pdrop + sdrop) if d)
        if rows.size == 0 or cols.size == 0:
            full = [pshape[a] for a in paxes] + [sshape[a] for a in saxes]
            return np.empty(tuple(n for i, n in enumerate(full) if i not in drop), dtype=self.dtype)
        axes = tuple(paxes) + tuple(len(pshape) + a for a in saxes)
        return read_rows_cols(main, SelectionPlan(rows, cols, pshape + sshape, axes, drop))


def _side_chunks(layout: Layout, n_entries: int, target: int) -> tuple[int, ...]:
    """Chunk lengths (file order) splitting one side into boxes of about ``target`` entries.

    The fastest dimensions are kept whole while they fit; the next one is split; slower ones get
    chunks of one. Every chunk is then a contiguous run of entries (rows or columns).
    """
    if not layout.is_grid:
        return (max(1, min(target, n_entries)),)
    chunks = [1] * layout.n_dims
    covered = 1
    for c in reversed(layout.order):  # fastest first
        size = layout.sizes[c]
        if covered * size <= target:
            chunks[c] = size
            covered *= size
        else:
            chunks[c] = max(1, target // covered)
            break
    return tuple(chunks)


def _flat_chunks(main: MainDataset, chunks: Any) -> tuple:
    import dask.array as da

    if chunks == "file":
        return main.chunks or main.shape
    return da.core.normalize_chunks(chunks, main.shape, dtype=main.dtype, previous_chunks=main.chunks)


def to_dask(main: MainDataset, ndim: bool = False, chunks: Any = "auto"):
    """A lazy dask array of ``main``.

    Parameters
    ----------
    main : MainDataset
    ndim : bool
        False: the (positions × spectroscopic points) dataset as stored. True: the n-d form of
        :meth:`MainDataset.to_ndim` (same shape, axes and values), read lazily.
    chunks : "auto", "file", int, tuple or dict
        ``"auto"`` (default): multiples of the file's chunks of about dask's
        ``array.chunk-size``; ``"file"``: exactly the HDF5 chunks (may mean many tiny tasks);
        anything else is passed to :func:`dask.array.from_array` for the 2-D array. For the n-d
        array the 2-D chunking decides how many positions and spectroscopic points a chunk holds.

    Returns
    -------
    dask.array.Array

    Raises
    ------
    NotAGridError
        ``ndim=True`` on a dataset whose positions or spectroscopic points are not a full grid.
    """
    import dask.array as da

    flat = _flat_chunks(main, chunks)
    name = f"usid-{main.filename}-{main.name}-{'nd' if ndim else '2d'}"
    if not ndim:
        return da.from_array(Flat2D(main), chunks=flat, name=_token(name, flat), asarray=False, meta=_meta(main))
    main._require_grid()
    return _nd_dask(main, flat, name)


def _token(name: str, chunks: Any) -> str:
    from dask.base import tokenize

    return "usid-" + tokenize(name, chunks)


def _meta(main: MainDataset) -> np.ndarray:
    return np.empty((0,) * 2, dtype=main.dtype)


def _nd_dask(main: MainDataset, flat: Any = "auto", name: str | None = None):
    """The n-d dask array (a non-grid side stays one flat axis)."""
    import dask.array as da

    if not (isinstance(flat, tuple) and all(isinstance(c, tuple) for c in flat)):
        flat = _flat_chunks(main, flat)
    rows_per = max(flat[0]) if flat[0] else 1
    cols_per = max(flat[1]) if flat[1] else 1
    view = NdView(main)
    nd_chunks = _side_chunks(main.pos_layout, main.n_positions, rows_per) + _side_chunks(
        main.spec_layout, main.n_spectral, cols_per
    )
    return da.from_array(
        view,
        chunks=nd_chunks,
        name=_token(name or f"usid-{main.filename}-{main.name}-nd", nd_chunks),
        asarray=False,
        meta=np.empty((0,) * view.ndim, dtype=main.dtype),
    )


def _unique_names(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for n in names:
        if n in seen:
            seen[n] += 1
            n = f"{n}_{seen[n]}"
        else:
            seen[n] = 0
        out.append(n)
    return out


def to_xarray(main: MainDataset, lazy: bool = True, chunks: Any = "auto"):
    """An :class:`xarray.DataArray` of ``main`` with named dimensions and coordinates.

    Parameters
    ----------
    main : MainDataset
    lazy : bool
        True (default): backed by :func:`to_dask` (``ndim=True``), nothing read until computed.
        False: the values are read now (:meth:`MainDataset.to_ndim` for a grid).
    chunks
        As for :func:`to_dask`.

    Returns
    -------
    xarray.DataArray
        Dims: the position then spectroscopic dimension names in file order (the axes of
        :meth:`MainDataset.to_ndim`); each has a coordinate with its values and
        ``attrs["units"]``. The array's ``name`` is the quantity and ``attrs`` hold
        ``quantity``, ``units``, ``long_name`` and where it came from (``usid_file``,
        ``usid_dataset``). When the positions (spectroscopic points) are not a full grid
        (sparse sampling) they stay one axis, ``"Position"`` (``"Spectroscopic"``), and every
        position (spectroscopic) dimension is a coordinate along it with one value per entry.
    """
    import xarray as xr

    sides = (
        (main.pos_dims, main.pos_layout, main.h5_pos_vals, False, FLAT_POSITION_DIM),
        (main.spec_dims, main.spec_layout, main.h5_spec_vals, True, FLAT_SPECTRAL_DIM),
    )
    names = []
    for side_dims, layout, _vals, _t, flat_name in sides:
        names += [d.name for d in side_dims] if layout.is_grid else [flat_name]
    dims = _unique_names(names)  # a name used twice (e.g. X on both sides) gets a suffix
    coords: dict[str, Any] = {}
    k = 0
    for side_dims, layout, vals_ds, transposed, flat_name in sides:
        if layout.is_grid:
            for d in side_dims:
                coords[dims[k]] = (dims[k], np.asarray(d.values), {"units": d.units, "long_name": d.name})
                k += 1
            continue
        flat = dims[k]
        n = layout.n_entries
        coords[flat] = (flat, np.arange(n), {"long_name": f"{flat_name} index"})
        table = vals_ds[()].T if transposed else vals_ds[()]  # ancillary tables are small
        for j, d in enumerate(side_dims):
            cname = d.name if d.name not in coords and d.name not in dims else f"{d.name}_{flat}"
            coords[cname] = (flat, np.asarray(table[:, j]), {"units": d.units, "long_name": d.name})
        k += 1
    if lazy:
        data = _nd_dask(main, chunks)
    elif main.is_grid:
        data = main.to_ndim()
    else:
        data = NdView(main)[...]
    attrs = {
        "quantity": main.quantity,
        "units": main.units,
        "long_name": main.quantity,
        "usid_file": str(main.filename),
        "usid_dataset": main.name,
    }
    return xr.DataArray(data, dims=dims, coords=coords, name=main.quantity or None, attrs=attrs)


__all__ = ["FLAT_POSITION_DIM", "FLAT_SPECTRAL_DIM", "Flat2D", "NdView", "to_dask", "to_xarray"]


def slowest_first(main: MainDataset, lazy: bool = False) -> tuple[Any, list[Any], list[Any]]:
    """The n-d data of a dataset whose spectroscopic points fill a grid, every axis in NumPy C order
    (slowest-varying first, whatever the order of the ancillary columns), and its position and
    spectroscopic dimensions in that order; positions that fill no grid stay one flat axis (and
    no position dimension is returned). ``lazy``: a dask array (:func:`to_dask`).
    """
    spec_dims = [main.spec_dims[i] for i in main.spec_layout.order]
    if main.pos_layout.is_grid:
        # to_ndim's axes follow the ancillary columns; the layouts' orders put the slowest first
        n_pos = len(main.pos_dims)
        axes = list(main.pos_layout.order) + [n_pos + i for i in main.spec_layout.order]
        data = (to_dask(main, ndim=True) if lazy else main.to_ndim()).transpose(axes)
        return data, [main.pos_dims[i] for i in main.pos_layout.order], spec_dims
    # one flat axis of positions; a row's columns are C order over the slowest-first sizes
    flat = to_dask(main) if lazy else main[()]
    return flat.reshape((main.n_positions, *main.spec_layout.slow_to_fast_sizes)), [], spec_dims
