"""Decompositions, one test body for NumPy and the device: SVD (every method, tall and wide, in
memory and streamed, complex), PCA, NMF (both solvers, every initialization), k-means (every
initialization, raw and SVD features), the cuML engines, and no host waits per block.

Oracles: NumPy's SVD, scikit-learn's PCA, the CPU run of the same call.
This module imports neither dask nor zarr, so it runs on a bare GPU machine too.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_waits_do_not_grow_with_blocks, low_rank, make_file, principal_sines

import usidgpu
from usidgpu import Dimension
from usidgpu.core.errors import BudgetError


@pytest.fixture
def spectra(tmp_path):
    """A 40 × 30-position, 48-point spectrum image of three phases (uint16 counts far from 0)."""
    rng = np.random.default_rng(4)
    e = np.linspace(0, 1, 48)
    phases = np.stack([np.exp(-((e - c) ** 2) / 0.005) for c in (0.25, 0.5, 0.75)])
    truth = rng.integers(0, 3, 1200)
    data = 1000 + 400 * phases[truth] + rng.normal(0, 5, (1200, 48))
    path = tmp_path / "si.h5"
    make_file(
        path,
        data=data.reshape(40, 30, 48).astype(np.float32),
        pos=[Dimension("Y", "nm", 40), Dimension("X", "nm", 30)],
        spec=[Dimension("E", "eV", e)],
        chunks=(60, 48),
    )
    f = usidgpu.open(path)
    yield f.main_datasets()[0], data.astype(np.float32), truth
    f.close()


# ------------------------------------------------------------------------------ SVD / PCA
@pytest.mark.parametrize("method", ["gram", "randomized", "exact", "auto"])
@pytest.mark.parametrize("shape", [(600, 40), (40, 600)], ids=["tall", "wide"])
@pytest.mark.parametrize("where", ["host", "device"])
def test_svd_equals_numpy(device, method, shape, where):
    x = low_rank(*shape, dtype=np.float32, seed=2)
    s_ref = np.linalg.svd(x.astype(np.float64), compute_uv=False)[:4]
    data = device.asarray(x) if where == "device" else x
    r = usidgpu.svd(data, 4, method=method, device=device.name)
    assert r.device == device.name and isinstance(r.U, np.ndarray)
    np.testing.assert_allclose(r.S, s_ref, rtol=1e-4)
    _u, _s, vt = np.linalg.svd(x.astype(np.float64), full_matrices=False)
    assert principal_sines(r.V.T, vt[:4].T) < 1e-3


@pytest.mark.parametrize("method", ["gram", "randomized"])
def test_complex_svd(device, method):
    x = low_rank(300, 30, dtype=np.complex64, seed=5)
    r = usidgpu.svd(device.asarray(x), 3, method=method, device=device.name)
    np.testing.assert_allclose(r.S, np.linalg.svd(x.astype(np.complex128), compute_uv=False)[:3], rtol=1e-4)


@pytest.mark.parametrize("budget", [None, "400kB"], ids=["resident", "streamed"])
@pytest.mark.parametrize("method", ["gram", "randomized", "auto"])
def test_svd_of_a_main_dataset_resident_and_streamed(device, spectra, budget, method):
    m, x, _ = spectra
    r = usidgpu.svd(m, 5, method=method, device=device.name, budget=budget)
    ref = np.linalg.svd(x.astype(np.float64), compute_uv=False)[:5]
    signal = 3 if method == "randomized" else 5  # randomized resolves the signal, not the noise floor
    np.testing.assert_allclose(r.S[:signal], ref[:signal], rtol=1e-3)


def test_pca_equals_scikit_learn(device, spectra):
    from sklearn.decomposition import PCA

    m, x, _ = spectra
    r = usidgpu.pca(m, 3, device=device.name, budget="160kB")
    ref = PCA(3, svd_solver="full").fit(x.astype(np.float64))
    np.testing.assert_allclose(r.explained_variance_ratio, ref.explained_variance_ratio_, rtol=1e-3)
    np.testing.assert_allclose(r.mean, ref.mean_, rtol=1e-5)


@pytest.mark.gpu
@pytest.mark.parametrize("method", ["gram", "randomized"])
def test_svd_makes_no_host_waits_per_block(gpu, spectra, method):
    m, _, _ = spectra
    budgets = {"gram": ("150kB", "400kB"), "randomized": ("300kB", "600kB")}[method]  # ~25 and ~6 blocks
    assert_waits_do_not_grow_with_blocks(
        gpu, lambda b: usidgpu.svd(m, 4, method=method, device="gpu", budget=b), budgets=budgets
    )


# ------------------------------------------------------------------------------ NMF
@pytest.mark.parametrize("solver", ["hals", "mu"])
@pytest.mark.parametrize("init", ["custom", "nndsvda", "nndsvd", "random"])
def test_nmf_on_the_device_equals_the_cpu(device, spectra, solver, init):
    m, x, _ = spectra
    k = 3
    if init == "custom":
        w0 = np.abs(np.random.default_rng(0).standard_normal((x.shape[0], k))).astype(np.float32)
        h0 = np.abs(np.random.default_rng(1).standard_normal((k, x.shape[1]))).astype(np.float32)
        init = (device.asarray(w0), device.asarray(h0))
        cpu_init = (w0, h0)
    else:
        cpu_init = init
    kw = dict(solver=solver, max_iter=25, tol=0, budget="160kB")
    ref = usidgpu.nmf(m, k, init=cpu_init, device="cpu", **kw)
    got = usidgpu.nmf(m, k, init=init, device=device.name, **kw)
    assert got.n_iter == ref.n_iter == 25 and len(got.errors) == 25
    np.testing.assert_allclose(got.errors, ref.errors, rtol=1e-4)
    np.testing.assert_allclose(got.W @ got.H, ref.W @ ref.H, rtol=1e-3, atol=1e-2 * x.mean())
    assert (got.W >= 0).all() and (got.H >= 0).all()


def test_nmf_stops_on_its_tolerance_as_scikit_learn_does(device, spectra):
    m, _, _ = spectra
    r = usidgpu.nmf(m, 3, max_iter=400, tol=1e-3, device=device.name)
    assert r.n_iter % 10 == 0 and r.n_iter < 400 and len(r.errors) == r.n_iter


@pytest.mark.gpu
@pytest.mark.parametrize("solver", ["hals", "mu"])
def test_nmf_makes_no_host_waits_per_block(gpu, spectra, solver):
    m, _, _ = spectra
    assert_waits_do_not_grow_with_blocks(
        gpu,
        lambda b: usidgpu.nmf(m, 3, solver=solver, max_iter=12, tol=0, device="gpu", budget=b),
        budgets=("100kB", "400kB"),
    )


# ------------------------------------------------------------------------------ k-means
def adjusted_rand(a, b):
    from sklearn.metrics import adjusted_rand_score

    return adjusted_rand_score(a, b)


# explicit centres are given in the clustered features: raw spectra only
@pytest.mark.parametrize(
    "init, features",
    [("k-means++", "raw"), ("random", "raw"), ("custom", "raw"), ("k-means++", "svd"), ("random", "svd")],
)
def test_kmeans_on_the_device_equals_the_cpu(device, spectra, init, features):
    m, x, truth = spectra
    init_arg = x[[np.flatnonzero(truth == c)[0] for c in range(3)]].astype(np.float64) if init == "custom" else init
    kw = dict(features=features, init=init_arg, budget="600kB", random_state=3)
    ref = usidgpu.kmeans(m, 3, device="cpu", **kw)
    got = usidgpu.kmeans(m, 3, device=device.name, **kw)
    assert adjusted_rand(got.labels, truth) == pytest.approx(1.0)
    assert adjusted_rand(got.labels, ref.labels) == pytest.approx(1.0)
    np.testing.assert_allclose(got.inertia, ref.inertia, rtol=1e-4)
    # the mean spectra are the raw data's, whatever was clustered
    for c in range(3):
        np.testing.assert_allclose(got.mean_response[c], x[got.labels == c].mean(axis=0), rtol=1e-4)
    np.testing.assert_array_equal(np.bincount(got.labels, minlength=3), got.counts)


def test_kmeans_refills_an_empty_cluster_with_the_farthest_point(device):
    x = np.zeros((10, 2))
    x[:9, 0] = np.arange(9) * 0.01
    x[9] = [100.0, 0.0]  # far from every centre
    init = np.array([[0.0, 0.0], [0.05, 0.0], [-50.0, 50.0]])  # the third centre attracts nobody
    got = usidgpu.kmeans(device.asarray(x), 3, init=device.asarray(init), device=device.name)
    assert got.counts.min() >= 1 and got.labels[9] != got.labels[0]


@pytest.mark.gpu
def test_kmeans_makes_no_host_waits_per_block(gpu, spectra):
    m, x, truth = spectra
    init = x[[np.flatnonzero(truth == c)[0] for c in range(3)]].astype(np.float64)
    assert_waits_do_not_grow_with_blocks(
        gpu, lambda b: usidgpu.kmeans(m, 3, init=init, device="gpu", budget=b), budgets=("150kB", "400kB")
    )


# ------------------------------------------------------------------------------ cuML engines
@pytest.mark.gpu
def test_cuml_engines_equal_the_usidgpu_engine(gpu_with_cuml, spectra):
    m, x, truth = spectra
    ref = usidgpu.svd(m, 4, device="gpu")
    got = usidgpu.svd(m, 4, device="gpu", engine="cuml")
    np.testing.assert_allclose(got.S, ref.S, rtol=1e-3)
    p_ref, p_got = usidgpu.pca(m, 3, device="gpu"), usidgpu.pca(m, 3, device="gpu", engine="cuml")
    np.testing.assert_allclose(p_got.explained_variance_ratio, p_ref.explained_variance_ratio, rtol=1e-3)
    for features in ("raw", "svd"):
        k = usidgpu.kmeans(m, 3, device="gpu", engine="cuml", features=features)
        assert adjusted_rand(k.labels, truth) == pytest.approx(1.0)
        for c in range(3):  # mean spectra of the raw data, offset included
            np.testing.assert_allclose(k.mean_response[c], x[k.labels == c].mean(axis=0), rtol=1e-4)


@pytest.mark.gpu
def test_cuml_engine_budget_is_the_devices_free_memory(gpu_with_cuml, spectra):
    m, x, _ = spectra
    if gpu_with_cuml.kind != "standin":
        pytest.skip("the device size is set on the stand-in")
    import cupy_standin

    # data well above an eighth of the free memory but within a third of it: cuML takes them
    with cupy_standin.configure(total_memory=int(x.nbytes * 4)):
        usidgpu.kmeans(m, 3, device="gpu", engine="cuml")
    with cupy_standin.configure(total_memory=int(x.nbytes * 2)), pytest.raises(BudgetError, match="engine='usidgpu'"):
        usidgpu.kmeans(m, 3, device="gpu", engine="cuml")
