"""The ``usidgpu`` command line.

Exit status: 0 success; 1 ``validate`` found problems; 2 bad input (missing file, not HDF5,
truncated, not USID, no such dataset, bad option) with a one-line message naming the file and
the problem — no traceback unless ``--debug``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .core.device import select_device
from .core.errors import DatasetNotFoundError, NotUSIDError, UsidgpuError
from .core.memory import format_bytes, parse_bytes

EXIT_OK, EXIT_PROBLEMS, EXIT_BAD_INPUT = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    """argparse that exits with status 2 and one line on bad usage."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_BAD_INPUT, f"usidgpu: error: {message}\n")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--debug", action="store_true", help="show full tracebacks")
    p.add_argument(
        "--device",
        choices=("auto", "cpu", "gpu"),
        default=None,
        help="compute device (default: $USIDGPU_DEVICE or auto); gpu without a GPU is an error",
    )
    p.add_argument("--memory", default=None, help="memory budget, e.g. 2GB (default: a quarter of free memory)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="usidgpu",
        description="USID HDF5 data on GPUs and CPUs: inspect, validate, stream and analyze.",
    )
    parser.add_argument("--version", action="version", version=f"usidgpu {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    info = sub.add_parser("info", help="describe every Main dataset of a USID file")
    info.add_argument("file", help="USID HDF5 file (opened read-only), or sample:NAME (see 'usidgpu samples')")
    info.add_argument("-d", "--dataset", help="only this Main dataset (HDF5 path)")
    info.add_argument("--json", action="store_true", help="machine-readable output")
    _common(info)

    val = sub.add_parser("validate", help="check a file against the rules of the USID model")
    val.add_argument("file", help="HDF5 file (opened read-only), or sample:NAME")
    val.add_argument("-d", "--dataset", help="only this dataset (HDF5 path)")
    val.add_argument("--json", action="store_true", help="machine-readable output")
    _common(val)

    from .cli_atoms import add_parser as add_atoms
    from .cli_bayes import add_parser as add_bayes
    from .cli_convert import add_parser as add_convert
    from .cli_decompose import add_parsers
    from .cli_demo import add_parser as add_demo
    from .cli_denoise import add_parser as add_denoise
    from .cli_resume import add_parser as add_resume
    from .cli_translate import add_parser as add_translate

    add_parsers(sub, _common)
    add_denoise(sub, _common)
    add_resume(sub, _common)
    add_demo(sub, _common)
    add_atoms(sub, _common)
    add_bayes(sub, _common)
    add_convert(sub, _common)
    add_translate(sub, _common)

    samples = sub.add_parser("samples", help="list the sample USID files shipped with usidgpu")
    samples.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    samples.set_defaults(device=None, memory=None)
    return parser


# ------------------------------------------------------------------------------ info
def _span(values: np.ndarray) -> str:
    if values.size == 1:
        return f"{values[0]:g}"
    return f"{values[0]:g} … {values[-1]:g}"


def _dim_text(d: Any) -> str:
    units = f" {d.units}" if d.units else ""
    return f"{d.name} ({d.size}{' pts' if d.size != 1 else ' pt'}, {_span(d.values)}{units})"


def _storage(m: Any) -> str:
    if not m.chunks:
        return "contiguous"
    text = f"chunks {m.chunks}"
    if m.compression:
        opts = m.h5.compression_opts
        text += f", {m.compression}" + (f" {opts}" if opts is not None else "")
    elif m.h5.id.get_create_plist().get_nfilters():
        text += ", filtered"
    return text


def _describe(f: Any, m: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "path": m.name,
        "shape": list(m.shape),
        "dtype": str(m.dtype),
        "nbytes": m.nbytes,
        "quantity": m.quantity,
        "units": m.units,
        "storage": _storage(m),
        "position_layout": m.pos_layout.kind,
        "spectroscopic_layout": m.spec_layout.kind,
        "position_dims": [{"name": d.name, "units": d.units, "size": d.size} for d in m.pos_dims],
        "spectroscopic_dims": [{"name": d.name, "units": d.units, "size": d.size} for d in m.spec_dims],
        "nd_shape": list(m.nd_shape) if m.is_grid else None,
        "results": [{"path": r.path, "tool": r.tool, "complete": r.complete} for r in f.results_groups(m)],
    }
    entry["_text"] = [
        m.name,
        f"  data          {m.shape[0]} position{'s' if m.shape[0] != 1 else ''} × "
        f"{m.shape[1]} point{'s' if m.shape[1] != 1 else ''}, {m.dtype}, "
        f"{format_bytes(m.nbytes)}, {_storage(m)}",
        f"  quantity      {m.quantity} ({m.units})" if m.units else f"  quantity      {m.quantity}",
        "  positions     "
        + ", ".join(_dim_text(d) for d in m.pos_dims)
        + ("" if m.pos_layout.is_grid else f"  [{m.pos_layout.kind} sampling]"),
        "  spectroscopic "
        + ", ".join(_dim_text(d) for d in m.spec_dims)
        + ("" if m.spec_layout.is_grid else f"  [{m.spec_layout.kind}]"),
        f"  n-d shape     {tuple(m.nd_shape)}" if m.is_grid else "  n-d shape     none (not a full grid)",
    ]
    for r in entry["results"]:
        state = "" if r["complete"] else " [incomplete]"
        entry["_text"].append(f"  results       {r['path'].rsplit('/', 1)[1]} ({r['tool']}){state}")
    return entry


def cmd_info(args: argparse.Namespace) -> int:
    from .usid.file import USIDFile
    from .usid.results import find_partial

    with USIDFile(args.file) as f:
        mains = [f.dataset(args.dataset)] if args.dataset is not None else f.main_datasets()
        if not mains:
            raise NotUSIDError(f"{args.file}: not a USID file: no Main dataset found")
        entries = [_describe(f, m) for m in mains]
    from .parallel.resume import partial_runs

    partial = find_partial(args.file)
    for r in partial_runs(args.file):  # block-wise runs (usidgpu.parallel) stopped midway
        partial.append(
            dict(
                sidecar=r["store"],
                group=f"{r['source_name']}-{r['tool']}",
                tool=r["tool"],
                status=f"running ({r['running']})" if r["running"] else "partial (usidgpu resume)",
                done=r["done"],
                total=r["total"],
            )
        )
    root = Path(args.file)
    # a zarr store is a folder: its size is that of its files
    size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) if root.is_dir() else root.stat().st_size
    if args.json:
        for e in entries:
            e.pop("_text")
        print(
            json.dumps(
                {"file": str(args.file), "bytes": size, "main_datasets": entries, "unfinished": partial}, indent=2
            )
        )
        return EXIT_OK
    print(f"{args.file}: {len(entries)} Main dataset{'s' if len(entries) != 1 else ''}, {format_bytes(size)}")
    for e in entries:
        print("\n".join(e["_text"]))
    for p in partial:
        print(
            f"unfinished    {p['group']} ({p['tool']}, {p['status']}, {p['done']}/{p['total']} done) in {p['sidecar']}"
        )
    return EXIT_OK


# ------------------------------------------------------------------------------ validate
def cmd_validate(args: argparse.Namespace) -> int:
    from .usid.file import USIDFile
    from .usid.rules import ERROR, is_dataset
    from .usid.validate import dataset_problems, validate

    with USIDFile(args.file) as f:
        if args.dataset is not None:
            if args.dataset not in f.h5:
                raise DatasetNotFoundError(f"{args.file}: no dataset {args.dataset!r} in the file")
            obj = f.h5[args.dataset]
            if not is_dataset(obj):
                raise NotUSIDError(f"{args.file}: {obj.name} is a group, not a dataset")
            problems = dataset_problems(obj)
        else:
            problems = validate(f)
    if len(problems) == 1 and problems[0].rule == "no-main":
        raise NotUSIDError(f"{args.file}: {problems[0].message}")
    errors = [p for p in problems if p.severity == ERROR]
    if args.json:
        print(
            json.dumps(
                {"file": str(args.file), "valid": not errors, "problems": [p.__dict__ for p in problems]}, indent=2
            )
        )
    else:
        for p in problems:
            print(str(p))
        if errors:
            print(f"{args.file}: INVALID: {len(errors)} problem{'s' if len(errors) != 1 else ''}")
        else:
            note = f" ({len(problems)} warning{'s' if len(problems) != 1 else ''})" if problems else ""
            print(f"{args.file}: valid USID{note}")
    return EXIT_PROBLEMS if errors else EXIT_OK


def cmd_samples(args: argparse.Namespace) -> int:
    from .samples import PREFIX, SAMPLES, sample_path

    for name, (_file, description) in SAMPLES.items():
        print(f"{PREFIX}{name:<12} {description}\n{'':19} {sample_path(name)}")
    return EXIT_OK


def cmd_decompose(args: argparse.Namespace) -> int:
    from .cli_decompose import cmd_decompose as run

    return run(args)


def cmd_denoise(args: argparse.Namespace) -> int:
    from .cli_denoise import cmd_denoise as run

    return run(args)


def cmd_demo(args: argparse.Namespace) -> int:
    from .cli_demo import cmd_demo as run

    return run(args)


def cmd_resume(args: argparse.Namespace) -> int:
    from .cli_resume import cmd_resume as run

    return run(args)


def cmd_convert(args: argparse.Namespace) -> int:
    from .cli_convert import cmd_convert as run

    return run(args)


def cmd_translate(args: argparse.Namespace) -> int:
    from .cli_translate import cmd_translate as run

    return run(args)


def cmd_atoms(args: argparse.Namespace) -> int:
    from .cli_atoms import cmd_atoms as run

    return run(args)


def cmd_bayes(args: argparse.Namespace) -> int:
    from .cli_bayes import cmd_bayes as run

    return run(args)


COMMANDS = {
    "demo": cmd_demo,
    "resume": cmd_resume,
    "atoms": cmd_atoms,
    "bayes": cmd_bayes,
    "convert": cmd_convert,
    "translate": cmd_translate,
    "denoise": cmd_denoise,
    "info": cmd_info,
    "validate": cmd_validate,
    "samples": cmd_samples,
    "svd": cmd_decompose,
    "pca": cmd_decompose,
    "nmf": cmd_decompose,
    "cluster": cmd_decompose,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``usidgpu`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        # the global options are checked up front, so a bad value fails before any work
        if args.device is not None:
            select_device(args.device)
        if args.memory is not None:
            parse_bytes(args.memory)
        if getattr(args, "file", None) is not None:
            from .samples import resolve

            args.file = str(resolve(args.file))
        return COMMANDS[args.command](args)
    except UsidgpuError as exc:
        if args.debug:
            raise
        print(f"usidgpu: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as exc:
        # h5py reports damaged files through these; say which file and what failed
        if args.debug:
            raise
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        where = getattr(args, "file", None) or getattr(args, "out", None)
        print(f"usidgpu: error: {where}: {msg}" if where else f"usidgpu: error: {msg}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("usidgpu: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
