#!/usr/bin/env python
"""Streamed decompositions (SVD/PCA, k-means, NMF) of USID Main datasets: usidgpu vs scikit-learn.

Everything runs in one process on the same data, repetitions interleaved (the order rotates
from one repetition to the next), one untimed warm-up per case, medians reported:

1. **SVD / PCA** of X = 65536 × 1024 float32, k = 16 (``/work/shared/reference/baselines.md``
   §1): rank-16 signal with singular values 800·0.8ⁱ plus 0.05·N(0, 1) noise, written with
   ``usidgpu.write_main`` (positions Y × X = 256 × 256, one spectroscopic dimension) into a
   temporary file on the repository's disk. usidgpu ``svd`` (gram, randomized, auto) and
   ``pca`` read the HDF5 file (open included in the timing); scikit-learn ``randomized_svd``,
   ``TruncatedSVD``, ``PCA(randomized)`` and ``PCA(covariance_eigh)`` run on X in memory, timed
   both compute-only and including the h5py load of X. Accuracy of every method: maximum
   relative error of the 16 singular values against the exact ones (float64 Gram + ``eigh``,
   centred for PCA) and the sine of the largest principal angle between the recovered and the
   true right singular subspace.
2. **k-means** (k = 8) on 8 smooth three-peak spectra with ±10 % amplitude jitter and σ = 0.15
   noise (baselines §3): raw spectra with the same initial centres for both libraries, each
   library's own k-means++, and clustering of 16 SVD/PCA scores. **NMF** (k = 8) of
   W (16384 × 8, Gamma) · H (8 × 1024, Gaussian peaks) + |noise| from the same initial factors
   (scikit-learn's NNDSVDa) for a fixed number of iterations: HALS vs scikit-learn ``cd``, MU vs
   scikit-learn ``mu``.
3. **Larger than the memory budget**: a ``--ooc-size-gib`` file (default 2 GiB) decomposed by
   ``usidgpu.svd(budget=--ooc-budget)`` in a spawned child whose peak RSS growth is measured
   (VmHWM after resetting it through /proc/self/clear_refs), and scikit-learn's
   ``randomized_svd`` of the h5py-loaded array in a child whose memory growth is capped at the
   same size with ``setrlimit`` (RLIMIT_DATA by default); the same cap is applied to a usidgpu
   control run.
4. ``--device gpu``: the usidgpu calls run with ``device="gpu"`` and each is divided by the time of
   one plain streamed pass ``MainDataset.blocks(device="gpu")`` (target ≤ 2); the JSON names the
   GPU. Without a usable GPU the script exits with a one-line error.

Results go to ``benchmarks/results/decompose_<device>.json``. Timings are warm page-cache
numbers (the files were just written).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import resource
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from harness import (
    Case,
    _json_default,
    _peak,
    _r,
    _reset_peak,
    announce,
    results_header,
    run_child,
    run_interleaved,
    start_run,
)
from machine import status_bytes, versions

REPO = Path(__file__).resolve().parents[1]
DEFAULT_TMP = REPO / "bench_tmp"
RESULTS = Path(__file__).resolve().parent / "results"
DSET_PATH = "Measurement_000/Channel_000/Raw_Data"
MB = 1000**2
MiB = 1024**2
GiB = 1024**3


# ---------------------------------------------------------------------------------- helpers
def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _grid(m: int) -> tuple[int, int]:
    """Y × X position grid with Y·X = m, as square as possible."""
    nx = 2 ** math.ceil(math.log2(math.sqrt(m))) if m & (m - 1) == 0 else int(round(math.sqrt(m)))
    while m % nx:
        nx -= 1
    return m // nx, nx


def write_usid(
    path: Path, data: np.ndarray | None, shape: tuple[int, int], quantity: str, units: str
) -> dict[str, Any]:
    """Write a float32 USID Main dataset (positions Y × X, spectroscopic Bias) with usidgpu.write_main.

    With ``data`` None an empty dataset is created and returned open (for write_rows); otherwise
    the data are written and the file closed.
    """
    import h5py

    import usidgpu
    from usidgpu import Dimension

    m, n = shape
    ny, nx = _grid(m)
    f = h5py.File(path, "w")
    grp = f.require_group("Measurement_000/Channel_000")
    ds = usidgpu.write_main(
        grp,
        "Raw_Data",
        data if data is not None else (m, n),
        quantity,
        units,
        [Dimension("Y", "nm", np.arange(ny) * 0.5), Dimension("X", "nm", np.arange(nx) * 0.5)],
        [Dimension("Bias", "V", np.linspace(-1, 1, n))],
        dtype=np.float32,
    )
    info = {
        "path": str(path),
        "dataset": "/" + DSET_PATH,
        "shape": [m, n],
        "pos_dims": {"Y": ny, "X": nx},
        "spec_dims": {"Bias": n},
        "dtype": "float32",
        "chunks": list(ds.chunks) if ds.chunks else None,
        "nbytes": m * n * 4,
    }
    if data is None:
        return {"info": info, "file": f, "ds": ds}
    f.close()
    _fsync(path)
    return {"info": info}


def read_pass_case(path: Path, dev: str) -> Case:
    """One plain streamed pass over the file (the read time that decompositions are compared with)."""
    import usidgpu

    def run() -> int:
        rows = 0
        with usidgpu.open(path) as f:
            for blk in f[DSET_PATH].blocks(device=dev):
                rows += blk.stop - blk.start
        return rows

    return Case(run, f"usidgpu.open + one MainDataset.blocks(device='{dev}') pass, no compute")


# ---------------------------------------------------------------------------------- accuracy
def sin_largest_angle(v_rec: np.ndarray, q_true: np.ndarray) -> float:
    """Sine of the largest principal angle between span(v_rec rows) and span(q_true columns)."""
    q, _ = np.linalg.qr(np.asarray(v_rec, dtype=np.float64).T)
    resid = q - q_true @ (q_true.T @ q)
    return float(np.linalg.norm(resid, 2))


def sigma_error(s: np.ndarray, exact: np.ndarray) -> float:
    s = np.asarray(s, dtype=np.float64)[: len(exact)]
    return float(np.max(np.abs(s - exact) / exact))


def exact_reference(x: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """Exact top-k singular values / right vectors, uncentred and centred: float64 Gram + eigh."""
    m, n = x.shape
    g = np.zeros((n, n))
    colsum = np.zeros(n)
    step = 8192
    for a in range(0, m, step):
        xb = x[a : a + step].astype(np.float64)
        g += xb.T @ xb
        colsum += xb.sum(axis=0)
    mu = colsum / m
    out = {}
    for name, gm in (("svd", g), ("pca", g - m * np.outer(mu, mu))):
        vals, vecs = np.linalg.eigh(gm)
        out[f"{name}_S"] = np.sqrt(np.maximum(vals[::-1][:k], 0))
        out[f"{name}_V"] = vecs[:, ::-1][:, :k].T
    return out


# ---------------------------------------------------------------------------------- data
def svd_data(m: int, n: int, k: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """X = U·diag(s)·Vᵀ + noise·N(0, 1), s = 800·0.8ⁱ (baselines.md §1); returns X, s, V (n × k)."""
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.standard_normal((m, k)))
    v, _ = np.linalg.qr(rng.standard_normal((n, k)))
    s = 800.0 * 0.8 ** np.arange(k)
    x = ((u * s) @ v.T).astype(np.float32)
    x += noise * rng.standard_normal((m, n), dtype=np.float32)
    return x, s, v


def kmeans_data(m: int, n: int, n_clusters: int, seed: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """8 smooth spectra (three Gaussian peaks each); each position one of them with ±10 % amplitude
    jitter and σ = 0.15 Gaussian noise (baselines.md §3)."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, n)
    centres = rng.uniform(0.05, 0.95, (n_clusters, 3))
    widths = rng.uniform(0.02, 0.08, (n_clusters, 3))
    amps = rng.uniform(0.5, 1.5, (n_clusters, 3))
    spectra = np.zeros((n_clusters, n))
    for c in range(n_clusters):
        for j in range(3):
            spectra[c] += amps[c, j] * np.exp(-0.5 * ((t - centres[c, j]) / widths[c, j]) ** 2)
    labels = rng.integers(0, n_clusters, m)
    jitter = rng.uniform(0.9, 1.1, (m, 1)).astype(np.float32)
    x = spectra.astype(np.float32)[labels] * jitter
    x += 0.15 * rng.standard_normal((m, n), dtype=np.float32)
    recipe = {
        "spectra": f"{n_clusters} spectra, 3 Gaussian peaks each: centre U(0.05, 0.95), width U(0.02, 0.08), "
        "amplitude U(0.5, 1.5) on t ∈ [0, 1]",
        "labels": "uniform random over the clusters, per position",
        "jitter": "amplitude × U(0.9, 1.1) per position",
        "noise_sigma": 0.15,
    }
    return x, labels, recipe


def nmf_data(m: int, n: int, k: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """X = W·H + |noise·N(0, 1)|, W Gamma(2, 0.5), H rows two Gaussian peaks each (baselines.md §3)."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, n)
    w = rng.gamma(2.0, 0.5, (m, k))
    h = np.zeros((k, n))
    centres = np.linspace(0.08, 0.92, k)
    for j in range(k):
        h[j] = np.exp(-0.5 * ((t - centres[j]) / rng.uniform(0.02, 0.05)) ** 2)
        h[j] += 0.5 * np.exp(-0.5 * ((t - rng.uniform(0.05, 0.95)) / rng.uniform(0.03, 0.08)) ** 2)
    x = (w @ h).astype(np.float32)
    x += np.abs(noise * rng.standard_normal((m, n), dtype=np.float32))
    recipe = {
        "W": f"{m}×{k} Gamma(shape 2, scale 0.5)",
        "H": f"{k}×{n}: a Gaussian peak (centres evenly spaced, width U(0.02, 0.05)) + a half-height "
        "peak at a random place (width U(0.03, 0.08)) per row",
        "noise": f"|{noise}·N(0, 1)| added",
    }
    return x, w, h, recipe


# ---------------------------------------------------------------------------------- section 1
def _fitted_with_scores(model: Any, x: np.ndarray) -> Any:
    """``model.fit_transform(x)``, returning the fitted model (its scores kept on it)."""
    model.scores_ = model.fit_transform(x)
    return model


def bench_svd(args: argparse.Namespace, dev: str, sync: Callable[[], None], log: Callable[[str], None]) -> dict:
    import h5py
    from sklearn.decomposition import PCA, TruncatedSVD
    from sklearn.utils.extmath import randomized_svd

    import usidgpu

    k, m, n = args.k, args.svd_rows, args.n_spec
    t0 = time.perf_counter()
    x, s_true, v_true = svd_data(m, n, k, args.noise, args.seed)
    gen_s = time.perf_counter() - t0
    path = args.tmp_dir / f"bench_decompose_svd_{os.getpid()}.h5"
    t0 = time.perf_counter()
    info = write_usid(path, x, (m, n), "Intensity", "a.u.")["info"]
    info.update(
        data=f"rank-{k} signal, singular values 800·0.8^i (i = 0..{k - 1}), plus {args.noise}·N(0,1) noise",
        generate_s=round(gen_s, 2),
        write_s=round(time.perf_counter() - t0, 2),
    )
    log(f"[svd] X {m}×{n} float32 ({x.nbytes / MiB:.0f} MiB) written to {path}")
    try:
        ref = exact_reference(x, k)
        floor = sin_largest_angle(ref["svd_V"], v_true)
        reference = {
            "how": "float64 Gram XᵀX (centred for PCA) + numpy.linalg.eigh, computed once",
            "S_exact": [_r(v, 8) for v in ref["svd_S"]],
            "S_exact_centred": [_r(v, 8) for v in ref["pca_S"]],
            "S_signal": [_r(v, 6) for v in s_true],
            "noise_floor_sin_angle": _r(floor),
            "noise_floor_sin_angle_centred": _r(sin_largest_angle(ref["pca_V"], v_true)),
        }

        def acc(centred: bool) -> Callable[[Any], dict]:
            exact = ref["pca_S" if centred else "svd_S"]

            def f(out: Any) -> dict:
                if isinstance(out, tuple):  # randomized_svd → (U, S, Vt)
                    s, v = out[1], out[2]
                elif hasattr(out, "singular_values_"):  # scikit-learn estimators
                    s, v = out.singular_values_, out.components_
                else:  # usidgpu results
                    s, v = out.S, out.V
                d = {
                    "centred": centred,
                    "sigma_max_rel_err": _r(sigma_error(s, exact), 3),
                    "sin_angle": _r(sin_largest_angle(v, v_true)),
                }
                if hasattr(out, "method") and isinstance(out.method, str):
                    d["usidgpu_method"] = out.method
                    d["method_reason"] = out.parameters.get("method_reason")
                return d

            return f

        def from_file(fn: Callable[[Any], Any]) -> Callable[[], Any]:
            def run() -> Any:
                with usidgpu.open(path) as f:
                    return fn(f[DSET_PATH])

            return run

        def load() -> np.ndarray:
            with h5py.File(path, "r") as f:
                return f[DSET_PATH][()]

        rs = args.seed
        sk = {
            "randomized_svd": (
                lambda a: randomized_svd(a, k, random_state=rs),
                False,
                "randomized_svd(X, 16), n_iter auto (7)",
            ),
            "TruncatedSVD": (
                lambda a: TruncatedSVD(k, random_state=rs).fit(a),
                False,
                "TruncatedSVD(16).fit(X) (randomized, n_iter 5)",
            ),
            "PCA_randomized": (
                lambda a: PCA(k, svd_solver="randomized", random_state=rs).fit(a),
                True,
                "PCA(16, svd_solver='randomized').fit(X)",
            ),
            "PCA_covariance_eigh": (
                lambda a: PCA(k, svd_solver="covariance_eigh").fit(a),
                True,
                "PCA(16, svd_solver='covariance_eigh').fit(X)",
            ),
            "PCA_covariance_eigh_fit_transform": (
                lambda a: _fitted_with_scores(PCA(k, svd_solver="covariance_eigh"), a),
                True,
                "PCA(16, svd_solver='covariance_eigh').fit_transform(X) (components and scores, as usidgpu.pca)",
            ),
        }
        cases: dict[str, Case] = {
            "read_pass": read_pass_case(path, dev),
            "h5py_load": Case(load, "h5py.File + dset[()] of X (what a scikit-learn user does first)"),
        }
        for meth in ("gram", "randomized", "auto"):
            cases[f"usidgpu_svd_{meth}"] = Case(
                from_file(lambda d, meth=meth: usidgpu.svd(d, k, method=meth, device=dev, random_state=rs)),
                f"usidgpu.open + usidgpu.svd(ds, 16, method='{meth}', device='{dev}') from the HDF5 file",
                acc(False),
            )
        cases["usidgpu_svd_auto_streamed"] = Case(
            from_file(lambda d: usidgpu.svd(d, k, device=dev, budget=args.svd_stream_budget, random_state=rs)),
            f"usidgpu.open + usidgpu.svd(ds, 16, device='{dev}', budget='{args.svd_stream_budget}'): a budget under "
            "which the data are not kept resident, so both passes stream from the file",
            acc(False),
        )
        cases["usidgpu_pca"] = Case(
            from_file(lambda d: usidgpu.pca(d, k, device=dev, random_state=rs)),
            f"usidgpu.open + usidgpu.pca(ds, 16, device='{dev}') (auto) from the HDF5 file",
            acc(True),
        )
        cases["usidgpu_svd_auto_in_memory"] = Case(
            lambda: usidgpu.svd(x, k, device=dev, random_state=rs),
            f"usidgpu.svd(X, 16, device='{dev}') on the in-memory NumPy array (compute only)",
            acc(False),
        )
        cases["usidgpu_pca_in_memory"] = Case(
            lambda: usidgpu.pca(x, k, device=dev, random_state=rs),
            f"usidgpu.pca(X, 16, device='{dev}') on the in-memory NumPy array (compute only; components and scores)",
            acc(True),
        )
        for name, (fn, centred, desc) in sk.items():
            cases[f"sklearn_{name}"] = Case(lambda fn=fn: fn(x), desc + " on X in memory (compute only)", acc(centred))
            cases[f"sklearn_{name}_with_load"] = Case(
                lambda fn=fn: fn(load()), "h5py load of X + " + desc, acc(centred)
            )
        log(f"[svd] {len(cases)} cases × {args.svd_repeats} repetitions (+1 warm-up), interleaved")
        timings, metrics = run_interleaved(cases, args.svd_repeats, sync, log)
    finally:
        if not args.keep_files and path.exists():
            path.unlink()

    med = {n: t["median_s"] for n, t in timings.items()}
    ratios: dict[str, Any] = {}
    usid_cases = [n for n in cases if n.startswith("usidgpu_")]
    for u in usid_cases:
        ratios[f"randomized_svd_compute_only / {u}"] = round(med["sklearn_randomized_svd"] / med[u], 3)
        ratios[f"randomized_svd_with_load / {u}"] = round(med["sklearn_randomized_svd_with_load"] / med[u], 3)
    ratios["PCA_covariance_eigh_compute_only / usidgpu_pca"] = round(
        med["sklearn_PCA_covariance_eigh"] / med["usidgpu_pca"], 3
    )
    ratios["PCA_covariance_eigh_with_load / usidgpu_pca"] = round(
        med["sklearn_PCA_covariance_eigh_with_load"] / med["usidgpu_pca"], 3
    )
    ratios["PCA_randomized_compute_only / usidgpu_pca"] = round(med["sklearn_PCA_randomized"] / med["usidgpu_pca"], 3)
    # compute only on both sides: X in memory for both (scikit-learn's fit computes the components
    # only; fit_transform adds the scores, which usidgpu.pca always returns)
    for sk_case in ("PCA_covariance_eigh", "PCA_covariance_eigh_fit_transform"):
        ratios[f"{sk_case}_compute_only / usidgpu_pca_in_memory"] = round(
            med[f"sklearn_{sk_case}"] / med["usidgpu_pca_in_memory"], 3
        )
    over_read: dict[str, Any] = {
        f"{u} / read_pass": round(med[u] / med["read_pass"], 2) for u in usid_cases if not u.endswith("_in_memory")
    }
    over_read["target"] = "usidgpu time ≤ 2 × one streamed read pass (a --device gpu target)"
    over_read["met_by_svd_auto"] = bool(med["usidgpu_svd_auto"] <= 2 * med["read_pass"])
    # target: usidgpu svd (auto, from the file) ≥ 2× faster than randomized_svd at equal or better accuracy
    ref_acc = metrics["sklearn_randomized_svd"]
    target = {}
    for u in ("usidgpu_svd_auto", "usidgpu_svd_gram", "usidgpu_svd_randomized", "usidgpu_svd_auto_streamed"):
        a = metrics[u]
        acc_ok = (
            a["sigma_max_rel_err"] <= max(ref_acc["sigma_max_rel_err"], 1e-5)
            and a["sin_angle"] <= ref_acc["sin_angle"] + 1e-4
        )
        strict = med["sklearn_randomized_svd"] / med[u]
        loaded = med["sklearn_randomized_svd_with_load"] / med[u]
        target[u] = {
            "speedup_vs_randomized_svd_compute_only": round(strict, 3),
            "speedup_vs_randomized_svd_with_load": round(loaded, 3),
            "accuracy_equal_or_better": bool(acc_ok),
            "met_strict (compute-only)": bool(acc_ok and strict >= 2),
            "met_with_load": bool(acc_ok and loaded >= 2),
        }
    return {
        "dataset": info,
        "parameters": {"k": k, "repeats": args.svd_repeats, "random_state": args.seed, "device": dev},
        "reference": reference,
        "timings": timings,
        "accuracy": metrics,
        "ratios": ratios,
        "time_over_read_pass": over_read,
        "target": {
            "statement": "usidgpu SVD ≥ 2× faster than sklearn randomized_svd at equal or better accuracy",
            "accuracy_rule": "σ error ≤ max(randomized_svd's, 1e-5) and sin∠ ≤ randomized_svd's + 1e-4",
            "results": target,
        },
    }


# ---------------------------------------------------------------------------------- section 2
def match_components(h: np.ndarray, h_true: np.ndarray) -> float:
    """Mean correlation of NMF spectra with the true ones after the best one-to-one matching."""
    from scipy.optimize import linear_sum_assignment

    a = (h - h.mean(1, keepdims=True)) / (h.std(1, keepdims=True) + 1e-30)
    b = (h_true - h_true.mean(1, keepdims=True)) / (h_true.std(1, keepdims=True) + 1e-30)
    corr = a @ b.T / h.shape[1]
    rows, cols = linear_sum_assignment(-corr)
    return float(corr[rows, cols].mean())


def bench_kmeans(args: argparse.Namespace, dev: str, sync: Callable[[], None], log: Callable[[str], None]) -> dict:
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from sklearn.metrics import adjusted_rand_score

    import usidgpu

    kc, m, n = args.clusters, args.kmeans_rows, args.n_spec
    x, truth, recipe = kmeans_data(m, n, kc, args.seed + 1)
    path = args.tmp_dir / f"bench_decompose_kmeans_{os.getpid()}.h5"
    info = write_usid(path, x, (m, n), "Intensity", "a.u.")["info"]
    info["recipe"] = recipe
    rng = np.random.default_rng(args.seed + 2)
    init_rows = np.sort(rng.choice(m, size=kc, replace=False))
    c0 = x[init_rows].copy()
    log(f"[kmeans] X {m}×{n} float32 written to {path}; shared initial centres = rows {init_rows.tolist()}")
    rs = args.seed
    try:

        def from_file(**kw: Any) -> Callable[[], Any]:
            def run() -> Any:
                with usidgpu.open(path) as f:
                    return usidgpu.kmeans(f[DSET_PATH], kc, device=dev, random_state=rs, **kw)

            return run

        def km(out: Any) -> dict:
            if hasattr(out, "labels_"):  # scikit-learn estimator
                labels, n_it, inertia = out.labels_, out.n_iter_, out.inertia_
            else:  # usidgpu KMeansResult
                labels, n_it, inertia = out.labels, out.n_iter, out.inertia
            return {
                "n_iter": int(n_it),
                "ari_vs_truth": _r(adjusted_rand_score(truth, labels), 6),
                "inertia": _r(float(inertia), 8),
                "labels": np.asarray(labels),
            }

        def sk_pca_kmeans(solver: str) -> Callable[[], Any]:
            def run() -> Any:
                kw = {"random_state": rs} if solver == "randomized" else {}
                scores = PCA(16, svd_solver=solver, **kw).fit_transform(x)
                return KMeans(kc, n_init=1, random_state=rs).fit(scores)

            return run

        cases = {
            "read_pass": read_pass_case(path, dev),
            "usidgpu_raw_same_init": Case(
                from_file(init=c0), f"usidgpu.kmeans(ds, {kc}, init=C0, device='{dev}') from the HDF5 file", km
            ),
            "sklearn_raw_same_init": Case(
                lambda: KMeans(kc, init=c0, n_init=1, algorithm="lloyd").fit(x),
                f"KMeans({kc}, init=C0, n_init=1, algorithm='lloyd').fit(X) in memory",
                km,
            ),
            "usidgpu_raw_kmeanspp": Case(
                from_file(), f"usidgpu.kmeans(ds, {kc}) (own k-means++), from the HDF5 file", km
            ),
            "sklearn_raw_kmeanspp": Case(
                lambda: KMeans(kc, n_init=1, random_state=rs).fit(x),
                f"KMeans({kc}, n_init=1) (own k-means++) on X in memory",
                km,
            ),
            "usidgpu_svd_features": Case(
                from_file(features="svd", n_components=16),
                f"usidgpu.kmeans(ds, {kc}, features='svd', n_components=16): SVD scores then k-means, from the file",
                km,
            ),
            "sklearn_pca_randomized_kmeans": Case(
                sk_pca_kmeans("randomized"), f"PCA(16, randomized).fit_transform(X) + KMeans({kc}, n_init=1)", km
            ),
            "sklearn_pca_covariance_eigh_kmeans": Case(
                sk_pca_kmeans("covariance_eigh"),
                f"PCA(16, covariance_eigh).fit_transform(X) + KMeans({kc}, n_init=1)",
                km,
            ),
        }
        log(f"[kmeans] {len(cases)} cases × {args.kmeans_repeats} repetitions (+1 warm-up)")
        timings, metrics = run_interleaved(cases, args.kmeans_repeats, sync, log)
    finally:
        if not args.keep_files and path.exists():
            path.unlink()
    a, b = metrics["usidgpu_raw_same_init"]["labels"], metrics["sklearn_raw_same_init"]["labels"]
    agreement = {
        "identical_label_fraction": _r(float(np.mean(a == b)), 6),
        "ari_between_libraries": _r(adjusted_rand_score(a, b), 6),
    }
    for name, mt in metrics.items():
        mt.pop("labels")
        mt["time_per_iteration_s"] = _r(timings[name]["median_s"] / max(mt["n_iter"], 1))
    per_it = {
        "usidgpu_raw_same_init": metrics["usidgpu_raw_same_init"]["time_per_iteration_s"],
        "sklearn_raw_same_init": metrics["sklearn_raw_same_init"]["time_per_iteration_s"],
    }
    over_read = {
        f"{u} / read_pass": _r(timings[u]["median_s"] / timings["read_pass"]["median_s"], 3)
        for u in timings
        if u.startswith("usidgpu_")
    }
    return {
        "dataset": info,
        "time_over_read_pass": over_read,
        "parameters": {
            "n_clusters": kc,
            "repeats": args.kmeans_repeats,
            "shared_init": f"C0 = rows {init_rows.tolist()} of X (seed {args.seed + 2})",
            "time_per_iteration": "median total time / iterations (includes set-up, the tolerance statistics "
            "and the final assignment; for the PCA + k-means pipelines also the PCA)",
        },
        "timings": timings,
        "quality": metrics,
        "same_init_agreement": agreement,
        "same_init_time_per_iteration_ratio_sklearn_over_usidgpu": _r(
            per_it["sklearn_raw_same_init"] / per_it["usidgpu_raw_same_init"], 3
        ),
        "total_time_ratio_sklearn_over_usidgpu": {
            "raw_same_init": _r(
                timings["sklearn_raw_same_init"]["median_s"] / timings["usidgpu_raw_same_init"]["median_s"], 3
            ),
            "raw_kmeanspp": _r(
                timings["sklearn_raw_kmeanspp"]["median_s"] / timings["usidgpu_raw_kmeanspp"]["median_s"], 3
            ),
            "pca_randomized_kmeans / usidgpu_svd_features": _r(
                timings["sklearn_pca_randomized_kmeans"]["median_s"] / timings["usidgpu_svd_features"]["median_s"], 3
            ),
            "pca_covariance_eigh_kmeans / usidgpu_svd_features": _r(
                timings["sklearn_pca_covariance_eigh_kmeans"]["median_s"] / timings["usidgpu_svd_features"]["median_s"],
                3,
            ),
        },
    }


def bench_nmf(args: argparse.Namespace, dev: str, sync: Callable[[], None], log: Callable[[str], None]) -> dict:
    from sklearn.decomposition import NMF

    import usidgpu

    k, m, n, iters = args.nmf_k, args.nmf_rows, args.n_spec, args.nmf_iter
    x, _w_true, h_true, recipe = nmf_data(m, n, k, args.nmf_noise, args.seed + 3)
    path = args.tmp_dir / f"bench_decompose_nmf_{os.getpid()}.h5"
    info = write_usid(path, x, (m, n), "Intensity", "a.u.")["info"]
    info["recipe"] = recipe
    try:
        from sklearn.decomposition._nmf import _initialize_nmf  # private, but it is what init="nndsvda" runs

        w0, h0 = _initialize_nmf(x, k, init="nndsvda", random_state=args.seed)
        init_desc = "scikit-learn NNDSVDa (sklearn.decomposition._nmf._initialize_nmf), computed once, not timed"
    except Exception as exc:  # pragma: no cover - private API moved
        rng = np.random.default_rng(args.seed)
        avg = np.sqrt(x.mean() / k)
        w0, h0 = avg * np.abs(rng.standard_normal((m, k))), avg * np.abs(rng.standard_normal((k, n)))
        init_desc = f"random as scikit-learn's init='random' (NNDSVDa unavailable: {exc})"
    w0, h0 = w0.astype(np.float32), h0.astype(np.float32)
    x64 = x.astype(np.float64)
    norm_x = float(np.linalg.norm(x64))
    log(f"[nmf] X {m}×{n} float32 written to {path}; {iters} iterations from the same NNDSVDa init")
    try:

        def quality(out: Any) -> dict:
            if hasattr(out, "W") and out.W is not None:  # usidgpu
                w, h, n_it, own = out.W, out.H, out.n_iter, out.reconstruction_err
            else:
                (w, est), h = out, out[1].components_
                n_it, own = est.n_iter_, est.reconstruction_err_
            rel = float(np.linalg.norm(x64 - w.astype(np.float64) @ h.astype(np.float64)) / norm_x)
            return {
                "n_iter": int(n_it),
                "rel_reconstruction_error": _r(rel, 6),
                "library_reported_error": _r(float(own), 8),
                "mean_spectra_correlation_vs_truth": _r(match_components(np.asarray(h, np.float64), h_true), 6),
            }

        def usid(solver: str) -> Callable[[], Any]:
            def run() -> Any:
                # copies: usidgpu.nmf updates a float32 init W in place (it aliases the caller's array)
                with usidgpu.open(path) as f:
                    return usidgpu.nmf(
                        f[DSET_PATH], k, solver=solver, init=(w0.copy(), h0.copy()), max_iter=iters, tol=0, device=dev
                    )

            return run

        def skl(solver: str) -> Callable[[], Any]:
            def run() -> Any:
                est = NMF(k, init="custom", solver=solver, max_iter=iters, tol=0, random_state=args.seed)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    w = est.fit_transform(x, W=w0.copy(), H=h0.copy())
                return w, est

            return run

        cases = {
            "read_pass": read_pass_case(path, dev),
            "usidgpu_hals": Case(
                usid("hals"), f"usidgpu.nmf(ds, {k}, solver='hals', init=(W0, H0), max_iter={iters}, tol=0)", quality
            ),
            "sklearn_cd": Case(
                skl("cd"), f"NMF({k}, solver='cd', init='custom', max_iter={iters}, tol=0).fit_transform(X)", quality
            ),
            "usidgpu_mu": Case(
                usid("mu"), f"usidgpu.nmf(ds, {k}, solver='mu', init=(W0, H0), max_iter={iters}, tol=0)", quality
            ),
            "sklearn_mu": Case(
                skl("mu"), f"NMF({k}, solver='mu', init='custom', max_iter={iters}, tol=0).fit_transform(X)", quality
            ),
        }
        log(f"[nmf] {len(cases)} cases × {args.nmf_repeats} repetitions (+1 warm-up)")
        timings, metrics = run_interleaved(cases, args.nmf_repeats, sync, log)
    finally:
        if not args.keep_files and path.exists():
            path.unlink()
    for name, mt in metrics.items():
        mt["time_per_iteration_s"] = _r(timings[name]["median_s"] / max(mt["n_iter"], 1))
    over_read = {
        f"{u} / read_pass": _r(timings[u]["median_s"] / timings["read_pass"]["median_s"], 3)
        for u in timings
        if u.startswith("usidgpu_")
    }
    return {
        "dataset": info,
        "time_over_read_pass": over_read,
        "parameters": {"k": k, "iterations": iters, "tol": 0, "init": init_desc, "repeats": args.nmf_repeats},
        "timings": timings,
        "quality": metrics,
        "time_per_iteration_ratio_sklearn_over_usidgpu": {
            "cd / hals": _r(
                metrics["sklearn_cd"]["time_per_iteration_s"] / metrics["usidgpu_hals"]["time_per_iteration_s"], 3
            ),
            "mu / mu": _r(
                metrics["sklearn_mu"]["time_per_iteration_s"] / metrics["usidgpu_mu"]["time_per_iteration_s"], 3
            ),
        },
    }


# ---------------------------------------------------------------------------------- section 3
def write_ooc(path: Path, rows: int, n: int, k: int, noise: float, seed: int) -> tuple[dict, np.ndarray]:
    """Rank-k + noise data of ``rows`` positions, written block by block (never whole in memory).

    Row coefficients are N(0, sᵢ²/m) with sᵢ = 800·0.8ⁱ·√(m/65536), so per row the signal-to-noise
    ratio is that of section 1. Returns the dataset info and the true right subspace (n × k).
    """
    rng = np.random.default_rng(seed)
    v, _ = np.linalg.qr(rng.standard_normal((n, k)))
    s = 800.0 * 0.8 ** np.arange(k) * math.sqrt(rows / 65536)
    basis = ((s / math.sqrt(rows))[:, None] * v.T).astype(np.float32)  # k × n
    t0 = time.perf_counter()
    w = write_usid(path, None, (rows, n), "Intensity", "a.u.")
    f, ds = w["file"], w["ds"]
    try:
        step = max(1, (32 * MiB) // (n * 4))
        for a in range(0, rows, step):
            b = min(a + step, rows)
            block = rng.standard_normal((b - a, k), dtype=np.float32) @ basis
            block += noise * rng.standard_normal(block.shape, dtype=np.float32)
            ds.write_rows(a, block)
    finally:
        f.close()
    _fsync(path)
    info = w["info"]
    info.update(
        data=f"rank-{k} signal (row coefficients N(0, s_i²/m), s_i = 800·0.8^i·√(m/65536)) + {noise}·N(0,1)",
        write_s=round(time.perf_counter() - t0, 1),
        file_bytes=path.stat().st_size,
    )
    return info, v


def _set_limit(kind: str, limit_bytes: int) -> dict[str, Any]:
    """Cap this process's further memory growth at ``limit_bytes`` (above what it holds now)."""
    if kind == "data":
        res, base = resource.RLIMIT_DATA, status_bytes("VmData")
    else:
        res, base = resource.RLIMIT_AS, status_bytes("VmSize")
    soft = base + limit_bytes
    resource.setrlimit(res, (soft, resource.getrlimit(res)[1]))
    # probe: one allocation just over the cap must fail, or the limit does not stop NumPy here
    try:
        probe = np.empty(limit_bytes + 64 * MiB, dtype=np.uint8)
        del probe
        effective = False
    except MemoryError:
        effective = True
    return {
        "rlimit": "RLIMIT_DATA" if kind == "data" else "RLIMIT_AS",
        "base_bytes": base,
        "base_field": "VmData" if kind == "data" else "VmSize",
        "limit_over_base_bytes": limit_bytes,
        "soft_limit_bytes": soft,
        "probe_alloc_over_limit_failed": effective,
    }


def _child_usidgpu(path: str, k: int, method: str, budget: str, device: str, limit: tuple | None, q: Any) -> None:
    out: dict[str, Any] = {}
    try:
        import usidgpu

        gpu = device == "gpu"
        if gpu:
            import cupy

            cupy.zeros(1, dtype=np.float32).sum().item()
        # a tiny run first: every lazy import (scipy.linalg and its OpenBLAS) happens before the
        # limit; OpenBLAS initialised under a memory limit spins forever when its malloc fails
        usidgpu.svd(np.random.default_rng(0).standard_normal((64, 32)), 4, method=method, device=device)
        f = usidgpu.open(path)
        ds = f[DSET_PATH]
        gc.collect()
        if limit is not None:
            out["limit"] = _set_limit(*limit)
        how = _reset_peak()
        base_rss = status_bytes("VmRSS")
        base_maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        t0 = time.perf_counter()
        try:
            r = usidgpu.svd(ds, k, method=method, device=device, budget=budget)
            out.update(
                ok=True,
                S=r.S.astype(float).tolist(),
                V=r.V,
                method=r.method,
                method_reason=r.parameters.get("method_reason"),
            )
        except BaseException as exc:
            out.update(ok=False, error=f"{type(exc).__name__}: {exc}")
        out["svd_s"] = round(time.perf_counter() - t0, 3)
        out["peak_method"] = how
        out["baseline_rss_bytes"] = base_rss
        out["peak_over_baseline_bytes"] = _peak(how, base_rss, base_maxrss)
        if gpu:
            out["gpu_mempool_total_bytes"] = cupy.get_default_memory_pool().total_bytes()
        if out.get("ok") and limit is None:  # one plain streamed pass: the read time of this file
            t0 = time.perf_counter()
            for _blk in ds.blocks(budget=budget, device=device):
                pass
            if gpu:
                cupy.cuda.Device().synchronize()
            out["read_pass_s"] = round(time.perf_counter() - t0, 3)
        f.close()
    except BaseException as exc:
        out.update(ok=False, error=f"{type(exc).__name__}: {exc}")
    q.put(out)


def _child_sklearn(path: str, k: int, seed: int, limit: tuple | None, q: Any) -> None:
    out: dict[str, Any] = {"stage": "imports"}
    try:
        import h5py
        from sklearn.utils.extmath import randomized_svd

        randomized_svd(np.random.default_rng(0).standard_normal((64, 32)), 4, random_state=seed)  # lazy imports
        f = h5py.File(path, "r")
        h5 = f[DSET_PATH]
        gc.collect()
        if limit is not None:
            out["limit"] = _set_limit(*limit)
        how = _reset_peak()
        base_rss = status_bytes("VmRSS")
        base_maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        t0 = time.perf_counter()
        try:
            out["stage"] = "h5py load of X (dset[()])"
            x = h5[()]
            out["load_s"] = round(time.perf_counter() - t0, 3)
            out["stage"] = "randomized_svd"
            _u, s, vt = randomized_svd(x, k, random_state=seed)
            out.update(ok=True, S=s.astype(float).tolist(), V=vt, stage="done")
        except BaseException as exc:
            out.update(ok=False, error=f"{type(exc).__name__}: {exc}")
        out["elapsed_s"] = round(time.perf_counter() - t0, 3)
        out["peak_method"] = how
        out["baseline_rss_bytes"] = base_rss
        out["peak_over_baseline_bytes"] = _peak(how, base_rss, base_maxrss)
        f.close()
    except BaseException as exc:
        out.update(ok=False, error=f"{type(exc).__name__}: {exc}")
    q.put(out)


def bench_ooc(args: argparse.Namespace, dev: str, log: Callable[[str], None]) -> dict:
    from usidgpu.core.memory import parse_bytes

    k, n = args.k, args.n_spec
    rows = int(round(args.ooc_size_gib * GiB / (n * 4)))
    budget = parse_bytes(args.ooc_budget)
    limit_bytes = parse_bytes(args.ooc_limit) if args.ooc_limit else budget
    path = args.tmp_dir / f"bench_decompose_ooc_{os.getpid()}.h5"
    log(f"[out-of-core] writing {rows}×{n} float32 ({rows * n * 4 / GiB:.2f} GiB) to {path} ...")
    info, v_true = write_ooc(path, rows, n, k, args.noise, args.seed + 4)
    log(f"  written in {info['write_s']} s; budget {args.ooc_budget} = {budget / MB:.0f} MB")
    runs: dict[str, Any] = {}
    try:
        for method in args.ooc_methods:
            r = run_child(_child_usidgpu, (str(path), k, method, args.ooc_budget, dev, None), 900)
            if r.get("ok"):
                r["sin_angle"] = _r(sin_largest_angle(r.pop("V"), v_true))
            r["peak_over_baseline_MB"] = round(r.get("peak_over_baseline_bytes", float("nan")) / MB, 1)
            r["within_budget_plus_100MB"] = bool(r.get("peak_over_baseline_bytes", math.inf) <= budget + 100 * MB)
            runs[f"usidgpu_svd_{method}"] = r
            log(
                f"  usidgpu svd({method}, budget={args.ooc_budget}): {r.get('method')} in {r.get('svd_s')} s, "
                f"peak +{r['peak_over_baseline_MB']} MB, read pass {r.get('read_pass_s')} s, "
                f"sin∠ {r.get('sin_angle')} {r.get('error', '')}"
            )
        limit = (args.ooc_limit_kind, limit_bytes)
        r = run_child(_child_sklearn, (str(path), k, args.seed, limit), 300)
        if r.get("ok"):
            r["sin_angle"] = _r(sin_largest_angle(r.pop("V"), v_true))
        r["peak_over_baseline_MB"] = round(r.get("peak_over_baseline_bytes", float("nan")) / MB, 1)
        runs["sklearn_randomized_svd_under_limit"] = r
        log(
            f"  sklearn randomized_svd under {limit[0]} +{limit_bytes / MB:.0f} MB: stage {r.get('stage')}: "
            f"{r.get('error', 'succeeded')}"
        )
        if args.ooc_control:
            r = run_child(_child_usidgpu, (str(path), k, "auto", args.ooc_budget, dev, limit), 300)
            r.pop("V", None)
            r["peak_over_baseline_MB"] = round(r.get("peak_over_baseline_bytes", float("nan")) / MB, 1)
            runs["usidgpu_svd_auto_under_same_limit"] = r
            log(
                f"  usidgpu svd(auto) under the same limit: {'succeeded' if r.get('ok') else r.get('error')} "
                f"({r.get('svd_s')} s)"
            )
    finally:
        if not args.keep_files and path.exists():
            path.unlink()
    auto = runs.get("usidgpu_svd_auto", {})
    sk = runs["sklearn_randomized_svd_under_limit"]
    return {
        "dataset": info,
        "parameters": {
            "k": k,
            "budget": args.ooc_budget,
            "budget_bytes": budget,
            "limit_kind": args.ooc_limit_kind,
            "limit_over_baseline_bytes": limit_bytes,
            "peak_measure": "RSS growth over the child's baseline after imports and opening the file: VmHWM after "
            "resetting it through /proc/self/clear_refs",
            "limit_measure": "setrlimit(RLIMIT_DATA: private writable mappings, i.e. what NumPy allocates) at the "
            "child's VmData after imports + limit; a probe allocation just over the limit is checked to fail",
        },
        "runs": runs,
        "target": {
            "statement": "usidgpu svd(auto) peak RSS growth ≤ budget + ~100 MB; scikit-learn cannot run in the "
            "same memory",
            "usidgpu_peak_over_baseline_MB": auto.get("peak_over_baseline_MB"),
            "budget_plus_100MB_MB": round((budget + 100 * MB) / MB, 1),
            "met": bool(auto.get("within_budget_plus_100MB")) and not sk.get("ok", False),
            "sklearn_outcome": sk.get("error", "succeeded"),
        },
    }


# ---------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Streamed SVD/PCA, k-means and NMF of USID Main datasets: usidgpu vs scikit-learn on the same "
        "data, plus an out-of-core run against a memory budget.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--device", choices=("cpu", "gpu"), default="cpu", help="device of the usidgpu calls")
    p.add_argument("--sections", default="svd,kmeans,nmf,ooc", help="comma-separated: svd, kmeans, nmf, ooc")
    p.add_argument("--n-spec", type=int, default=1024, help="spectroscopic points per position (all sections)")
    p.add_argument("-k", type=int, default=16, help="SVD components (sections svd and ooc)")
    p.add_argument("--noise", type=float, default=0.05, help="noise σ of the SVD data")
    p.add_argument("--svd-rows", type=int, default=65536, help="positions of the SVD data (a 256 × 256 grid)")
    p.add_argument("--svd-repeats", type=int, default=5, help="timed repetitions of the SVD cases (>= 3)")
    p.add_argument(
        "--svd-stream-budget",
        default="512MB",
        help="budget of the extra usidgpu_svd_auto_streamed case (small enough that X is not kept resident)",
    )
    p.add_argument("--kmeans-rows", type=int, default=65536)
    p.add_argument("--clusters", type=int, default=8)
    p.add_argument("--kmeans-repeats", type=int, default=3)
    p.add_argument("--nmf-rows", type=int, default=16384)
    p.add_argument("--nmf-k", type=int, default=8)
    p.add_argument("--nmf-iter", type=int, default=100, help="NMF iterations (tol 0: both run exactly this many)")
    p.add_argument("--nmf-noise", type=float, default=0.05)
    p.add_argument("--nmf-repeats", type=int, default=3)
    p.add_argument("--ooc-size-gib", type=float, default=2.0, help="size of the out-of-core dataset (GiB)")
    p.add_argument("--ooc-budget", default="512MB", help="usidgpu memory budget of the out-of-core run")
    p.add_argument(
        "--ooc-limit", default=None, help="memory growth allowed to the capped children (default: the budget)"
    )
    p.add_argument("--ooc-limit-kind", choices=("data", "as"), default="data", help="RLIMIT_DATA or RLIMIT_AS")
    p.add_argument("--ooc-methods", default="auto,randomized", help="usidgpu svd methods of the out-of-core run")
    p.add_argument(
        "--no-ooc-control",
        dest="ooc_control",
        action="store_false",
        help="skip the usidgpu run under the same memory limit as scikit-learn",
    )
    p.add_argument("--tmp-dir", type=Path, default=DEFAULT_TMP, help="where the test files go (same disk as the repo)")
    p.add_argument("--keep-files", action="store_true", help="do not delete the test files afterwards")
    p.add_argument(
        "--output", type=Path, default=None, help="JSON path (default benchmarks/results/decompose_<device>.json)"
    )
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.svd_repeats < 3:
        p.error("--svd-repeats must be at least 3")
    if min(args.kmeans_repeats, args.nmf_repeats) < 1:
        p.error("--kmeans-repeats and --nmf-repeats must be at least 1")
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    for s in args.sections:
        if s not in ("svd", "kmeans", "nmf", "ooc"):
            p.error(f"unknown section {s!r} (svd, kmeans, nmf, ooc)")
    args.ooc_methods = [s.strip() for s in args.ooc_methods.split(",") if s.strip()]
    for s in args.ooc_methods:
        if s not in ("auto", "gram", "randomized"):
            p.error(f"--ooc-methods: {s!r} is not auto, gram or randomized")
    if "auto" not in args.ooc_methods:
        args.ooc_methods.insert(0, "auto")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    gpu = args.device == "gpu"
    run = start_run("bench_decompose.py", args.device)
    if run is None:
        return 2
    log, sync = run

    out_path = args.output or RESULTS / f"decompose_{args.device}.json"
    args.tmp_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    result = results_header(
        "bench_decompose (streamed SVD/PCA, k-means, NMF: usidgpu vs scikit-learn)",
        args,
        versions(gpu, extra=("scipy", "sklearn", "threadpoolctl")),
        args.device,
        page_cache="warm: every file was just written and is read from the page cache",
        statistic="median of interleaved repetitions (order rotated each repetition), one untimed warm-up "
        "per case; every repetition listed",
        sklearn_runs_on="CPU, in this process (same BLAS thread pools as usidgpu)",
    )
    announce(log, "bench_decompose", result)
    sections = {
        "svd": lambda: bench_svd(args, args.device, sync, log),
        "kmeans": lambda: bench_kmeans(args, args.device, sync, log),
        "nmf": lambda: bench_nmf(args, args.device, sync, log),
        "ooc": lambda: bench_ooc(args, args.device, log),
    }
    try:
        for name in args.sections:
            t0 = time.time()
            load0 = os.getloadavg()
            res = sections[name]()
            res["section_elapsed_s"] = round(time.time() - t0, 1)
            res["loadavg_before_after"] = [round(load0[0], 2), round(os.getloadavg()[0], 2)]
            result["out_of_core" if name == "ooc" else name] = res
            gc.collect()
    finally:
        try:
            args.tmp_dir.rmdir()  # only when empty
        except OSError:
            pass
    result["elapsed_s"] = round(time.time() - started, 1)
    result["loadavg_after"] = [round(v, 2) for v in os.getloadavg()]
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=2, default=_json_default) + "\n")
    log(f"results written to {out_path} ({result['elapsed_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
