"""``usidgpu atoms``: report, CSV, figure and USID results; tracking stacks; one-line errors."""

from __future__ import annotations

import re
import shutil

import h5py
import numpy as np
import pytest
from conftest import real_file

import usidgpu
from usidgpu.atoms.synthetic import lattice_image, render
from usidgpu.cli import main as cli

SOURCE = "/Measurement_000/Channel_000/Raw_Data"
GROUP = SOURCE + "-Atomic_Columns_000"


@pytest.fixture
def image_npy(tmp_path):
    truth = lattice_image((160, 160), spacing=16.0, angle_deg=8.0, vacancies=3, displacement=0.2, dose=200, margin=3)
    path = tmp_path / "lattice.npy"
    np.save(path, truth.image)
    return path, truth


@pytest.fixture
def stack_npy(tmp_path):
    frames = [
        np.roll(lattice_image((128, 128), spacing=12, motif="square", seed=t, dose=300).image, (t, 2 * t), (0, 1))
        for t in range(3)
    ]
    path = tmp_path / "stack.npy"
    np.save(path, np.stack(frames))
    return path


def _one_line_error(capsys, *fragments):
    err = capsys.readouterr().err
    assert err.startswith("usidgpu: error: ") and err.endswith("\n") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, err
    return err


def test_plain_image_report_csv_plot_and_results(image_npy, capsys):
    path, truth = image_npy
    csv, png = path.with_suffix(".csv"), path.with_suffix(".png")
    assert cli(["atoms", str(path), "--device", "cpu", "--csv", str(csv), "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == f"atomic columns of {path} (160 × 160 px, frame 0)"
    n = len(truth.positions)
    assert f"columns       {n} found, {n} converged (100.0 %)" in out
    assert "spacing       11." in out and "from the image's autocorrelation" in out
    assert "sublattices   2: fitted amplitudes are bimodal" in out
    lengths = [float(v) for v in re.findall(r"\|[ab]\| = ([0-9.]+) px", out)]
    assert len(lengths) == 2 and np.allclose(lengths, 16.0, rtol=2e-3), out
    assert "lattice       a = (" in out and re.search(r"angle (89\.9|90\.0)\d°, 2 site\(s\) per cell", out), out
    assert "vacancies     3 (sublattice 0: " in out
    assert "position err  median 0.0" in out
    assert "device        cpu" in out and "fit engine" in out
    assert "time          find " in out
    usid = path.parent / "lattice.npy.h5"
    assert f"image         {path} → USID {usid}" in out
    assert f"results       {GROUP} in {usid}" in out
    assert png.stat().st_size > 20_000
    assert usidgpu.validate(usid) == []
    back = np.genfromtxt(csv, names=True, comments="#", delimiter=",")
    with usidgpu.open(usid) as f:
        rows = f[GROUP + "/Columns"][()][:, 0]
        np.testing.assert_allclose(f[SOURCE][()][:, 0], truth.image.ravel())
    assert len(back) == len(rows) == n
    np.testing.assert_allclose(back["x"], rows["x"], rtol=1e-5)
    np.testing.assert_array_equal(back["sublattice"], rows["sublattice"])
    # the USID copy exists now: a second run says so; the USID file itself gets a second group
    assert cli(["atoms", str(path), "--device", "cpu"]) == 2
    _one_line_error(capsys, "exists already")
    assert cli(["atoms", str(usid), "--device", "cpu", "--sublattices", "1", "--spacing", "11.3"]) == 0
    out = capsys.readouterr().out
    assert "sublattices   1: given" in out and "spacing       11.300 px: given" in out
    assert SOURCE + "-Atomic_Columns_001" in out
    assert usidgpu.validate(usid) == []


def test_strain_figure(image_npy, tmp_path, capsys):
    path, _ = image_npy
    png = tmp_path / "strain.png"
    assert cli(["atoms", str(path), "--no-write", "--device", "cpu", "--strain", str(png)]) == 0
    out = capsys.readouterr().out
    line = re.search(r"strain        (\S+): ε_xx ([-+0-9.]+) … ([-+0-9.]+) %, ε_yy ([-+0-9.]+) … ([-+0-9.]+) %", out)
    assert line and line[1] == str(png), out
    # 0.2 px random displacements on an 11 px spacing: a few % of strain noise, centred on zero
    lows, highs = [float(v) for v in line.groups()[1::2]], [float(v) for v in line.groups()[2::2]]
    assert all(-3 < low < -0.3 and 0.3 < high < 3 for low, high in zip(lows, highs)), out
    assert png.stat().st_size > 30_000


def test_strain_without_a_lattice_fails_before_writing(tmp_path, capsys):
    pos = np.array([[20.0, 20.0], [20.0, 32.0], [32.0, 20.0], [32.0, 32.0], [44.0, 26.0]])  # no lattice in 5
    image = render((64, 64), pos, np.ones(len(pos)), 2.0, 0.1) + np.random.default_rng(0).normal(0, 0.01, (64, 64))
    path = tmp_path / "few.npy"
    np.save(path, image)
    args = ["atoms", str(path), "--device", "cpu", "--spacing", "12", "--csv", str(tmp_path / "few.csv")]
    assert cli([*args, "--strain", str(tmp_path / "strain.png")]) == 2
    _one_line_error(capsys, "--strain", "no lattice")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["few.npy"]  # nothing written
    assert cli(args) == 0  # the same analysis without --strain runs and writes


def test_without_numba_the_report_says_how_to_get_the_compiled_engine(image_npy, capsys, monkeypatch):
    from usidgpu.atoms import fit

    path, _ = image_npy
    monkeypatch.setattr(fit, "numba_available", lambda: False)
    assert cli(["atoms", str(path), "--no-write", "--device", "cpu"]) == 0
    assert "fit engine array (pip install 'usidgpu[fast]'" in capsys.readouterr().out


def test_no_write(image_npy, capsys):
    path, _ = image_npy
    assert cli(["atoms", str(path), "--no-write", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "columns" in out and "results" not in out
    assert not (path.parent / "lattice.npy.h5").exists()


def test_joint_fit_from_the_command_line(image_npy, capsys):
    path, truth = image_npy
    assert cli(["atoms", str(path), "--no-write", "--device", "cpu", "--fit", "joint"]) == 0
    out = capsys.readouterr().out
    assert "; all columns jointly" in out
    n = int(re.search(r"columns\s+(\d+) found", out).group(1))
    assert abs(n - len(truth.positions)) <= 0.05 * len(truth.positions)


def test_real_file_copy(tmp_path, capsys):
    path = tmp_path / "stem.h5"
    shutil.copy(real_file("simulated_STEM_Image.h5"), path)
    png = tmp_path / "overlay.png"
    assert cli(["atoms", str(path), "--device", "cpu", "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert f"atomic columns of {SOURCE} in {path} (256 × 256 px, frame 0)" in out
    assert "sublattices   2: fitted amplitudes are bimodal" in out
    assert " nm" in out  # lengths in physical units too
    assert png.stat().st_size > 20_000
    assert usidgpu.validate(path) == []


def test_stack_track_and_frame(stack_npy, tmp_path, capsys):
    csv, png = tmp_path / "tracks.csv", tmp_path / "tracks.png"
    assert cli(["atoms", str(stack_npy), "--track", "--csv", str(csv), "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert f"tracking columns of {stack_npy} (3 frames)" in out
    assert re.search(r"tracks        \d+, \d+ through every frame; gate \d", out), out
    drift = re.search(r"drift         \(([-0-9.]+), ([-0-9.]+)\) px \(dy, dx\) from frame 0 to frame 2", out)
    assert drift and np.allclose([float(drift[1]), float(drift[2])], [2.0, 4.0], atol=0.1), out
    tracks = np.genfromtxt(csv, names=True, comments="#", delimiter=",")
    assert tracks.dtype.names[:4] == ("frame", "track_id", "column", "amplitude")
    assert set(tracks["frame"].astype(int)) == {0, 1, 2}
    assert png.stat().st_size > 10_000
    # every frame's columns with their track ids, written as one results group of the stack
    assert usidgpu.validate(tmp_path / "stack.npy.h5") == []
    with h5py.File(tmp_path / "stack.npy.h5", "r") as f:
        rows = f[GROUP + "/Columns"][()].ravel()
        drift = f[GROUP + "/Drift"][()]
    np.testing.assert_array_equal(rows["track_id"], tracks["track_id"].astype(int))
    np.testing.assert_allclose(rows["y"], tracks["y"], rtol=1e-5)
    np.testing.assert_allclose(drift[-1], [2.0, 4.0], atol=0.1)
    # one frame of the stack, written as a results group of the whole stack
    (tmp_path / "stack.npy.h5").unlink()
    assert cli(["atoms", str(stack_npy), "--frame", "1", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "(128 × 128 px, frame 1)" in out and "sublattices   1: " in out
    assert usidgpu.validate(tmp_path / "stack.npy.h5") == []
    with h5py.File(tmp_path / "stack.npy.h5", "r") as h:
        assert h[GROUP].attrs["frame"] == 1
    # a multi-page TIFF is a stack too
    from PIL import Image

    pages = [Image.fromarray(frame.astype(np.float32)) for frame in np.load(stack_npy)]
    tif = tmp_path / "stack.tif"
    pages[0].save(tif, save_all=True, append_images=pages[1:])
    assert cli(["atoms", str(tif), "--frame", "2", "--no-write", "--device", "cpu"]) == 0
    assert "(128 × 128 px, frame 2)" in capsys.readouterr().out


def test_track_across_a_blanked_frame(stack_npy, tmp_path, capsys):
    frames = np.load(stack_npy)
    frames = np.stack(
        [frames[0], np.random.default_rng(0).poisson(300 * frames[1].mean(), frames[1].shape) / 300, frames[2]]
    )
    path = tmp_path / "blanked.npy"
    np.save(path, frames)
    counts = {}
    for gap in ("0", "1"):
        assert cli(["atoms", str(path), "--track", "--max-gap", gap, "--no-write", "--device", "cpu"]) == 0
        out = capsys.readouterr().out
        assert "columns       0 … " in out, out  # the blank frame holds none
        counts[gap] = int(re.search(r"tracks        (\d+), ", out)[1])
    bridged = int(re.search(r"tracks        \d+, 0 through every frame, (\d+) across gaps of up to 1 frame", out)[1])
    assert bridged > 0.8 * counts["1"] and counts["0"] - counts["1"] == bridged


def test_bad_inputs(tmp_path, stack_npy, image_npy, capsys):
    missing = tmp_path / "nothing.npy"
    assert cli(["atoms", str(missing)]) == 2
    _one_line_error(capsys, str(missing), "no such file")
    line = tmp_path / "line.npy"
    np.save(line, np.arange(100.0))
    assert cli(["atoms", str(line)]) == 2
    _one_line_error(capsys, str(line), "got shape (100,)")
    flat = tmp_path / "flat.npy"
    np.save(flat, np.full((96, 96), 3.0))
    assert cli(["atoms", str(flat), "--device", "cpu"]) == 2
    _one_line_error(capsys, str(flat), "flat")
    assert not (tmp_path / "flat.npy.h5").exists()  # a failed analysis leaves no file
    assert cli(["atoms", str(stack_npy)]) == 2
    _one_line_error(capsys, str(stack_npy), "3 frames", "--frame", "--track")
    assert cli(["atoms", str(stack_npy), "--frame", "5"]) == 2
    _one_line_error(capsys, "frame 5 does not exist")
    path, _ = image_npy
    assert cli(["atoms", str(path), "--track"]) == 2
    _one_line_error(capsys, str(path), "--track needs a stack")
    assert cli(["atoms", str(stack_npy), "--frame", "1", "--max-gap", "1"]) == 2
    _one_line_error(capsys, "--max-gap", "needs --track")
    assert cli(["atoms", str(stack_npy), "--track", "--max-gap", "-1"]) == 2
    _one_line_error(capsys, "--max-gap must be")
    assert cli(["atoms", str(path), "--no-write", "--plot", "x.gif"]) == 2
    _one_line_error(capsys, "png, .pdf or .svg")
    assert cli(["atoms", str(path), "--no-write", "--strain", "x.gif"]) == 2
    _one_line_error(capsys, "--strain x.gif", "png, .pdf or .svg")
    assert cli(["atoms", str(stack_npy), "--track", "--strain", "x.png"]) == 2
    _one_line_error(capsys, "--strain", "--frame")
    with pytest.raises(SystemExit) as exc:
        cli(["atoms", str(path), "--sublattices", "4"])
    assert exc.value.code == 2
    _one_line_error(capsys, "--sublattices")


def test_usid_dataset_that_is_not_an_image(tmp_path, capsys):
    path = tmp_path / "afm.h5"
    shutil.copy(real_file("AFM_Force_Curve.h5"), path)
    assert cli(["atoms", str(path), "--frame", "0"]) == 2
    _one_line_error(capsys, str(path), "not an image", "two position dimensions")


def test_device_gpu_without_gpu(image_npy, capsys, no_gpu):
    path, _ = image_npy
    assert cli(["atoms", str(path), "--device", "gpu"]) == 2
    _one_line_error(capsys, "--device gpu was requested but no GPU is usable")
    assert not (path.parent / "lattice.npy.h5").exists()
