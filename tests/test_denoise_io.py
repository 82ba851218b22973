"""Denoising USID files: image orientation, results groups pyUSID reads, spectral denoising, CLI."""

from __future__ import annotations

import warnings

import h5py
import numpy as np
import pytest
from helpers import low_rank, make_file
from test_denoise import lattice

import usidgpu
from usidgpu import Dimension
from usidgpu.cli import main as cli

SOURCE = "/Measurement_000/Channel_000/Raw_Data"


@pytest.fixture
def image_file(tmp_path):
    """A 48 × 40 lattice image stored with X listed first (fastest-first, as old translators)."""
    noisy = lattice(n=48, m=40, seed=11)[1]
    path = tmp_path / "image.h5"
    make_file(
        path,
        data=noisy.reshape(-1, 1),
        quantity="Intensity",
        units="counts",
        pos=[Dimension("Y", "nm", np.arange(48) * 0.1), Dimension("X", "nm", np.arange(40) * 0.1)],
        spec=[Dimension("arb", "a.u.", 1)],
        dim_order="fast_to_slow",
    )
    return path, noisy


def test_main_dataset_image_orientation_and_results_group(image_file, pyusid):
    path, noisy = image_file
    with usidgpu.open(path) as f:
        ds = f[SOURCE]
        assert [d.name for d in ds.pos_dims] == ["X", "Y"]  # the file lists X (fastest) first
        r = usidgpu.windowed_svd(ds, window=8, k=4, device="cpu")
        group = r.write()
    np.testing.assert_allclose(r.raw[0], noisy)  # rows are Y (the slower dimension)
    direct = usidgpu.windowed_svd(noisy, window=8, k=4, device="cpu")
    np.testing.assert_allclose(r.cleaned[0], direct.cleaned, rtol=1e-6, atol=1e-5)
    assert group == SOURCE + "-Windowed_SVD_000"
    with h5py.File(path, "r") as h, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cleaned = pyusid.USIDataset(h[group + "/Cleaned_Image"])
        assert cleaned.pos_dim_labels == ["X", "Y"]
        np.testing.assert_allclose(
            np.asarray(cleaned.get_n_dim_form())[:, :, 0], direct.cleaned.T, rtol=1e-6, atol=1e-5
        )
        noise = pyusid.USIDataset(h[group + "/Removed_Noise"])
        np.testing.assert_allclose(h[group + "/Removed_Noise"][:, 0], (noisy - r.cleaned[0]).ravel(), atol=1e-4)
        comps = pyusid.USIDataset(h[group + "/Components"])
        assert comps.spec_dim_labels == ["Window Y", "Window X"] and comps.shape == (4, 64)
        assert noise.shape == cleaned.shape
        g = h[group]
        assert list(g.attrs["window"]) == [8, 8] and g.attrs["num_components"] == 4
        assert h[group + "/Singular_Values"].shape == (64,)
    assert usidgpu.validate(path) == []


def test_frames_from_spectroscopic_points(tmp_path):
    stack = np.stack([lattice(n=32, seed=s)[1] for s in (1, 2)])
    path = tmp_path / "stack.h5"
    make_file(
        path,
        data=stack.reshape(2, -1).T,
        pos=[Dimension("Y", "px", 32), Dimension("X", "px", 32)],
        spec=[Dimension("Frame", "", 2)],
    )
    with usidgpu.open(path) as f:
        r = usidgpu.windowed_svd(f[SOURCE], window=8, k=5, device="cpu")
        r.write()
    ref = usidgpu.windowed_svd(stack, window=8, k=5, device="cpu")
    np.testing.assert_allclose(r.cleaned, ref.cleaned, rtol=1e-6, atol=1e-5)
    with usidgpu.open(path) as f:
        out = f[SOURCE + "-Windowed_SVD_000/Cleaned_Image"]
        np.testing.assert_allclose(out[()].T.reshape(2, 32, 32), ref.cleaned, rtol=1e-6, atol=1e-5)


def test_non_image_datasets_are_refused(tmp_path):
    path = tmp_path / "line.h5"
    make_file(path, name="Line", data=np.ones((7, 3)), pos=[Dimension("X", "nm", 7)], spec=[Dimension("E", "eV", 3)])
    with usidgpu.open(path) as f:
        with pytest.raises(usidgpu.NotAGridError, match="two position dimensions"):
            usidgpu.windowed_svd(f["/Measurement_000/Channel_000/Line"], window=2)


def test_spectral_denoise(tmp_path, pyusid):
    x = (low_rank(12 * 15, 40, seed=3) + 5).astype(np.float32)
    path = tmp_path / "si.h5"
    make_file(
        path,
        data=x.reshape(12, 15, 40),
        pos=[Dimension("Y", "µm", 12), Dimension("X", "µm", 15)],
        spec=[Dimension("Energy", "eV", np.linspace(0, 4, 40))],
    )
    with usidgpu.open(path) as f:
        group = usidgpu.spectral_denoise(f[SOURCE], 3, device="cpu", budget=60_000)  # written in several blocks
    _u, _s, vt = np.linalg.svd(x.astype(np.float64), full_matrices=False)
    expected = x.astype(np.float64) @ vt[:3].T @ vt[:3]
    with h5py.File(path, "r") as h, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = pyusid.USIDataset(h[group + "/Denoised_Data"])
        assert out.pos_dim_labels == ["Y", "X"] and out.spec_dim_labels == ["Energy"]
        np.testing.assert_allclose(h[group + "/Denoised_Data"][()], expected, rtol=1e-4, atol=1e-4)
        assert h[group].attrs["num_components"] == 3
    assert usidgpu.validate(path) == []


def test_cli_denoise_plain_image_and_usid(tmp_path, capsys):
    image = lattice(n=48, seed=12)[1]
    npy = tmp_path / "frame.npy"
    np.save(npy, image)
    figure = tmp_path / "fig.png"
    assert cli(["denoise", str(npy), "--window", "8", "-k", "4", "--plot", str(figure)]) == 0
    out = capsys.readouterr().out
    assert "window        8×8 px, step 1: given" in out and "results" in out
    assert figure.stat().st_size > 20_000
    usid_file = tmp_path / "frame.npy.h5"
    assert usidgpu.validate(usid_file) == []
    assert cli(["denoise", str(npy)]) == 2  # the USID copy exists already
    assert "exists already" in capsys.readouterr().err
    assert cli(["denoise", str(usid_file), "--step", "2", "-k", "3", "--window", "10"]) == 0
    assert "Raw_Data-Windowed_SVD_001" in capsys.readouterr().out
    assert cli(["denoise", str(npy), "--no-write"]) == 0
    assert "k = " in capsys.readouterr().out


def test_cli_denoise_errors(tmp_path, capsys):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    assert cli(["denoise", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "not a readable image" in err and err.count("\n") == 1
    assert cli(["denoise", "sample:stem-image"]) == 2
    assert "sample shipped" in capsys.readouterr().err
    assert cli(["denoise", "sample:stem-image", "--no-write", "--plot", "x.gif"]) == 2
    assert "png, .pdf or .svg" in capsys.readouterr().err


def test_read_plain_images(tmp_path):
    from PIL import Image

    from usidgpu.imageio import read_image

    frames = [np.random.default_rng(i).random((20, 30)).astype(np.float32) for i in range(3)]
    tif = tmp_path / "stack.tif"
    pages = [Image.fromarray(f) for f in frames]
    pages[0].save(tif, save_all=True, append_images=pages[1:])
    np.testing.assert_array_equal(read_image(tif), np.stack(frames))
    png = tmp_path / "img16.png"
    counts = (np.arange(600).reshape(20, 30) * 100).astype(np.uint16)
    Image.fromarray(counts).save(png)
    np.testing.assert_array_equal(read_image(png), counts)
    rgb = tmp_path / "rgb.png"
    Image.fromarray(np.zeros((4, 5, 3), np.uint8)).save(rgb)
    assert read_image(rgb).shape == (4, 5)  # colour becomes luminance
    with pytest.raises(usidgpu.FileProblem, match="no such file"):
        read_image(tmp_path / "missing.tif")
