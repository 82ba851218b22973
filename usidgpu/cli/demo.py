"""``usidgpu demo``: denoise and analyze shipped and generated data into a new folder."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any


def add_parser(sub: Any, common: Callable) -> None:
    p = sub.add_parser(
        "demo",
        help="the whole path on a shipped STEM image and a generated spectrum image: denoise, atoms, SVD, clusters",
    )
    p.add_argument("--out", metavar="FOLDER", default=None, help="output folder (default: ./usidgpu-demo)")
    p.add_argument("--quick", action="store_true", help="a smaller spectrum image (seconds, for tests)")
    common(p)
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    """Run ``usidgpu demo``; returns the exit status."""
    from ..demo import run_demo

    report = run_demo(args.out, device=args.device, quick=args.quick)
    print(f"figures       {', '.join(s.figure for s in report.steps if s.figure)} in {report.folder}")
    return 0
