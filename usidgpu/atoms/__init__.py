"""Atomic columns: find, refine by batched 2-D Gaussian fits, lattice analysis, tracking.

>>> from usidgpu import atoms
>>> result = atoms.analyze(image)            # find → refine → lattice → sublattices → vacancies
>>> result.positions, result.sublattice, result.vacancies.positions
>>> tracks = atoms.track(stack)              # link columns frame to frame, with drift

Positions are (y, x) = (row, column) in pixels everywhere.
"""

from .analysis import ColumnAnalysis, StackAnalysis, analyze, analyze_stack, choose_sublattices
from .find import FoundColumns, NoColumnsError, column_spacing, find_columns
from .fit import ColumnFit, refine
from .lattice import (
    Lattice,
    StrainMap,
    Vacancies,
    assign_sublattices,
    base_vectors,
    displacements,
    find_vacancies,
    lattice_fit,
    strain_map,
)
from .scan_distortion import ScanDistortion, fit_scan_distortion
from .synthetic import SyntheticLattice, lattice_image
from .track import Tracks, link, track

__all__ = [
    "ColumnAnalysis",
    "ColumnFit",
    "FoundColumns",
    "Lattice",
    "NoColumnsError",
    "ScanDistortion",
    "StackAnalysis",
    "StrainMap",
    "SyntheticLattice",
    "Tracks",
    "Vacancies",
    "analyze",
    "analyze_stack",
    "assign_sublattices",
    "base_vectors",
    "choose_sublattices",
    "column_spacing",
    "displacements",
    "find_columns",
    "find_vacancies",
    "fit_scan_distortion",
    "lattice_fit",
    "lattice_image",
    "link",
    "refine",
    "strain_map",
    "track",
]
