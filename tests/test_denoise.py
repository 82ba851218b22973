"""Windowed SVD denoising against the explicit patch-matrix method, on synthetic and real images."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import real_file
from hypothesis import given, settings
from hypothesis import strategies as st

import usidgpu
from usidgpu.denoise import lattice_period, window_from_fft, windowed_svd
from usidgpu.denoise.gram import gram_step1
from usidgpu.denoise.patches import gram_by_patches
from usidgpu.denoise.rebuild import coverage


def lattice(n=256, m=None, period=12.0, sigma=2.2, peak=60.0, background=5.0, vacancies=4, seed=0):
    """A square lattice of Gaussian columns (noise-free) and a Poisson + Gaussian noisy copy."""
    m = m or n
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:n, 0:m].astype(float)
    clean = np.full((n, m), background)
    cy, cx = np.arange(period / 2, n, period), np.arange(period / 2, m, period)
    top = min(len(cy), len(cx)) - 2
    holes = {tuple(v) for v in rng.integers(2, top, size=(vacancies, 2)).tolist()} if vacancies and top > 2 else set()
    for i, a in enumerate(cy):
        for j, b in enumerate(cx):
            if (i, j) not in holes:
                clean += peak * np.exp(-((y - a) ** 2 + (x - b) ** 2) / (2 * sigma**2))
    noisy = rng.poisson(clean).astype(np.float32) + rng.normal(0, 2, clean.shape).astype(np.float32)
    return clean, noisy, holes, cy, cx


def explicit(image, window, step, k):
    """The patch-matrix method, written out: every window a row, full SVD, overlap average."""
    wy, wx = window
    sy, sx = step
    view = np.lib.stride_tricks.sliding_window_view(image.astype(np.float64), (wy, wx))[::sy, ::sx]
    ny, nx = view.shape[:2]
    x = view.reshape(ny * nx, wy * wx)
    u, s, vt = np.linalg.svd(x, full_matrices=False)
    low = ((u[:, :k] * s[:k]) @ vt[:k]).reshape(ny, nx, wy, wx)
    total = np.zeros(image.shape)
    count = np.zeros(image.shape, dtype=np.int64)
    for i in range(ny):
        for j in range(nx):
            total[i * sy : i * sy + wy, j * sx : j * sx + wx] += low[i, j]
            count[i * sy : i * sy + wy, j * sx : j * sx + wx] += 1
    cleaned = np.where(count > 0, total / np.maximum(count, 1), image)
    return cleaned, s, count


@given(
    st.integers(6, 30),
    st.integers(6, 30),
    st.integers(1, 6),
    st.integers(1, 6),
    st.integers(0, 2**16),
)
@settings(max_examples=60, deadline=None)
def test_step1_gram_equals_the_patch_matrix_gram(h, w, wy, wx, seed):
    wy, wx = min(wy, h), min(wx, w)
    image = np.random.default_rng(seed).random((h, w)) * 10 + 100
    ref = gram_by_patches(np, image, (wy, wx), (1, 1))
    np.testing.assert_allclose(gram_step1(np, image, (wy, wx)), ref, rtol=1e-10, atol=1e-9 * np.abs(ref).max())


@pytest.mark.parametrize(
    "window, step, k",
    [((8, 8), (1, 1), 5), ((7, 5), (1, 1), 3), ((8, 8), (3, 3), 4), ((9, 6), (4, 5), 6), ((5, 5), (7, 7), 2)],
)
def test_equals_the_explicit_patch_matrix_method(window, step, k):
    image = lattice(n=61, m=53, seed=1)[1].astype(np.float64)  # sizes the steps do not divide
    ref, s, count = explicit(image, window, step, k)
    r = windowed_svd(image, window=window, step=step, k=k, device="cpu")
    np.testing.assert_allclose(r.cleaned, ref, rtol=1e-9, atol=1e-7)
    np.testing.assert_allclose(r.singular_values[: s.size], s, rtol=1e-8, atol=1e-6 * s[0])
    np.testing.assert_array_equal(coverage(np, image.shape, window, step), count)
    np.testing.assert_allclose(r.noise, image - ref, atol=1e-7)
    assert r.components.shape == (k, *window)


def test_equals_scikit_learn_reconstruction():
    from sklearn.feature_extraction.image import extract_patches_2d, reconstruct_from_patches_2d

    image = lattice(n=48, m=40, seed=2)[1].astype(np.float64)
    x = extract_patches_2d(image, (10, 10)).reshape(-1, 100)
    u, s, vt = np.linalg.svd(x, full_matrices=False)
    ref = reconstruct_from_patches_2d(((u[:, :6] * s[:6]) @ vt[:6]).reshape(-1, 10, 10), image.shape)
    np.testing.assert_allclose(windowed_svd(image, window=10, k=6, device="cpu").cleaned, ref, atol=1e-8)


@pytest.mark.parametrize("step", [1, 3])
@pytest.mark.parametrize("tile", [25, 45])
def test_tiles_give_the_untiled_result(step, tile):
    image = lattice(n=90, m=70, seed=3)[1].astype(np.float64)
    whole = windowed_svd(image, window=9, step=step, k=5, device="cpu")
    tiled = windowed_svd(image, window=9, step=step, k=5, device="cpu", tile=tile)
    assert tiled.parameters["tiles"] and not whole.parameters["tiles"]
    np.testing.assert_allclose(tiled.cleaned, whole.cleaned, rtol=1e-9, atol=1e-8)
    np.testing.assert_allclose(tiled.singular_values, whole.singular_values, rtol=1e-9, atol=1e-6)


def test_float32_in_float32_out():
    image = lattice(n=40, seed=8)[1]
    r = windowed_svd(image, window=8, k=3, device="cpu")
    assert r.cleaned.dtype == np.float32 and r.noise.dtype == np.float32
    ref = windowed_svd(image.astype(np.float64), window=8, k=3, device="cpu")
    np.testing.assert_allclose(r.cleaned, ref.cleaned, rtol=1e-5, atol=1e-4)


def test_coverage_counts_beyond_255():
    cov = coverage(np, (100, 100), (32, 32), (1, 1))  # pycroscopy's uint8 counter overflows here
    assert cov.max() == 32 * 32 and cov.dtype.kind == "i"
    assert cov[0, 0] == 1 and cov[50, 50] == 1024


def test_quality_on_a_lattice_with_vacancies():
    clean, noisy, holes, cy, cx = lattice(n=256, seed=4)
    r = windowed_svd(noisy, device="cpu")

    def psnr(a):
        return 10 * np.log10(clean.max() ** 2 / np.mean((a - clean) ** 2))

    assert 22 <= r.window[0] <= 26  # two lattice periods of 12 px
    assert r.k_rule.startswith("Gavish")
    assert psnr(r.cleaned) - psnr(noisy) >= 10  # measured ~13 dB
    assert abs(np.corrcoef(r.noise.ravel(), clean.ravel())[0, 1]) < 0.05  # removes noise, not signal
    for i, j in holes:  # vacancies stay visibly empty
        site = r.cleaned[int(cy[i]), int(cx[j])]
        neighbour = r.cleaned[int(cy[i]), int(cx[j + 1])]
        assert (neighbour - site) / (neighbour - 5.0) > 0.35


def test_window_from_the_lattice_period():
    for n, m, period in ((256, 256, 12.0), (200, 320, 9.0), (128, 256, 16.0)):
        image = lattice(n=n, m=m, period=period, vacancies=0, seed=5)[1]
        assert lattice_period(image) == pytest.approx(period, rel=0.12)
        assert abs(window_from_fft(image) - 2 * period) <= 3


def test_stacks_share_the_eigen_windows():
    image = lattice(n=64, seed=6)[1]
    single = windowed_svd(image, window=12, k=6, device="cpu")
    stack = windowed_svd(np.stack([image, image, image]), window=12, k=6, device="cpu")
    assert stack.cleaned.shape == (3, 64, 64)
    for f in range(3):
        np.testing.assert_allclose(stack.cleaned[f], single.cleaned, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(stack.singular_values, np.sqrt(3) * single.singular_values, rtol=1e-8, atol=1e-6)


def test_bad_arguments():
    image = lattice(n=40, seed=7)[1]
    with pytest.raises(ValueError, match="does not fit"):
        windowed_svd(image, window=50)
    with pytest.raises(ValueError, match="k must be"):
        windowed_svd(image, window=8, k=65)
    with pytest.raises(ValueError, match="step"):
        windowed_svd(image, window=8, step=0)
    with pytest.raises(TypeError, match="real data"):
        windowed_svd(image.astype(np.complex64), window=8)
    with pytest.raises(ValueError, match="image"):
        windowed_svd(np.zeros((2, 3, 4, 5)))
    with pytest.raises(usidgpu.BudgetError, match="Gram matrix"):
        windowed_svd(image, window=32, budget="1MB")


def test_real_stem_image_noise_has_no_lattice(tmp_path):
    from usidgpu.viz import plot_denoise, save_figure

    with usidgpu.open(real_file("simulated_STEM_Image.h5")) as f:
        ds = f.main_datasets()[0]
        r = windowed_svd(ds, device="cpu")
    raw = r.raw[0]
    spec_raw = np.abs(np.fft.fft2(raw - raw.mean()))
    spec_noise = np.abs(np.fft.fft2(r.noise[0]))
    spec_raw[0, 0] = 0
    peaks = np.argsort(spec_raw.ravel())[-8:]  # the lattice reflections
    assert np.max(spec_noise.ravel()[peaks] / spec_raw.ravel()[peaks]) < 0.02
    path = save_figure(plot_denoise(r), tmp_path / "fig1.png")
    assert path.stat().st_size > 50_000


@pytest.mark.parametrize("shape,window", [((40, 37), (7, 5)), ((20, 30), (9, 25)), ((10, 12), (10, 12))])
def test_gram_corner_tables_numpy_and_compiled_agree(shape, window, monkeypatch):
    from usidgpu.denoise import gram

    image = np.random.default_rng(5).random(shape)
    windows = np.lib.stride_tricks.sliding_window_view(image, window).reshape(-1, window[0] * window[1])
    explicit = windows.T @ windows
    monkeypatch.setenv("USIDGPU_NO_NUMBA", "1")
    numpy_path = gram.gram_step1(np, image, window)
    monkeypatch.delenv("USIDGPU_NO_NUMBA")
    default_path = gram.gram_step1(np, image, window)  # compiled where numba is installed
    np.testing.assert_allclose(numpy_path, explicit, rtol=1e-12, atol=1e-12 * explicit.max())
    np.testing.assert_allclose(default_path, explicit, rtol=1e-12, atol=1e-12 * explicit.max())


def test_singular_values_with_k_given_are_computed_on_use():
    image = lattice(n=48, seed=3)[1]
    auto = windowed_svd(image, window=8)
    given = windowed_svd(image, window=8, k=auto.k)
    assert callable(given.spectrum)
    np.testing.assert_allclose(given.singular_values, auto.singular_values, rtol=1e-12)
    np.testing.assert_allclose(given.cleaned, auto.cleaned)
