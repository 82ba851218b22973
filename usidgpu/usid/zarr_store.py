"""Deprecated: the zarr code moved to :mod:`usidgpu.storage`.

Every public name of this module still works and warns (``DeprecationWarning``):

- the attribute codec (``dtype_to_json``, ``dtype_from_json``, ``decode_attr``, ``REF_PREFIX``,
  ``META``, ``FORMAT``, ``VERSION``) → :mod:`usidgpu.storage.codec`;
- the read-only view (``open_zarr``, ``ZarrFile``, ``ZarrGroup``, ``ZarrDataset``, ``ZarrAttrs``,
  ``ZarrReference``, ``is_zarr_path``, ``READ_ONLY``, ``ZARR_SUFFIX``) →
  :mod:`usidgpu.storage.zarr_view`;
- the converters (``h5_to_zarr``, ``zarr_to_h5``, ``ConvertReport``, ``BLOCK_BYTES``,
  ``AUTO_CHUNK_BYTES``) → :mod:`usidgpu.storage.convert`;
- ``is_dataset``, ``is_group``, ``is_reference`` → :mod:`usidgpu.storage.nodes`;
  ``is_h5_path``, ``H5_SUFFIXES`` → :mod:`usidgpu.storage.h5`.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

_HOMES = {
    "usidgpu.storage.codec": (
        "REF_PREFIX",
        "META",
        "FORMAT",
        "VERSION",
        "dtype_to_json",
        "dtype_from_json",
        "decode_attr",
    ),
    "usidgpu.storage.zarr_view": (
        "READ_ONLY",
        "ZARR_SUFFIX",
        "ZarrAttrs",
        "ZarrDataset",
        "ZarrFile",
        "ZarrGroup",
        "ZarrReference",
        "is_zarr_path",
        "open_zarr",
    ),
    "usidgpu.storage.convert": ("AUTO_CHUNK_BYTES", "BLOCK_BYTES", "ConvertReport", "h5_to_zarr", "zarr_to_h5"),
    "usidgpu.storage.nodes": ("is_dataset", "is_group", "is_reference"),
    "usidgpu.storage.h5": ("H5_SUFFIXES", "is_h5_path"),
}
_HOME = {name: home for home, names in _HOMES.items() for name in names}

__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    # one lookup per old name, warning at the importer's line (PEP 562)
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(f"{__name__}.{name} moved to {_HOME[name]}.{name}", DeprecationWarning, stacklevel=2)
    return getattr(importlib.import_module(_HOME[name]), name)
