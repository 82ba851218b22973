#!/usr/bin/env python
"""G-mode I–V Bayesian inference: usidgpu ``giv_bayesian`` (all pixels at once) vs the per-pixel
loop the way pycroscopy 0.60's ``GIVBayesian`` computes it.

Data: :func:`usidgpu.bayes.simulate_giv` — ``--pixels`` (4096) pixels, one bias period of
``--points`` (1024) samples, ±3 V at 1 kHz, a diode-like R(V) with a per-pixel shunt, C = 1 pF,
noise 0.03 nA. Parameters: pycroscopy's defaults (250 grid points = 125 per sweep, r_extra 110,
γ 0.03, σ 10, σ_C 1, 2000 samples), both sweeps of every pixel.

* **usidgpu**: ``giv_bayesian(current, bias, f)`` on every pixel — per sweep one factorization
  of the posterior, every pixel's mean from one GEMM, R statistics from 2000 common draws —
  timed in this process (``--repeats`` repetitions after a warm-up, median).
* **pycroscopy loop**: for every pixel and sweep, ``do_bayesian_inference`` as pycroscopy writes
  it (A built in a Python loop, dense N×N noise and Laplacian matrices, ``np.linalg.inv`` of the
  posterior precision, ``scipy.linalg.sqrtm`` of Σ_gg, 2000 fresh normal draws, the full
  ``(1/S)(1/S)ᵀ`` second-moment matrix), serial, one process. It runs on ``--baseline-pixels``
  (64) pixels in the same process, right after usidgpu; its time for all pixels is that per-pixel
  time × ``--pixels`` (the loop is the same for every pixel — ``--baseline-pixels 4096`` runs all).
* Agreement on the baseline pixels: R mean (Monte Carlo error of both), R std, C.

Results: ``benchmarks/results/bayes_<device>.json``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from harness import Case, _json_default, _r, run_interleaved
from machine import gpu_check, gpu_name, machine_info, threadpools, versions
from scipy.linalg import sqrtm

RESULTS = Path(__file__).resolve().parent / "results"


def pycroscopy_inference(i_meas, bias, freq, num_x_steps, r_extra=110.0, gam=0.03, sigma=10.0, sigma_c=1.0, n_s=2000):
    """One sweep as pycroscopy's ``do_bayesian_inference(econ=True)`` computes it."""
    num_x_steps = int(num_x_steps)
    if num_x_steps % 2 == 0:
        num_x_steps += 1
    t = np.linspace(0, 1.0 / freq, len(bias))
    dt = t[2] - t[1]
    dv = np.diff(bias) / dt
    dv = np.append(dv, dv[-1])
    max_volts = max(bias)
    x = np.linspace(-max_volts, max_volts, num_x_steps)
    dx = x[1] - x[0]
    n = len(bias)
    a = np.zeros((n, num_x_steps + 1))
    for j in range(n):
        ix = int(round(np.floor((bias[j] + max_volts) / dx) + 1))
        ix = max(min(ix, len(x) - 1), 1)
        a[j, ix] = bias[j] * (bias[j] - x[ix - 1]) / (x[ix] - x[ix - 1])
        a[j, ix - 1] = bias[j] * (1.0 - (bias[j] - x[ix - 1]) / (x[ix] - x[ix - 1]))
    a[:, num_x_steps] = dv + r_extra * bias
    o = (1.0 / gam**2) * np.eye(n)
    lap = (-np.diag(x[:-1] ** 0, -1) - np.diag(x[:-1] ** 0, 1) + 2.0 * np.diag(x**0, 0)) / dx / dx
    lap[0, 0] = lap[-1, -1] = 1.0 / dx / dx
    m0 = np.append(3.0 * np.ones(num_x_steps), 0)
    p0 = np.zeros((num_x_steps + 1, num_x_steps + 1))
    p0[:num_x_steps, :num_x_steps] = 1.0 / sigma**2 * (np.eye(num_x_steps) + np.linalg.matrix_power(lap, 3))
    p0[num_x_steps, num_x_steps] = 1.0 / sigma_c**2
    cov = np.linalg.inv(a.T @ (o @ a) + p0)
    m = cov @ (a.T @ (o @ i_meas) + p0 @ m0)
    irec = a @ m
    si = np.tile(m[:num_x_steps], (n_s, 1)).T + np.real(sqrtm(cov[:num_x_steps, :num_x_steps])) @ np.random.randn(
        num_x_steps, n_s
    )
    mr = np.sum(1.0 / si, 1) / n_s
    m2r = (1.0 / si) @ (1.0 / si).T / n_s
    vr = m2r - mr * mr.T
    return {"x": x, "mR": mr, "vR": np.diag(vr), "Irec": irec, "cValue": m[-1]}


def pycroscopy_loop(current, bias, freq, num_x_steps, n_s):
    """GIVBayesian._unit_computation + _write_results_chunk for a block of pixels, serial."""
    roll = int(bias.size * -0.25)
    half = bias.size // 2
    rb = np.roll(bias, roll)
    data = np.roll(current, roll, axis=1)
    k = num_x_steps // 2
    r = np.zeros((current.shape[0], 2 * (k + 1 - k % 2)))
    v = np.zeros_like(r)
    c = np.zeros((current.shape[0], 2))
    for p in range(current.shape[0]):
        rev = pycroscopy_inference(-data[p, :half], -rb[:half], freq, k, n_s=n_s)
        fwd = pycroscopy_inference(data[p, half:], rb[half:], freq, k, n_s=n_s)
        r[p] = np.hstack([fwd["mR"], rev["mR"]])
        v[p] = np.hstack([fwd["vR"], rev["vR"]])
        c[p] = 0.5e3 * np.array([fwd["cValue"], rev["cValue"]])
    return r, v, c


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    p.add_argument("--pixels", type=int, default=4096)
    p.add_argument("--points", type=int, default=1024, help="samples per bias period")
    p.add_argument("--grid-points", type=int, default=250)
    p.add_argument("--samples", type=int, default=2000)
    p.add_argument("--baseline-pixels", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--output", type=Path, default=None)
    args = p.parse_args(argv)
    if args.device == "gpu":
        problem = gpu_check()
        if problem:
            print(f"bench_bayes: error: {problem}", file=sys.stderr)
            return 2
    from usidgpu.bayes import giv_bayesian, simulate_giv
    from usidgpu.bayes.giv import diode_conductance

    log = print
    sim = simulate_giv(
        args.pixels, args.points, noise=0.03, g_shunt=np.linspace(0.4, 0.8, args.pixels), v_t=1.0, i_sat=0.1
    )
    current, bias, f = sim["current"], sim["bias"], sim["frequency"]
    if args.device == "gpu":
        import cupy

        def sync() -> None:
            cupy.cuda.Device().synchronize()

        cur_dev = cupy.asarray(current)
    else:

        def sync() -> None:
            pass

        cur_dev = current
    keep: dict[str, Any] = {}

    def run_usid() -> Any:
        return giv_bayesian(cur_dev, bias, f, num_x_steps=args.grid_points, num_samples=args.samples)

    def metrics(r: Any) -> dict:
        keep["r"] = r
        return {}

    log(
        f"[usidgpu] {args.pixels} pixels × {args.points} points, {args.grid_points} grid points, {args.samples} samples"
    )
    timings, _ = run_interleaved(
        {"usidgpu": Case(run_usid, f"usidgpu.bayes.giv_bayesian(device={args.device!r})", metrics)},
        args.repeats,
        sync,
        log,
    )
    r = keep.pop("r")
    from usidgpu.core.arrays import asnumpy

    res, rstd, cap = asnumpy(r.resistance), asnumpy(r.resistance_std), asnumpy(r.capacitance)
    nb = min(args.baseline_pixels, args.pixels)
    log(f"[pycroscopy loop] {nb} pixels × 2 sweeps, serial")
    np.random.seed(0)
    t0 = time.perf_counter()
    br, bv, bc = pycroscopy_loop(current[:nb], bias, f, args.grid_points, args.samples)
    t_base = time.perf_counter() - t0
    per_pixel = t_base / nb
    t_all = per_pixel * args.pixels
    t_us = timings["usidgpu"]["median_s"]
    x = r.bias
    meas = np.abs(x) > 0.5
    g_true = np.stack([diode_conductance(x, gs, 0.1, 1.0) for gs in sim["g_shunt"][:nb]])
    agree = {
        "R_mean_median_rel_diff_measurable": _r(float(np.median(np.abs(res[:nb] - br)[:, meas] / br[:, meas]))),
        "R_mean_max_rel_diff_measurable": _r(float(np.max(np.abs(res[:nb] - br)[:, meas] / br[:, meas]))),
        "R_std_median_rel_diff_measurable": _r(
            float(np.median(np.abs(rstd[:nb] - np.sqrt(np.maximum(bv, 0)))[:, meas] / rstd[:nb][:, meas]))
        ),
        "C_max_rel_diff": _r(float(np.max(np.abs(cap[:nb] - bc) / bc))),
        "R_vs_truth_median_rel_err_usidgpu": _r(float(np.median(np.abs(res[:nb] * g_true - 1)[:, meas]))),
        "R_vs_truth_median_rel_err_pycroscopy": _r(float(np.median(np.abs(br * g_true - 1)[:, meas]))),
        "note": "R mean/std are Monte Carlo estimates (2000 draws each, independent draws on the two sides); "
        "'measurable' = |V| > 0.5 V",
    }
    out = {
        "benchmark": "bench_bayes",
        "timestamp": _dt.datetime.now().isoformat(timespec="seconds"),
        "machine": machine_info(),
        "gpu": gpu_name() if args.device == "gpu" else None,
        "versions": versions(args.device == "gpu"),
        "threadpools": threadpools(),
        "parameters": vars(args) | {"output": str(args.output) if args.output else None},
        "data": "simulate_giv: ±3 V sine at 1 kHz, diode-like R(V) (shunt 1.25–2.5 GΩ, I_s 0.1 nA, V_T 1 V), "
        "C = 1 pF, noise 0.03 nA",
        "usidgpu": timings["usidgpu"],
        "pycroscopy_loop": {
            "method": "do_bayesian_inference per pixel and sweep (loop-built A, dense O and Laplacian, inv, "
            "sqrtm(Σ_gg), fresh randn, full (1/S)(1/S)ᵀ), serial",
            "pixels_run": nb,
            "seconds_run": round(t_base, 3),
            "seconds_per_pixel": _r(per_pixel),
            "seconds_all_pixels_extrapolated": _r(t_all),
            "extrapolated": nb < args.pixels,
        },
        "speedup_pycroscopy_over_usidgpu": _r(t_all / t_us),
        "agreement": agree,
        "target": {"statement": "≥ 100× on CPU", "met": bool(t_all / t_us >= 100) if args.device == "cpu" else None},
    }
    log(
        f"usidgpu {t_us:.3f} s; pycroscopy loop {per_pixel * 1e3:.1f} ms/pixel → {t_all:.1f} s for {args.pixels} "
        f"pixels; ×{t_all / t_us:.0f}"
    )
    log(json.dumps(agree, indent=1))
    path = args.output or RESULTS / f"bayes_{args.device}.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(out, indent=1, default=_json_default, ensure_ascii=False) + "\n")
    log(f"→ {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
