"""``usidgpu atoms``: find and fit the atomic columns of a STEM image (USID file, or TIFF/PNG/.npy),
or track them through a stack of frames."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .common import check_plot_name, check_results_target, fail, write_results


def add_parser(sub: Any, common: Callable) -> None:
    p = sub.add_parser(
        "atoms", help="find and fit atomic columns: sublattices, lattice, vacancies, displacements (or --track)"
    )
    p.add_argument("file", help="USID HDF5 file, sample:NAME, or a plain image (.tif, .png, .jpg, .npy)")
    p.add_argument("-d", "--dataset", help="Main dataset of a USID file (default: the first)")
    p.add_argument(
        "--spacing", type=float, default=None, metavar="PX", help="column spacing in px (default: autocorrelation)"
    )
    p.add_argument("--threshold", type=float, default=0.25, metavar="F", help="column prominence fraction (0.25)")
    p.add_argument(
        "--sublattices",
        choices=("auto", "1", "2", "3"),
        default="auto",
        help="sublattices to separate (default auto: 2 when the fitted intensities are bimodal)",
    )
    p.add_argument("--frame", type=int, default=None, metavar="I", help="which frame of a stack to analyze")
    p.add_argument("--track", action="store_true", help="find the columns in every frame of a stack and link them")
    p.add_argument(
        "--max-gap",
        type=int,
        default=0,
        metavar="N",
        help="with --track: a column missing from up to N frames keeps its track (gap closing; default 0)",
    )
    p.add_argument(
        "--csv", metavar="OUT.csv", help="write the column table (with --track: every frame's, with track ids)"
    )
    p.add_argument(
        "--plot", metavar="FIGURE", help="save the overlay (with --track: the trajectories) as .png/.pdf/.svg"
    )
    p.add_argument(
        "--strain",
        metavar="FIGURE",
        help="save maps of the local strain and rotation relative to the fitted lattice (.png/.pdf/.svg)",
    )
    p.add_argument(
        "--distortion",
        metavar="FIGURE_OR_CSV",
        help="save the fitted scan distortion — fast- and slow-scan spacing profiles, line shift — as a figure "
        "(.png/.pdf/.svg) or a table (.csv, one row per pixel index)",
    )
    p.add_argument(
        "--no-scan-correction",
        action="store_true",
        help="measure against one affine lattice on the image: no fit of the scan's flyback and drift",
    )
    p.add_argument(
        "--output",
        metavar="OUT.h5",
        help="results file (default: next to a USID source; for plain images IMAGE.h5, holding the image too)",
    )
    p.add_argument(
        "--precision",
        choices=("auto", "float64", "float32"),
        default="auto",
        help="arithmetic of the GPU fit kernel (default auto: float32 on cards with slow double precision)",
    )
    p.add_argument(
        "--fit",
        choices=("subtract", "auto", "joint", "none"),
        default="subtract",
        help="column fit: each on the image minus its neighbours (default); that, then all jointly with one width "
        "per kind of column where columns are wider than a fifth of their spacing (auto; about a second per thousand "
        "columns; for lattices whose columns all look alike, not for distorted scans); always jointly; or each alone",
    )
    p.add_argument("--no-write", action="store_true", help="compute and report only")
    common(p)
    p.set_defaults(func=cmd_atoms)


def _n_frames(data: Any) -> int:
    if hasattr(data, "n_spectral"):
        return int(data.n_spectral)
    return 1 if np.ndim(data) == 2 else int(np.shape(data)[0])


def _check_frames(what: str, n: int, args: argparse.Namespace) -> None:
    """The frame choice must fit the data: one image, one frame of a stack, or --track."""
    if args.max_gap < 0:
        fail(f"--max-gap must be a number of frames >= 0, got {args.max_gap}")
    if args.max_gap and not args.track:
        fail("--max-gap closes gaps in tracks: it needs --track")
    if args.track:
        if args.frame is not None:
            fail(f"{what}: --frame and --track exclude each other (--track uses every frame)")
        if n < 2:
            fail(f"{what}: --track needs a stack of frames; this is a single image")
    elif args.frame is not None:
        if not -n <= args.frame < n:
            fail(f"{what}: frame {args.frame} does not exist ({n} frame(s))")
    elif n > 1:
        fail(f"{what}: {n} frames: choose one with --frame I, or track the columns through all of them with --track")


def cmd_atoms(args: argparse.Namespace) -> int:
    """Run ``usidgpu atoms``; returns the exit status."""
    from ..core.device import select_device
    from ..core.errors import FileProblem
    from ..imageio import image_to_usid, is_image_file, read_image
    from ..usid.file import USIDFile

    device = select_device(args.device)
    check_plot_name(args.plot)
    check_plot_name(args.strain, "--strain")
    if not (args.distortion or "").lower().endswith(".csv"):
        check_plot_name(args.distortion, "--distortion")
    if args.strain and args.track:
        fail("--strain maps the columns of one image: choose a frame with --frame instead of --track")
    if args.distortion and args.track:
        fail("--distortion shows the scan of one image: choose a frame with --frame instead of --track")
    if args.distortion and args.no_scan_correction:
        fail("--distortion saves the fitted scan distortion: drop --no-scan-correction")
    if args.spacing is not None and not args.spacing > 1:
        fail(f"{args.file}: --spacing {args.spacing:g}: the column spacing must be more than 1 px")
    if not 0 <= args.threshold < 1:
        fail(f"{args.file}: --threshold {args.threshold:g}: a fraction in [0, 1)")
    write = not args.no_write
    if is_image_file(args.file):
        image = read_image(args.file)
        _check_frames(args.file, _n_frames(image), args)
        out = Path(args.output or f"{args.file}.h5")
        if write and out.exists():
            raise FileProblem(f"{out}: exists already; choose another file with --output")
        # computed before anything is written: a failure leaves no file
        result = _track(args.file, image, device, args) if args.track else _analyze(args.file, image, device, args)
        if not args.track:
            _report(args.file, result, device, args)
        strain = _strain(result, args)
        if write:
            t0 = time.perf_counter()
            main = image_to_usid(image, out)
            print(f"image         {args.file} → USID {out}")
            with USIDFile(out) as f:
                write_results(lambda: result.write(f.dataset(main)), str(out))
            print(f"time          {time.perf_counter() - t0:.2f} s (writing)")
        _exports(result, image, args, strain)
        return 0
    if write:
        check_results_target(args.output or args.file)
    with USIDFile(args.file) as f:
        ds = f.dataset(args.dataset)
        what = f"{ds.name} in {args.file}"
        if len(ds.pos_dims) != 2 or not ds.pos_layout.is_grid:
            fail(
                f"{what}: not an image: atomic columns need two position dimensions on a full grid, "
                f"found {[d.name for d in ds.pos_dims]} ({ds.pos_layout.kind})"
            )
        _check_frames(what, _n_frames(ds), args)
        if args.track:
            result = _track(what, ds, device, args)
        else:
            result = _analyze(what, ds, device, args)
            _report(what, result, device, args)
        strain = _strain(result, args)
        if write:
            t0 = time.perf_counter()
            write_results(lambda: result.write(ds, output=args.output), args.output or args.file)
            print(f"time          {time.perf_counter() - t0:.2f} s (writing)")
        _exports(result, ds, args, strain)
    return 0


def _analyze(what: str, data: Any, device: Any, args: argparse.Namespace) -> Any:
    from ..atoms.analysis import analyze

    n_sub = args.sublattices if args.sublattices == "auto" else int(args.sublattices)
    start = time.perf_counter()
    try:
        result = analyze(
            data,
            spacing=args.spacing,
            threshold=args.threshold,
            n_sublattices=n_sub,
            frame=args.frame,
            device=device,
            precision=args.precision,
            scan_distortion=not args.no_scan_correction,
            neighbours=args.fit,
        )
    except ValueError as exc:  # nothing to find: name the input
        fail(f"{what}: {str(exc).strip().splitlines()[0]}")
    result.timings["total_s"] = time.perf_counter() - start
    return result


def _length(vector: np.ndarray, pixel_size: tuple[float, float], units: str) -> str:
    px = float(np.hypot(*vector))
    if units == "px":
        return f"{px:.3f} px"
    phys = float(np.hypot(vector[0] * pixel_size[0], vector[1] * pixel_size[1]))
    return f"{px:.3f} px = {phys:.4g} {units}"


def _report(what: str, r: Any, device: Any, args: argparse.Namespace) -> None:
    """The short text report of one analysis."""
    n = r.n_columns
    h, w = r.image_shape
    print(f"atomic columns of {what} ({h} × {w} px, frame {r.frame})")
    converged = np.asarray(r.fit.converged, dtype=bool)
    print(f"columns       {n} found, {int(converged.sum())} converged ({100.0 * converged.mean():.1f} %)")
    spacing = float(r.parameters["spacing"])
    rule = "given" if args.spacing is not None else "from the image's autocorrelation"
    phys = "" if r.units == "px" else f" = {spacing * r.pixel_size[1]:.4g} {r.units}"
    print(f"spacing       {spacing:.3f} px{phys}: {rule}")
    counts = np.bincount(np.asarray(r.sublattice, dtype=np.int64), minlength=int(r.parameters["n_sublattices"]))
    print(f"sublattices   {r.sublattice_rule}")
    print("              " + ", ".join(f"sublattice {s}: {int(c)} columns" for s, c in enumerate(counts)))
    if r.lattice is not None:
        a, b = np.asarray(r.lattice.vectors, dtype=np.float64)
        cos = float(np.dot(a, b) / (np.hypot(*a) * np.hypot(*b)))
        angle = float(np.degrees(np.arccos(np.clip(cos, -1, 1))))
        print(f"lattice       a = ({a[0]:.3f}, {a[1]:.3f}) px, |a| = {_length(a, r.pixel_size, r.units)}")
        print(f"              b = ({b[0]:.3f}, {b[1]:.3f}) px, |b| = {_length(b, r.pixel_size, r.units)}")
        print(f"              angle {angle:.2f}°, {len(r.lattice.motif)} site(s) per cell")
    else:
        print("lattice       none (too few or disordered columns)")
    if r.distortion is not None:
        print(f"scan          {r.distortion.summary()}")
        print("              corrected: lattice, vacancies, displacements and strain are measured on the specimen")
    elif r.lattice is not None:
        why = "--no-scan-correction" if args.no_scan_correction else r.parameters.get("scan_distortion_note", "")
        print(f"scan          distortion not fitted ({why}): measured against one affine lattice")
    if r.vacancies is not None:
        vac = np.bincount(np.asarray(r.vacancies.sublattice, dtype=np.int64), minlength=len(counts))
        per = ", ".join(f"sublattice {s}: {int(c)}" for s, c in enumerate(vac))
        print(f"vacancies     {len(r.vacancies)} ({per})")
        seen = len(r.vacancies.unconfirmed)
        if seen:
            print(
                f"              {seen} more site(s) without a fitted column show a column in the image: "
                "not counted (a missed or far-displaced column)"
            )
    else:
        print("vacancies     not searched (no lattice)")
    shift = np.asarray(r.displacement, dtype=np.float64)
    ok = np.isfinite(shift).all(axis=1)
    if ok.any():
        rms = float(np.sqrt(np.mean(np.sum(shift[ok] ** 2, axis=1))))
        print(f"displacement  RMS {rms:.3f} px from the ideal sites")
    err = np.asarray(r.fit.position_errors, dtype=np.float64)
    good = converged & np.isfinite(err).all(axis=1)
    if good.any():
        med = float(np.median(np.hypot(err[good, 0], err[good, 1])))
        phys = "" if r.units == "px" else f" = {med * r.pixel_size[1]:.3g} {r.units}"
        print(f"position err  median {med:.4f} px{phys} (1 σ, converged fits)")
    hint = ""
    if r.fit.engine == "array" and r.fit.device == "cpu":  # numba is missing
        hint = " (pip install 'usidgpu[fast]' for the compiled engine, about 20× faster)"
    how = {"none": "each column alone", "subtract": "each column minus its neighbours", "joint": "all columns jointly"}
    mode = r.fit.parameters.get("neighbours", "none")
    print(f"device        {device}, fit engine {r.fit.engine}{hint}; {how.get(mode, mode)}")
    t = r.timings
    print(
        f"time          find {t.get('find_s', 0):.2f} s, refine {t.get('refine_s', 0):.2f} s, "
        f"lattice {t.get('lattice_s', 0):.2f} s; total {t.get('total_s', 0):.2f} s"
    )


def _strain(result: Any, args: argparse.Namespace) -> Any:
    """``--strain``: the strain, computed before anything is written (a failure leaves no file);
    and ``--distortion`` checked to have a fitted distortion to show."""
    if getattr(args, "distortion", None) and getattr(result, "distortion", None) is None:
        why = result.parameters.get("scan_distortion_note") or "no lattice"
        fail(f"--distortion: no scan distortion was fitted ({why})")
    if not args.strain:
        return None
    try:
        return result.strain()
    except ValueError as exc:
        fail(f"--strain: {exc}")


def _exports(result: Any, image: Any, args: argparse.Namespace, strain: Any = None) -> None:
    if args.csv:
        result.to_csv(args.csv)
        print(f"csv           {args.csv} ({len(result.table()['column'])} rows)")
    if args.plot:
        from ..viz import plot_columns, plot_tracks, save_figure

        figure = plot_tracks(result.tracks, image) if args.track else plot_columns(result, image)
        save_figure(figure, args.plot)
        print(f"figure        {args.plot}")
    if getattr(args, "distortion", None):
        if args.distortion.lower().endswith(".csv"):
            result.distortion.to_csv(args.distortion)
            print(f"distortion    {args.distortion} ({len(result.distortion.table()['pixel'])} rows)")
        else:
            from ..viz import save_figure
            from ..viz.scan_distortion import plot_scan_distortion

            save_figure(plot_scan_distortion(result), args.distortion)
            print(f"distortion    {args.distortion}")
    if strain is not None:
        from ..viz import plot_strain, save_figure

        save_figure(plot_strain(result, strain), args.strain)
        spread = [100 * np.nanpercentile(strain.columns[:, k], [5, 95]) for k in (0, 1)]
        print(
            f"strain        {args.strain}: ε_xx {spread[0][0]:+.2f} … {spread[0][1]:+.2f} %, "
            f"ε_yy {spread[1][0]:+.2f} … {spread[1][1]:+.2f} % (5th–95th percentile of the columns; "
            f"relative to {strain.reference})"
        )


def _track(what: str, frames: Any, device: Any, args: argparse.Namespace) -> Any:
    """``--track``: the columns of every frame, analysed and linked into trajectories; a report."""
    from ..atoms.analysis import analyze_stack

    n_sub = args.sublattices if args.sublattices == "auto" else int(args.sublattices)
    start = time.perf_counter()
    n = _n_frames(frames)
    print(f"tracking columns of {what} ({n} frames)")
    try:
        result = analyze_stack(
            frames,
            device=device,
            memory=args.max_gap,
            spacing=args.spacing,
            threshold=args.threshold,
            n_sublattices=n_sub,
            precision=args.precision,
            scan_distortion=not args.no_scan_correction,
        )
    except ValueError as exc:
        fail(f"{what}: {str(exc).strip().splitlines()[0]}")
    seconds = time.perf_counter() - start
    tracks = result.tracks
    per_frame = [len(p) for p in tracks.positions]
    lengths = np.bincount(tracks.table[:, 1].astype(np.int64), minlength=tracks.n_tracks)
    full = int((lengths == tracks.n_frames).sum())
    track_of, frame_of = tracks.table[:, 1].astype(np.int64), tracks.table[:, 0].astype(np.int64)
    first = np.full(tracks.n_tracks, tracks.n_frames)
    last = np.full(tracks.n_tracks, -1)
    np.minimum.at(first, track_of, frame_of)
    np.maximum.at(last, track_of, frame_of)
    bridged = int((last - first + 1 > lengths).sum())  # tracks that lived through a gap
    drift = np.asarray(tracks.drift, dtype=np.float64)
    steps = np.diff(drift, axis=0)
    converged = np.concatenate([f.fit.converged for f in result.frames])
    print(f"columns       {min(per_frame)} … {max(per_frame)} per frame ({sum(per_frame)} in all)")
    print(f"fits          {converged.mean():.1%} converged; device {device}, engine {result.frames[0].fit.engine}")
    gaps = f", {bridged} across gaps of up to {tracks.memory} frame(s)" if tracks.memory else ""
    print(f"tracks        {tracks.n_tracks}, {full} through every frame{gaps}; gate {tracks.max_displacement:.2f} px")
    print(f"drift         ({drift[-1, 0]:.3f}, {drift[-1, 1]:.3f}) px (dy, dx) from frame 0 to frame {n - 1}")
    if len(steps):
        mean = steps.mean(axis=0)
        print(f"              ({mean[0]:.3f}, {mean[1]:.3f}) px per frame on average")
    print(f"time          {seconds:.2f} s")
    return result
