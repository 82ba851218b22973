"""Writing USID Main datasets and their ancillary datasets exactly as pyUSID does."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import h5py
import numpy as np

from ..core.arrays import asnumpy, is_cupy_array
from ..core.chunks import write_compressed
from ..core.errors import InvalidInput, InvalidType, NotUSIDError
from ..storage import DatasetNode, copy_dataset, is_dataset, is_group, read_only_reason
from .ancillary import INDICES_DTYPE, VALUES_DTYPE, build_tables
from .attrs import book_keeping, decode_str_list, encode_str_list, write_attrs
from .dimension import Dimension

#: Target size of one default chunk: USID recommends 100 kB – 1 MB of whole positions.
DEFAULT_CHUNK_BYTES = 1024**2

DimsSpec = Any  # Sequence[Dimension] | MainDataset | tuple[DatasetNode, DatasetNode]


def default_chunks(shape: tuple[int, int], itemsize: int, target: int = DEFAULT_CHUNK_BYTES) -> tuple[int, int]:
    """Chunks of whole positions near ``target`` bytes (a row is split only when one row is larger)."""
    n_rows, n_cols = max(shape[0], 1), max(shape[1], 1)
    row_bytes = n_cols * itemsize
    if row_bytes >= target:
        return 1, max(1, min(n_cols, target // itemsize))
    return max(1, min(n_rows, target // row_bytes)), n_cols


def compression_options(compression: Any, compression_opts: Any = None) -> dict[str, Any]:
    """h5py keyword arguments for ``gzip``/``lzf``/a gzip level, or an hdf5plugin filter name.

    hdf5plugin names (``blosc``, ``blosc2``, ``zstd``, ``lz4``, ``bitshuffle``, ``bzip2``, ...)
    need the ``hdf5plugin`` package; a mapping such as ``hdf5plugin.Zstd()`` is passed through.
    """
    if compression is None:
        return {}
    if isinstance(compression, Mapping):
        return dict(compression)
    if isinstance(compression, (int, np.integer)) and not isinstance(compression, bool):
        return {"compression": "gzip", "compression_opts": int(compression)}
    name = str(compression).lower()
    if name in ("gzip", "lzf", "szip"):
        opts = {"compression": name}
        if compression_opts is not None:
            opts["compression_opts"] = compression_opts
        return opts
    try:
        import hdf5plugin
    except ImportError:
        raise NotUSIDError(
            f"compression {compression!r} needs the hdf5plugin package (pip install hdf5plugin); "
            "built in are gzip and lzf"
        ) from None
    classes = {c.lower(): c for c in dir(hdf5plugin) if isinstance(getattr(hdf5plugin, c), type)}
    if name not in classes:
        raise NotUSIDError(f"unknown compression {compression!r}; use gzip, lzf or one of hdf5plugin's filters")
    filt = getattr(hdf5plugin, classes[name])
    return dict(filt(**(compression_opts or {})))


def _sanitize_name(name: str, what: str) -> str:
    name = name.strip()
    if not name:
        raise InvalidInput(f"{what} must not be empty")
    if "-" in name:
        # results groups are named <Source>-<Tool>_NNN and parsed by splitting at '-'
        warnings.warn(f"{what} {name!r} contains '-'; written as {name.replace('-', '_')!r}", stacklevel=3)
        name = name.replace("-", "_")
    if "/" in name:
        raise InvalidInput(f"{what} {name!r} must not contain '/'")
    return name


def _matches(
    inds: DatasetNode,
    vals: DatasetNode,
    ref_i: np.ndarray,
    ref_v: np.ndarray,
    dims: Sequence[Dimension],
    spectroscopic: bool,
) -> bool:
    """True when existing ancillary datasets hold exactly the tables for ``dims``."""
    shape = ref_i.T.shape if spectroscopic else ref_i.shape
    if inds.shape != shape or vals.shape != shape:
        return False
    try:
        if decode_str_list(inds.attrs["labels"]) != [d.name for d in dims]:
            return False
        if decode_str_list(inds.attrs["units"]) != [d.units for d in dims]:
            return False
    except KeyError:
        return False
    i, v = inds[()], vals[()]
    if spectroscopic:
        i, v = i.T, v.T
    return np.array_equal(i, ref_i) and np.allclose(v, ref_v, rtol=1e-6, equal_nan=True)


def write_ancillary(
    group: h5py.Group,
    dims: Sequence[Dimension],
    spectroscopic: bool,
    prefix: str | None = None,
    fastest_first: bool = False,
) -> tuple[h5py.Dataset, h5py.Dataset]:
    """Create ``<prefix>Indices`` and ``<prefix>Values`` for ``dims`` (slowest first) in ``group``.

    Existing datasets of those names are reused when they describe exactly the same dimensions;
    otherwise a clear error is raised.

    Returns
    -------
    (h5py.Dataset, h5py.Dataset)
        The indices and values datasets.
    """
    dims = list(dims)
    if not dims or not all(isinstance(d, Dimension) for d in dims):
        raise InvalidType("dimensions must be a non-empty sequence of usidgpu.Dimension")
    prefix = prefix or ("Spectroscopic_" if spectroscopic else "Position_")
    if not prefix.endswith("_"):
        prefix += "_"
    inds, vals = build_tables(dims, fastest_first=fastest_first)
    ordered = dims[::-1] if fastest_first else dims
    names = (prefix + "Indices", prefix + "Values")
    if names[0] in group or names[1] in group:
        old_i, old_v = group.get(names[0]), group.get(names[1])
        if is_dataset(old_i) and is_dataset(old_v) and _matches(old_i, old_v, inds, vals, ordered, spectroscopic):
            return old_i, old_v
        raise NotUSIDError(
            f"{group.name} already holds {names[0]}/{names[1]} describing other dimensions; "
            f"pass them explicitly to reuse them, or choose another ancillary prefix"
        )
    if spectroscopic:
        inds, vals = inds.T, vals.T
    h5_inds = group.create_dataset(names[0], data=inds.astype(INDICES_DTYPE), dtype=INDICES_DTYPE)
    h5_vals = group.create_dataset(names[1], data=vals.astype(VALUES_DTYPE), dtype=VALUES_DTYPE)
    for ds in (h5_inds, h5_vals):
        ds.attrs["labels"] = encode_str_list(d.name for d in ordered)
        ds.attrs["units"] = encode_str_list(d.units for d in ordered)
        ds.attrs["type"] = np.array([1 if d.incomplete else 0 for d in ordered], dtype=np.int64)
    return h5_inds, h5_vals


def same_dataset(a: DatasetNode, b: DatasetNode) -> bool:
    """True when two ancillary datasets (of any store) hold the same table: shape, dtype, values,
    labels, units."""
    if not (is_dataset(a) and is_dataset(b)):
        return False
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    for attr in ("labels", "units"):
        if (attr in a.attrs) != (attr in b.attrs):
            return False
        if attr in a.attrs and decode_str_list(a.attrs[attr]) != decode_str_list(b.attrs[attr]):
            return False
    return bool(np.array_equal(a[()], b[()]))


def _copy_into(group: h5py.Group, obj: DatasetNode) -> h5py.Dataset:
    """Copy an ancillary dataset from another file into ``group``'s file.

    It goes to the same path as in its own file, which lets results written in a side file be
    attached to the source file later (references are re-pointed by path); an identical copy
    already there is reused. When that path holds something else, the copy goes into ``group``.
    """
    target_file = group.file
    path = obj.name
    if path in target_file:
        if same_dataset(target_file[path], obj):
            return target_file[path]
        name = obj.name.rsplit("/", 1)[1]
        while name in group:
            if same_dataset(group[name], obj):
                return group[name]
            name += "_"
        return copy_dataset(obj, group, name)
    parent = path.rsplit("/", 1)[0] or "/"
    target_file.require_group(parent)
    copy_dataset(obj, target_file[parent], path.rsplit("/", 1)[1])
    return target_file[path]


def _resolve_ancillary(
    group: h5py.Group, spec: DimsSpec, n_entries: int, spectroscopic: bool, prefix: str | None, fastest_first: bool
) -> tuple[h5py.Dataset, h5py.Dataset]:
    from .dataset import MainDataset

    side = "spectroscopic" if spectroscopic else "position"
    axis = 1 if spectroscopic else 0
    if isinstance(spec, MainDataset):
        pair = (spec.h5_spec_inds, spec.h5_spec_vals) if spectroscopic else (spec.h5_pos_inds, spec.h5_pos_vals)
    elif isinstance(spec, (tuple, list)) and len(spec) == 2 and all(is_dataset(x) for x in spec):
        pair = tuple(spec)
    else:
        dims = [spec] if isinstance(spec, Dimension) else list(spec)
        if not dims or not all(isinstance(d, Dimension) for d in dims):
            raise InvalidType(
                f"{side} dimensions must be Dimensions, a MainDataset, or an (indices, values) pair of datasets"
            )
        if dims[0].incomplete:
            expected = dims[0].size
        else:
            expected = int(np.prod([d.size for d in dims], dtype=np.int64))
        if expected != n_entries:
            raise InvalidInput(
                f"the {side} dimensions "
                + " × ".join(f"{d.name}({d.size})" for d in dims)
                + f" describe {expected} entries but the data have {n_entries} along axis {axis}"
            )
        return write_ancillary(group, dims, spectroscopic, prefix, fastest_first)
    inds, vals = pair
    for ds in pair:
        if ds.ndim != 2 or ds.shape[axis] != n_entries:
            raise InvalidInput(
                f"{ds.name} has shape {ds.shape}; as {side} ancillary it needs {n_entries} along axis {axis}"
            )
    if inds.file != group.file:
        inds, vals = _copy_into(group, inds), _copy_into(group, vals)
    return inds, vals


def _as_2d(data: Any, n_pos: int | None, n_spec: int | None) -> np.ndarray:
    arr = asnumpy(data) if is_cupy_array(data) else np.asarray(data)
    if arr.ndim == 2 and (n_pos is None or arr.shape == (n_pos, n_spec)):
        return arr
    if n_pos is not None and arr.size == n_pos * n_spec and arr.ndim > 0:
        return arr.reshape(n_pos, n_spec)
    raise InvalidInput(
        f"data of shape {arr.shape} do not fit {n_pos} positions × {n_spec} spectroscopic points; "
        "pass a 2-D array or an n-d array shaped like the dimensions (slowest first)"
    )


def _n_entries(spec: DimsSpec, spectroscopic: bool) -> int | None:
    from .dataset import MainDataset

    if isinstance(spec, MainDataset):
        return spec.n_spectral if spectroscopic else spec.n_positions
    if isinstance(spec, (tuple, list)) and len(spec) == 2 and all(is_dataset(x) for x in spec):
        return spec[0].shape[1 if spectroscopic else 0]
    dims = [spec] if isinstance(spec, Dimension) else list(spec)
    if dims and all(isinstance(d, Dimension) for d in dims):
        return dims[0].size if dims[0].incomplete else int(np.prod([d.size for d in dims], dtype=np.int64))
    return None


def write_main(
    group: h5py.Group,
    name: str,
    data: Any,
    quantity: str,
    units: str,
    pos_dims: DimsSpec,
    spec_dims: DimsSpec,
    *,
    dtype: Any = None,
    attrs: Mapping[str, Any] | None = None,
    dim_order: str = "slow_to_fast",
    aux_pos_prefix: str | None = None,
    aux_spec_prefix: str | None = None,
    chunks: Any = "auto",
    compression: Any = None,
    compression_opts: Any = None,
    **h5_options: Any,
):
    """Write a USID Main dataset with its ancillary datasets, as pyUSID's ``write_main_dataset``.

    Parameters
    ----------
    group : h5py.Group or h5py.File (or a :class:`usidgpu.USIDFile`)
        Where to create the dataset (opened for writing).
    name : str
        Dataset name (``-`` is replaced by ``_``, as pyUSID does).
    data : array-like, tuple or None
        The data: a 2-D (positions × spectroscopic) NumPy/CuPy array, an n-d array shaped like
        the dimensions (slowest first), or a dask array (stored block by block). ``None`` or a
        shape ``(n_positions, n_spectral)`` creates an empty dataset to fill incrementally with
        :meth:`MainDataset.write_rows` (``dtype`` then defaults to float32).
    quantity, units : str
        What is measured and its units, e.g. ``"Current"``, ``"nA"``.
    pos_dims, spec_dims : sequence of Dimension, MainDataset, or (indices, values)
        Dimensions listed **slowest-varying first** (NumPy C order: the last varies fastest).
        A MainDataset, or a pair of existing ancillary datasets (HDF5, or of a zarr store), is
        reused instead of writing new ones (copied to the same path when it lives in another
        file).
    dtype : dtype, optional
        Storage dtype (default: that of ``data``). Real, complex and compound dtypes are fine.
    attrs : mapping, optional
        Extra attributes of the Main dataset.
    dim_order : {"slow_to_fast", "fast_to_slow"}
        Column order of the ancillary tables in the file: pyUSID's (default) or the USID
        specification text's.
    aux_pos_prefix, aux_spec_prefix : str, optional
        Names of new ancillary datasets (default ``Position_`` / ``Spectroscopic_``).
    chunks : "auto", None, True or tuple
        ``"auto"``: chunks of whole positions of about 1 MiB when the dataset is larger than one
        such chunk or compressed, else contiguous. ``None`` forces contiguous storage.
    compression : str, int or mapping, optional
        ``"gzip"``, ``"lzf"``, a gzip level, an hdf5plugin filter name or instance.
    compression_opts : optional
        Filter options.
    **h5_options
        Passed to ``h5py.Group.create_dataset`` (``shuffle``, ``fletcher32``, ``fillvalue``, ...).

    Returns
    -------
    MainDataset
    """
    from .dataset import MainDataset
    from .file import USIDFile

    if isinstance(group, USIDFile):
        group = group.h5
    if not is_group(group):
        raise InvalidType(f"group must be an h5py.Group or File opened for writing, got {type(group).__name__}")
    reason = read_only_reason(group)
    if reason is not None:
        raise NotUSIDError(reason)
    if dim_order not in ("slow_to_fast", "fast_to_slow"):
        raise InvalidInput("dim_order must be 'slow_to_fast' or 'fast_to_slow'")
    name = _sanitize_name(name, "dataset name")
    if name in group:
        raise NotUSIDError(f"{group.name} already holds an object named {name!r}")
    for label, value in (("quantity", quantity), ("units", units)):
        if not isinstance(value, str):
            raise InvalidType(f"{label} must be a string, got {value!r}")

    n_pos, n_spec = _n_entries(pos_dims, False), _n_entries(spec_dims, True)
    is_dask = type(data).__module__.split(".")[0] == "dask"
    if data is None or (isinstance(data, tuple) and all(isinstance(x, (int, np.integer)) for x in data)):
        shape = (n_pos, n_spec) if data is None else tuple(int(x) for x in data)
        array = None
        dtype = np.dtype(dtype if dtype is not None else np.float32)
    elif is_dask:
        shape = tuple(data.shape) if data.ndim == 2 else (n_pos, n_spec)
        array = data.reshape(shape) if data.ndim != 2 else data
        dtype = np.dtype(dtype if dtype is not None else data.dtype)
    else:
        array = _as_2d(data, n_pos, n_spec)
        shape = array.shape
        dtype = np.dtype(dtype if dtype is not None else array.dtype)
    if len(shape) != 2 or min(shape) < 1 or None in shape:
        raise InvalidInput(f"a Main dataset needs a 2-D shape with at least one position and one point, got {shape}")

    fastest_first = dim_order == "fast_to_slow"
    pos_i, pos_v = _resolve_ancillary(group, pos_dims, shape[0], False, aux_pos_prefix, fastest_first)
    spec_i, spec_v = _resolve_ancillary(group, spec_dims, shape[1], True, aux_spec_prefix, fastest_first)

    options = dict(h5_options)
    options.update(compression_options(compression, compression_opts))
    nbytes = shape[0] * shape[1] * dtype.itemsize
    if isinstance(chunks, str) and chunks == "auto":
        chunks = (
            default_chunks(shape, dtype.itemsize)
            if (nbytes > DEFAULT_CHUNK_BYTES or "compression" in options or array is None)
            else None
        )
    if chunks is not None:
        options["chunks"] = chunks
    elif "compression" in options:
        options["chunks"] = default_chunks(shape, dtype.itemsize)

    dset = group.create_dataset(name, shape=shape, dtype=dtype, **options)
    try:
        if array is not None and not is_dask:
            values = np.ascontiguousarray(array.astype(dtype, copy=False))
            if not write_compressed(dset, values):  # compressed chunks are made in parallel threads
                dset.write_direct(values)
        elif is_dask:
            import dask.array as da

            da.store(array.astype(dtype), dset, lock=True)
        dset.attrs["quantity"] = quantity.strip()
        dset.attrs["units"] = units.strip()
        write_attrs(dset, book_keeping())
        if attrs:
            write_attrs(dset, attrs)
        dset.attrs["Position_Indices"] = pos_i.ref
        dset.attrs["Position_Values"] = pos_v.ref
        dset.attrs["Spectroscopic_Indices"] = spec_i.ref
        dset.attrs["Spectroscopic_Values"] = spec_v.ref
    except BaseException:
        del group[name]
        raise
    return MainDataset(dset)
