"""The rules of the USID model, checked on the nodes of a file (HDF5 or zarr) without reading Main data.

:func:`main_problems` is the structural check that decides whether a dataset *is* a Main dataset;
it follows pyUSID's ``check_if_main`` rule by rule (so usidgpu finds the same Main datasets as
pyUSID), but returns every broken rule instead of stopping at the first, and never raises on a
malformed file. :func:`content_problems` adds checks pyUSID does not make (index tables that are
not integer, ragged grids, duplicate labels, ...). :func:`usidgpu.validate` combines both.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.memory import MEMORY_ENV, format_bytes, memory_budget
from ..storage import DatasetNode, is_dataset, is_reference
from ..storage.h5 import raised_by_hdf5
from ..storage.nodes import attr_too_large
from .ancillary import GRID, SPARSE, infer_layout, table_cost
from .attrs import decode_str_list, is_str_value

ANCILLARY_REFS = ("Position_Indices", "Position_Values", "Spectroscopic_Indices", "Spectroscopic_Values")

ERROR = "error"
WARNING = "warning"
#: Legal and harmless, said for the curious (e.g. an ordinary dataset linked to one ancillary).
NOTE = "note"


@dataclass(frozen=True)
class Problem:
    """One broken rule.

    Attributes
    ----------
    path : str
        HDF5 path of the object at fault (``/`` for the whole file).
    rule : str
        Short identifier of the rule, e.g. ``"dangling-reference"``.
    message : str
        What is wrong, in words.
    severity : {"error", "warning"}
        Errors break the USID model; warnings are legal but will limit what can be done
        (e.g. no n-d view of a non-grid dataset).
    """

    path: str
    rule: str
    message: str
    severity: str = ERROR

    def __str__(self) -> str:
        prefix = "" if self.severity == ERROR else f"{self.severity}: "
        return f"{self.path}: {prefix}{self.message} [{self.rule}]"


def is_candidate(obj: object) -> bool:
    """True for datasets that carry at least one of the four ancillary reference attributes,
    i.e. that were meant to be Main datasets."""
    return is_dataset(obj) and any(name in obj.attrs for name in ANCILLARY_REFS)


def claims_main(obj: object) -> bool:
    """True for datasets that claim to be Main: all four ancillary references, or ``quantity``
    and ``units`` beside at least one of them.

    A dataset with some references and no quantity/units is an ordinary dataset linked to
    ancillaries — pyUSID's own ``check_and_link_ancillary`` makes that pattern — and is not
    checked as a Main dataset (:func:`partial_link_note` mentions it).
    """
    if not is_candidate(obj):
        return False
    attrs = obj.attrs  # type: ignore[attr-defined]
    return all(name in attrs for name in ANCILLARY_REFS) or ("quantity" in attrs and "units" in attrs)


def partial_link_note(dset: DatasetNode) -> Problem:
    """The note for a dataset linked to some ancillaries that does not claim to be Main."""
    present = [name for name in ANCILLARY_REFS if name in dset.attrs]
    return Problem(
        dset.name,
        "partial-ancillary-link",
        f"links {', '.join(present)} but is not a Main dataset (no quantity/units, not all four "
        "references): an ordinary dataset with ancillaries, as pyUSID's check_and_link_ancillary makes",
        NOTE,
    )


def dereference(dset: DatasetNode, name: str) -> tuple[DatasetNode | None, Problem | None]:
    """Follow the reference attribute ``name`` of ``dset`` to an ancillary dataset."""
    path = dset.name
    if name not in dset.attrs:
        return None, Problem(path, "missing-reference", f"has no {name!r} attribute (an object reference)")
    too_large = attribute_too_large(dset, name)
    if too_large:
        return None, too_large
    try:
        ref = dset.attrs[name]
    except (OSError, TypeError, ValueError) as exc:
        return None, Problem(path, "not-a-reference", f"attribute {name!r} cannot be read ({exc})")
    if not is_reference(ref):
        return None, Problem(
            path, "not-a-reference", f"attribute {name!r} must be an object reference, is {type(ref).__name__}"
        )
    if not ref:
        return None, Problem(path, "dangling-reference", f"attribute {name!r} is a null reference")
    try:
        target = dset.file[ref]
    except Exception:  # stores raise ValueError/KeyError/OSError depending on how it dangles
        return None, Problem(
            path, "dangling-reference", f"attribute {name!r} points to an object that no longer exists"
        )
    if target.name is None:
        # the link was deleted but the object header survives: an unreachable, anonymous object
        return None, Problem(path, "dangling-reference", f"attribute {name!r} points to a deleted (unlinked) object")
    if not is_dataset(target):
        return None, Problem(
            path, "reference-not-dataset", f"attribute {name!r} points to {target.name}, which is not a dataset"
        )
    return target, None


def attribute_too_large(node: DatasetNode, name: str) -> Problem | None:
    """The problem of an attribute that declares more bytes than any USID attribute holds, or whose
    header HDF5 cannot open (a damaged header), found before its value is read; None when its size
    is plausible."""
    try:
        declared = attr_too_large(node, name)
    except (KeyError, OSError, RuntimeError, ValueError) as exc:
        if not raised_by_hdf5(exc):
            raise
        # HDF5 refuses the attribute's header itself (a dataspace larger than its data, ...)
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return Problem(node.name, "attribute-unreadable", f"attribute {name!r} cannot be opened ({text[:160]})")
    if declared is None:
        return None
    return Problem(
        node.name,
        "attribute-too-large",
        f"attribute {name!r} declares {format_bytes(declared)} (a damaged attribute header); it is not read",
    )


def _labels_units(anc: DatasetNode, problems: list[Problem]) -> tuple[list[str] | None, list[str] | None]:
    out = []
    for attr in ("labels", "units"):
        if attr not in anc.attrs:
            problems.append(Problem(anc.name, "ancillary-missing-attribute", f"has no {attr!r} attribute"))
            out.append(None)
            continue
        too_large = attribute_too_large(anc, attr)
        if too_large:
            problems.append(too_large)
            out.append(None)
            continue
        try:
            out.append(decode_str_list(anc.attrs[attr]))
        except (TypeError, OSError, ValueError):
            problems.append(
                Problem(anc.name, "ancillary-attribute-type", f"attribute {attr!r} is not a list of strings")
            )
            out.append(None)
    return out[0], out[1]


def _pair_problems(main: DatasetNode, inds: DatasetNode, vals: DatasetNode, spectroscopic: bool) -> list[Problem]:
    side = "Spectroscopic" if spectroscopic else "Position"
    axis = 1 if spectroscopic else 0
    problems: list[Problem] = []
    for anc in (inds, vals):
        if anc.ndim != 2:
            problems.append(
                Problem(anc.name, "ancillary-not-2d", f"{side} ancillary dataset must be 2-D, has shape {anc.shape}")
            )
    if problems:
        return problems
    if inds.shape != vals.shape:
        problems.append(
            Problem(
                main.name,
                "ancillary-shape",
                f"{side}_Indices {inds.shape} and {side}_Values {vals.shape} differ in shape",
            )
        )
    for anc in (inds, vals):
        if anc.shape[axis] != main.shape[axis]:
            problems.append(
                Problem(
                    anc.name,
                    "ancillary-size",
                    f"{side} ancillary shape {anc.shape} does not match Main {main.name} {main.shape} "
                    f"(axis {axis} must be {main.shape[axis]})",
                )
            )
    i_labels, i_units = _labels_units(inds, problems)
    v_labels, v_units = _labels_units(vals, problems)
    for anc, labels, units in ((inds, i_labels, i_units), (vals, v_labels, v_units)):
        if labels is not None and units is not None and len(labels) != len(units):
            problems.append(
                Problem(anc.name, "labels-units-length", f"has {len(labels)} labels but {len(units)} units")
            )
        n_dims = anc.shape[1 - axis]
        if labels is not None and len(labels) != n_dims:
            problems.append(
                Problem(
                    anc.name, "labels-count", f"has {len(labels)} labels for {n_dims} dimensions (shape {anc.shape})"
                )
            )
    if i_labels is not None and v_labels is not None and i_labels != v_labels:
        problems.append(
            Problem(
                main.name,
                "labels-mismatch",
                f"{side}_Indices labels {i_labels} differ from {side}_Values labels {v_labels}",
            )
        )
    if i_units is not None and v_units is not None and i_units != v_units:
        problems.append(
            Problem(
                main.name, "units-mismatch", f"{side}_Indices units {i_units} differ from {side}_Values units {v_units}"
            )
        )
    return problems


def main_problems(dset: DatasetNode) -> list[Problem]:
    """Every structural rule of a USID Main dataset that ``dset`` breaks (empty: it is Main).

    The rules are those of pyUSID's ``check_if_main``: 2-D; the four object-reference attributes
    dereference to datasets; ``quantity`` and ``units`` are strings; ancillary shapes match the
    Main dataset and each other; ancillary ``labels``/``units`` agree in length and between
    Indices and Values, one per dimension.
    """
    path = dset.name
    problems: list[Problem] = []
    if dset.ndim != 2:
        problems.append(
            Problem(
                path,
                "main-not-2d",
                f"a Main dataset must be 2-D (positions × spectroscopic points), has shape {dset.shape}",
            )
        )
    elif 0 in dset.shape:
        problems.append(
            Problem(
                path, "main-empty", f"a Main dataset needs at least one position and one point, has shape {dset.shape}"
            )
        )
    targets = {}
    for name in ANCILLARY_REFS:
        target, problem = dereference(dset, name)
        if problem:
            problems.append(problem)
        else:
            targets[name] = target
    for attr in ("quantity", "units"):
        too_large = attr in dset.attrs and attribute_too_large(dset, attr)
        if attr not in dset.attrs:
            problems.append(Problem(path, "missing-attribute", f"has no {attr!r} attribute"))
        elif too_large:
            problems.append(too_large)
        elif not is_str_value(dset.attrs[attr]):
            problems.append(
                Problem(path, "attribute-not-string", f"attribute {attr!r} must be a string, is {dset.attrs[attr]!r}")
            )
    if dset.ndim == 2:
        for side, spectroscopic in (("Position", False), ("Spectroscopic", True)):
            inds = targets.get(f"{side}_Indices")
            vals = targets.get(f"{side}_Values")
            if inds is not None and vals is not None:
                problems.extend(_pair_problems(dset, inds, vals, spectroscopic))
    return problems


def index_problems(inds: DatasetNode, table: np.ndarray | None) -> list[Problem]:
    """The errors of an index table: indices that are not integers (NaN, fractions) or are negative.

    These are the rules the analyses share with :func:`usidgpu.validate`: a Main dataset whose
    indices break them has no meaningful dimensions, so nothing is computed from it.

    Parameters
    ----------
    inds : dataset
        The ``*_Indices`` dataset (its dtype is checked without reading it).
    table : ndarray or None
        Its values, when read (then also checked for negative entries).
    """
    if inds.dtype.kind not in "iu":
        return [Problem(inds.name, "index-dtype", f"indices must be integers, are {inds.dtype}")]
    if table is not None and table.size and table.min() < 0:
        return [Problem(inds.name, "negative-index", "indices must not be negative")]
    return []


def _table_problems(main_path: str, inds: DatasetNode, vals: DatasetNode, spectroscopic: bool) -> list[Problem]:
    side = "spectroscopic" if spectroscopic else "position"
    problems = index_problems(inds, None)
    if problems:
        return problems
    if vals.dtype.kind not in "iufb":
        problems.append(Problem(vals.name, "values-dtype", f"values must be real numbers, are {vals.dtype}"))
    n_entries, n_dims = (inds.shape[1], inds.shape[0]) if spectroscopic else inds.shape
    cost, budget = table_cost(n_entries, n_dims), memory_budget()
    if cost > budget:
        # checking means reading: a table larger than the budget is reported, not loaded
        problems.append(
            Problem(
                inds.name,
                "too-large-to-check",
                f"{n_entries} entries × {n_dims} dimensions need about {format_bytes(cost)} to check, more "
                f"than the memory budget ({format_bytes(budget)}; set {MEMORY_ENV} to raise it); not checked",
                WARNING,
            )
        )
        return problems
    table = inds[()]
    table = table.T if spectroscopic else table
    negative = index_problems(inds, table)
    if negative:
        return problems + negative
    layout = infer_layout(table)
    if layout.kind not in (GRID, SPARSE):
        problems.append(
            Problem(
                main_path,
                "not-a-grid",
                f"{side} indices (sizes {list(layout.sizes)}) neither fill a full grid nor follow the "
                f"sparse-sampling layout; there is no n-d view",
                WARNING,
            )
        )
    if vals.dtype.kind in "iufb" and vals.shape == inds.shape:
        values = vals[()]
        values = values.T if spectroscopic else values
        labels = decode_str_list(inds.attrs["labels"]) if "labels" in inds.attrs else []
        for c in range(table.shape[1]):
            order = np.argsort(table[:, c], kind="stable")
            idx = table[order, c]
            v = values[order, c]
            same = idx[1:] == idx[:-1]
            diff = ~np.isclose(v[1:], v[:-1], rtol=1e-5, atol=0, equal_nan=True)
            if np.any(same & diff):
                name = labels[c] if c < len(labels) else f"column {c}"
                problems.append(
                    Problem(
                        vals.name,
                        "index-value-mismatch",
                        f"dimension {name!r} has entries with equal index but different values",
                        WARNING,
                    )
                )
    return problems


def content_problems(dset: DatasetNode) -> list[Problem]:
    """Checks beyond pyUSID's for a dataset that passed :func:`main_problems`."""
    problems: list[Problem] = []
    all_labels: list[str] = []
    for side, spectroscopic in (("Position", False), ("Spectroscopic", True)):
        inds = dset.file[dset.attrs[f"{side}_Indices"]]
        vals = dset.file[dset.attrs[f"{side}_Values"]]
        problems.extend(_table_problems(dset.name, inds, vals, spectroscopic))
        labels = decode_str_list(inds.attrs["labels"])
        for label in labels:
            if not label:
                problems.append(Problem(inds.name, "empty-label", "a dimension has an empty label", WARNING))
        all_labels.extend(labels)
    dupes = sorted({lab for lab in all_labels if lab and all_labels.count(lab) > 1})
    if dupes:
        problems.append(
            Problem(
                dset.name,
                "duplicate-label",
                f"dimension labels {dupes} appear more than once; selecting by name is ambiguous",
                WARNING,
            )
        )
    return problems
