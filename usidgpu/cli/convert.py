"""``usidgpu convert IN OUT``: copy a USID file between HDF5 and zarr (direction from the suffixes).

OUT appears only when complete and is never overwritten; a failure (a full disk included: one
line, exit 2) leaves nothing behind, and what a killed conversion left is removed by the rerun
(:mod:`usidgpu.storage.convert`, :mod:`usidgpu.storage.staging`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..core.errors import FileProblem, UsidgpuError


def add_parser(sub: Any, common: Any) -> None:
    p = sub.add_parser(
        "convert",
        help="copy a file between HDF5 (.h5/.hdf5/.hf5) and zarr (.zarr), every dataset and attribute",
        description=(
            "Copy every group, dataset and attribute of an HDF5 file into a new zarr store, or back. "
            "Object references become 'h5ref:/path' strings in zarr and references again in HDF5; "
            "region references are dropped. OUT must not exist; it appears only when complete, and "
            "a failed or killed conversion leaves nothing behind once rerun."
        ),
    )
    p.add_argument("input", metavar="IN", help="HDF5 file or zarr store (read-only), or sample:NAME")
    p.add_argument("output", metavar="OUT", help="new .zarr store or .h5/.hdf5/.hf5 file (never overwritten)")
    p.add_argument(
        "--to",
        choices=("usid", "nsid"),
        default="usid",
        help="usid (default): the same file in the other store; nsid: every Main dataset that is a grid "
        "as NSID (sidpy/pyNSID) in a new HDF5 file, read by pyNSID and pycroscopy >= 0.63",
    )
    p.add_argument(
        "--chunks",
        default=None,
        help="zarr chunk shape for every dataset of that rank, e.g. 256,512 (default: keep the HDF5 chunks)",
    )
    common(p)
    p.set_defaults(func=cmd_convert)


def _chunks(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        chunks = tuple(int(c) for c in text.replace("x", ",").split(",") if c.strip())
    except ValueError:
        raise FileProblem(f"--chunks {text!r}: expected integers separated by commas, e.g. 256,512") from None
    if not chunks or min(chunks) < 1:
        raise FileProblem(f"--chunks {text!r}: expected positive integers, e.g. 256,512")
    return chunks


def cmd_convert(args: argparse.Namespace) -> int:
    from ..storage.convert import h5_to_zarr, zarr_to_h5
    from ..storage.h5 import is_h5_path
    from ..storage.staging import prepare_output
    from ..storage.zarr_view import is_zarr_path
    from ..translate.samples import resolve_usid

    src = resolve_usid(args.input)
    dst = Path(args.output)
    if not src.exists():
        raise FileProblem(f"{src}: no such file")
    prepare_output(dst)  # removes what a killed conversion left; refuses an existing OUT
    src_zarr, dst_zarr = is_zarr_path(src), is_zarr_path(dst)
    if args.to == "nsid":
        if not is_h5_path(dst):
            raise FileProblem(f"{dst}: NSID is HDF5; give OUT a .h5/.hdf5/.hf5 name")
        from ..usid.sidpy import usid_to_nsid

        lines = usid_to_nsid(src, dst)
        print(f"{src} -> {dst} (NSID):")
        print("\n".join(lines))
        return 0
    if not src_zarr and dst_zarr:
        run = lambda: h5_to_zarr(src, dst, chunks=_chunks(args.chunks))  # noqa: E731
    elif src_zarr and is_h5_path(dst):
        run = lambda: zarr_to_h5(src, dst)  # noqa: E731
    else:
        raise FileProblem(
            f"{src} -> {dst}: cannot tell the direction; convert an HDF5 file to OUT.zarr, "
            f"or a .zarr store to OUT.h5 (or .hdf5/.hf5)"
        )
    # the conversion leaves nothing at dst when it fails (it writes in a work folder beside it)
    try:
        report = run()
    except UsidgpuError:
        raise
    except Exception as exc:  # anything else: say which file
        if getattr(args, "debug", False):
            raise
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise FileProblem(f"{src}: conversion to {dst} failed ({text})") from None
    print(report.summary())
    regions = [d for d in report.dropped if "region reference" in d]
    if regions:
        print(f"  dropped {len(regions)} region reference attribute(s)/dataset(s) (region references are not carried)")
    for d in report.dropped:
        if d not in regions:
            print(f"  dropped {d}")
    return 0
