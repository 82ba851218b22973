"""``usidgpu.validate``: every broken rule of the USID model in a file."""

from __future__ import annotations

import os
from typing import Any

from ..storage import DatasetNode, FileNode, is_reference
from ..storage.h5 import damage_reported
from .file import USIDFile, results_groups_of
from .rules import (
    ERROR,
    WARNING,
    Problem,
    claims_main,
    content_problems,
    is_candidate,
    main_problems,
    partial_link_note,
)


def _results_problems(main: DatasetNode) -> list[Problem]:
    problems: list[Problem] = []
    for _match, group in results_groups_of(main):
        if "source_000" not in group.attrs:
            continue
        ref = group.attrs["source_000"]
        if not is_reference(ref):
            continue  # a path string, as usidgpu writes for results in another file
        try:
            target = main.file[ref]
        except Exception:
            problems.append(
                Problem(
                    group.name,
                    "results-source-dangling",
                    "attribute 'source_000' points to an object that no longer exists",
                )
            )
            continue
        if target != main:
            problems.append(
                Problem(
                    group.name,
                    "results-source-mismatch",
                    f"is named after {main.name} but 'source_000' points to {target.name}",
                    WARNING,
                )
            )
    return problems


def validate(path: str | os.PathLike | USIDFile) -> list[Problem]:
    """Check a file against the rules of the USID model.

    Main data are never read, so a file of any size validates in moments (and NaN-only data are
    valid). Every dataset that claims to be Main (all four ancillary references, or quantity and
    units beside one of them) is checked as a Main dataset; one linked to some ancillaries only
    (pyUSID's ``check_and_link_ancillary``) gets a note; results groups are checked for dangling
    source references.

    Parameters
    ----------
    path : str, path-like or USIDFile

    Returns
    -------
    list of Problem
        Empty when the file is valid. Problems of severity ``"warning"`` are legal but limit
        what can be done (e.g. no n-d view of sparse data); ``"note"`` ones are said for the curious.

    Raises
    ------
    FileProblem
        The file is missing, not HDF5, truncated, or so damaged that HDF5 cannot read its structure.
    """
    if isinstance(path, USIDFile):
        with damage_reported(path.path):
            return _validate_open(path.h5)
    with USIDFile(path) as f, damage_reported(f.path):
        return _validate_open(f.h5)


def _validate_open(h5: FileNode) -> list[Problem]:
    candidates: list[DatasetNode] = []
    notes: list[Problem] = []

    def visit(_name: str, obj: Any) -> None:
        if claims_main(obj):
            candidates.append(obj)
        elif is_candidate(obj):
            notes.append(partial_link_note(obj))

    h5.visititems(visit)
    if not candidates:
        return [
            Problem(
                "/",
                "no-main",
                "not a USID file: no dataset carries the Position/Spectroscopic references of a Main dataset",
            ),
            *notes,
        ]
    problems: list[Problem] = []
    for dset in candidates:
        problems.extend(_dataset_problems(dset))
    return problems + notes


def dataset_problems(dset: DatasetNode) -> list[Problem]:
    """Every problem of one dataset checked as a Main dataset (structure, contents, results).

    Raises
    ------
    FileProblem
        HDF5 cannot read the dataset's structure (a damaged file).
    """
    with damage_reported(dset.file.filename):
        return _dataset_problems(dset)


def _dataset_problems(dset: DatasetNode) -> list[Problem]:
    problems = main_problems(dset)
    if not [p for p in problems if p.severity == ERROR]:
        problems.extend(content_problems(dset))
        problems.extend(_results_problems(dset))
    return problems


def errors_only(problems: list[Problem]) -> list[Problem]:
    """The problems of severity ``"error"``."""
    return [p for p in problems if p.severity == ERROR]
