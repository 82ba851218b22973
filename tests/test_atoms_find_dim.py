"""Dim sublattices (issue 19): the second pass of the column finder against the generator's truth.

The hard conditions of the issue's grid, on small images: a dim sublattice at a quarter of the
bright amplitude whose columns overlap their bright neighbours (σ a quarter of the cell), and one
at 45 % on the finest cell; a lattice without a dim sublattice, and frames of noise, get nothing.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from usidgpu.atoms.evaluate import match
from usidgpu.atoms.find import find_columns
from usidgpu.atoms.synthetic import two_sublattice


def detection(ratio: float, spacing: float, frac: float, dose: float, cells: int = 12, seed: int = 19) -> dict:
    """Missed fractions per sublattice and the false fraction, scored as the benchmark does: the
    columns at least one cell from the border, matched within 0.3 × the nearest-neighbour distance."""
    size = int(spacing * (cells + 2))
    s = two_sublattice((size, size), spacing=spacing, sigma=frac * spacing, ratio=ratio, dose=dose, seed=seed)
    found = find_columns(s.image, second_pass=True)

    def inside(p: np.ndarray) -> np.ndarray:
        return ((p >= spacing) & (p <= size - 1 - spacing)).all(axis=1)

    m = match(s.positions, found.positions, 0.3 * spacing / math.sqrt(2))
    counted = inside(s.positions)
    missed = np.isin(np.arange(len(s.positions)), m.missed)
    false = np.isin(np.arange(len(found.positions)), m.false) & inside(found.positions)
    return dict(
        bright=float(missed[counted & (s.sublattice == 0)].mean()),
        dim=float(missed[counted & (s.sublattice == 1)].mean()),
        false=float(false.sum() / counted.sum()),
        found=found,
    )


@pytest.mark.parametrize(
    "ratio, spacing, frac, dose",
    [
        (0.25, 12, 0.25, 20),  # was: the dim sublattice missed entirely
        (0.25, 8, 0.25, 500),  # was: missed entirely even without noise to speak of
        (0.45, 8, 0.25, 100),  # was: missed entirely
        (0.25, 8, 0.18, 20),  # was: 97 % missed
        (0.70, 20, 0.25, 20),  # was: 3 % missed
    ],
)
def test_the_dim_sublattice_is_found_where_it_overlaps_the_bright_one(ratio, spacing, frac, dose):
    got = detection(ratio, spacing, frac, dose)
    assert got["bright"] <= 0.01, got
    assert got["dim"] <= 0.02, got  # 12 × 12 cells: 2 % is three columns
    assert got["false"] <= 0.01, got
    assert got["found"].parameters["second_pass"]["sites"]["tested"] > 0


def test_heavily_overlapping_columns_at_a_low_dose_pass_the_blank_frame_rule_by_their_lattice():
    # the typical column stands about 8 noise units over its neighbours' tails, under the rule's
    # 10 (noise alone: about 6); the autocorrelation shows the lattice at 50–80 × its noise level
    got = detection(0.7, 12, 0.25, 20)
    assert "2-D lattice in the autocorrelation" in got["found"].parameters["blank_frame_rule"]
    assert got["bright"] <= 0.01 and got["dim"] <= 0.02 and got["false"] <= 0.01


@pytest.mark.xfail(strict=True, reason="issue 19, open: 5.7 px between columns 2 px wide at 20 counts")
def test_the_finest_heavily_overlapping_lattice_at_a_low_dose():
    # past the blank-frame rule (by its lattice), and after the joint fit of the second pass it
    # misses about 1 % of each sublattice, but a tenth of its maxima are on noise between them.
    # Near the information limit: an unbiased estimator at the dim columns' Cramér–Rao bound
    # (1.0 px) would put 6 % of them beyond the match radius (1.7 px; benchmarks/bench_atoms.py)
    got = detection(0.7, 8, 0.25, 20)
    assert got["bright"] <= 0.01 and got["dim"] <= 0.02 and got["false"] <= 0.01


def test_lattice_strength_tells_a_lattice_from_noise_flat_frames_and_stripes():
    from usidgpu.atoms.find import lattice_strength

    rng = np.random.default_rng(3)
    for mean in (5.0, 200.0):
        assert lattice_strength(rng.poisson(mean, (160, 160)).astype(float)) is None
    assert lattice_strength(np.full((96, 96), 4.0)) is None
    rows = np.arange(200)[:, None]
    stripes = rng.poisson(30, (200, 200)) + 20 * np.sin(rows / 3.0) * rng.random((200, 1))  # scan lines: 1-D
    assert lattice_strength(stripes.astype(float)) is None
    s = two_sublattice((176, 176), spacing=8, sigma=2.0, ratio=0.7, dose=20, seed=19)
    assert lattice_strength(s.image) > 30


def test_a_lattice_without_a_dim_sublattice_gets_no_columns_at_its_empty_sites():
    # the dim sites empty, 10 % of the bright ones too, the columns overlapping (σ = 0.25 × cell)
    s = two_sublattice((168, 168), spacing=12, sigma=3.0, ratio=0.0, dose=100, vacancies=0.1, seed=7)
    found = find_columns(s.image, second_pass=True)
    inner = ((found.positions >= 12) & (found.positions <= 155)).all(axis=1)
    assert not (found.second_pass & inner).any()
    assert len(found.parameters["second_pass"]["sites"].get("sites", [])) <= 1  # the cell holds one site


@pytest.mark.parametrize("mean", [5.0, 30.0, 200.0])
def test_frames_of_noise_still_have_no_columns(mean):
    rng = np.random.default_rng(int(mean))
    frame = rng.poisson(mean, (128, 128)) / mean
    assert len(find_columns(frame, spacing=10.0, second_pass=True)) == 0
    assert len(find_columns(np.full((96, 96), mean), spacing=10.0, second_pass=True)) == 0


@pytest.mark.parametrize("share", [0.97, 0.6, 0.1])
def test_the_site_decision_estimates_how_many_tested_cells_are_occupied_and_errs_least(share):
    """``occupied`` against the truth of a simulated mixture: empty cells at zero, columns at an
    amplitude 3.5 standard errors up with their own spread. It must estimate the share and the
    columns' amplitude from the amplitudes alone (starting from a typical amplitude set low, as a
    median over such a mixture is), and err about as rarely as the Bayes rule that knows both;
    where nearly every cell is occupied (a sublattice the first pass could not see), less often
    than the fixed cut at half the typical amplitude."""
    from scipy.stats import norm

    from usidgpu.atoms.residual_search import occupied

    rng = np.random.default_rng(int(share * 100))
    n, level, spread = 4000, 1.0, 0.1
    error = rng.uniform(0.25, 0.33, n)
    truth = rng.random(n) < share
    amplitude = np.where(truth, rng.normal(level, spread, n), 0.0) + rng.normal(0.0, error)
    present, pi, est = occupied(amplitude, error, typical=0.6 * level, spread=spread)
    assert abs(pi - share) < 0.03
    assert abs(est - level) < 0.05
    log_present = norm.logpdf(amplitude, level, np.sqrt(error**2 + spread**2)) + np.log(share)
    bayes = log_present > norm.logpdf(amplitude, 0.0, error) + np.log(1 - share)
    errors = int((present != truth).sum())
    assert errors <= 1.1 * int((bayes != truth).sum()) + 5
    if share > 0.9:
        assert errors < int(((amplitude >= 0.5 * level) != truth).sum())


def test_the_site_decision_does_not_fill_a_dim_sublattice_with_many_vacancies():
    # a fifth of the cells empty at 20 counts: the typical amplitude of the tested cells' mixture
    # sits low, and the columns' own amplitude must be estimated, not taken from it
    s = two_sublattice((112, 112), spacing=8, sigma=0.96, ratio=0.25, dose=20, vacancies=0.2, seed=5)
    found = find_columns(s.image, second_pass=True)
    m = match(s.positions, found.positions, 0.3 * 8 / math.sqrt(2))
    inner = ((found.positions >= 8) & (found.positions <= 103)).all(axis=1)
    false = np.isin(np.arange(len(found.positions)), m.false) & inner
    counted = ((s.positions >= 8) & (s.positions <= 103)).all(axis=1)
    missed = np.isin(np.arange(len(s.positions)), m.missed) & counted
    assert false.sum() / counted.sum() <= 0.01
    assert missed[s.sublattice == 1].sum() / (counted & (s.sublattice == 1)).sum() <= 0.02
    sites = found.parameters["second_pass"]["sites"]
    assert 0.5 < max(sites["occupancy"]) < 0.9  # most tested dim cells hold a column, not all
