"""Lattice analysis that survives real scans: a fitted scan distortion against the one applied by
our own generator (flyback at every line start, drift down the frame), vacancies that need the
image's evidence, and the shipped Gatan DM3 survey whose flyback and drift used to read as strain
and vacancies."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from scipy.spatial import cKDTree

import usidgpu
from usidgpu.atoms.analysis import analyze
from usidgpu.atoms.evidence import site_evidence
from usidgpu.atoms.indexing import walk_indices
from usidgpu.atoms.lattice import find_vacancies, lattice_fit
from usidgpu.atoms.scan_distortion import fit_scan_distortion
from usidgpu.atoms.scan_synthetic import distorted_lattice, scan_maps
from usidgpu.atoms.sites import analyze_sites
from usidgpu.atoms.synthetic import lattice_image, render
from usidgpu.imageio import image_to_usid

SOURCE = "/Measurement_000/Channel_000/Raw_Data"


def _linear_removed(values: np.ndarray) -> np.ndarray:
    """``values`` minus their least-squares line over the index (the part a lattice cannot absorb)."""
    r = np.arange(len(values), dtype=float)
    design = np.column_stack([np.ones_like(r), r])
    return values - design @ np.linalg.lstsq(design, values, rcond=None)[0]


def _wrong_indices(truth, lattice, indices, trusted) -> int:
    """Columns whose cell indices do not map onto their true specimen position by the affine map
    that the other columns agree on."""
    site = (indices[:, :2] + lattice.motif[indices[:, 2]]) @ lattice.vectors
    design = np.column_stack([site, np.ones(len(site))])
    keep = trusted.copy()
    for _ in range(5):
        coef = np.linalg.lstsq(design[keep], truth.specimen[keep], rcond=None)[0]
        miss = np.hypot(*(design @ coef - truth.specimen).T)
        keep = trusted & (miss < 2.0)
    return int((trusted & (miss >= 2.0)).sum())


# ------------------------------------------------------------------------------ the generator
def test_generator_applies_the_scan_it_says():
    fast, slow, shift = scan_maps((100, 200), flyback=0.5, flyback_fraction=0.2, drift=0.1, shear=3.0)
    cw = 0.2 * 199
    assert np.gradient(fast)[0] == pytest.approx(1.5, abs=0.02)  # the line start runs 1.5× fast
    assert np.allclose(np.gradient(fast)[int(cw) + 2 :], 1.0) and fast[-1] == 199.0  # then not at all
    assert 1 / np.gradient(slow)[0] == pytest.approx(1 / 0.95, rel=1e-3)  # spacing ±5 % down the frame
    assert shift[0] == 0.0 and shift[-1] == pytest.approx(3.0)
    t = distorted_lattice((96, 128), spacing=12.0, sigma=1.8, dose=None)
    # every column is drawn where the truth puts it: the local maximum of the noise-free image
    inside = np.all((t.positions > 4) & (t.positions < np.array(t.image.shape) - 5), axis=1)
    for y, x in t.positions[inside]:
        r, c = int(round(y)), int(round(x))
        patch = t.clean[r - 2 : r + 3, c - 2 : c + 3]
        assert np.unravel_index(np.argmax(patch), patch.shape) == (2, 2)


# ------------------------------------------------------------------------------ indexing and fit
@pytest.mark.parametrize(
    "kw",
    [
        dict(shape=(384, 384), flyback=0.6, flyback_fraction=0.25, drift=0.12, shear=6.0),
        dict(shape=(320, 320), motif="perovskite", spacing=16.0, angle_deg=10.0, flyback=0.6, flyback_fraction=0.25),
    ],
)
def test_walking_from_neighbour_to_neighbour_never_misindexes(kw):
    t = distorted_lattice(dose=None, **kw)
    lattice = lattice_fit(t.positions)
    walked, trusted = walk_indices(t.positions, lattice)
    assert trusted.mean() > 0.9  # only the most compressed line starts wait for a corrected walk
    assert _wrong_indices(t, lattice, walked, trusted) == 0
    # rounding against one global lattice puts a tenth of the columns in the wrong cell
    rounded, _ = lattice.nearest_sites(t.positions)
    assert _wrong_indices(t, lattice, rounded, np.ones(len(t.positions), dtype=bool)) > 0.05 * len(t.positions)


def test_fitted_distortion_recovers_the_applied_profiles():
    t = distorted_lattice((384, 384), flyback=0.5, flyback_fraction=0.2, drift=0.1, shear=5.0, dose=None)
    pos = t.positions[t.positions[:, 1] >= 0]  # columns whose centre the image holds
    noisy = pos + np.random.default_rng(0).normal(0, 0.05, pos.shape)
    d, used = fit_scan_distortion(noisy, lattice_fit(noisy), t.image.shape)
    assert used.mean() > 0.95 and d.shape == t.image.shape
    first = int(np.ceil(pos[:, 1].min()))  # the profile is measured from the first column on
    assert np.abs(d.fast_spacing - t.fast_spacing)[first:].max() < 0.02
    assert np.abs(d.fast - t.fast)[first:].max() < 0.15  # px
    assert d.fast_spacing[first] < 0.72 and np.allclose(d.fast_spacing[int(d.fast_window) + 2 :], 1.0)
    # the slow scan and the line shift are known up to their linear part (the lattice's cell)
    slow_truth = 1 / np.gradient(np.arange(384) + _linear_removed(t.slow))
    assert np.abs(d.slow_spacing - slow_truth).max() < 0.006
    assert np.abs(d.shift - _linear_removed(t.shift)).max() < 0.15
    # the reported errors are honest: the truth lies within 4 σ (plus the interpolation's 0.3 %)
    assert np.all(np.abs(d.fast_spacing - t.fast_spacing)[first + 3 :] < 4 * d.fast_error[first + 3 :] + 0.003)
    back = d.to_image(d.correct(noisy))
    np.testing.assert_allclose(back, noisy, atol=1e-6)
    assert d.rms_affine > 1.0 and d.rms < 0.1


# ------------------------------------------------------------------------------ the whole analysis
CASES = {
    "square layer": dict(
        shape=(384, 384),
        flyback=0.6,
        flyback_fraction=0.2,
        drift=0.1,
        shear=5.0,
        vacancies=4,
        layer_strain=0.02,
        seed=3,
    ),  # fmt: skip
    "perovskite": dict(
        shape=(320, 320),
        motif="perovskite",
        spacing=16.0,
        angle_deg=8.0,
        flyback=0.5,
        flyback_fraction=0.2,
        drift=0.1,
        shear=4.0,
        vacancies=4,
        seed=4,
    ),  # fmt: skip
}


def _strain_errors(t, a):
    """|ε_xx − truth| and |ε_yy| of the columns away from the edges and the layer's interface,
    relative to the lattice of the unstrained columns."""
    h, w = t.image.shape
    spacing = t.parameters["spacing"]
    truth = t.strain[cKDTree(t.positions).query(a.positions)[1]]
    y, x = a.positions.T
    x0 = t.parameters["layer_start"] * (w - 1)
    inner = (y > spacing) & (y < h - spacing) & (x > 0.5 * spacing) & (x < w - spacing)
    inner &= np.abs(x - x0) > spacing
    strain = a.strain(reference=inner & (truth == 0))
    exx, eyy = strain.columns[:, 0], strain.columns[:, 1]
    ok = inner & np.isfinite(exx)
    return np.abs(exx - truth)[ok], np.abs(eyy)[ok], np.median(exx[ok & (truth > 0)]) if (truth > 0).any() else 0.0


@pytest.mark.parametrize("name", sorted(CASES))
def test_distorted_scan_no_false_vacancies_true_strain_recovered_profile(name):
    t = distorted_lattice(**CASES[name])
    a = analyze(t.image, device="cpu")
    # every vacancy found where it is, nothing else
    assert len(a.vacancies) == len(t.vacancies) == 4
    d, _ = cKDTree(t.vacancies).query(a.vacancies.positions)
    assert (d < 1.5).all(), d
    assert (a.vacancies.evidence < 0.25).all() and len(a.vacancies.unconfirmed) == 0
    assert a.lattice.inliers.all()  # no column "off the lattice"
    # strain within ±0.5 % of the truth, the 2 % layer measured as such
    exx_err, eyy_err, layer = _strain_errors(t, a)
    assert np.percentile(exx_err, 95) < 0.005 and np.percentile(eyy_err, 95) < 0.005, (exx_err.max(), eyy_err.max())
    assert layer == pytest.approx(t.parameters["layer_strain"], abs=0.001)
    # the distortion, reported as such: the applied profiles, recovered
    first = int(np.ceil(a.positions[:, 1].min()))
    assert np.abs(a.distortion.fast_spacing - t.fast_spacing)[first:].max() < 0.03
    slow_truth = 1 / np.gradient(np.arange(len(t.slow)) + _linear_removed(t.slow))
    assert np.abs(a.distortion.slow_spacing - slow_truth).max() < 0.01
    # the same image measured against one affine lattice: the scan reads as ±10–20 % strain
    plain = analyze(t.image, device="cpu", scan_distortion=False)
    assert plain.distortion is None
    exx_plain, eyy_plain, _ = _strain_errors(t, plain)
    assert np.percentile(exx_plain, 95) > 0.1 and np.percentile(eyy_plain, 95) > 0.02


# ------------------------------------------------------------------------------ vacancies need evidence
@pytest.fixture(scope="module")
def perovskite():
    truth = lattice_image((192, 192), spacing=16.0, angle_deg=10.0, vacancies=3, displacement=0.1, dose=200, margin=3)
    return truth, analyze(truth.image, device="cpu")


def test_an_empty_site_is_a_vacancy_only_where_the_image_shows_none(perovskite):
    truth, a = perovskite
    assert len(a.vacancies) == 3 and (a.vacancies.evidence < 0.25).all()
    centre = np.array(truth.image.shape) / 2
    for label in (0, 1):  # a missed bright column, and a missed dim one
        missed = int(np.argmin(np.hypot(*(a.positions - centre).T) + 1e3 * (a.sublattice != label)))
        params = np.delete(a.fit.params, missed, axis=0)
        sites = analyze_sites(truth.image, params, 2)
        assert len(sites.vacancies) == 3  # the true vacancies, not the site of the missed column
        d, _ = cKDTree(sites.vacancies.unconfirmed).query(a.positions[missed])
        assert len(sites.vacancies.unconfirmed) == 1 and d < 1.0  # reported as a column the fit missed
        # the positions alone would have called it a vacancy
        alone = analyze_sites(truth.image, params, 2, vacancy_evidence=0)
        assert len(alone.vacancies) == 4 and np.isnan(alone.vacancies.evidence).all()


def test_site_evidence_reads_the_image(perovskite):
    truth, a = perovskite
    full = site_evidence(truth.image, truth.positions[:5], truth.sublattice[:5], a.fit.params[:0], [], 11.3)
    assert np.isnan(full).all()  # no fitted columns: nothing to compare with
    # a column's own site: about one column's amplitude, whether the column was fitted or not, and
    # still when the site is 0.3 of a separation from it (a displaced column is no vacancy)
    i = int(np.argmin(np.hypot(*(a.positions - 96).T)))
    rest, labels = np.delete(a.fit.params, i, axis=0), np.delete(a.sublattice, i)
    at = np.vstack([a.positions[i], a.positions[i] + [0.0, 0.3 * 11.3]])
    for params, kinds in ((a.fit.params, a.sublattice), (rest, labels)):
        here = site_evidence(truth.image, at, a.sublattice[[i, i]], params, kinds, 11.3)
        assert 0.8 < here[0] < 1.2 and here[1] > 0.6, here
    empty = site_evidence(truth.image, a.vacancies.positions, a.vacancies.sublattice, a.fit.params, a.sublattice, 11.3)
    assert (np.abs(empty) < 0.25).all()


def test_a_column_displaced_beyond_the_tolerance_is_no_vacancy():
    ys, xs = np.mgrid[8:184:14, 8:184:14].astype(float)
    pos = np.column_stack([ys.ravel(), xs.ravel()])
    moved = int(np.argmin(np.hypot(*(pos - 96).T)))
    pos[moved] += [0.0, 0.36 * 14]  # beyond the 0.3 tolerance, still nearer its own site
    image = np.random.default_rng(1).poisson(render((192, 192), pos, np.ones(len(pos)), 2.0, 0.1) * 300) / 300
    a = analyze(image, device="cpu")
    assert len(a.vacancies) == 0
    i = int(np.argmin(np.hypot(*(a.positions - pos[moved]).T)))
    assert a.displacement[i] == pytest.approx([0.0, 0.36 * 14], abs=0.15)


# ------------------------------------------------------------------------------ written results
def test_distortion_in_the_table_csv_and_usid_group(tmp_path):
    t = distorted_lattice((160, 192), spacing=13.0, vacancies=1, seed=7)
    path = tmp_path / "scan.h5"
    image_to_usid(t.image, path)
    with usidgpu.open(path) as f:
        a = analyze(f[SOURCE], device="cpu")
        group = a.write()
    assert usidgpu.validate(path) == []
    table = a.distortion.table()
    with h5py.File(path, "r") as h:
        g = h[group]
        ds = g["Scan_Distortion"]
        assert ds.shape == (1, 192, len(table)) and list(ds.attrs["columns"]) == list(table)
        np.testing.assert_allclose(ds[0], np.column_stack(list(table.values())), equal_nan=True)
        assert ds.attrs["summary"][0] == a.distortion.summary()
        assert g["Vacancies"].shape == (len(a.vacancies), 5) and list(g["Vacancies"].attrs["columns"])[-1] == "evidence"
        np.testing.assert_allclose(g["Vacancies"][:, 4], a.vacancies.evidence)
        assert g["Unconfirmed_Vacancies"].shape == (0, 3)
    back = np.genfromtxt(a.distortion.to_csv(tmp_path / "scan.csv"), names=True, delimiter=",")
    assert list(back.dtype.names) == list(table) and len(back) == 192
    np.testing.assert_allclose(back["fast_spacing"], table["fast_spacing"], rtol=1e-5)
    assert np.isnan(back["slow_spacing"][160:]).all()  # the image is 160 rows high
    # the column table carries the specimen positions; the strain maps stay on the image
    columns = a.table()
    np.testing.assert_allclose(np.column_stack([columns["y_specimen"], columns["x_specimen"]]), a.specimen_positions)
    np.testing.assert_allclose(a.strain().positions, a.positions)


# ------------------------------------------------------------------------------ the shipped DM3 survey
@pytest.fixture(scope="module")
def survey(tmp_path_factory):
    pytest.importorskip("rsciio")
    from usidgpu.samples import sample_path
    from usidgpu.translate import translate

    path = tmp_path_factory.mktemp("survey") / "survey.h5"
    translate(sample_path("survey-dm3"), path)
    with usidgpu.open(path) as f:
        return np.asarray(f.main_datasets()[0].to_ndim(), dtype=np.float64).squeeze()


def test_dm3_survey_distortion_is_reported_not_vacancies_or_strain(survey):
    a = analyze(survey, device="cpu")
    assert len(a) > 800 and len(a.vacancies) == 0
    assert a.lattice.inliers.mean() > 0.99  # was 250 of 813 "off-lattice"
    strain = a.strain()
    exx, eyy = strain.columns[:, 0], strain.columns[:, 1]
    assert np.nanpercentile(np.abs(exx), 99) < 0.03 and np.nanpercentile(np.abs(eyy), 99) < 0.03  # was −19 %
    d = a.distortion
    assert d.fast_spacing[0] < 0.75 and np.allclose(d.fast_spacing[int(d.fast_window) + 2 :], 1.0)  # flyback
    assert np.ptp(d.slow_spacing[20:-20]) > 0.06  # drift: the line spacing changes by 7 % down the frame
    assert d.rms_affine > 3.0 and d.rms < 0.7
    # the old measure — one affine lattice, an empty site wherever no column is within the tolerance —
    # finds "vacancies" where the image shows columns, and the scan as strain
    old = analyze(survey, device="cpu", scan_distortion=False)
    assert (~old.lattice.inliers).mean() > 0.2 and np.nanpercentile(old.strain().columns[:, 0], 1) < -0.1
    empty = find_vacancies(old.positions, old.lattice, region=survey.shape, labels=old.sublattice)
    assert len(empty) >= 1
    seen = site_evidence(survey, empty.positions, empty.sublattice, old.fit.params, old.sublattice, 15.0)
    assert (seen > 0.5).all(), seen
    # asked, the image says no even against the affine lattice: a displaced column, not a vacancy
    assert len(old.vacancies) == 0


# ------------------------------------------------------------------------------ command line
def test_cli_reports_and_plots_the_distortion(tmp_path, capsys):
    from usidgpu.cli import main as cli

    path = tmp_path / "scan.npy"
    np.save(path, distorted_lattice((192, 224), spacing=13.0, flyback=0.5, flyback_fraction=0.2, seed=2).image)
    png = tmp_path / "scan.png"
    assert cli(["atoms", str(path), "--no-write", "--device", "cpu", "--distortion", str(png)]) == 0
    out = capsys.readouterr().out
    assert "scan          fast scan line start at " in out and "measured on the specimen" in out
    assert f"distortion    {png}" in out and png.stat().st_size > 20_000
    table = tmp_path / "scan.csv"
    assert cli(["atoms", str(path), "--no-write", "--device", "cpu", "--distortion", str(table)]) == 0
    assert f"distortion    {table} (224 rows)" in capsys.readouterr().out
    back = np.genfromtxt(table, names=True, delimiter=",")
    assert back["fast_spacing"][0] < 0.9 and np.isnan(back["slow_spacing"][192:]).all()
    assert cli(["atoms", str(path), "--no-write", "--device", "cpu", "--no-scan-correction"]) == 0
    assert "scan          distortion not fitted (--no-scan-correction)" in capsys.readouterr().out
    for bad, words in (
        (["--no-scan-correction", "--distortion", str(png)], "drop --no-scan-correction"),
        (["--distortion", str(tmp_path / "scan.gif")], "use a .png, .pdf or .svg"),
    ):
        assert cli(["atoms", str(path), "--no-write", "--device", "cpu", *bad]) == 2
        err = capsys.readouterr().err
        assert words in err and err.count("\n") == 1, err
