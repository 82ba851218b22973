"""The whole column analysis against synthetic lattices with known truth; USID and CSV output;
the real simulated STEM image; the overlay and track figures."""

from __future__ import annotations

import dataclasses
import hashlib
import shutil

import h5py
import numpy as np
import pytest
from conftest import real_file
from scipy.spatial import cKDTree

import usidgpu
from usidgpu.atoms.analysis import NoColumnsError, analyze, analyze_stack
from usidgpu.atoms.synthetic import lattice_image, render
from usidgpu.atoms.track import link
from usidgpu.imageio import image_to_usid

pytest.importorskip("matplotlib")

from matplotlib.collections import LineCollection  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from usidgpu.viz import plot_columns, plot_tracks, save_figure  # noqa: E402

SHAPE = (192, 192)
SOURCE = "/Measurement_000/Channel_000/Raw_Data"
# margin: a column centred within 3 px of the border is half cut off, not a column to find
CASES = {
    "perovskite": dict(motif="perovskite", spacing=16.0, angle_deg=10.0, seed=1),
    "square": dict(motif="square", spacing=14.0, angle_deg=-7.0, seed=2),
}


def synthetic(name, **kw):
    args = dict(CASES[name], vacancies=4, displacement=0.3, dose=200.0, margin=3.0)
    args.update(kw)
    return lattice_image(SHAPE, **args)


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request):
    truth = synthetic(request.param)
    return request.param, truth, analyze(truth.image, device="cpu")


def match(found, truth, spacing):
    """Nearest truth column of each found one (and whether it is within a quarter spacing), and
    whether each truth column has a found one that near."""
    d, i = cKDTree(truth).query(found)
    d_back, _ = cKDTree(found).query(truth)
    return i, d < 0.25 * spacing, d_back < 0.25 * spacing


# ------------------------------------------------------------------------------ synthetic truth
def test_every_column_found_and_nothing_else(case):
    name, truth, a = case
    spacing = CASES[name]["spacing"]
    i, real, found = match(a.positions, truth.positions, spacing)
    assert real.all(), f"{(~real).sum()} false columns at {a.positions[~real]}"
    assert (~found).sum() <= 0.01 * len(truth.positions), f"missed {truth.positions[~found]}"
    assert len(np.unique(i)) == len(i)  # one found column per true column
    assert a.fit.converged.mean() > 0.98
    assert np.median(np.hypot(*(a.positions - truth.positions[i]).T)) < 0.1


def test_sublattices_and_auto_rule(case):
    name, truth, a = case
    i, _, _ = match(a.positions, truth.positions, CASES[name]["spacing"])
    expected = 2 if name == "perovskite" else 1
    assert a.parameters["n_sublattices"] == expected
    assert a.sublattice_rule.startswith(
        f"{expected}: fitted amplitudes are {'bimodal' if expected == 2 else 'unimodal'}"
    )
    # sublattice 0 is the brightest: the A columns of the perovskite, motif site 0
    np.testing.assert_array_equal(a.sublattice, truth.sublattice[i])
    assert a.lattice is not None and len(a.lattice.motif) == expected


def test_lattice_vectors(case):
    name, truth, a = case
    lengths = np.hypot(*a.lattice.vectors.T)
    np.testing.assert_allclose(lengths, CASES[name]["spacing"], rtol=5e-3)
    cos = np.dot(*a.lattice.vectors) / np.prod(lengths)
    assert abs(cos) < 5e-3  # square cell


def test_vacancies_found_with_their_sublattice(case):
    name, truth, a = case
    assert a.vacancies is not None and len(a.vacancies) == len(truth.vacancies) == 4
    d, j = cKDTree(truth.vacancies).query(a.vacancies.positions)
    assert (d < 1.0).all(), d  # no false vacancy, each within a pixel of its site
    assert sorted(j) == list(range(len(truth.vacancies)))  # every vacancy found once
    np.testing.assert_array_equal(a.vacancies.sublattice, truth.vacancy_sublattice[j])


def test_displacement_rms(case):
    name, truth, a = case
    i, _, _ = match(a.positions, truth.positions, CASES[name]["spacing"])
    true_shift = (truth.positions - truth.ideal)[i]
    rms = np.sqrt(np.mean(np.sum(a.displacement**2, axis=1)))
    true_rms = np.sqrt(np.mean(np.sum(true_shift**2, axis=1)))
    assert abs(rms - true_rms) < 0.2 * true_rms, (rms, true_rms)
    assert np.median(np.hypot(*(a.displacement - true_shift).T)) < 0.12


@pytest.mark.parametrize("name", sorted(CASES))
def test_noise_free_known_displacement_field(name):
    """No noise: ideal columns show no displacement, five moved columns exactly their shift."""
    truth = synthetic(name, vacancies=0, displacement=0.0, dose=None)
    rng = np.random.default_rng(3)
    centre = np.flatnonzero(np.all(np.abs(truth.ideal - np.array(SHAPE) / 2) < 50, axis=1))
    moved = rng.choice(centre, 5, replace=False)
    shift = np.zeros_like(truth.ideal)
    shift[moved] = rng.uniform(-0.8, 0.8, (5, 2))
    image = render(SHAPE, truth.ideal + shift, truth.amplitudes, truth.sigma, truth.background)
    n_sub = 2 if name == "perovskite" else 1  # see test_noise_free_square_auto_rule
    a = analyze(image, n_sublattices=n_sub, device="cpu")
    i, real, _ = match(a.positions, truth.ideal, CASES[name]["spacing"])
    assert real.all() and len(a) == len(truth.ideal)
    np.testing.assert_allclose(a.displacement, shift[i], atol=0.02)
    still = ~np.isin(i, moved)
    assert np.hypot(*a.displacement[still].T).max() < 0.02


def test_noise_free_perovskite_without_displacement():
    truth = synthetic("perovskite", vacancies=0, displacement=0.0, dose=None)
    a = analyze(truth.image, device="cpu")
    assert a.parameters["n_sublattices"] == 2
    assert np.hypot(*a.displacement.T).max() < 0.02


def test_noise_free_square_auto_rule():
    truth = lattice_image(SHAPE, spacing=16.0, angle_deg=10.0, motif="square", seed=1)  # no noise, no margin
    a = analyze(truth.image, device="cpu")
    assert a.parameters["n_sublattices"] == 1, a.sublattice_rule


# ------------------------------------------------------------------------------ USID and CSV
def _raw_hash(path):
    with h5py.File(path, "r") as h:
        return hashlib.sha256(h[SOURCE][()].tobytes()).hexdigest()


def test_write_reopen_validate(tmp_path, pyusid):
    truth = synthetic("perovskite")
    path = tmp_path / "lattice.h5"
    image_to_usid(truth.image, path)
    before = _raw_hash(path)
    with usidgpu.open(path) as f:
        a = analyze(f[SOURCE], device="cpu")
        group = a.write()
    assert group == SOURCE + "-Atomic_Columns_000"
    assert _raw_hash(path) == before
    assert usidgpu.validate(path) == []
    table = a.table()
    with usidgpu.open(path) as f:
        assert group + "/Columns" in [m.name for m in f.main_datasets()]
        rows = f[group + "/Columns"][()][:, 0]
    assert list(rows.dtype.names) == list(table)
    for name, column in table.items():
        np.testing.assert_array_equal(rows[name], np.asarray(column).astype(rows.dtype[name]), err_msg=name)
    with h5py.File(path, "r") as h:
        assert pyusid.hdf_utils.check_if_main(h[group + "/Columns"])
        g = h[group]
        np.testing.assert_array_equal(g["Vacancies"][:, 0], 0)  # frame
        np.testing.assert_allclose(g["Vacancies"][:, 1:3], a.vacancies.positions)
        np.testing.assert_array_equal(g["Vacancies"][:, 3], a.vacancies.sublattice)
        np.testing.assert_allclose(g["Lattice_Vectors"][0], a.lattice.vectors)
        assert g.attrs["sublattice_rule"] == a.sublattice_rule and g.attrs["n_columns"] == len(a)


def test_csv_round_trip(tmp_path):
    truth = synthetic("square")
    a = analyze(truth.image, device="cpu")
    path = tmp_path / "columns.csv"
    a.to_csv(path)
    # (see test_csv_reads_with_genfromtxt_names)
    back = np.genfromtxt(path, names=True, comments="#", delimiter=",")
    table = a.table()
    assert list(back.dtype.names) == list(table) and len(back) == len(a)
    for name, column in table.items():
        np.testing.assert_allclose(
            back[name], np.asarray(column, dtype=np.float64), rtol=1e-5, atol=1e-12, err_msg=name
        )


def test_csv_reads_with_genfromtxt_names(tmp_path):
    a = analyze(synthetic("square").image, device="cpu")
    a.to_csv(tmp_path / "columns.csv")
    back = np.genfromtxt(tmp_path / "columns.csv", names=True, comments="#", delimiter=",")
    assert list(back.dtype.names) == list(a.table())


# ------------------------------------------------------------------------------ real file
def test_real_simulated_stem_image(tmp_path):
    path = tmp_path / "stem.h5"
    shutil.copy(real_file("simulated_STEM_Image.h5"), path)  # shared data is never written
    before = _raw_hash(path)
    with usidgpu.open(path) as f:
        ds = f[SOURCE]
        a = analyze(ds, device="cpu")
        assert len(a) > 300
        assert a.fit.converged.mean() > 0.95
        assert a.sublattice_rule.split(":")[0] in ("1", "2") and "Ashman" in a.sublattice_rule
        assert a.units == "nm" and a.pixel_size[0] > 0
        fig = plot_columns(a, ds)
        group = a.write()
    png = save_figure(fig, tmp_path / "overlay.png")
    assert png.stat().st_size > 20_000
    assert fig.axes[0].get_xlabel() == "x (nm)"
    assert _raw_hash(path) == before
    assert usidgpu.validate(path) == []
    with h5py.File(path, "r") as h:
        assert h[group + "/Columns"].shape == (len(a), 1)


# ------------------------------------------------------------------------------ figures
def _legend_texts(fig):
    return [t.get_text() for t in fig.axes[0].get_legend().get_texts()]


def test_plot_columns_legend_units_title():
    truth = synthetic("perovskite")
    a = analyze(truth.image, device="cpu")
    fig = plot_columns(a, truth.image)
    assert isinstance(fig, Figure)
    texts = _legend_texts(fig)
    counts = np.bincount(a.sublattice)
    assert f"sublattice 0 (n = {counts[0]})" in texts and f"sublattice 1 (n = {counts[1]})" in texts
    assert any(t.startswith("vacancies (n = 4") for t in texts)
    assert any(t.startswith("displacements ×") for t in texts)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "x (px)" and ax.get_ylabel() == "y (px)"
    assert ax.get_title().startswith(f"{len(a)} atomic columns") and "displacements ×" in ax.get_title()
    # the scale is stated, and a given one is used
    fig = plot_columns(a, truth.image, arrow_scale=50)
    assert any(t.startswith("displacements ×50 ") for t in _legend_texts(fig))
    fig = plot_columns(a, truth.image, show_displacements=False)
    assert not any("displacements" in t for t in _legend_texts(fig))
    # physical units on the axes, drawn into given axes
    physical = dataclasses.replace(a, pixel_size=(2e-11, 2e-11), units="m")
    target = Figure().add_subplot()
    fig = plot_columns(physical, truth.image, ax=target)
    assert fig is target.figure and target.get_xlabel() == "x (nm)"
    assert target.get_xlim()[1] == pytest.approx((SHAPE[1] - 0.5) * 0.02)
    with pytest.raises(ValueError, match="192×192"):
        plot_columns(a, truth.image[:100])


def strained_layer(strain=0.03, interface=128.0, seed=0):
    """A square lattice (12 px) whose right part is stretched along x by ``strain``."""
    ys, xs = np.mgrid[6:190:12, 6:252:12].astype(float)
    ys, xs = ys.ravel(), xs.ravel()
    xs = np.where(xs > interface, interface + (xs - interface) * (1 + strain), xs)
    pos = np.c_[ys, xs][xs < 250]
    clean = render((192, 256), pos, np.ones(len(pos)), 2.0, 0.1)
    return np.random.default_rng(seed).poisson(clean * 200) / 200, pos


def test_strain_of_a_stretched_layer_against_a_reference_region():
    image, _ = strained_layer()
    a = analyze(image, device="cpu")
    y, x = a.positions.T
    inner = (y > 15) & (y < 177)
    left, right = a.positions[:, 1] < 122, inner & (x > 146) & (x < 235)
    strain = a.strain(reference=left)
    exx, eyy, exy, rotation = strain.columns.T
    assert np.nanmedian(exx[right]) == pytest.approx(0.03, abs=0.002)
    assert abs(np.nanmedian(exx[left & inner & (x > 15)])) < 0.002
    for component in (eyy, exy, rotation):
        assert abs(np.nanmedian(component[inner])) < 0.002
    assert strain.maps.shape == (4, *image.shape)
    assert np.nanmedian(strain.exx[60:130, 160:230]) == pytest.approx(0.03, abs=0.003)  # the map as well
    # against the lattice of all columns the layer still stands out by the same 3 %
    mean = a.strain()
    assert np.nanmedian(mean.columns[right, 0]) - np.nanmedian(mean.columns[left & inner & (x > 15), 0]) == (
        pytest.approx(0.03, abs=0.003)
    )
    same = a.strain(reference=np.flatnonzero(left))  # indices work as a mask does
    np.testing.assert_allclose(same.columns, strain.columns, equal_nan=True)
    with pytest.raises(ValueError, match="one entry per column"):
        a.strain(reference=left[:10])
    with pytest.raises(ValueError, match="hold no lattice"):
        a.strain(reference=np.flatnonzero(left)[:2])
    for bad in (left.astype(float), [], np.array([0, len(a)])):
        with pytest.raises(ValueError, match="reference"):
            a.strain(reference=bad)
    assert a.strain(reference=a.lattice).reference == "a given reference lattice"


def test_plot_strain_panels_units_and_scales():
    from usidgpu.viz import plot_strain

    image, _ = strained_layer()
    a = analyze(image, device="cpu")
    strain = a.strain(reference=a.positions[:, 1] < 122)
    fig = plot_strain(a, strain)
    maps = [ax for ax in fig.axes if ax.images]
    assert len(maps) == 4
    bars = [ax.get_ylabel() for ax in fig.axes if not ax.images and ax.get_ylabel()]
    assert {r"$\varepsilon_{xx}$ (%)", r"$\varepsilon_{yy}$ (%)", r"$\varepsilon_{xy}$ (%)", "rotation (°)"} <= set(
        bars
    )
    # the three strains share one symmetric scale that shows the 3 % layer; rotation has its own
    limits = [ax.images[0].get_clim() for ax in maps]
    assert limits[0] == limits[1] == limits[2] and limits[0][0] == -limits[0][1] and 2.9 < limits[0][1] < 4
    assert limits[3] != limits[0]
    assert maps[0].get_title().startswith(r"$\varepsilon_{xx}$: mean +")
    assert "+ from x toward y" in maps[3].get_title()
    assert maps[2].get_xlabel() == "x (px)" and maps[0].get_ylabel() == "y (px)"
    n_ref = int((a.positions[:, 1] < 122).sum())
    assert f"relative to the lattice of {n_ref} reference columns" in fig._suptitle.get_text()
    physical = dataclasses.replace(a, pixel_size=(2e-11, 2e-11), units="m")
    fig = plot_strain(physical)
    assert [ax for ax in fig.axes if ax.images][2].get_xlabel() == "x (nm)"
    assert "fitted on all columns" in fig._suptitle.get_text()


def test_plot_tracks_synthetic_stack():
    from usidgpu.atoms.track import track

    frames = [
        np.roll(lattice_image((128, 128), spacing=12, motif="square", seed=t, dose=300).image, (t, 2 * t), (0, 1))
        for t in range(3)
    ]
    stack = np.stack(frames)
    tracks = track(stack)
    fig = plot_tracks(tracks, stack)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert ax.get_title().startswith(f"{tracks.n_tracks} tracks over 3 frames")
    (lines,) = [c for c in ax.collections if isinstance(c, LineCollection)]
    assert len(lines.get_segments()) >= 0.8 * tracks.n_tracks
    assert ax.get_xlabel() == "x (px)"
    assert isinstance(plot_tracks(tracks), Figure)  # without an image


# ------------------------------------------------------------------------------ stacks
def drifting_stack(n_frames=4, step=(1.5, -2.5), seed=5):
    """Frames of one lattice shifted by ``step`` px per frame, plus one column moving by itself."""
    base = lattice_image((160, 160), spacing=16.0, angle_deg=8.0, motif="perovskite", margin=12.0, seed=seed)
    rng = np.random.default_rng(seed)
    mover = int(np.argmin(np.hypot(*(base.positions - 80.0).T)))
    frames, truth = [], []
    for t in range(n_frames):
        pos = base.positions + np.asarray(step) * t
        pos[mover] += (0.8 * t, 0.0)  # its own motion on top of the drift
        clean = render((160, 160), pos, base.amplitudes, base.sigma, base.background)
        frames.append(rng.poisson(clean * 300) / 300)
        truth.append(pos)
    return np.stack(frames), truth, mover


def test_stack_analysis_links_the_same_column_through_every_frame(tmp_path, pyusid):
    frames, truth, mover = drifting_stack()
    result = analyze_stack(frames, device="cpu")
    assert result.n_frames == 4
    np.testing.assert_allclose(np.diff(result.tracks.drift, axis=0), [[1.5, -2.5]] * 3, atol=0.05)
    # identities: a truth column keeps its track id in every frame where it is found inside
    ids_of_truth = []
    for f, a in enumerate(result.frames):
        d, i = cKDTree(a.positions).query(truth[f])
        ids = np.where(d < 1.0, result.tracks.ids[f][i], -1)
        ids_of_truth.append(ids)
    ids_of_truth = np.array(ids_of_truth)  # (frames, truth columns)
    seen_everywhere = (ids_of_truth >= 0).all(axis=0)
    assert seen_everywhere.sum() > 0.8 * len(truth[0])
    assert (ids_of_truth[:, seen_everywhere] == ids_of_truth[0, seen_everywhere]).all()
    assert seen_everywhere[mover] and (ids_of_truth[:, mover] == ids_of_truth[0, mover]).all()
    # the table carries frame and track id; written as one group of the stack
    table = result.table()
    assert set(table["frame"]) == {0, 1, 2, 3} and len(table["track_id"]) == sum(len(a) for a in result.frames)
    path = tmp_path / "stack.h5"
    image_to_usid(frames, path)
    with usidgpu.open(path) as f:
        group = result.write(f.dataset(SOURCE))
    assert usidgpu.validate(path) == []
    with h5py.File(path, "r") as h:
        assert pyusid.hdf_utils.check_if_main(h[group + "/Columns"])
        rows = h[group + "/Columns"][()].ravel()
        np.testing.assert_array_equal(rows["track_id"], table["track_id"])
        np.testing.assert_array_equal(rows["frame"], table["frame"])
        np.testing.assert_allclose(h[group + "/Drift"][()], result.tracks.drift)


def test_a_brightness_gradient_is_not_two_sublattices():
    base = lattice_image((160, 160), spacing=14.0, motif="square", margin=3.0, seed=6)
    ramp = np.where(base.positions[:, 0] < 80, 0.5, 1.0)  # a dim half and a bright half
    image = render((160, 160), base.positions, ramp, base.sigma, base.background)
    a = analyze(np.random.default_rng(0).poisson(image * 200) / 200, device="cpu")
    assert a.parameters["n_sublattices"] == 1, a.sublattice_rule
    assert "brightness gradient" in a.sublattice_rule


def test_a_blank_frame_has_no_columns_and_the_stack_tracks_around_it():
    from usidgpu.atoms.find import find_columns

    rng = np.random.default_rng(1)
    assert len(find_columns(rng.poisson(50, (160, 160)).astype(float), spacing=12)) == 0
    frames, truth, _mover = drifting_stack(n_frames=4)
    frames[2] = rng.poisson(frames[2].mean() * 300, frames[2].shape) / 300  # beam blanked
    result = analyze_stack(frames, device="cpu")
    assert len(result.frames[2]) == 0
    # frames 0, 1 and 3 keep their drift (1.5, −2.5) px per frame despite the gap
    np.testing.assert_allclose(result.tracks.drift[1], [1.5, -2.5], atol=0.1)
    np.testing.assert_allclose(result.tracks.drift[3], [4.5, -7.5], atol=0.2)
    # without gap closing the columns of frame 3 start new tracks; with memory 1 they keep their ids
    # (the same frames analysed again: only the linking differs)
    bridged = link([f.positions for f in result.frames], result.tracks.max_displacement, memory=1)
    for tracks, same in ((result.tracks, 0.0), (bridged, 0.9)):
        d, i = cKDTree(result.frames[1].positions).query(result.frames[3].positions - [3.0, -5.0])
        kept = tracks.ids[3][d < 1.0] == tracks.ids[1][i[d < 1.0]]
        assert (d < 1.0).sum() > 0.9 * len(d) and kept.mean() >= same and (same or not kept.any())
    np.testing.assert_allclose(bridged.drift[3], [4.5, -7.5], atol=0.2)  # measured from frame 1's columns
    # a counting detector's blanked frame is exactly zero (flat: no spacing to read from it)
    for flat in (np.zeros_like(frames[2]), np.full_like(frames[2], 3.0)):
        frames[2] = flat
        again = analyze_stack(frames, device="cpu", memory=1)
        assert len(again.frames[2]) == 0 and again.tracks.ids[3].tolist() == bridged.ids[3].tolist()
    with pytest.raises(NoColumnsError, match=r"no frame of the stack .*frame 0: .*flat"):
        analyze_stack(np.zeros((3, 64, 64)), device="cpu")
    assert analyze_stack(frames, device="cpu", memory=1).tracks.ids[3].tolist() == bridged.ids[3].tolist()
