"""``usidgpu demo`` (quick mode) runs end to end: files validate, figures exist, results found."""

from __future__ import annotations

import h5py
import numpy as np

import usidgpu
from usidgpu.cli import main as cli
from usidgpu.demo import _adjusted_rand, spectrum_image
from usidgpu.samples import sample_path


def test_demo_quick(tmp_path, capsys):
    before = sample_path("survey-dm3").read_bytes()
    assert cli(["demo", "--out", str(tmp_path / "demo"), "--quick", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    for step in ("translate", "denoise", "atoms", "scan", "svd", "cluster", "files", "total"):
        assert any(line.startswith(step) for line in out.splitlines()), step
    # the survey's flyback and drift are shown as the scan's, not as vacancies
    assert " 0 vacancies (sites the image shows empty)" in out and "scan          fast scan line start at" in out
    assert "valid USID" in out and "adjusted Rand index vs the true phases 1.000" in out
    folder = tmp_path / "demo"
    for name in ("01_denoise.png", "02_atoms.png", "02_scan_distortion.png", "03_svd.png", "04_clusters.png"):
        assert (folder / name).stat().st_size > 20_000
    assert usidgpu.validate(folder / "stem_survey.h5") == []
    with h5py.File(folder / "stem_survey.h5", "r") as f:
        assert f["Measurement_000"].attrs["format"]  # translated from the vendor file, provenance kept
        groups = list(f["Measurement_000/Channel_000"])
    assert any("Windowed_SVD_000" in g for g in groups) and any("Atomic_Columns_000" in g for g in groups)
    assert usidgpu.validate(folder / "spectrum_image.h5") == []
    assert sample_path("survey-dm3").read_bytes() == before  # the shipped sample is never written
    # a second run goes into a new folder, the first stays as it is
    assert cli(["demo", "--out", str(folder), "--quick", "--device", "cpu"]) == 0
    assert (tmp_path / "demo-2" / "01_denoise.png").exists()


def test_adjusted_rand_index_oracle():
    sklearn = __import__("pytest").importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 3, 200), rng.integers(0, 4, 200)
    assert np.isclose(_adjusted_rand(a, b), sklearn.adjusted_rand_score(a, b))
    assert np.isclose(_adjusted_rand(a, (a + 1) % 3), 1.0)


def test_spectrum_image_truth():
    data, energy, phase = spectrum_image((16, 20), 64, seed=1)
    assert data.shape == (16, 20, 64) and energy.shape == (64,) and set(np.unique(phase)) <= {0, 1, 2}
    assert (data >= 0).all()
