"""``usidgpu denoise``: windowed SVD of an image (USID file, or TIFF/PNG/JPEG/.npy)."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import InvalidInput
from .common import add_scheduler_options, check_plot_name, check_results_target, write_results


def add_parser(sub: Any, common: Callable) -> None:
    p = sub.add_parser("denoise", help="windowed SVD denoising of an image: raw → cleaned → removed noise")
    p.add_argument("file", help="USID HDF5 file, sample:NAME, or a plain image (.tif, .png, .jpg, .npy)")
    p.add_argument("-d", "--dataset", help="Main dataset of a USID file (default: the first)")
    p.add_argument("--window", type=int, default=None, help="window size in px (default: from the lattice FFT)")
    p.add_argument("--step", type=int, default=1, help="distance between window origins in px (default 1)")
    p.add_argument("-k", type=int, default=None, help="components kept (default: Gavish–Donoho threshold)")
    p.add_argument("--plot", metavar="FIGURE", help="save raw | cleaned | noise + scree (.png, .pdf, .svg)")
    p.add_argument(
        "--output",
        metavar="OUT.h5",
        help="results file (default: next to a USID source; for plain images IMAGE.h5, holding the image too)",
    )
    p.add_argument("--no-write", action="store_true", help="compute and report only")
    p.add_argument("--no-progress", action="store_true", help=argparse.SUPPRESS)
    add_scheduler_options(p)
    common(p)
    p.set_defaults(func=cmd_denoise)


def cmd_denoise(args: argparse.Namespace) -> int:
    """Run ``usidgpu denoise``; returns the exit status."""
    from ..core.device import select_device
    from ..core.errors import FileProblem
    from ..denoise import windowed_svd
    from ..imageio import image_to_usid, is_image_file, read_image
    from ..usid.file import USIDFile

    device = select_device(args.device)
    check_plot_name(args.plot)
    if args.scheduler is not None and (args.step != 1 or args.no_write or args.plot):
        raise InvalidInput(
            f"{args.file}: --scheduler runs the step-1 windowed SVD and writes its results group; "
            "drop --step, --no-write and --plot (plot the results group afterwards)"
        )
    source_path = args.file
    if is_image_file(args.file):
        image = read_image(args.file)
        if not args.no_write:
            out = Path(args.output or f"{args.file}.h5")
            if out.exists():
                raise FileProblem(f"{out}: exists already; choose another file with --output")
            image_to_usid(image, out)
            print(f"image         {args.file} → USID {out}")
            source_path, args.output = str(out), None
    elif not args.no_write:
        check_results_target(args.output or args.file)
    start = time.perf_counter()
    if is_image_file(args.file) and args.no_write:
        result = windowed_svd(image, window=args.window, step=args.step, k=args.k, device=device, budget=args.memory)
        _report(args.file, image.shape, device, result, time.perf_counter() - start, args)
        return 0
    with USIDFile(source_path) as f:
        ds = f.dataset(args.dataset)
        if args.scheduler is not None:
            return _block_wise(args, ds, source_path, device)
        result = windowed_svd(ds, window=args.window, step=args.step, k=args.k, device=device, budget=args.memory)
        _report(f"{ds.name} in {source_path}", (ds.shape[0],), device, result, time.perf_counter() - start, args)
        if not args.no_write:
            write_results(lambda: result.write(ds, output=args.output), args.output or source_path)
    return 0


def _report(what: str, shape: Any, device: Any, result: Any, seconds: float, args: argparse.Namespace) -> None:
    frames = result.raw[None] if result.raw.ndim == 2 else result.raw
    print(f"windowed SVD of {what} ({frames.shape[0]} frame(s) of {frames.shape[1]} × {frames.shape[2]} px)")
    print(f"device        {device}")
    print(f"window        {result.window[0]}×{result.window[1]} px, step {result.step[0]}: {result.window_rule}")
    print(f"components    k = {result.k}: {result.k_rule}")
    print(f"removed       noise std {float(np.std(result.noise)):.4g} {result.units}")
    if result.parameters.get("tiles"):
        print(f"tiles         {result.parameters['tile_edge']} px edges (memory budget)")
    print(f"time          {seconds:.2f} s")
    if args.plot:
        from ..viz import plot_denoise, save_figure

        save_figure(plot_denoise(result), args.plot)
        print(f"figure        {args.plot}")


def _block_wise(args: argparse.Namespace, ds: Any, source_path: str, device: Any) -> int:
    """``--scheduler``: bands of image rows with halos on the chosen executor (step 1 only)."""
    from ..denoise.blockwise import windowed_svd_blockwise
    from ..denoise.window_size import window_from_fft
    from ..usid.frames import frames_of

    window = args.window
    if window is None:
        frames, _ = frames_of(ds)
        window = window_from_fft(frames[0])
    workers = f" ({args.workers} workers)" if args.workers else ""
    print(f"windowed SVD of {ds.name} in {source_path}, window {window} px, bands on {args.scheduler}{workers}")
    start = time.perf_counter()
    write_results(
        lambda: windowed_svd_blockwise(
            ds,
            window,
            args.k,
            scheduler=args.scheduler,
            workers=args.workers,
            device=device.kind,
            budget=args.memory,
            output=args.output,
            progress=not args.no_progress,
        ),
        args.output or source_path,
    )
    print(f"time          {time.perf_counter() - start:.2f} s")
    return 0
