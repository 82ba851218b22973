"""Column finding and batched 2-D Gaussian refinement against known truth and scipy's curve_fit."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial import cKDTree

from usidgpu.atoms.find import column_spacing, find_columns
from usidgpu.atoms.fit import numba_available, refine
from usidgpu.atoms.gaussian import quadratic_form, widths_and_angle
from usidgpu.atoms.reference import curve_fit_columns, fit_windows
from usidgpu.atoms.synthetic import lattice_image, render
from usidgpu.core.errors import DeviceError

needs_numba = pytest.mark.skipif(not numba_available(), reason="numba is not installed")


def match(found: np.ndarray, truth: np.ndarray, tolerance: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distance from each truth column to the nearest found one, and from each found to truth."""
    d_truth, idx = cKDTree(found).query(truth)
    d_found, _ = cKDTree(truth).query(found)
    return d_truth, idx, d_found


@pytest.fixture(scope="module")
def perovskite():
    return lattice_image(
        (192, 224), spacing=16, angle_deg=7, vacancies=5, displacement=0.3, dose=200, read_noise=0.02, seed=3
    )


@pytest.mark.parametrize("dose,noise", [(None, 0.0), (200, 0.02), (50, 0.05), (20, 0.1)])
def test_find_every_column_and_no_false_ones(dose, noise):
    s = lattice_image(
        (160, 160), spacing=16, angle_deg=11, vacancies=4, displacement=0.3, dose=dose, read_noise=noise, seed=7
    )
    found = find_columns(s.image)
    d_truth, _, d_found = match(found.positions, s.positions, 3.0)
    h, w = s.image.shape
    inner = (
        (s.positions[:, 0] >= 2)
        & (s.positions[:, 0] <= h - 3)
        & (s.positions[:, 1] >= 2)
        & (s.positions[:, 1] <= w - 3)
    )
    misses = np.count_nonzero(d_truth[inner] > 3.0)
    assert misses <= 0.01 * inner.sum()
    assert np.count_nonzero(d_found > 3.0) == 0  # no column where there is none, vacancies included
    if len(s.vacancies):
        d_vac, _ = cKDTree(found.positions).query(s.vacancies)
        assert (d_vac > 3.0).all()


def test_spacing_is_the_nearest_neighbour_distance():
    s = lattice_image((256, 256), spacing=16, angle_deg=7, motif="perovskite", dose=100, seed=1)
    assert column_spacing(s.image) == pytest.approx(16 / np.sqrt(2), rel=0.02)
    sq = lattice_image((256, 256), spacing=12, angle_deg=30, motif="square", dose=100, seed=1)
    assert column_spacing(sq.image) == pytest.approx(12, rel=0.02)


def test_saturated_flat_tops_count_once():
    s = lattice_image((128, 128), spacing=16, motif="square", sigma=3.0, seed=0)
    clipped = np.minimum(s.image, 0.8)  # wide plateaus, as in a saturated 8-bit image
    found = find_columns(clipped, spacing=16)
    d_truth, _, d_found = match(found.positions, s.positions, 3.0)
    inner = ((s.positions >= 2) & (s.positions <= 125)).all(axis=1)
    assert (d_truth[inner] < 0.5).all() and len(found) == np.count_nonzero(d_found < 3)


def test_find_rejects_bad_input():
    with pytest.raises(ValueError, match="2-D"):
        find_columns(np.zeros((4, 8, 8)))
    with pytest.raises(ValueError, match="NaN"):
        find_columns(np.full((32, 32), np.nan))
    with pytest.raises(ValueError, match="no periodic structure"):
        column_spacing(np.zeros((32, 32)))


def test_refine_equals_curve_fit_on_the_same_pixels(perovskite):
    found = find_columns(perovskite.image)
    fit = refine(perovskite.image, found, radius=5.5, engine="array", device="cpu")
    windows = fit_windows(perovskite.image, found.positions, radius=5.5)
    params, errors, ok = curve_fit_columns(perovskite.image, found.positions, windows=windows)
    assert ok.all() and fit.converged.all()
    assert np.abs(fit.positions - params[:, 1:3]).max() < 1e-4  # px
    scale = np.abs(params).max(axis=0) + 1e-3
    for i, name in enumerate(("amplitude", "y", "x", "sigma_x", "sigma_y", "background")):
        col = i if i < 5 else 6
        assert np.abs(fit.params[:, col] - params[:, col]).max() < 1e-3 * scale[col], name
    # θ: compared where the column is clearly elliptical (round columns have no defined angle)
    elliptic = (params[:, 3] - params[:, 4]) > 0.05 * params[:, 3]
    dtheta = (fit.params[elliptic, 5] - params[elliptic, 5] + np.pi / 2) % np.pi - np.pi / 2
    assert np.abs(dtheta).max() < 1e-2
    # uncertainties: the same covariance as curve_fit's (position errors to 0.1%)
    assert np.allclose(fit.position_errors, errors[:, 1:3], rtol=1e-3)


def test_refined_positions_beat_the_start_and_match_the_truth(perovskite):
    found = find_columns(perovskite.image)
    fit = refine(perovskite.image, found, device="cpu")
    d_fit, nearest, _ = match(fit.positions, perovskite.positions, 3.0)
    d_com, _, _ = match(found.positions, perovskite.positions, 3.0)
    inner = ((perovskite.positions >= 8) & (perovskite.positions <= np.array(perovskite.image.shape) - 9)).all(axis=1)
    rms_fit = np.sqrt(np.mean(d_fit[inner] ** 2))
    rms_com = np.sqrt(np.mean(d_com[inner] ** 2))
    assert rms_fit < 0.9 * rms_com
    assert rms_fit < 0.15  # px at dose 200 e⁻ per unit intensity
    # stated uncertainties are about right: the per-coordinate error vs the mean stated error
    per_coord = rms_fit / np.sqrt(2)
    assert 0.6 < per_coord / np.mean(fit.position_errors[nearest[inner]]) < 2.0
    # widths and amplitudes of the two sublattices
    assert np.median(fit.params[:, 3:5]) == pytest.approx(perovskite.sigma, rel=0.05)


def test_elliptical_rotated_column_is_recovered_exactly():
    sx, sy, theta = 3.0, 1.5, 0.4
    qa, qb, qc = quadratic_form(sx, sy, theta)
    yy, xx = np.mgrid[0:31, 0:31].astype(float)
    dy, dx = yy - 15.3, xx - 14.6
    image = 2.0 * np.exp(-(qa * dx * dx + 2 * qb * dx * dy + qc * dy * dy)) + 0.25
    fit = refine(image, np.array([[15.0, 15.0]]), radius=12, device="cpu", engine="array")
    assert fit.converged.all()
    assert np.allclose(fit.params[0], [2.0, 15.3, 14.6, sx, sy, theta, 0.25], atol=1e-6)


@given(
    sx=st.floats(0.5, 6.0),
    ratio=st.floats(0.2, 1.0),
    theta=st.floats(-np.pi / 2, np.pi / 2 - 1e-6),
)
@settings(max_examples=60, deadline=None)
def test_widths_and_angle_invert_the_quadratic_form(sx, ratio, theta):
    sy = sx * ratio
    q = quadratic_form(np.array([sx]), np.array([sy]), np.array([theta]))
    major, minor, angle = widths_and_angle(np, *q)
    assert major[0] == pytest.approx(sx, rel=1e-9) and minor[0] == pytest.approx(sy, rel=1e-9)
    if ratio < 0.99:  # the angle of a round Gaussian is undefined
        assert abs((angle[0] - theta + np.pi / 2) % np.pi - np.pi / 2) < 1e-6


def test_columns_at_the_border_use_the_pixels_inside():
    image = render((40, 40), np.array([[1.2, 20.0], [20.0, 38.5], [20.0, 20.0]]), np.ones(3), 2.0, 0.1)
    fit = refine(image, np.array([[1.0, 20.0], [20.0, 38.0], [20.0, 20.0]]), radius=6, device="cpu", engine="array")
    assert fit.converged.all()
    assert np.allclose(fit.positions, [[1.2, 20.0], [20.0, 38.5], [20.0, 20.0]], atol=1e-6)


@needs_numba
def test_numba_engine_equals_the_array_engine(perovskite):
    found = find_columns(perovskite.image)
    a = refine(perovskite.image, found, engine="array", device="cpu")
    b = refine(perovskite.image, found, engine="numba", device="cpu")
    assert np.array_equal(a.n_iter, b.n_iter) and np.array_equal(a.converged, b.converged)
    assert np.allclose(a.params, b.params, rtol=1e-9, atol=1e-9)
    assert np.allclose(a.errors, b.errors, rtol=1e-6)


@needs_numba
@pytest.mark.parametrize("radius", [3.0, 9.5])
def test_numba_engine_equals_the_array_engine_at_other_radii(perovskite, radius):
    """Small disks (fewer pixels than a SIMD width) and large ones (more than six clipping
    neighbours, pixel counts on and off multiples of 8)."""
    start = perovskite.positions[::3] + 0.2
    a = refine(perovskite.image, start, radius=radius, engine="array", device="cpu")
    b = refine(perovskite.image, start, radius=radius, engine="numba", device="cpu")
    assert np.array_equal(a.n_pixels, b.n_pixels) and len(np.unique(b.n_pixels % 8)) > 3
    assert np.array_equal(a.n_iter, b.n_iter) and np.array_equal(a.converged, b.converged)
    assert np.allclose(a.params, b.params, rtol=1e-9, atol=1e-9)
    assert np.allclose(a.errors, b.errors, rtol=1e-6)


def scattered_cases():
    """Scattered columns with a dense cluster and far outliers (a sparse grid), a single column,
    a line of columns."""
    rng = np.random.default_rng(5)
    cluster = rng.random((40, 2)) * 12 + 150
    scattered = rng.random((60, 2)) * [299, 399]
    corners = np.array([[0.0, 0.0], [299.0, 399.0], [0.0, 399.0]])
    return [
        np.vstack([cluster, scattered, corners]),
        np.array([[100.0, 100.0]]),
        np.c_[np.full(9, 50.0), 20 + 7.5 * np.arange(9)],
    ]


@needs_numba
def test_grid_and_kd_tree_neighbour_searches_agree(monkeypatch):
    from usidgpu.atoms import fit

    for start in scattered_cases():
        for radius in (2.0, 6.0):
            grid = fit._neighbours(start, radius)
            with monkeypatch.context() as m:
                m.setattr(fit, "numba_available", lambda: False)
                tree = fit._neighbours(start, radius)
            assert grid.shape == tree.shape
            for a, b in zip(grid, tree):
                assert sorted(map(tuple, a)) == sorted(map(tuple, b))
    doubled = np.array([[5.0, 5.0], [9.0, 9.0], [5.0, 5.0 + 1e-8]])
    for available in (True, False):
        with monkeypatch.context() as m, pytest.raises(ValueError, match="duplicate"):
            m.setattr(fit, "numba_available", lambda available=available: available)
            fit._neighbours(doubled, 3.0)


@needs_numba
def test_numba_engine_cuts_the_same_pixels_as_the_array_engine():
    image = np.random.default_rng(5).random((300, 400))
    for start in scattered_cases():
        for radius in (2.0, 6.0):
            # no iterations: the start values and the residual there depend on every fit pixel
            a = refine(image, start, radius=radius, engine="array", device="cpu", max_iter=0)
            b = refine(image, start, radius=radius, engine="numba", device="cpu", max_iter=0)
            assert np.array_equal(a.n_pixels, b.n_pixels)
            assert np.allclose(a.params, b.params, rtol=1e-12, equal_nan=True)
            assert np.allclose(a.rms_residual, b.rms_residual, rtol=1e-9, equal_nan=True)  # NaN: no pixel at all


@needs_numba
def test_vectorizable_exponential_is_within_two_ulp_of_numpy():
    from numba import njit

    from usidgpu.atoms.fit_numba import exp_nonpositive

    @njit
    def many(x):
        out = np.empty_like(x)
        for i in range(x.size):
            out[i] = exp_nonpositive(x[i])
        return out

    rng = np.random.default_rng(0)
    x = np.concatenate([-rng.random(200_000) * 708, -rng.random(100_000) * 2, [0.0, -0.0, -5e-324, -708.0]])
    x = np.concatenate([x, -np.log(2) / 2 * np.array([1 - 1e-16, 1, 1 + 1e-16]), -np.arange(1, 1022) * np.log(2)])
    x = x[x >= -708]
    got, want = many(x), np.exp(x)
    assert np.all(np.abs(got - want) <= 2 * np.spacing(want))
    clamped = many(np.array([-800.0, -np.inf, -708.0, np.nan]))
    assert clamped[0] == clamped[1] == clamped[2] > 0 and np.isnan(clamped[3])  # NaN must reach the cost


@pytest.mark.parametrize("search", ["grid", "kd-tree"])
def test_neighbour_lists_give_the_full_voronoi_cut(search, monkeypatch):
    """Only columns within 2·radius can clip a fit disk: the masks from the short neighbour lists
    equal the masks with every other column as a neighbour."""
    from usidgpu.atoms import fit
    from usidgpu.atoms.fit import _neighbours, fit_masks
    from usidgpu.atoms.windows import gather

    if search == "grid" and not numba_available():
        pytest.skip("numba is not installed")
    monkeypatch.setattr(fit, "numba_available", lambda: search == "grid")

    rng = np.random.default_rng(1)
    pos = rng.random((60, 2)) * 80 + 10
    pos = pos[cKDTree(pos).query(pos, k=2)[0][:, 1] > 1.0]
    image = np.zeros((100, 100))
    for radius in (2.5, 6.0, 15.0):
        short = _neighbours(pos, radius)
        for i, row in enumerate(short):
            near = np.hypot(*(pos - pos[i]).T)
            expected = pos[(near > 0) & (near <= 2 * radius)]
            listed = row[row[:, 0] < 1e8]
            assert sorted(map(tuple, listed)) == sorted(map(tuple, expected))
        everyone = np.stack([np.delete(pos, i, axis=0) for i in range(len(pos))])
        values, inside, grid = gather(np, image, pos, int(np.ceil(radius)))
        assert np.array_equal(
            fit_masks(np, pos, grid, inside, radius, short), fit_masks(np, pos, grid, inside, radius, everyone)
        )


def test_refine_input_checks(perovskite):
    with pytest.raises(ValueError, match="engine"):
        refine(perovskite.image, [[10.0, 10.0], [20.0, 20.0]], engine="magic", device="cpu")
    with pytest.raises(ValueError, match="needs device='gpu'"):
        refine(perovskite.image, [[10.0, 10.0], [20.0, 20.0]], engine="kernel", device="cpu")
    with pytest.raises(ValueError, match="inside the image"):
        refine(perovskite.image, [[-5.0, 10.0], [20.0, 20.0]], device="cpu")
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        refine(perovskite.image, [1.0, 2.0, 3.0], device="cpu")
    with pytest.raises(ValueError, match="two columns"):
        refine(perovskite.image, [[10.0, 10.0]], device="cpu")
    assert len(refine(perovskite.image, np.zeros((0, 2)), device="cpu")) == 0
    with pytest.raises(ValueError, match="finite number of at least 1 px"):
        refine(perovskite.image, [[10.0, 10.0], [20.0, 20.0]], radius=np.inf, device="cpu")


def test_gpu_device_without_a_gpu_is_an_error(perovskite, monkeypatch):
    from usidgpu.core import device as backend

    if backend.gpu_available():
        pytest.skip("a GPU is present")
    with pytest.raises(DeviceError):
        refine(perovskite.image, [[10.0, 10.0], [20.0, 20.0]], device="gpu")


def test_positions_agree_with_atomap_where_it_installs(perovskite):
    """atomap's per-column 2-D Gaussian refinement (a HyperSpy model per atom) as an outside oracle."""
    pytest.importorskip("atomap", reason="atomap is not installed (optional: pip install atomap)")
    import warnings

    import atomap.api  # noqa: F401  (atomap.sublattice alone hits a circular import)
    from atomap.sublattice import Sublattice

    found = find_columns(perovskite.image)
    inner = np.flatnonzero(
        ((found.positions >= 12) & (found.positions <= np.array(perovskite.image.shape) - 13)).all(1)
    )
    chosen = inner[:40]
    radius = 0.5 * found.spacing
    ours = refine(perovskite.image, found, radius=radius, device="cpu").positions[chosen]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sub = Sublattice(found.positions[chosen][:, ::-1].copy(), perovskite.image)  # atomap: (x, y)
        sub.refine_atom_positions_using_2d_gaussian(mask_radius=radius, show_progressbar=False)
    theirs = np.stack([np.asarray(sub.y_position), np.asarray(sub.x_position)], axis=1)
    assert np.abs(theirs - ours).max() < 0.1  # px, the agreement target


def test_spacing_beyond_the_search_range_is_an_error_not_the_range_edge():
    s = lattice_image((150, 150), spacing=60.0, motif="square", sigma=5, seed=0)
    with pytest.raises(ValueError, match="give the column spacing"):
        column_spacing(s.image)
    wide = lattice_image((120, 300), spacing=45.0, motif="square", sigma=5, seed=0)
    assert column_spacing(wide.image) == pytest.approx(45.0, rel=0.02)


@pytest.mark.parametrize("engine", ["array", pytest.param("numba", marks=needs_numba)])
def test_fits_with_too_few_pixels_or_bad_input_are_not_reported_as_converged(engine):
    image = render((24, 24), np.array([[10.4, 10.4]]), np.ones(1), 0.6, 0.1)
    few = refine(image, [[10.4, 10.4], [10.4, 13.4]], radius=1.0, device="cpu", engine=engine)
    assert (few.n_pixels <= 7).all() and not few.converged.any() and np.isinf(few.position_errors).all()
    bad = image.copy()
    bad[10, 10] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        refine(bad, [[10.0, 10.0], [20.0, 20.0]], device="cpu", engine=engine)
    with pytest.raises(ValueError, match="duplicate"):
        refine(image, [[10.0, 10.0], [10.0, 10.0], [20.0, 20.0]], device="cpu", engine=engine)


def test_background_at_the_peaks_equals_the_minimum_filter():
    from scipy import ndimage

    from usidgpu.atoms.find import _disk, disk_minimum_at

    rng = np.random.default_rng(0)
    for shape in ((50, 70), (300, 200)):
        image = rng.random(shape)
        points = np.c_[rng.integers(0, shape[0], 500), rng.integers(0, shape[1], 500)]
        points[:4] = [[0, 0], [shape[0] - 1, shape[1] - 1], [0, shape[1] - 1], [shape[0] - 1, 0]]  # corners
        for radius in (1.0, 2.5, 11.3, 30.0):
            full = ndimage.minimum_filter(image, footprint=_disk(radius), mode="nearest")
            assert np.array_equal(disk_minimum_at(image, points, radius, chunk=97), full[points[:, 0], points[:, 1]])


def test_the_spacing_of_a_large_image_is_read_in_its_centre():
    from usidgpu.atoms.find import SPACING_CROP

    big = lattice_image((SPACING_CROP + 300, SPACING_CROP + 100), spacing=14, motif="square", seed=2, dose=300)
    centre = big.image[150 : 150 + SPACING_CROP, 50 : 50 + SPACING_CROP]
    assert column_spacing(big.image) == column_spacing(centre) == pytest.approx(14.0, rel=0.01)
