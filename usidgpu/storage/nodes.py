"""Questions about nodes that the USID model asks without knowing the store behind them.

A node is a group or dataset of the node protocol (:mod:`usidgpu.storage.protocol`). Which kind
it is, whether an attribute value is an object reference, whether its file is still open or can
be written: the model asks these helpers, never ``isinstance(obj, h5py.Dataset)`` or "is this
zarr?". h5py's classes are known here; an adapter registers its own classes with
:func:`register_node_types` when it is imported (an adapter's nodes exist only after that).
"""

from __future__ import annotations

from typing import Any

import h5py

from . import h5
from .protocol import DatasetNode

_GROUPS: tuple[type, ...] = (h5py.Group,)
_DATASETS: tuple[type, ...] = (h5py.Dataset,)
_REFERENCES: tuple[type, ...] = (h5py.Reference,)


def register_node_types(group: type | None = None, dataset: type | None = None, reference: type | None = None) -> None:
    """Make an adapter's classes count as groups, datasets and object references.

    Parameters
    ----------
    group, dataset, reference : type, optional
        Classes whose instances :func:`is_group`, :func:`is_dataset` and :func:`is_reference`
        accept from now on (files are groups).
    """
    global _GROUPS, _DATASETS, _REFERENCES
    if group is not None and group not in _GROUPS:
        _GROUPS = (*_GROUPS, group)
    if dataset is not None and dataset not in _DATASETS:
        _DATASETS = (*_DATASETS, dataset)
    if reference is not None and reference not in _REFERENCES:
        _REFERENCES = (*_REFERENCES, reference)


def is_group(obj: Any) -> bool:
    """True for a group (files included) of any store."""
    return isinstance(obj, _GROUPS)


def is_dataset(obj: Any) -> bool:
    """True for a dataset of any store."""
    return isinstance(obj, _DATASETS)


def is_reference(obj: Any) -> bool:
    """True for an object reference of any store (null references included; test with ``bool``)."""
    return isinstance(obj, _REFERENCES)


def holds_references(value: Any) -> bool:
    """True for an attribute value that is an object reference or an array that may hold them
    (object arrays: references, or variable-length strings)."""
    return is_reference(value) or getattr(getattr(value, "dtype", None), "kind", "") == "O"


def is_open(node: Any) -> bool:
    """True while the file of ``node`` is open (h5py's rule: a node of a closed file is false)."""
    return bool(node)


def read_only_reason(node: Any) -> str | None:
    """Why nothing can be created under ``node`` (a sentence naming its file), or None when its
    file is open for writing."""
    f = node.file
    if f.mode == "r+":
        return None
    reason = getattr(f, "read_only_reason", None)  # stores that can never be written say why
    if reason:
        return f"{f.filename}: {reason}"
    return f"{f.filename} is open read-only; open it with mode='r+' or 'a' to write"


def filter_count(dset: DatasetNode) -> int:
    """Number of filters (compression, shuffle, checksums, ...) a dataset's data pass through."""
    if isinstance(dset, h5py.Dataset):
        return h5.filter_count(dset)
    return len(getattr(dset, "filters", ()) or ())


def require_filters(dset: DatasetNode) -> None:
    """Raise, naming the filter and what to install, when a dataset's compression filter is missing.

    HDF5 datasets only (a zarr store's codecs are checked by zarr when it opens them); see
    :func:`usidgpu.storage.h5.require_filters`.
    """
    if isinstance(dset, h5py.Dataset):
        h5.require_filters(dset)


def attr_too_large(node: Any, name: str) -> int | None:
    """The bytes attribute ``name`` declares when that is more than any sane attribute holds
    (:data:`usidgpu.storage.h5.MAX_ATTRIBUTE_BYTES`: a damaged header), else None.

    Asked of HDF5 attributes from their header alone; attributes of other stores are JSON, read
    whole already, and never too large to look at.
    """
    if not isinstance(node, (h5py.Group, h5py.Dataset)):
        return None
    declared = h5.attr_nbytes(node, name)
    return declared if declared > h5.MAX_ATTRIBUTE_BYTES else None


def copy_dataset(src: DatasetNode, group: h5py.Group, name: str) -> h5py.Dataset:
    """Copy a (small) dataset of any store into the HDF5 ``group`` as ``name``.

    Between HDF5 files HDF5's own copy is used (storage and attributes as they are). From other
    stores the values and attributes are copied, except attributes holding references: they
    point into the source store. Meant for ancillary tables, which are small.
    """
    if isinstance(src, h5py.Dataset):
        src.file.copy(src, group, name=name)
        return group[name]
    new = group.create_dataset(name, data=src[()])
    for key, value in src.attrs.items():
        if not holds_references(value):
            new.attrs[key] = value
    return new


__all__ = [
    "attr_too_large",
    "copy_dataset",
    "filter_count",
    "holds_references",
    "is_dataset",
    "is_group",
    "is_open",
    "is_reference",
    "read_only_reason",
    "register_node_types",
    "require_filters",
]
