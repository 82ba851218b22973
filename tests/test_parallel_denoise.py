"""Windowed SVD as a block-wise Process (bands with halos) equals the in-process function."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

import usidgpu
from usidgpu.atoms.synthetic import lattice_image
from usidgpu.denoise.blockwise import WindowedSVD
from usidgpu.imageio import image_to_usid


@pytest.fixture(scope="module")
def stack_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("wsvd") / "img.h5"
    frames = np.stack([lattice_image((96, 80), spacing=12, dose=50, seed=s).image for s in range(2)])
    name = image_to_usid(frames.astype(np.float32), path)
    return path, name


@pytest.mark.parametrize(
    "scheduler,band_rows,k",
    [(None, 17, None), ("threads", 9, 6), (None, 96, 6), ("threads", 1, None)],
)
def test_bands_with_halos_equal_the_whole_image(tmp_path, stack_file, scheduler, band_rows, k):
    src, name = stack_file
    path = tmp_path / "img.h5"
    path.write_bytes(src.read_bytes())
    with usidgpu.open(path) as f:
        ref = usidgpu.windowed_svd(f[name], window=10, k=k, device="cpu")
        group = WindowedSVD(
            f[name], window=10, k=k, scheduler=scheduler, workers=2, rows_per_block=band_rows * 80, progress=False
        ).run()
    with h5py.File(path, "r") as h:
        g = h[group]
        assert g.attrs["num_components"] == ref.k
        cleaned = g["Cleaned_Image"][()].T.reshape(2, 96, 80)
        noise = g["Removed_Noise"][()].T.reshape(2, 96, 80)
        np.testing.assert_allclose(cleaned, ref.cleaned.astype(np.float32), rtol=1e-6, atol=1e-5)
        np.testing.assert_allclose(noise, ref.noise.astype(np.float32), rtol=1e-6, atol=1e-5)
        np.testing.assert_allclose(
            g["Singular_Values"][()], ref.singular_values, rtol=1e-9, atol=1e-9 * ref.singular_values[0]
        )
        comps = g["Components"][()].reshape(ref.k, 10, 10)
        np.testing.assert_allclose(comps, ref.components.astype(np.float32), atol=1e-5)
    assert usidgpu.validate(path) == []


def test_a_window_larger_than_the_image_is_refused(tmp_path):
    from helpers import make_file

    path = tmp_path / "spectra.h5"
    make_file(path)
    with usidgpu.open(path) as f, pytest.raises(ValueError, match="window"):
        WindowedSVD(f.main_datasets()[0], window=10)
