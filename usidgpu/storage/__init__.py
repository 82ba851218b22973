"""Storage: the files USID data live in, behind one interface (above :mod:`usidgpu.core`, below
:mod:`usidgpu.usid`).

The USID model reads groups, datasets and attributes through the node protocol, a subset of
h5py's object API that h5py's objects satisfy as they are and the zarr view implements, and asks
the helpers here what kind a node is; it never asks which store a file is in.

- :mod:`~usidgpu.storage.protocol` — the node protocol (``GroupNode``, ``DatasetNode``,
  ``AttributesNode``, ``FileNode``, ``ChunkLayout``, ``Compression``);
- :mod:`~usidgpu.storage.nodes` — questions about nodes: ``is_group``, ``is_dataset``,
  ``is_reference``, ``is_open``, ``read_only_reason``, ``filter_count``, ``copy_dataset``;
- :mod:`~usidgpu.storage.files` — ``open_file``: an HDF5 file or a zarr store by its path;
- :mod:`~usidgpu.storage.h5` — HDF5 through h5py: ``open_h5`` and the questions that need h5py's
  low-level API (``close_handles``, ``filter_available``, ``filter_count``, ``attr_type``);
- :mod:`~usidgpu.storage.codec` — HDF5 attribute values as plain JSON and back;
- :mod:`~usidgpu.storage.zarr_view` — a zarr store as read-only nodes (``open_zarr``);
- :mod:`~usidgpu.storage.convert` — ``h5_to_zarr`` and ``zarr_to_h5``;
- :mod:`~usidgpu.storage.sidecar` — the crash-safe block store of block-wise runs;
- :mod:`~usidgpu.storage.locks` — run locks (one process computes into a store at a time).

Importing this package imports neither zarr nor dask; they are imported when a store is used.
"""

from .convert import ConvertReport, h5_to_zarr, zarr_to_h5
from .files import open_file
from .h5 import is_h5_path, open_h5
from .nodes import (
    copy_dataset,
    filter_count,
    holds_references,
    is_dataset,
    is_group,
    is_open,
    is_reference,
    read_only_reason,
    register_node_types,
)
from .protocol import AttributesNode, ChunkLayout, Compression, DatasetNode, FileNode, GroupNode, Node
from .zarr_view import READ_ONLY, is_zarr_path, open_zarr

__all__ = [
    "READ_ONLY",
    "AttributesNode",
    "ChunkLayout",
    "Compression",
    "ConvertReport",
    "DatasetNode",
    "FileNode",
    "GroupNode",
    "Node",
    "copy_dataset",
    "filter_count",
    "h5_to_zarr",
    "holds_references",
    "is_dataset",
    "is_group",
    "is_h5_path",
    "is_open",
    "is_reference",
    "is_zarr_path",
    "open_file",
    "open_h5",
    "open_zarr",
    "read_only_reason",
    "register_node_types",
    "zarr_to_h5",
]
