"""``usidgpu info FILE``: describe every Main dataset of a USID file, and its unfinished runs."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import BudgetError, NotUSIDError
from ..core.memory import format_bytes
from ..storage import filter_count
from .common import EXIT_OK


def add_parser(sub: Any, common: Callable) -> None:
    p = sub.add_parser("info", help="describe every Main dataset of a USID file")
    p.add_argument("file", help="USID HDF5 file (opened read-only), or sample:NAME (see 'usidgpu samples')")
    p.add_argument("-d", "--dataset", help="only this Main dataset (HDF5 path)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    common(p)
    p.set_defaults(func=cmd_info)


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
    elif filter_count(m.h5):
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
    }
    text = [
        m.name,
        f"  data          {m.shape[0]} position{'s' if m.shape[0] != 1 else ''} × "
        f"{m.shape[1]} point{'s' if m.shape[1] != 1 else ''}, {m.dtype}, "
        f"{format_bytes(m.nbytes)}, {_storage(m)}",
        f"  quantity      {m.quantity} ({m.units})" if m.units else f"  quantity      {m.quantity}",
    ]
    try:
        entry |= _dims(m)
        text += _dims_text(m)
    except BudgetError as exc:
        # ancillary tables too large to read (a huge declared size): say what can be said
        entry |= {"dimensions_unread": str(exc)}
        text.append(f"  dimensions    not read: {exc}")
    entry["results"] = [{"path": r.path, "tool": r.tool, "complete": r.complete} for r in f.results_groups(m)]
    for r in entry["results"]:
        state = "" if r["complete"] else " [incomplete]"
        text.append(f"  results       {r['path'].rsplit('/', 1)[1]} ({r['tool']}){state}")
    entry["_text"] = text
    return entry


def _dims(m: Any) -> dict[str, Any]:
    """The dimensions of ``m`` for ``--json`` (reads its ancillary tables)."""
    return {
        "position_layout": m.pos_layout.kind,
        "spectroscopic_layout": m.spec_layout.kind,
        "position_dims": [{"name": d.name, "units": d.units, "size": d.size} for d in m.pos_dims],
        "spectroscopic_dims": [{"name": d.name, "units": d.units, "size": d.size} for d in m.spec_dims],
        "nd_shape": list(m.nd_shape) if m.is_grid else None,
    }


def _dims_text(m: Any) -> list[str]:
    return [
        "  positions     "
        + ", ".join(_dim_text(d) for d in m.pos_dims)
        + ("" if m.pos_layout.is_grid else f"  [{m.pos_layout.kind} sampling]"),
        "  spectroscopic "
        + ", ".join(_dim_text(d) for d in m.spec_dims)
        + ("" if m.spec_layout.is_grid else f"  [{m.spec_layout.kind}]"),
        f"  n-d shape     {tuple(m.nd_shape)}" if m.is_grid else "  n-d shape     none (not a full grid)",
    ]


def cmd_info(args: argparse.Namespace) -> int:
    from ..usid.file import USIDFile
    from ..usid.results import find_partial

    with USIDFile(args.file) as f:
        mains = [f.dataset(args.dataset)] if args.dataset is not None else f.main_datasets()
        if not mains:
            raise NotUSIDError(f"{args.file}: not a USID file: no Main dataset found")
        entries = [_describe(f, m) for m in mains]
    from ..parallel.resume import partial_runs

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
        state = _STATES.get(p["status"], p["status"]).format(file=args.file)
        what = p["group"] or Path(p["sidecar"]).name
        print(f"unfinished    {what} ({p['tool']}, {state}, {p['done']}/{p['total']} done) in {p['sidecar']}")
    return EXIT_OK


#: how the sidecars' states read in the text output (see usidgpu.usid.results.find_partial)
_STATES = {
    "computed": "complete, attach pending: usidgpu resume {file}",
    "partial": "partial: rerun to resume",
    "busy": "in use by another process",
    "damaged": "damaged: removed by the next run of its tool",
}
