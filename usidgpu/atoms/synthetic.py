"""Synthetic atomic-resolution images with known truth: Gaussian columns on a lattice.

Used by the tests and benchmarks as the ground truth nobody fitted: the column positions,
sublattices, vacancies and displacements are set here, then the image is rendered and made noisy
(Poisson shot noise at a given dose plus Gaussian read noise). Positions are (y, x) = (row, col)
in pixels, as everywhere in :mod:`usidgpu.atoms`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..core.errors import InvalidInput

#: Motifs in fractional cell coordinates (u along the first base vector, v along the second) and
#: the relative intensity of each site. "perovskite": an ABO3 [001] projection with bright A
#: columns at the corners and dimmer B columns at the cell centre (oxygen invisible, as in HAADF).
MOTIFS = {
    "square": (np.array([[0.0, 0.0]]), np.array([1.0])),
    "perovskite": (np.array([[0.0, 0.0], [0.5, 0.5]]), np.array([1.0, 0.5])),
}


@dataclass
class SyntheticLattice:
    """A rendered lattice image and its truth."""

    image: np.ndarray  #: the noisy image (float64)
    clean: np.ndarray  #: the image without noise
    positions: np.ndarray  #: (N, 2) (y, x) of the columns present, after displacement
    ideal: np.ndarray  #: (N, 2) their undisplaced lattice sites
    sublattice: np.ndarray  #: (N,) motif index of each column
    amplitudes: np.ndarray  #: (N,) peak height of each column above the background
    vacancies: np.ndarray  #: (V, 2) (y, x) of lattice sites left empty
    vacancy_sublattice: np.ndarray  #: (V,) motif index of each vacancy
    vectors: np.ndarray  #: (2, 2) base vectors, rows (dy, dx)
    sigma: float  #: Gaussian width of every column (px)
    background: float
    parameters: dict = field(default_factory=dict)


def base_vectors(spacing: float, angle_deg: float) -> np.ndarray:
    """Square-cell base vectors of length ``spacing`` rotated by ``angle_deg`` (rows (dy, dx))."""
    t = np.deg2rad(angle_deg)
    return spacing * np.array([[np.sin(t), np.cos(t)], [np.cos(t), -np.sin(t)]])


def render(
    shape: tuple[int, int], positions: np.ndarray, amplitudes: np.ndarray, sigma: float, background: float
) -> np.ndarray:
    """Sum of isotropic Gaussians ``A·exp(−r²/2σ²)`` plus a constant, each cut at 5σ."""
    h, w = shape
    image = np.full(shape, float(background))
    r = int(np.ceil(5 * sigma))
    offsets = np.arange(-r, r + 1)
    for (y, x), a in zip(positions, amplitudes):
        iy, ix = int(round(y)), int(round(x))
        ys, xs = iy + offsets, ix + offsets
        keep_y, keep_x = (ys >= 0) & (ys < h), (xs >= 0) & (xs < w)
        if not keep_y.any() or not keep_x.any():
            continue
        gy = np.exp(-((ys[keep_y] - y) ** 2) / (2 * sigma**2))
        gx = np.exp(-((xs[keep_x] - x) ** 2) / (2 * sigma**2))
        image[np.ix_(ys[keep_y], xs[keep_x])] += a * np.outer(gy, gx)
    return image


def lattice_image(
    shape: tuple[int, int] = (256, 256),
    spacing: float = 16.0,
    angle_deg: float = 0.0,
    motif: str = "perovskite",
    intensities: tuple[float, ...] | None = None,
    sigma: float = 2.0,
    background: float = 0.1,
    vacancies: int = 0,
    displacement: float = 0.0,
    dose: float | None = None,
    read_noise: float = 0.0,
    margin: float | None = None,
    seed: int | None = 0,
) -> SyntheticLattice:
    """Render a lattice of Gaussian columns with known truth.

    Parameters
    ----------
    shape : (int, int)
        Image size in pixels.
    spacing : float
        Length of the (square) cell's base vectors in pixels.
    angle_deg : float
        Rotation of the lattice.
    motif : {"square", "perovskite"}
        Sites per cell (see :data:`MOTIFS`).
    intensities : tuple of float, optional
        Peak height of each motif site (default from the motif: 1 and 0.5 for A and B).
    sigma : float
        Column width (px).
    background : float
        Constant added everywhere.
    vacancies : int
        Number of sites (away from the edges) left empty, chosen at random.
    displacement : float
        Standard deviation (px) of random column displacements from the ideal sites.
    dose : float, optional
        Electrons per unit intensity: the image becomes ``Poisson(dose·clean)/dose``.
    read_noise : float
        Gaussian noise standard deviation added after the shot noise (image units).
    margin : float, optional
        Columns whose centre lies closer than this to the border are left out (default 0).
    seed : int, optional

    Returns
    -------
    SyntheticLattice
    """
    if motif not in MOTIFS:
        raise InvalidInput(f"unknown motif {motif!r}; choose from {sorted(MOTIFS)}")
    rng = np.random.default_rng(seed)
    fractions, default_int = MOTIFS[motif]
    heights = np.asarray(intensities if intensities is not None else default_int, dtype=np.float64)
    if heights.shape != (len(fractions),):
        raise InvalidInput(f"motif {motif!r} has {len(fractions)} sites; got {heights.size} intensities")
    vec = base_vectors(spacing, angle_deg)
    h, w = shape
    margin = 0.0 if margin is None else float(margin)
    # every cell whose sites can land in the image: bound |i|, |j| by the diagonal
    n = int(np.ceil(np.hypot(h, w) / spacing)) + 2
    i, j = np.meshgrid(np.arange(-n, n + 1), np.arange(-n, n + 1), indexing="ij")
    centre = np.array([h / 2.0, w / 2.0])
    sites, labels = [], []
    for m, (u, v) in enumerate(fractions):
        pts = centre + np.outer((i + u).ravel(), vec[0]) + np.outer((j + v).ravel(), vec[1])
        sites.append(pts)
        labels.append(np.full(len(pts), m))
    ideal = np.concatenate(sites)
    label = np.concatenate(labels)
    inside = (
        (ideal[:, 0] >= margin)
        & (ideal[:, 0] <= h - 1 - margin)
        & (ideal[:, 1] >= margin)
        & (ideal[:, 1] <= w - 1 - margin)
    )
    ideal, label = ideal[inside], label[inside]
    # vacancies away from the edges, so that a vacancy is a vacancy and not a cut-off column
    pad = 1.5 * spacing
    interior = np.flatnonzero(
        (ideal[:, 0] > pad) & (ideal[:, 0] < h - 1 - pad) & (ideal[:, 1] > pad) & (ideal[:, 1] < w - 1 - pad)
    )
    if vacancies > interior.size:
        raise InvalidInput(f"{vacancies} vacancies asked for, only {interior.size} interior sites")
    empty = rng.choice(interior, size=vacancies, replace=False) if vacancies else np.zeros(0, dtype=int)
    present = np.ones(len(ideal), dtype=bool)
    present[empty] = False
    positions = (
        ideal[present] + rng.normal(0.0, displacement, size=(int(present.sum()), 2))
        if displacement
        else ideal[present].copy()
    )
    amplitudes = heights[label[present]]
    clean = render(shape, positions, amplitudes, sigma, background)
    image = clean.copy()
    if dose is not None:
        image = rng.poisson(np.clip(clean, 0, None) * dose).astype(np.float64) / dose
    if read_noise:
        image = image + rng.normal(0.0, read_noise, size=shape)
    return SyntheticLattice(
        image=image,
        clean=clean,
        positions=positions,
        ideal=ideal[present],
        sublattice=label[present],
        amplitudes=amplitudes,
        vacancies=ideal[empty],
        vacancy_sublattice=label[empty],
        vectors=vec,
        sigma=float(sigma),
        background=float(background),
        parameters=dict(
            shape=list(shape),
            spacing=spacing,
            angle_deg=angle_deg,
            motif=motif,
            intensities=heights.tolist(),
            sigma=sigma,
            background=background,
            vacancies=vacancies,
            displacement=displacement,
            dose=dose,
            read_noise=read_noise,
            seed=seed,
        ),
    )


def two_sublattice(
    shape: tuple[int, int] = (128, 128),
    spacing: float = 12.0,
    sigma: float = 2.2,
    ratio: float = 0.45,
    background: float = 0.1,
    dose: float | None = 60.0,
    vacancies: float = 0.02,
    displacement: float = 0.1,
    angle_deg: float | None = None,
    seed: int | None = 0,
) -> SyntheticLattice:
    """A square lattice of bright columns with a dim sublattice at the cell centres, and its truth.

    Written apart from :func:`lattice_image` (which the column finder and fit were developed on),
    as the independent test bench of issue 19: random lattice rotation and offset, each site empty
    with probability ``vacancies`` (both sublattices), random displacements, and the columns just
    outside the frame rendered too, so that the columns at the border see their neighbours' tails
    as in a real image. Columns are sampled at the pixel centres (a STEM pixel is the probe at one
    point) and the noise is Poisson.

    Parameters
    ----------
    shape : (int, int)
    spacing : float
        Cell edge in pixels; the bright–dim (nearest-neighbour) distance is spacing / √2.
    sigma : float
        Gaussian width of every column (px).
    ratio : float
        Amplitude of the dim columns relative to the bright ones (the bright amplitude is 1).
    background : float
        Constant added everywhere (in units of the bright amplitude).
    dose : float, optional
        Counts per unit amplitude: the image is ``Poisson(dose · clean) / dose``; None: no noise.
    vacancies : float
        Probability that a site is empty.
    displacement : float
        Standard deviation of each column's random shift from its site, per axis (px).
    angle_deg : float, optional
        Lattice rotation (default: random).
    seed : int, optional

    Returns
    -------
    SyntheticLattice
        ``positions``, ``sublattice`` (0 bright, 1 dim) and ``amplitudes`` of the columns whose
        centre lies in the image; ``vacancies`` the empty sites in the image;
        ``parameters["outside"]`` the columns rendered beyond the border.
    """
    rng = np.random.default_rng(seed)
    h, w = shape
    angle = rng.uniform(0.0, 90.0) if angle_deg is None else float(angle_deg)
    t = np.deg2rad(angle)
    a = spacing * np.array([np.cos(t), np.sin(t)])  # (dy, dx) of the two cell edges
    b = spacing * np.array([-np.sin(t), np.cos(t)])
    origin = rng.uniform(0.0, spacing, size=2)
    reach = 5.0 * sigma + 1.0  # columns this far outside still put their tails into the frame
    n = int(np.ceil((np.hypot(h, w) + 2 * reach) / spacing)) + 2
    i, j = (g.ravel() for g in np.meshgrid(np.arange(-n, n + 1), np.arange(-n, n + 1), indexing="ij"))
    sites = np.concatenate(
        [origin + np.outer(i, a) + np.outer(j, b), origin + np.outer(i + 0.5, a) + np.outer(j + 0.5, b)]
    )
    label = np.repeat([0, 1], len(i))
    near = (
        (sites[:, 0] > -reach) & (sites[:, 0] < h - 1 + reach) & (sites[:, 1] > -reach) & (sites[:, 1] < w - 1 + reach)
    )
    sites, label = sites[near], label[near]
    empty = rng.random(len(sites)) < vacancies
    moved = sites + rng.normal(0.0, displacement, size=sites.shape)
    height = np.where(label == 0, 1.0, float(ratio))
    present = ~empty
    clean = np.full(shape, float(background))
    rows, cols = np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64)
    r = int(np.ceil(5.0 * sigma))
    for (y, x), amp in zip(moved[present], height[present]):
        y0, y1 = max(int(np.floor(y)) - r, 0), min(int(np.ceil(y)) + r + 1, h)
        x0, x1 = max(int(np.floor(x)) - r, 0), min(int(np.ceil(x)) + r + 1, w)
        if y0 >= y1 or x0 >= x1:
            continue
        gy = np.exp(-0.5 * ((rows[y0:y1] - y) / sigma) ** 2)
        gx = np.exp(-0.5 * ((cols[x0:x1] - x) / sigma) ** 2)
        clean[y0:y1, x0:x1] += amp * gy[:, None] * gx[None, :]
    image = clean if dose is None else rng.poisson(clean * dose).astype(np.float64) / dose
    inside = (moved[:, 0] >= 0) & (moved[:, 0] <= h - 1) & (moved[:, 1] >= 0) & (moved[:, 1] <= w - 1)
    keep = present & inside
    gone = empty & (sites[:, 0] >= 0) & (sites[:, 0] <= h - 1) & (sites[:, 1] >= 0) & (sites[:, 1] <= w - 1)
    return SyntheticLattice(
        image=image,
        clean=clean,
        positions=moved[keep],
        ideal=sites[keep],
        sublattice=label[keep],
        amplitudes=height[keep],
        vacancies=sites[gone],
        vacancy_sublattice=label[gone],
        vectors=np.stack([a, b]),
        sigma=float(sigma),
        background=float(background),
        parameters=dict(
            shape=list(shape),
            spacing=spacing,
            sigma=sigma,
            ratio=ratio,
            background=background,
            dose=dose,
            vacancies=vacancies,
            displacement=displacement,
            angle_deg=angle,
            seed=seed,
            outside=moved[present & ~inside],
            outside_amplitudes=height[present & ~inside],
        ),
    )
