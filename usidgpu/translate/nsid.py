"""NSID HDF5 (pyNSID / sidpy) → USID, through SciFiReaders' NSIDReader.

Why SciFiReaders: its NSIDReader is pycroscopy's reference reader of NSID files and returns
sidpy Datasets with the dimension scales (name, quantity, units, dimension type, values) and the
``metadata`` / ``original_metadata`` groups; pyNSID 0.0.7 itself no longer ships a reader. The
data are then copied block by block from the HDF5 dataset itself (in the file's dtype; sidpy
casts to float64).

Axis roles: SPATIAL/RECIPROCAL dimensions are positions, SPECTRAL/TEMPORAL/other ones are
spectroscopic, in the order of the array (NSID has no fixed x/y order, so none is imposed).
Quirk handled: files translated from Igor copy the data units of a phase channel onto its x/y
scales (``deg``); a spatial dimension whose units equal the data units and are not a length gets
the units of the same-named spatial dimension of another dataset in the file (noted in the
channel's ``units_fixed`` attribute).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import FileProblem
from ..usid.dimension import Dimension
from ._common import Channel, clean_label, row_blocks

LENGTH_UNITS = {"m", "mm", "um", "µm", "nm", "pm", "a", "å", "px", "pixel", "pixels", "1/m", "1/nm", "1/a", "1/å"}
POSITION_TYPES = {"SPATIAL", "RECIPROCAL"}


def _kind(dim: Any) -> str:
    t = getattr(dim, "dimension_type", None)
    return getattr(t, "name", str(t)).upper()


def nsid_axes(ds: Any) -> tuple[list[int], list[int]]:
    """(position axes, spectroscopic axes) of a sidpy Dataset."""
    pos = [i for i in range(ds.ndim) if _kind(ds._axes[i]) in POSITION_TYPES]
    return pos, [i for i in range(ds.ndim) if i not in pos]


def read_nsid(path: Path, **_: Any) -> tuple[list[Channel], dict, dict]:
    """The channels of an NSID file (its datasets), read through SciFiReaders from a private copy."""
    private = tempfile.mkdtemp(prefix="usidgpu-nsid-")
    try:
        return _read_nsid(path, private)
    finally:
        shutil.rmtree(private, ignore_errors=True)


def _read_nsid(path: Path, private: str) -> tuple[list[Channel], dict, dict]:
    import warnings

    import h5py

    try:
        with h5py.File(path, "r") as f:
            if _is_usid(f):
                raise FileProblem(f"{path}: this file is already USID; open it with usidgpu.open")
        import SciFiReaders
        from SciFiReaders import NSIDReader

        # NSIDReader opens its file for writing ('r+'): the input's superblock would change, and a
        # read-only input could not be read at all. It reads a private copy instead (the data
        # blocks below come from the input itself, opened read-only).
        copy = Path(private) / "input.h5"
        shutil.copyfile(path, copy)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reader = NSIDReader(str(copy))
            found = reader.read()
    except FileProblem:
        raise
    except ImportError:
        raise
    except OSError as exc:  # the input itself cannot be read or copied
        raise FileProblem(f"{path}: cannot read this file ({exc.strerror or exc})") from None
    except Exception as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise FileProblem(f"{path}: not a readable NSID HDF5 file ({text})") from None
    datasets = list(found.values()) if isinstance(found, dict) else list(found or [])
    if not datasets:
        raise FileProblem(f"{path}: no NSID dataset found (neither NSID nor USID)")
    # units of spatial dims by name, from the datasets whose spatial units look like lengths
    spatial_units: dict[str, str] = {}
    for ds in datasets:
        for i in range(ds.ndim):
            d = ds._axes[i]
            if _kind(d) in POSITION_TYPES and str(d.units).strip().lower() in LENGTH_UNITS:
                spatial_units.setdefault(d.name, str(d.units).strip())
    channels = []
    for ds in datasets:
        h5_path = ds.h5_dataset.name
        pos_axes, spec_axes = nsid_axes(ds)
        fixed = []

        def dim(i: int, ds: Any = ds, fixed: list = fixed) -> Dimension:
            d = ds._axes[i]
            units = clean_label(d.units)
            if (
                _kind(d) in POSITION_TYPES
                and units == clean_label(ds.units)
                and units.lower() not in LENGTH_UNITS
                and d.name in spatial_units
            ):
                fixed.append(f"{d.name}: {units!r} -> {spatial_units[d.name]!r}")
                units = spatial_units[d.name]
            return Dimension(clean_label(d.name) or f"Dim_{i}", units, np.asarray(d.values, dtype=np.float64))

        pos_dims = [dim(i) for i in pos_axes] or [Dimension("Position", "", 1)]
        spec_dims = [dim(i) for i in spec_axes] or [Dimension("Frame", "", 1)]
        meta = {
            "title": str(ds.title),
            "data_type": getattr(ds.data_type, "name", str(ds.data_type)),
            "modality": str(ds.modality),
            "source": str(ds.source),
            "nsid_path": h5_path,
            "dimensions": {
                clean_label(ds._axes[i].name) or f"Dim_{i}": {
                    "quantity": str(ds._axes[i].quantity),
                    "dimension_type": _kind(ds._axes[i]),
                }
                for i in range(ds.ndim)
            },
            "metadata": dict(ds.metadata),
            "original_metadata": dict(ds.original_metadata),
        }
        attrs = {"title": str(ds.title), "nsid_path": h5_path}
        if fixed:
            attrs["units_fixed"] = "; ".join(fixed)

        def blocks(h5_path=h5_path, pa=pos_axes, sa=spec_axes):
            with h5py.File(path, "r") as f:
                yield from row_blocks(f[h5_path], pa, sa)()

        channels.append(
            Channel(
                clean_label(ds.title) or h5_path,
                clean_label(ds.quantity) or "Intensity",
                clean_label(ds.units),
                pos_dims,
                spec_dims,
                np.dtype(ds.h5_dataset.dtype),
                blocks,
                meta,
                attrs,
            )
        )
    try:
        reader.close()
    except Exception:
        pass
    info = {"format": "NSID HDF5", "reader": "SciFiReaders", "reader_version": SciFiReaders.__version__}
    return channels, info, {}


def _is_usid(f: Any) -> bool:
    found = []

    def visit(name: str, obj: Any) -> None:
        if hasattr(obj, "attrs") and "Position_Indices" in obj.attrs and "Spectroscopic_Values" in obj.attrs:
            found.append(name)

    f.visititems(visit)
    return bool(found)
