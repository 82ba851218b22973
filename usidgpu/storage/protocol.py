"""The node protocol: the part of h5py's object API that the USID model uses.

The USID model (:mod:`usidgpu.usid`) reads files only through these members, so any store whose
objects provide them can be read: h5py's ``File``/``Group``/``Dataset``/``AttributeManager``
satisfy the protocol as they are, and the zarr adapter (:mod:`usidgpu.storage.zarr_view`)
implements it. Writing (creating groups and datasets, setting attributes) is HDF5's, through
h5py, and is not part of the protocol.

Beyond the members listed, two semantics are part of the contract:

* ``bool(node)`` is False once the node's file is closed (h5py's rule); see
  :func:`usidgpu.storage.nodes.is_open`;
* ``group[ref]`` and ``node.file[ref]`` dereference an object reference read from an attribute
  or a dataset (see :func:`usidgpu.storage.nodes.is_reference`).

The classes are :func:`typing.runtime_checkable`, so ``isinstance(obj, DatasetNode)`` checks that
the members exist (not their types); :func:`missing_members` names those that do not. Which
*kind* a node is (group or dataset) is decided by :func:`usidgpu.storage.nodes.is_group` and
:func:`~usidgpu.storage.nodes.is_dataset`, not by these structural checks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = [
    "AttributesNode",
    "ChunkLayout",
    "Compression",
    "DatasetNode",
    "FileNode",
    "GroupNode",
    "Node",
    "missing_members",
    "protocol_members",
]


@runtime_checkable
class AttributesNode(Protocol):
    """The attributes of a node: a read-only mapping of name → value as h5py hands it out
    (``str``, ``numpy.bytes_``, NumPy scalars and arrays, references, ``h5py.Empty``)."""

    def __getitem__(self, name: str) -> Any: ...

    def __contains__(self, name: object) -> bool: ...

    def __iter__(self) -> Iterator[str]: ...

    def __len__(self) -> int: ...

    def get(self, name: str, default: Any = None) -> Any: ...

    def keys(self) -> Any: ...

    def items(self) -> Any: ...


@runtime_checkable
class Node(Protocol):
    """What every group and dataset has: its absolute path, file, parent group, attributes and
    an object reference to itself."""

    @property
    def name(self) -> str | None: ...

    @property
    def file(self) -> FileNode: ...

    @property
    def parent(self) -> GroupNode: ...

    @property
    def attrs(self) -> AttributesNode: ...

    @property
    def ref(self) -> Any: ...


@runtime_checkable
class GroupNode(Node, Protocol):
    """A group: members by relative or absolute path (or by object reference), and traversal in
    name order (``visititems`` calls ``func(relative_name, node)`` until it returns non-None)."""

    def __getitem__(self, key: Any) -> Any: ...

    def __contains__(self, key: object) -> bool: ...

    def __iter__(self) -> Iterator[str]: ...

    def __len__(self) -> int: ...

    def get(self, key: str, default: Any = None) -> Any: ...

    def keys(self) -> Any: ...

    def values(self) -> Any: ...

    def items(self) -> Any: ...

    def visit(self, func: Callable[[str], Any]) -> Any: ...

    def visititems(self, func: Callable[[str, Any], Any]) -> Any: ...


@runtime_checkable
class FileNode(GroupNode, Protocol):
    """The root group of a file: its file name, mode (``"r"`` or ``"r+"``), and closing."""

    @property
    def filename(self) -> str: ...

    @property
    def mode(self) -> str: ...

    def close(self) -> None: ...

    def __enter__(self) -> Any: ...

    def __exit__(self, *exc: Any) -> Any: ...


@runtime_checkable
class ChunkLayout(Protocol):
    """How a dataset is stored: chunk shape (None: contiguous), maximum shape and fill value."""

    @property
    def chunks(self) -> tuple[int, ...] | None: ...

    @property
    def maxshape(self) -> tuple[int | None, ...] | None: ...

    @property
    def fillvalue(self) -> Any: ...


@runtime_checkable
class Compression(Protocol):
    """A dataset's compression (name or None, and its options) and the shuffle/checksum filters."""

    @property
    def compression(self) -> str | None: ...

    @property
    def compression_opts(self) -> Any: ...

    @property
    def shuffle(self) -> bool: ...

    @property
    def fletcher32(self) -> bool: ...


@runtime_checkable
class DatasetNode(Node, ChunkLayout, Compression, Protocol):
    """A dataset: shape (None for a null dataspace), dtype, h5py-style indexing (``ds[()]``,
    slices, lists of indices), ``read_direct`` into a NumPy array, and string decoding."""

    @property
    def shape(self) -> tuple[int, ...] | None: ...

    @property
    def dtype(self) -> np.dtype: ...

    @property
    def ndim(self) -> int: ...

    @property
    def size(self) -> int: ...

    @property
    def nbytes(self) -> int: ...

    def __getitem__(self, key: Any) -> Any: ...

    def __len__(self) -> int: ...

    def __array__(self, dtype: Any = None) -> np.ndarray: ...

    def read_direct(self, dest: np.ndarray, source_sel: Any = None, dest_sel: Any = None) -> None: ...

    def asstr(self, encoding: str = "utf-8", errors: str = "strict") -> Any: ...


#: dunder methods that are members of the protocols (every other name starting with "_" is the
#: Protocol machinery's)
_DUNDERS = frozenset({"__getitem__", "__contains__", "__iter__", "__len__", "__array__", "__enter__", "__exit__"})


def protocol_members(protocol: type) -> list[str]:
    """The member names of one of the protocol classes above, its bases' included, sorted."""
    names: set[str] = set()
    for cls in protocol.__mro__:
        if cls is Protocol or Protocol not in cls.__mro__ or cls is object:
            continue
        for name in vars(cls):
            if name in _DUNDERS or not name.startswith("_"):
                names.add(name)
    return sorted(names)


def missing_members(obj: Any, protocol: type) -> list[str]:
    """The members of ``protocol`` that ``obj`` lacks (empty: it conforms structurally).

    Properties are read, so ``obj`` must belong to an open file.
    """
    return [name for name in protocol_members(protocol) if not hasattr(obj, name)]
