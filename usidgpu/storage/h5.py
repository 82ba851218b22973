"""HDF5 through h5py: opening files, and the few questions that need h5py's low-level API.

Everything else usidgpu does with HDF5 goes through h5py's high-level objects, which satisfy the
node protocol (:mod:`usidgpu.storage.protocol`) as they are. What needs h5py's low-level layer —
the open file handles of this process, filter availability and counts, an attribute's stored
type, object identity across hard links — is asked here, by name, so no other module reaches
into ``h5py.h5f``/``h5py.h5z``/object ids.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..core.errors import FileProblem, InvalidInput, MissingDependency, UsidgpuError

H5_SUFFIXES = (".h5", ".hdf5", ".hf5")
_MODES = {"r": "r", "r+": "r+", "a": "a", "w": "w", "w-": "w-", "x": "x"}
#: HDF5 filter ids of the compression names h5py knows without plugins
_FILTERS = {"gzip": h5py.h5z.FILTER_DEFLATE, "lzf": h5py.h5z.FILTER_LZF, "szip": h5py.h5z.FILTER_SZIP}
#: HDF5 filter ids (registered with The HDF Group) of the plugins the hdf5plugin package ships
PLUGIN_FILTERS = {
    307: "bzip2",
    32001: "Blosc",
    32004: "LZ4",
    32008: "Bitshuffle",
    32013: "ZFP",
    32015: "Zstandard",
    32017: "SZ",
    32018: "FCIDECOMP",
    32024: "SZ3",
    32026: "Blosc2",
    32028: "Sperr",
}
#: the extra of usidgpu that installs hdf5plugin
COMPRESSION_EXTRA = "usidgpu[compression]"
#: files up to this size are searched whole for damaged global heaps; of larger ones the first and
#: last parts (see :func:`damaged_heap`)
HEAP_SCAN_BYTES = 64 * 1024**2
#: an attribute declaring more bytes than this is taken for damage (USID attributes are labels,
#: units, references and small parameters; HDF5 itself keeps attributes under 64 KiB unless dense)
MAX_ATTRIBUTE_BYTES = 64 * 1024**2


def is_h5_path(path: str | os.PathLike) -> bool:
    """True for a path ending in ``.h5``, ``.hdf5`` or ``.hf5`` (any case)."""
    return os.fspath(path).lower().endswith(H5_SUFFIXES)


def open_h5(path: str | os.PathLike, mode: str = "r") -> h5py.File:
    """Open an HDF5 file, turning every way it can fail into a one-line :class:`FileProblem`.

    Parameters
    ----------
    path : str or path-like
    mode : {"r", "r+", "a", "w", "w-", "x"}

    Returns
    -------
    h5py.File

    Raises
    ------
    FileProblem
        Missing, a directory, unreadable, empty, not HDF5, truncated or locked.
    ValueError
        An unknown ``mode``.
    """
    p = Path(path)
    if mode not in _MODES:
        raise InvalidInput(f"mode must be one of {sorted(_MODES)}, got {mode!r}")
    if mode in ("r", "r+"):
        if not p.exists():
            raise FileProblem(f"{p}: no such file")
        if p.is_dir():
            raise FileProblem(f"{p}: is a directory, not an HDF5 file")
        if not p.is_file():  # a FIFO or device: opening it to read can wait forever for a writer
            raise FileProblem(f"{p}: not a regular file")
        if not os.access(p, os.R_OK):
            raise FileProblem(f"{p}: permission denied")
        try:
            hdf5 = h5py.is_hdf5(str(p))
        except OSError as exc:
            raise FileProblem(f"{p}: cannot be read ({exc})") from None
        if not hdf5:
            kind = "empty file" if p.stat().st_size == 0 else "not an HDF5 file"
            raise FileProblem(f"{p}: {kind}")
    if mode == "r":
        # a damaged heap makes HDF5 loop forever on the first variable-length string it reads
        offset = damaged_heap(p)
        if offset is not None:
            raise FileProblem(
                f"{p}: damaged HDF5 file: the global heap at byte {offset} (where variable-length "
                "strings are kept) is corrupt"
            )
    try:
        return h5py.File(str(p), _MODES[mode])
    except OSError as exc:
        text = str(exc)
        if "truncated" in text or "eof" in text.lower():
            reason = "the HDF5 file is truncated (incomplete copy or interrupted write)"
        elif "unable to lock file" in text.lower() or getattr(exc, "errno", None) == errno.EAGAIN:
            # HDF5's own words for a lock held elsewhere (not any text with "lock" in it: a damaged
            # superblock is reported as "sblock")
            reason = "the file is locked by another process (set HDF5_USE_FILE_LOCKING=FALSE to override)"
        elif "Permission" in text or "permission" in text:
            reason = "permission denied"
        else:
            reason = f"HDF5 cannot open it ({text.splitlines()[0] if text else type(exc).__name__})"
        raise FileProblem(f"{p}: {reason}") from None


def close_handles(path: str | os.PathLike) -> None:
    """Close every handle this process holds on the HDF5 file at ``path``.

    HDF5 cannot open a file for writing while it is open read-only in the same process, so a
    step that must write to a file that may be open (attaching results) first closes all handles
    to it; usidgpu's file and dataset objects reopen themselves on their next use.
    """
    target = os.path.realpath(path)
    for fid in h5py.h5f.get_obj_ids(types=h5py.h5f.OBJ_FILE):
        try:
            name = fid.name.decode() if isinstance(fid.name, bytes) else fid.name
            if os.path.realpath(name) == target:
                h5py.File(fid).close()
        except (OSError, ValueError, RuntimeError):
            continue  # already closed through another handle


def filter_available(name: str) -> bool:
    """True when this HDF5 library can write the compression filter ``name`` (gzip, lzf, szip)."""
    filter_id = _FILTERS.get(name)
    return filter_id is not None and bool(h5py.h5z.filter_avail(filter_id))


def missing_filters(dset: h5py.Dataset) -> list[tuple[int, str]]:
    """The filters of a dataset's pipeline that this HDF5 library cannot apply: ``(id, name)`` each.

    When a filter is missing and the hdf5plugin package is installed, it is imported first (it
    registers its filters with HDF5 on import), so only filters nothing here provides are listed.
    """
    plist = dset.id.get_create_plist()
    pipeline = [plist.get_filter(i)[::3] for i in range(plist.get_nfilters())]  # (id, name) each
    missing = [(int(code), name) for code, name in pipeline if not h5py.h5z.filter_avail(code)]
    if missing and _load_hdf5plugin():
        missing = [(code, name) for code, name in missing if not h5py.h5z.filter_avail(code)]
    return [(code, PLUGIN_FILTERS.get(code) or _text(name) or "unknown") for code, name in missing]


def require_filters(dset: h5py.Dataset) -> None:
    """Raise when a dataset's data pass through a filter this HDF5 library lacks.

    Without this check HDF5 reports a missing plugin as "can't open directory
    (/usr/local/hdf5/lib/plugin)", which names neither the filter nor what to install.

    Raises
    ------
    MissingDependency
        A filter that hdf5plugin provides, which is not installed (the message names the extra).
    FileProblem
        A filter no package usidgpu knows provides (or a damaged filter pipeline).
    """
    missing = missing_filters(dset)
    if not missing:
        return
    code, name = missing[0]
    where = f"{dset.file.filename}: dataset {dset.name} is compressed with {name} (HDF5 filter {code})"
    if code in PLUGIN_FILTERS:
        raise MissingDependency(
            f"{where}, which needs the hdf5plugin package: pip install {COMPRESSION_EXTRA} (or hdf5plugin)"
        )
    raise FileProblem(f"{where}, which this HDF5 library does not provide (no plugin for it is installed)")


def _load_hdf5plugin() -> bool:
    """Import hdf5plugin (which registers its filters with HDF5); False when it is not installed."""
    try:
        import hdf5plugin  # noqa: F401
    except ImportError:
        return False
    return True


def _text(name: bytes | str) -> str:
    return name.decode("ascii", "replace") if isinstance(name, bytes) else str(name)


def filter_count(dset: h5py.Dataset) -> int:
    """Number of filters in an HDF5 dataset's pipeline (compression, shuffle, checksums, plugins)."""
    return int(dset.id.get_create_plist().get_nfilters())


def attr_type(obj: h5py.HLObject, name: str) -> tuple[np.dtype, tuple[int, ...] | None]:
    """The stored HDF5 dtype and shape of attribute ``name`` (shape None: a null dataspace).

    Unlike the value h5py hands out, this keeps the string flavour (fixed or variable length,
    ASCII or UTF-8) and the reference kind, which a faithful copy needs.
    """
    aid = obj.attrs.get_id(name)
    return aid.dtype, aid.shape


def attr_nbytes(obj: h5py.HLObject, name: str) -> int:
    """Bytes attribute ``name`` declares (elements × element size), read from its header only.

    A damaged header can declare a dataspace of billions of elements; reading such an attribute
    allocates all of them (or never returns), so its size is asked before its value.
    """
    aid = obj.attrs.get_id(name)
    shape = aid.shape or ()
    return int(np.prod(shape, dtype=object)) * int(aid.dtype.itemsize)


def damaged_heap(path: str | os.PathLike) -> int | None:
    """Byte offset of a global heap collection that HDF5 would read forever, or None.

    HDF5 keeps variable-length strings (h5py's ``str`` attributes) in global heap collections
    (signature ``GCOL``). It walks a collection object by object, each advancing by its declared
    size; a damaged free-space entry declaring size 0 never advances, and HDF5 2.0 loops forever
    on the first string it reads from that collection. This walks every collection the same way
    and reports the first that would not advance. Files larger than :data:`HEAP_SCAN_BYTES` are
    searched in their first and last parts, where HDF5 writers put their metadata.
    """
    st = os.stat(path)
    # an unchanged file need not be searched again (a service opens the same files all day)
    key = (os.path.realpath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    if key in _HEAP_VERDICTS:
        return _HEAP_VERDICTS[key]
    verdict = _search_heaps(path)
    if len(_HEAP_VERDICTS) >= 1024:
        _HEAP_VERDICTS.clear()
    _HEAP_VERDICTS[key] = verdict
    return verdict


#: verdicts of :func:`damaged_heap`, by file identity, size and modification time
_HEAP_VERDICTS: dict[tuple, int | None] = {}


def _search_heaps(path: str | os.PathLike) -> int | None:
    """The search of :func:`damaged_heap`, on the file as it is now."""
    with open(path, "rb") as fh:
        size = fh.seek(0, os.SEEK_END)
        parts = (
            [(0, size)] if size <= HEAP_SCAN_BYTES else [(0, HEAP_SCAN_BYTES // 2), (size - HEAP_SCAN_BYTES // 2, size)]
        )
        for start, stop in parts:
            fh.seek(start)
            data = fh.read(stop - start)
            at = data.find(b"GCOL")
            while at >= 0:
                if _heap_loops(data, at):
                    return start + at
                at = data.find(b"GCOL", at + 4)
    return None


def _heap_loops(data: bytes, at: int) -> bool:
    """Whether the collection at ``data[at:]`` holds an entry HDF5's walk cannot pass (8-byte lengths)."""
    header = data[at : at + 16]
    if len(header) < 16 or header[4] != 1:
        return False  # not a version-1 collection header: text that happens to read GCOL
    end = min(at + int.from_bytes(header[8:16], "little"), len(data))
    p = at + 16
    while p + 16 <= end:
        index = int.from_bytes(data[p : p + 2], "little")
        length = int.from_bytes(data[p + 8 : p + 16], "little")
        step = 16 + (length + 7) // 8 * 8 if index > 0 else length
        if step == 0:
            return True
        p += step
    return False


def object_key(obj: h5py.HLObject) -> Any:
    """A hashable identity of an HDF5 object: equal for every hard link to the same object."""
    return obj.id


def raised_by_hdf5(exc: BaseException) -> bool:
    """Whether ``exc`` was raised inside h5py, i.e. is the HDF5 library reporting a problem with a
    file (a damaged B-tree, a truncated heap, an undecodable name).

    HDF5 reports a damaged file through RuntimeError, KeyError, ValueError or UnicodeDecodeError as
    well as OSError, so the type alone cannot tell a damaged file from a bug in usidgpu; where the
    error was raised can: the innermost frame of its traceback lies in h5py (its Python modules or
    its Cython ``.pyx`` files).
    """
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    parts = Path(tb.tb_frame.f_code.co_filename).parts
    return "h5py" in parts


@contextmanager
def damage_reported(path: str | os.PathLike) -> Iterator[None]:
    """Turn HDF5's reports of a damaged file, raised inside the block, into a :class:`FileProblem`.

    h5py reports a damaged B-tree, heap or header as RuntimeError, KeyError, ValueError, OSError
    or MemoryError (a header declaring an absurd size); only errors raised inside h5py (see
    :func:`raised_by_hdf5`) are translated, so a bug elsewhere still shows as one.
    """
    try:
        yield
    except UsidgpuError:
        raise
    except Exception as exc:
        if not raised_by_hdf5(exc):
            raise
        text = str(exc).strip()
        first = text.splitlines()[0] if text else type(exc).__name__
        raise FileProblem(f"{path}: damaged HDF5 file: {first[:200]}") from exc
