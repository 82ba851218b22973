"""NSID files written by ``usidgpu convert --to nsid`` analysed by pycroscopy ≥ 0.63's own
functions, which read the sidpy dimension types and scales: its power spectrum finds a lattice
at the spatial frequency NumPy's FFT puts it, and its matrix factorization of a spectral image
agrees with scikit-learn's PCA of the original array.

pycroscopy 0.63 pins SciPy < 1.10.2 and NumPy < 2, and cannot be installed beside this project's
requirements: these tests are skipped where it is not importable. They were run in a separate
environment over this one's packages — ``python -m venv --system-site-packages V;
V/bin/pip install pycroscopy==0.63.3; V/bin/pip uninstall numpy scipy scikit-image;
V/bin/pip install "scikit-image>=0.25"`` (pycroscopy itself runs on the newer ones) — with
``V/bin/python -m pytest tests/test_pycroscopy_nsid.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import make_file

from usidgpu import Dimension
from usidgpu.cli import main as cli

pycroscopy = pytest.importorskip("pycroscopy")
pyNSID = pytest.importorskip("pyNSID")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning", "ignore::FutureWarning")


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split(".")[:2] if p.isdigit())


if _version(pycroscopy.__version__) < (0, 63):
    pytest.skip(f"pycroscopy {pycroscopy.__version__} < 0.63", allow_module_level=True)


def read_nsid(path):
    import h5py

    f = h5py.File(path, "r")
    (main,) = pyNSID.io.hdf_utils.get_all_main(f)
    return pyNSID.io.hdf_utils.read_h5py_dataset(main), f


def convert(tmp_path, data, pos, spec):
    make_file(tmp_path / "usid.h5", data, pos=pos, spec=spec)
    assert cli(["convert", str(tmp_path / "usid.h5"), str(tmp_path / "nsid.h5"), "--to", "nsid"]) == 0
    return read_nsid(tmp_path / "nsid.h5")


def test_power_spectrum_finds_the_lattice_where_numpy_does(tmp_path):
    n, step, period = 128, 0.05, 0.4  # 128 px of 0.05 nm, a lattice of 0.4 nm along x, 0.8 nm along y
    y, x = np.mgrid[0:n, 0:n] * step
    image = (np.cos(2 * np.pi * x / period) + 0.5 * np.cos(2 * np.pi * y / (2 * period))).astype(np.float32)
    pos = [Dimension("Y", "nm", np.arange(n) * step), Dimension("X", "nm", np.arange(n) * step)]
    dataset, f = convert(tmp_path, image.reshape(n, n, 1), pos, [Dimension("arb", "a.u.", 1)])
    try:
        spectrum = pycroscopy.fft.power_spectrum(dataset, smoothing=1)
        u, v = np.asarray(spectrum.u.values), np.asarray(spectrum.v.values)
        # sidpy's reciprocal axes: 1 / (n · step) per pixel, in 1/nm
        assert np.isclose(abs(u[1] - u[0]), 1 / (n * step)) and np.isclose(abs(v[1] - v[0]), 1 / (n * step))
        power = np.asarray(spectrum)
        centre = np.hypot(*np.meshgrid(u, v, indexing="ij")) < 0.5 / period  # below the lattice
        iu, iv = np.unravel_index(np.argmax(np.where(centre, -np.inf, power)), power.shape)
        # NumPy's oracle: the strongest non-zero frequency of the same image
        ref = np.abs(np.fft.fftshift(np.fft.fft2(image)))
        freq = np.fft.fftshift(np.fft.fftfreq(n, d=step))
        ref[n // 2, n // 2] = 0
        ry, rx = np.unravel_index(np.argmax(ref), ref.shape)
        # (USID stores the axis values in float32: frequencies agree to its precision)
        np.testing.assert_allclose(sorted([abs(u[iu]), abs(v[iv])]), sorted([abs(freq[ry]), abs(freq[rx])]), rtol=1e-4)
        assert np.isclose(max(abs(u[iu]), abs(v[iv])), 1 / period, rtol=1e-4)
    finally:
        f.close()


def test_matrix_factor_pca_agrees_with_scikit_learn(tmp_path):
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(3)
    ny, nx, nb = 12, 10, 40
    bias = np.linspace(-1, 1, nb)
    basis = np.stack([np.exp(-(((bias - c) / 0.3) ** 2)) for c in (-0.5, 0.0, 0.5)])
    cube = (rng.random((ny * nx, 3)) @ basis + 0.01 * rng.standard_normal((ny * nx, nb))).astype(np.float32)
    pos = [Dimension("Y", "nm", np.arange(ny) * 0.2), Dimension("X", "nm", np.arange(nx) * 0.2)]
    spec = [Dimension("Bias", "V", bias)]
    dataset, f = convert(tmp_path, cube.reshape(ny, nx, nb), pos, spec)
    try:
        factor = pycroscopy.learn.MatrixFactor(dataset, method="pca", n_components=3)
        abundances, components = factor.do_fit()
        # the fold into (positions, spectrum) followed the dimension types: the same matrix
        np.testing.assert_allclose(np.asarray(factor.data_2d), cube, rtol=1e-6)
        ref = PCA(3).fit(cube)
        got = np.asarray(components).reshape(3, nb)
        for g, r in zip(got, ref.components_):
            assert abs(float(np.dot(g, r)) / (np.linalg.norm(g) * np.linalg.norm(r))) > 0.999
        assert np.asarray(abundances).shape[:2] == (ny, nx)  # unfolded back onto the spatial grid
    finally:
        f.close()
