"""Find atomic columns: local maxima with a minimum separation from the lattice spacing.

The spacing (nearest-neighbour column distance) comes from the image's autocorrelation: its
nearest strong off-centre maximum is the shortest vector between columns — for a two-sublattice
image that is the A–B distance, not the cell edge, which is what a minimum separation must use.
Candidates are maxima of the (lightly smoothed) image over a disk of half that spacing, kept when
their prominence above the local background is a fraction of the typical column's; flat tops
(saturated 8-bit images) count once. Start positions are refined to sub-pixel by the centre of
mass of the background-subtracted intensity in a small disk.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from ..core.arrays import asnumpy
from ..core.errors import InvalidInput, UsidgpuError
from .windows import gather


class NoColumnsError(UsidgpuError, ValueError):
    """An image without (enough) atomic columns to analyze: flat, without periodic structure,
    or with too few columns."""


@dataclass
class FoundColumns:
    """Columns found in an image (positions in pixels, (y, x) = (row, col))."""

    positions: np.ndarray  #: (N, 2) sub-pixel start positions (centre of mass)
    peaks: np.ndarray  #: (N, 2) integer pixel of each local maximum
    prominence: np.ndarray  #: (N,) smoothed peak height above the local background
    spacing: float  #: nearest-neighbour column distance used (px)
    parameters: dict = field(default_factory=dict)
    #: (N,) bool: found by the second pass, in the image minus the first pass's fitted columns
    second_pass: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.second_pass is None:
            self.second_pass = np.zeros(len(self.positions), dtype=bool)

    def __len__(self) -> int:
        return len(self.positions)


def _host_image(image: Any) -> np.ndarray:
    """The image as a float64 NumPy array: finding runs on the host (SciPy's filters), so a
    device image is copied over once."""
    return asnumpy(image).astype(np.float64, copy=False)


def _disk(radius: float) -> np.ndarray:
    r = int(np.floor(radius))
    y, x = np.mgrid[-r : r + 1, -r : r + 1]
    return (y * y + x * x) <= radius * radius


def disk_minimum_at(image: np.ndarray, points: np.ndarray, radius: float, chunk: int = 4096) -> np.ndarray:
    """``ndimage.minimum_filter(image, footprint=_disk(radius), mode="nearest")`` at the integer
    ``points`` (N, 2) only.

    The background of a column is needed at its peak alone: reading each peak's disk costs
    N·πr² instead of filtering all pixels (ten times faster on a 2048² image at r = 11).
    """
    disk = _disk(radius)
    r = disk.shape[0] // 2
    dy, dx = np.nonzero(disk)
    dy, dx = dy - r, dx - r
    h, w = image.shape
    out = np.empty(len(points))
    for start in range(0, len(points), chunk):
        p = points[start : start + chunk]
        rows = np.clip(p[:, 0:1] + dy, 0, h - 1)  # "nearest": the disk clipped to the image
        cols = np.clip(p[:, 1:2] + dx, 0, w - 1)
        out[start : start + chunk] = image[rows, cols].min(axis=1)
    return out


#: Most rounds of the second pass of :func:`find_columns`.
SECOND_PASS_ROUNDS = 3

#: column_spacing reads the autocorrelation of at most this central square of an image: it holds
#: hundreds of periods of any atomic lattice, and the zero-padded FFT of a whole 4k image would
#: take seconds and gigabytes for the same number.
SPACING_CROP = 1024


def column_spacing(image: np.ndarray, min_distance: float = 2.0) -> float:
    """Nearest-neighbour distance between columns (px), from the image's autocorrelation.

    Parameters
    ----------
    image : 2-D array
        Larger images are read in their central :data:`SPACING_CROP` × :data:`SPACING_CROP`
        pixels (spacings up to a third of that are found).
    min_distance : float
        Maxima closer to the centre than this are ignored (the central lobe of a column's own width).

    Returns
    -------
    float
        The distance of the nearest off-centre autocorrelation maximum whose height is at least
        0.3 × that of the strongest off-centre maximum (parabolically refined to sub-pixel).
    """
    img = _host_image(image)
    if img.ndim != 2 or min(img.shape) < 8:
        raise InvalidInput(f"need a 2-D image of at least 8 × 8 pixels, got shape {img.shape}")
    top, left = (max(0, (n - SPACING_CROP) // 2) for n in img.shape)
    img = img[top : top + SPACING_CROP, left : left + SPACING_CROP]
    img = np.nan_to_num(img - np.nanmean(img))
    h, w = img.shape
    spec = np.fft.rfft2(img, s=(2 * h, 2 * w))  # zero padding: no wrap-around
    ac = np.fft.fftshift(np.fft.irfft2(np.abs(spec) ** 2, s=(2 * h, 2 * w)))
    cy, cx = h, w
    # only lags up to a third of the image: beyond, too few pixel pairs overlap
    ry, rx = h // 3, w // 3
    ac = ac[cy - ry : cy + ry + 1, cx - rx : cx + rx + 1]
    if not ac[ry, rx] > 0:
        raise NoColumnsError(
            "no periodic structure found in the image (it is flat): give the column spacing explicitly"
        )
    ac = ac / ac[ry, rx]
    is_max = (ac == ndimage.maximum_filter(ac, size=3)) & (ac > 0)
    # the crop's border is no maximum: there the autocorrelation may still be rising
    is_max[[0, -1], :] = False
    is_max[:, [0, -1]] = False
    ys, xs = np.nonzero(is_max)
    dist = np.hypot(ys - ry, xs - rx)
    keep = dist >= min_distance
    ys, xs, dist = ys[keep], xs[keep], dist[keep]
    if ys.size == 0:
        raise NoColumnsError("no periodic structure found in the image: give the column spacing explicitly")
    heights = ac[ys, xs]
    strong = heights >= 0.3 * heights.max()
    i = np.flatnonzero(strong)[np.argmin(dist[strong])]
    y, x = ys[i], xs[i]

    def vertex(m: float, c: float, p: float) -> float:
        d = m - 2 * c + p
        return 0.0 if d >= 0 else 0.5 * (m - p) / d

    dy = vertex(ac[y - 1, x], ac[y, x], ac[y + 1, x]) if 0 < y < ac.shape[0] - 1 else 0.0
    dx = vertex(ac[y, x - 1], ac[y, x], ac[y, x + 1]) if 0 < x < ac.shape[1] - 1 else 0.0
    return float(np.hypot(y + dy - ry, x + dx - rx))


def find_columns(
    image: np.ndarray,
    spacing: float | None = None,
    threshold: float = 0.25,
    smooth: float | None = None,
    edge: int = 1,
    com_radius: float | None = None,
    min_snr: float = 10.0,
    second_pass: bool = False,
) -> FoundColumns:
    """Local-maximum column finding with a minimum separation and sub-pixel start positions,
    then a second pass for the columns the first could not see.

    The first pass finds the local maxima of the lightly smoothed image. A dim column between
    bright ones (a sublattice at a quarter to two thirds of their amplitude) is often no local
    maximum, or falls below the prominence threshold: the second pass fits the columns found,
    subtracts them, and searches the residual with the matched filter of a column
    (:mod:`usidgpu.atoms.residual_search`), keeping what stands five noise standard deviations
    and a tenth of the typical column's amplitude clear of the residual and fits as a column.
    Then the image is averaged over the cell of the bright columns; a site of that cell the
    average shows plainly (:data:`~usidgpu.atoms.residual_search.MOTIF_Z` standard errors, a tenth
    of the brightest site's amplitude) is tested in every cell where no column was found, by a
    joint least-squares fit of all columns: a dim column overlapped by bright ones, which neither
    the first pass nor the residual shows, is there when that is the more probable of the two
    hypotheses given its amplitude, with the share of occupied cells and the columns' amplitude
    estimated from the tested cells themselves (:func:`~usidgpu.atoms.residual_search.site_search`,
    :func:`~usidgpu.atoms.residual_search.occupied`). The columns found before are then placed
    where that joint fit put them: a maximum of the smoothed image is pulled by its neighbours'
    tails (on overlapped columns at 20 counts, by more than a third of the column distance).

    Parameters
    ----------
    image : 2-D array
        Bright columns on a darker background (HAADF-like). Invert dark-column images first.
    spacing : float, optional
        Nearest-neighbour column distance in pixels; estimated by :func:`column_spacing` when not
        given. Maxima closer than half of it are merged (the brighter wins).
    threshold : float
        Minimum prominence (smoothed peak minus the local background, a minimum over a disk of
        one spacing) as a fraction of the typical column's (the 90th percentile of the
        candidates' prominences). 0 keeps every local maximum.
    smooth : float, optional
        Gaussian pre-smoothing sigma in pixels (default spacing / 12, at least 0.5; 0: none).
    edge : int
        Maxima closer than this to the border are dropped (their columns are cut by it).
    com_radius : float, optional
        Radius of the centre-of-mass disk (default 0.3 × spacing, at least 1 px).
    min_snr : float
        The typical column (90th percentile of the candidates' prominence) must stand this many
        noise standard deviations of the smoothed image above its surroundings, or the image holds
        no columns (a blanked or empty frame gives none, not hundreds of noise maxima). Lattices
        reach 17–30 even at 5 electrons per unit intensity; pure noise about 6. Columns so
        overlapped that each stands less than that over its neighbours' tails still pass when the
        image's autocorrelation shows a 2-D lattice (:func:`lattice_strength`; noted in
        ``parameters["blank_frame_rule"]``). 0 turns it off.
    second_pass : bool
        Search the image minus the fitted first-pass columns for a dim sublattice (off by default:
        see :func:`~usidgpu.atoms.analysis.analyze`'s ``dim_columns``). Only new columns on a site
        of the cell that at least half the cells occupy, other than the brightest site, are kept.
        They are marked in ``FoundColumns.second_pass``; ``parameters["second_pass"]`` holds its
        settings.

    Returns
    -------
    FoundColumns
    """
    img = _host_image(image)
    if img.ndim != 2:
        raise InvalidInput(f"find_columns needs a 2-D image, got shape {img.shape}")
    if not np.isfinite(img).all():
        raise InvalidInput("the image contains NaN or infinite values")
    if not 0 <= threshold < 1:
        raise InvalidInput(f"threshold is a fraction in [0, 1), got {threshold}")
    if spacing is None:
        spacing = column_spacing(img)
    spacing = float(spacing)
    if not spacing > 1:
        raise InvalidInput(f"the column spacing must be more than 1 px, got {spacing}")
    sigma = max(0.5, spacing / 12) if smooth is None else float(smooth)
    smoothed = ndimage.gaussian_filter(img, sigma) if sigma > 0 else img
    footprint = _disk(max(1.0, 0.5 * spacing))
    is_max = smoothed == ndimage.maximum_filter(smoothed, footprint=footprint, mode="nearest")
    # a flat top (saturation) is one maximum: the centroid of each connected plateau
    labels, n = ndimage.label(is_max)
    if n == 0:
        return FoundColumns(np.zeros((0, 2)), np.zeros((0, 2), int), np.zeros(0), spacing)
    centroids = np.array(ndimage.center_of_mass(is_max, labels, np.arange(1, n + 1)))
    peaks = np.rint(centroids).astype(np.int64)
    background = disk_minimum_at(smoothed, peaks, max(1.0, spacing))
    prominence = smoothed[peaks[:, 0], peaks[:, 1]] - background
    h, w = img.shape
    keep = (
        (peaks[:, 0] >= edge)
        & (peaks[:, 0] < h - edge)
        & (peaks[:, 1] >= edge)
        & (peaks[:, 1] < w - edge)
        & (prominence > 0)
    )
    peaks, prominence, centroids = peaks[keep], prominence[keep], centroids[keep]
    lattice_rule = None
    if peaks.size and min_snr > 0:
        noise = noise_std(img) / (2 * np.sqrt(np.pi) * sigma) if sigma > 0 else noise_std(img)
        if np.percentile(prominence, 90) < min_snr * noise:
            # columns so overlapped that each stands little above its neighbours' tails, at a low
            # dose, still make a lattice that the autocorrelation shows far above any noise: kept
            strength = lattice_strength(img)
            if strength is None:
                empty = FoundColumns(np.zeros((0, 2)), np.zeros((0, 2), int), np.zeros(0), spacing)
                empty.parameters = dict(spacing=spacing, no_columns=f"typical prominence below {min_snr:g} × noise")
                return empty
            lattice_rule = (
                f"typical prominence below {min_snr:g} × noise, but a 2-D lattice in the autocorrelation at "
                f"{strength:.1f} × its noise level"
            )
    if peaks.size and threshold > 0:
        typical = np.percentile(prominence, 90)
        keep = prominence >= threshold * typical
        peaks, prominence, centroids = peaks[keep], prominence[keep], centroids[keep]
    peaks, prominence, centroids = _separate(peaks, prominence, centroids, 0.5 * spacing)
    radius = max(1.0, 0.3 * spacing) if com_radius is None else float(com_radius)
    positions = centre_of_mass(img, centroids, radius)
    parameters: dict[str, Any] = dict(spacing=spacing, threshold=threshold, smooth=sigma, edge=edge, com_radius=radius)
    if lattice_rule:
        parameters["blank_frame_rule"] = lattice_rule
    added = np.zeros(len(positions), dtype=bool)
    if second_pass and len(positions) >= 2:
        from .residual_search import residual_search

        # rounds: the columns found first are fitted better once their neighbours are in the
        # model, and then leave more of the rest visible (dim columns at a quarter of the bright
        # amplitude, σ a quarter of the spacing: a few in the first round, the rest after)
        rounds, total = 0, 0
        while rounds < SECOND_PASS_ROUNDS:
            rounds += 1
            new, snr, info = residual_search(img, positions, spacing, edge=edge)
            if not len(new):
                break
            total += len(new)
            positions, peaks, prominence, added = _with_added(
                new, positions, peaks, prominence, added, smoothed, spacing
            )
        if total:
            # a dim sublattice repeats with the lattice; peaks of residual noise (scan noise of a
            # real image, which the noise model does not know) land anywhere: keep the new
            # columns that sit on a site most cells have a column at
            keep = ~added | on_a_sublattice(positions, added, spacing, prominence)
            positions, peaks, prominence, added = positions[keep], peaks[keep], prominence[keep], added[keep]
        # the sites of the cell: a sublattice too dim (or too overlapped) for the residual's
        # column-by-column search stands out in the cell-averaged image; every cell's site is
        # then tested where no column was found
        from .residual_search import site_search

        first_prom = prominence[~added]
        strong = ~added & (prominence >= 0.6 * np.percentile(first_prom, 90)) if len(first_prom) else ~added
        new, _z, site_info, positions = site_search(img, positions, strong, spacing, edge=edge, brightness=prominence)
        if len(new):
            positions, peaks, prominence, added = _with_added(
                new, positions, peaks, prominence, added, smoothed, spacing
            )
        parameters["second_pass"] = dict(
            info, added=int(added.sum()), found=total + len(new), rounds=rounds, sites=site_info
        )
    return FoundColumns(
        positions=positions,
        peaks=peaks,
        prominence=prominence,
        spacing=spacing,
        parameters=parameters,
        second_pass=added,
    )


def _with_added(new, positions, peaks, prominence, added, smoothed, spacing):
    """The columns found so far with ``new`` ones appended (their peak pixel and prominence in
    the smoothed image; marked ``added``)."""
    new_peaks = np.clip(np.rint(new).astype(np.int64), 0, np.array(smoothed.shape) - 1)
    new_prominence = smoothed[new_peaks[:, 0], new_peaks[:, 1]] - disk_minimum_at(
        smoothed, new_peaks, max(1.0, spacing)
    )
    return (
        np.concatenate([positions, new]),
        np.concatenate([peaks, new_peaks]),
        np.concatenate([prominence, new_prominence]),
        np.concatenate([added, np.ones(len(new), dtype=bool)]),
    )


#: A site of the cell holds a sublattice when at least this share of the cells has a column there
#: (a real sublattice fills nearly every cell; on the Gatan survey image, peaks of scan noise fill 28 %).
SUBLATTICE_OCCUPANCY = 0.5


def on_a_sublattice(positions: np.ndarray, added: np.ndarray, spacing: float, prominence: np.ndarray) -> np.ndarray:
    """For the columns marked ``added``: True where the column sits on a site of the lattice cell
    (of the first-pass columns) that at least :data:`SUBLATTICE_OCCUPANCY` of the cells occupy,
    counting every column, and that is not the site of the brightest first-pass columns (the
    second pass looks for dim sublattices; a bright site the first pass left empty is a vacancy
    or a damaged column to report, not to fill). Without a lattice to refer to (too few columns,
    no periodicity) every added column is kept."""
    from .lattice import _torus_clusters, base_vectors

    first = positions[~added]
    out = np.zeros(len(positions), dtype=bool)
    # the cell of the bright columns: with a dim sublattice mostly found already, all columns
    # together form a smaller cell in which bright and dim sites coincide
    strong = prominence[~added] >= 0.6 * np.percentile(prominence[~added], 90)
    try:
        vectors = base_vectors(first[strong] if strong.sum() >= 8 else first, spacing)
    except (InvalidInput, ValueError, np.linalg.LinAlgError):
        out[added] = True
        return out
    if not np.isfinite(np.linalg.det(vectors)) or abs(float(np.linalg.det(vectors))) <= 0:
        out[added] = True
        return out
    # fractional coordinates modulo the cell, and their distances to one another in pixels
    frac = np.linalg.solve(vectors.T, (positions - first[0]).T).T
    wrapped = frac - np.floor(frac)
    radius = 0.15 * float(np.linalg.norm(vectors, axis=1).min())

    def torus_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        delta = a[:, None, :] - b[None, :, :]
        delta -= np.rint(delta)
        return np.linalg.norm(delta @ vectors, axis=2)

    sites = _torus_clusters(wrapped[~added], vectors, radius)
    nearest = np.argmin(torus_distance(wrapped[~added], sites), axis=1)
    brightness = [np.median(prominence[~added][nearest == k]) if (nearest == k).any() else -np.inf
                  for k in range(len(sites))]  # fmt: skip
    bright_site = sites[int(np.argmax(brightness))][None, :]
    cells = max(1.0, len(first) / len(sites))
    new = np.flatnonzero(added)
    for start in range(0, len(new), 256):  # bounded memory: 256 added columns against all at a time
        chunk = new[start : start + 256]
        occupancy = (torus_distance(wrapped, wrapped[chunk]) <= radius).sum(axis=0)
        off_bright = torus_distance(wrapped[chunk], bright_site)[:, 0] > radius
        out[chunk] = (occupancy >= SUBLATTICE_OCCUPANCY * cells) & off_bright
    return out


#: A frame holds a lattice when two non-collinear maxima of its autocorrelation (normalized by
#: the pixel pairs of each lag, the zero lag 1) reach this many times 1/√(pixels): white noise
#: reaches about 4.5 (the largest of thousands of lags), the lattices of issue 19's grid at a dose
#: of 20 counts per unit amplitude 50–130.
LATTICE_STRENGTH = 15.0


def lattice_strength(image: np.ndarray) -> float | None:
    """How far a 2-D lattice stands out of the image's autocorrelation, in units of the noise
    level 1/√(pixels) (None: no two non-collinear maxima reach :data:`LATTICE_STRENGTH`; a frame
    of noise, a flat frame, or scan lines, which repeat along one direction only)."""
    img = _host_image(image)
    top, left = (max(0, (n - SPACING_CROP) // 2) for n in img.shape)
    img = img[top : top + SPACING_CROP, left : left + SPACING_CROP]
    img = img - img.mean()
    h, w = img.shape
    size = (2 * h, 2 * w)
    ac = np.fft.fftshift(np.fft.irfft2(np.abs(np.fft.rfft2(img, s=size)) ** 2, s=size))
    pairs = np.fft.fftshift(np.fft.irfft2(np.abs(np.fft.rfft2(np.ones_like(img), s=size)) ** 2, s=size))
    ry, rx = h // 3, w // 3
    ac = ac[h - ry : h + ry + 1, w - rx : w + rx + 1] / np.maximum(pairs[h - ry : h + ry + 1, w - rx : w + rx + 1], 1)
    if not ac[ry, rx] > 0:
        return None
    ac = ac / ac[ry, rx]
    unit = 1.0 / np.sqrt(img.size)
    is_max = (ac == ndimage.maximum_filter(ac, size=3)) & (ac >= LATTICE_STRENGTH * unit)
    is_max[ry - 2 : ry + 3, rx - 2 : rx + 3] = False  # the zero lag's own peak
    ys, xs = np.nonzero(is_max)
    if len(ys) < 2:
        return None
    lags = np.stack([ys - ry, xs - rx], axis=1).astype(float)
    heights = ac[ys, xs]
    # a lattice's peaks are isolated; stripes (scan lines, a 1-D pattern) give ridges, flat along
    # their length: a peak counts where it stands 10 % (and five noise levels) above everything on
    # a circle around it of a quarter of its lag
    angle = np.linspace(0, 2 * np.pi, 16, endpoint=False)
    reach = np.maximum(2.0, 0.25 * np.hypot(*lags.T))[:, None]
    ring = ndimage.map_coordinates(
        ac, [ys[:, None] + reach * np.sin(angle), xs[:, None] + reach * np.cos(angle)], order=1, mode="nearest"
    )
    isolated = heights - ring.max(axis=1) >= np.maximum(0.1 * heights, 5 * unit)  # and clear of the noise
    lags, heights = lags[isolated], heights[isolated]
    if len(heights) < 2:
        return None
    first = lags[np.argmax(heights)]
    cross = np.abs(first[0] * lags[:, 1] - first[1] * lags[:, 0]) / (np.hypot(*first) * np.hypot(*lags.T))
    other = cross > np.sin(np.radians(20))  # at least 20° from the strongest lag's direction
    if not other.any():
        return None
    return float(min(heights.max(), heights[other].max()) / unit)


def noise_std(image: np.ndarray) -> float:
    """White-noise standard deviation of an image, robustly from its neighbour differences (the
    median absolute deviation ignores the few steep column flanks)."""
    d = np.diff(_host_image(image), axis=1).ravel() / np.sqrt(2)
    return float(1.4826 * np.median(np.abs(d - np.median(d))))


def _separate(peaks: np.ndarray, prominence: np.ndarray, centroids: np.ndarray, min_distance: float):
    """Drop maxima closer than ``min_distance`` to a more prominent one (greedy, brightest first)."""
    if len(peaks) < 2:
        return peaks, prominence, centroids
    order = np.argsort(-prominence, kind="stable")
    tree = cKDTree(centroids)
    alive = np.ones(len(peaks), dtype=bool)
    for i in order:
        if not alive[i]:
            continue
        for j in tree.query_ball_point(centroids[i], min_distance):
            if j != i:
                alive[j] = False
    return peaks[alive], prominence[alive], centroids[alive]


def centre_of_mass(image: np.ndarray, positions: np.ndarray, radius: float, iterations: int = 2) -> np.ndarray:
    """Sub-pixel positions by the centre of mass in a disk, background (disk minimum) removed.

    Parameters
    ----------
    image : 2-D array
    positions : (N, 2) start positions (y, x)
    radius : float
        Disk radius in pixels.
    iterations : int
        The disk is re-centred on the new position this many times.

    Returns
    -------
    (N, 2) array
    """
    pos = asnumpy(positions).astype(np.float64)  # a copy
    if len(pos) == 0:
        return pos
    r = int(np.ceil(radius))
    for _ in range(iterations):
        values, inside, grid = gather(np, image, pos, r)
        dy = grid[:, 0, :, None] - pos[:, 0, None, None]
        dx = grid[:, 1, None, :] - pos[:, 1, None, None]
        disk = inside & (dy * dy + dx * dx <= radius * radius)
        big = np.where(disk, values, np.inf).min(axis=(1, 2))
        weight = np.where(disk, values - big[:, None, None], 0.0)
        total = weight.sum(axis=(1, 2))
        ok = total > 0
        cy = (weight * grid[:, 0, :, None]).sum(axis=(1, 2))
        cx = (weight * grid[:, 1, None, :]).sum(axis=(1, 2))
        new = np.stack([cy, cx], axis=1) / np.where(ok, total, 1.0)[:, None]
        pos = np.where(ok[:, None], new, pos)
    return pos
