#!/usr/bin/env python
"""Windowed-SVD image denoising: usidgpu ``windowed_svd`` vs the explicit patch-matrix method.

Image: the synthetic lattice of ``/work/shared/reference/baselines.md`` §2 — a square lattice of
Gaussian columns (period 12 px, σ = 2.2 px, peak 60 counts, background 5) with Poisson noise,
stored as float32. PSNR = 10·log10(max(I₀)² / mean((I − I₀)²)) against the noise-free image I₀.

1. **Comparison** (``compare``), window 32, step 1, k = 16 on 1024² and 2048²:
   usidgpu ``windowed_svd`` (FFT Gram matrix + ``eigh`` + FFT rebuild, no patch matrix), k = 16
   and k = None (its Gavish–Donoho rule), timed in this process (repetitions interleaved, one
   warm-up, medians), vs the explicit method that pycroscopy's ``ImageWindow`` amounts to:
   ``extract_patches_2d`` (step 1) → ``randomized_svd(X, k, n_iter=3)`` → U·S·Vᵀ →
   ``reconstruct_from_patches_2d`` (overlap average), run once in a spawned child with its stage
   times and peak memory. Where its estimated peak (two patch matrices) exceeds
   ``--explicit-max-gb`` it is not run and recorded as infeasible with the patch-matrix size.
   Agreement: max |usidgpu − explicit| of the cleaned images, the largest principal angle
   between the eigen-windows, the singular values.
2. **Window series** (``series``) on 512² and 1024² with windows 16, 24, 32, 48: the same two
   methods, ratio explicit / usidgpu per window (target: it grows with the window), plus an exact
   check on the first size (``--exact-window``): the explicit pipeline with an exact float64 SVD
   (``eigh`` of XᵀX) instead of the randomized one, which usidgpu must reproduce to rounding.
3. **Large cases** (``large``), usidgpu alone, each in a spawned child (time + peak memory):
   2048² with window 64 (window matrix ≈ 64 GB) for k = 16 and k = None, an 8192² image
   (window 32) with ``budget="1GB"`` that forces tiling, and a tiled-vs-untiled check on 2048².
4. ``--device gpu``: the usidgpu calls run with ``device="gpu"`` (the explicit reference stays on
   the CPU); the JSON names the GPU. Target: 2048², window 32 in under a second. Without a usable
   GPU the script exits with a one-line error.

Peak memory = growth of the child's resident set over its baseline (after imports, a tiny
warm-up run and generating the image): VmHWM after resetting it through /proc/self/clear_refs.
Results go to ``benchmarks/results/denoise_<device>.json``. No files are written besides it.
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
    summarize,
)
from machine import machine_info, status_bytes, versions

RESULTS = Path(__file__).resolve().parent / "results"
MB = 1000**2
GB = 1000**3


# ---------------------------------------------------------------------------------- helpers
def lattice(n: int, period: float, sigma: float, peak: float, background: float, seed: int) -> tuple[np.ndarray, ...]:
    """Noise-free lattice I₀ (float64) and its Poisson-noisy version (float32), n × n pixels."""
    y = np.arange(n, dtype=np.float64)
    centres = np.arange(period / 2 - period, n + period, period)  # one column beyond each edge
    s = np.exp(-0.5 * ((y[:, None] - centres[None, :]) / sigma) ** 2).sum(axis=1)
    clean = background + peak * np.outer(s, s)
    noisy = np.random.default_rng(seed).poisson(clean).astype(np.float32)
    return clean, noisy


def psnr(image: np.ndarray, clean: np.ndarray) -> float:
    """10·log10(max(I₀)² / MSE), float64, over every pixel (borders included)."""
    mse = float(np.mean((np.asarray(image, dtype=np.float64) - clean) ** 2))
    return 10 * math.log10(float(clean.max()) ** 2 / mse)


def sin_largest_angle(a: np.ndarray, b: np.ndarray) -> float:
    """Sine of the largest principal angle between the row spaces of a and b (k × P each)."""
    qa, _ = np.linalg.qr(np.asarray(a, dtype=np.float64).T)
    qb, _ = np.linalg.qr(np.asarray(b, dtype=np.float64).T)
    cos = np.linalg.svd(qa.T @ qb, compute_uv=False)
    return float(np.sqrt(max(0.0, 1.0 - float(cos.min()) ** 2)))


def agreement(a: np.ndarray, b: np.ndarray, scale: float) -> dict[str, Any]:
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    m = float(np.abs(d).max())
    return {
        "max_abs_diff": _r(m),
        "max_abs_diff_over_peak": _r(m / scale),
        "mean_abs_diff": _r(float(np.abs(d).mean())),
        "rms_diff": _r(float(np.sqrt(np.mean(d * d)))),
        "peak_used": scale,
    }


def patch_matrix(n: int, w: int, k: int) -> dict[str, Any]:
    """Size of the explicit step-1 patch matrix of an n² image and the explicit method's estimated peak."""
    rows = (n - w + 1) ** 2
    nbytes = rows * w * w * 4  # float32, as extract_patches_2d returns for a float32 image
    # patch matrix + the rebuilt windows U·S·Vᵀ (the same size) + randomized_svd's range finder
    est = 2 * nbytes + rows * (k + 10) * 4 * 4 + 3 * n * n * 8
    return {
        "shape": [rows, w * w],
        "dtype": "float32",
        "bytes": nbytes,
        "GB": round(nbytes / GB, 2),
        "estimated_peak_bytes": est,
        "estimated_peak_GB": round(est / GB, 2),
        "estimate": "2 × patch matrix (windows, and the rebuilt windows U·S·Vᵀ) + range finder + images",
    }


def usidgpu_model(n: int, w: int) -> dict[str, Any]:
    """usidgpu's own memory model: Gram tables ~12·P²·8 bytes (P = w²) + 96 bytes per tile pixel."""
    from usidgpu.denoise.windowed import BYTES_PER_TILE_PIXEL

    p = w * w
    return {
        "gram_tables_bytes": 12 * p * p * 8,
        "untiled_image_bytes": BYTES_PER_TILE_PIXEL * n * n,
        "source": f"usidgpu/denoise/windowed.py: gram_bytes = 12·P²·8, BYTES_PER_TILE_PIXEL = {BYTES_PER_TILE_PIXEL}",
    }


# ---------------------------------------------------------------------------------- children
def _child_usidgpu(img_kw: dict, w: int, k: int | None, device: str, budget: str | None, q: Any) -> None:
    """One windowed_svd call: time, peak memory growth, PSNR, k, tiling."""
    out: dict[str, Any] = {}
    try:
        import usidgpu

        gpu = device == "gpu"
        if gpu:
            import cupy

            cupy.zeros(1, dtype=np.float32).sum().item()
        usidgpu.windowed_svd(np.random.default_rng(0).poisson(5.0, (48, 48)).astype(np.float32), 8, k=2, device=device)
        clean, noisy = lattice(**img_kw)
        if gpu:
            cupy.get_default_memory_pool().free_all_blocks()
        gc.collect()
        how = _reset_peak()
        base_rss = status_bytes("VmRSS")
        base_maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        t0 = time.perf_counter()
        r = usidgpu.windowed_svd(noisy, window=w, k=k, device=device, budget=budget)
        if gpu:
            cupy.cuda.Device().synchronize()
        out["seconds"] = round(time.perf_counter() - t0, 4)
        out["peak_method"] = how
        out["baseline_rss_bytes"] = base_rss
        out["peak_over_baseline_bytes"] = _peak(how, base_rss, base_maxrss)
        if gpu:
            pool = cupy.get_default_memory_pool()
            out["gpu_mempool_total_bytes"] = pool.total_bytes()
        out["output_bytes"] = int(r.cleaned.nbytes + r.noise.nbytes)
        out.update(
            ok=True,
            k=int(r.k),
            k_rule=r.k_rule,
            tiles=bool(r.parameters["tiles"]),
            tile_edge=int(r.parameters["tile_edge"]),
            psnr_noisy_dB=round(psnr(noisy, clean), 3),
            psnr_cleaned_dB=round(psnr(r.cleaned, clean), 3),
        )
    except BaseException as exc:
        out.update(ok=False, error=f"{type(exc).__name__}: {exc}")
    q.put(out)


def _child_explicit(img_kw: dict, w: int, k: int, n_iter: int, seed: int, keep_patches: bool, q: Any) -> None:
    """extract_patches_2d → randomized_svd(n_iter) → U·S·Vᵀ → reconstruct_from_patches_2d, staged."""
    out: dict[str, Any] = {"stage": "imports"}
    try:
        from sklearn.feature_extraction.image import extract_patches_2d, reconstruct_from_patches_2d
        from sklearn.utils.extmath import randomized_svd

        def pipeline(img: np.ndarray, stages: dict[str, float]) -> tuple[np.ndarray, ...]:
            t = time.perf_counter()
            out["stage"] = "extract_patches_2d"
            x = extract_patches_2d(img, (w, w)).reshape(-1, w * w)
            stages["extract_s"] = time.perf_counter() - t
            t = time.perf_counter()
            out["stage"] = "randomized_svd"
            u, s, vt = randomized_svd(x, k, n_iter=n_iter, random_state=seed)
            stages["svd_s"] = time.perf_counter() - t
            if not keep_patches:
                del x  # the windows are not needed any more: frees the first patch-matrix copy
            t = time.perf_counter()
            out["stage"] = "U·S·Vᵀ"
            rec = (u * s) @ vt
            stages["usvt_s"] = time.perf_counter() - t
            t = time.perf_counter()
            out["stage"] = "reconstruct_from_patches_2d"
            cleaned = reconstruct_from_patches_2d(rec.reshape(-1, w, w), img.shape)
            stages["reconstruct_s"] = time.perf_counter() - t
            return cleaned, s, vt

        pipeline(np.random.default_rng(0).poisson(5.0, (w + 16, w + 16)).astype(np.float32), {})  # lazy imports
        clean, noisy = lattice(**img_kw)
        gc.collect()
        how = _reset_peak()
        base_rss = status_bytes("VmRSS")
        base_maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        stages: dict[str, float] = {}
        t0 = time.perf_counter()
        cleaned, s, vt = pipeline(noisy, stages)
        out["seconds"] = round(time.perf_counter() - t0, 3)
        out["peak_method"] = how
        out["baseline_rss_bytes"] = base_rss
        out["peak_over_baseline_bytes"] = _peak(how, base_rss, base_maxrss)
        out.update(
            ok=True,
            stage="done",
            stages_s={key: round(v, 3) for key, v in stages.items()},
            psnr_noisy_dB=round(psnr(noisy, clean), 3),
            psnr_cleaned_dB=round(psnr(cleaned, clean), 3),
            singular_values=s.astype(float).tolist(),
            components=vt.astype(np.float64),
            cleaned=cleaned,
        )
    except BaseException as exc:
        out.update(ok=False, error=f"{type(exc).__name__}: {exc}")
    q.put(out)


# ---------------------------------------------------------------------------------- shared pieces
def img_kw(args: argparse.Namespace, n: int) -> dict[str, Any]:
    return dict(n=n, period=args.period, sigma=args.sigma, peak=args.peak, background=args.background, seed=args.seed)


def usid_case(noisy: np.ndarray, clean: np.ndarray, w: int, k: int | None, dev: str, keep: dict, key: str) -> Case:
    import usidgpu

    def run() -> Any:
        return usidgpu.windowed_svd(noisy, window=w, k=k, device=dev)

    def metrics(r: Any) -> dict:
        keep[key] = r  # the last run's result, for the agreement figures
        return {
            "k": int(r.k),
            "k_rule": r.k_rule,
            "tiles": bool(r.parameters["tiles"]),
            "psnr_noisy_dB": round(psnr(noisy, clean), 3),
            "psnr_cleaned_dB": round(psnr(r.cleaned, clean), 3),
        }

    desc = f"usidgpu.windowed_svd(window={w}, step=1, k={k}, device={dev!r})"
    return Case(run, desc, metrics)


def explicit_run(args: argparse.Namespace, n: int, w: int, log: Callable[[str], None]) -> dict[str, Any]:
    pm = patch_matrix(n, w, args.k)
    entry: dict[str, Any] = {
        "method": f"extract_patches_2d (step 1) → randomized_svd(X, {args.k}, n_iter={args.explicit_n_iter}, "
        f"n_oversamples=10, random_state={args.seed}) → U·S·Vᵀ → reconstruct_from_patches_2d (overlap average)",
        "runs_on": "CPU (scikit-learn), one repetition in a spawned child",
        "patches_freed_before_usvt": not args.explicit_keep_patches,
        "patch_matrix": pm,
    }
    if pm["estimated_peak_bytes"] > args.explicit_max_bytes:
        entry.update(
            ok=False,
            run=False,
            infeasible=f"not run: the patch matrix alone is {pm['shape'][0]}×{pm['shape'][1]} float32 = "
            f"{pm['GB']} GB and the method needs about {pm['estimated_peak_GB']} GB "
            f"(> --explicit-max-gb {args.explicit_max_bytes / GB:.1f} GB; this machine has "
            f"{machine_info()['ram_GiB']} GiB RAM)",
        )
        log(f"    explicit {n}² w{w}: {entry['infeasible']}")
        return entry
    r = run_child(
        _child_explicit,
        (img_kw(args, n), w, args.k, args.explicit_n_iter, args.seed, args.explicit_keep_patches),
        args.child_timeout,
    )
    r["run"] = True
    entry.update(r)
    if r.get("ok"):
        log(
            f"    explicit {n}² w{w}: {r['seconds']} s {r['stages_s']}, peak +{r['peak_over_baseline_MB']} MB, "
            f"PSNR {r['psnr_noisy_dB']} → {r['psnr_cleaned_dB']} dB"
        )
    else:
        log(f"    explicit {n}² w{w}: failed at {r.get('stage')}: {r.get('error')}")
    return entry


def compare_to_explicit(usid: Any, ex: dict[str, Any], peak: float) -> dict[str, Any]:
    """Agreement of usidgpu's k-component result with the explicit one (pops the big arrays)."""
    cleaned = ex.pop("cleaned", None)
    comps = ex.pop("components", None)
    if cleaned is None or usid is None:
        return {}
    out = agreement(usid.cleaned, cleaned, peak)
    k = comps.shape[0]
    out["sin_largest_angle_eigenwindows"] = _r(sin_largest_angle(usid.components.reshape(k, -1), comps))
    s_ex = np.asarray(ex["singular_values"])
    s_us = np.asarray(usid.singular_values[:k])
    out["singular_values_max_rel_diff"] = _r(float(np.max(np.abs(s_ex - s_us) / s_us)))
    out["note"] = (
        "usidgpu is exact (float64 Gram + eigh); the explicit side uses randomized_svd with "
        "n_iter power iterations, so the differences are those of its approximate subspace"
    )
    return out


# ---------------------------------------------------------------------------------- sections
def bench_compare(args: argparse.Namespace, sync: Callable[[], None], log: Callable[[str], None]) -> dict:
    w, dev = args.window, args.device
    images = {n: lattice(**img_kw(args, n)) for n in args.sizes}
    keep: dict[str, Any] = {}
    cases: dict[str, Case] = {}
    for n in args.sizes:
        clean, noisy = images[n]
        cases[f"usidgpu_{n}_w{w}_k{args.k}"] = usid_case(noisy, clean, w, args.k, dev, keep, f"{n}_k")
        cases[f"usidgpu_{n}_w{w}_kauto"] = usid_case(noisy, clean, w, None, dev, keep, f"{n}_auto")
    log(f"[compare] usidgpu windowed_svd, window {w}, sizes {args.sizes}, {args.repeats} repetitions")
    timings, metrics = run_interleaved(cases, args.repeats, sync, log)
    per_size: dict[str, Any] = {}
    for n in args.sizes:
        clean, _noisy = images[n]
        name_k, name_auto = f"usidgpu_{n}_w{w}_k{args.k}", f"usidgpu_{n}_w{w}_kauto"
        entry: dict[str, Any] = {
            "image": [n, n],
            "window": w,
            "step": 1,
            "k": args.k,
            "usidgpu": {"timing": timings[name_k], **metrics[name_k]},
            "usidgpu_k_auto": {"timing": timings[name_auto], **metrics[name_auto]},
            "usidgpu_memory_model": usidgpu_model(n, w),
        }
        if args.memory:
            r = run_child(_child_usidgpu, (img_kw(args, n), w, args.k, dev, None), args.child_timeout)
            entry["usidgpu_peak_memory"] = r
            log(f"    usidgpu {n}² w{w} child: {r.get('seconds')} s, peak +{r.get('peak_over_baseline_MB')} MB")
        ex = explicit_run(args, n, w, log)
        entry["explicit"] = ex
        if ex.get("ok"):
            entry["agreement_usidgpu_vs_explicit"] = compare_to_explicit(keep.get(f"{n}_k"), ex, float(clean.max()))
            t_us = timings[name_k]["median_s"]
            entry["speedup_explicit_over_usidgpu"] = _r(ex["seconds"] / t_us)
            entry["speedup_explicit_over_usidgpu_k_auto"] = _r(ex["seconds"] / timings[name_auto]["median_s"])
            if "usidgpu_peak_memory" in entry and entry["usidgpu_peak_memory"].get("peak_over_baseline_bytes"):
                entry["peak_memory_ratio_explicit_over_usidgpu"] = _r(
                    ex["peak_over_baseline_bytes"] / entry["usidgpu_peak_memory"]["peak_over_baseline_bytes"]
                )
            log(
                f"    {n}²: explicit {ex['seconds']} s vs usidgpu {t_us} s "
                f"→ ×{entry['speedup_explicit_over_usidgpu']}; "
                f"max|Δ| {entry['agreement_usidgpu_vs_explicit'].get('max_abs_diff')}"
            )
        per_size[str(n)] = entry
    keep.clear()
    return {"cases": per_size}


def usidgpu_breakdown(noisy: np.ndarray, w: int) -> dict[str, Any]:
    """Where the window-dependent cost goes (CPU, one run, internal functions): the FFT Gram matrix
    ``gram_step1`` (of which its corner tables ``_corner_slices``, compiled with numba where it is
    installed) and ``eigvalsh`` / top-k ``top_eigh`` of the P × P Gram."""
    try:
        from usidgpu.core.linalg import top_eigh
        from usidgpu.denoise import gram as _gram

        img = noisy.astype(np.float64)
        _gram.gram_step1(np, img[: 2 * w, : 2 * w], (w, w))  # warm-up: numba compiles (or loads) once
        t0 = time.perf_counter()
        g = _gram.gram_step1(np, img, (w, w))
        t1 = time.perf_counter()
        for _ in _gram._corner_slices(np, img, w, w):
            pass
        t2 = time.perf_counter()
        np.linalg.eigvalsh(g)
        t3 = time.perf_counter()
        top_eigh(np, g, 16)
        t4 = time.perf_counter()
        return {
            "gram_step1_s": round(t1 - t0, 3),
            "corner_tables_s": round(t2 - t1, 3),
            "corner_tables_compiled": bool(_gram.compiled_corners()),
            "eigvalsh_s": round(t3 - t2, 3),
            "top16_eigh_s": round(t4 - t3, 3),
            "P": w * w,
            "note": "one run each, CPU, usidgpu.denoise.gram internals; the corner tables are part of gram_step1; "
            "eigvalsh (all singular values) runs only when k is not given",
        }
    except Exception as exc:  # internals may change: reported, not fatal
        return {"error": f"{type(exc).__name__}: {exc}"}


def bench_series(args: argparse.Namespace, sync: Callable[[], None], log: Callable[[str], None]) -> dict:
    out: dict[str, Any] = {}
    for i, n in enumerate(args.series_sizes):
        out[str(n)] = bench_series_size(args, n, i == 0, sync, log)
    return out


def bench_series_size(
    args: argparse.Namespace, n: int, first: bool, sync: Callable[[], None], log: Callable[[str], None]
) -> dict:
    dev = args.device
    clean, noisy = lattice(**img_kw(args, n))
    keep: dict[str, Any] = {}
    cases = {
        f"usidgpu_{n}_w{w}_k{args.k}": usid_case(noisy, clean, w, args.k, dev, keep, f"w{w}")
        for w in args.series_windows
    }
    log(f"[series] {n}², windows {args.series_windows}, k {args.k}")
    timings, metrics = run_interleaved(cases, args.repeats, sync, log)
    rows: dict[str, Any] = {}
    for w in args.series_windows:
        name = f"usidgpu_{n}_w{w}_k{args.k}"
        entry: dict[str, Any] = {
            "window": w,
            "usidgpu": {"timing": timings[name], **metrics[name]},
            "usidgpu_memory_model": usidgpu_model(n, w),
            "usidgpu_cpu_breakdown": usidgpu_breakdown(noisy, w),
        }
        if args.memory:
            r = run_child(_child_usidgpu, (img_kw(args, n), w, args.k, dev, None), args.child_timeout)
            entry["usidgpu_peak_memory"] = r
        b = entry["usidgpu_cpu_breakdown"]
        log(
            f"    usidgpu {n}² w{w}: median {timings[name]['median_s']} s; gram_step1 {b.get('gram_step1_s')} s "
            f"(corner tables {b.get('corner_tables_s')} s), eigvalsh {b.get('eigvalsh_s')} s, "
            f"top-16 {b.get('top16_eigh_s')} s, peak "
            f"+{entry.get('usidgpu_peak_memory', {}).get('peak_over_baseline_MB')} MB"
        )
        ex = explicit_run(args, n, w, log)
        entry["explicit"] = ex
        if ex.get("ok"):
            entry["agreement_usidgpu_vs_explicit"] = compare_to_explicit(keep.get(f"w{w}"), ex, float(clean.max()))
            entry["speedup_explicit_over_usidgpu"] = _r(ex["seconds"] / timings[name]["median_s"])
        rows[str(w)] = entry
    speedups = [(w, rows[str(w)].get("speedup_explicit_over_usidgpu")) for w in args.series_windows]
    ran = [(w, s) for w, s in speedups if s is not None]
    grows = len(ran) >= 2 and all(b[1] > a[1] for a, b in zip(ran, ran[1:]))
    out: dict[str, Any] = {
        "image": [n, n],
        "k": args.k,
        "windows": rows,
        "speedups": {str(w): s for w, s in speedups},
        "speedup_grows_with_window": {
            "strictly_increasing": bool(grows),
            "largest_over_smallest_window": _r(ran[-1][1] / ran[0][1]) if len(ran) >= 2 else None,
        },
    }
    if args.exact_window and first:
        out["exact_check"] = exact_check(args, clean, noisy, keep, log)
    keep.clear()
    return out


def exact_check(
    args: argparse.Namespace, clean: np.ndarray, noisy: np.ndarray, keep: dict, log: Callable[[str], None]
) -> dict:
    """Explicit pipeline with an exact SVD (float64 XᵀX + eigh): usidgpu should match it to rounding."""
    from sklearn.feature_extraction.image import extract_patches_2d, reconstruct_from_patches_2d

    import usidgpu

    w, k = args.exact_window, args.k
    t0 = time.perf_counter()
    x = extract_patches_2d(noisy.astype(np.float64), (w, w)).reshape(-1, w * w)
    vals, vecs = np.linalg.eigh(x.T @ x)
    v = vecs[:, ::-1][:, :k]
    rec = (x @ v) @ v.T
    del x
    cleaned = reconstruct_from_patches_2d(rec.reshape(-1, w, w), noisy.shape)
    dt = time.perf_counter() - t0
    r = keep.get(f"w{w}") or usidgpu.windowed_svd(noisy, window=w, k=k, device=args.device)
    out = {
        "method": "extract_patches_2d (float64) → eigh(XᵀX) → X·V·Vᵀ (top k) → reconstruct_from_patches_2d",
        "window": w,
        "seconds": round(dt, 3),
        "psnr_cleaned_dB": round(psnr(cleaned, clean), 3),
        **agreement(r.cleaned, cleaned, float(clean.max())),
        "sin_largest_angle_eigenwindows": _r(sin_largest_angle(r.components.reshape(k, -1), v.T)),
        "singular_values_max_rel_diff": _r(
            float(
                np.max(np.abs(np.sqrt(np.maximum(vals[::-1][:k], 0)) - r.singular_values[:k]) / r.singular_values[:k])
            )
        ),
    }
    log(f"    exact check w{w}: max|Δ| {out['max_abs_diff']} (PSNR {out['psnr_cleaned_dB']} dB)")
    return out


def bench_large(args: argparse.Namespace, sync: Callable[[], None], log: Callable[[str], None]) -> dict:
    import usidgpu
    from usidgpu.core.memory import parse_bytes

    dev = args.device
    out: dict[str, Any] = {}
    # (a) a window whose patch matrix could never be built
    n, w = args.big_window_size, args.big_window
    entry: dict[str, Any] = {
        "image": [n, n],
        "window": w,
        "window_matrix_if_explicit": patch_matrix(n, w, args.k),
        "usidgpu_memory_model": usidgpu_model(n, w),
        "runs": {},
    }
    log(f"[large] {n}², window {w} (window matrix {entry['window_matrix_if_explicit']['GB']} GB)")
    for k in (args.k, None):
        runs = [run_child(_child_usidgpu, (img_kw(args, n), w, k, dev, None), args.child_timeout)]
        for _ in range(args.large_repeats - 1):
            runs.append(run_child(_child_usidgpu, (img_kw(args, n), w, k, dev, None), args.child_timeout))
        ok = [r for r in runs if r.get("ok")]
        rec: dict[str, Any] = {"runs": runs}
        if ok:
            rec["timing"] = summarize(
                [r["seconds"] for r in ok], f"usidgpu.windowed_svd(window={w}, k={k}), one per child"
            )
            rec["peak_over_baseline_MB_max"] = max(r["peak_over_baseline_MB"] for r in ok)
        entry["runs"][f"k{k if k else 'auto'}"] = rec
        r0 = runs[0]
        log(
            f"    k={k}: {r0.get('seconds')} s, k used {r0.get('k')}, peak +{r0.get('peak_over_baseline_MB')} MB, "
            f"PSNR {r0.get('psnr_noisy_dB')} → {r0.get('psnr_cleaned_dB')} dB {r0.get('error', '')}"
        )
    out["big_window"] = entry

    # (b) a large image under a memory budget that forces tiling
    n, w, budget = args.huge_size, args.huge_window, args.huge_budget
    budget_bytes = parse_bytes(budget)
    log(f"[large] {n}², window {w}, budget {budget}")
    runs = [run_child(_child_usidgpu, (img_kw(args, n), w, args.k, dev, budget), args.child_timeout)]
    for _ in range(args.large_repeats - 1):
        runs.append(run_child(_child_usidgpu, (img_kw(args, n), w, args.k, dev, budget), args.child_timeout))
    r0 = runs[0]
    entry = {
        "image": [n, n],
        "window": w,
        "k": args.k,
        "budget": budget,
        "budget_bytes": budget_bytes,
        "image_bytes_float32": n * n * 4,
        "window_matrix_if_explicit": patch_matrix(n, w, args.k),
        "runs": runs,
    }
    ok = [r for r in runs if r.get("ok")]
    if ok:
        entry["timing"] = summarize([r["seconds"] for r in ok], f"usidgpu.windowed_svd(window={w}, budget={budget!r})")
        peak = max(r["peak_over_baseline_bytes"] for r in ok)
        working = peak - r0["output_bytes"]
        entry["tiled"] = bool(r0["tiles"])
        entry["peak_over_baseline_MB"] = round(peak / MB, 1)
        entry["output_arrays_MB"] = round(r0["output_bytes"] / MB, 1)
        entry["peak_minus_outputs_MB"] = round(working / MB, 1)
        entry["peak_minus_outputs_within_budget_plus_100MB"] = bool(working <= budget_bytes + 100 * MB)
        entry["peak_within_budget_plus_100MB"] = bool(peak <= budget_bytes + 100 * MB)
        entry["psnr_noisy_dB"], entry["psnr_cleaned_dB"] = r0["psnr_noisy_dB"], r0["psnr_cleaned_dB"]
    log(
        f"    {r0.get('seconds')} s, tiles {r0.get('tiles')} (edge {r0.get('tile_edge')}), peak "
        f"+{r0.get('peak_over_baseline_MB')} MB (outputs {entry.get('output_arrays_MB')} MB) vs budget "
        f"{budget_bytes / MB:.0f} MB, PSNR {r0.get('psnr_noisy_dB')} → {r0.get('psnr_cleaned_dB')} dB "
        f"{r0.get('error', '')}"
    )
    out["budget_tiled"] = entry

    # (c) tiled == untiled
    if args.tiling_check_size:
        n, w = args.tiling_check_size, args.window
        clean, noisy = lattice(**img_kw(args, n))
        t0 = time.perf_counter()
        full = usidgpu.windowed_svd(noisy, window=w, k=args.k, device=dev)
        t1 = time.perf_counter()
        try:
            tiled = usidgpu.windowed_svd(noisy, window=w, k=args.k, device=dev, budget=args.tiling_check_budget)
        except Exception as exc:  # reported, not fatal
            out["tiling_check"] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            log(f"    tiled vs untiled {n}²: {out['tiling_check']['error']}")
            return out
        t2 = time.perf_counter()
        chk = {
            "ok": True,
            "image": [n, n],
            "window": w,
            "budget": args.tiling_check_budget,
            "untiled_s": round(t1 - t0, 3),
            "tiled_s": round(t2 - t1, 3),
            "tiled": bool(tiled.parameters["tiles"]),
            "tile_edge": int(tiled.parameters["tile_edge"]),
            **agreement(tiled.cleaned, full.cleaned, float(clean.max())),
            "singular_values_max_rel_diff": _r(
                float(
                    np.max(
                        np.abs(tiled.singular_values[: args.k] - full.singular_values[: args.k])
                        / full.singular_values[: args.k]
                    )
                )
            ),
        }
        log(
            f"    tiled vs untiled {n}² (budget {args.tiling_check_budget}, tiled {chk['tiled']}): "
            f"max|Δ| {chk['max_abs_diff']}"
        )
        out["tiling_check"] = chk
    return out


# ---------------------------------------------------------------------------------- main
def _ints(s: str) -> list[int]:
    return [int(v) for v in s.split(",") if v.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Windowed-SVD denoising of a synthetic atomic lattice: usidgpu.windowed_svd vs the explicit "
        "patch-matrix method (extract_patches_2d → randomized_svd → U·S·Vᵀ → reconstruct_from_patches_2d), "
        "plus large images and windows for usidgpu alone.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--device", choices=("cpu", "gpu"), default="cpu", help="device of the usidgpu calls")
    p.add_argument("--sections", default="compare,series,large", help="comma-separated: compare, series, large")
    p.add_argument("--sizes", default="1024,2048", help="image sizes (n × n) of the comparison")
    p.add_argument("--window", type=int, default=32, help="window of the comparison and the tiling check")
    p.add_argument("-k", type=int, default=16, help="components kept (both methods)")
    p.add_argument("--repeats", type=int, default=3, help="timed repetitions of the in-process usidgpu cases (>= 3)")
    p.add_argument("--series-sizes", default="512,1024", help="image sizes (n × n) of the window series")
    p.add_argument("--series-windows", default="16,24,32,48")
    p.add_argument(
        "--exact-window", type=int, default=16, help="series window of the exact-SVD explicit check (0: skip)"
    )
    p.add_argument("--explicit-n-iter", type=int, default=3, help="randomized_svd power iterations (pycroscopy: 3)")
    p.add_argument(
        "--explicit-max-gb",
        type=float,
        default=None,
        help="run the explicit method only where its estimated peak is below this (default: 75%% of MemAvailable)",
    )
    p.add_argument(
        "--explicit-keep-patches",
        action="store_true",
        help="keep the patch matrix alive while U·S·Vᵀ is formed (default: freed first, the lower peak)",
    )
    p.add_argument("--big-window-size", type=int, default=2048, help="image of the large-window case")
    p.add_argument("--big-window", type=int, default=64)
    p.add_argument("--huge-size", type=int, default=8192, help="image of the budget (tiling) case")
    p.add_argument("--huge-window", type=int, default=32)
    p.add_argument("--huge-budget", default="1GB")
    p.add_argument("--large-repeats", type=int, default=1, help="children per large case (each one run)")
    p.add_argument("--tiling-check-size", type=int, default=2048, help="tiled-vs-untiled check image (0: skip)")
    p.add_argument("--tiling-check-budget", default="300MB")
    p.add_argument("--no-memory", dest="memory", action="store_false", help="skip the usidgpu peak-memory children")
    p.add_argument("--child-timeout", type=float, default=1800, help="seconds before a child is killed")
    p.add_argument("--period", type=float, default=12.0, help="lattice period (px)")
    p.add_argument("--sigma", type=float, default=2.2, help="Gaussian column σ (px)")
    p.add_argument("--peak", type=float, default=60.0, help="column peak (counts above background)")
    p.add_argument("--background", type=float, default=5.0, help="background (counts)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--output", type=Path, default=None, help="JSON path (default benchmarks/results/denoise_<device>.json)"
    )
    args = p.parse_args(argv)
    if args.repeats < 3:
        p.error("--repeats must be at least 3")
    if args.large_repeats < 1:
        p.error("--large-repeats must be at least 1")
    args.sizes = _ints(args.sizes)
    args.series_windows = _ints(args.series_windows)
    args.series_sizes = _ints(args.series_sizes)
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    for s in args.sections:
        if s not in ("compare", "series", "large"):
            p.error(f"unknown section {s!r} (compare, series, large)")
    if args.exact_window and args.exact_window not in args.series_windows:
        p.error("--exact-window must be one of --series-windows (or 0)")
    return args


def targets(result: dict, args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    cmp_ = result.get("compare", {}).get("cases", {})
    ratios = {
        n: c["speedup_explicit_over_usidgpu"]
        for n, c in cmp_.items()
        if c.get("speedup_explicit_over_usidgpu") is not None and c["window"] == 32
    }
    if args.device == "cpu" and not ratios:
        out["cpu_10x_at_window32_step1"] = {
            "statement": "CPU target",
            "evaluated": False,
            "why": "no window-32 comparison with the explicit method ran",
        }
    elif args.device == "cpu":
        out["cpu_10x_at_window32_step1"] = {
            "statement": "usidgpu ≥ 10× faster than the explicit patch-matrix method on CPU, window 32, step 1, k = 16",
            "speedups": ratios,
            "met": bool(ratios) and all(v >= 10 for v in ratios.values()),
        }
    else:
        out["cpu_10x_at_window32_step1"] = {"statement": "CPU target", "evaluated": False, "why": "GPU run"}
    series = {k: v for k, v in result.get("series", {}).items() if isinstance(v, dict) and "speedups" in v}
    if series:
        out["speedup_grows_with_window"] = {
            "statement": f"speed-up explicit / usidgpu grows with the window (images {list(series)} px², "
            f"windows {args.series_windows}, k = {args.k})",
            "speedups": {n: v["speedups"] for n, v in series.items()},
            "largest_over_smallest_window": {
                n: v["speedup_grows_with_window"]["largest_over_smallest_window"] for n, v in series.items()
            },
            "met": all(v["speedup_grows_with_window"]["strictly_increasing"] for v in series.values()),
        }
    gpu_case = cmp_.get("2048")
    if args.device == "gpu":
        t = gpu_case["usidgpu"]["timing"]["median_s"] if gpu_case and gpu_case["window"] == 32 else None
        out["gpu_2048_window32_under_1s"] = {
            "statement": "2048² image, window 32, step 1, k = 16, device='gpu' in under a second",
            "median_s": t,
            "met": t is not None and t < 1.0,
        }
    else:
        out["gpu_2048_window32_under_1s"] = {
            "statement": "2048² image, window 32 in under a second on a GPU",
            "evaluated": False,
            "why": "CPU run (no GPU on this machine; run with --device gpu)",
        }
    bt = result.get("large", {}).get("budget_tiled")
    if bt and "tiled" in bt:
        out["budget_respected"] = {
            "statement": f"{bt['image'][0]}² under budget {bt['budget']}: tiled, and peak RSS growth minus the output "
            "arrays (cleaned + noise) ≤ budget + 100 MB",
            "tiled": bt["tiled"],
            "peak_minus_outputs_MB": bt["peak_minus_outputs_MB"],
            "peak_over_baseline_MB": bt["peak_over_baseline_MB"],
            "met": bool(bt["tiled"] and bt["peak_minus_outputs_within_budget_plus_100MB"]),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    gpu = args.device == "gpu"
    run = start_run("bench_denoise.py", args.device)
    if run is None:
        return 2
    log, sync = run
    avail = status_bytes_meminfo("MemAvailable:")
    args.explicit_max_bytes = int(args.explicit_max_gb * GB) if args.explicit_max_gb else int(0.75 * avail)

    out_path = args.output or RESULTS / f"denoise_{args.device}.json"
    started = time.time()
    result = results_header(
        "bench_denoise (windowed-SVD image denoising: usidgpu.windowed_svd vs the explicit patch matrix)",
        args,
        versions(gpu, extra=("scipy", "sklearn", "threadpoolctl")),
        args.device,
        mem_available_bytes_at_start=avail,
        image="square lattice of Gaussian columns (period, σ, peak above background, background as in "
        "parameters), columns at period/2 + j·period, Poisson noise (numpy default_rng(seed)), float32",
        psnr="10·log10(max(noise-free)² / mean((image − noise-free)²)), all pixels",
        statistic="usidgpu in-process: median of interleaved repetitions (order rotated), one untimed warm-up; "
        "explicit method and large cases: one run per spawned child (time + peak memory)",
        peak_memory="resident-set growth over the child's baseline (after imports, a tiny warm-up run and "
        "generating the image): VmHWM after resetting it through /proc/self/clear_refs",
    )
    announce(log, "bench_denoise", result, f", explicit method up to {args.explicit_max_bytes / GB:.1f} GB")
    sections = {
        "compare": lambda: bench_compare(args, sync, log),
        "series": lambda: bench_series(args, sync, log),
        "large": lambda: bench_large(args, sync, log),
    }
    for name in args.sections:
        t0 = time.time()
        load0 = os.getloadavg()
        res = sections[name]()
        res["section_elapsed_s"] = round(time.time() - t0, 1)
        res["loadavg_before_after"] = [round(load0[0], 2), round(os.getloadavg()[0], 2)]
        result[name] = res
        gc.collect()
    result["targets"] = targets(result, args)
    result["elapsed_s"] = round(time.time() - started, 1)
    result["loadavg_after"] = [round(v, 2) for v in os.getloadavg()]
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=2, default=_json_default) + "\n")
    for key, t in result["targets"].items():
        verdict = "met" if t.get("met") else ("not evaluated" if t.get("evaluated") is False else "NOT met")
        log(f"target {key}: {verdict}")
    log(f"results written to {out_path} ({result['elapsed_s']} s)")
    return 0


def status_bytes_meminfo(field: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) * 1024
    return 0


if __name__ == "__main__":
    sys.exit(main())
