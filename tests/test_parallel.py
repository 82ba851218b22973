"""Processes on every executor: a user-written fit, the Gram SVD and block k-means give the same
results in this process, on threads and on a 2-worker dask LocalCluster — also when a worker is
killed mid-run — and the SVD/k-means groups read like those of usidgpu.svd/kmeans(...).write()."""

from __future__ import annotations

import os
import signal
import threading
import time

import h5py
import numpy as np
import pytest
from helpers import low_rank, make_file

import usidgpu
from usidgpu import Dimension
from usidgpu.decompose.blockwise import BlockKMeans, GramSVD
from usidgpu.decompose.blockwise import kmeans_blockwise as par_kmeans
from usidgpu.decompose.blockwise import svd_blockwise as par_svd
from usidgpu.parallel.fits import PolynomialFit

distributed = pytest.importorskip("distributed")

SOURCE = "/Measurement_000/Channel_000/Raw_Data"
BIAS = np.linspace(-1, 1, 25)


@pytest.fixture(scope="module")
def client():
    """One 2-worker LocalCluster (one thread each) for the whole module: starting one costs 2–3 s."""
    import cloudpickle
    import slow_process

    cloudpickle.register_pickle_by_value(slow_process)  # the workers have no tests/ on their path
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0", silence_logs=50
    )
    c = distributed.Client(cluster)
    try:
        yield c
    finally:
        c.close()
        cluster.close()
        cloudpickle.unregister_pickle_by_value(slow_process)


@pytest.fixture(params=["inline", "threads", "local"])
def executor(request, client):
    """``(scheduler, workers)`` of each executor; "local" is the module's 2-worker cluster."""
    return {"inline": (None, None), "threads": ("threads", 2), "local": (client, None)}[request.param]


# ------------------------------------------------------------------------------ data
def _grid(rows: int, cols: int) -> list[Dimension]:
    return [Dimension("Y", "µm", rows), Dimension("X", "µm", cols)]


@pytest.fixture(scope="module")
def fit_file(tmp_path_factory):
    """Cubic spectra with noise, 9 × 8 positions × 25 bias points (float32)."""
    rng = np.random.default_rng(0)
    coef = rng.standard_normal((72, 4))
    y = np.stack([np.polyval(c, BIAS) for c in coef]) + 0.05 * rng.standard_normal((72, BIAS.size))
    path = tmp_path_factory.mktemp("fit") / "fit.h5"
    make_file(path, y.astype(np.float32).reshape(9, 8, -1), pos=_grid(9, 8), spec=[Dimension("Bias", "V", BIAS)])
    return path, y.astype(np.float32)


@pytest.fixture(scope="module")
def svd_file(tmp_path_factory):
    """Low rank + noise with a large offset, 15 × 20 positions × 40 points, float64 and float32."""
    x = low_rank(300, 40, rank=6, seed=2) + 7.5
    path = tmp_path_factory.mktemp("svd") / "svd.h5"
    spec = [Dimension("Bias", "V", np.linspace(-1, 1, 40))]
    make_file(path, x.reshape(15, 20, 40), pos=_grid(15, 20), spec=spec)
    make_file(path, x.astype(np.float32).reshape(15, 20, 40), pos=_grid(15, 20), spec=spec, name="Raw_Data_f32")
    return path


@pytest.fixture(scope="module")
def km_file(tmp_path_factory):
    """Five clusters of spectra far from the origin, 20 × 20 positions × 30 points (float32)."""
    rng = np.random.default_rng(1)
    centres = 3 * rng.standard_normal((5, 30))
    truth = rng.integers(0, 5, 400)
    y = (centres[truth] + rng.standard_normal((400, 30)) + 100).astype(np.float32)
    path = tmp_path_factory.mktemp("km") / "km.h5"
    make_file(path, y.reshape(20, 20, 30), pos=_grid(20, 20), spec=[Dimension("Bias", "V", 30)])
    return path, y


def _read(path, group: str) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as h:
        return {name: ds[()] for name, ds in h[group].items()}


def _take(path, group: str) -> dict[str, np.ndarray]:
    """The datasets of a results group, which is then deleted: running the same computation
    again would otherwise return this group (as pyUSID's check_for_old) instead of computing."""
    data = _read(path, group)
    with h5py.File(path, "a") as h:
        del h[group]
    return data


def _layout(path, group: str) -> dict[str, tuple]:
    """Name → (shape, dtype) of every dataset of a results group, plus the dims of its Main datasets.

    ``completed_positions`` is left out: a Process records its one consolidation step there,
    usidgpu.svd/kmeans(...).write() every position (both say complete).
    """
    out = {}
    with usidgpu.open(path) as f, h5py.File(path, "r") as h:
        for name, ds in h[group].items():
            if name == "completed_positions":
                continue
            entry = (ds.shape, ds.dtype.str)
            if "Position_Indices" in ds.attrs:
                main = f[f"{group}/{name}"]
                entry += (
                    [(d.name, d.units, d.size) for d in main.pos_dims],
                    [(d.name, d.units, d.size) for d in main.spec_dims],
                    main.quantity,
                    main.units,
                )
            out[name] = entry
    return out


# ---------------------------------------------------------------------- user process
def _polyfit_run(path, degree, scheduler, workers, rows_per_block=7):
    with usidgpu.open(path) as f:
        fit = PolynomialFit(
            f[SOURCE], degree, scheduler=scheduler, workers=workers, rows_per_block=rows_per_block, progress=False
        )
        return fit.run()


def test_polynomial_fit_equals_polyfit_and_is_identical_on_every_executor(fit_file, client):
    path, y = fit_file
    with usidgpu.open(path) as f:
        bias = np.asarray(f[SOURCE].spec_dims[0].values, dtype=np.float64)  # as stored (float32)
    expected = np.stack([np.polyfit(bias, row.astype(np.float64), 3) for row in y])
    rms = np.sqrt(((y - np.stack([np.polyval(c, bias) for c in expected])) ** 2).mean(axis=1))
    results = {}
    # PolynomialFit pickles its scheduler (see test_plain_process_accepts_a_client): it reaches
    # the module's cluster through the scheduler's address (a Client of its own), not the Client
    runs = {
        "inline": (None, None),
        "threads": ("threads", 2),
        "local": ("local", 2),  # a LocalCluster of 2 worker processes started (and closed) by the run
        "address": (client.scheduler.address, None),
    }
    for name, (sched, workers) in runs.items():
        group = _polyfit_run(path, 3, sched, workers)
        results[name] = _take(path, group)
        np.testing.assert_allclose(results[name]["Coefficients"], expected, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(results[name]["Residual"][:, 0], rms, rtol=1e-9)
    for name in ("threads", "local", "address"):  # bitwise: the same blocks, the same arithmetic
        for out in ("Coefficients", "Residual"):
            np.testing.assert_array_equal(results[name][out], results["inline"][out], err_msg=f"{name} {out}")
    # no store is left behind
    assert not (path.parent / f"{path.name}.usidgpu").exists()


def test_plain_process_accepts_a_client(fit_file, client):
    path, _y = fit_file
    group = _polyfit_run(path, 1, client, None)
    assert _take(path, group)["Coefficients"].shape == (72, 2)


# ------------------------------------------------------------------------------ SVD
def test_gram_svd_equals_usidgpu_svd_on_every_executor(svd_file, executor):
    scheduler, workers = executor
    with usidgpu.open(svd_file) as f:
        ref = usidgpu.svd(f[SOURCE], 5, method="gram")
    with usidgpu.open(svd_file) as f:
        group = par_svd(f[SOURCE], 5, scheduler=scheduler, workers=workers, rows_per_block=37, progress=False)
    with h5py.File(svd_file, "r") as h:
        x = h[SOURCE][()]
        assert h[group].attrs["total_energy"] == pytest.approx(float((x**2).sum()), rel=1e-12)
    got = _take(svd_file, group)
    np.testing.assert_allclose(got["S"], ref.S, rtol=1e-10)
    # the same sign convention: the largest entry of each row of V is positive — compare signed
    assert (got["V"][np.arange(5), np.abs(got["V"]).argmax(axis=1)] > 0).all()
    np.testing.assert_allclose(got["V"], ref.V, rtol=0, atol=1e-10)
    np.testing.assert_allclose(got["U"], ref.U, rtol=0, atol=1e-10)
    # U·S·V reproduces the data's rank-5 part
    resid = x - (got["U"] * got["S"]) @ got["V"]
    assert np.linalg.norm(resid) <= 1.0001 * np.sqrt((np.linalg.svd(x, compute_uv=False)[5:] ** 2).sum())


def test_gram_svd_bitwise_across_executors_and_group_layout(svd_file, client):
    name = SOURCE + "_f32"
    keys = ("tool", "num_components", "svd_method", "usidgpu_parameters", "usidgpu_status", "source_dataset")
    runs = {}
    for label, (sched, workers) in {"inline": (None, None), "threads": ("threads", 2), "local": (client, None)}.items():
        with usidgpu.open(svd_file) as f:
            group = par_svd(f[name], 4, scheduler=sched, workers=workers, rows_per_block=64, progress=False)
        if label == "inline":
            layout = _layout(svd_file, group)
            with h5py.File(svd_file, "r") as h:
                attrs = {key: h[group].attrs[key] for key in keys}
            assert usidgpu.validate(svd_file) == []
        runs[label] = _take(svd_file, group)
    for label in ("threads", "local"):
        for ds in ("U", "S", "V"):
            np.testing.assert_array_equal(runs[label][ds], runs["inline"][ds], err_msg=f"{label} {ds}")
    with usidgpu.open(svd_file) as f:
        ref = usidgpu.svd(f[name], 4, method="gram")
        ref_group = ref.write()
    assert layout == _layout(svd_file, ref_group)
    with h5py.File(svd_file, "r") as h:
        assert attrs == {key: h[ref_group].attrs[key] for key in keys}
    np.testing.assert_allclose(runs["inline"]["S"], ref.S, rtol=1e-5)  # float32: usidgpu.svd has float32 products


def test_gram_svd_resumes_after_an_interruption(svd_file, monkeypatch):
    """A run that fails after some blocks leaves a partial store; the rerun computes only the
    missing blocks (the reduction is redone) and equals an uninterrupted run bitwise."""
    with usidgpu.open(svd_file) as f:
        full = _take(svd_file, par_svd(f[SOURCE], 3, rows_per_block=40, progress=False))
    calls = []
    compute = GramSVD.compute

    def failing(self, block, xp):
        calls.append(block.shape[0])
        if len(calls) == 4:
            raise KeyboardInterrupt("interrupted")
        return compute(self, block, xp)

    monkeypatch.setattr(GramSVD, "compute", failing)
    with usidgpu.open(svd_file) as f, pytest.raises(KeyboardInterrupt):
        par_svd(f[SOURCE], 3, rows_per_block=40, progress=False)
    monkeypatch.setattr(GramSVD, "compute", compute)
    stores = list((svd_file.parent / f"{svd_file.name}.usidgpu").glob("*.zarr"))
    assert len(stores) == 1 and len(list((stores[0] / "done").iterdir())) == 3
    counted = []
    monkeypatch.setattr(GramSVD, "compute", lambda self, b, xp: counted.append(1) or compute(self, b, xp))
    with usidgpu.open(svd_file) as f:
        again = _take(svd_file, par_svd(f[SOURCE], 3, rows_per_block=40, progress=False))
    assert len(counted) == 8 - 3  # 300 rows in blocks of 40: 8 blocks, 3 were done
    for ds in ("U", "S", "V"):
        np.testing.assert_array_equal(again[ds], full[ds])


# --------------------------------------------------------------------------- k-means
def test_block_kmeans_equals_usidgpu_kmeans_on_every_executor(km_file, executor):
    path, _y = km_file
    scheduler, workers = executor
    with usidgpu.open(path) as f:
        ref = usidgpu.kmeans(f[SOURCE], 5, random_state=3)
    with usidgpu.open(path) as f:
        km = BlockKMeans(
            f[SOURCE], 5, random_state=3, scheduler=scheduler, workers=workers, rows_per_block=33, progress=False
        )
        group = km.run()
    with h5py.File(path, "r") as h:
        assert h[group].attrs["inertia"] == pytest.approx(ref.inertia, rel=1e-6)
        assert h[group].attrs["n_iter"] == ref.n_iter
    got = _take(path, group)
    np.testing.assert_array_equal(got["Labels"][:, 0], ref.labels)
    np.testing.assert_allclose(got["Centroids"], ref.centroids, rtol=1e-6)
    np.testing.assert_allclose(got["Mean_Response"], ref.mean_response, rtol=1e-6)
    np.testing.assert_array_equal(got["Counts"], ref.counts)
    assert km.n_iter == ref.n_iter and km.strict_convergence == ref.parameters["strict_convergence"]


def test_block_kmeans_bitwise_across_executors_and_group_layout(km_file, client):
    path, _y = km_file
    runs = {}
    for label, (sched, workers) in {"inline": (None, None), "threads": ("threads", 2), "local": (client, None)}.items():
        with usidgpu.open(path) as f:
            group = par_kmeans(
                f[SOURCE], 4, init="random", random_state=5, scheduler=sched, workers=workers, rows_per_block=50,
                progress=False,
            )  # fmt: skip
        if label == "inline":
            layout = _layout(path, group)
            assert usidgpu.validate(path) == []
        runs[label] = _take(path, group)
    first = runs["inline"]
    for label in ("threads", "local"):
        for ds in first:
            np.testing.assert_array_equal(runs[label][ds], first[ds], err_msg=f"{label} {ds}")
    with usidgpu.open(path) as f:
        ref = usidgpu.kmeans(f[SOURCE], 4, init="random", random_state=5)
        ref_group = ref.write()
    assert layout == _layout(path, ref_group)
    np.testing.assert_array_equal(first["Labels"][:, 0], ref.labels)
    np.testing.assert_allclose(first["Centroids"], ref.centroids, rtol=1e-6)


def test_block_kmeans_from_given_centres_refills_an_empty_cluster(km_file):
    path, y = km_file
    init = y[[0, 1, 2, 3]].astype(np.float64)
    init[3] = 1e4  # no position is nearest to it: refilled with the farthest point, as usidgpu.kmeans
    with usidgpu.open(path) as f:
        ref = usidgpu.kmeans(f[SOURCE], 4, init=init, max_iter=20)
    with usidgpu.open(path) as f:
        km = BlockKMeans(f[SOURCE], 4, init=init, max_iter=20, rows_per_block=64, progress=False)
        group = km.run()
    got = _take(path, group)
    assert (ref.counts > 0).all()
    np.testing.assert_array_equal(got["Labels"][:, 0], ref.labels)
    np.testing.assert_allclose(got["Centroids"], ref.centroids, rtol=1e-6)
    assert km.n_iter == ref.n_iter
    assert km.parameters()["init"] == init.tolist()  # what a resume rebuilds the process from


def test_process_parameters_rebuild_the_process(svd_file, km_file):
    with usidgpu.open(svd_file) as f:
        svd = GramSVD(f[SOURCE], 4)
        again = GramSVD.from_parameters(f[SOURCE], svd.parameters())
        assert again.k == 4 and again.fingerprint() == svd.fingerprint()
        with pytest.raises(ValueError, match="k must be"):
            GramSVD(f[SOURCE], 41)
    path, _y = km_file
    with usidgpu.open(path) as f:
        km = BlockKMeans(f[SOURCE], 3, init="random", random_state=7, tol=1e-3)
        again = BlockKMeans.from_parameters(f[SOURCE], km.parameters())
        assert again.fingerprint() == km.fingerprint()
        with pytest.raises(ValueError, match="features"):
            BlockKMeans(f[SOURCE], 3, features="svd")
        drawn = BlockKMeans(f[SOURCE], 3, random_state=None).parameters()["random_state"]
        assert isinstance(drawn, int)  # a seed is drawn and recorded: a resume starts from the same centres


# ------------------------------------------------------------------ a worker killed
def test_worker_killed_mid_run_still_completes_and_matches(fit_file, client):
    from slow_process import SlowFit

    path, _y = fit_file
    expected = _take(path, _polyfit_run(path, 2, None, None, rows_per_block=4))  # the same blocks
    client.wait_for_workers(2, timeout=30)
    pids = client.run(os.getpid)
    victim_addr, victim = sorted(pids.items())[0]
    with usidgpu.open(path) as f:
        fit = SlowFit(f[SOURCE], 2, delay=0.15, scheduler=client, rows_per_block=4, progress=False)  # 18 blocks
        done_dir = fit.store_path() / "done"
        n_blocks = len(fit.blocks())
        seen = {}

        def kill_when_running():
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                n = len(list(done_dir.iterdir())) if done_dir.is_dir() else 0
                if n >= 2:
                    seen["done_at_kill"] = n
                    os.kill(victim, signal.SIGKILL)
                    return
                time.sleep(0.01)

        killer = threading.Thread(target=kill_when_running, daemon=True)
        killer.start()
        group = fit.run()
        killer.join()
    assert 2 <= seen["done_at_kill"] < n_blocks, seen  # killed while blocks were still in flight
    assert victim not in client.run(os.getpid).values()  # the worker did die (its nanny restarts one)
    got = _take(path, group)
    for out in ("Coefficients", "Residual"):
        np.testing.assert_array_equal(got[out], expected[out])


def test_the_old_block_wise_names_still_work_and_warn():
    import usidgpu.parallel
    import usidgpu.parallel.decompose as old

    with pytest.warns(DeprecationWarning, match="usidgpu.decompose.blockwise.svd_blockwise"):
        assert old.svd is par_svd
    with pytest.warns(DeprecationWarning, match="usidgpu.decompose.blockwise.GramSVD"):
        assert usidgpu.parallel.GramSVD is GramSVD
    with pytest.warns(DeprecationWarning, match="usidgpu.denoise.blockwise.windowed_svd_blockwise"):
        assert callable(usidgpu.parallel.windowed_svd)
    # a run stored under the old class path still loads (resume after an upgrade)
    with pytest.warns(DeprecationWarning):
        assert usidgpu.parallel.load_class("usidgpu.parallel.decompose:GramSVD") is GramSVD
