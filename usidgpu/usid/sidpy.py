"""sidpy Datasets from Main datasets, and NSID files (pyNSID) from USID ones.

The modern pycroscopy stack (sidpy, pyNSID, pycroscopy ≥ 0.63) works on ``sidpy.Dataset``: an
n-d dask array whose every axis is a ``sidpy.Dimension`` with values, units and a type. Here the
axes are USID's dimensions sorted slowest-varying first, typed from their units and names:

- SPATIAL: a position dimension in units of length (m … pm, Å, px) or named like a scan axis
  (x, y, z, row, column);
- TEMPORAL: a dimension in units of time, or named frame/time/cycle;
- SPECTRAL: the other spectroscopic dimensions (bias, energy, frequency …);
- UNKNOWN: the other position dimensions (a cluster, a component).

An image (two positions, every spectroscopic dimension of size 1) is an ``IMAGE`` of its two
positions. The data type follows from the typed axes (SPECTRUM, IMAGE, IMAGE_STACK,
SPECTRAL_IMAGE, IMAGE_4D …). Quantity and units, the instrument attributes and where the data
came from go to the Dataset's attributes and ``metadata``.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core.errors import InvalidInput, MissingDependency, NotAGridError
from .dimension import Dimension
from .interop import slowest_first

if TYPE_CHECKING:
    from .dataset import MainDataset

LENGTH_UNITS = frozenset({"m", "cm", "mm", "um", "µm", "μm", "nm", "a", "å", "pm", "px", "pixel", "pixels"})
TIME_UNITS = frozenset({"s", "ms", "us", "µs", "μs", "ns", "ps", "min", "h"})
SCAN_NAMES = frozenset({"x", "y", "z", "row", "rows", "col", "column", "columns"})
TIME_NAMES = frozenset({"frame", "frames", "time", "t", "cycle", "cycles", "repeat", "repeats"})


def _sidpy() -> Any:
    try:
        import sidpy
    except ImportError:
        raise MissingDependency("to_sidpy needs sidpy: pip install sidpy") from None
    return sidpy


def dimension_type(dim: Dimension, position: bool) -> str:
    """The sidpy dimension type (``"SPATIAL"``, ``"SPECTRAL"``, ``"TEMPORAL"``, ``"UNKNOWN"``) of a
    USID dimension, from its units and name (see the module's docstring)."""
    units, name = (dim.units or "").strip().lower(), dim.name.strip().lower()
    if units in TIME_UNITS or name in TIME_NAMES:
        return "TEMPORAL"
    if position:
        return "SPATIAL" if units in LENGTH_UNITS or name in SCAN_NAMES else "UNKNOWN"
    return "SPECTRAL"


def data_type(types: list[str]) -> str:
    """The sidpy data type of a dataset whose axes have these dimension types."""
    spatial, spectral, temporal = (types.count(t) for t in ("SPATIAL", "SPECTRAL", "TEMPORAL"))
    if spatial == 2 and len(types) == 2:
        return "IMAGE"
    if spatial == 2 and spectral == 1 and len(types) == 3:
        return "SPECTRAL_IMAGE"
    if spatial == 2 and temporal == 1 and len(types) == 3:
        return "IMAGE_STACK"
    if spatial == 2 and len(types) == 4:
        return "IMAGE_4D"
    if len(types) == 1:
        return "SPECTRUM" if spectral else "LINE_PLOT"
    if len(types) == 2 and spectral == 1:
        return "LINE_PLOT_FAMILY"
    return "UNKNOWN"


def to_sidpy(main: MainDataset, lazy: bool = True) -> Any:
    """The Main dataset as a ``sidpy.Dataset`` (dask-backed; ``lazy=False`` reads it now).

    Raises
    ------
    NotAGridError
        Positions or spectroscopic points that fill no grid (a sidpy Dataset is an n-d array).
    InvalidInput
        Compound data (a sidpy Dataset holds numbers).
    """
    sidpy = _sidpy()
    import dask.array as da

    if not main.is_grid:
        raise NotAGridError(
            f"{main.name}: its positions or spectroscopic points do not fill a grid; a sidpy Dataset is an "
            "n-d array: select a part that does (sel) and build it from that"
        )
    if main.dtype.names:
        raise InvalidInput(f"{main.name}: compound data ({main.dtype}); sidpy holds numbers: convert one field")
    data, pos, spec = slowest_first(main, lazy)
    data = data if lazy else da.from_array(data)
    n_pos = len(pos)
    if len(pos) == 2 and all(d.size == 1 for d in spec):  # an image: its two positions
        data, dims = data.reshape(data.shape[:2]), [(d, True) for d in pos]
    else:
        keep = [i for i, d in enumerate(pos) if d.size > 1]  # a position dimension of size 1: no axis
        data = data.reshape(tuple(pos[i].size for i in keep) + data.shape[n_pos:])
        dims = [(pos[i], True) for i in keep] + [(d, False) for d in spec]
    types = [dimension_type(d, position) for d, position in dims]
    dataset = sidpy.Dataset.from_array(data, title=main.name.rsplit("/", 1)[-1])
    dataset.quantity, dataset.units = main.quantity, main.units
    dataset.data_type = data_type(types)
    for axis, ((d, _position), kind) in enumerate(zip(dims, types)):
        values = np.asarray(d.values, dtype=np.float64)
        dataset.set_dimension(
            axis,
            sidpy.Dimension(values, name=d.name, quantity=d.name, units=d.units or "", dimension_type=kind),
        )
    dataset.metadata = {"usid": {"file": os.path.basename(main.filename), "dataset": main.name,
                                 "quantity": main.quantity, "units": main.units}}  # fmt: skip
    dataset.original_metadata = _plain_attrs(main)
    return dataset


def _plain_attrs(main: MainDataset) -> dict[str, Any]:
    """The Main dataset's attributes that are plain values (no references), JSON-able."""
    from .attrs import read_attrs

    plain: dict[str, Any] = {}
    for key, value in read_attrs(main.h5).items():
        if isinstance(value, (bytes, str, int, float, bool, np.generic)):
            plain[key] = value.decode(errors="replace") if isinstance(value, bytes) else np.asarray(value).item()
        elif isinstance(value, (list, np.ndarray)) and np.asarray(value).dtype.kind in "biufU":
            plain[key] = np.asarray(value).tolist()
    return plain


def write_nsid(main: MainDataset, group: Any, name: str | None = None) -> Any:
    """Write the Main dataset in NSID (pyNSID's format) into ``group``; returns the HDF5 dataset.

    Raises
    ------
    MissingDependency
        pyNSID is not installed.
    """
    try:
        from pyNSID.io.hdf_io import write_nsid_dataset
    except ImportError:
        raise MissingDependency("NSID export needs pyNSID: pip install pyNSID") from None
    import warnings

    dataset = to_sidpy(main)
    with warnings.catch_warnings():  # pyNSID warns about its own future API on every write
        warnings.simplefilter("ignore")
        return write_nsid_dataset(dataset, group, main_data_name=(name or dataset.title).replace("-", "_"))


def usid_to_nsid(src: str | os.PathLike, dst: str | os.PathLike) -> list[str]:
    """Write every Main dataset of the USID file ``src`` that is a grid of numbers as NSID into the
    new HDF5 file ``dst``, each in the group of the same path; returns one line per dataset
    (written, or why not). ``dst`` appears only when complete.

    Raises
    ------
    MissingDependency
        sidpy or pyNSID is not installed.
    """
    import h5py

    from ..storage.staging import Staging
    from .file import USIDFile

    lines = []
    with USIDFile(src) as f, Staging(dst, "convert --to nsid") as stage:
        with h5py.File(stage.path, "w") as out:
            for main in f.main_datasets():
                if not main.is_grid or main.dtype.names:
                    why = "compound data" if main.dtype.names else "not a full grid"
                    lines.append(f"  skipped {main.name}: {why} (NSID holds n-d arrays of numbers)")
                    continue
                parent, name = main.name.rsplit("/", 1)
                written = write_nsid(main, out.require_group(parent or "/"), name)
                lines.append(f"  {main.name} -> {written.name} ({to_sidpy(main).data_type.name})")
        stage.publish()
    return lines


__all__ = ["data_type", "dimension_type", "to_sidpy", "usid_to_nsid", "write_nsid"]
