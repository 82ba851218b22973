"""What the service says about one Main dataset: kind, dims in pyUSID order, units, results."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..bayes.process import FREQUENCY_ATTRS
from ..remote.wire import dtype_descr

#: Coordinate values are listed in a description only up to this many per dimension (a client
#: asks for larger ones through the data endpoint of the ancillary's dimension).
MAX_LISTED_VALUES = 65536

#: Spectroscopic dimension names that mean "one image after another" rather than a spectrum.
FRAME_NAMES = frozenset({"frame", "frames", "time", "t", "z", "slice", "cycle", "image"})


def kind_of(pos_sizes: list[int], spec: list[tuple[str, int]], grid: bool, gmode: bool = False) -> str:
    """A scientist's name for the shape of a dataset.

    Parameters
    ----------
    pos_sizes : list of int
        Sizes of the position dimensions.
    spec : list of (name, size)
        The spectroscopic dimensions.
    grid : bool
        Whether positions and spectroscopic values fill full grids.
    gmode : bool
        The file names an excitation frequency (G-mode: current over one bias period per position).

    Returns
    -------
    str
        ``image``, ``image stack``, ``spectrum image``, ``spectra``, ``spectrum``, ``G-mode``,
        ``n-d`` or ``sparse``.
    """
    if not grid:
        return "sparse"
    real_pos = [s for s in pos_sizes if s > 1]
    real_spec = [(n, s) for n, s in spec if s > 1]
    if gmode and len(real_spec) == 1 and real_pos:
        return "G-mode"
    if len(real_pos) == 2 and not real_spec:
        return "image"
    if len(real_pos) == 2 and len(real_spec) == 1:
        return "image stack" if real_spec[0][0].strip().lower() in FRAME_NAMES else "spectrum image"
    if len(real_pos) == 1 and len(real_spec) == 1:
        return "spectra"
    if not real_pos and len(real_spec) == 1:
        return "spectrum"
    if len(real_spec) == 2 and not real_pos:
        return "image"  # one position, an image in the spectroscopic dimensions (e.g. a diffraction pattern)
    return "n-d"


def _values(values: np.ndarray) -> list[Any] | None:
    values = np.asarray(values)
    if values.size > MAX_LISTED_VALUES:
        return None
    if np.issubdtype(values.dtype, np.complexfloating):
        return [[float(v.real), float(v.imag)] for v in values]
    if np.issubdtype(values.dtype, np.number):
        return [v if np.isfinite(v) else None for v in values.astype(np.float64).tolist()]
    return [str(v) for v in values]


def dim_entry(dim: Any, role: str) -> dict[str, Any]:
    """One dimension: name, units, size, role (``position`` | ``spectroscopic``) and its values."""
    return {"name": dim.name, "units": dim.units, "size": int(dim.size), "role": role, "values": _values(dim.values)}


def describe(main: Any, results: list[Any]) -> dict[str, Any]:
    """The description of a Main dataset served by ``GET /api/v1/datasets/{id}``.

    Parameters
    ----------
    main : MainDataset
    results : list of ResultsGroup
        Its results groups (``USIDFile.results_groups(main)``).
    """
    dims = [dim_entry(d, "position") for d in main.pos_dims] + [dim_entry(d, "spectroscopic") for d in main.spec_dims]
    grid = bool(main.is_grid)
    instrument = instrument_metadata(main)
    gmode = any(k in instrument for k in FREQUENCY_ATTRS)
    return {
        "path": main.name,
        "name": main.name.rsplit("/", 1)[-1],
        "result_of": results_group_of(main.name),
        "kind": kind_of([d.size for d in main.pos_dims], [(d.name, d.size) for d in main.spec_dims], grid, gmode),
        "quantity": main.quantity,
        "units": main.units,
        "dtype": str(main.dtype),
        "dtype_descr": dtype_descr(main.dtype),
        "shape": [int(s) for s in main.shape],
        "nd_shape": [int(s) for s in main.nd_shape] if grid else None,
        "grid_sides": {"position": bool(main.pos_layout.is_grid), "spectroscopic": bool(main.spec_layout.is_grid)},
        "nbytes": int(main.nbytes),
        "dims": dims,
        "instrument": instrument,
        "results": [result_entry(main.h5.file, r) for r in results],
    }


#: Attributes of a results group not shown to clients: where the source file lies on the server
#: and which machine ran it (datasets are addressed by catalog ids, never by paths), references.
PRIVATE_ATTRS = frozenset({"source_file", "machine_id", "platform"})

#: A results group's own arrays (its Main datasets have catalog ids) offered whole up to this size.
MAX_RESULT_ARRAY_BYTES = 64 << 20


def result_entry(h5file: Any, r: Any) -> dict[str, Any]:
    """One results group as a description lists it: tool, state, its parameters (attributes), and
    its arrays that are no Main dataset — singular values, an error curve, vacancies, a lattice —
    which ``GET /api/v1/datasets/{id}/results/{n}/arrays/{name}`` serves."""
    attributes = {k: _plain(v) for k, v in r.attrs.items()
                  if k not in PRIVATE_ATTRS and not k.startswith("source_") and not _is_reference(v)}  # fmt: skip
    return {
        "path": r.path,
        "tool": r.tool,
        "index": r.index,
        "complete": bool(r.complete),
        "attributes": attributes,
        "arrays": plain_arrays(h5file[r.path]),
    }


def plain_arrays(group: Any) -> list[dict[str, Any]]:
    """The datasets directly in ``group`` that are neither Main, nor ancillary to a Main dataset,
    nor usidgpu's book-keeping (``completed_positions``), with their shapes and dtypes."""
    import h5py

    from ..usid.rules import ANCILLARY_REFS, is_candidate

    members = {name: obj for name, obj in group.items() if isinstance(obj, h5py.Dataset)}
    ancillary = set()
    for obj in members.values():
        if is_candidate(obj):
            ancillary.add(obj.id)
            for ref_name in ANCILLARY_REFS:
                ref = obj.attrs.get(ref_name)
                if isinstance(ref, h5py.Reference) and ref:
                    ancillary.add(group.file[ref].id)
    served = []
    for name, obj in members.items():
        numbers = obj.dtype.kind in "biufc" or obj.dtype.names is not None  # no strings, no opaque bytes
        if obj.id in ancillary or name == "completed_positions" or not numbers:
            continue
        nbytes = int(obj.size * obj.dtype.itemsize)
        entry = {"name": name, "shape": [int(n) for n in obj.shape], "dtype": str(obj.dtype),
                 "dtype_descr": dtype_descr(obj.dtype), "nbytes": nbytes,
                 "served": nbytes <= MAX_RESULT_ARRAY_BYTES}  # fmt: skip
        # what the last axis holds, where the writer said (usidgpu's "columns" attribute)
        if "columns" in obj.attrs and obj.ndim:
            labels = [v.decode(errors="replace") if isinstance(v, bytes) else str(v)
                      for v in np.asarray(obj.attrs["columns"]).ravel()]  # fmt: skip
            if len(labels) == obj.shape[-1]:
                entry["columns"] = labels
        for key in ("summary", "meaning"):
            if key in obj.attrs:
                entry[key] = _plain(obj.attrs[key])
        served.append(entry)
    return served


def _is_reference(value: Any) -> bool:
    import h5py

    return isinstance(value, (h5py.Reference, h5py.RegionReference))


#: Attributes of a Main dataset or its parents worth showing and searching (pyUSID and the
#: pycroscopy translators write these names).
INSTRUMENT_KEYS = frozenset(
    {"instrument", "data_type", "experiment_date", "experiment_unix_time", "translator", "microscope", "modality",
     *FREQUENCY_ATTRS}
)  # fmt: skip


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist() if value.size <= 64 else f"array {value.shape}"
    return value if isinstance(value, (str, int, float, bool)) or value is None else str(value)


def instrument_metadata(main: Any) -> dict[str, Any]:
    """The :data:`INSTRUMENT_KEYS` attributes of a Main dataset and of the groups above it (the
    nearest wins): pycroscopy's translators write them on the measurement group or the root."""
    from ..usid.attrs import read_attrs

    found: dict[str, Any] = {}
    node = main.h5
    while True:
        for key, value in read_attrs(node).items():
            if key in INSTRUMENT_KEYS and key not in found:
                found[key] = _plain(value)
        if node.name == "/":
            return found
        node = node.parent


def results_group_of(h5_path: str) -> str | None:
    """The results group (``<Source>-<Tool>_NNN``) a dataset lies in, or None for source data."""
    from ..usid.file import RESULTS_NAME

    parts = h5_path.strip("/").split("/")[:-1]
    for i in range(len(parts), 0, -1):
        if RESULTS_NAME.match(parts[i - 1]):
            return "/" + "/".join(parts[:i])
    return None
