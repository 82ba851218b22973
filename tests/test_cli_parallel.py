"""``--scheduler`` / ``--workers`` on the command line: the block-wise runs give the same results
groups as the in-process commands."""

from __future__ import annotations

import h5py
import numpy as np
from helpers import make_file

from usidgpu import Dimension
from usidgpu.atoms.synthetic import lattice_image
from usidgpu.cli import main as cli

SOURCE = "/Measurement_000/Channel_000/Raw_Data"


def _spectra(path):
    rng = np.random.default_rng(3)
    data = (rng.normal(size=(24 * 20, 4)) @ rng.normal(size=(4, 32)) + 0.01 * rng.normal(size=(480, 32))).astype(
        np.float32
    )
    make_file(
        path,
        data.reshape(24, 20, 32),
        pos=[Dimension("Y", "nm", 24), Dimension("X", "nm", 20)],
        spec=[Dimension("Bias", "V", np.linspace(-1, 1, 32))],
    )


def test_svd_and_cluster_on_threads_equal_the_in_process_commands(tmp_path, capsys):
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    _spectra(a)
    b.write_bytes(a.read_bytes())
    assert cli(["svd", str(a), "-k", "3", "--method", "gram", "--no-progress"]) == 0
    assert cli(["svd", str(b), "-k", "3", "--scheduler", "threads", "--workers", "2", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert (
        "blocks on threads (2 workers)" in out and "results       /Measurement_000/Channel_000/Raw_Data-SVD_000" in out
    )
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        np.testing.assert_allclose(fb[SOURCE + "-SVD_000/S"][()], fa[SOURCE + "-SVD_000/S"][()], rtol=1e-6)
    assert cli(["cluster", str(a), "-k", "3", "--no-progress"]) == 0
    assert cli(["cluster", str(b), "-k", "3", "--scheduler", "threads", "--no-progress"]) == 0
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        np.testing.assert_array_equal(fb[SOURCE + "-KMeans_000/Labels"][()], fa[SOURCE + "-KMeans_000/Labels"][()])


def test_denoise_on_threads_equals_the_in_process_command(tmp_path):
    image = lattice_image((64, 72), spacing=12, dose=50, seed=4).image.astype(np.float32)
    np.save(tmp_path / "a.npy", image)
    np.save(tmp_path / "b.npy", image)
    assert cli(["denoise", str(tmp_path / "a.npy"), "--window", "8", "-k", "5"]) == 0
    assert cli(["denoise", str(tmp_path / "b.npy"), "--window", "8", "-k", "5", "--scheduler", "threads"]) == 0
    group = SOURCE + "-Windowed_SVD_000/Cleaned_Image"
    with h5py.File(tmp_path / "a.npy.h5", "r") as fa, h5py.File(tmp_path / "b.npy.h5", "r") as fb:
        np.testing.assert_allclose(fb[group][()], fa[group][()], rtol=1e-6, atol=1e-6)


def test_scheduler_refuses_options_it_cannot_honour(tmp_path, capsys):
    path = tmp_path / "a.h5"
    _spectra(path)
    assert cli(["svd", str(path), "-k", "3", "--scheduler", "threads", "--no-write"]) == 2
    assert "--no-write" in capsys.readouterr().err
    assert cli(["svd", str(path), "-k", "3", "--scheduler", "threads", "--method", "randomized"]) == 2
    assert cli(["svd", str(path), "-k", "3", "--scheduler", "nowhere"]) == 2
    assert "unknown scheduler" in capsys.readouterr().err
    np.save(tmp_path / "i.npy", np.zeros((32, 32), np.float32))
    assert cli(["denoise", str(tmp_path / "i.npy"), "--scheduler", "threads", "--no-write"]) == 2
