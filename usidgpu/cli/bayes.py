"""``usidgpu bayes``: Bayesian inference of R(V) and C on G-mode I–V data (pycroscopy's
``GIVBayesian``), every pixel at once; results group ``<Main>-Bayesian_Inference_NNN``."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from .common import check_plot_name, check_results_target, fail, write_results


def add_parser(sub: Any, common: Callable) -> None:
    from ..bayes.giv import GIVSettings

    defaults = GIVSettings()
    p = sub.add_parser("bayes", help="G-mode I–V Bayesian inference: R(V) and C per pixel (pycroscopy GIVBayesian)")
    p.add_argument("file", help="USID HDF5 file with G-mode current (positions × one bias period), or sample:NAME")
    p.add_argument("-d", "--dataset", help="Main dataset (default: the first)")
    p.add_argument(
        "--grid-points",
        type=int,
        default=defaults.num_x_steps,
        metavar="N",
        help="bias grid points of R(V), both sweeps together (pycroscopy num_x_steps; 250 → 125 per sweep)",
    )
    p.add_argument("--samples", type=int, default=defaults.num_samples, metavar="S", help="posterior draws (2000)")
    p.add_argument("--frequency", type=float, default=None, metavar="HZ", help="excitation frequency (default: file)")
    p.add_argument("--bias", default=None, metavar="NAME", help="dataset or attribute holding the bias waveform")
    p.add_argument("--r-extra", type=float, default=defaults.r_extra, metavar="OHM", help="series resistance (110)")
    p.add_argument("--gamma", type=float, default=defaults.gam, help="noise std of the current (0.03)")
    p.add_argument("--sigma", type=float, default=defaults.sigma, help="prior width of the conductance (10)")
    p.add_argument("--sigma-c", type=float, default=defaults.sigma_c, help="prior width of C (1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the posterior draws")
    p.add_argument("--voltages", type=float, nargs="+", default=None, metavar="V", help="biases of the R maps")
    p.add_argument("--plot", metavar="FIGURE", help="save maps of R and C as .png/.pdf/.svg")
    p.add_argument("--output", metavar="OUT.h5", help="results file (default: the source file)")
    p.add_argument("--workers", type=int, default=None, help="threads (default: this process only)")
    common(p)
    p.set_defaults(func=cmd_bayes)


def cmd_bayes(args: argparse.Namespace) -> int:
    """Run ``usidgpu bayes``; returns the exit status."""
    import h5py

    from ..bayes.giv import GIVSettings
    from ..bayes.process import GIVBayesian
    from ..core.device import select_device
    from ..usid.file import USIDFile

    device = select_device(args.device)
    check_plot_name(args.plot)
    if args.grid_points < 4:
        fail(f"{args.file}: --grid-points {args.grid_points}: need at least 4")
    if args.samples < 2:
        fail(f"{args.file}: --samples {args.samples}: need at least 2")
    for name in ("gamma", "sigma", "sigma_c"):
        if not getattr(args, name) > 0:
            fail(f"{args.file}: --{name.replace('_', '-')} must be positive")
    settings = GIVSettings(
        num_x_steps=args.grid_points,
        r_extra=args.r_extra,
        gam=args.gamma,
        sigma=args.sigma,
        sigma_c=args.sigma_c,
        num_samples=args.samples,
    )
    check_results_target(args.output or args.file)
    t0 = time.perf_counter()
    with USIDFile(args.file) as f:
        ds = f.dataset(args.dataset)
        what = f"{ds.name} in {args.file}"
        try:
            proc = GIVBayesian(
                ds,
                args.frequency,
                args.bias,
                settings,
                seed=args.seed,
                device=device.kind,
                budget=args.memory,
                output=args.output,
                scheduler="threads" if args.workers else None,
                workers=args.workers,
            )
        except ValueError as exc:
            fail(f"{args.file}: {str(exc).strip().splitlines()[0]}")
        m = proc.model
        print(f"G-mode I–V Bayesian inference of {what}")
        print(
            f"data          {ds.shape[0]} positions × {ds.shape[1]} points, bias ±{np.abs(m.bias).max():.3g} V, "
            f"f = {m.frequency:g} Hz"
        )
        print(
            f"model         {m.k} grid points per sweep, r_extra {m.r_extra:g}, γ {m.gam:g}, σ {m.sigma:g}, "
            f"σ_C {m.sigma_c:g}, {m.num_samples} samples; device {device}"
        )
        group = write_results(proc.run, args.output or args.file)
    elapsed = time.perf_counter() - t0
    target = args.output or args.file
    if group is None:  # kept for later: nothing in the target to summarize yet
        return 0

    with h5py.File(target, "r") as h:
        g = h[group]
        r = g["Resistance"][()]
        c = g["Capacitance"][()]
        cu = g["Capacitance"].attrs.get("units", "")
        ru = g["Resistance"].attrs.get("units", "")
    if isinstance(cu, bytes):
        cu, ru = cu.decode(), ru.decode() if isinstance(ru, bytes) else ru
    print(f"capacitance   forward median {np.median(c[:, 0]):.4g} {cu}, reverse median {np.median(c[:, 1]):.4g} {cu}")
    print(f"resistance    median {np.nanmedian(r):.4g} {ru} over all pixels and biases")
    print(f"time          {elapsed:.2f} s")
    if args.plot:
        from ..viz import plot_giv_maps, save_figure

        with h5py.File(target, "r") as h:
            fig = plot_giv_maps(h[group], voltages=args.voltages)
            save_figure(fig, args.plot)
        print(f"figure        {args.plot}")
    return 0
