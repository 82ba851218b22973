"""``usidgpu resume FILE [WHICH]``: finish interrupted block-wise runs (only the missing blocks)
and attach the results that runs kept in their sidecars (a busy file, a full disk, a crash)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from .common import add_scheduler_options


def add_parser(sub: Any, common: Callable) -> None:
    p = sub.add_parser(
        "resume", help="finish interrupted runs (only their missing blocks) and attach results kept for later"
    )
    p.add_argument("file", help="the file the results go to (the source file, or the run's --output)")
    p.add_argument("which", nargs="?", help="only runs whose tool or source dataset path contains this")
    p.add_argument("--list", action="store_true", help="list the interrupted runs, do not resume")
    add_scheduler_options(p)
    common(p)
    p.set_defaults(func=cmd_resume)


def cmd_resume(args: argparse.Namespace) -> int:
    """Run ``usidgpu resume``; returns the exit status."""
    from pathlib import Path

    from ..core.errors import FileProblem
    from ..parallel.resume import kept_results, matches, partial_runs, resume
    from ..usid.results import sidecar_dir

    if not Path(args.file).exists() and not sidecar_dir(args.file).is_dir():
        raise FileProblem(f"{args.file}: no such file, and no interrupted runs for it")
    runs = [r for r in partial_runs(args.file) if matches(r, args.which)]
    kept = kept_results(args.file, args.which)
    if not runs and not kept:
        print(f"{args.file}: no interrupted runs" + (f" matching {args.which!r}" if args.which else ""))
        return 0
    for k in kept:
        print(f"kept          {k['group']} ({k['tool']}, complete, attach pending) in {k['sidecar']}")
    for r in runs:
        done = f"{r['done']}/{r['total']} blocks done"
        state = "running now  " if r["running"] else "interrupted  "
        print(f"{state} {r['source_name']} → {r['tool']} ({done}) {r['parameters']}")
        if r["running"]:
            print(f"              computed by {r['running']}: left to that run")
    if args.list:
        return 0
    for group in resume(args.file, args.which, scheduler=args.scheduler, workers=args.workers):
        print(f"results       {group}")
    return 0
