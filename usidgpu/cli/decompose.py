"""``usidgpu svd | pca | nmf | cluster``: decompositions from the command line.

Each command opens the file read-only, streams the chosen Main dataset on the chosen device
within the memory budget (progress bars on stderr for passes longer than a second), prints a
summary with the device and the timing, optionally saves a figure, and writes the results group
(``<Source>-SVD_NNN``, ...) next to the source — through a sidecar file attached in one short
step — or into ``--output``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ..core.errors import InvalidInput
from .common import add_scheduler_options, check_plot_name, check_results_target, write_results


def _analysis_parser(sub: Any, name: str, help_text: str, common: Callable) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help_text)
    p.add_argument("file", help="USID HDF5 file (opened read-only; results are attached at the end), or sample:NAME")
    p.add_argument("-d", "--dataset", help="Main dataset (HDF5 path; default: the file's first)")
    p.add_argument("-k", type=int, required=True, help="number of components / clusters")
    p.add_argument("--plot", metavar="FIGURE", help="save a summary figure (.png, .pdf, .svg)")
    p.add_argument("--output", metavar="OUT.h5", help="write the results group into this file instead of the source")
    p.add_argument("--no-write", action="store_true", help="compute and report only")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    common(p)
    p.set_defaults(func=cmd_decompose)
    return p


def add_parser(sub: Any, common: Callable) -> None:
    """Register the decomposition commands on the CLI's subparsers."""
    for name, help_text in (("svd", "truncated SVD of a Main dataset"), ("pca", "PCA (SVD of the centred data)")):
        p = _analysis_parser(sub, name, help_text, common)
        p.add_argument("--method", choices=("auto", "gram", "randomized", "exact"), default="auto")
        p.add_argument("--iterations", type=int, default=None, help="power iterations (randomized method)")
        p.add_argument("--engine", choices=("usidgpu", "cuml"), default="usidgpu")
        if name == "svd":
            add_scheduler_options(p)
    p = _analysis_parser(sub, "nmf", "non-negative matrix factorization of a Main dataset", common)
    p.add_argument("--solver", choices=("hals", "mu"), default="hals")
    p.add_argument("--init", choices=("nndsvda", "nndsvd", "random"), default="nndsvda")
    p.add_argument("--iterations", type=int, default=200, help="maximum iterations")
    p.add_argument("--tol", type=float, default=1e-4)
    p = _analysis_parser(sub, "cluster", "k-means clustering of the positions of a Main dataset", common)
    p.add_argument("--features", choices=("raw", "svd"), default="raw", help="cluster spectra or SVD scores")
    p.add_argument("--components", type=int, default=None, help="SVD scores used with --features svd")
    p.add_argument("--iterations", type=int, default=300, help="maximum Lloyd iterations")
    p.add_argument("--engine", choices=("usidgpu", "cuml"), default="usidgpu")
    add_scheduler_options(p)


def _fmt(values: np.ndarray, n: int = 8) -> str:
    shown = ", ".join(f"{v:.4g}" for v in np.asarray(values)[:n])
    return f"[{shown}{', …' if len(values) > n else ''}]"


def _summary(result: Any, seconds: float) -> list[str]:
    tool = result.tool
    lines = []
    if tool in ("SVD", "PCA"):
        share = result.explained_variance_ratio if tool == "PCA" else result.energy_ratio
        what = "of the variance" if tool == "PCA" else "of ‖X‖²"
        lines.append(f"method        {result.parameters.get('method_reason', result.method)}")
        lines.append(f"singular values {_fmt(result.S)}")
        lines.append(f"{result.k} components hold {float(np.sum(share)):.2%} {what}")
    elif tool == "NMF":
        lines.append(
            f"{result.n_iter} iterations ({result.parameters['solver']}), reconstruction error "
            f"‖X − WH‖ = {result.reconstruction_err:.4g}"
        )
    else:
        lines.append(
            f"{result.n_iter} iterations on {result.features} features, inertia {result.inertia:.4g}, "
            f"cluster sizes {list(map(int, result.counts))}"
        )
    lines.append(f"time          {seconds:.2f} s")
    return lines


def _compute(args: argparse.Namespace, ds: Any, device: Any) -> Any:
    from ..decompose import kmeans, nmf, pca, svd

    progress = not args.no_progress
    common = dict(device=device, budget=args.memory, progress=progress)
    if args.command in ("svd", "pca"):
        func = svd if args.command == "svd" else pca
        n_iter = "auto" if args.iterations is None else args.iterations
        return func(ds, args.k, method=args.method, n_iter=n_iter, engine=args.engine, **common)
    if args.command == "nmf":
        return nmf(ds, args.k, solver=args.solver, init=args.init, max_iter=args.iterations, tol=args.tol, **common)
    return kmeans(
        ds,
        args.k,
        features=args.features,
        n_components=args.components,
        max_iter=args.iterations,
        engine=args.engine,
        **common,
    )


def cmd_decompose(args: argparse.Namespace) -> int:
    """Run one decomposition command; returns the exit status."""
    from ..core.device import select_device
    from ..usid.file import USIDFile

    device = select_device(args.device)
    check_plot_name(args.plot)  # a bad figure name must fail before the work, not after it
    if not args.no_write:
        check_results_target(args.output or args.file)  # before the work, not after it
    if getattr(args, "scheduler", None) is not None:
        return _block_wise(args, device)
    with USIDFile(args.file) as f:
        ds = f.dataset(args.dataset)
        label = {"svd": "SVD", "pca": "PCA", "nmf": "NMF", "cluster": "k-means"}[args.command]
        print(f"{label} of {ds.name} in {args.file} ({ds.shape[0]} × {ds.shape[1]} {ds.dtype}), k = {args.k}")
        print(f"device        {device}")
        start = time.perf_counter()
        result = _compute(args, ds, device)
        for line in _summary(result, time.perf_counter() - start):
            print(line)
        if args.plot:
            from ..viz import plot_decomposition, save_figure

            save_figure(plot_decomposition(result), args.plot)
            print(f"figure        {args.plot}")
        if not args.no_write:
            write_results(lambda: result.write(ds, output=args.output), args.output or args.file)
    return 0


def _block_wise(args: argparse.Namespace, device: Any) -> int:
    """``--scheduler``: the block-wise Process (Gram tree reduction / k-means partial sums) on the
    chosen executor; written as the same results group, resumable with ``usidgpu resume``."""
    from ..decompose.blockwise import kmeans_blockwise, svd_blockwise
    from ..usid.file import USIDFile

    problems = []
    if args.no_write:
        problems.append("--no-write (block-wise runs write their results group as they finish)")
    if args.plot:
        problems.append("--plot (plot the results group afterwards)")
    if args.command == "svd" and (args.method not in ("auto", "gram") or args.engine != "usidgpu"):
        problems.append("--method/--engine other than gram/usidgpu (the block-wise SVD is the Gram method)")
    if args.command == "cluster" and (args.features != "raw" or args.engine != "usidgpu"):
        problems.append("--features svd or --engine cuml (block-wise k-means clusters raw spectra)")
    if problems:
        raise InvalidInput(f"{args.file}: --scheduler {args.scheduler} does not go with " + "; ".join(problems))
    options = dict(
        scheduler=args.scheduler,
        workers=args.workers,
        device=device.kind,
        budget=args.memory,
        output=args.output,
        progress=not args.no_progress,
    )
    with USIDFile(args.file) as f:
        ds = f.dataset(args.dataset)
        label = "SVD" if args.command == "svd" else "k-means"
        print(f"{label} of {ds.name} in {args.file} ({ds.shape[0]} × {ds.shape[1]} {ds.dtype}), k = {args.k}")
        workers = f" ({args.workers} workers)" if args.workers else ""
        print(f"device        {device}; blocks on {args.scheduler}{workers}")
        start = time.perf_counter()

        def run() -> str:
            if args.command == "svd":
                return svd_blockwise(ds, args.k, **options)
            return kmeans_blockwise(ds, args.k, max_iter=args.iterations, **options)

        write_results(run, args.output or args.file)
        print(f"time          {time.perf_counter() - start:.2f} s")
    return 0
