"""From fitted columns to their lattice, sublattices, vacancies and displacements — measured on the
specimen, with the scan's distortion fitted, corrected and reported.

The steps (:func:`analyze_sites`):

1. sublattices and a first lattice from the image positions (as :func:`usidgpu.atoms.lattice`
   does them);
2. the scan distortion (:func:`usidgpu.atoms.scan_distortion.fit_scan_distortion`), and every
   position mapped to the specimen by it; sublattices and the lattice again, there;
3. candidate vacancies: sites of that lattice with no column within the tolerance
   (:func:`usidgpu.atoms.lattice.find_vacancies`), minus the sites that a column further away
   still sits on (it is nearer this site than any other: a displaced column, not a vacancy) and
   the sites whose neighbouring columns are mostly off the lattice (another grain or domain: the
   lattice is no reference there) and the sites of a motif site that most of its sites leave
   empty (no sublattice: detections on noise that happen to fit a cell);
4. the image's evidence at each remaining site (:func:`usidgpu.atoms.evidence.site_evidence`):
   only a site where the image shows no column is a vacancy;
5. displacements from the sites of the specimen lattice.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from .evidence import EVIDENCE, site_evidence
from .gaussian import AMPLITUDE
from .lattice import Lattice, Vacancies, assign_sublattices, base_vectors, find_vacancies, lattice_fit
from .scan_distortion import ScanDistortion, fit_scan_distortion

#: Columns within this many site separations of a candidate vacancy are its neighbourhood ...
NEIGHBOURHOOD = 1.5
#: ... of which at least this fraction must sit on the lattice (within its outlier distance).
ON_LATTICE = 0.75


@dataclass
class Sites:
    """What :func:`analyze_sites` finds; positions of vacancies in image pixels, displacements and
    the lattice in the specimen frame (image pixels when no distortion was fitted)."""

    labels: np.ndarray
    lattice: Lattice
    vacancies: Vacancies
    displacement: np.ndarray
    specimen: np.ndarray  #: (N, 2) the columns mapped to the specimen
    distortion: ScanDistortion | None
    note: str = ""  #: why no distortion was fitted, when it was asked for


def _lattice(pos: np.ndarray, amplitudes: np.ndarray, n_sub: int) -> tuple[np.ndarray, Lattice]:
    """Sublattice labels and the lattice with the cell of sublattice 0."""
    labels = assign_sublattices(pos, amplitudes, n_sub) if n_sub > 1 else np.zeros(len(pos), dtype=np.int64)
    bright = pos[labels == 0]
    vectors = base_vectors(bright) if len(bright) >= 4 else None
    return labels, lattice_fit(pos, vectors=vectors)


def _occupancy(
    specimen: np.ndarray, lattice: Lattice, shape: tuple[int, int], tolerance: float, distortion: ScanDistortion | None
) -> np.ndarray:
    """Per motif site, the fraction of its lattice sites inside the image (one cell in from the
    edge, as :func:`~usidgpu.atoms.lattice.find_vacancies` counts them) that hold a column."""
    every = find_vacancies(specimen, lattice, region=shape, tolerance=tolerance, min_occupied=0, distortion=distortion)
    idx, sites = lattice.nearest_sites(specimen)
    close = np.hypot(*(specimen - sites).T) <= tolerance * lattice.min_separation
    px = sites if distortion is None else distortion.to_image(sites)
    margin = float(np.max(np.linalg.norm(lattice.vectors, axis=1)))
    inside = np.all((px >= margin) & (px <= np.array(shape) - 1 - margin), axis=1)
    held = np.unique(idx[close & inside], axis=0)
    occupied = np.bincount(held[:, 2], minlength=lattice.n_sites).astype(float)
    empty = np.bincount(every.indices[:, 2], minlength=lattice.n_sites).astype(float)
    return occupied / np.maximum(occupied + empty, 1.0)


def analyze_sites(
    image: np.ndarray,
    params: np.ndarray,
    n_sublattices: int,
    vacancy_tolerance: float = 0.3,
    scan_distortion: bool = True,
    vacancy_evidence: float = EVIDENCE,
) -> Sites:
    """Lattice, sublattices, vacancies and displacements of fitted columns (module docstring).

    Parameters
    ----------
    image : ndarray, (H, W)
        The analyzed image (the vacancies' evidence is read from it).
    params : ndarray, (N, 7)
        The fitted columns (:data:`usidgpu.atoms.gaussian.PARAMETERS`), N ≥ 8.
    n_sublattices : int
    vacancy_tolerance : float
        A site is a candidate vacancy when no column lies within this fraction of the smallest
        site separation.
    scan_distortion : bool
        Fit the scan's distortion and measure on the specimen (True), or measure on the image
        against one affine lattice (False).
    vacancy_evidence : float
        A candidate is a vacancy when the image's evidence of a column there is below this
        fraction of the local column amplitude (0 trusts the positions alone).

    Returns
    -------
    Sites

    Raises
    ------
    ValueError
        The columns hold no lattice (too few, on one line, disordered).
    """
    pos = np.asarray(params[:, 1:3], dtype=np.float64)
    amplitudes = params[:, AMPLITUDE]
    shape = image.shape
    labels, lattice = _lattice(pos, amplitudes, n_sublattices)
    distortion, specimen, note = None, pos, ""
    if scan_distortion:
        try:
            distortion, _ = fit_scan_distortion(pos, lattice, shape)
        except ValueError as exc:  # too few columns for the splines, or no single lattice
            note = str(exc)
        else:
            specimen = distortion.correct(pos)
            labels, lattice = _lattice(specimen, amplitudes, n_sublattices)
    sep = lattice.min_separation
    found = find_vacancies(
        specimen, lattice, region=shape, tolerance=vacancy_tolerance, labels=labels, distortion=distortion
    )
    keep = np.ones(len(found), dtype=bool)
    if len(found):
        # a column nearer this site than any other, beyond the tolerance: displaced, not missing
        claimed = {tuple(row) for row in lattice.nearest_sites(specimen)[0]}
        keep = np.array([tuple(row) not in claimed for row in found.indices], dtype=bool)
        # the columns around the site must sit on this lattice: among columns off it (another
        # grain, an antiphase domain, a boundary) an ideal site is no reference for a vacancy
        near = cKDTree(specimen).query_ball_point(found.positions, NEIGHBOURHOOD * sep)
        on = np.array([lattice.inliers[group].mean() if len(group) >= 2 else 0.0 for group in near])
        keep &= on >= ON_LATTICE
        # and the site's sublattice must be one: a motif site that most of its sites leave empty
        # (detections on noise that happen to fit a cell) has no vacancies to speak of
        held = _occupancy(specimen, lattice, shape, vacancy_tolerance, distortion)
        keep &= held[found.indices[:, 2]] >= ON_LATTICE
    sites_px = found.positions if distortion is None else distortion.to_image(found.positions)
    evidence = np.full(len(found), np.nan)
    if vacancy_evidence > 0:
        evidence = site_evidence(image, sites_px, found.sublattice, params, labels, sep)
        empty = keep & (evidence < vacancy_evidence)  # NaN (nothing to compare with) is no evidence of absence
    else:  # the positions alone decide
        empty = keep
    seen = keep & ~empty
    vacancies = Vacancies(
        sites_px[empty],
        found.indices[empty],
        found.sublattice[empty],
        evidence=evidence[empty],
        unconfirmed=sites_px[seen],
    )
    displacement = specimen - lattice.nearest_sites(specimen)[1]
    return Sites(labels, lattice, vacancies, displacement, specimen, distortion, note)
