"""The second pass of the column finder: columns that the first pass could not see, found in the
image minus the columns it did see.

A dim column beside bright ones is a small bump on their tails: a local maximum of the image
only where the tails are flat, and always below the first pass's prominence threshold (a
fraction of the typical, i.e. bright, column's) when its amplitude is near that fraction. Here
the first pass's columns are fitted and subtracted (:mod:`usidgpu.atoms.model_image`), and the
rest is searched with the matched filter of a column: the correlation with the column's
Gaussian, made zero-mean over its window so that a locally constant background cancels, divided
by its noise standard deviation (from the image's noise model). Under noise alone that is a
standard normal number at every pixel; a column of amplitude A stands ``A·√(Σg²/variance)``
noise units tall. A candidate must stand :data:`MIN_SNR` noise units and a tenth of the typical
column's amplitude above its surroundings (the second keeps the subtraction's small misfits on
real columns from counting at high dose), be the strongest within half a spacing, and lie
farther than :data:`EXCLUSION` × the spacing from every column already found (a misfit of a
column is a ring or a dipole on it, not a peak half a spacing away). No trial fit decides: a
seven-parameter fit of a weak column on a small window can fall into a wide dome on a negative
background even where the column is plain, which would drop real columns.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from .gaussian import AMPLITUDE, SIGMA_X, SIGMA_Y

#: Matched-filter signal-to-noise a second-pass column needs (false columns on pure noise: about
#: 3e-7 per independent patch of the image, well under one per 10⁶ columns' area).
MIN_SNR = 5.0
#: ... and its amplitude, as a fraction of the typical (90th percentile) fitted amplitude.
MIN_FRACTION = 0.1
#: A candidate closer than this × the column spacing to a column already found is that column's
#: own misfit, not a column.
EXCLUSION = 0.5


def residual_search(
    image: np.ndarray,
    positions: np.ndarray,
    spacing: float,
    edge: int = 1,
    min_snr: float = MIN_SNR,
    neighbours: str = "none",
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Columns missing from ``positions``, found in the image minus the fitted ``positions``.

    Parameters
    ----------
    image : 2-D float64 array (host)
    positions : (N, 2) columns already found (y, x)
    spacing : float
        Nearest-neighbour column distance (px).
    edge : int
        Candidates closer than this to the border are dropped (as in the first pass).
    min_snr : float
        Matched-filter signal-to-noise a new column needs.
    neighbours : {"none", "subtract"}
        The fit whose columns are subtracted (:func:`usidgpu.atoms.fit.refine`). The single-column
        fit (default): a neighbour-aware one subtracts every column's errors from its neighbours
        too, and the holes a bad fit leaves in the residual ring it with false peaks.

    Returns
    -------
    new : (M, 2) start positions of the new columns
    snr : (M,) their matched-filter signal-to-noise
    info : dict
        The filter width, noise model and thresholds used.
    """
    from .fit import refine
    from .model_image import column_image, fit_noise, render_radius
    from .neighbours import _plausible, _typical_widths, amplitude_groups, fitted_form, pooled_models

    img = np.asarray(image, dtype=np.float64)
    h, w = img.shape
    empty: tuple[np.ndarray, np.ndarray, dict] = (np.zeros((0, 2)), np.zeros(0), {})
    if len(positions) < 2:
        return empty
    fit = refine(img, positions, radius=0.5 * spacing, device="cpu", neighbours=neighbours)
    params = fit.params
    widths = _typical_widths(params)
    reliable = _plausible(params, widths)
    if reliable.sum() < 2:
        return empty
    p = fitted_form(params)
    drawn = pooled_models(p, amplitude_groups(params[:, AMPLITUDE], reliable), reliable)
    rho = render_radius(p[reliable], cap=2.0 * spacing)
    residual = img - column_image(np, (h, w), drawn, rho)
    noise = fit_noise(img, p[reliable], fit.start[reliable], 0.5 * spacing)
    sigma = float(np.median(np.sqrt(params[reliable, SIGMA_X] * params[reliable, SIGMA_Y])))
    score, amplitude = matched_filter(residual, sigma, noise.variance(np, ndimage.gaussian_filter(img, sigma)))
    typical = float(np.percentile(params[reliable, AMPLITUDE], 90))
    info = dict(filter_sigma=sigma, min_snr=min_snr, min_amplitude=MIN_FRACTION * typical, noise=noise.as_dict())
    candidates = (score >= min_snr) & (amplitude >= MIN_FRACTION * typical)
    footprint = _disk(max(1.0, 0.5 * spacing))
    peak = candidates & (score == ndimage.maximum_filter(score, footprint=footprint, mode="nearest"))
    ys, xs = np.nonzero(peak)
    keep = (ys >= edge) & (ys < h - edge) & (xs >= edge) & (xs < w - edge)
    ys, xs = ys[keep], xs[keep]
    if len(ys):
        d, _ = cKDTree(positions).query(np.stack([ys, xs], axis=1).astype(np.float64))
        ys, xs = ys[d > EXCLUSION * spacing], xs[d > EXCLUSION * spacing]
    if len(ys) == 0:
        return np.zeros((0, 2)), np.zeros(0), info
    snr = score[ys, xs]
    # strongest first, a minimum separation of half the spacing between new columns
    order = np.argsort(-snr, kind="stable")
    ys, xs, snr = ys[order], xs[order], snr[order]
    chosen: list[int] = []
    for k in range(len(ys)):
        if all((ys[k] - ys[c]) ** 2 + (xs[k] - xs[c]) ** 2 >= (0.5 * spacing) ** 2 for c in chosen):
            chosen.append(k)
    return _vertex(score, ys[chosen], xs[chosen]), snr[chosen], info


def matched_filter(residual: np.ndarray, sigma: float, variance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Signal-to-noise and amplitude maps of a Gaussian column of width ``sigma`` on a locally
    constant background.

    At each pixel: the least-squares amplitude of a Gaussian centred there plus a constant, over
    the pixels of the image within its (2⌈3σ⌉+1)² box — the correlation with the Gaussian made
    zero-mean over those pixels (a background level cancels; at the border over the pixels that
    exist, not over padding), divided by its squared norm — and that amplitude over its standard
    deviation (the variance taken as locally constant).
    """
    r = max(1, int(math.ceil(3.0 * sigma)))
    y, x = np.mgrid[-r : r + 1, -r : r + 1]
    g = np.exp(-(x * x + y * y) / (2.0 * sigma * sigma))
    box = np.ones_like(g)
    ones = np.ones_like(residual, dtype=np.float64)

    def corr(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
        return ndimage.correlate(image, kernel, mode="constant", cval=0.0)

    count, g_sum, g2_sum = corr(ones, box), corr(ones, g), corr(ones, g * g)
    mean_g = g_sum / count  # the Gaussian's mean over the box's pixels inside the image
    signal = corr(residual, g) - mean_g * corr(residual, box)
    norm = np.maximum(g2_sum - g_sum * mean_g, 1e-300)  # Σ (g − mean)² over those pixels
    amplitude = signal / norm
    score = signal / np.sqrt(np.maximum(variance, 1e-300) * norm)
    return score, amplitude


def _vertex(score: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Sub-pixel maxima of ``score`` at the integer peaks (a parabola through each axis)."""
    h, w = score.shape
    out = np.stack([ys, xs], axis=1).astype(np.float64)
    for axis, (dy, dx) in enumerate(((1, 0), (0, 1))):
        ok = (ys - dy >= 0) & (ys + dy < h) & (xs - dx >= 0) & (xs + dx < w)
        m = score[np.clip(ys - dy, 0, h - 1), np.clip(xs - dx, 0, w - 1)]
        c = score[ys, xs]
        p = score[np.clip(ys + dy, 0, h - 1), np.clip(xs + dx, 0, w - 1)]
        d = m - 2 * c + p
        shift = np.where(ok & (d < 0), 0.5 * (m - p) / np.where(d < 0, d, -1.0), 0.0)
        out[:, axis] += np.clip(shift, -0.5, 0.5)
    return out


def _disk(radius: float) -> np.ndarray:
    r = int(np.floor(radius))
    y, x = np.mgrid[-r : r + 1, -r : r + 1]
    return (y * y + x * x) <= radius * radius


# ------------------------------------------------------------------------------ the cell's sites
# A dim column between bright ones that overlap it is hard to see column by column: its own
# bump is a fraction of the bright tails around it, and a single-column fit of each bright
# column (whose background and width absorb the dim tails) leaves too little of it in the
# residual. Averaged over every cell of the lattice, though, it is plain. So: fold the image into
# the cell of the bright columns, fit the averaged cell with periodic Gaussians of one shape and
# find its sites; then test every cell's site where no column was found, by one joint linear
# least-squares fit of every column (found or predicted, one shape) and a smooth background.

#: A site of the cell holds a sublattice when its amplitude in the cell-averaged image stands this
#: many standard errors (the averaged cell of a noise-only residual reaches about 4).
MOTIF_Z = 10.0
#: It must also reach :data:`MIN_FRACTION` of the brightest site's amplitude, and lie two column
#: widths from every other site. At most this many sites are added to the origin's.
MAX_NEW_SITES = 3
#: A predicted site holds a column when that is the more probable of the two hypotheses, given
#: its fitted amplitude (:func:`occupied`) ... and its amplitude stands this many standard errors
#: above zero (only the sites of a sublattice that the cell average shows plainly are tested, so
#: the look-elsewhere effect of a search is absent; this floor only matters where the site's
#: columns are so faint that the two hypotheses barely differ).
SITE_Z = 1.0
#: EM rounds of the occupancy estimate (:func:`occupied`); it settles in a few dozen.
OCCUPANCY_ROUNDS = 100
#: The cell is averaged over at most this many pixels (a random, reproducible subset).
MOTIF_PIXELS = 300_000
#: Neighbours modelled jointly with a tested site (the nearest ones within reach).
MAX_NEIGHBOURS = 16


def site_search(
    image: np.ndarray,
    positions: np.ndarray,
    strong: np.ndarray,
    spacing: float,
    edge: int = 1,
    brightness: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, dict, np.ndarray]:
    """Columns missing from ``positions`` at the sites of the lattice cell.

    Parameters
    ----------
    image : 2-D float64 array (host)
    positions : (N, 2) columns found so far (y, x)
    strong : (N,) bool
        The bright columns: their cell is the one folded, and each is the origin of a cell.
    spacing : float
        Nearest-neighbour column distance (px).
    edge : int
        Sites closer than this to the border are not tested.
    brightness : (N,) array, optional
        The columns' prominence: where the strong columns sit on several sites of their cell,
        those of the brightest site are the origins.

    Returns
    -------
    new : (M, 2) positions of the new columns
    z : (M,) their amplitude over its standard error
    info : dict
        The cell, its sites (fractional), their amplitudes, the column shape, each site's
        estimated occupancy and column amplitude (:func:`occupied`).
    refined : (N, 2)
        ``positions`` where the joint fit of all columns moved them (each by at most a quarter
        of the shortest distance between two sites; where nothing was fitted, or a column moved
        out of the frame, as given).
    """
    from .lattice import base_vectors

    img = np.asarray(image, dtype=np.float64)
    h, w = img.shape
    positions = np.asarray(positions, dtype=np.float64).reshape(-1, 2)
    nothing = (np.zeros((0, 2)), np.zeros(0))
    chosen = strong if strong.sum() >= 8 else np.ones(len(positions), dtype=bool)
    origins = positions[chosen]
    if len(origins) < 8:
        return (*nothing, {}, positions)
    try:
        vectors = base_vectors(origins, spacing)
    except (ValueError, np.linalg.LinAlgError):
        return (*nothing, {}, positions)
    if not np.isfinite(vectors).all() or abs(np.linalg.det(vectors)) < 1.0:
        return (*nothing, {}, positions)
    # the strong columns may sit on two sites of that cell (a sublattice nearly as bright): the
    # origins are those of one site, the brightest
    if brightness is not None:
        origins = _one_site(origins, np.asarray(brightness, dtype=np.float64)[chosen], vectors)
        if len(origins) < 8:
            return (*nothing, {}, positions)
    # a found position leans towards its own noise (the finder picks maxima): folded around such
    # origins, the noise piles up at the cell's corner as a sharp false peak. Each origin is
    # placed where its neighbours put it instead (the lattice, locally)
    origins = _neighbour_sites(origins, vectors)
    motif = fold_cell(img, origins, vectors)
    if motif is None:
        return (*nothing, {}, positions)
    cell = fit_cell(motif, vectors)
    info: dict = dict(
        vectors=vectors.tolist(),
        sites=cell["sites"].tolist(),
        site_amplitudes=cell["amplitudes"].tolist(),
        site_z=cell["z"].tolist(),
        form=list(cell["form"]),
    )
    sites, form = cell["sites"], np.asarray(cell["form"])
    sigma_major = _major_sigma(form)
    # the shortest distance between two columns of the cell, and a column's exclusion disk
    shifts = np.array([[i, j] for i in (-1, 0, 1) for j in (-1, 0, 1)], dtype=np.float64)
    diff = (sites[:, None, None, :] - sites[None, :, None, :] - shifts[None, None, :, :]) @ vectors
    dist = np.linalg.norm(diff, axis=-1)
    dmin = float(dist[dist > 1e-9].min()) if (dist > 1e-9).any() else float(spacing)
    exclusion = 0.5 * dmin
    predicted, site_of = _predict(origins, sites, vectors)
    d, nearest = cKDTree(positions).query(predicted)
    taken = d <= exclusion
    # the columns beyond the border (and at it) put their tails into the frame: drawn, not tested
    reach = 3.5 * sigma_major
    near_frame = (
        (predicted[:, 0] >= -reach)
        & (predicted[:, 0] <= h - 1 + reach)
        & (predicted[:, 1] >= -reach)
        & (predicted[:, 1] <= w - 1 + reach)
    )
    keep_pred = ~taken & near_frame
    candidates, cand_site = predicted[keep_pred], site_of[keep_pred]
    tested = (
        (candidates[:, 0] >= edge)
        & (candidates[:, 0] <= h - 1 - edge)
        & (candidates[:, 1] >= edge)
        & (candidates[:, 1] <= w - 1 - edge)
    )
    info.update(tested=int(tested.sum()), exclusion=exclusion)
    if not tested.any():
        return (*nothing, info, positions)
    # every column and every candidate fitted together: a candidate's amplitude is what the image
    # holds there beyond its neighbours' Gaussians
    radius = max(1.5, 2.0 * sigma_major)
    pool = np.concatenate([positions, candidates])
    moved = joint_fit(img, pool, form, radius, sigma_major, max_shift=0.25 * dmin)
    # the decision reads each candidate's amplitude at its predicted site: moved, a candidate on an
    # empty cell climbs the highest bump of noise within its reach, and its amplitude is no
    # longer centred on zero (at 20 counts, on a dim sublattice with many vacancies, that filled
    # a fifth of them). One more linear solve, the found columns where they moved to
    joint = joint_fit(
        img, np.concatenate([moved["position"][: len(positions)], candidates]), form, radius, sigma_major, 0.0, 1
    )
    fits = {k: v[len(positions) :] for k, v in joint.items()}
    # each site's typical amplitude: the median over all its columns, found and tested (the found
    # ones alone are the brighter ones where the first pass found only some)
    amplitude = fits["amplitude"]
    error = np.sqrt(fits["variance"] * fits["leverage"])
    z = amplitude / error
    typical, spread, occupancy, level = (np.zeros(len(sites)) for _ in range(4))
    present = np.zeros(len(candidates), dtype=bool)
    for k in range(len(sites)):
        mine = np.unique(nearest[taken & (site_of == k)])
        own = joint["amplitude"][mine]
        own_error = np.sqrt(joint["variance"][mine] * joint["leverage"][mine])
        trial = tested & (cand_site == k)
        tried = amplitude[trial]
        both = np.concatenate([own, tried])
        typical[k] = float(np.median(both)) if len(both) else 0.0
        # the columns' own spread of amplitude (thickness, defocus), beyond their noise: from the
        # found ones, a robust spread less the noise's share
        floor = 0.0
        if len(own) >= 8:
            mad = 1.4826 * float(np.median(np.abs(own - np.median(own))))
            spread[k] = math.sqrt(max(mad**2 - float(np.median(own_error**2)), 0.0))
            floor = 0.5 * float(np.median(own))
        if trial.any() and typical[k] > 0:
            present[trial], occupancy[k], level[k] = occupied(tried, error[trial], typical[k], spread[k], floor)
    # sites the averaged cell does not hold (too faint, or not significant there) are not filled
    real_site = (cell["z"] >= MOTIF_Z) & (cell["amplitudes"] >= MIN_FRACTION * cell["amplitudes"].max())
    keep = tested & real_site[cand_site] & present & (z >= SITE_Z)
    new = moved["position"][len(positions) :][keep]
    ok = (new[:, 0] >= edge) & (new[:, 0] <= h - 1 - edge) & (new[:, 1] >= edge) & (new[:, 1] <= w - 1 - edge)
    info.update(
        typical=typical.tolist(),
        spread=spread.tolist(),
        occupancy=occupancy.tolist(),
        level=level.tolist(),
        added=int(ok.sum()),
    )
    # the columns found so far, where the joint fit put them (inside the frame): a maximum of the
    # smoothed image is pulled by its neighbours' tails and its own noise, by more than the match
    # radius on overlapped columns at 20 counts; the joint model puts every neighbour's tail in
    refined = moved["position"][: len(positions)]
    stays = (refined[:, 0] >= 0) & (refined[:, 0] <= h - 1) & (refined[:, 1] >= 0) & (refined[:, 1] <= w - 1)
    refined = np.where(stays[:, None], refined, positions)
    # two detections of one column may be drawn together: those stay where they were found
    crowded = cKDTree(np.concatenate([refined, new[ok]])).query_pairs(exclusion, output_type="ndarray").ravel()
    crowded = crowded[crowded < len(positions)]
    refined[crowded] = positions[crowded]
    info["refined"] = int(len(positions) - len(np.unique(crowded)) - (~stays).sum())
    return new[ok], z[keep][ok], info, refined


def occupied(
    amplitude: np.ndarray, error: np.ndarray, typical: float, spread: float = 0.0, floor: float = 0.0
) -> tuple[np.ndarray, float, float]:
    """Which of one site's tested cells hold a column: the more probable hypothesis for each.

    The cells tested are those where the first pass found nothing, a mixture of empty cells
    (vacancies) and columns it missed, in a proportion that differs from image to image: nearly
    all real where a whole sublattice was too dim for the first pass, nearly all vacancies where
    it found most. A fixed cut (say, half the typical amplitude) makes the two errors equally
    likely per cell, so it misses a few percent of the columns of a faint sublattice whose cells
    are nearly all occupied; and a typical amplitude taken as the median of such a mixture sits
    low, between the two. Here both the proportion and the columns' amplitude are estimated from
    the amplitudes themselves (expectation–maximization of a two-component mixture: empty cells
    at zero, columns at one amplitude with their own spread) and each cell takes the hypothesis of
    higher posterior probability: the fewest errors in all.

    Parameters
    ----------
    amplitude : (M,) fitted amplitudes of the tested cells
    error : (M,) their standard errors
    typical : float
        The site's typical column amplitude: where the estimate starts.
    spread : float
        The columns' own amplitude spread (standard deviation) beyond the noise.
    floor : float
        The columns' amplitude is not estimated below this (half the amplitude of the columns
        already found on the site: missed ones are dimmer, not a different kind).

    Returns
    -------
    present : (M,) bool
    occupancy : float
        The estimated fraction of tested cells that hold a column.
    level : float
        The estimated amplitude of their columns.
    """
    a = np.asarray(amplitude, dtype=np.float64)
    var_absent = np.maximum(np.asarray(error, dtype=np.float64) ** 2, 1e-300)
    var_present = var_absent + spread**2
    # a uniform prior on the proportion (one pseudo-cell of each kind) keeps it off 0 and 1
    pi, level = 0.5, max(float(typical), float(floor))

    def posterior(pi: float, level: float) -> np.ndarray:
        # log-likelihood ratio of present over absent, per cell (Gaussian amplitudes)
        llr = (
            0.5 * np.log(var_absent / var_present)
            - 0.5 * (a - level) ** 2 / var_present
            + 0.5 * a**2 / var_absent
            + math.log(pi / (1.0 - pi))
        )
        return 1.0 / (1.0 + np.exp(-np.clip(llr, -700.0, 700.0)))

    for _ in range(OCCUPANCY_ROUNDS):
        post = posterior(pi, level)
        new_pi = (post.sum() + 1.0) / (len(a) + 2.0)
        weight = post / var_present
        new_level = float((weight * a).sum() / weight.sum()) if weight.sum() > 0 else level
        new_level = max(new_level, float(floor), 1e-12)
        done = abs(new_pi - pi) < 1e-6 and abs(new_level - level) <= 1e-6 * abs(level)
        pi, level = new_pi, new_level
        if done:
            break
    return posterior(pi, level) >= 0.5, float(pi), float(level)


def _one_site(origins: np.ndarray, brightness: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """The origins on one site of the cell, the brightest (median) of those with at least a
    tenth of them: columns one whole cell translation apart (within a quarter of the cell edge)
    are on the same site, and the sites are the connected groups (local: a drifting scan does
    not split them)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    reach = 1.6 * float(np.linalg.norm(vectors, axis=1).max())
    tol = 0.25 * float(np.linalg.norm(vectors, axis=1).min())
    tree = cKDTree(origins)
    pairs = tree.sparse_distance_matrix(tree, reach, output_type="coo_matrix")
    i, j = pairs.row, pairs.col
    frac = np.linalg.solve(vectors.T, (origins[i] - origins[j]).T).T
    same = np.linalg.norm((frac - np.rint(frac)) @ vectors, axis=1) <= tol
    graph = coo_matrix((np.ones(same.sum()), (i[same], j[same])), shape=(len(origins),) * 2)
    _, label = connected_components(graph, directed=False)
    count = np.bincount(label)
    big = np.flatnonzero(count >= max(2, 0.1 * len(origins)))
    if not len(big):
        return origins
    best = max(big, key=lambda k: float(np.median(brightness[label == k])))
    return origins[label == best]


def _neighbour_sites(origins: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """Each origin where its neighbours within one and a half cells put it (each one's position plus
    the whole cell translation between them, averaged); one without such neighbours stays."""
    reach = 1.6 * float(np.linalg.norm(vectors, axis=1).max())
    tol = 0.3 * float(np.linalg.norm(vectors, axis=1).min())
    tree = cKDTree(origins)
    pairs = tree.sparse_distance_matrix(tree, reach, output_type="coo_matrix")
    i, j = pairs.row, pairs.col
    keep = i != j
    i, j = i[keep], j[keep]
    t = np.rint(np.linalg.solve(vectors.T, (origins[i] - origins[j]).T).T)
    guess = origins[j] + t @ vectors
    good = np.linalg.norm(guess - origins[i], axis=1) <= tol
    i, guess = i[good], guess[good]
    count = np.bincount(i, minlength=len(origins)).astype(np.float64)
    total = np.stack([np.bincount(i, guess[:, k], minlength=len(origins)) for k in (0, 1)], 1)
    return np.where(count[:, None] > 0, total / np.maximum(count, 1)[:, None], origins)


def fold_cell(
    image: np.ndarray, origins: np.ndarray, vectors: np.ndarray, max_pixels: int = MOTIF_PIXELS
) -> dict | None:
    """The image averaged over the cell: each pixel at its fractional coordinates from its
    nearest origin (a local origin: a drifting scan does not smear the average), binned about
    half a pixel wide. Returns the bins' mean, the variance of that mean and their centres
    (fractional), or None when too few pixels lie within a cell of an origin."""
    h, w = image.shape
    n = np.clip(np.rint(2 * np.linalg.norm(vectors, axis=1)).astype(int), 8, 64)
    rng = np.random.default_rng(0)
    if h * w > max_pixels:
        flat = np.sort(rng.choice(h * w, max_pixels, replace=False))
    else:
        flat = np.arange(h * w)
    pts = np.stack(np.divmod(flat, w), axis=1).astype(np.float64)
    dist, idx = cKDTree(origins).query(pts)
    near = dist <= 1.5 * float(np.linalg.norm(vectors, axis=1).max())
    pts, idx, flat = pts[near], idx[near], flat[near]
    frac = np.linalg.solve(vectors.T, (pts - origins[idx]).T).T
    frac -= np.floor(frac)
    b = np.minimum((frac * n).astype(np.int64), n - 1)
    k = b[:, 0] * n[1] + b[:, 1]
    v = image.ravel()[flat]
    count = np.bincount(k, minlength=n[0] * n[1]).astype(np.float64)
    if (count < 3).any():
        return None
    mean = np.bincount(k, v, minlength=n[0] * n[1]) / count
    var = np.bincount(k, v * v, minlength=n[0] * n[1]) / count - mean**2
    centres = np.stack(np.meshgrid((np.arange(n[0]) + 0.5) / n[0], (np.arange(n[1]) + 0.5) / n[1], indexing="ij"), -1)
    return dict(
        mean=mean.reshape(n), variance=np.maximum(var, 1e-300).reshape(n) / count.reshape(n), centres=centres, n=n
    )


def _major_sigma(form: np.ndarray) -> float:
    qa, qb, qc = form
    lam = 0.5 * (qa + qc) - np.sqrt((0.5 * (qa - qc)) ** 2 + qb * qb)
    return float(np.sqrt(0.5 / max(lam, 1e-12)))


def _periodic_basis(
    centres: np.ndarray, sites: np.ndarray, vectors: np.ndarray, form: np.ndarray, reach: int
) -> np.ndarray:
    """(bins, sites) the periodic sum of each site's Gaussian at the bin centres."""
    qa, qb, qc = form
    c = centres.reshape(-1, 2)
    out = np.zeros((len(c), len(sites)))
    r = np.arange(-reach, reach + 1)
    t = np.stack(np.meshgrid(r, r, indexing="ij"), -1).reshape(-1, 2).astype(np.float64)
    for j, s in enumerate(sites):
        d = (c[:, None, :] - s[None, None, :] - t[None, :, :]) @ vectors  # (bins, T, 2) = (dy, dx)
        dy, dx = d[..., 0], d[..., 1]
        out[:, j] = np.exp(-(qa * dx * dx + 2 * qb * dx * dy + qc * dy * dy)).sum(axis=1)
    return out


def fit_cell(motif: dict, vectors: np.ndarray) -> dict:
    """Periodic Gaussians of one (elliptical) shape plus a constant fitted to the averaged cell,
    sites added one at a time where the residual's matched filter is highest (the origin's site
    first), up to :data:`MAX_NEW_SITES` more while each new site is significant."""
    from scipy.optimize import least_squares

    from .gaussian import quadratic_form

    m, var, centres, n = motif["mean"].ravel(), motif["variance"].ravel(), motif["centres"], motif["n"]
    wt = 1.0 / np.sqrt(var)
    edge_len = float(np.linalg.norm(vectors, axis=1).min())

    def form_of(p: np.ndarray) -> np.ndarray:
        return np.array(quadratic_form(np.exp(p[0]), np.exp(p[1]), p[2]))

    def solve(p: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        form = form_of(p)
        sites = p[3:].reshape(k, 2)
        reach = int(np.ceil(4 * _major_sigma(form) / edge_len)) + 1
        x = np.concatenate([_periodic_basis(centres, sites, vectors, form, min(reach, 4)), np.ones((len(m), 1))], 1)
        xw = x * wt[:, None]
        coef, *_ = np.linalg.lstsq(xw, m * wt, rcond=None)
        return coef, xw, x

    def residual(p: np.ndarray, k: int) -> np.ndarray:
        coef, xw, _ = solve(p, k)
        return xw @ coef - m * wt

    # the origin's site, at a width from a coarse scan
    best = None
    for f in (0.06, 0.09, 0.13, 0.18, 0.25, 0.35):
        p = np.array([np.log(f * edge_len), np.log(f * edge_len), 0.0, 0.0, 0.0])
        cost = float(np.sum(residual(p, 1) ** 2))
        if best is None or cost < best[0]:
            best = (cost, p)
    assert best is not None  # the scan above tried at least one width
    p = best[1]
    k = 1
    p = least_squares(residual, p, args=(k,), method="lm", max_nfev=400).x
    while k < 1 + MAX_NEW_SITES:
        coef, xw, x = solve(p, k)
        resid = (m - x @ coef).reshape(n)
        form = form_of(p)
        kernel = _periodic_basis(centres, np.zeros((1, 2)), vectors, form, 4).reshape(n)
        corr = np.real(np.fft.ifft2(np.fft.fft2(resid) * np.conj(np.fft.fft2(kernel))))
        # the matched filter as the correlation lag: a lag of (i, j) bins is a site at (i, j) / n
        sites = p[3:].reshape(k, 2)
        lag = np.stack(np.meshgrid(np.arange(n[0]) / n[0], np.arange(n[1]) / n[1], indexing="ij"), -1)
        # (the kernel's peak lies half a bin before its first bin centre: a lag of i bins puts
        # the site at i / n, not at a bin centre)
        sep = _torus_min_distance(lag.reshape(-1, 2), sites, vectors).reshape(n)
        # two columns closer than two widths are one column's misfit, not two sites
        min_sep = max(2.0 * _major_sigma(form), 0.25 * edge_len)
        corr[sep < min_sep] = -np.inf
        i, j = np.unravel_index(int(np.argmax(corr)), corr.shape)
        trial = np.concatenate([p, [i / n[0], j / n[1]]])
        trial = least_squares(residual, trial, args=(k + 1,), method="lm", max_nfev=400).x
        coef, xw, _ = solve(trial, k + 1)
        cov = np.linalg.pinv(xw.T @ xw)
        z_new = coef[k] / np.sqrt(max(cov[k, k], 1e-300))
        new_site = trial[3:].reshape(k + 1, 2)
        min_sep = max(2.0 * _major_sigma(form_of(trial)), 0.25 * edge_len)
        apart = all(
            _torus_min_distance(new_site[i : i + 1], np.delete(new_site, i, axis=0), vectors)[0] >= min_sep
            for i in range(k + 1)
        )
        if not (z_new >= MOTIF_Z and coef[k] >= MIN_FRACTION * coef[:k].max() and apart):
            break
        p, k = trial, k + 1
    # a site may drift while later ones are fitted: drop those no longer significant, refit
    while True:
        coef, xw, _ = solve(p, k)
        cov = np.linalg.pinv(xw.T @ xw)
        se = np.sqrt(np.maximum(np.diag(cov)[:k], 1e-300))
        weak = (coef[:k] / se < MOTIF_Z) | (coef[:k] < MIN_FRACTION * coef[:k].max())
        weak[0] = False
        if not weak.any():
            break
        keep = np.flatnonzero(~weak)
        p = np.concatenate([p[:3], p[3:].reshape(k, 2)[keep].ravel()])
        k = len(keep)
        p = least_squares(residual, p, args=(k,), method="lm", max_nfev=400).x
    sites = p[3:].reshape(k, 2)
    return dict(
        sites=sites - np.floor(sites), amplitudes=coef[:k], z=coef[:k] / se, background=float(coef[k]), form=form_of(p)
    )


def _torus_min_distance(a: np.ndarray, b: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """Distance (px) from each fractional point of ``a`` to the nearest of ``b``, modulo the cell."""
    delta = a[:, None, :] - b[None, :, :]
    delta -= np.rint(delta)
    shifts = np.array([[i, j] for i in (-1, 0, 1) for j in (-1, 0, 1)], dtype=np.float64)
    d = np.linalg.norm((delta[:, :, None, :] + shifts[None, None]) @ vectors, axis=-1)
    return d.min(axis=(1, 2))


def _predict(origins: np.ndarray, sites: np.ndarray, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every site of every cell around the origins (merged where cells predict the same one), and
    which site each is. The origin's own site is predicted at its four neighbouring cells (an empty
    bright site); each other site from the four corners of its cell (any one of them present)."""
    s0 = sites[0]
    out, label = [], []
    for k, s in enumerate(sites):
        rel = s - s0
        rel = rel - np.floor(rel) if k else rel
        corners = [(1, 0), (-1, 0), (0, 1), (0, -1)] if k == 0 else [(0, 0), (1, 0), (0, 1), (1, 1)]
        for e in corners:
            out.append(origins + (rel - np.array(e, dtype=np.float64)) @ vectors)
            label.append(np.full(len(origins), k))
    pts, lab = np.concatenate(out), np.concatenate(label)
    # merge the predictions of one site from several cells
    from scipy.sparse.csgraph import connected_components

    tol = 0.25 * float(np.linalg.norm(vectors, axis=1).min())
    pairs = cKDTree(pts).sparse_distance_matrix(cKDTree(pts), tol, output_type="coo_matrix")
    _, comp = connected_components(pairs, directed=False)
    count = np.bincount(comp)
    merged = np.stack([np.bincount(comp, pts[:, 0]), np.bincount(comp, pts[:, 1])], 1) / count[:, None]
    site = np.zeros(len(count), dtype=np.int64)
    site[comp] = lab
    return merged, site


def joint_fit(
    image: np.ndarray,
    columns: np.ndarray,
    form: np.ndarray,
    radius: float,
    sigma_major: float,
    max_shift: float,
    rounds: int = 4,
) -> dict:
    """Amplitudes and positions of all ``columns`` (one Gaussian shape ``form``) fitted together,
    with a background that is a constant plus a bilinear surface on a coarse grid.

    The amplitudes and the background are linear: one sparse least-squares solve gives them all
    (a column's amplitude is what the image holds there beyond its neighbours' tails, which a fit
    of each column on its own window mistakes for its background). Between solves each column
    moves by Gauss–Newton steps on its window of ``radius`` (the image minus everything else),
    at most ``max_shift`` in all.

    Returns amplitude, position, leverage (the amplitude's variance over the noise's, ignoring
    its small covariance with the neighbours), and the noise variance at each column.
    """
    from scipy import sparse
    from scipy.sparse.linalg import cg

    h, w = image.shape
    qa, qb, qc = form
    n = len(columns)
    start_pos = np.array(columns, dtype=np.float64)
    pos = start_pos.copy()
    rho = int(np.ceil(3.5 * sigma_major)) + 1
    off = np.arange(-rho, rho + 1)

    def g(dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
        return np.exp(-(qa * dx * dx + 2 * qb * dx * dy + qc * dy * dy))

    # the background's basis: bilinear tents on a grid of about eight cells (at least 2 × 2 nodes)
    step = max(8.0 * 2.0 * sigma_major, 16.0, max(h, w) / 8.0)
    ny, nx = max(2, int(np.ceil((h - 1) / step)) + 1), max(2, int(np.ceil((w - 1) / step)) + 1)
    yy, xx = np.divmod(np.arange(h * w), w)
    fy, fx = yy / max(h - 1, 1) * (ny - 1), xx / max(w - 1, 1) * (nx - 1)
    iy0, ix0 = np.minimum(fy.astype(np.int64), ny - 2), np.minimum(fx.astype(np.int64), nx - 2)
    ty, tx = fy - iy0, fx - ix0
    bg_rows = np.tile(np.arange(h * w), 4)
    bg_cols = np.concatenate([(iy0 + a) * nx + (ix0 + b) for a in (0, 1) for b in (0, 1)]) + n
    bg_vals = np.concatenate([(ty if a else 1 - ty) * (tx if b else 1 - tx) for a in (0, 1) for b in (0, 1)])
    y = image.ravel()

    def design(p: np.ndarray):
        cy, cx = np.rint(p[:, 0]).astype(np.int64), np.rint(p[:, 1]).astype(np.int64)
        ry, rx = cy[:, None] + off, cx[:, None] + off
        val = g(ry[:, :, None] - p[:, 0, None, None], rx[:, None, :] - p[:, 1, None, None])
        inside = ((ry >= 0) & (ry < h))[:, :, None] & ((rx >= 0) & (rx < w))[:, None, :]
        flat = ry[:, :, None] * w + rx[:, None, :]
        col = np.broadcast_to(np.arange(len(p))[:, None, None], flat.shape)
        rows = np.concatenate([flat[inside], bg_rows])
        cols = np.concatenate([col[inside], bg_cols])
        vals = np.concatenate([val[inside], bg_vals])
        return sparse.csr_matrix((vals, (rows, cols)), shape=(h * w, n + ny * nx))

    coef = None
    for rnd in range(rounds):
        a_mat = design(pos)
        normal = (a_mat.T @ a_mat).tocsc()
        # a small ridge: a column mostly beyond the border has too few pixels to fix its amplitude
        diag = normal.diagonal()
        ridge = np.r_[np.full(n, 1e-3 * np.median(diag[:n])), np.full(ny * nx, 1e-9 * diag.max())]
        normal = normal + sparse.diags(ridge, format="csc")
        # conjugate gradients, Jacobi-preconditioned and warm-started: a direct sparse solve fills
        # in and grows faster than the image (minutes on a 1024² image of 30 000 columns)
        rhs = a_mat.T @ y
        precond = sparse.diags(1.0 / normal.diagonal())
        coef, _ = cg(normal.tocsr(), rhs, x0=coef, rtol=1e-10, atol=0.0, maxiter=2000, M=precond)
        model = a_mat @ coef
        if rnd == rounds - 1:
            break
        # each column's Gauss–Newton steps on the image minus everything else
        rest = (y - model).reshape(h, w)
        amp = coef[:n]
        r = int(np.ceil(radius))
        oy, ox = np.mgrid[-r : r + 1, -r : r + 1]
        disk = oy * oy + ox * ox <= radius * radius
        oy, ox = oy[disk].astype(np.float64), ox[disk].astype(np.float64)
        q = pos.copy()
        cy, cx = np.rint(q[:, 0]), np.rint(q[:, 1])
        py, px = cy[:, None] + oy, cx[:, None] + ox
        inimg = (py >= 0) & (py < h) & (px >= 0) & (px < w)
        iy, ix = np.clip(py, 0, h - 1).astype(np.int64), np.clip(px, 0, w - 1).astype(np.int64)
        data = np.where(inimg, rest[iy, ix] + amp[:, None] * g(py - q[:, 0:1], px - q[:, 1:2]), 0.0)
        for _ in range(3):
            dy, dx = py - q[:, 0:1], px - q[:, 1:2]
            own = g(dy, dx)
            x = np.stack([own, own * (2 * qc * dy + 2 * qb * dx), own * (2 * qa * dx + 2 * qb * dy)], -1)
            x = x * inimg[:, :, None]
            xtx = np.einsum("mpk,mpl->mkl", x, x) + 1e-12 * np.eye(3)[None]
            c = np.linalg.solve(xtx, np.einsum("mpk,mp->mk", x, data)[..., None])[..., 0]
            a = c[:, 0]
            shift = np.where(a[:, None] > 0, c[:, 1:3] / np.where(a > 0, a, 1.0)[:, None], 0.0)
            q = q + np.clip(shift, -0.25 * sigma_major, 0.25 * sigma_major)
            moved = q - start_pos
            scale = np.minimum(1.0, max_shift / np.maximum(np.linalg.norm(moved, axis=1), 1e-12))
            q = start_pos + moved * scale[:, None]
        pos = q
    assert coef is not None  # the loop above solved at least once
    amp = coef[:n]
    # the noise: the residual's variance as a line in the model's level
    resid = y - model
    variance = _noise_line_pixels(model, resid)
    cy, cx = (
        np.clip(np.rint(pos[:, 0]).astype(np.int64), 0, h - 1),
        np.clip(np.rint(pos[:, 1]).astype(np.int64), 0, w - 1),
    )
    level = model.reshape(h, w)[cy, cx]
    g2 = np.asarray(a_mat.multiply(a_mat).sum(axis=0)).ravel()[:n]
    return dict(amplitude=amp, position=pos, leverage=1.0 / np.maximum(g2, 1e-300), variance=variance(level))


def _noise_line_pixels(model: np.ndarray, resid: np.ndarray):
    """The variance of the residual as ``alpha + beta · model`` from about 20 bins of the model's
    level (each bin's variance read robustly), both terms at least 0."""
    order = np.argsort(model)
    level, s2 = [], []
    for part in np.array_split(order, 20):
        r = resid[part]
        level.append(float(np.mean(model[part])))
        s2.append(float(np.median((r - np.median(r)) ** 2) / 0.454936423119572))
    return _noise_line(np.array(level), np.array(s2))


def _noise_line(level: np.ndarray, s2: np.ndarray):
    """The noise variance as ``alpha + beta · level`` through the windows' residual mean squares
    (a least-squares line, both terms at least 0); a function of the level."""
    ok = np.isfinite(level) & np.isfinite(s2)
    level, s2 = level[ok], s2[ok]
    if len(level) < 3 or np.ptp(level) <= 0:
        v = float(np.median(s2)) if len(s2) else 1.0
        return lambda x: np.full(np.shape(x), v)
    beta, alpha = np.polyfit(level, s2, 1)
    if beta < 0:
        alpha, beta = float(np.median(s2)), 0.0
    elif alpha < 0:
        alpha, beta = 0.0, float(np.sum(level * s2) / np.sum(level * level))
    return lambda x: np.maximum(alpha + beta * np.asarray(x), 1e-300)
