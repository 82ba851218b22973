"""Writing a column analysis as ``<Source>-Atomic_Columns_NNN``.

Layout (pycroscopy 0.60 kept atom fits as compound datasets, one row per atom; so here):

- ``Columns``: Main dataset, one row per column (position dimension ``Column``), one
  spectroscopic point, compound dtype with every field of :meth:`ColumnAnalysis.table`
  (positions in pixels of the source image);
- ``Vacancies``: (V, 5) float64 rows (frame, y, x, sublattice, evidence) — evidence: what the
  image shows at the site over the local column amplitude (NaN: not measured);
- ``Unconfirmed_Vacancies``: (K, 3) rows (frame, y, x): sites without a fitted column where the
  image shows a column, so no vacancy;
- ``Scan_Distortion`` (frames, P, 8) when the scan's distortion was fitted: per frame, one row
  per pixel index with the columns of :meth:`~usidgpu.atoms.scan_distortion.ScanDistortion.table`
  (the fast- and slow-scan spacing profiles with their errors, offsets, line shift; NaN for a
  frame without a fit), and its one-line summary per frame as an attribute;
- ``Strain`` (N, 4) per row of ``Columns``: exx, eyy, exy, rotation (rad) relative to the lattice
  (:meth:`ColumnAnalysis.strain`) when a lattice was fitted;
- ``Lattice_Vectors`` (frames, 2, 2), ``Lattice_Origin`` (frames, 2), ``Lattice_Motif`` (M, 2)
  when a lattice was fitted;
- for a stack (:class:`~usidgpu.atoms.analysis.StackAnalysis`): every frame's columns in
  ``Columns`` with ``frame`` and ``track_id`` fields, and ``Drift`` (frames, 2);
- attributes: the parameters, pixel size and units, the sublattice rule, the frame.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..core.errors import InvalidInput
from ..usid.dimension import Dimension
from ..usid.results import result_bytes, result_source, write_result


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


def column_strain(analyses: list[Any]) -> tuple[np.ndarray | None, str]:
    """Per column of every analysis (in the rows of ``Columns``): exx, eyy, exy, rotation
    (:meth:`ColumnAnalysis.strain`; NaN for a frame without a lattice), and what it is relative
    to; None when no frame has a lattice."""
    parts, reference = [], ""
    for a in analyses:
        n = a.n_columns
        try:
            found = a.strain() if a.lattice is not None and n >= 3 else None
        except (InvalidInput, ValueError, np.linalg.LinAlgError):  # too few columns to fit
            found = None
        parts.append(found.columns if found is not None else np.full((n, 4), np.nan))
        reference = reference or (found.reference if found is not None else "")
    if not reference:
        return None, ""
    return np.concatenate(parts).astype(np.float64), reference


def write_columns(result: Any, main: Any = None, output: str | os.PathLike | None = None) -> str:
    """Write a :class:`~usidgpu.atoms.analysis.ColumnAnalysis` next to its source Main dataset.

    Returns
    -------
    str
        HDF5 path of the results group.
    """
    main = result_source(result, main)
    h, w = result.image_shape
    n_frames = getattr(result, "n_frames", None)
    if main.n_positions != h * w or (n_frames is not None and main.n_spectral != n_frames):
        what = f"{n_frames} frames of " if n_frames is not None else ""
        raise InvalidInput(
            f"this analysis is of {what}a {h}×{w} image but {main.name} has {main.n_positions} positions "
            f"and {main.n_spectral} spectroscopic point(s)"
        )
    rows = table_array(result.table())
    stack = n_frames is not None
    last = result.frames[-1] if stack else result

    def fill(writer: Any) -> None:
        writer.write_main(
            "Columns",
            rows.reshape(-1, 1),
            "Atomic column",
            "px",
            [Dimension("Column", "a. u.", len(rows))],
            [Dimension("Fit", "a. u.", 1)],
        )
        analyses = result.frames if stack else [result]
        per_frame = [
            np.column_stack(
                [
                    np.full(len(a.vacancies), a.frame),
                    a.vacancies.positions,
                    a.vacancies.sublattice,
                    a.vacancies.evidence if a.vacancies.evidence is not None else np.full(len(a.vacancies), np.nan),
                ]
            )
            for a in analyses
            if a.vacancies is not None and len(a.vacancies)
        ]
        vac_rows = np.concatenate(per_frame).astype(np.float64) if per_frame else np.zeros((0, 5))
        ds = writer.group.create_dataset("Vacancies", data=vac_rows)
        ds.attrs["columns"] = ["frame", "y", "x", "sublattice", "evidence"]
        seen = [
            np.column_stack([np.full(len(a.vacancies.unconfirmed), a.frame), a.vacancies.unconfirmed])
            for a in analyses
            if a.vacancies is not None and len(a.vacancies.unconfirmed)
        ]
        ds = writer.group.create_dataset(
            "Unconfirmed_Vacancies", data=np.concatenate(seen).astype(np.float64) if seen else np.zeros((0, 3))
        )
        ds.attrs["columns"] = ["frame", "y", "x"]
        ds.attrs["meaning"] = "lattice sites without a fitted column where the image shows a column: not vacancies"
        distortions = [getattr(a, "distortion", None) for a in analyses]
        if any(d is not None for d in distortions):
            names = list(next(d for d in distortions if d is not None).table())
            block = np.full((len(analyses), max(h, w), len(names)), np.nan)
            for k, d in enumerate(distortions):
                if d is not None:
                    block[k] = np.column_stack([np.asarray(v, dtype=np.float64) for v in d.table().values()])
            ds = writer.group.create_dataset("Scan_Distortion", data=block)
            ds.attrs["columns"] = names
            ds.attrs["summary"] = [d.summary() if d is not None else "not fitted" for d in distortions]
            ds.attrs["meaning"] = (
                "image pixel (r, c) sees the specimen at (Y(r), X(c) + S(r)); *_spacing: apparent spacing relative "
                "to the line's rest beyond the flyback window (fast) or the frame's mean (slow)"
            )
        strain, reference = column_strain(analyses)
        if strain is not None:
            ds = writer.group.create_dataset("Strain", data=strain)
            ds.attrs["columns"] = ["exx", "eyy", "exy", "rotation"]
            ds.attrs["units"] = ["", "", "", "rad"]
            ds.attrs["meaning"] = f"per row of Columns: local strain and rotation relative to {reference}"
        lattices = [a.lattice for a in analyses if a.lattice is not None]
        if lattices:  # per frame: (frames, 2, 2), (frames, 2); the motif of the first frame
            writer.group.create_dataset("Lattice_Vectors", data=np.stack([lat.vectors for lat in lattices]))
            writer.group.create_dataset("Lattice_Origin", data=np.stack([lat.origin for lat in lattices]))
            writer.group.create_dataset("Lattice_Motif", data=lattices[0].motif)
        if stack:
            writer.group.create_dataset("Drift", data=result.tracks.drift).attrs["columns"] = ["dy", "dx"]
            writer.group.attrs["n_tracks"] = result.tracks.n_tracks
        writer.group.attrs["pixel_size"] = np.asarray(last.pixel_size, dtype=np.float64)
        writer.group.attrs["pixel_units"] = last.units
        writer.group.attrs["sublattice_rule"] = last.sublattice_rule
        writer.group.attrs["n_columns"] = len(rows)
        row_dim, col_dim = last.parameters.get("row_dim", "y"), last.parameters.get("col_dim", "x")
        writer.group.attrs["position_order"] = (
            f"y = row = position dimension {row_dim!r}, x = column = position dimension {col_dim!r}, "
            "in pixels of the source image"
        )

    # the fit engine "auto" picks follows the device and the packages installed: the same result
    # (see usidgpu.atoms.fit.refine), so it is recorded but not part of the run's identity
    n_analyses = len(getattr(result, "frames", [])) or 1
    need = rows.nbytes + result_bytes(result) + sum(result_bytes(a) for a in getattr(result, "frames", []))
    need += n_analyses * max(h, w) * 8 * 8  # the scan-distortion profiles
    need += len(rows) * 4 * 8  # the strain of every column
    return write_result(result, main, output, fill, conditions=("engine",), size_hint=need)
