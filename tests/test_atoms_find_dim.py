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


@pytest.mark.xfail(strict=True, reason="issue 19, open: the blank-frame rule (min_snr) rejects this lattice")
def test_heavily_overlapping_columns_at_a_low_dose_pass_the_blank_frame_rule():
    # a prominence over the disk minimum, on an image smoothed far below the column width: the
    # typical column stands about 8 noise units, under the rule's 10 (noise alone: about 6)
    got = detection(0.7, 8, 0.25, 20)
    assert got["bright"] <= 0.01 and got["dim"] <= 0.02


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
