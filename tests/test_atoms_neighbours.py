"""Issue 19, part A: neighbour-aware refinement, the dim sublattice found, uncertainties that
mean something — on two-sublattice images of an independent generator
(:func:`usidgpu.atoms.synthetic.two_sublattice`), held to the Cramér–Rao bound of the whole image
(:func:`usidgpu.atoms.evaluate.position_crb`, itself checked against a dense inverse here) and to a
per-column ``curve_fit`` on an 11 × 11 window.

A representative subset of the grid of conditions runs here; ``benchmarks/bench_atoms.py
--sections grid`` runs the whole grid. Positions are scored on the columns at least one cell from
the border, and so is detection: nearer, a column's neighbours beyond the frame (which nobody can
fit) reach into its window, pull the fits of the border columns — which then hide a dim column
between them from the second pass — and the bound, which counts them as known, flatters it.
"""

from __future__ import annotations

import numpy as np
import pytest

from usidgpu.atoms.evaluate import (
    _render,
    coverage,
    curve_fit_windows,
    match,
    position_crb,
    rms_ratio,
)
from usidgpu.atoms.find import find_columns
from usidgpu.atoms.fit import numba_available, refine
from usidgpu.atoms.model_image import NoiseModel, column_image, fit_noise
from usidgpu.atoms.synthetic import two_sublattice

ENGINE = "numba" if numba_available() else "array"


# ------------------------------------------------------------------------------------ the bound
def dense_crb(s, dose):
    """√ of the (y, x) diagonal of the inverse of the whole image's Fisher information, dense."""
    h, w = s.image.shape
    yy, xx = (g.ravel().astype(float) for g in np.mgrid[0:h, 0:w])
    outside = s.parameters["outside"], s.parameters["outside_amplitudes"]
    everything = np.concatenate([s.positions, outside[0]]), np.concatenate([s.amplitudes, outside[1]])
    mean = _render((h, w), *everything, np.full(len(everything[0]), s.sigma), s.background).ravel()
    q = 0.5 / s.sigma**2
    rows = []
    for (y0, x0), a in zip(s.positions, s.amplitudes):
        dy, dx = yy - y0, xx - x0
        g = np.exp(-q * (dx * dx + dy * dy))
        rows += [g, 2 * a * g * q * dy, 2 * a * g * q * dx, -a * g * dx * dx, -2 * a * g * dx * dy, -a * g * dy * dy]
    jac = np.array(rows + [np.ones_like(yy)])
    cov = np.linalg.inv((jac / (mean / dose)) @ jac.T)
    n = len(s.positions)
    return np.sqrt(np.stack([np.diag(cov)[1 : 6 * n : 6], np.diag(cov)[2 : 6 * n : 6]], axis=1))


def test_the_bound_is_the_inverse_of_the_whole_images_fisher_information():
    # σ a quarter of the cell: every column's bound depends on its neighbours' unknowns
    s = two_sublattice((48, 48), spacing=10, sigma=2.5, ratio=0.3, dose=100, seed=1)
    others = (s.parameters["outside"], s.parameters["outside_amplitudes"])
    crb = position_crb(s.positions, s.amplitudes, s.sigma, s.background, (48, 48), 100, others=others)
    np.testing.assert_allclose(crb, dense_crb(s, 100), rtol=1e-4)  # the derivatives are cut at 5σ
    # cut into tiles with a margin, as large images are: within 2 %
    tiled = position_crb(s.positions, s.amplitudes, s.sigma, s.background, (48, 48), 100, others=others, tile=16)
    np.testing.assert_allclose(tiled, crb, rtol=0.02)


# ------------------------------------------------------------------------------------ the grid
#: (cell spacing px, σ px, dim/bright, dose counts per unit amplitude, image size px); the whole
#: grid (spacing 8–20, σ/spacing 0.12–0.25, dim/bright 0.25–0.7, dose 20–500) is in the benchmark
CONDITIONS = [
    pytest.param(12, 2.2, 0.45, 60, 168, id="issue-example"),
    pytest.param(16, 2.4, 0.3, 20, 192, id="dim30%-dose20"),
    pytest.param(8, 1.2, 0.7, 100, 112, id="spacing8"),
    pytest.param(20, 2.4, 0.25, 500, 224, id="dim25%-dose500"),
]


def score(s, found, fit, spacing):
    """Missed and false fractions per sublattice, and per sublattice the position errors, bounds,
    reported errors and curve_fit errors of the matched columns — all of the columns at least
    one cell inside the frame."""
    h, w = s.image.shape
    nn = spacing / np.sqrt(2)

    def inside(p, margin):
        return (p[:, 0] >= margin) & (p[:, 0] <= h - 1 - margin) & (p[:, 1] >= margin) & (p[:, 1] <= w - 1 - margin)

    m = match(s.positions, found.positions, 0.3 * nn)
    counted = inside(s.positions, spacing)
    missed = np.isin(np.arange(len(s.positions)), m.missed)
    false = np.isin(np.arange(len(found.positions)), m.false) & inside(found.positions, spacing)
    others = (s.parameters["outside"], s.parameters["outside_amplitudes"])
    dose = s.parameters["dose"]
    crb = position_crb(s.positions, s.amplitudes, s.sigma, s.background, (h, w), dose, others=others)
    ti, fi = m.truth_index, m.found_index
    keep = inside(s.positions[ti], spacing)
    ti, fi = ti[keep], fi[keep]
    oracle, _ = curve_fit_windows(s.image, found.positions[fi])
    out = {"false": false.sum() / counted.sum()}
    for k in (0, 1):
        mine = s.sublattice[ti] == k
        out[k] = dict(
            missed=missed[counted & (s.sublattice == k)].mean(),
            error=fit.positions[fi][mine] - s.positions[ti][mine],
            crb=crb[ti][mine],
            reported=fit.position_errors[fi][mine],
            oracle=oracle[mine] - s.positions[ti][mine],
        )
    return out


#: Noise realizations pooled per condition: the RMS over the bound of one small image (100–150
#: columns of a sublattice) scatters by about 6 % from one realization to the next, as much as
#: the margin the criterion leaves; three pooled scatter by about 3.5 %.
SEEDS = (11, 12, 13)


@pytest.mark.parametrize("spacing, sigma, ratio, dose, size", CONDITIONS)
def test_both_sublattices_found_and_fitted_to_the_statistical_limit(spacing, sigma, ratio, dose, size):
    runs = []
    for seed in SEEDS:
        s = two_sublattice((size, size), spacing=spacing, sigma=sigma, ratio=ratio, dose=dose, seed=seed)
        found = find_columns(s.image, second_pass=True)
        fit = refine(s.image, found, neighbours="subtract", engine=ENGINE)
        assert fit.with_neighbours.mean() > 0.8  # the dense lattice: almost every column has neighbours
        got = score(s, found, fit, spacing)
        assert got["false"] <= 0.01, seed
        runs.append(got)
    for k in (0, 1):
        sub = {key: np.concatenate([got[k][key] for got in runs]) for key in ("error", "crb", "reported", "oracle")}
        assert max(got[k]["missed"] for got in runs) <= 0.01, k
        ratio_crb = rms_ratio(sub["error"], sub["crb"])
        assert ratio_crb <= 1.15, (k, ratio_crb)
        ok = np.isfinite(sub["oracle"]).all(axis=1)
        assert np.sqrt(np.mean(sub["error"] ** 2)) <= np.sqrt(np.mean(sub["oracle"][ok] ** 2)), k
        assert 0.6 <= coverage(sub["error"], sub["reported"]) <= 0.75, k


def test_the_single_column_fit_misses_the_dim_sublattices_limit_that_the_neighbour_aware_one_reaches():
    """The issue's example: the dim columns' tails of bright neighbours in their fit disks."""
    s = two_sublattice((168, 168), spacing=12, sigma=2.2, ratio=0.45, dose=60, seed=11)
    found = find_columns(s.image, second_pass=True)
    alone = score(s, found, refine(s.image, found, neighbours="none", engine=ENGINE), 12)
    joint = score(s, found, refine(s.image, found, neighbours="subtract", engine=ENGINE), 12)
    dim_alone = rms_ratio(alone[1]["error"], alone[1]["crb"])
    dim_joint = rms_ratio(joint[1]["error"], joint[1]["crb"])
    assert dim_alone > 1.25 and dim_joint < 1.15 and dim_joint < 0.85 * dim_alone


# ----------------------------------------------------------------------------------- detection
def test_the_second_pass_finds_the_dim_columns_the_first_misses():
    s = two_sublattice((168, 168), spacing=12, sigma=2.2, ratio=0.3, dose=60, seed=4)
    first = find_columns(s.image, second_pass=False)
    both = find_columns(s.image, second_pass=True)
    inner = (s.positions >= 12).all(axis=1) & (s.positions <= 155).all(axis=1)
    dim = inner & (s.sublattice == 1)
    m1 = match(s.positions, first.positions, 2.5)
    m2 = match(s.positions, both.positions, 2.5)
    assert np.isin(np.flatnonzero(dim), m1.missed).sum() > 0.05 * dim.sum()  # the first pass alone misses some
    assert np.isin(np.flatnonzero(inner), m2.missed).sum() == 0
    assert both.second_pass.sum() == len(both) - len(first) > 0
    assert both.parameters["second_pass"]["added"] == both.second_pass.sum()


def test_no_second_pass_columns_on_noise_vacancies_or_bright_tails():
    # bright columns only (the dim sites empty), many vacancies, a high dose: inside the frame the
    # residual holds the bright columns' tails and noise, nothing else (at the border it may hold
    # a column cut by the frame, which the second pass rightly adds)
    s = two_sublattice((160, 160), spacing=12, sigma=2.2, ratio=0.0, dose=500, vacancies=0.1, seed=2)
    bright = s.sublattice == 0
    found = find_columns(s.image, second_pass=True)
    inner = (found.positions >= 12).all(axis=1) & (found.positions <= 147).all(axis=1)
    assert not (found.second_pass & inner).any()
    m = match(s.positions[bright], found.positions, 2.5)
    assert not np.isin(np.flatnonzero(inner), m.false).any()
    assert len(s.vacancies) > 10


def test_a_blank_frame_still_has_no_columns():
    rng = np.random.default_rng(0)
    for frame in (np.full((96, 96), 3.0), rng.poisson(30.0, (96, 96)) / 30.0):
        assert len(find_columns(frame, spacing=10.0, second_pass=True)) == 0


# -------------------------------------------------------------------------------- uncertainties
def test_reported_errors_match_the_spread_of_repeated_noise_and_the_bound():
    """One specimen, eight noise realizations: the reported position errors against the spread
    of the positions between realizations (and both against the bound), and the coverage of
    the 1σ and 2σ intervals."""
    clean = two_sublattice((112, 112), spacing=12, sigma=2.2, ratio=0.45, dose=None, seed=5)
    dose = 100
    others = (clean.parameters["outside"], clean.parameters["outside_amplitudes"])
    crb = position_crb(clean.positions, clean.amplitudes, 2.2, 0.1, (112, 112), dose, others=others)
    rng = np.random.default_rng(8)
    runs, n = 8, len(clean.positions)
    est, rep = np.full((runs, n, 2), np.nan), np.full((runs, n, 2), np.nan)
    for r in range(runs):
        image = rng.poisson(clean.clean * dose) / dose
        fit = refine(image, find_columns(image), neighbours="subtract", engine=ENGINE)
        m = match(clean.positions, fit.positions, 2.5)
        est[r, m.truth_index], rep[r, m.truth_index] = fit.positions[m.found_index], fit.position_errors[m.found_index]
    inner = (clean.positions >= 12).all(axis=1) & (clean.positions <= 99).all(axis=1)
    inner &= np.isfinite(est).all(axis=(0, 2))
    error, reported, bound = est[:, inner] - clean.positions[inner], rep[:, inner], crb[inner]
    spread = np.std(est[:, inner], axis=0, ddof=1)
    assert np.sqrt(np.mean(spread**2) / np.mean(bound**2)) <= 1.15  # the scatter: at the bound
    assert 0.85 <= np.sqrt(np.mean(reported**2) / np.mean(spread**2)) <= 1.2  # what is reported: that scatter
    assert 0.6 <= coverage(error, reported, 1) <= 0.75
    assert coverage(error, reported, 2) >= 0.88


# ------------------------------------------------------------------------------------- engines
def small_lattice():
    s = two_sublattice((80, 80), spacing=12, sigma=2.2, ratio=0.45, dose=60, seed=3)
    return s, find_columns(s.image, second_pass=True)


@pytest.mark.skipif(not numba_available(), reason="numba is not installed")
def test_the_compiled_engine_runs_the_array_engines_neighbour_aware_fit():
    s, found = small_lattice()
    a = refine(s.image, found, neighbours="subtract", engine="array")
    b = refine(s.image, found, neighbours="subtract", engine="numba")
    np.testing.assert_allclose(b.params, a.params, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(b.errors, a.errors, rtol=1e-6)
    np.testing.assert_array_equal(b.n_iter, a.n_iter)
    np.testing.assert_array_equal(b.n_neighbours, a.n_neighbours)
    np.testing.assert_allclose(b.rms_residual, a.rms_residual, rtol=1e-9)
    assert a.parameters["neighbours"] == "subtract" and a.parameters["noise"] == pytest.approx(b.parameters["noise"])


@pytest.mark.gpu
@pytest.mark.parametrize("engine", ["array", "kernel"])
def test_the_device_engines_run_the_same_neighbour_aware_fit(gpu, engine):
    s, found = small_lattice()
    cpu = refine(s.image, found, neighbours="subtract", engine="array", device="cpu")
    got = refine(gpu.asarray(s.image), found, neighbours="subtract", engine=engine, device="gpu", precision="float64")
    assert got.engine == engine and got.parameters["neighbours"] == "subtract"
    np.testing.assert_allclose(got.positions, cpu.positions, atol=1e-7)
    np.testing.assert_array_equal(got.n_neighbours, cpu.n_neighbours)


def test_isolated_columns_are_fitted_alone_and_say_so():
    s = two_sublattice((160, 160), spacing=40, sigma=2.0, ratio=1.0, dose=200, seed=1)
    fit = refine(s.image, s.positions + 0.3, neighbours="subtract", engine=ENGINE)
    assert not fit.with_neighbours.any() and (fit.n_neighbours == 0).all()
    assert fit.converged.all()
    table = fit.table()
    assert (table["n_neighbours"] == 0).all()


def test_the_drawn_model_is_the_same_on_every_engine():
    rng = np.random.default_rng(0)
    n = 300
    p = np.column_stack(
        [rng.uniform(0.2, 1, n), rng.uniform(-3, 99, (n, 2)), rng.uniform(0.05, 0.3, n), rng.uniform(-0.02, 0.02, n),
         rng.uniform(0.05, 0.3, n), np.zeros(n)]
    )  # fmt: skip
    p[:3, 4] = [3.0, -3.0, 2.5]  # needles: the factorized drawing would leave the float range
    p[:3, 3] = p[:3, 5] = 4.0
    ref = column_image(np, (97, 101), p, 9)
    if numba_available():
        from usidgpu.atoms.fit_numba import render_numba

        np.testing.assert_allclose(render_numba((97, 101), p, 9), ref, rtol=1e-12, atol=1e-14)


def test_the_noise_model_is_read_from_the_residuals():
    s = two_sublattice((160, 160), spacing=12, sigma=2.2, ratio=0.45, dose=None, seed=2)
    rng = np.random.default_rng(1)
    image = rng.poisson(s.clean * 50) / 50 + rng.normal(0, 0.03, s.clean.shape)  # shot + read noise
    fit = refine(image, s.positions, neighbours="none", engine=ENGINE)
    from usidgpu.atoms.neighbours import fitted_form

    noise = fit_noise(image, fitted_form(fit.params), s.positions, fit.radius)
    assert noise.beta == pytest.approx(1 / 50, rel=0.15)
    assert noise.alpha == pytest.approx(0.03**2, rel=0.5, abs=3e-4)
    assert isinstance(noise, NoiseModel)


def test_neighbour_option_checks():
    s, found = small_lattice()
    with pytest.raises(ValueError, match="neighbours must be"):
        refine(s.image, found, neighbours="cluster")
    with pytest.raises(ValueError, match="sweeps"):
        refine(s.image, found, neighbours="subtract", sweeps=0)
