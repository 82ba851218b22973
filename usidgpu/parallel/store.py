"""The zarr store a :class:`~usidgpu.parallel.Process` writes into while it runs.

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
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import ResultsError

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


class RunInProgress(ResultsError):
    """The same computation is running in another process right now."""


@contextmanager
def run_lock(path: str | os.PathLike, what: str) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` while one run of a computation works on its store.

    Two identical runs at once would compute into the same store, and the first to finish
    would delete it under the other. The lock is an advisory ``flock`` on a small file that
    names its holder; the operating system releases it when the process ends in any way (kill -9
    included), so a crashed run never blocks the next one. Where ``fcntl`` does not exist
    (Windows) no lock is taken. On network file systems ``flock`` may be local to one node.

    Raises
    ------
    RunInProgress
        Another process holds the lock.
    """
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks here
        yield
        return
    path = Path(path)
    fd = _take_lock(path, fcntl, what)
    if fd is None:  # a file system without flock (some network mounts): run unguarded, as before
        yield
        return
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode())
        try:
            yield
        finally:
            # removed while still held: a run that opens it from now on creates a fresh one (and
            # one that opened this file before cannot keep its lock: see _take_lock)
            path.unlink(missing_ok=True)
    finally:
        os.close(fd)


def _take_lock(path: Path, fcntl: Any, what: str) -> int | None:
    """A descriptor of ``path`` that holds its exclusive flock; None without flock support.

    The holder before removes the file while it still holds its lock. A run that opened the file
    just before that gets the lock of a deleted file once the holder ends, while the next run
    locks the new file: two holders. So a lock counts only while ``path`` still names the file
    locked; otherwise the file now there is opened and locked instead.
    """
    for _ in range(1000):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:  # another run removed the empty folder in between: again
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise RunInProgress(
                f"{what} is being computed by {holder} right now; wait for it to finish "
                f"(or stop it: the next run resumes its blocks). Lock: {path}"
            ) from None
        except OSError:
            os.close(fd)
            path.unlink(missing_ok=True)
            return None
        try:
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # the lock of a file removed meanwhile: take the one there now
    raise ResultsError(f"{path}: the run lock changed hands 1000 times; try again")


def lock_holder(path: str | os.PathLike) -> str | None:
    """Who holds the run lock at ``path`` right now, or None (nobody, or not knowable here).

    Read from ``/proc/locks`` (Linux), so looking never takes the lock and cannot get in the way
    of a run that is starting.
    """
    path = Path(path)
    try:
        st = path.stat()
        table = Path("/proc/locks").read_text()
    except OSError:
        return None
    try:
        text = path.read_text(errors="replace").strip()
    except OSError:
        return None
    for line in table.splitlines():
        fields = line.split()  # "1: FLOCK  ADVISORY  WRITE 1234 fe:00:5678 0 EOF"; waiters carry "->"
        if len(fields) < 6 or fields[1] != "FLOCK" or "->" in fields:
            continue
        # the inode alone: on btrfs /proc/locks and stat() disagree on the device number; the
        # holder's pid in the file confirms that the lock is this file's
        if fields[5].rsplit(":", 1)[-1] == str(st.st_ino) and text.startswith(f"pid {fields[4]} "):
            return text
    return None


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


def _jsonable(meta: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(meta, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))
