"""``usidgpu translate IN OUT.h5``: a vendor file (DM3/DM4, EMD, IBW, SXM, 3DS, NSID, TIFF, NPY) → USID.

OUT appears only when complete and is never overwritten; a failure (a full disk included: one
line, exit 2) leaves nothing behind, and what a killed translation left is removed by the rerun
(:mod:`usidgpu.translate`, :mod:`usidgpu.storage.staging`).
"""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(sub: Any, common: Any) -> None:
    from ..translate import READERS

    formats = ", ".join(f"{r.name} ({'/'.join(r.suffixes)}; {r.library})" for r in READERS)
    p = sub.add_parser(
        "translate",
        help="translate a vendor file (DM3/DM4, EMD, IBW, SXM, 3DS, NSID, TIFF, NPY) into a new USID HDF5 file",
        description=(
            "Write IN as a new USID HDF5 file OUT, dimensions, units and instrument metadata kept. "
            f"Formats: {formats}. "
            "OUT must not exist; it appears only when complete, and a failed or killed translation "
            "leaves nothing behind once rerun."
        ),
    )
    p.add_argument("input", metavar="IN", help="vendor file (format from the suffix, else from its first bytes)")
    p.add_argument("output", metavar="OUT", help="new USID HDF5 file (never overwritten)")
    p.add_argument(
        "--layout",
        choices=("stack", "spectrum_image"),
        default=None,
        help="3-D .npy arrays: (frames, Y, X) stack (default) or (Y, X, spectrum) spectrum image",
    )
    common(p)
    p.set_defaults(func=cmd_translate)


def cmd_translate(args: argparse.Namespace) -> int:
    import warnings

    from ..samples import resolve
    from ..translate import translate

    args.input = str(resolve(args.input, usid=False))  # sample:NAME: the shipped (vendor) file itself
    options = {"layout": args.layout} if args.layout else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = translate(args.input, args.output, **options)
    import h5py

    with h5py.File(args.output, "r") as f:
        meas = f["Measurement_000"]
        n = sum(1 for k in meas if k.startswith("Channel_"))
        print(f"{args.input} -> {args.output}: {n} Main dataset{'s' if n != 1 else ''} (first {path}), "
              f"read with {meas.attrs.get('reader')} {meas.attrs.get('reader_version')}")  # fmt: skip
    return 0
