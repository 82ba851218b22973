"""The catalog: which USID datasets the watched folders hold, in an SQLite database beside them.

Why SQLite: it ships with Python, survives restarts and crashes (its journal is what HDF5
lacks), and is what a single-machine service needs for a few thousand entries and one writer.
The database lives in ``<first folder>/.usidgpu-serve/catalog.sqlite``; one service at a time
owns it (an advisory lock beside it, released by the OS however the service ends), so two
services on one folder refuse to share a catalog instead of corrupting each other's jobs.

Datasets are addressed by catalog ids (a hash of the folder, the file's relative path and the
dataset's HDF5 path), never by paths: a request cannot name a file outside the folders.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.errors import InvalidInput, UsidgpuError
from ..storage.locks import RunInProgress, lock_holder, run_lock
from .database import transaction

STATE_DIR = ".usidgpu-serve"
"""Folder (in the first watched folder) that holds the catalog; never scanned for data."""

#: File names taken for USID HDF5 files (pycroscopy wrote .h5 and .hf5).
HDF5_SUFFIXES = (".h5", ".hdf5", ".hf5", ".he5", ".usid")

#: Version of the catalog's tables and descriptions; a catalog of another version is rebuilt.
SCHEMA_VERSION = 3

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY,      -- absolute path
    folder INTEGER NOT NULL,    -- index of the watched folder
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    status TEXT NOT NULL,       -- ok | failed
    error TEXT,                 -- one line, for a failed file
    seen REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS datasets (
    id TEXT PRIMARY KEY,
    file TEXT NOT NULL REFERENCES files(path) ON DELETE CASCADE,
    path TEXT NOT NULL,         -- HDF5 path of the Main dataset
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    description TEXT NOT NULL,  -- JSON (usidgpu.service.describe.describe)
    added REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS datasets_file ON datasets(file);
"""


class CatalogBusy(UsidgpuError):
    """Another service owns the catalog of these folders."""


class NotInCatalog(UsidgpuError, KeyError):
    """No dataset or file with that id."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class Entry:
    """One catalogued Main dataset."""

    id: str
    file: str
    path: str
    name: str
    kind: str
    description: dict[str, Any]

    def summary(self) -> dict[str, Any]:
        """What the dataset list shows of it."""
        d = self.description
        return {
            "id": self.id,
            "name": self.name,
            "file": os.path.basename(self.file),
            "path": self.path,
            "kind": self.kind,
            "quantity": d["quantity"],
            "units": d["units"],
            "shape": d["shape"],
            "nd_shape": d["nd_shape"],
            "dims": [{k: dim[k] for k in ("name", "units", "size", "role")} for dim in d["dims"]],
            "instrument": d["instrument"],
            "results": len(d["results"]),
            "result_of": d.get("result_of"),
        }


def dataset_id(folder: Path, file: Path, h5_path: str) -> str:
    """The stable id of a dataset: where it is, hashed (the same after a restart)."""
    rel = file.resolve().relative_to(folder.resolve()).as_posix()
    key = f"{folder.resolve().as_posix()}\0{rel}\0{h5_path}"
    return hashlib.sha256(key.encode()).hexdigest()[:16]


class Catalog:
    """The catalog of the USID datasets in ``folders``.

    Parameters
    ----------
    folders : sequence of path
        The watched folders (existing directories).
    state_dir : path, optional
        Where the database lives (default ``<folders[0]>/.usidgpu-serve``).

    Use as a context manager (or call :meth:`close`): it holds the catalog's lock while open.
    """

    def __init__(self, folders: Sequence[str | os.PathLike], state_dir: str | os.PathLike | None = None) -> None:
        if not folders:
            raise InvalidInput("give at least one folder to serve")
        self.folders = [Path(f).resolve() for f in folders]
        for f in self.folders:
            if not f.is_dir():
                raise InvalidInput(f"{f}: not a folder")
        self.state_dir = Path(state_dir).resolve() if state_dir else self.folders[0] / STATE_DIR
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._stack = contextlib.ExitStack()
        lock = self.state_dir / "catalog.lock"
        try:
            self._stack.enter_context(run_lock(lock, "the catalog"))
        except RunInProgress:
            holder = lock_holder(lock) or "another process"
            raise CatalogBusy(
                f"{self.state_dir}: the catalog is in use by another usidgpu serve ({holder}); "
                "stop it first or give this one another --state folder"
            ) from None
        self.db_path = self.state_dir / "catalog.sqlite"
        self._db = sqlite3.connect(self.db_path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA foreign_keys = ON")
        self._db.execute("PRAGMA journal_mode = WAL")
        if self._db.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
            # descriptions of another version: read the files again (jobs are kept)
            self._db.executescript("DROP TABLE IF EXISTS datasets; DROP TABLE IF EXISTS files;")
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        """Close the database and release the catalog's lock."""
        with self._lock:
            self._db.close()
        self._stack.close()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _transaction(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return transaction(self._db, self._lock)

    # ------------------------------------------------------------------ scanning
    def candidates(self) -> Iterator[tuple[int, Path]]:
        """(folder index, file) of every HDF5 file in the folders, hidden and usidgpu's own
        folders (sidecars, the catalog, temporaries) skipped."""
        for index, folder in enumerate(self.folders):
            for root, dirs, files in os.walk(folder):
                dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not d.endswith(".usidgpu"))
                for name in sorted(files):
                    if not name.startswith(".") and name.lower().endswith(HDF5_SUFFIXES):
                        yield index, Path(root) / name

    def scan(self) -> dict[str, int]:
        """Bring the catalog up to date with the folders: new and changed files are read, gone
        ones dropped. A file that cannot be read is recorded as failed with a one-line reason;
        it never stops the scan.

        Returns
        -------
        dict
            Counts: ``added``, ``updated``, ``removed``, ``failed`` files.
        """
        counts = {"added": 0, "updated": 0, "removed": 0, "failed": 0}
        with self._lock:
            known = {row[0]: (row[1], row[2]) for row in self._db.execute("SELECT path, size, mtime_ns FROM files")}
        present = set()
        for index, path in self.candidates():
            key = str(path)
            present.add(key)
            try:
                st = path.stat()
            except OSError:
                continue  # removed while scanning
            if known.get(key) == (st.st_size, st.st_mtime_ns):
                continue
            ok = self.add_file(index, path, st)
            counts["failed" if not ok else ("updated" if key in known else "added")] += 1
        gone = [p for p in known if p not in present]
        if gone:
            with self._transaction() as db:
                db.executemany("DELETE FROM files WHERE path = ?", [(p,) for p in gone])
            counts["removed"] = len(gone)
        return counts

    def add_file(self, folder_index: int, path: Path, st: os.stat_result | None = None) -> bool:
        """(Re)read one file into the catalog; False (and the reason recorded) when it fails."""
        from ..usid.file import USIDFile
        from .describe import describe

        path = Path(path).resolve()
        st = st or path.stat()
        rows: list[tuple[str, str, str, str, str]] = []
        error = None
        try:
            with USIDFile(path) as f:
                described = []
                for main in f.main_datasets():
                    desc = describe(main, f.results_groups(main))
                    described.append((dataset_id(self.folders[folder_index], path, main.name), desc))
            link_results(described)
            rows = [(did, d["path"], d["name"], d["kind"], json.dumps(d)) for did, d in described]
            if not rows:
                error = "not a USID file: no Main dataset found"
        except (UsidgpuError, OSError, MemoryError) as exc:
            # the file's own problem (damaged, not HDF5, huge): recorded, never fatal to the service
            error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            # clients see the file by name, not where the server keeps it
            error = error.replace(str(path), path.name)
        now = time.time()
        with self._transaction() as db:
            db.execute("DELETE FROM files WHERE path = ?", (str(path),))
            db.execute(
                "INSERT INTO files VALUES (?, ?, ?, ?, ?, ?, ?)",
                (str(path), folder_index, st.st_size, st.st_mtime_ns, "failed" if error else "ok", error, now),
            )
            db.executemany(
                "INSERT INTO datasets VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(did, str(path), p, n, k, d, now) for did, p, n, k, d in rows],
            )
        return error is None

    # ------------------------------------------------------------------ queries
    def get(self, dataset_id: str) -> Entry:
        """The dataset with this id.

        Raises
        ------
        NotInCatalog
        """
        with self._lock:
            row = self._db.execute(
                "SELECT id, file, path, name, kind, description FROM datasets WHERE id = ?", (dataset_id,)
            ).fetchone()
        if row is None:
            raise NotInCatalog(f"no dataset with id {dataset_id!r}")
        return _entry(row)

    def datasets(
        self, query: str | None = None, kind: str | None = None, dim: str | None = None, results: bool = False
    ) -> list[Entry]:
        """Every catalogued dataset, filtered.

        Parameters
        ----------
        query : str, optional
            Words that must all appear (case-insensitive) in the name, file name, path, quantity,
            units, a dimension's name or units, or the instrument metadata.
        kind : str, optional
            Only this kind (``image``, ``spectrum image``, ...).
        dim : str, optional
            Only datasets with a dimension of this name (case-insensitive).
        results : bool
            Also the Main datasets inside results groups (components, maps, ...).
        """
        with self._lock:
            rows = self._db.execute(
                "SELECT id, file, path, name, kind, description FROM datasets ORDER BY file, path"
            ).fetchall()
        entries = [_entry(r) for r in rows]
        if not results:
            entries = [e for e in entries if not e.description.get("result_of")]
        if kind:
            entries = [e for e in entries if e.kind == kind]
        if dim:
            entries = [e for e in entries if any(d["name"].lower() == dim.lower() for d in e.description["dims"])]
        if query:
            words = query.lower().split()
            entries = [e for e in entries if all(w in _search_text(e) for w in words)]
        return entries

    def datasets_of(self, file: str | os.PathLike) -> list[Entry]:
        """The catalogued datasets of one file."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, file, path, name, kind, description FROM datasets WHERE file = ? ORDER BY path",
                (str(Path(file).resolve()),),
            ).fetchall()
        return [_entry(r) for r in rows]

    def folder_of(self, path: str | os.PathLike) -> int | None:
        """Index of the catalogued folder that holds ``path`` (None: outside all of them)."""
        path = Path(path).resolve()
        for index, folder in enumerate(self.folders):
            if folder == path or folder in path.parents:
                return index
        return None

    def failed_files(self) -> list[tuple[Path, str]]:
        """(path, one-line reason) of the files that could not be read."""
        with self._lock:
            rows = self._db.execute("SELECT path, error FROM files WHERE status = 'failed' ORDER BY path").fetchall()
        return [(Path(p), e) for p, e in rows]

    def set_file_status(self, path: str | os.PathLike, status: str, error: str | None = None) -> None:
        """Record what became of a file (``translated``: read through a translation instead)."""
        with self._transaction() as db:
            db.execute(
                "UPDATE files SET status = ?, error = ? WHERE path = ?", (status, error, str(Path(path).resolve()))
            )

    def failures(self) -> list[dict[str, Any]]:
        """Files that could not be read, with their one-line reasons."""
        with self._lock:
            rows = self._db.execute("SELECT path, error FROM files WHERE status = 'failed' ORDER BY path").fetchall()
        return [{"file": os.path.basename(p), "error": e} for p, e in rows]


def link_results(described: list[tuple[str, dict[str, Any]]]) -> None:
    """Name, in each results group a description lists, the catalog ids and names of the Main
    datasets it holds (components, maps, labels, cleaned images…), so clients can open them."""
    inside: dict[str, list[dict[str, str]]] = {}
    for did, desc in described:
        if desc.get("result_of"):
            inside.setdefault(desc["result_of"], []).append({"id": did, "name": desc["name"], "kind": desc["kind"]})
    for _did, desc in described:
        for group in desc["results"]:
            group["datasets"] = inside.get(group["path"], [])


def _entry(row: tuple) -> Entry:
    """An :class:`Entry` from a row of ``SELECT id, file, path, name, kind, description``."""
    did, file, path, name, kind, description = row
    return Entry(did, file, path, name, kind, json.loads(description))


def _search_text(e: Entry) -> str:
    d = e.description
    parts = [e.name, os.path.basename(e.file), e.path, e.kind, d["quantity"], d["units"]]
    parts += [f"{dim['name']} {dim['units']}" for dim in d["dims"]]
    parts += [f"{k} {v}" for k, v in d["instrument"].items()]
    return " ".join(str(p) for p in parts).lower()
