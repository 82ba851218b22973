"""Lattice analysis of column positions against lattices built with known vectors, motifs and strain."""

from __future__ import annotations

import numpy as np
import pytest

from usidgpu.atoms.lattice import (
    Lattice,
    assign_sublattices,
    base_vectors,
    displacements,
    find_vacancies,
    lattice_fit,
    strain_map,
)

SQRT3 = np.sqrt(3.0)


def rotation(degrees: float) -> np.ndarray:
    """Rotation by ``degrees`` from +x toward +y, acting on (y, x) column vectors."""
    t = np.radians(degrees)
    return np.array([[np.cos(t), np.sin(t)], [-np.sin(t), np.cos(t)]])


def sites(vectors, shape=(200, 200), motif=((0.0, 0.0),), origin=(3.0, 4.0)):
    """Every site of a lattice inside [0, H) × [0, W): positions (N, 2) and indices (N, 3)."""
    vectors = np.asarray(vectors, float)
    motif = np.asarray(motif, float)
    corners = np.array([[0, 0], [0, shape[1]], [shape[0], 0], [shape[0], shape[1]]]) - np.asarray(origin)
    frac = corners @ np.linalg.inv(vectors)
    lo, hi = np.floor(frac.min(0)) - 2, np.ceil(frac.max(0)) + 2
    ii, jj, mm = np.meshgrid(np.arange(lo[0], hi[0] + 1), np.arange(lo[1], hi[1] + 1), np.arange(len(motif)))
    idx = np.column_stack([ii.ravel(), jj.ravel(), mm.ravel()]).astype(int)
    pos = np.asarray(origin) + (idx[:, :2] + motif[idx[:, 2]]) @ vectors
    keep = (pos[:, 0] >= 0) & (pos[:, 0] < shape[0]) & (pos[:, 1] >= 0) & (pos[:, 1] < shape[1])
    return pos[keep], idx[keep]


def noisy(pos, sigma, seed, vacancy_fraction=0.0):
    """Positions with Gaussian noise and a random fraction removed; also the kept mask."""
    rng = np.random.default_rng(seed)
    keep = rng.random(len(pos)) >= vacancy_fraction
    return (pos + rng.normal(0, sigma, pos.shape))[keep], keep


RECT17 = np.array([rotation(17) @ [9.0, 0.0], rotation(17) @ [0.0, 13.0]])
LATTICES = {
    # name: (vectors used to build, expected canonical vectors)
    "square": ([[10, 0], [0, 10]], [[10, 0], [0, 10]]),
    "hexagonal": ([[10, 0], [-5, 5 * SQRT3]], [[10, 0], [5, 5 * SQRT3]]),
    "rectangular rotated 17°": (RECT17, RECT17),
    "square rotated 90°": ([[0, 10], [-10, 0]], [[10, 0], [0, 10]]),
    "oblique": ([[11, 2], [3, 8]], None),
}


@pytest.mark.parametrize("name", list(LATTICES))
def test_base_vectors_recovered_with_noise_and_vacancies(name):
    build, expected = LATTICES[name]
    pos, _ = sites(build)
    found, _ = noisy(pos, 0.15, seed=1, vacancy_fraction=0.08)
    vectors = base_vectors(found)
    if expected is None:  # same lattice: each found vector is an integer combination of the built ones
        coeff = vectors @ np.linalg.inv(np.asarray(build, float))
        assert np.allclose(coeff, np.rint(coeff), atol=0.01)
        assert abs(abs(np.linalg.det(np.rint(coeff))) - 1) < 1e-9
        assert np.linalg.det(vectors) > 0
    else:
        np.testing.assert_allclose(vectors, expected, atol=0.02)


def test_canonical_form_independent_of_order_and_origin():
    pos, _ = sites(LATTICES["hexagonal"][0])
    found, _ = noisy(pos, 0.1, seed=2)
    order = np.random.default_rng(3).permutation(len(found))
    a = base_vectors(found)
    np.testing.assert_allclose(base_vectors(found[order]), a, atol=1e-9)
    np.testing.assert_allclose(base_vectors(found + [37.3, -12.9]), a, atol=1e-9)


def perovskite(seed=0, shape=(200, 200), a=10.0, sigma_pos=0.05, shift=0.3, peak=(100.0, 60.0), sigma_i=8.0):
    """A/B perovskite [001]: A at cell corners (bright), B at centres (dim), random displacements."""
    pos, idx = sites([[a, 0], [0, a]], shape=shape, motif=((0, 0), (0.5, 0.5)), origin=(4.0, 6.0))
    rng = np.random.default_rng(seed)
    truth = idx[:, 2]  # 0 = A, 1 = B
    pos = pos + rng.uniform(-shift, shift, pos.shape) + rng.normal(0, sigma_pos, pos.shape)
    intensity = np.where(truth == 0, peak[0], peak[1]) + rng.normal(0, sigma_i, len(pos))
    return pos, intensity, truth, idx


def test_perovskite_union_cell_and_sublattice_cell():
    pos, intensity, truth, _ = perovskite()
    # The union of A and B is itself a lattice: its primitive cell is the half-diagonal one.
    np.testing.assert_allclose(base_vectors(pos), [[5, 5], [-5, 5]], atol=0.02)
    np.testing.assert_allclose(base_vectors(pos[truth == 0]), [[10, 0], [0, 10]], atol=0.02)
    np.testing.assert_allclose(base_vectors(pos[truth == 1]), [[10, 0], [0, 10]], atol=0.02)
    fit = lattice_fit(pos, vectors=base_vectors(pos[truth == 0]))
    assert fit.n_sites == 2
    a_site = np.bincount(fit.indices[truth == 0, 2]).argmax()
    assert np.all(fit.indices[truth == 0, 2] == a_site) and np.all(fit.indices[truth == 1, 2] == 1 - a_site)
    np.testing.assert_allclose(np.abs(fit.motif[1] - fit.motif[0]), [0.5, 0.5], atol=0.01)


def test_honeycomb_has_two_site_motif():
    pos, idx = sites([[10, 0], [5, 5 * SQRT3]], motif=((0, 0), (1 / 3, 1 / 3)))
    found, keep = noisy(pos, 0.1, seed=4, vacancy_fraction=0.03)
    fit = lattice_fit(found)
    np.testing.assert_allclose(fit.vectors, [[10, 0], [5, 5 * SQRT3]], atol=0.02)
    assert fit.n_sites == 2
    # The two sites are a third of the long diagonal apart (either one may be site 0).
    np.testing.assert_allclose(np.linalg.norm((fit.motif[1] - fit.motif[0]) @ fit.vectors), 10 / SQRT3, atol=0.02)
    truth = idx[keep, 2]
    assert len(np.unique(fit.indices[truth == 0, 2])) == 1 and len(np.unique(fit.indices[truth == 1, 2])) == 1


@pytest.mark.parametrize("sigma_i", [8.0, 25.0])
def test_assign_sublattices_perovskite(sigma_i):
    """Labels are all right, even when intensities of A and B overlap heavily (σ = 25 for 100 vs 60)."""
    pos, intensity, truth, _ = perovskite(seed=5, sigma_i=sigma_i)
    labels = assign_sublattices(pos, intensity)
    assert np.array_equal(labels, truth)  # 0 = brightest = A
    order = np.random.default_rng(6).permutation(len(pos))
    assert np.array_equal(assign_sublattices(pos[order], intensity[order]), truth[order])


def test_assign_sublattices_intensity_only_on_one_site_lattice():
    """A random alloy on one lattice: the motif cannot tell the species apart, the intensities do."""
    pos, _ = sites([[10, 0], [0, 10]])
    rng = np.random.default_rng(7)
    truth = (rng.random(len(pos)) < 0.3).astype(int)  # 1 = dim minority
    intensity = np.where(truth == 0, 100.0, 50.0) + rng.normal(0, 5, len(pos))
    assert np.array_equal(assign_sublattices(pos, intensity), truth)
    union = lattice_fit(pos)
    assert np.array_equal(assign_sublattices(pos, intensity, lattice=union), truth)
    assert np.array_equal(assign_sublattices(pos, intensity, n_sublattices=1), np.zeros(len(pos)))


def test_residuals_are_the_known_displacements():
    pos, idx = sites(RECT17)
    rng = np.random.default_rng(8)
    shift = rng.uniform(-0.3, 0.3, pos.shape)
    fit = lattice_fit(pos + shift)
    # The fit absorbs only the (tiny) affine part of the random displacements.
    assert np.max(np.abs(fit.residuals - shift)) < 0.05
    np.testing.assert_allclose(displacements(pos + shift, fit), fit.residuals, atol=1e-12)
    np.testing.assert_allclose(fit.site_positions(fit.indices) + fit.residuals, pos + shift, atol=1e-9)
    assert fit.inliers.all()


def test_fixed_motif_measures_off_centring():
    """B columns all shifted from the cell centre: a fixed motif reports the shift, a refined one absorbs it."""
    pos, intensity, truth, _ = perovskite(seed=9, shift=0.0, sigma_pos=0.02)
    pos[truth == 1] += [0.4, -0.25]
    cell = base_vectors(pos[truth == 0])
    fixed = lattice_fit(pos, vectors=cell, motif=[[0, 0], [0.5, 0.5]])
    refined = lattice_fit(pos, vectors=cell)
    # With a fixed motif the origin sits between A and B: the A/B difference is the shift.
    diff = fixed.residuals[truth == 1].mean(0) - fixed.residuals[truth == 0].mean(0)
    np.testing.assert_allclose(diff, [0.4, -0.25], atol=0.02)
    assert np.abs(refined.residuals).max() < 0.1


@pytest.mark.parametrize("origin", [(3.0, 4.0), (3.0 + 10 / 3, 4.0 + 5 * SQRT3 / 3 + 5 / 3)])
@pytest.mark.parametrize("motif", [[[0, 0], [1 / 3, 1 / 3]], [[1 / 3, 1 / 3], [0, 0]]])
def test_fixed_motif_without_symmetry(origin, motif):
    """Honeycomb with a given motif: whichever site the central column is on, every column fits."""
    vectors = [[10, 0], [5, 5 * SQRT3]]
    pos, idx = sites(vectors, motif=((0, 0), (1 / 3, 1 / 3)), origin=origin)
    found, keep = noisy(pos, 0.05, seed=15)
    fit = lattice_fit(found, vectors=vectors, motif=motif)
    assert np.abs(fit.residuals).max() < 0.3
    on_first = np.asarray(motif)[fit.indices[:, 2], 0] == 0
    assert np.array_equal(on_first, idx[keep, 2] == 0)


def test_outlier_does_not_pull_the_fit():
    pos, _ = sites([[10, 0], [0, 10]])
    spurious = np.array([[52.0, 51.0], [101.0, 148.0], [150.0, 53.5]])  # halfway between sites
    fit = lattice_fit(np.vstack([pos, spurious]))
    np.testing.assert_allclose(fit.vectors, [[10, 0], [0, 10]], atol=1e-9)
    assert fit.inliers.sum() == len(pos) and not fit.inliers[-3:].any()


def interior_vacancies(pos, shape, n, rng, margin):
    """Indices of n random sites at least ``margin`` pixels inside the image of ``shape``."""
    inner = np.flatnonzero(np.all((pos >= margin) & (pos <= np.asarray(shape) - 1 - margin), axis=1))
    return rng.choice(inner, size=n, replace=False)


def test_find_vacancies_square_exact():
    pos, idx = sites([[10, 0], [0, 10]])
    rng = np.random.default_rng(10)
    removed = interior_vacancies(pos, (200, 200), 12, rng, margin=20)
    found = np.delete(pos + rng.normal(0, 0.15, pos.shape), removed, axis=0)
    fit = lattice_fit(found)
    vac = find_vacancies(found, fit)
    assert len(vac) == len(removed)
    dist = np.linalg.norm(vac.positions[:, None] - pos[removed][None], axis=2)
    assert np.all(dist.min(axis=1) < 0.1) and len(set(dist.argmin(axis=1))) == len(removed)
    # The image region (one-cell margin) finds the same ones here.
    vac_region = find_vacancies(found, fit, region=(200, 200))
    np.testing.assert_allclose(np.sort(vac_region.positions, axis=0), np.sort(vac.positions, axis=0))


def test_find_vacancies_rotated_lattice_no_false_positives():
    pos, idx = sites(RECT17, shape=(240, 180))
    rng = np.random.default_rng(11)
    removed = interior_vacancies(pos, (240, 180), 6, rng, margin=30)
    found = np.delete(pos + rng.normal(0, 0.2, pos.shape), removed, axis=0)
    fit = lattice_fit(found)
    vac = find_vacancies(found, fit)
    assert len(vac) == 6
    assert np.all(np.linalg.norm(vac.positions[:, None] - pos[removed][None], axis=2).min(axis=1) < 0.2)
    assert len(find_vacancies(pos, lattice_fit(pos))) == 0


def test_find_vacancies_perovskite_names_sublattice():
    pos, intensity, truth, idx = perovskite(seed=12)
    rng = np.random.default_rng(13)
    removed = interior_vacancies(pos, (200, 200), 10, rng, margin=20)
    found = np.delete(pos, removed, axis=0)
    labels = assign_sublattices(found, np.delete(intensity, removed))
    assert np.array_equal(labels, np.delete(truth, removed))
    fit = lattice_fit(found, vectors=base_vectors(found[labels == 0]))
    vac = find_vacancies(found, fit, labels=labels)
    assert len(vac) == len(removed)
    nearest = np.linalg.norm(vac.positions[:, None] - pos[removed][None], axis=2).argmin(axis=1)
    assert np.array_equal(vac.sublattice, truth[removed][nearest])


def test_a_shifted_domain_is_not_a_field_of_vacancies():
    pos, idx = sites([[10, 0], [0, 10]])
    rng = np.random.default_rng(14)
    main = pos[pos[:, 1] < 130]
    removed = interior_vacancies(main, (200, 200), 4, rng, margin=20)
    keep = np.delete(main, removed, axis=0)
    domain = pos[pos[:, 1] >= 140] + [5.0, 5.0]  # an antiphase domain: half a cell off the lattice
    found = np.vstack([keep, domain]) + rng.normal(0, 0.1, (len(keep) + len(domain), 2))
    fit = lattice_fit(found, vectors=[[10, 0], [0, 10]], motif=[[0.0, 0.0]])  # the domain is no motif site
    vac = find_vacancies(found, fit, region=(200, 200))
    # the removed sites, and none of the empty ideal sites under the shifted domain
    assert len(vac) == len(removed)
    assert np.linalg.norm(vac.positions[:, None] - main[removed][None], axis=2).min(axis=1).max() < 0.3
    assert len(find_vacancies(found, fit, region=(200, 200), min_occupied=0)) > 40  # every empty ideal site


def reference(vectors=((10.0, 0.0), (0.0, 10.0)), origin=(3.0, 4.0)):
    return Lattice(np.asarray(origin), np.asarray(vectors, float))


def deform(pos, gradient, centre=(100.0, 100.0)):
    centre = np.asarray(centre)
    return centre + (pos - centre) @ np.asarray(gradient).T


@pytest.mark.parametrize(
    "gradient, expected",
    [
        (np.diag([1.0, 1.01]), (0.01, 0.0, 0.0, 0.0)),  # 1 % tension along x
        (np.diag([0.985, 1.0]), (0.0, -0.015, 0.0, 0.0)),  # 1.5 % compression along y
        ([[1.0, 0.01], [0.01, 1.0]], (0.0, 0.0, 0.01, 0.0)),  # pure shear
        (rotation(2.0), (0.0, 0.0, 0.0, np.radians(2.0))),  # rigid rotation
        (rotation(-3.0) @ np.diag([1.0, 1.02]), (0.02, 0.0, 0.0, np.radians(-3.0))),  # stretch, then rotate
    ],
)
def test_strain_map_uniform(gradient, expected):
    pos, _ = sites([[10, 0], [0, 10]], origin=(3.0, 4.0))
    strained = deform(pos, gradient) + np.random.default_rng(14).normal(0, 0.03, pos.shape)
    result = strain_map(strained, reference(), shape=(200, 200))
    per_column = result.columns
    # 0.03 px noise on 10 px bonds: per-column scatter ≈ 0.0014 (edge columns, one-sided, the most).
    assert np.all(np.abs(np.median(per_column, axis=0) - expected) < 5e-4)
    assert np.all(np.abs(per_column - expected) < 0.01)
    inside = np.isfinite(result.exx)
    assert inside[100, 100] and not inside[0, 0]  # the first column is at (3, 4): (0, 0) is outside the hull
    for k, name in enumerate(("exx", "eyy", "exy", "rotation")):
        values = getattr(result, name)[inside]
        assert np.abs(np.median(values) - expected[k]) < 5e-4


def test_strain_map_survives_accumulated_strain_and_nan_outside():
    """4 % strain over 200 px moves far columns by 4 px (almost half a cell) from the reference sites."""
    pos, _ = sites([[10, 0], [0, 10]], shape=(300, 300), origin=(3.0, 4.0))
    strained = deform(pos, np.diag([1.0, 1.04]), centre=(150.0, 150.0))
    result = strain_map(strained, reference(), shape=(320, 320))
    np.testing.assert_allclose(result.columns[:, 0], 0.04, atol=1e-9)
    assert np.isnan(result.exx[310, 310]) and np.isnan(result.exx[0, 0])
    np.testing.assert_allclose(result.exx[150, 150], 0.04, atol=1e-9)


def test_strain_map_step():
    """Left half unstrained, right half 2 % along x: the per-column strain follows the step."""
    pos, _ = sites([[10, 0], [0, 10]])
    right = pos[:, 1] > 100
    strained = pos.copy()
    strained[right, 1] = 100 + (pos[right, 1] - 100) * 1.02
    result = strain_map(strained, reference(), neighbours=4)
    far_left, far_right = pos[:, 1] < 80, pos[:, 1] > 120
    np.testing.assert_allclose(result.columns[far_left, 0], 0.0, atol=1e-9)
    np.testing.assert_allclose(result.columns[far_right, 0], 0.02, atol=1e-9)
    assert result.maps is None


def test_lattice_methods():
    lat = Lattice([1.0, 2.0], [[10, 0], [0, 10]], [[0, 0], [0.5, 0.5]])
    np.testing.assert_allclose(lat.site_positions([[1, 2, 1], [0, 0, 0]]), [[16, 27], [1, 2]])
    assert lat.min_separation == pytest.approx(np.sqrt(50))
    idx, where = lat.nearest_sites([[16.2, 26.9], [1.1, 1.8]])
    assert idx.tolist() == [[1, 2, 1], [0, 0, 0]]
    np.testing.assert_allclose(lat.fractional([[11.0, 7.0]]), [[1.0, 0.5]])


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros((10, 3)), "shape"),
        (np.zeros(10), "shape"),
        (np.array([[0, 0], [0, 10], [10, 0.0]]), "at least 4"),
        (np.array([[0, 0], [0, 10], [10, 0], [np.nan, 5]]), "NaN"),
        (np.column_stack([np.zeros(12), np.arange(12) * 10.0]), "2-D lattice"),
        ([[0, 0], [1, "x"]], "numeric"),
    ],
)
def test_bad_positions(bad, message):
    with pytest.raises(ValueError, match=message):
        base_vectors(bad)


def test_bad_arguments():
    pos, _ = sites([[10, 0], [0, 10]], shape=(60, 60))
    lat = lattice_fit(pos)
    with pytest.raises(ValueError, match="one per column"):
        assign_sublattices(pos, np.ones(len(pos) - 1))
    with pytest.raises(ValueError, match="at least 1"):
        assign_sublattices(pos, np.ones(len(pos)), n_sublattices=0)
    with pytest.raises(ValueError, match="tolerance"):
        find_vacancies(pos, lat, tolerance=0)
    with pytest.raises(ValueError, match="one line"):
        find_vacancies(pos[pos[:, 0] < 5], lat)
    with pytest.raises(ValueError, match="collinear"):
        Lattice([0, 0], [[10, 0], [20, 0.5]])
    with pytest.raises(ValueError, match=r"\(2, 2\)"):
        lattice_fit(pos, vectors=[10, 0, 0])
    with pytest.raises(ValueError, match="neighbours"):
        strain_map(pos, lat, neighbours=1)
    with pytest.raises(ValueError, match="at least 3"):
        strain_map(pos[:2], lat)
