"""HDF5 through h5py: opening files, and the few questions that need h5py's low-level API.

Everything else usidgpu does with HDF5 goes through h5py's high-level objects, which satisfy the
node protocol (:mod:`usidgpu.storage.protocol`) as they are. What needs h5py's low-level layer —
the open file handles of this process, filter availability and counts, an attribute's stored
type, object identity across hard links — is asked here, by name, so no other module reaches
into ``h5py.h5f``/``h5py.h5z``/object ids.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..core.errors import FileProblem, InvalidInput

H5_SUFFIXES = (".h5", ".hdf5", ".hf5")
_MODES = {"r": "r", "r+": "r+", "a": "a", "w": "w", "w-": "w-", "x": "x"}
#: HDF5 filter ids of the compression names h5py knows without plugins
_FILTERS = {"gzip": h5py.h5z.FILTER_DEFLATE, "lzf": h5py.h5z.FILTER_LZF, "szip": h5py.h5z.FILTER_SZIP}


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
        if not os.access(p, os.R_OK):
            raise FileProblem(f"{p}: permission denied")
        try:
            hdf5 = h5py.is_hdf5(str(p))
        except OSError as exc:
            raise FileProblem(f"{p}: cannot be read ({exc})") from None
        if not hdf5:
            kind = "empty file" if p.stat().st_size == 0 else "not an HDF5 file"
            raise FileProblem(f"{p}: {kind}")
    try:
        return h5py.File(str(p), _MODES[mode])
    except OSError as exc:
        text = str(exc)
        if "truncated" in text or "eof" in text.lower():
            reason = "the HDF5 file is truncated (incomplete copy or interrupted write)"
        elif "lock" in text.lower():
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
