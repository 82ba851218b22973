"""Opening USID HDF5 files, finding their Main datasets and results groups."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py

from ..core.errors import DatasetNotFoundError, FileProblem, NotMainError, NotUSIDError
from .attrs import read_attrs
from .dataset import MainDataset
from .rules import ERROR, is_candidate, main_problems
from .zarr_store import READ_ONLY, is_dataset, is_group, is_zarr_path, open_zarr

_MODES = {"r": "r", "r+": "r+", "a": "a", "w": "w", "w-": "w-", "x": "x"}
#: <Source>-<Tool>_NNN, as pyUSID's create_results_group names results groups.
RESULTS_NAME = re.compile(r"^(?P<source>[^-]+)-(?P<tool>[^-]+)_(?P<index>\d{3,})$")


def open_h5(path: str | os.PathLike, mode: str = "r") -> h5py.File:
    """Open an HDF5 file, turning every way it can fail into a one-line :class:`FileProblem`."""
    p = Path(path)
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {sorted(_MODES)}, got {mode!r}")
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


def results_groups_of(dataset: h5py.Dataset, tool: str | None = None) -> list[tuple[re.Match, h5py.Group]]:
    """Groups beside ``dataset`` named ``<its name>-<Tool>_NNN`` (only ``tool``'s, if given)."""
    parent = dataset.parent
    base = dataset.name.rsplit("/", 1)[1]
    found = []
    for key in parent:
        match = RESULTS_NAME.match(key)
        if not match or match.group("source") != base or (tool is not None and match.group("tool") != tool):
            continue
        group = parent.get(key)
        if is_group(group):
            found.append((match, group))
    return found


@dataclass(frozen=True)
class ResultsGroup:
    """A results group ``<Source>-<Tool>_NNN`` found next to a Main dataset.

    Attributes
    ----------
    path : str
    source : str
        HDF5 path of the source dataset.
    tool : str
    index : int
    attrs : dict
    """

    path: str
    source: str
    tool: str
    index: int
    attrs: dict

    @property
    def complete(self) -> bool:
        """False for a group an interrupted run left behind (see :mod:`usidgpu.usid.results`)."""
        status = self.attrs.get("usidgpu_status")
        if status is not None:
            return status == "complete"
        return True  # groups written by other tools carry no status


class USIDFile:
    """An HDF5 file seen through the USID model.

    Parameters
    ----------
    path : str or path-like
    mode : {"r", "r+", "a", "w", "w-", "x"}
        ``"r"`` (default) never modifies the file.

    Examples
    --------
    >>> with usidgpu.open("data.h5") as f:
    ...     ds = f.main_datasets()[0]
    ...     image = ds.sel(Bias=0)
    """

    def __init__(self, path: str | os.PathLike, mode: str = "r"):
        from ..samples import resolve

        self.path = resolve(path) if mode == "r" else Path(path)
        self.mode = mode
        if is_zarr_path(self.path):  # a zarr store (see usidgpu.usid.zarr_store): read-only
            if mode != "r":
                raise FileProblem(f"{self.path}: {READ_ONLY}")
            self._h5 = open_zarr(self.path)
        else:
            self._h5 = open_h5(self.path, mode)
        self._closed_by_user = False

    @property
    def h5(self) -> h5py.File:
        """The underlying ``h5py.File``.

        A read-only file closed by attaching results to it (see :class:`usidgpu.ResultsWriter`)
        reopens itself here; one closed with :meth:`close` stays closed.
        """
        if not self._h5.id.valid and self.mode == "r" and not self._closed_by_user:
            self._h5 = open_h5(self.path, "r")
        return self._h5

    def __enter__(self) -> USIDFile:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self._closed_by_user = True
        if self._h5.id.valid:
            self._h5.close()

    @property
    def closed(self) -> bool:
        return self._closed_by_user or not self._h5.id.valid

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"mode {self._h5.mode!r}" if self._h5.id.valid else "mode 'r'"
        return f"<usidgpu.USIDFile {str(self.path)!r} ({state})>"

    @property
    def attrs(self) -> dict[str, Any]:
        return read_attrs(self.h5)

    def main_datasets(self) -> list[MainDataset]:
        """Every Main dataset in the file, in HDF5 traversal order (as pyUSID's ``get_all_main``)."""
        found: list[MainDataset] = []

        def visit(_name: str, obj: Any) -> None:
            if is_dataset(obj) and is_candidate(obj):
                if not [p for p in main_problems(obj) if p.severity == ERROR]:
                    try:
                        found.append(MainDataset(obj))
                    except NotMainError:
                        pass  # structurally Main but its tables are unusable; validate() says why

        self.h5.visititems(visit)
        return found

    def __getitem__(self, path: str) -> MainDataset:
        """The Main dataset at ``path`` (absolute, or relative to the root)."""
        return self.dataset(path)

    def __contains__(self, path: str) -> bool:
        return path in self.h5

    def dataset(self, path: str | None = None) -> MainDataset:
        """The Main dataset at ``path``; without a path, the file's only (or first) Main dataset.

        Raises
        ------
        DatasetNotFoundError
            ``path`` does not exist.
        NotMainError
            ``path`` exists but is not a Main dataset (the message names the broken rule).
        NotUSIDError
            No path given and the file holds no Main dataset.
        """
        if path is None:
            mains = self.main_datasets()
            if not mains:
                raise NotUSIDError(f"{self.path}: not a USID file: no Main dataset found")
            return mains[0]
        if path not in self.h5:
            raise DatasetNotFoundError(f"{self.path}: no dataset {path!r} in the file")
        obj = self.h5[path]
        if not is_dataset(obj):
            raise NotMainError(f"{self.path}: {obj.name} is a group, not a dataset")
        return MainDataset(obj)

    def results_groups(self, main: MainDataset | str | None = None) -> list[ResultsGroup]:
        """Results groups (``<Source>-<Tool>_NNN``) of ``main``, or of every Main dataset."""
        mains = [self.dataset(main) if isinstance(main, str) else main] if main is not None else self.main_datasets()
        out: list[ResultsGroup] = []
        seen: set[str] = set()
        for m in mains:
            for match, group in results_groups_of(m.h5):
                if group.name in seen:
                    continue
                seen.add(group.name)
                out.append(
                    ResultsGroup(group.name, m.name, match.group("tool"), int(match.group("index")), read_attrs(group))
                )
        return out


def open(path: str | os.PathLike, mode: str = "r") -> USIDFile:  # noqa: A001 - public API name
    """Open a USID HDF5 file.

    Parameters
    ----------
    path : str or path-like
        A file, or ``"sample:<name>"`` for a sample shipped with usidgpu (``usidgpu samples``).
    mode : {"r", "r+", "a", "w", "w-", "x"}
        ``"r"`` (default) opens read-only; source data are never modified.

    Returns
    -------
    USIDFile

    Raises
    ------
    FileProblem
        Missing, unreadable, not HDF5 or truncated.
    """
    return USIDFile(path, mode)
