"""The joint fit (``refine(..., neighbours="joint")``): every column fitted at once, with shared
widths per kind and a plane background, where columns overlap so much that fitting each on the
image minus its neighbours leaves a dim sublattice several times above the Cramér–Rao bound.
Oracles: the generator's ground truth and the bound of :func:`usidgpu.atoms.evaluate.position_crb`."""

from __future__ import annotations

import numpy as np
import pytest

from usidgpu.atoms.evaluate import coverage, position_crb, rms_ratio
from usidgpu.atoms.fit import refine
from usidgpu.atoms.synthetic import two_sublattice


def overlapping(ratio=0.25, spacing=12.0, frac=0.25, dose=500.0, cells=10, seed=19):
    size = int(spacing * cells)
    sigma = frac * spacing
    s = two_sublattice((size, size), spacing=spacing, sigma=sigma, ratio=ratio, dose=dose, seed=seed)
    start = np.clip(s.positions + np.random.default_rng(seed).normal(0, 0.2, s.positions.shape), 0, size - 1)
    crb = position_crb(s.positions, s.amplitudes, sigma, s.background, (size, size), dose,
                       others=(s.parameters["outside"], s.parameters["outside_amplitudes"]))  # fmt: skip
    scored = ((s.positions >= spacing) & (s.positions <= size - 1 - spacing)).all(axis=1)
    return s, start, crb, scored


@pytest.fixture(scope="module")
def quarter_cell_wide():
    s, start, crb, scored = overlapping()
    return s, crb, scored, refine(s.image, start, neighbours="subtract"), refine(s.image, start, neighbours="joint")


def test_columns_a_quarter_cell_wide_reach_the_bound_jointly(quarter_cell_wide):
    s, crb, scored, subtract, joint = quarter_cell_wide
    for k in (0, 1):  # bright, dim
        mine = scored & (s.sublattice == k)
        err = joint.positions[mine] - s.positions[mine]
        assert rms_ratio(err, crb[mine]) <= 1.15
        assert 0.5 <= coverage(err, joint.position_errors[mine], 1) <= 0.8
        assert coverage(err, joint.position_errors[mine], 2) >= 0.85
    dim = scored & (s.sublattice == 1)
    # the subtraction alone leaves the dim columns far off: what the joint fit is for
    assert rms_ratio(subtract.positions[dim] - s.positions[dim], crb[dim]) > 2.0


def test_the_joint_fit_recovers_widths_and_background(quarter_cell_wide):
    s, _crb, _scored, _subtract, joint = quarter_cell_wide
    np.testing.assert_allclose(joint.params[:, 3:5], s.sigma, rtol=0.03)  # σx, σy of every column
    assert abs(np.median(joint.params[:, 6]) - s.background) < 0.02  # the plane, at the columns
    assert joint.parameters["neighbours"] == "joint" and joint.parameters["joint_iterations"] >= 1
    assert joint.parameters["joint_border_margin"] >= 2 * 0.8 * s.sigma


def test_joint_is_no_worse_where_columns_barely_overlap():
    s, start, crb, scored = overlapping(ratio=0.7, spacing=12.0, frac=0.12, dose=100.0, cells=8, seed=5)
    subtract = refine(s.image, start, neighbours="subtract")
    joint = refine(s.image, start, neighbours="joint")
    for k in (0, 1):
        mine = scored & (s.sublattice == k)
        ours = rms_ratio(joint.positions[mine] - s.positions[mine], crb[mine])
        assert ours <= 1.15
        assert ours <= 1.05 * rms_ratio(subtract.positions[mine] - s.positions[mine], crb[mine])


def test_auto_fits_jointly_only_where_the_columns_overlap_strongly(quarter_cell_wide):
    s, _crb, _scored, _subtract, joint = quarter_cell_wide
    start = joint.start
    auto = refine(s.image, start, neighbours="auto")
    assert auto.parameters["neighbours"] == "joint", auto.parameters["neighbours_rule"]
    np.testing.assert_allclose(auto.positions, joint.positions)
    narrow, start, _crb, _scored = overlapping(ratio=0.7, spacing=16.0, frac=0.1, dose=100.0, cells=6, seed=2)
    auto = refine(narrow.image, start, neighbours="auto")
    assert auto.parameters["neighbours"] == "subtract"
    assert "below 0.2" in auto.parameters["neighbours_rule"]
    np.testing.assert_allclose(auto.positions, refine(narrow.image, start, neighbours="subtract").positions)


def test_noise_free_and_flat_images_and_frames_too_small_for_a_joint_fit():
    from usidgpu.atoms.synthetic import render

    truth = np.array([[16.0, 16.0], [16.0, 48.0], [48.0, 16.0], [48.0, 48.0]])
    clean = render((64, 64), truth, np.ones(4), 2.0, 0.1)  # a simulation: no noise at all
    for mode in ("subtract", "joint"):
        fit = refine(clean, truth + [[0.2, 0.0], [0.0, -0.2], [0.3, 0.0], [0.0, 0.0]], neighbours=mode)
        np.testing.assert_allclose(fit.positions, truth, atol=1e-3)
        flat = refine(np.full((40, 40), 3.0), truth[:3] / 2 + 4, neighbours=mode)
        assert np.isfinite(flat.positions).all()
    wide = render((30, 30), truth / 3.2 + 5, np.ones(4), 6.0, 0.1)  # columns wider than the frame's middle
    fit = refine(wide, truth / 3.2 + 5, neighbours="joint")
    assert fit.parameters["neighbours"] == "subtract" and "too few for a joint fit" in fit.parameters["joint_skipped"]
