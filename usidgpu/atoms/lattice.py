"""Lattices of atomic columns: base vectors, motif, sublattices, vacancies, displacements, strain.

Everything here works on column positions, never on images. Positions are float arrays of shape
(N, 2) with columns (y, x) = (row, column) in pixels, as NumPy and scipy.ndimage index images;
vectors are (dy, dx) too. A lattice site is ``origin + (i + s0)·a + (j + s1)·b`` with integer cell
indices (i, j), the two base vectors ``a = vectors[0]``, ``b = vectors[1]`` and the fractional
coordinates (s0, s1) of one of the M motif sites.

Rules
-----
**Which cell.** Found from positions alone (:func:`base_vectors`, :func:`lattice_fit` without
``vectors``), the cell is the primitive cell of the translations that carry nearly every column
onto another column (difference vectors present at ≥ 60 % of the columns as often as the most
frequent one). The motif is then whatever distinct sites the columns occupy modulo that cell.
For a perovskite in [001] projection, whose B columns sit exactly at the centres of the A cells,
the union of both sublattices is itself a lattice, so this gives the A–B half-diagonal cell with
a one-site motif; a honeycomb (graphene) is not, so it gives the hexagonal cell with two sites.
To get the cell of one sublattice — the conventional perovskite cell with A at (0, 0) and B at
(½, ½) — pass that sublattice's vectors: ``lattice_fit(p, vectors=base_vectors(p[labels == 0]))``;
:func:`assign_sublattices` does exactly this when not given a lattice.

**Canonical vectors** (only for vectors found here; given vectors keep the caller's choice).
The Gauss-reduced pair (the shortest vector and the shortest one not collinear with it) is
replaced by the equivalent pair chosen as follows. Candidates are ±a, ±b and, where they are as
short as b within 2 % (hexagonal lattices), ±(a ± b). The first vector is the candidate met first
when turning from 20° before +y (down the rows) toward +x, i.e. the one with the smallest angle
``atan2(dx, dy)`` wrapped into [−20°, 340°). The second is the candidate that makes a cell of the
same area with ``det[a; b] = a_y·b_x − a_x·b_y > 0`` and, among those, the smallest angle to the
first. An axis-aligned square lattice thus gets ``vectors ≈ d·I`` and indices (i, j) that count
rows and columns; only lattices with a vector at 20° before +y (or a symmetry equivalent) are
ambiguous, where noise decides.

**Motif and origin.** Detected motif sites are ordered by population (site 0 is the most
populated and sits at (0, 0)); the others by their fractional coordinates, which are kept in
[−0.1, 0.9) so that a site on a cell edge is not split between 0 and 1 by noise. The origin is
the site-0 lattice point nearest the pixel (0, 0).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy.interpolate import LinearNDInterpolator
from scipy.spatial import ConvexHull, QhullError, cKDTree

from ..core.errors import InvalidInput

#: Neighbours per column whose difference vectors are clustered (three shells of a square lattice).
NEIGHBOURS = 12
#: A cluster of difference vectors is a lattice translation if it holds this fraction of the largest.
POPULATED = 0.6
#: Radius of the difference-vector clusters, as a fraction of the nearest-neighbour spacing.
CLUSTER_RADIUS = 0.25
#: Two vectors closer in direction than this are collinear.
MIN_ANGLE = np.deg2rad(20.0)
#: Angle (from +y toward +x) where the search for the canonical first vector starts.
ANGLE_START = np.deg2rad(-20.0)
#: Lattice vectors within this factor of the length of b count as equally short.
SHORT_TIE = 1.02
#: Columns farther than this fraction of the smallest site separation from their site are
#: outliers: they get indices and residuals but do not pull the least-squares fit.
OUTLIER = 0.25
#: Columns nearest the centroid used to detect the motif and start the growing fit.
FIRST_BATCH = 60
#: Lower edge of the interval [MOTIF_LOW, MOTIF_LOW + 1) holding fractional motif coordinates.
MOTIF_LOW = -0.1


def _check_positions(positions: ArrayLike, name: str = "positions", minimum: int = 1) -> np.ndarray:
    """``positions`` as a float64 (N, 2) array, or a ValueError that says what is wrong."""
    try:
        arr = np.asarray(positions, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"{name} must be a numeric array of shape (N, 2) with columns (y, x): {exc}") from None
    if arr.ndim == 1 and arr.size == 0:
        arr = arr.reshape(0, 2)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise InvalidInput(f"{name} must be an array of shape (N, 2) with columns (y, x), got shape {arr.shape}")
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        first = int(np.argmax(bad))
        raise InvalidInput(f"{name} has {int(bad.sum())} rows with NaN or infinite values (first: row {first})")
    if len(arr) < minimum:
        raise InvalidInput(f"{name}: need at least {minimum} columns, got {len(arr)}")
    return arr


def _det(u: np.ndarray, v: np.ndarray) -> float:
    """``u_y·v_x − u_x·v_y`` for (dy, dx) vectors: positive when v is turned from u toward +x→+y."""
    return float(u[0] * v[1] - u[1] * v[0])


def _reduce(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lagrange–Gauss reduction: the same lattice with |a| ≤ |b| and |a·b| ≤ |a|²/2."""
    a, b = np.array(a, dtype=float), np.array(b, dtype=float)
    for _ in range(64):
        if a @ a > b @ b:
            a, b = b, a
        mu = round(float(a @ b) / float(a @ a))
        if mu == 0:
            break
        b = b - mu * a
    if a @ a > b @ b:
        a, b = b, a
    return a, b


def _canonical(vectors: np.ndarray) -> np.ndarray:
    """The canonical pair of base vectors of the lattice spanned by ``vectors`` (module docstring)."""
    a, b = _reduce(vectors[0], vectors[1])
    area = abs(_det(a, b))
    limit = SHORT_TIE * np.linalg.norm(b)
    candidates = [m * a + n * b for m, n in itertools.product((-1, 0, 1), repeat=2) if (m, n) != (0, 0)]
    short = [v for v in candidates if np.linalg.norm(v) <= limit]

    def turn(v: np.ndarray) -> float:
        return float((np.arctan2(v[1], v[0]) - ANGLE_START) % (2 * np.pi))

    first = min(short, key=turn)
    # Same area (a basis, not a sublattice), positive orientation; then the smallest angle.
    partners = [v for v in short if abs(_det(first, v) - area) < 0.5 * area]

    def angle(v: np.ndarray) -> float:
        return float(np.arccos(np.clip(first @ v / np.linalg.norm(first) / np.linalg.norm(v), -1.0, 1.0)))

    second = min(partners, key=angle)
    return np.array([first, second])


def _wrap_motif(frac: np.ndarray) -> np.ndarray:
    """Fractional coordinates wrapped into [MOTIF_LOW, MOTIF_LOW + 1)."""
    return frac - np.floor(frac - MOTIF_LOW)


@dataclass
class Lattice:
    """A 2-D lattice with a motif, and how a set of columns sits on it.

    Attributes
    ----------
    origin : ndarray, (2,)
        (y, x) of the site of motif 0 in cell (0, 0), in pixels.
    vectors : ndarray, (2, 2)
        Base vectors as rows, ``vectors[0] = a``, ``vectors[1] = b``, each (dy, dx) in pixels.
    motif : ndarray, (M, 2)
        Fractional coordinates (along a, along b) of the M sites in the cell.
    indices : ndarray of int, (N, 3)
        For each fitted column: cell indices (i, j) and motif site m. Empty for a lattice
        built by hand.
    residuals : ndarray, (N, 2)
        Each fitted column's displacement (dy, dx) from its ideal site, in pixels.
    inliers : ndarray of bool, (N,)
        Columns used in the least-squares fit (residual below a quarter of the smallest site
        separation).
    """

    origin: np.ndarray
    vectors: np.ndarray
    motif: np.ndarray = field(default_factory=lambda: np.zeros((1, 2)))
    indices: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), dtype=np.int64))
    residuals: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    inliers: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))

    def __post_init__(self) -> None:
        self.origin = np.asarray(self.origin, dtype=np.float64).reshape(-1)
        self.vectors = np.asarray(self.vectors, dtype=np.float64)
        self.motif = np.atleast_2d(np.asarray(self.motif, dtype=np.float64))
        if self.origin.shape != (2,):
            raise InvalidInput(f"origin must be (y, x), got shape {self.origin.shape}")
        if self.vectors.shape != (2, 2) or not np.isfinite(self.vectors).all():
            raise InvalidInput(
                f"vectors must be a finite (2, 2) array of rows (dy, dx), got shape {self.vectors.shape}"
            )
        a, b = self.vectors
        if abs(_det(a, b)) < np.sin(MIN_ANGLE) * np.linalg.norm(a) * np.linalg.norm(b):
            raise InvalidInput(f"base vectors {a.tolist()} and {b.tolist()} are (nearly) collinear")
        if self.motif.ndim != 2 or self.motif.shape[1] != 2 or len(self.motif) == 0:
            raise InvalidInput(f"motif must be an (M, 2) array of fractional coordinates, got shape {self.motif.shape}")

    @property
    def n_sites(self) -> int:
        """Number of motif sites M."""
        return len(self.motif)

    @property
    def cell_area(self) -> float:
        """Area of the cell in square pixels."""
        return abs(_det(self.vectors[0], self.vectors[1]))

    @property
    def min_separation(self) -> float:
        """Smallest distance between two distinct sites, in pixels (|shortest vector| for M = 1)."""
        a, b = _reduce(self.vectors[0], self.vectors[1])
        offsets = self.motif @ self.vectors
        best = np.inf
        for d in {tuple(np.round(u - v, 12)) for u in offsets for v in offsets}:
            for m, n in itertools.product(range(-2, 3), repeat=2):
                length = float(np.linalg.norm(np.asarray(d) + m * a + n * b))
                if length > 1e-9 * np.linalg.norm(a):
                    best = min(best, length)
        return float(best)

    def site_positions(self, indices: ArrayLike) -> np.ndarray:
        """(y, x) of the sites given as rows (i, j) or (i, j, m) (m = 0 when left out).

        Parameters
        ----------
        indices : array_like of int, (K, 2) or (K, 3)

        Returns
        -------
        ndarray, (K, 2)
        """
        idx = np.atleast_2d(np.asarray(indices))
        if idx.ndim != 2 or idx.shape[1] not in (2, 3):
            raise InvalidInput(f"indices must have rows (i, j) or (i, j, m), got shape {idx.shape}")
        m = idx[:, 2].astype(int) if idx.shape[1] == 3 else np.zeros(len(idx), dtype=int)
        if len(m) and (m.min() < 0 or m.max() >= self.n_sites):
            raise InvalidInput(f"motif index out of range 0..{self.n_sites - 1}")
        frac = idx[:, :2].astype(np.float64) + self.motif[m]
        return self.origin + frac @ self.vectors

    def fractional(self, positions: ArrayLike) -> np.ndarray:
        """Fractional coordinates (along a, along b) of ``positions`` relative to the origin."""
        pos = _check_positions(positions)
        return (pos - self.origin) @ np.linalg.inv(self.vectors)

    def nearest_sites(self, positions: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """The lattice site nearest each position.

        Parameters
        ----------
        positions : array_like, (N, 2)

        Returns
        -------
        indices : ndarray of int, (N, 3)
            (i, j, m) of each nearest site.
        sites : ndarray, (N, 2)
            (y, x) of those sites.

        Notes
        -----
        Rounding fractional coordinates is exact for displacements below about 0.4 of the
        smallest site separation; a lattice that does not fit the whole field (accumulated strain
        of half a cell) assigns the far columns to the wrong cells, which :func:`strain_map`
        avoids by working on neighbour differences.
        """
        pos = _check_positions(positions)
        frac = (pos - self.origin) @ np.linalg.inv(self.vectors)
        best = np.full(len(pos), np.inf)
        indices = np.zeros((len(pos), 3), dtype=np.int64)
        sites = np.zeros_like(pos)
        for m, s in enumerate(self.motif):
            cell = np.rint(frac - s)
            site = self.origin + (cell + s) @ self.vectors
            dist = np.sum((pos - site) ** 2, axis=1)
            better = dist < best
            best[better] = dist[better]
            indices[better, :2] = cell[better]
            indices[better, 2] = m
            sites[better] = site[better]
        return indices, sites


def _cluster_differences(pos: np.ndarray, spacing: float) -> list[tuple[np.ndarray, int]]:
    """Clusters of neighbour difference vectors: (mean vector, members), most populated first.

    Greedy: the densest bin of a histogram seeds a mean shift within ``CLUSTER_RADIUS·spacing``;
    its members are removed and the next densest bin is taken, until the clusters get small.
    """
    k = min(NEIGHBOURS, len(pos) - 1)
    _, idx = cKDTree(pos).query(pos, k=k + 1)
    diffs = (pos[idx[:, 1:]] - pos[:, None, :]).reshape(-1, 2)
    # Double detections (closer than half the spacing) are no lattice translation.
    diffs = diffs[np.hypot(diffs[:, 0], diffs[:, 1]) > 0.5 * spacing]
    radius = CLUSTER_RADIUS * spacing
    clusters: list[tuple[np.ndarray, int]] = []
    remaining = diffs
    while len(remaining) and len(clusters) < 48:
        # 2-D histogram with bins of the cluster radius, one integer code per bin.
        keys = np.floor(remaining / radius).astype(np.int64)
        keys -= keys.min(axis=0)
        code = keys[:, 0] * (int(keys[:, 1].max()) + 1) + keys[:, 1]
        densest = code == np.argmax(np.bincount(code))
        centre = remaining[densest].mean(axis=0)
        for _ in range(8):
            member = np.sum((remaining - centre) ** 2, axis=1) <= radius**2
            if not member.any():
                break
            new = remaining[member].mean(axis=0)
            if np.allclose(new, centre, atol=1e-6 * spacing):
                break
            centre = new
        member = np.sum((remaining - centre) ** 2, axis=1) <= radius**2
        if not member.any():  # the seed bin drifted away; drop it so the loop advances
            member = densest
        clusters.append((centre, int(member.sum())))
        remaining = remaining[~member]
        if clusters[-1][1] < 0.25 * max(c for _, c in clusters):
            break
    return sorted(clusters, key=lambda c: -c[1])


def _approximate_vectors(pos: np.ndarray, spacing: float | None) -> np.ndarray:
    """The shortest well-populated difference vector and the shortest one not collinear with it."""
    if spacing is None:
        dist, _ = cKDTree(pos).query(pos, k=2)
        spacing = float(np.median(dist[:, 1]))
    if not spacing > 0:
        raise InvalidInput(f"spacing must be positive, got {spacing} (duplicate positions?)")
    clusters = _cluster_differences(pos, spacing)
    if not clusters:
        raise InvalidInput("no difference vectors between the columns: are they all at one point?")
    top = clusters[0][1]
    translations = sorted((c for c, n in clusters if n >= POPULATED * top), key=lambda v: float(np.hypot(*v)))
    a = translations[0]
    for v in translations[1:]:
        if abs(_det(a, v)) > np.sin(MIN_ANGLE) * np.linalg.norm(a) * np.linalg.norm(v):
            return np.array([a, v])
    raise InvalidInput(
        "the columns do not form a 2-D lattice: every frequent difference vector is collinear with "
        f"{np.round(a, 3).tolist()} (a single row of columns?)"
    )


def _torus_clusters(frac: np.ndarray, vectors: np.ndarray, radius: float) -> np.ndarray:
    """Distinct sites among fractional coordinates modulo the cell, most populated first.

    Returns (M, 2) fractional site coordinates wrapped into [0, 1).
    """
    wrapped = frac - np.floor(frac)
    delta = wrapped[:, None, :] - wrapped[None, :, :]
    delta -= np.rint(delta)
    near = np.linalg.norm(delta @ vectors, axis=2) <= radius
    free = np.ones(len(frac), dtype=bool)
    sites: list[np.ndarray] = []
    counts: list[int] = []
    while free.any():
        count = (near & free[None, :]).sum(axis=1) * free
        seed = int(np.argmax(count))
        if counts and count[seed] < max(2, 0.3 * counts[0]):
            break
        members = near[seed] & free
        sites.append(wrapped[seed] + delta[members, seed].mean(axis=0))
        counts.append(int(count[seed]))
        free &= ~members
    found = np.array(sites)
    return found - np.floor(found)


def _solve(pos: np.ndarray, idx: np.ndarray, motif: np.ndarray, refine_motif: bool) -> tuple[np.ndarray, ...]:
    """Least squares ``pos ≈ origin + i·a + j·b + t_m``; returns origin, vectors, motif."""
    n_sites = len(motif)
    i, j, m = idx[:, 0].astype(float), idx[:, 1].astype(float), idx[:, 2]
    if refine_motif:
        design = np.column_stack([np.ones(len(pos)), i, j] + [(m == s).astype(float) for s in range(1, n_sites)])
    else:
        design = np.column_stack([np.ones(len(pos)), i + motif[m, 0], j + motif[m, 1]])
    coef, _, rank, _ = np.linalg.lstsq(design, pos, rcond=None)
    if rank < design.shape[1]:
        raise InvalidInput(
            f"cannot fit a lattice to {len(pos)} columns: they do not span two independent lattice directions "
            f"(and every motif site)"
        )
    origin, vectors = coef[0], coef[1:3]
    if refine_motif:
        offsets = np.vstack([np.zeros(2), coef[3:]])
        motif = offsets @ np.linalg.inv(vectors)
    return origin, vectors, motif


def _fit_once(pos: np.ndarray, lattice: Lattice, refine_motif: bool) -> Lattice:
    """One least-squares fit on the columns' nearest sites, refit without the outliers."""
    idx, sites = lattice.nearest_sites(pos)
    limit = OUTLIER * lattice.min_separation
    keep = np.hypot(*(pos - sites).T) <= limit
    if keep.sum() < 3 + (lattice.n_sites - 1 if refine_motif else 0) + 1:
        keep = np.ones(len(pos), dtype=bool)
    origin, vectors, motif = _solve(pos[keep], idx[keep], lattice.motif, refine_motif)
    return Lattice(origin, vectors, motif)


def lattice_fit(
    positions: ArrayLike,
    vectors: ArrayLike | None = None,
    motif: ArrayLike | None = None,
    spacing: float | None = None,
) -> Lattice:
    """Fit a lattice (origin, base vectors, motif) to column positions by least squares.

    Parameters
    ----------
    positions : array_like, (N, 2)
        Column positions (y, x) in pixels; noise, vacancies, outliers and several sublattices
        are fine.
    vectors : array_like, (2, 2), optional
        Approximate base vectors (rows, (dy, dx)). Refined, but their choice of cell is kept —
        pass the vectors of one sublattice to get that sublattice's cell and a motif holding
        the others. Default: the primitive cell of all columns, in canonical form (module
        docstring).
    motif : array_like, (M, 2), optional
        Fractional coordinates of the sites in the cell, held fixed, so that the residuals are
        displacements from those ideal positions (e.g. B-site off-centring from (½, ½) in a
        perovskite cell). Default: detected from the columns and refined.
    spacing : float, optional
        Approximate nearest-neighbour distance in pixels, used to find the vectors (default:
        the median nearest-neighbour distance).

    Returns
    -------
    Lattice
        With ``indices``, ``residuals`` and ``inliers`` for every column.

    Raises
    ------
    ValueError
        Bad shape, non-finite values, fewer than 4 columns, columns on one line, or a cell that
        the columns do not fill.

    Notes
    -----
    The fit grows from the column nearest the centroid: its 60 nearest columns first, then four
    times as many per round, each round indexing the columns by their nearest site of the
    previous fit. A slightly wrong initial vector thus never mis-indexes far columns.
    """
    pos = _check_positions(positions, minimum=4)
    if vectors is None:
        approx = _approximate_vectors(pos, spacing)
        given = False
    else:
        approx = np.asarray(vectors, dtype=np.float64)
        if approx.shape != (2, 2):
            raise InvalidInput(f"vectors must be a (2, 2) array with rows (dy, dx), got shape {approx.shape}")
        given = True
    centre = pos.mean(axis=0)
    order = np.argsort(np.sum((pos - centre) ** 2, axis=1), kind="stable")
    size = min(len(pos), FIRST_BATCH)
    first = pos[order[:size]]
    ref = first[0]
    refine_motif = motif is None
    if refine_motif:
        frac = (first - ref) @ np.linalg.inv(approx)
        radius = 0.2 * min(np.linalg.norm(approx[0]), np.linalg.norm(approx[1]))
        sites = _torus_clusters(frac, approx, radius)
        # Site 0 (most populated) at the origin; the others relative to it.
        origin = ref + sites[0] @ approx
        rest = _wrap_motif(sites[1:] - sites[0])
        rest = rest[np.lexsort((rest[:, 1], rest[:, 0]))]
        start_motif = np.vstack([np.zeros((1, 2)), rest])
    else:
        start_motif = np.atleast_2d(np.asarray(motif, dtype=np.float64))
        if start_motif.ndim != 2 or start_motif.shape[1] != 2:
            raise InvalidInput(
                f"motif must be an (M, 2) array of fractional coordinates, got shape {start_motif.shape}"
            )

        # The reference column sits on one of the motif sites: take the one under which the
        # first batch of columns lies closest to the lattice.
        def misfit(site: int) -> float:
            trial = Lattice(ref - start_motif[site] @ approx, approx, start_motif)
            return float(np.sum((first - trial.nearest_sites(first)[1]) ** 2))

        best = min(range(len(start_motif)), key=misfit)
        origin = ref - start_motif[best] @ approx
    lattice = Lattice(origin, approx, start_motif)
    while True:
        lattice = _fit_once(pos[order[:size]], lattice, refine_motif)
        if size == len(pos):
            break
        size = min(len(pos), 4 * size)
    if not given:
        lattice = _recast(lattice, _canonical(lattice.vectors))
    elif refine_motif:  # same vectors: only bring the refined sites back into [MOTIF_LOW, MOTIF_LOW + 1)
        lattice = _recast(lattice, lattice.vectors)
    # Origin: the site-0 lattice point nearest the pixel (0, 0).
    shift = np.rint(-lattice.origin @ np.linalg.inv(lattice.vectors))
    lattice = Lattice(lattice.origin + shift @ lattice.vectors, lattice.vectors, lattice.motif)
    idx, sites = lattice.nearest_sites(pos)
    residuals = pos - sites
    inliers = np.hypot(*residuals.T) <= OUTLIER * lattice.min_separation
    return Lattice(lattice.origin, lattice.vectors, lattice.motif, idx, residuals, inliers)


def _recast(lattice: Lattice, vectors: np.ndarray) -> Lattice:
    """The same lattice and motif on other base vectors of the same lattice."""
    offsets = lattice.motif @ lattice.vectors
    motif = _wrap_motif(offsets @ np.linalg.inv(vectors))
    motif[0] = 0.0
    rest = motif[1:]
    motif = np.vstack([motif[:1], rest[np.lexsort((rest[:, 1], rest[:, 0]))]])
    return Lattice(lattice.origin, vectors, motif)


def base_vectors(positions: ArrayLike, spacing: float | None = None) -> np.ndarray:
    """The two shortest non-collinear lattice translations of a set of column positions.

    Neighbour difference vectors (12 nearest neighbours of each column) are clustered; the
    translations are the clusters nearly every column contributes to; the shortest of them and
    the shortest one more than 20° away in direction give the cell, refined by the least-squares
    fit of :func:`lattice_fit`.

    Parameters
    ----------
    positions : array_like, (N, 2)
        Column positions (y, x) in pixels, N ≥ 4; noisy, with vacancies and several sublattices.
    spacing : float, optional
        Approximate nearest-neighbour distance in pixels (default: the median one); sets the
        cluster radius (a quarter of it) and drops differences shorter than half of it.

    Returns
    -------
    ndarray, (2, 2)
        Rows ``a`` and ``b``, each (dy, dx) in pixels, in the canonical form of the module
        docstring. For two sublattices this is the primitive cell of their union when that is a
        lattice (perovskite [001]: the A–B half-diagonals); pass one sublattice for its own cell.

    Raises
    ------
    ValueError
        Wrong shape, non-finite values, fewer than 4 columns or columns on one line.
    """
    return lattice_fit(positions, spacing=spacing).vectors


def _kmeans_1d(values: np.ndarray, k: int) -> np.ndarray:
    """Labels of 1-D k-means (Lloyd from quantiles), 0 = the largest centre."""
    centres = np.quantile(values, (np.arange(k) + 0.5) / k)
    labels = np.zeros(len(values), dtype=np.int64)
    for _ in range(200):
        new = np.argmin(np.abs(values[:, None] - centres[None, :]), axis=1)
        for c in range(k):
            if np.any(new == c):
                centres[c] = values[new == c].mean()
        if np.array_equal(new, labels):
            break
        labels = new
    labels = np.argmin(np.abs(values[:, None] - centres[None, :]), axis=1)
    rank = np.empty(k, dtype=np.int64)
    rank[np.argsort(-centres, kind="stable")] = np.arange(k)
    return rank[labels]


def assign_sublattices(
    positions: ArrayLike,
    intensities: ArrayLike,
    n_sublattices: int = 2,
    lattice: Lattice | None = None,
) -> np.ndarray:
    """Label each column with its sublattice, from its motif site and its intensity.

    Rule: the intensities are split into ``n_sublattices`` classes by 1-D k-means. Without a
    lattice, the lattice is fitted on all columns with the cell of the brightest class. If the
    lattice's motif has at least ``n_sublattices`` sites, every column takes the label of its
    motif site, the sites being grouped by 1-D k-means of their mean intensities — so a column
    much dimmer or brighter than its sublattice (noise, a different neighbour) is still labelled
    by where it sits. With fewer motif sites than sublattices (the sublattices share one site,
    e.g. a random alloy), the intensity classes are the labels.

    Parameters
    ----------
    positions : array_like, (N, 2)
        Column positions (y, x) in pixels.
    intensities : array_like, (N,)
        One intensity per column (e.g. peak height or integrated intensity).
    n_sublattices : int
        Number of sublattices (≥ 1).
    lattice : Lattice, optional
        The lattice whose motif sites define the sublattices (e.g. from :func:`lattice_fit`
        with one sublattice's vectors).

    Returns
    -------
    ndarray of int, (N,)
        Labels ordered by mean intensity: 0 is the brightest sublattice.

    Raises
    ------
    ValueError
        Bad shapes, non-finite values, fewer columns than sublattices.
    """
    pos = _check_positions(positions)
    values = np.asarray(intensities, dtype=np.float64)
    if values.shape != (len(pos),):
        raise InvalidInput(f"intensities must have shape ({len(pos)},) (one per column), got {values.shape}")
    if not np.isfinite(values).all():
        raise InvalidInput("intensities contain NaN or infinite values")
    n_sublattices = int(n_sublattices)
    if n_sublattices < 1:
        raise InvalidInput(f"n_sublattices must be at least 1, got {n_sublattices}")
    if len(pos) < n_sublattices:
        raise InvalidInput(f"need at least {n_sublattices} columns for {n_sublattices} sublattices, got {len(pos)}")
    if n_sublattices == 1:
        return np.zeros(len(pos), dtype=np.int64)
    classes = _kmeans_1d(values, n_sublattices)
    if lattice is None:
        bright = pos[classes == 0]
        try:
            lattice = lattice_fit(pos, vectors=base_vectors(bright))
        except ValueError:
            # Too few or collinear bright columns: the cell of all columns (intensity decides).
            lattice = None
    if lattice is None or lattice.n_sites < n_sublattices:
        return classes
    site = lattice.nearest_sites(pos)[0][:, 2]
    occupied = np.unique(site)
    if len(occupied) < n_sublattices:
        return classes
    means = np.array([values[site == s].mean() for s in occupied])
    site_class = _kmeans_1d(means, n_sublattices)
    lookup = np.zeros(lattice.n_sites, dtype=np.int64)
    lookup[occupied] = site_class
    labels = lookup[site]
    # Order the labels by the mean intensity of their columns (0 = brightest).
    brightness = [-values[labels == c].mean() if np.any(labels == c) else np.inf for c in range(n_sublattices)]
    order = np.argsort(brightness, kind="stable")
    rank = np.empty(n_sublattices, dtype=np.int64)
    rank[order] = np.arange(n_sublattices)
    return rank[labels]


@dataclass
class Vacancies:
    """Expected lattice sites with no column (see :func:`find_vacancies`).

    Attributes
    ----------
    positions : ndarray, (M, 2)
        (y, x) of the empty sites, in pixels.
    indices : ndarray of int, (M, 3)
        (i, j, motif site) of each.
    sublattice : ndarray of int, (M,)
        The sublattice of each: the majority label of the columns on the same motif site when
        ``labels`` were given, else the motif site index.
    evidence : ndarray, (M,), optional
        What the image shows at each site (:func:`usidgpu.atoms.evidence.site_evidence`: a matched
        filter's amplitude over the local column amplitude, about 0 for an empty site); None when
        only positions were compared.
    unconfirmed : ndarray, (K, 2)
        (y, x) of sites with no fitted column near them where the image does show a column (a
        column the finder missed, or one displaced far from its site): not counted as vacancies.
    """

    positions: np.ndarray
    indices: np.ndarray
    sublattice: np.ndarray
    evidence: np.ndarray | None = None
    unconfirmed: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))

    def __len__(self) -> int:
        return len(self.positions)


def find_vacancies(
    positions: ArrayLike,
    lattice: Lattice,
    region: tuple[int, int] | None = None,
    tolerance: float = 0.3,
    margin: float | None = None,
    labels: ArrayLike | None = None,
    min_occupied: float = 0.75,
    distortion: Any = None,
) -> Vacancies:
    """Lattice sites inside the imaged area with no column near them.

    Parameters
    ----------
    positions : array_like, (N, 2)
        Column positions (y, x) in pixels.
    lattice : Lattice
        The lattice (all motif sites count: pass the lattice of one sublattice's cell to look
        for vacancies on every sublattice).
    region : (int, int), optional
        Image shape (H, W): sites must lie at least ``margin`` inside it. Default: sites must
        lie at least ``margin`` inside the convex hull of the columns.
    tolerance : float
        A site is empty when no column lies within ``tolerance`` × the smallest site separation
        (:attr:`Lattice.min_separation`, the shortest base vector for a one-site motif).
    margin : float, optional
        Distance in pixels from the region's edge within which sites are not counted. Default:
        the longer base vector (one cell) for an image region, where edge columns are often not
        detected; half the smallest site separation for the hull, which excludes the outermost
        row of columns (on the hull) but keeps the next.
    labels : array_like of int, (N,), optional
        Sublattice labels of the columns (from :func:`assign_sublattices`) to name the
        sublattice of each vacancy.
    min_occupied : float
        An empty site is a vacancy only when at least this fraction of the lattice sites around
        it (within 1.5 × the smallest site separation) hold a column on its site. A region where
        the columns sit off this lattice — another grain, an antiphase domain — has empty ideal
        sites everywhere but no vacancies. 0 counts every empty site.
    distortion : ScanDistortion, optional
        When ``positions`` and ``lattice`` are in the specimen frame of a scan-distortion
        correction (:class:`usidgpu.atoms.scan_distortion.ScanDistortion`), the image ``region``
        is mapped through it; the vacancies' positions stay in the specimen frame.

    Returns
    -------
    Vacancies

    Raises
    ------
    ValueError
        Bad shapes, fewer than 3 columns, columns on one line, non-positive tolerance.
    """
    pos = _check_positions(positions, minimum=3)
    if not tolerance > 0:
        raise InvalidInput(f"tolerance must be positive, got {tolerance}")
    sep = lattice.min_separation
    if region is None:
        try:
            hull = ConvexHull(pos)
        except QhullError:
            raise InvalidInput("the columns lie on one line: their convex hull has no area") from None
        inset = 0.5 * sep if margin is None else float(margin)
        corners = pos[hull.vertices]
        normals, offsets = hull.equations[:, :2], hull.equations[:, 2]

        def inside(p: np.ndarray) -> np.ndarray:
            return np.all(p @ normals.T + offsets <= -inset, axis=1)

    else:
        shape = tuple(int(s) for s in region)
        if len(shape) != 2 or min(shape) < 1:
            raise InvalidInput(f"region must be an image shape (H, W), got {region!r}")
        margin = float(np.max(np.linalg.norm(lattice.vectors, axis=1))) if margin is None else float(margin)
        # the image border (sampled densely: a distorted scan bends it in the specimen frame)
        t = np.linspace(0.0, 1.0, 33)[:, None]
        corners = np.vstack(
            [
                t * [0, shape[1] - 1],
                t * [shape[0] - 1, 0],
                [shape[0] - 1, 0] + t * [0, shape[1] - 1],
                [0, shape[1] - 1] + t * [shape[0] - 1, 0],
            ]
        )
        to_image = (lambda p: p) if distortion is None else distortion.to_image
        if distortion is not None:
            corners = distortion.correct(corners)

        def inside(p: np.ndarray) -> np.ndarray:
            p = to_image(p) if len(p) else p
            return (
                (p[:, 0] >= margin)
                & (p[:, 0] <= shape[0] - 1 - margin)
                & (p[:, 1] >= margin)
                & (p[:, 1] <= shape[1] - 1 - margin)
            )

    frac = (corners - lattice.origin) @ np.linalg.inv(lattice.vectors)
    lo, hi = np.floor(frac.min(axis=0)) - 1, np.ceil(frac.max(axis=0)) + 1
    ii, jj, mm = np.meshgrid(
        np.arange(lo[0], hi[0] + 1), np.arange(lo[1], hi[1] + 1), np.arange(lattice.n_sites), indexing="ij"
    )
    indices = np.column_stack([ii.ravel(), jj.ravel(), mm.ravel()]).astype(np.int64)
    sites = lattice.site_positions(indices)
    keep = inside(sites)
    indices, sites = indices[keep], sites[keep]
    dist, _ = cKDTree(pos).query(sites, k=1) if len(sites) else (np.zeros(0), None)
    occupied = dist <= tolerance * sep
    empty = ~occupied
    if min_occupied > 0 and empty.any() and occupied.any():
        # the neighbourhood of each empty site must itself be this lattice
        near = cKDTree(sites).query_ball_point(sites[empty], 1.5 * sep)
        held = np.array([occupied[group].sum() for group in near], float)  # the site itself is empty
        fraction = held / np.maximum(np.array([len(group) - 1 for group in near], float), 1)
        keep = np.flatnonzero(empty)[fraction >= min_occupied]
        empty = np.zeros_like(empty)
        empty[keep] = True
    indices, sites = indices[empty], sites[empty]
    site_of = indices[:, 2]
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (len(pos),):
            raise InvalidInput(f"labels must have shape ({len(pos)},) (one per column), got {labels.shape}")
        column_site = lattice.nearest_sites(pos)[0][:, 2]
        majority = np.full(lattice.n_sites, -1, dtype=np.int64)
        for s in range(lattice.n_sites):
            on = labels[column_site == s]
            if len(on):
                values, counts = np.unique(on, return_counts=True)
                majority[s] = values[np.argmax(counts)]
        sublattice = majority[site_of]
    else:
        sublattice = site_of.copy()
    return Vacancies(sites, indices, sublattice)


def displacements(positions: ArrayLike, lattice: Lattice) -> np.ndarray:
    """Displacement (dy, dx) of each column from its nearest ideal lattice site, in pixels.

    Parameters
    ----------
    positions : array_like, (N, 2)
    lattice : Lattice
        The reference lattice (e.g. from :func:`lattice_fit`; with a fixed ``motif`` the
        displacements are measured from those ideal fractional positions).

    Returns
    -------
    ndarray, (N, 2)
    """
    pos = _check_positions(positions)
    return pos - lattice.nearest_sites(pos)[1]


@dataclass
class StrainMap:
    """Local strain and rotation relative to a reference lattice (see :func:`strain_map`).

    Attributes
    ----------
    positions : ndarray, (N, 2)
        The columns (y, x) where the maps draw them (image pixels).
    columns : ndarray, (N, 4)
        Per column: exx, eyy, exy (dimensionless; exy is the tensor shear, half the engineering
        shear) and rotation (radians, positive from +x toward +y, i.e. clockwise on an image
        displayed with y down). NaN where a column has too few neighbours to fit.
    gradient : ndarray, (N, 2, 2)
        The local deformation gradient F (in (y, x) components): neighbour differences ≈ F ×
        their ideal differences.
    maps : ndarray, (4, H, W) or None
        The four components interpolated linearly onto the pixel grid; NaN outside the convex
        hull of the columns.
    reference : str
        What the strain is relative to, in words (for titles and reports).
    """

    positions: np.ndarray
    columns: np.ndarray
    gradient: np.ndarray
    maps: np.ndarray | None = None
    reference: str = "the given lattice"

    components = ("exx", "eyy", "exy", "rotation")

    def _component(self, k: int) -> np.ndarray:
        # The map when there is one, else the per-column values.
        return self.maps[k] if self.maps is not None else self.columns[:, k]

    @property
    def exx(self) -> np.ndarray:
        """Strain along x (dimensionless): the map, or per column without a shape."""
        return self._component(0)

    @property
    def eyy(self) -> np.ndarray:
        """Strain along y (dimensionless)."""
        return self._component(1)

    @property
    def exy(self) -> np.ndarray:
        """Shear strain (tensor component, dimensionless)."""
        return self._component(2)

    @property
    def rotation(self) -> np.ndarray:
        """Local lattice rotation in radians, positive from +x toward +y."""
        return self._component(3)


def _ideal_differences(diffs: np.ndarray, lattice: Lattice) -> np.ndarray:
    """The inter-site vector of the ideal lattice nearest each observed difference."""
    offsets = lattice.motif @ lattice.vectors
    inv = np.linalg.inv(lattice.vectors)
    shifts = np.unique(np.round((offsets[:, None, :] - offsets[None, :, :]).reshape(-1, 2), 12), axis=0)
    best = np.full(diffs.shape[:-1], np.inf)
    ideal = np.zeros_like(diffs)
    for delta in shifts:
        cand = np.rint((diffs - delta) @ inv) @ lattice.vectors + delta
        dist = np.sum((diffs - cand) ** 2, axis=-1)
        better = dist < best
        best[better] = dist[better]
        ideal[better] = cand[better]
    return ideal


def strain_map(
    positions: ArrayLike,
    lattice: Lattice,
    shape: tuple[int, int] | None = None,
    neighbours: int = 8,
    at: ArrayLike | None = None,
) -> StrainMap:
    """Local strain tensor and rotation at each column, and as maps on the image grid.

    For each column the deformation gradient F is the least-squares fit of its ``neighbours``
    nearest columns' differences d ≈ F·D, D being the ideal inter-site vector of ``lattice``
    nearest d. Working on neighbour differences, not on global site indices, keeps this right
    under strain that accumulates to more than half a cell across the field. F is split by the
    polar decomposition F = R·U: the rotation angle of R, and the strain U − I (Biot strain,
    equal to the small strain for small deformations and free of the rotation).

    Parameters
    ----------
    positions : array_like, (N, 2)
        Column positions (y, x) in pixels, N ≥ 3.
    lattice : Lattice
        The reference (unstrained) lattice, e.g. fitted on a reference region or built from
        known vectors. A lattice fitted on the same columns absorbs their mean strain.
    shape : (int, int), optional
        Image shape (H, W) for the maps; without it only per-column values are returned.
    neighbours : int
        Neighbours per column in the fit (≥ 2; 8 default).
    at : array_like, (N, 2), optional
        Where the columns are drawn on the maps (default: ``positions``): their image pixels when
        ``positions`` were corrected for scan distortion
        (:meth:`usidgpu.atoms.scan_distortion.ScanDistortion.correct`).

    Returns
    -------
    StrainMap
        ``exx``, ``eyy``, ``exy`` are dimensionless strains, ``rotation`` is in radians
        (positive from +x toward +y).

    Raises
    ------
    ValueError
        Bad shapes, fewer than 3 columns, ``neighbours`` < 2.
    """
    pos = _check_positions(positions, minimum=3)
    neighbours = int(neighbours)
    if neighbours < 2:
        raise InvalidInput(f"neighbours must be at least 2, got {neighbours}")
    k = min(neighbours, len(pos) - 1)
    _, idx = cKDTree(pos).query(pos, k=k + 1)
    diffs = pos[idx[:, 1:]] - pos[:, None, :]  # (N, k, 2)
    ideal = _ideal_differences(diffs, lattice)
    # Normal equations of d ≈ F·D summed over the neighbours: F = (Σ d Dᵀ)(Σ D Dᵀ)⁻¹.
    ddt = np.einsum("nki,nkj->nij", ideal, ideal)
    xdt = np.einsum("nki,nkj->nij", diffs, ideal)
    scale = lattice.min_separation**2
    ok = np.abs(np.linalg.det(ddt)) > 1e-6 * scale**2
    grad = np.full((len(pos), 2, 2), np.nan)
    grad[ok] = xdt[ok] @ np.linalg.inv(ddt[ok])
    # Polar decomposition in 2-D: with (y, x) components a rotation by θ (from +x toward +y) is
    # [[cos θ, sin θ], [−sin θ, cos θ]], so θ = atan2(F01 − F10, F00 + F11) and U = Rᵀ F.
    theta = np.arctan2(grad[:, 0, 1] - grad[:, 1, 0], grad[:, 0, 0] + grad[:, 1, 1])
    c, s = np.cos(theta), np.sin(theta)
    rot_t = np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)
    stretch = rot_t @ grad
    columns = np.column_stack([stretch[:, 1, 1] - 1, stretch[:, 0, 0] - 1, stretch[:, 0, 1], theta])
    drawn = pos if at is None else _check_positions(at, "at")
    if drawn.shape != pos.shape:
        raise InvalidInput(f"at must have the shape of positions {pos.shape}, got {drawn.shape}")
    maps = None
    if shape is not None:
        size = tuple(int(v) for v in shape)
        if len(size) != 2 or min(size) < 1:
            raise InvalidInput(f"shape must be an image shape (H, W), got {shape!r}")
        shape = (size[0], size[1])
        good = np.isfinite(columns).all(axis=1)
        grid = np.mgrid[0 : shape[0], 0 : shape[1]]
        maps = np.full((4, *shape), np.nan)
        if good.sum() >= 3:
            try:
                # What griddata(method="linear") does: Delaunay interpolation, NaN outside the hull.
                values = LinearNDInterpolator(drawn[good], columns[good])(grid[0], grid[1])
                maps = np.moveaxis(values, -1, 0)
            except QhullError:
                pass  # columns on one line: no area to interpolate over, the maps stay NaN
    return StrainMap(drawn, columns, grad, maps)
