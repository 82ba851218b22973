"""SVD, PCA, NMF and k-means against NumPy and scikit-learn, in memory and from files."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from helpers import low_rank, make_file, principal_sines

import usidgpu
from usidgpu import Dimension
from usidgpu.decompose.source import BlockSource
from usidgpu.decompose.svd import choose_method

METHODS = ["gram", "randomized", "exact"]
# dtype -> (relative error of singular values, sine of the largest principal angle)
TOL = {np.float64: (1e-9, 1e-7), np.complex128: (1e-9, 1e-7), np.float32: (2e-5, 2e-3), np.complex64: (2e-5, 2e-3)}


@pytest.mark.parametrize("shape", [(400, 60), (60, 400)], ids=["tall", "wide"])
@pytest.mark.parametrize("dtype", list(TOL), ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("method", METHODS)
def test_svd_against_numpy(shape, dtype, method):
    x = low_rank(*shape, dtype=dtype)
    ref_u, ref_s, ref_v = np.linalg.svd(x.astype(np.result_type(dtype, np.float64)), full_matrices=False)
    r = usidgpu.svd(x, 5, method=method, device="cpu", budget="64MB")
    s_tol, angle_tol = TOL[dtype]
    assert r.method == method
    assert r.U.shape == (shape[0], 5) and r.S.shape == (5,) and r.V.shape == (5, shape[1])
    assert r.U.dtype == np.dtype(dtype) and r.V.dtype == np.dtype(dtype)
    np.testing.assert_allclose(r.S, ref_s[:5], rtol=s_tol)
    assert principal_sines(r.V, ref_v[:5]) < angle_tol
    assert principal_sines(r.U.T, ref_u[:, :5].T) < angle_tol
    # orthonormal factors, and the largest entry of each component is real and positive
    np.testing.assert_allclose(r.U.conj().T @ r.U, np.eye(5), atol=50 * s_tol)
    np.testing.assert_allclose(r.V @ r.V.conj().T, np.eye(5), atol=50 * s_tol)
    pivots = r.V[np.arange(5), np.abs(r.V).argmax(axis=1)]
    assert np.all(pivots.real > 0) and np.allclose(pivots.imag, 0, atol=1e-6)
    assert r.total_energy == pytest.approx(float(np.sum(np.abs(x.astype(np.complex128)) ** 2)), rel=1e-5)


@pytest.mark.parametrize("method", METHODS)
def test_svd_of_a_file_in_many_blocks_equals_in_memory(tmp_path, method):
    x = low_rank(30 * 20, 48, dtype=np.float32, seed=4).reshape(30, 20, 48)
    make_file(
        tmp_path / "d.h5",
        data=x,
        pos=[Dimension("Y", "nm", 30), Dimension("X", "nm", 20)],
        spec=[Dimension("E", "eV", 48)],
    )
    with usidgpu.open(tmp_path / "d.h5") as f:
        m = f.main_datasets()[0]
        # a budget so small the data are streamed (not kept resident) in several blocks
        budget = {"gram": 150_000, "randomized": 260_000, "exact": "8MB"}[method]
        from_file = usidgpu.svd(m, 4, method=method, device="cpu", budget=budget)
    in_memory = usidgpu.svd(x.reshape(600, 48), 4, method=method, device="cpu")
    np.testing.assert_allclose(from_file.S, in_memory.S, rtol=1e-5)
    np.testing.assert_allclose(from_file.V, in_memory.V, atol=1e-4)
    assert [d.name for d in from_file.pos_dims] == ["Y", "X"] and from_file.spec_dims[0].units == "eV"
    assert from_file.quantity == "Current"


def test_integer_data_decompose_in_float32():
    x = (low_rank(200, 30, seed=2) * 50 + 3000).astype(np.uint16)
    r = usidgpu.svd(x, 3, device="cpu")
    assert r.U.dtype == np.float32
    # float32 Gram: a component 80× below the first keeps ~5 digits
    np.testing.assert_allclose(r.S, np.linalg.svd(x.astype(np.float64), compute_uv=False)[:3], rtol=5e-5)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_pca_against_scikit_learn(method, dtype):
    from sklearn.decomposition import PCA

    x = (low_rank(500, 40, seed=7) + np.linspace(5, 9, 40)).astype(dtype)
    ref = PCA(4, svd_solver="full").fit(x.astype(np.float64))
    r = usidgpu.pca(x, 4, method=method, device="cpu")
    rtol = 1e-8 if dtype == np.float64 else 2e-4
    np.testing.assert_allclose(r.explained_variance_ratio, ref.explained_variance_ratio_, rtol=rtol)
    np.testing.assert_allclose(r.explained_variance, ref.explained_variance_, rtol=rtol)
    np.testing.assert_allclose(r.mean, ref.mean_, rtol=1e-6)
    signs = np.sign((r.V * ref.components_).sum(axis=1))
    np.testing.assert_allclose(r.V * signs[:, None], ref.components_, atol=100 * rtol)
    np.testing.assert_allclose(
        r.scores * signs, ref.transform(x.astype(np.float64)), rtol=1e-3, atol=1e-3 if dtype == np.float32 else 1e-8
    )


def test_complex_pca_against_numpy():
    x = low_rank(300, 30, dtype=np.complex128, seed=3) + (1 + 2j)
    centred = x - x.mean(axis=0)
    _u, s, vh = np.linalg.svd(centred, full_matrices=False)
    for method in METHODS:
        r = usidgpu.pca(x, 3, method=method, device="cpu")
        np.testing.assert_allclose(r.S, s[:3], rtol=1e-9)
        assert principal_sines(r.V, vh[:3]) < 1e-7


def test_auto_method_and_its_reason():
    method, reason = choose_method(65536, 1024, 16, 4 * 2**30, np.dtype(np.float32))
    assert method == "gram" and "1024×1024" in reason
    assert choose_method(30000, 20000, 16, 4 * 2**30, np.dtype(np.float32))[0] == "randomized"
    assert choose_method(65536, 1024, 16, 48 * 2**20, np.dtype(np.float32))[0] == "randomized"  # Gram too big
    assert choose_method(256, 40000, 16, 20 * 2**20, np.dtype(np.float32))[0] == "gram"  # whichever fits
    wide_on_disk = choose_method(256, 40000, 16, 2**30, np.dtype(np.float32), slabs_reread=True)
    assert wide_on_disk[0] == "randomized" and "chunked across columns" in wide_on_disk[1]
    with pytest.raises(usidgpu.BudgetError, match="neither streamed SVD"):
        choose_method(65536, 1024, 16, 8 * 2**20, np.dtype(np.float32))
    r = usidgpu.svd(low_rank(300, 20), 2, device="cpu")
    assert r.method == "gram" and r.parameters["method_reason"].startswith("gram:")


def test_bad_arguments():
    x = low_rank(30, 10)
    with pytest.raises(ValueError, match="k must be"):
        usidgpu.svd(x, 11)
    with pytest.raises(ValueError, match="k must be"):
        usidgpu.svd(x, 0)
    with pytest.raises(ValueError, match="method must be"):
        usidgpu.svd(x, 2, method="magic")
    with pytest.raises(ValueError, match="2-D"):
        usidgpu.svd(np.zeros((3, 4, 5)), 2)
    with pytest.raises(TypeError, match="compound"):
        usidgpu.svd(np.zeros((4, 3), dtype=[("a", "f4"), ("b", "f4")]), 1)
    with pytest.raises(usidgpu.BudgetError, match="budget"):
        usidgpu.svd(low_rank(2000, 500), 5, method="gram", budget="1MB")
    with pytest.raises(usidgpu.BudgetError, match="exact SVD.*more than the memory budget"):
        usidgpu.svd(low_rank(2000, 500), 5, method="exact", budget="6MB")
    with pytest.raises(ValueError, match="engine"):
        usidgpu.svd(x, 2, engine="magic")


def test_cuml_engine_says_what_is_missing():
    pytest.importorskip("sklearn")
    import importlib.util

    if importlib.util.find_spec("cuml") is not None:
        pytest.skip("cuML is installed here")
    with pytest.raises(usidgpu.DeviceError, match="cuML"):
        usidgpu.svd(low_rank(30, 10), 2, engine="cuml")
    with pytest.raises(usidgpu.DeviceError, match="cuML"):
        usidgpu.kmeans(low_rank(30, 10), 2, engine="cuml")


# ------------------------------------------------------------------------------- k-means
def _blobs(n_per=150, k=5, d=24, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.random((k, d)) * 4
    x = np.concatenate([c + 0.5 * rng.standard_normal((n_per, d)) for c in centres])
    truth = np.repeat(np.arange(k), n_per)
    order = rng.permutation(len(x))
    return x[order], truth[order]


def test_kmeans_against_scikit_learn_from_the_same_centres():
    from sklearn.cluster import KMeans

    x, _truth = _blobs()
    rng = np.random.default_rng(1)
    init = x[rng.choice(len(x), 5, replace=False)]
    ref = KMeans(5, init=init, n_init=1, algorithm="lloyd").fit(x)
    r = usidgpu.kmeans(x, 5, init=init, device="cpu", budget="4MB")
    np.testing.assert_array_equal(r.labels, ref.labels_)
    np.testing.assert_allclose(r.centroids, ref.cluster_centers_, rtol=1e-10)
    assert r.inertia == pytest.approx(ref.inertia_, rel=1e-10)
    assert r.n_iter == ref.n_iter_
    np.testing.assert_allclose(r.mean_response, ref.cluster_centers_, rtol=1e-10)
    assert r.counts.sum() == len(x) and r.labels.dtype == np.uint32


def test_kmeans_plus_plus_recovers_clusters_from_a_file(tmp_path):
    from sklearn.metrics import adjusted_rand_score

    x, truth = _blobs(n_per=120, k=4, d=30, seed=5)
    make_file(
        tmp_path / "k.h5", data=x.astype(np.float32), pos=[Dimension("X", "µm", 480)], spec=[Dimension("E", "eV", 30)]
    )
    with usidgpu.open(tmp_path / "k.h5") as f:
        m = f.main_datasets()[0]
        raw = usidgpu.kmeans(m, 4, device="cpu", budget=30 * 4 * 100 * 4)
        scores = usidgpu.kmeans(m, 4, features="svd", n_components=4, device="cpu", budget="2MB")
    assert adjusted_rand_score(truth, raw.labels) == 1.0
    assert adjusted_rand_score(truth, scores.labels) == 1.0
    assert scores.centroids.shape == (4, 4) and scores.mean_response.shape == (4, 30)
    for r in (raw, scores):
        for c in range(4):
            np.testing.assert_allclose(r.mean_response[c], x[r.labels == c].mean(axis=0), rtol=1e-5)


def test_kmeans_refills_empty_clusters():
    x, _ = _blobs(n_per=50, k=3)
    init = np.stack([x[0], x[0] + 1e-9, np.full(x.shape[1], 1e6)])  # two useless centres
    r = usidgpu.kmeans(x, 3, init=init, device="cpu")
    assert (r.counts > 0).all()


# ----------------------------------------------------------------------------------- NMF
def _nmf_data(seed=0):
    rng = np.random.default_rng(seed)
    w = rng.gamma(2.0, size=(400, 4))
    h = np.abs(rng.standard_normal((4, 50)))
    x = w @ h + 0.01 * np.abs(rng.standard_normal((400, 50)))
    w0 = np.abs(rng.standard_normal((400, 4)))
    h0 = np.abs(rng.standard_normal((4, 50)))
    return x, w0, h0


@pytest.mark.parametrize("solver, sk_solver", [("hals", "cd"), ("mu", "mu")])
@pytest.mark.parametrize("iterations", [1, 20, 100])
def test_nmf_error_no_worse_than_scikit_learn(solver, sk_solver, iterations):
    from sklearn.decomposition import NMF

    x, w0, h0 = _nmf_data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = NMF(4, init="custom", solver=sk_solver, max_iter=iterations, tol=0)
        ref.fit_transform(x, W=w0.copy(), H=h0.copy())
    w_keep, h_keep = w0.copy(), h0.copy()
    r = usidgpu.nmf(x, 4, solver=solver, init=(w0, h0), max_iter=iterations, tol=0, device="cpu", budget="4MB")
    np.testing.assert_array_equal(w0, w_keep)  # the caller's initial factors are left alone
    np.testing.assert_array_equal(h0, h_keep)
    assert r.n_iter == iterations and len(r.errors) == iterations
    assert r.reconstruction_err <= ref.reconstruction_err_ * (1 + 1e-9)
    assert r.reconstruction_err == pytest.approx(np.linalg.norm(x - r.W @ r.H), rel=1e-9)
    assert (r.W >= 0).all() and (r.H >= 0).all()
    assert np.all(np.diff(r.errors) <= 1e-9 * r.errors[0])  # the error never increases


def test_nmf_nndsvda_and_convergence_on_a_file(tmp_path):
    x, _, _ = _nmf_data(seed=3)
    make_file(
        tmp_path / "n.h5", data=x.astype(np.float32), pos=[Dimension("X", "", 400)], spec=[Dimension("E", "eV", 50)]
    )
    with usidgpu.open(tmp_path / "n.h5") as f:
        r = usidgpu.nmf(f.main_datasets()[0], 4, device="cpu", budget="1MB", max_iter=500)
    assert r.n_iter < 500  # the relative-decrease test stopped it
    assert r.reconstruction_err / np.linalg.norm(x) < 0.01
    assert r.W.dtype == np.float32


def test_nmf_rejects_negative_and_complex_data():
    x, _, _ = _nmf_data()
    x[17, 3] = -2.5
    with pytest.raises(ValueError, match=r"non-negative.*-2.5.*position 17, point 3"):
        usidgpu.nmf(x, 3, device="cpu")
    with pytest.raises(ValueError, match="complex"):
        usidgpu.nmf(np.ones((10, 5), np.complex64), 2, device="cpu")
    with pytest.raises(ValueError, match="solver"):
        usidgpu.nmf(np.ones((10, 5)), 2, solver="als")
    with pytest.raises(ValueError, match="max_iter"):
        usidgpu.nmf(np.ones((10, 5)), 2, max_iter=0)
    y = np.abs(x)
    with pytest.raises(ValueError, match="non-negative"):
        usidgpu.nmf(y, 2, init=(-np.ones((400, 2)), np.ones((2, 50))), device="cpu")
    y[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        usidgpu.nmf(y, 2, device="cpu")


@pytest.mark.parametrize("offset", [100.0, 1000.0, 1e4])
@pytest.mark.parametrize("method", METHODS)
def test_float32_data_with_a_large_offset_keep_their_small_components(method, offset):
    x64 = low_rank(4000, 120, rank=6, seed=9) / 30 + offset  # spread ~1, mean far away
    x32 = x64.astype(np.float32)
    ref = x32.astype(np.float64)
    centred = ref - ref.mean(axis=0)
    _u, s_c, vh_c = np.linalg.svd(centred, full_matrices=False)
    p = usidgpu.pca(x32, 4, method=method, device="cpu")
    assert principal_sines(p.V, vh_c[:4]) < 1e-3
    np.testing.assert_allclose(p.S, s_c[:4], rtol=1e-4)
    _u, s, vh = np.linalg.svd(ref, full_matrices=False)
    r = usidgpu.svd(x32, 5, method=method, device="cpu")
    # uncentred, the offset is the first component; the Gram-based methods resolve the others to
    # about 1e-16·(S[0]/S[j])² relative (the documented squaring of the condition number)
    tol = 1e-4 + (0 if method == "exact" else 1e-15 * (s[0] / s[:5]) ** 2)
    assert np.all(np.abs(r.S - s[:5]) <= tol * s[:5])


def test_blocks_are_shifted_only_where_the_mean_outweighs_the_spread():
    x = (low_rank(3000, 80, rank=5, seed=3) / 30).astype(np.float32)  # spread ~1 around ~0
    src = BlockSource(x, "cpu", shift=True)
    assert not src.offset.any()
    assert all(np.shares_memory(block, x) for _a, _b, block in src.blocks())  # no copy made
    far = x + np.float32(1000)
    src = BlockSource(far, "cpu", shift=True)
    np.testing.assert_allclose(src.offset, far[:1024].mean(axis=0), rtol=1e-6)
    assert all(abs(float(block.mean())) < 1 for _a, _b, block in src.blocks())


@pytest.mark.parametrize("method", ["gram", "randomized"])
def test_unshifted_float32_data_keep_their_small_components(method):
    # a mean row just under the shift threshold (as large as the spread): read unshifted, the
    # components down to 1 % of the largest still come out as from float64 data
    rng = np.random.default_rng(4)
    m, n = 6000, 100
    basis = np.linalg.qr(rng.standard_normal((n, 6)))[0]
    x64 = (rng.standard_normal((m, 6)) * np.logspace(0, -2, 6)) @ basis.T
    x64 += rng.standard_normal(n) * np.sqrt(np.sum(x64.var(axis=0)) / n) * 0.95
    x32 = x64.astype(np.float32)
    assert not BlockSource(x32, "cpu", shift=True).offset.any()  # read as it is
    ref = x32.astype(np.float64)
    _u, s_c, vh_c = np.linalg.svd(ref - ref.mean(axis=0), full_matrices=False)
    p = usidgpu.pca(x32, 6, method=method, device="cpu")
    np.testing.assert_allclose(p.S, s_c[:6], rtol=1e-4)
    assert principal_sines(p.V, vh_c[:6]) < 1e-3


def test_finite_values_whose_sums_overflow_are_not_called_infinite():
    x = np.ones((64, 8), dtype=np.float32)
    x[:, 0] = 3e37  # finite; their float32 column sum is not
    blocks = list(BlockSource(x, "cpu").blocks())
    assert sum(b.shape[0] for _a, _b2, b in blocks) == 64
    x[10, 3] = np.inf
    with pytest.raises(ValueError, match="first at position 10"):
        list(BlockSource(x, "cpu").blocks())


def test_nan_and_inf_are_reported():
    x = low_rank(200, 30)
    x[5, 7] = np.nan
    for method in METHODS:
        with pytest.raises(ValueError, match="NaN or infinite"):
            usidgpu.svd(x, 2, method=method, device="cpu")


def test_constant_and_zero_data():
    for x in (np.zeros((300, 200)), np.full((300, 200), 3.0)):
        r = usidgpu.svd(x, 2, device="cpu")
        np.testing.assert_allclose(r.S, np.linalg.svd(x, compute_uv=False)[:2], atol=1e-9)


def test_randomized_with_a_single_pass_of_power():
    x = low_rank(500, 80, seed=3)
    r = usidgpu.svd(x, 3, method="randomized", n_iter=1, oversamples=20, device="cpu")
    np.testing.assert_allclose(r.S, np.linalg.svd(x, compute_uv=False)[:3], rtol=1e-3)
    with pytest.raises(ValueError, match="n_iter"):
        usidgpu.svd(x, 3, method="randomized", n_iter=0, device="cpu")


def test_kmeans_of_float32_data_far_from_the_origin():
    from sklearn.cluster import KMeans

    x, truth = _blobs(n_per=200, k=4, d=20, seed=8)
    x32 = (x + 1000).astype(np.float32)
    init = x32[np.random.default_rng(0).choice(len(x), 4, replace=False)].astype(np.float64)
    ref = KMeans(4, init=init, n_init=1, algorithm="lloyd").fit(x32.astype(np.float64))
    r = usidgpu.kmeans(x32, 4, init=init, device="cpu")
    np.testing.assert_array_equal(r.labels, ref.labels_)
    assert r.inertia == pytest.approx(ref.inertia_, rel=1e-4)
    np.testing.assert_allclose(r.centroids, ref.cluster_centers_, rtol=1e-6)


def test_kmeans_argument_and_data_errors():
    x, _ = _blobs(n_per=20, k=2, d=5)
    with pytest.raises(ValueError, match="n_components must be in"):
        usidgpu.kmeans(x, 2, features="svd", n_components=50, device="cpu")
    x[3, 2] = np.inf
    with pytest.raises(ValueError, match="NaN or infinite"):
        usidgpu.kmeans(x, 2, device="cpu")
