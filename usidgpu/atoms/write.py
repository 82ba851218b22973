"""Writing a column analysis as ``<Source>-Atomic_Columns_NNN``.

Layout (pycroscopy 0.60 kept atom fits as compound datasets, one row per atom; so here):

- ``Columns``: Main dataset, one row per column (position dimension ``Column``), one
  spectroscopic point, compound dtype with every field of :meth:`ColumnAnalysis.table`
  (positions in pixels of the source image);
- ``Vacancies``: (V, 3) float64 rows (y, x, sublattice);
- ``Lattice_Vectors`` (2, 2), ``Lattice_Origin`` (2,), ``Lattice_Motif`` (M, 2) when a lattice
  was fitted;
- attributes: the parameters, pixel size and units, the sublattice rule, the frame.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..decompose.write import _target, _write
from ..usid.dimension import Dimension


def table_array(table: dict[str, np.ndarray]) -> np.ndarray:
    """A table (name → 1-D column) as a structured array (bool stored as uint8 for HDF5 tools)."""
    fields = []
    for name, col in table.items():
        col = np.asarray(col)
        dtype = np.uint8 if col.dtype == bool else (np.int64 if col.dtype.kind in "iu" else np.float64)
        fields.append((name, dtype))
    out = np.empty(len(next(iter(table.values()))), dtype=fields)
    for name, _ in fields:
        out[name] = table[name]
    return out


def write_columns(result: Any, main: Any = None, output: str | os.PathLike | None = None) -> str:
    """Write a :class:`~usidgpu.atoms.analysis.ColumnAnalysis` next to its source Main dataset.

    Returns
    -------
    str
        HDF5 path of the results group.
    """
    main = _target(result, main)
    if main.n_positions != result.image_shape[0] * result.image_shape[1]:
        raise ValueError(
            f"this analysis is of a {result.image_shape[0]}×{result.image_shape[1]} image but {main.name} "
            f"has {main.n_positions} positions"
        )
    rows = table_array(result.table())

    def fill(writer: Any) -> None:
        writer.write_main(
            "Columns",
            rows.reshape(-1, 1),
            "Atomic column",
            "px",
            [Dimension("Column", "a. u.", len(rows))],
            [Dimension("Fit", "a. u.", 1)],
        )
        vac = result.vacancies
        vac_rows = (
            np.column_stack([vac.positions, vac.sublattice]).astype(np.float64) if vac is not None else np.zeros((0, 3))
        )
        ds = writer.group.create_dataset("Vacancies", data=vac_rows)
        ds.attrs["columns"] = ["y", "x", "sublattice"]
        if result.lattice is not None:
            writer.group.create_dataset("Lattice_Vectors", data=result.lattice.vectors)
            writer.group.create_dataset("Lattice_Origin", data=result.lattice.origin)
            writer.group.create_dataset("Lattice_Motif", data=result.lattice.motif)
        writer.group.attrs["pixel_size"] = np.asarray(result.pixel_size, dtype=np.float64)
        writer.group.attrs["pixel_units"] = result.units
        writer.group.attrs["sublattice_rule"] = result.sublattice_rule
        writer.group.attrs["n_columns"] = len(rows)
        writer.group.attrs["position_order"] = "y, x (row, column) in pixels of the source image"

    return _write(result, main, output, fill)
