"""HDF5 ↔ zarr: :func:`h5_to_zarr` and :func:`zarr_to_h5` copy a USID file between the two.

A zarr store written by :func:`h5_to_zarr` (zarr format 3, encoding ``usidgpu-h5-zarr`` version
1) holds the same hierarchy as the HDF5 file — every group, dataset and attribute at the same
path — so it reads through :func:`usidgpu.storage.zarr_view.open_zarr` like the HDF5 file, and
:func:`zarr_to_h5` gives back an HDF5 file with the same datasets (byte for byte), attributes
(same values and HDF5 type classes), storage and dimension scales, which pyUSID reads as before.

Attributes are plain JSON (:mod:`usidgpu.storage.codec`): object references become
``"h5ref:<path>"`` strings; region references are dropped (they are optional in USID, pyUSID no
longer writes them, and zarr has no selection type), each listed in :attr:`ConvertReport.dropped`.
Each node's reserved attribute ``_usidgpu_h5`` records the HDF5 types of its attributes and, for a
dataset, its HDF5 dtype, shape and storage (chunks, maxshape, compression, shuffle, fletcher32,
scaleoffset, fill value), for a group its soft, external and extra hard links, and the names
zarr cannot hold (escaped, see :func:`zarr_name`).

Datasets: numbers, booleans and complex numbers are stored natively (HDF5 chunk shapes are kept
as zarr chunks; contiguous datasets get chunks of whole trailing axes of about 4 MB). Types zarr
v3 has no stable specification for — compound (structured) records, fixed-length strings,
subarrays — are stored as ``uint8`` arrays with one extra trailing axis of ``itemsize`` bytes (the
records' raw bytes, padding included) and viewed back as the recorded dtype, so they survive
byte for byte. Variable-length strings become zarr ``string`` arrays; object references
``"h5ref:/path"`` strings. Null-dataspace (``h5py.Empty``) datasets become shape-``(0,)`` arrays.
Data are copied in blocks of at most 64 MB (whole chunks), never a whole large dataset at once.

Not round-tripped: region references (dropped, see above); compound datasets with
variable-length or reference fields and variable-length (ragged) numeric datasets (skipped,
listed in ``dropped``); HDF5 filters other than gzip/lzf/szip/shuffle/fletcher32/scaleoffset
(the data come back uncompressed); attribute creation order and the file's userblock/libver
settings. Dimension scales (``DIMENSION_LIST``/``REFERENCE_LIST``) are re-attached with
``dims[i].attach_scale`` rather than written as raw attributes.

Crash and full-disk safety (:mod:`usidgpu.storage.staging`): the output is written in a private
work folder beside it (``.OUT.usidgpu-part-PID-…``) and renamed to ``OUT`` only when complete, so
``OUT`` never exists half-written; a failure removes the work folder, and the work folder of a
killed run is removed by the next conversion to the same ``OUT`` (never a file of the user's).
An existing ``OUT`` is never overwritten. A full disk is one :class:`~usidgpu.core.errors.FileProblem`
(``no space left on device writing OUT: about N needed, M free``) with nothing left behind; a zarr
→ HDF5 conversion is refused up front when the data to be written uncompressed cannot fit (an
HDF5 → zarr store's size depends on how well zarr compresses, so it is only caught while
writing). zarr writes chunks concurrently on its event loop: after a failed write the others are
waited for (and their errors collected) before the work folder is removed, so none recreates
files in it and asyncio has no pending task to complain about at exit. The input is only read.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import os
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..core.faults import crash_point, register
from .codec import (
    FORMAT,
    META,
    REF_PREFIX,
    VERSION,
    Unsupported,
    decode_attr,
    decode_value,
    dtype_from_json,
    dtype_to_json,
    encode_attr,
    encode_value,
    has_region,
    has_special,
)
from .h5 import attr_type, filter_available, object_key, open_h5
from .nodes import is_group
from .staging import Staging, check_space, disk_full, h5_output, no_space, prepare_output
from .zarr_view import ZarrDataset, open_zarr

#: most bytes of one dataset read and written at a time (whole chunks)
BLOCK_BYTES = 64 * 2**20
#: about the size of the zarr chunks given to contiguous HDF5 datasets
AUTO_CHUNK_BYTES = 4 * 2**20
_DIMSCALE_ATTRS = ("DIMENSION_LIST", "REFERENCE_LIST")
#: how long a failed HDF5 → zarr copy waits for zarr's writes still in flight
SETTLE_S = 60.0

# the moments the fault-injection tests kill a conversion at (tests/test_fault_convert_translate.py)
COPY = register("convert.copy", "after each block of a dataset is written to the new store or file")
ATTRIBUTES = register("convert.attributes", "zarr → HDF5: every dataset written, before links and attributes")
PUBLISH = register("convert.publish", "the output complete in its work folder, before the rename to OUT")
CLEANUP = register("convert.cleanup", "OUT renamed into place, before the work folder is removed")


@dataclass
class ConvertReport:
    """What a conversion copied.

    Attributes
    ----------
    source, destination : str
    groups, datasets, attributes : int
        Objects written (the root group included in ``groups``).
    links : int
        Soft, external and extra hard links recreated.
    bytes : int
        Dataset bytes copied (in their HDF5 dtype).
    seconds : float
    dropped : list of str
        What could not be carried (``"<path>: <why>"``), e.g. region references.
    """

    source: str
    destination: str
    groups: int = 0
    datasets: int = 0
    attributes: int = 0
    links: int = 0
    bytes: int = 0
    seconds: float = 0.0
    dropped: list[str] = field(default_factory=list)

    def summary(self) -> str:
        from ..core.memory import format_bytes

        text = (
            f"{self.source} -> {self.destination}: {self.groups} groups, {self.datasets} datasets, "
            f"{self.attributes} attributes, {format_bytes(self.bytes)} in {self.seconds:.2f} s"
        )
        if self.links:
            text += f", {self.links} links"
        return text


def _auto_chunks(shape: tuple[int, ...], itemsize: int, target: int = AUTO_CHUNK_BYTES) -> tuple[int, ...]:
    """Chunks of whole trailing axes, about ``target`` bytes (slow axes are cut first)."""
    chunks = [max(1, n) for n in shape]
    for ax in range(len(shape)):
        rest = int(np.prod(chunks[ax + 1 :], dtype=np.int64)) * max(itemsize, 1)
        if rest <= target:
            chunks[ax] = max(1, min(chunks[ax], target // rest))
            break
        chunks[ax] = 1
    return tuple(chunks)


def _blocks(
    shape: tuple[int, ...], chunks: tuple[int, ...], itemsize: int, budget: int | None = None
) -> Iterator[tuple]:
    """Selections of whole chunks, at most ``budget`` bytes each (one chunk if a chunk is larger)."""
    budget = BLOCK_BYTES if budget is None else budget
    if not shape:
        yield ()
        return
    if 0 in shape:
        return
    band = chunks[0] * int(np.prod(shape[1:], dtype=np.int64)) * max(itemsize, 1)
    if band <= budget:
        step = max(1, budget // band) * chunks[0]
        rest = tuple(slice(None) for _ in shape[1:])
        for a in range(0, shape[0], step):
            yield (slice(a, min(a + step, shape[0])),) + rest
        return
    ranges = [range(0, n, c) for n, c in zip(shape, chunks)]
    for starts in itertools.product(*ranges):
        yield tuple(slice(s, min(s + c, n)) for s, c, n in zip(starts, chunks, shape))


def _written_chunks(dset: h5py.Dataset, zchunks: tuple[int, ...]) -> list[tuple[slice, ...]] | None:
    """The selections of the chunks HDF5 has actually written, when most were never written and the
    store keeps HDF5's chunks; else None (copy every block).

    A dataset can declare billions of rows and hold a handful of chunks (an interrupted writer, a
    damaged or hostile file). Unwritten chunks read as the fill value, which the store's own fill
    value gives back, so only the written ones are copied: seconds instead of hours.
    """
    if not dset.chunks or tuple(dset.chunks) != tuple(zchunks) or not dset.shape:
        return None
    total = 1
    for n, c in zip(dset.shape, dset.chunks):
        total *= -(-n // c)
    try:
        n_written = dset.id.get_num_chunks()
    except (AttributeError, RuntimeError, OSError):  # an HDF5 without the chunk query
        return None
    if n_written * 2 > total:
        return None
    out = []
    for i in range(n_written):
        offset = dset.id.get_chunk_info(i).chunk_offset
        out.append(tuple(slice(o, min(o + c, n)) for o, c, n in zip(offset, dset.chunks, dset.shape)))
    return out


def _ref_path(h5: h5py.File) -> Callable[[Any], str]:
    def path(ref: Any) -> str:
        if not isinstance(ref, h5py.Reference) or not ref:
            return ""
        try:
            name = h5[ref].name
        except Exception:
            return ""  # dangling: becomes a null reference
        return name or ""

    return path


def _attrs_to_json(obj: Any, h5: h5py.File, report: ConvertReport) -> dict[str, Any]:
    values: dict[str, Any] = {}
    types: dict[str, Any] = {}
    ref_path = _ref_path(h5)
    for name in obj.attrs:
        where = f"{obj.name}@{name}"
        try:
            dtype, shape = attr_type(obj, name)
            if has_region(dtype_to_json(dtype)):
                report.dropped.append(f"{where}: region reference (not carried to zarr)")
                continue
            values[name], types[name] = encode_attr(obj.attrs[name], dtype, shape, ref_path)
        except (Unsupported, OSError, TypeError, ValueError) as exc:
            report.dropped.append(f"{where}: attribute cannot be carried ({exc})")
            continue
        report.attributes += 1
    values[META] = {"format": FORMAT, "version": VERSION, "attrs": types}
    return values


def _storage(dset: h5py.Dataset) -> dict[str, Any]:
    opts = dset.compression_opts
    return {
        "chunks": list(dset.chunks) if dset.chunks else None,
        "maxshape": list(dset.maxshape) if dset.maxshape is not None else None,
        "compression": dset.compression,
        "compression_opts": list(opts) if isinstance(opts, tuple) else opts,
        "shuffle": bool(dset.shuffle),
        "fletcher32": bool(dset.fletcher32),
        "scaleoffset": dset.scaleoffset,
    }


def _encoding_of(spec: Any, dt: np.dtype) -> str:
    if isinstance(spec, str) and dt.kind in "biufc":
        return "native"
    if isinstance(spec, dict) and "enum" in spec:
        return "native"
    if isinstance(spec, dict) and spec.get("ref") == "object":
        return "ref"
    if isinstance(spec, dict) and "vlen_str" in spec:
        return "vlen_str"
    if has_special(spec):
        raise Unsupported(f"dtype {dt} (variable-length, reference or region-reference elements)")
    return "bytes"  # compound, fixed-length strings, subarrays, opaque: raw bytes


def _copy_dataset_to_zarr(
    dset: h5py.Dataset, parent: Any, name: str, h5: h5py.File, chunks: Any, report: ConvertReport
) -> None:
    dt = dset.dtype
    spec = dtype_to_json(dt)
    encoding = _encoding_of(spec, dt)
    shape = dset.shape
    attrs = _attrs_to_json(dset, h5, report)
    meta = attrs[META]
    meta.update(
        kind="dataset",
        dtype=spec,
        shape=None if shape is None else list(shape),
        encoding=encoding,
        storage=_storage(dset),
    )
    try:
        fill = dset.fillvalue
        meta["storage"]["fillvalue"] = None if fill is None else encode_value(fill, spec, _ref_path(h5))
    except (Unsupported, TypeError, ValueError, OSError):
        meta["storage"]["fillvalue"] = None
    zshape = (0,) if shape is None else tuple(shape)
    if isinstance(chunks, Mapping) and dset.name in chunks:
        zchunks = tuple(chunks[dset.name])
    elif isinstance(chunks, (tuple, list)) and len(chunks) == len(zshape):
        zchunks = tuple(chunks)
    elif dset.chunks:
        zchunks = tuple(dset.chunks)
    else:
        zchunks = _auto_chunks(zshape, dt.itemsize if encoding in ("native", "bytes") else 64)
    zchunks = tuple(max(1, min(int(c), max(n, 1))) for c, n in zip(zchunks, zshape))
    if encoding == "native":
        zdtype: Any = np.dtype(dt.str).newbyteorder("<") if dt.itemsize > 1 else np.dtype(dt.str)
        fill_value: Any = 0
        if isinstance(meta["storage"]["fillvalue"], (int, float)) and zdtype.kind in "iuf":
            fill_value = meta["storage"]["fillvalue"]
        elif zdtype.kind == "b":
            fill_value = False
    elif encoding == "bytes":
        zdtype, fill_value = np.dtype(np.uint8), 0
    else:
        zdtype, fill_value = str, ""
    arr_shape = zshape + ((dt.itemsize,) if encoding == "bytes" else ())
    arr_chunks = zchunks + ((dt.itemsize,) if encoding == "bytes" else ())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        z = parent.create_array(
            name, shape=arr_shape, dtype=zdtype, chunks=arr_chunks, fill_value=fill_value, attributes=attrs
        )
    if shape is not None:
        ref_path = _ref_path(h5)
        written = _written_chunks(dset, zchunks) if encoding == "native" else None
        selections = (
            written if written is not None else _blocks(zshape, zchunks, dt.itemsize if encoding != "vlen_str" else 64)
        )
        for sel in selections:
            data = dset[sel] if sel else dset[()]
            data = np.asarray(data, dtype=dt) if encoding in ("native", "bytes") else np.asarray(data)
            if encoding == "native":
                block = data.astype(zdtype, copy=False)
            elif encoding == "bytes":
                block = np.ascontiguousarray(data).view(np.uint8).reshape(data.shape + (dt.itemsize,))
            elif encoding == "vlen_str":
                flat = [v if isinstance(v, str) else bytes(v).decode("utf-8") for v in data.reshape(-1)]
                block = np.array(flat, dtype=object).reshape(data.shape).astype(str) if flat else data.astype(str)
            else:  # ref
                flat = [REF_PREFIX + ref_path(v) for v in data.reshape(-1)]
                block = np.array(flat, dtype=str).reshape(data.shape)
            z[sel + ((slice(None),) if encoding == "bytes" else ())] = block
            report.bytes += int(data.size) * dt.itemsize
            crash_point(COPY)
    report.datasets += 1


def _copy_group_to_zarr(
    group: h5py.Group, zgroup: Any, h5: h5py.File, chunks: Any, seen: dict, report: ConvertReport
) -> None:
    links: dict[str, Any] = {}
    names: dict[str, str] = {}
    taken = set(group)
    for name in group:
        path = group.name.rstrip("/") + "/" + name
        zname = zarr_name(name, taken)
        if zname != name:
            names[zname] = name
            taken.add(zname)
        link = group.get(name, getlink=True)
        if isinstance(link, h5py.SoftLink):
            links[name] = {"soft": link.path}
            report.links += 1
            continue
        if isinstance(link, h5py.ExternalLink):
            links[name] = {"external": [link.filename, link.path]}
            report.links += 1
            continue
        try:
            obj = group[name]
        except (KeyError, OSError) as exc:
            report.dropped.append(f"{path}: cannot be opened ({exc})")
            continue
        key = object_key(obj)
        if key in seen:  # a second hard link to an object already copied
            links[name] = {"hard": seen[key]}
            report.links += 1
            continue
        seen[key] = path
        if isinstance(obj, h5py.Group):
            attrs = _attrs_to_json(obj, h5, report)
            attrs[META]["kind"] = "group"
            child = zgroup.create_group(zname, attributes=attrs)
            report.groups += 1
            _copy_group_to_zarr(obj, child, h5, chunks, seen, report)
        elif isinstance(obj, h5py.Dataset):
            try:
                _copy_dataset_to_zarr(obj, zgroup, zname, h5, chunks, report)
            except Unsupported as exc:
                report.dropped.append(f"{path}: dataset not carried ({exc})")
        else:
            report.dropped.append(f"{path}: committed datatype or other object (not carried)")
    if links or names:
        meta = dict(zgroup.attrs[META])
        if links:
            meta["links"] = links
        if names:
            meta["names"] = names
        zgroup.attrs[META] = meta


def zarr_name(name: str, taken: set[str]) -> str:
    """``name`` as a zarr node name: zarr reserves names starting with ``__`` and names of only
    periods, and its local store turns a backslash into a path separator; such names are
    percent-escaped (and recorded under ``names`` in the parent's ``_usidgpu_h5``)."""
    if "\\" not in name and not name.startswith("__") and name.strip(".") and "%" not in name:
        return name
    from urllib.parse import quote

    escaped = quote(name, safe="")
    if escaped.startswith("__"):
        escaped = "%5F" + escaped[1:]
    if not escaped.strip("."):
        escaped = escaped.replace(".", "%2E")
    while escaped in taken:
        escaped += "_"
    return escaped


def h5_to_zarr(src: str | os.PathLike, dst: str | os.PathLike, chunks: Any = None) -> ConvertReport:
    """Copy a (USID) HDF5 file to a zarr (format 3) store: every group, dataset and attribute.

    Parameters
    ----------
    src : path
        HDF5 file (opened read-only).
    dst : path
        New zarr store (a directory); it must not exist.
    chunks : None, tuple or mapping, optional
        ``None`` keeps each dataset's HDF5 chunks (about 4 MB of whole trailing axes for
        contiguous datasets); a tuple applies to every dataset of that rank; a mapping gives
        chunks per dataset path.

    Returns
    -------
    ConvertReport

    Raises
    ------
    FileProblem
        ``src`` is missing or not HDF5, ``dst`` exists, or the disk is full. ``dst`` appears only
        when complete: a failure leaves nothing behind (see the module's description).
    """
    src, dst = Path(src), Path(dst)
    prepare_output(dst)
    report = ConvertReport(str(src), str(dst))
    t0 = time.perf_counter()
    with open_h5(src, "r") as h5:
        try:
            with Staging(dst, "convert") as stage:
                _write_store(h5, src, stage.path, chunks, report)
                crash_point(PUBLISH)
                stage.publish()
                crash_point(CLEANUP)
        except OSError as exc:
            if disk_full(exc):
                raise no_space(dst, _stored_bytes(h5)) from None
            raise
    report.seconds = time.perf_counter() - t0
    return report


def _write_store(h5: h5py.File, src: Path, path: Path, chunks: Any, report: ConvertReport) -> None:
    """Write the zarr store of ``h5`` at ``path`` (a new folder)."""
    import zarr

    from .._version import __version__

    try:
        attrs = _attrs_to_json(h5, h5, report)
        attrs[META].update(kind="group", source=src.name, usidgpu_version=__version__)
        root = zarr.open_group(store=str(path), mode="w-", zarr_format=3, attributes=attrs)
        report.groups += 1
        _copy_group_to_zarr(h5, root, h5, chunks, {object_key(h5): "/"}, report)
    except BaseException:
        _settle_zarr_writes()
        raise


def _settle_zarr_writes(timeout: float = SETTLE_S) -> None:
    """Wait until the zarr writes still in flight have ended, collecting their errors.

    zarr writes the chunks of one assignment concurrently on its own event loop; when one fails
    (a full disk) the error reaches us while the others go on. Removed now, the store would be
    recreated by them (zarr makes missing folders), and at exit asyncio would print a "Task was
    destroyed but it is pending!" for each — thousands of lines. They are not cancelled: a write
    already handed to a thread would still land after the cancellation.
    """
    import asyncio

    from zarr.core import sync as zarr_sync

    # zarr has no public way to wait for the writes of its event loop; its loop holder is
    # internal, so where it moved the settling is skipped (the error still stands, and the
    # caller's removal of the store may race with a late write)
    holder = getattr(zarr_sync, "loop", None)
    loop = holder[0] if isinstance(holder, list) and holder else None
    if loop is None or loop.is_closed() or not loop.is_running():
        return

    async def settle() -> None:
        me = asyncio.current_task()
        while pending := [t for t in asyncio.all_tasks() if t is not me]:
            await asyncio.gather(*pending, return_exceptions=True)

    future = asyncio.run_coroutine_threadsafe(settle(), loop)
    try:
        future.result(timeout)
    except concurrent.futures.TimeoutError:  # a write that hangs: leave it, the error stands
        future.cancel()


def _stored_bytes(h5: h5py.File) -> int | None:
    """Bytes the datasets of ``h5`` take in the file: about what the zarr store takes (for the
    message of a full disk; a store's size depends on how well zarr compresses, so it is no
    up-front check). None where the file cannot be walked (the copy skips what it cannot open)."""
    sizes: list[int] = []

    def visit(name: str, obj: Any) -> None:
        if isinstance(obj, h5py.Dataset):
            sizes.append(obj.id.get_storage_size())

    try:
        h5.visititems(visit)
    except (KeyError, RuntimeError, OSError):  # a damaged or dangling object: no estimate
        return None
    return sum(sizes)


def _h5_options(meta: Mapping[str, Any], shape: tuple[int, ...], zchunks: tuple[int, ...] | None) -> dict[str, Any]:
    storage = meta.get("storage") if meta else None
    if storage is None:  # a store from another tool: keep its chunking, no compression
        return {"chunks": zchunks if zchunks and shape and 0 not in shape else None}
    opts: dict[str, Any] = {}
    if storage.get("chunks"):
        opts["chunks"] = tuple(storage["chunks"])
    if storage.get("maxshape") is not None and shape is not None:
        maxshape = tuple(storage["maxshape"])
        if maxshape != tuple(shape):
            opts["maxshape"] = maxshape
    comp = storage.get("compression")
    if comp is not None and filter_available(comp):
        opts["compression"] = comp
        copts = storage.get("compression_opts")
        if copts is not None:
            opts["compression_opts"] = tuple(copts) if isinstance(copts, list) else copts
    if storage.get("shuffle"):
        opts["shuffle"] = True
    if storage.get("fletcher32"):
        opts["fletcher32"] = True
    if storage.get("scaleoffset") is not None:
        opts["scaleoffset"] = storage["scaleoffset"]
    if opts and "chunks" not in opts and shape and 0 not in shape:
        opts["chunks"] = True
    return opts


def _write_attrs(obj: Any, znode: Any, h5: h5py.File, report: ConvertReport, scales: list) -> None:
    def make_ref(path: str) -> Any:
        if not path:
            return h5py.Reference()
        try:
            return h5[path].ref
        except (KeyError, ValueError):
            return h5py.Reference()

    raw = znode.stored_attrs()
    meta = raw.pop(META, None)
    types = meta.get("attrs", {}) if isinstance(meta, dict) else None
    for name, x in raw.items():
        spec = types.get(name) if types is not None else None
        if spec is not None and name in _DIMSCALE_ATTRS and isinstance(spec["dtype"], dict):
            if name == "DIMENSION_LIST":
                scales.append((obj, x))
            continue  # REFERENCE_LIST is rebuilt by attach_scale
        try:
            value = decode_attr(x, spec, make_ref)
            if spec is None:
                obj.attrs[name] = value
            elif isinstance(value, h5py.Empty):
                obj.attrs[name] = value
            else:
                dt = dtype_from_json(spec["dtype"])
                obj.attrs.create(name, data=value, shape=tuple(spec["shape"]), dtype=dt)
        except (TypeError, ValueError, OSError, KeyError) as exc:
            report.dropped.append(f"{znode.name}@{name}: attribute cannot be written to HDF5 ({exc})")
            continue
        report.attributes += 1


def zarr_to_h5(src: str | os.PathLike, dst: str | os.PathLike) -> ConvertReport:
    """Copy a zarr store (one :func:`h5_to_zarr` wrote, or any zarr group) to a new HDF5 file.

    Object references written as ``"h5ref:/path"`` become HDF5 object references again; the
    HDF5 dtypes, shapes, chunking and compression recorded by :func:`h5_to_zarr` are restored.

    Raises
    ------
    FileProblem
        ``src`` is missing or not zarr, ``dst`` exists, or the disk is full (refused up front when
        the datasets written uncompressed cannot fit). ``dst`` appears only when complete: a
        failure leaves nothing behind (see the module's description).
    """
    src, dst = Path(src), Path(dst)
    prepare_output(dst)
    zf = open_zarr(src, "r")
    report = ConvertReport(str(src), str(dst))
    t0 = time.perf_counter()
    needed = None
    try:
        needed = _h5_bytes(zf)
        check_space(dst, needed)
        with Staging(dst, "convert") as stage:
            with h5_output(stage.path) as out, h5py.File(out, "w-") as h5:
                _fill_h5(h5, zf, report, out.check)
            crash_point(PUBLISH)
            stage.publish()
            crash_point(CLEANUP)
    except OSError as exc:
        if disk_full(exc):
            raise no_space(dst, needed) from None
        raise
    finally:
        zf.close()
    report.seconds = time.perf_counter() - t0
    return report


def _h5_bytes(zf: Any) -> int:
    """Bytes the HDF5 file will take at least: its datasets written without compression."""
    total = 0
    for _, znode in zf.walk():
        if is_group(znode) or znode.shape is None:
            continue
        if not _h5_options(znode.meta, znode.shape, None).get("compression"):
            total += int(np.prod(znode.shape, dtype=np.int64)) * znode.dtype.itemsize
    return total


def _fill_h5(h5: h5py.File, zf: Any, report: ConvertReport, check: Callable[[], None]) -> None:
    """Copy every node, link and attribute of the zarr store ``zf`` into the new HDF5 file ``h5``;
    ``check`` raises a failed write (called after each block)."""
    nodes: list[tuple[Any, Any]] = [(h5, zf)]
    deferred: list[tuple[h5py.Dataset, ZarrDataset]] = []
    report.groups += 1
    for path, znode in zf.walk():
        if is_group(znode):
            nodes.append((h5.create_group(path), znode))
            report.groups += 1
            continue
        nodes.append((_create_h5_dataset(h5, path, znode, deferred, report, check), znode))
    for dset, znode in deferred:  # reference datasets, now that every target exists
        _write_refs(h5, dset, znode)
        check()
    crash_point(ATTRIBUTES)
    _write_links(h5, zf, report)
    scales: list = []
    for obj, znode in nodes:
        _write_attrs(obj, znode, h5, report, scales)
    _attach_scales(h5, scales, report)


def _write_refs(h5: h5py.File, dset: h5py.Dataset, znode: ZarrDataset) -> None:
    for sel in _blocks(dset.shape, dset.chunks or dset.shape, 8):
        refs = np.asarray(znode[sel] if sel else znode[()], dtype=object)
        out = np.empty(refs.shape, dtype=h5py.ref_dtype)
        for idx, r in np.ndenumerate(refs):
            out[idx] = h5[r.path].ref if r and r.path in h5 else h5py.Reference()
        dset[sel if sel else ()] = out


def _write_links(h5: h5py.File, zf: Any, report: ConvertReport) -> None:
    for path, link in zf.links.items():
        if "soft" in link:
            h5[path] = h5py.SoftLink(link["soft"])
        elif "external" in link:
            h5[path] = h5py.ExternalLink(*link["external"])
        elif "hard" in link and link["hard"] in h5:
            h5[path] = h5[link["hard"]]
        else:
            report.dropped.append(f"{path}: link {link} cannot be recreated")
            continue
        report.links += 1


def _attach_scales(h5: h5py.File, scales: list, report: ConvertReport) -> None:
    for obj, dim_list in scales:
        for axis, targets in enumerate(dim_list):
            for t in targets:
                path = str(t)[len(REF_PREFIX) :]
                try:
                    obj.dims[axis].attach_scale(h5[path])
                except (KeyError, ValueError, RuntimeError, OSError) as exc:
                    report.dropped.append(f"{obj.name}: dimension scale {path} not attached ({exc})")


def _create_h5_dataset(
    h5: h5py.File,
    path: str,
    znode: ZarrDataset,
    deferred: list,
    report: ConvertReport,
    check: Callable[[], None] = lambda: None,
) -> h5py.Dataset:
    dt = znode.dtype
    meta = znode.meta
    if znode.shape is None:
        dset = h5.create_dataset(path, data=h5py.Empty(dt))
        report.datasets += 1
        return dset
    shape = znode.shape
    opts = _h5_options(meta, shape, znode.chunks)
    storage = meta.get("storage") or {}
    fill = storage.get("fillvalue")
    if fill is not None and znode.encoding in ("native", "bytes"):
        try:
            spec = meta["dtype"]
            fv = decode_value(fill, spec, lambda p: None)
            opts["fillvalue"] = np.array(fv, dtype=dt)[()]
        except (TypeError, ValueError, KeyError):
            pass
    dset = h5.create_dataset(path, shape=shape, dtype=dt, **opts)
    if znode.encoding == "ref":
        deferred.append((dset, znode))
    else:
        zchunks = znode.chunks or shape
        for sel in _blocks(shape, zchunks, dt.itemsize if dt.kind != "O" else 64):
            data = znode[sel] if sel else znode[()]
            dset[sel if sel else ()] = data
            report.bytes += int(np.size(data)) * dt.itemsize
            check()
            crash_point(COPY)
    report.datasets += 1
    return dset
