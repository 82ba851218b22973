"""Opening a file of any store by its path: an HDF5 file, or a zarr store (read-only)."""

from __future__ import annotations

import os
from typing import Any

from .h5 import open_h5
from .zarr_view import READ_ONLY, is_zarr_path, open_zarr


def open_file(path: str | os.PathLike, mode: str = "r") -> Any:
    """The file at ``path`` as a :class:`~usidgpu.storage.protocol.FileNode`.

    A zarr store (a ``.zarr`` path, or a folder holding ``zarr.json``/``.zgroup``) opens through
    the read-only zarr view; anything else as HDF5 through h5py.

    Parameters
    ----------
    path : str or path-like
    mode : {"r", "r+", "a", "w", "w-", "x"}
        Zarr stores take only ``"r"``.

    Returns
    -------
    h5py.File or ZarrFile

    Raises
    ------
    FileProblem
        Missing, unreadable, not HDF5 (or not zarr), truncated, or a zarr store asked for writing.
    """
    if is_zarr_path(path):
        return open_zarr(path, mode)
    return open_h5(path, mode)


__all__ = ["READ_ONLY", "is_zarr_path", "open_file"]
