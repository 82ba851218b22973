"""GPU paths (run with ``pytest -m gpu`` on a machine with CUDA; skipped elsewhere)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import make_file

import usidgpu
from usidgpu import Dimension, backend

pytestmark = pytest.mark.gpu
KERNEL = Path(__file__).parent / "kernels" / "scale_add.cu"


@pytest.fixture
def dataset(tmp_path):
    data = np.random.default_rng(0).standard_normal((30, 20, 33)).astype(np.float32)
    path = tmp_path / "g.h5"
    make_file(
        path,
        data=data,
        pos=[Dimension("Y", "nm", 30), Dimension("X", "nm", 20)],
        spec=[Dimension("E", "eV", 33)],
        chunks=(40, 33),
    )
    f = usidgpu.open(path)
    yield f.main_datasets()[0], data.reshape(600, 33)
    f.close()


def test_device_selection_finds_the_gpu():
    import cupy

    backend.gpu_status.cache_clear()
    dev = usidgpu.select_device("gpu")
    assert dev.is_gpu and dev.xp is cupy
    assert usidgpu.select_device("auto").is_gpu
    assert usidgpu.memory_budget(device="gpu") > 0


@pytest.mark.parametrize("prefetch", [True, False])
def test_blocks_arrive_on_the_device_with_the_same_values(dataset, prefetch):
    import cupy

    m, data = dataset
    got = np.empty_like(data)
    n = 0
    for b in m.blocks(budget=33 * 4 * 64 * 2, device="gpu", prefetch=prefetch):
        assert isinstance(b.data, cupy.ndarray)
        got[b.rows] = cupy.asnumpy(b.data * 1)  # touch it with a kernel on the current stream
        n += 1
    assert n > 3
    np.testing.assert_array_equal(got, data)


def test_device_blocks_with_range_and_copy(dataset):
    import cupy

    m, data = dataset
    kept = [b.data for b in m.blocks(budget="64kB", device="gpu", start=77, stop=411, copy=True)]
    np.testing.assert_array_equal(cupy.asnumpy(cupy.concatenate(kept)), data[77:411])


def test_reduce_on_gpu_equals_cpu(dataset):
    m, _ = dataset
    for dims, func in ((["E"], "mean"), (["Y", "X"], "std"), (["X"], "max"), (["Y"], "nansum")):
        np.testing.assert_allclose(
            m.reduce(dims, func, device="gpu"), m.reduce(dims, func, device="cpu"), rtol=1e-5, atol=1e-6
        )


def test_complex_blocks_on_gpu(tmp_path):
    import cupy

    data = (np.arange(24) + 1j * np.arange(24)).astype(np.complex64).reshape(6, 4)
    make_file(tmp_path / "c.h5", data=data, pos=[Dimension("X", "", 6)], spec=[Dimension("F", "Hz", 4)])
    with usidgpu.open(tmp_path / "c.h5") as f:
        got = [cupy.asnumpy(b.data) for b in f.main_datasets()[0].blocks(device="gpu", copy=True)]
    np.testing.assert_array_equal(np.concatenate(got), data)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kernel_loader_compiles_once_per_dtype(dtype):
    import cupy

    k = backend.get_kernel(KERNEL, "scale_add", dtype=dtype)
    assert backend.get_kernel(KERNEL, "scale_add", dtype=dtype) is k  # cached per device and dtype
    n = 1000
    x = cupy.arange(n, dtype=dtype)
    y = cupy.ones(n, dtype=dtype)
    k(((n + 255) // 256,), (256,), (x, y, dtype(2.5), np.int64(n)))
    np.testing.assert_allclose(cupy.asnumpy(y), 2.5 * np.arange(n) + 1)
    fill = backend.get_kernel(KERNEL, "fill_index")
    out = cupy.zeros(n, dtype=cupy.float32)
    fill(((n + 255) // 256,), (256,), (out, np.int64(n)))
    np.testing.assert_array_equal(cupy.asnumpy(out), np.arange(n, dtype=np.float32))


# --------------------------------------------------------------------- decompositions on GPU
@pytest.mark.parametrize("method", ["gram", "randomized", "exact"])
@pytest.mark.parametrize("shape", [(600, 40), (40, 600)])
def test_svd_on_gpu_equals_cpu(method, shape):
    from helpers import low_rank

    x = low_rank(*shape, dtype=np.float32, seed=2)
    cpu = usidgpu.svd(x, 4, method=method, device="cpu")
    gpu = usidgpu.svd(x, 4, method=method, device="gpu")
    assert gpu.device == "gpu" and isinstance(gpu.U, np.ndarray)
    np.testing.assert_allclose(gpu.S, cpu.S, rtol=1e-4)
    np.testing.assert_allclose(gpu.V, cpu.V, atol=1e-3)
    np.testing.assert_allclose(gpu.U, cpu.U, atol=1e-3)


def test_pca_nmf_kmeans_on_gpu_equal_cpu(dataset):
    m, data = dataset
    p_cpu, p_gpu = usidgpu.pca(m, 3, device="cpu"), usidgpu.pca(m, 3, device="gpu", budget="64MB")
    np.testing.assert_allclose(p_gpu.explained_variance_ratio, p_cpu.explained_variance_ratio, rtol=1e-4)
    positive = np.abs(data) + 0.1
    w0 = np.abs(np.random.default_rng(0).standard_normal((600, 3)))
    h0 = np.abs(np.random.default_rng(1).standard_normal((3, 33)))
    n_cpu = usidgpu.nmf(positive, 3, init=(w0, h0), max_iter=20, tol=0, device="cpu")
    n_gpu = usidgpu.nmf(positive, 3, init=(w0, h0), max_iter=20, tol=0, device="gpu")
    np.testing.assert_allclose(n_gpu.reconstruction_err, n_cpu.reconstruction_err, rtol=1e-4)
    init = data[:4].astype(np.float64)
    k_cpu = usidgpu.kmeans(m, 4, init=init, device="cpu")
    k_gpu = usidgpu.kmeans(m, 4, init=init, device="gpu", budget="64MB")
    np.testing.assert_array_equal(k_gpu.labels, k_cpu.labels)
    np.testing.assert_allclose(k_gpu.inertia, k_cpu.inertia, rtol=1e-5)


def test_complex_svd_on_gpu():
    from helpers import low_rank

    x = low_rank(300, 30, dtype=np.complex64, seed=5)
    for method in ("gram", "randomized"):
        gpu = usidgpu.svd(x, 3, method=method, device="gpu")
        np.testing.assert_allclose(gpu.S, np.linalg.svd(x.astype(np.complex128), compute_uv=False)[:3], rtol=1e-4)


# ------------------------------------------------------------------------- denoising on GPU
def test_gather_kernel_equals_the_numpy_patches():
    import cupy

    from usidgpu.denoise.patches import patch_chunks

    image = np.random.default_rng(3).random((37, 41)).astype(np.float32) * 50
    for window, step in (((7, 5), (1, 1)), ((6, 6), (3, 4))):
        ref = np.concatenate([c for *_, c in patch_chunks(np, image, window, step, 5, shift=12.5)])
        got = cupy.concatenate([c for *_, c in patch_chunks(cupy, cupy.asarray(image), window, step, 5, shift=12.5)])
        np.testing.assert_array_equal(cupy.asnumpy(got), ref)


@pytest.mark.parametrize("step", [1, 3])
def test_windowed_svd_on_gpu_equals_cpu(step):
    from test_denoise import lattice

    image = lattice(n=96, m=80, seed=4)[1].astype(np.float64)
    cpu = usidgpu.windowed_svd(image, window=12, step=step, k=8, device="cpu")
    gpu = usidgpu.windowed_svd(image, window=12, step=step, k=8, device="gpu")
    np.testing.assert_allclose(gpu.singular_values, cpu.singular_values, rtol=1e-8, atol=1e-6)
    np.testing.assert_allclose(gpu.cleaned, cpu.cleaned, rtol=1e-8, atol=1e-6)
    tiled = usidgpu.windowed_svd(image, window=12, step=step, k=8, device="gpu", tile=40)
    np.testing.assert_allclose(tiled.cleaned, cpu.cleaned, rtol=1e-8, atol=1e-6)


# ------------------------------------------------------------------------- atomic columns on GPU
@pytest.fixture(scope="module")
def lattice_columns():
    from usidgpu.atoms.find import find_columns
    from usidgpu.atoms.synthetic import lattice_image

    s = lattice_image(
        (160, 192), spacing=16, angle_deg=9, vacancies=3, displacement=0.3, dose=100, read_noise=0.02, seed=2
    )
    return s.image, find_columns(s.image)


@pytest.mark.parametrize("engine", ["array", "kernel"])
def test_column_fits_on_gpu_equal_the_cpu_array_engine(lattice_columns, engine):
    from usidgpu.atoms.fit import refine

    image, found = lattice_columns
    cpu = refine(image, found, device="cpu", engine="array")
    gpu = refine(image, found, device="gpu", engine=engine)
    assert gpu.device == "gpu" and gpu.engine == engine
    np.testing.assert_array_equal(gpu.converged, cpu.converged)
    # the same iteration: same number of steps, parameters equal to rounding
    assert np.mean(gpu.n_iter == cpu.n_iter) > 0.98
    np.testing.assert_allclose(gpu.positions, cpu.positions, atol=1e-7)
    keep = [0, 1, 2, 3, 4, 6]  # θ of a round column is undefined: rounding may turn it anywhere
    np.testing.assert_allclose(gpu.params[:, keep], cpu.params[:, keep], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(gpu.errors[:, 1:3], cpu.errors[:, 1:3], rtol=1e-5)


# ------------------------------------------------------------------------- dask-cuda
def test_local_cuda_cluster_equals_the_in_process_run(tmp_path):
    pytest.importorskip("dask_cuda", reason="dask-cuda is not installed")
    from helpers import make_file

    from usidgpu.parallel.fits import PolynomialFit

    x = np.linspace(-1, 1, 32)
    data = np.random.default_rng(2).standard_normal((20, 30, 32)).astype(np.float32)
    path = tmp_path / "iv.h5"
    make_file(path, data, pos=[Dimension("Y", "nm", 20), Dimension("X", "nm", 30)], spec=[Dimension("Bias", "V", x)])
    copy = tmp_path / "copy.h5"
    copy.write_bytes(path.read_bytes())
    import h5py

    with usidgpu.open(path) as f:
        ref = PolynomialFit(f.main_datasets()[0], degree=2, rows_per_block=64, progress=False).run()
    with usidgpu.open(copy) as f:
        got = PolynomialFit(
            f.main_datasets()[0], degree=2, rows_per_block=64, scheduler="cuda", device="gpu", progress=False
        ).run()
    with h5py.File(path, "r") as a, h5py.File(copy, "r") as b:
        np.testing.assert_allclose(b[got + "/Coefficients"][()], a[ref + "/Coefficients"][()], rtol=1e-9, atol=1e-12)
