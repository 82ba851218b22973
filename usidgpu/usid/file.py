"""Opening USID files (HDF5, or zarr stores read-only), finding their Main datasets and results groups."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.errors import DatasetNotFoundError, NotMainError, NotUSIDError
from ..storage import DatasetNode, FileNode, GroupNode, is_dataset, is_group, is_open, open_file
from ..storage.h5 import damage_reported
from ..storage.h5 import open_h5 as open_h5  # re-exported: its home before usidgpu.storage
from .attrs import read_attrs
from .dataset import MainDataset
from .rules import ERROR, claims_main, main_problems

#: <Source>-<Tool>_NNN, as pyUSID's create_results_group names results groups.
RESULTS_NAME = re.compile(r"^(?P<source>[^-]+)-(?P<tool>[^-]+)_(?P<index>\d{3,})$")


def results_groups_of(dataset: DatasetNode, tool: str | None = None) -> list[tuple[re.Match, GroupNode]]:
    """Groups beside ``dataset`` named ``<its name>-<Tool>_NNN`` (only ``tool``'s, if given)."""
    if not isinstance(dataset.name, str):
        return []  # a name HDF5 cannot decode (a damaged link) names no results groups
    parent = dataset.parent
    base = dataset.name.rsplit("/", 1)[1]
    found = []
    for key in parent:
        if not isinstance(key, str):  # h5py gives an undecodable (damaged) link name as bytes
            continue
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
        self._h5 = open_file(self.path, mode)  # HDF5, or a zarr store (read-only)
        self._closed_by_user = False

    @property
    def h5(self) -> FileNode:
        """The underlying file: an ``h5py.File``, or a read-only view of a zarr store.

        A read-only file closed by attaching results to it (see :class:`usidgpu.ResultsWriter`)
        reopens itself here; one closed with :meth:`close` stays closed.
        """
        if not is_open(self._h5) and self.mode == "r" and not self._closed_by_user:
            self._h5 = open_file(self.path, "r")
        return self._h5

    def __enter__(self) -> USIDFile:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self._closed_by_user = True
        if is_open(self._h5):
            self._h5.close()

    @property
    def closed(self) -> bool:
        return self._closed_by_user or not is_open(self._h5)

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"mode {self._h5.mode!r}" if is_open(self._h5) else "mode 'r'"
        return f"<usidgpu.USIDFile {str(self.path)!r} ({state})>"

    @property
    def attrs(self) -> dict[str, Any]:
        return read_attrs(self.h5)

    def main_datasets(self) -> list[MainDataset]:
        """Every Main dataset in the file, in HDF5 traversal order (as pyUSID's ``get_all_main``).

        Raises
        ------
        FileProblem
            The file is damaged (HDF5 cannot read its structure).
        """
        return self._find_mains()[0]

    def _find_mains(self) -> tuple[list[MainDataset], list[NotMainError]]:
        """The Main datasets, and why each dataset meant to be one was refused."""
        found: list[MainDataset] = []
        refused: list[NotMainError] = []

        def visit(_name: str, obj: Any) -> None:
            if is_dataset(obj) and claims_main(obj):
                if not [p for p in main_problems(obj) if p.severity == ERROR]:
                    try:
                        found.append(MainDataset(obj))
                    except NotMainError as exc:  # structurally Main but unusable; validate() says why
                        refused.append(exc)

        with damage_reported(self.path):
            self.h5.visititems(visit)
        return found, refused

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
            mains, refused = self._find_mains()
            if mains:
                return mains[0]
            if refused:  # a dataset meant to be Main: say what is wrong with it, not "no Main"
                raise refused[0]
            raise NotUSIDError(f"{self.path}: not a USID file: no Main dataset found")
        with damage_reported(self.path):
            if path not in self.h5:
                raise DatasetNotFoundError(f"{self.path}: no dataset {path!r} in the file")
            obj = self.h5[path]
            if not is_dataset(obj):
                raise NotMainError(f"{self.path}: {obj.name} is a group, not a dataset")
            return MainDataset(obj)

    def results_groups(self, main: MainDataset | str | None = None) -> list[ResultsGroup]:
        """Results groups (``<Source>-<Tool>_NNN``) of ``main``, or of every Main dataset."""
        mains = [self.dataset(main) if isinstance(main, str) else main] if main is not None else self.main_datasets()
        with damage_reported(self.path):
            return self._results_groups(mains)

    def _results_groups(self, mains: list[MainDataset]) -> list[ResultsGroup]:
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
    """Open a USID file: HDF5, or a zarr store (read-only; see ``usidgpu convert``).

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
        Missing, unreadable, not HDF5 (nor zarr) or truncated; a zarr store asked for writing.
    """
    return USIDFile(path, mode)
