"""The sidecar block store: the zarr store a block-wise run (:class:`usidgpu.parallel.Process`)
writes into while it runs, crash-safe, beside the file its results go to.

Workers write their blocks concurrently: every output array is chunked by the block plan's rows,
so each block owns its chunks and no two writers touch the same file. A block counts as done
only when its marker file ``done/<index>`` exists, created after its data are written, so a
worker killed mid-write leaves a block that is simply computed again. The store's attributes
say ``status: partial`` until the results are consolidated into the USID results group; the
HDF5 file of the source is never written while workers run. The store is deleted once its
results group is attached.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

PARTIAL = "partial"


class BlockStore:
    """A zarr group of per-position outputs, filled block by block, with done markers.

    Attributes
    ----------
    path : Path
    blocks : list of (start, stop)
        Row ranges of the blocks, in order.
    meta : dict
        What is needed to resume: process class, parameters, source file and dataset, output file.
    """

    def __init__(self, path: Path, blocks: list[tuple[int, int]], meta: dict[str, Any]) -> None:
        self.path, self.blocks, self.meta = Path(path), blocks, meta

    # ------------------------------------------------------------------ creation
    @classmethod
    def open_or_create(
        cls,
        path: str | os.PathLike,
        fingerprint: str,
        blocks: list[tuple[int, int]],
        outputs: dict[str, tuple[int, np.dtype]],
        meta: dict[str, Any],
    ) -> tuple[BlockStore, bool]:
        """Open the store of an interrupted run with the same fingerprint, or start a new one.

        Parameters
        ----------
        outputs : dict
            name → (columns, dtype) of each per-position output (rows: the source's positions).

        Returns
        -------
        (BlockStore, resumed)
        """
        import zarr

        path = Path(path)
        if path.exists():
            old = read_meta(path)
            same = old.get("fingerprint") == fingerprint and [tuple(b) for b in old.get("blocks", [])] == blocks
            if same and old.get("status") == PARTIAL:
                return cls(path, blocks, old), True
            shutil.rmtree(path)  # another run's leftovers under this name: start over
        n_rows = blocks[-1][1] if blocks else 0
        chunk = max(b - a for a, b in blocks) if blocks else 1
        root = zarr.open_group(str(path), mode="w")
        for name, (cols, dtype) in outputs.items():
            root.create_array(name, shape=(n_rows, cols), chunks=(chunk, max(cols, 1)), dtype=np.dtype(dtype))
        (path / "done").mkdir()
        meta = dict(meta, fingerprint=fingerprint, blocks=[list(b) for b in blocks], status=PARTIAL)
        root.attrs.update(_jsonable(meta))
        return cls(path, blocks, meta), False

    # ------------------------------------------------------------------ workers
    def write_block(self, index: int, values: dict[str, Any]) -> None:
        """Write one block's outputs, then its done marker (called on the worker)."""
        import zarr

        a, b = self.blocks[index]
        chunks = []
        for name, data in values.items():
            arr = zarr.open_array(str(self.path / name), mode="r+")
            arr[a:b] = np.asarray(data, dtype=arr.dtype).reshape(b - a, -1)
            rows = arr.chunks[0]
            chunks += [
                (self.path / name, arr.metadata.encode_chunk_key((c, 0))) for c in range(a // rows, (b - 1) // rows + 1)
            ]
        # the data reach the disk before the marker says they are there: after a power loss (not
        # only a killed process) a block marked done has its chunks
        for array_dir, key in chunks:
            _fsync_file_and_folders(array_dir, key)
        marker = self.path / "done" / str(index)
        with open(marker, "w") as fh:
            fh.write(f"{a} {b}\n")
            fh.flush()
            os.fsync(fh.fileno())
        _fsync_folder(marker.parent)

    # ------------------------------------------------------------------ book-keeping
    def done(self) -> np.ndarray:
        """Which blocks are finished (bool per block)."""
        out = np.zeros(len(self.blocks), dtype=bool)
        for marker in (self.path / "done").iterdir():
            if marker.name.isdigit() and int(marker.name) < len(out):
                out[int(marker.name)] = True
        return out

    def array(self, name: str) -> Any:
        """A dask array over one output (lazy, chunked like the store)."""
        import dask.array as da

        return da.from_zarr(str(self.path / name))

    def set_meta(self, **values: Any) -> None:
        """Record more book-keeping in the store's attributes."""
        import zarr

        self.meta.update(values)
        zarr.open_group(str(self.path), mode="r+").attrs.update(_jsonable(values))

    def remove(self) -> None:
        """Delete the store (see :func:`remove_store`)."""
        remove_store(self.path)


def _fsync_folder(folder: Path) -> None:
    """Make a folder's entries durable (a new file is found after a power loss only then)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # not openable as a file (some platforms): its entries are as durable as the OS makes them
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file_and_folders(array_dir: Path, key: str) -> None:
    """fsync one chunk file and the folders from it up to its array's folder. A chunk holding
    only the fill value is not written at all (zarr skips it): nothing to sync then."""
    chunk = array_dir / key
    if chunk.exists():
        fd = os.open(chunk, os.O_RDWR)  # Windows fsyncs only files opened for writing
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    folder = chunk.parent
    while True:
        if folder.exists():
            _fsync_folder(folder)
        if folder == array_dir or array_dir not in folder.parents:
            break
        folder = folder.parent


REMOVING = ".removing"


def remove_store(path: str | os.PathLike) -> None:
    """Delete a store: first renamed (atomic, so it never looks like a store to resume), then
    removed; a deletion cut short leaves ``*.removing``, cleared by :func:`clear_removed`."""
    path = Path(path)
    if not path.exists():
        return
    doomed = path.with_name(path.name + REMOVING)
    shutil.rmtree(doomed, ignore_errors=True)
    path.rename(doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def clear_removed(folder: str | os.PathLike) -> None:
    """Finish deletions that an interruption cut short."""
    folder = Path(folder)
    if folder.is_dir():
        for doomed in folder.glob(f"*{REMOVING}"):
            shutil.rmtree(doomed, ignore_errors=True)


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The attributes of a store (empty when it is not a readable zarr group)."""
    import zarr

    try:
        return dict(zarr.open_group(str(path), mode="r").attrs)
    except Exception:  # a half-created or foreign folder: not ours to resume
        return {}


def done_count(path: str | os.PathLike) -> int:
    """How many blocks of the store at ``path`` have their done marker (0 for a store without markers)."""
    done_dir = Path(path) / "done"
    return sum(1 for m in done_dir.iterdir() if m.name.isdigit()) if done_dir.is_dir() else 0


def lock_path(path: str | os.PathLike) -> Path:
    """The run lock of the store at ``path``: ``<store>.lock`` beside it (see :mod:`usidgpu.storage.locks`)."""
    path = Path(path)
    return path.with_name(path.name + ".lock")


def _jsonable(meta: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(meta, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))
