"""``usidgpu samples``: list the sample USID files shipped with usidgpu (``sample:NAME`` anywhere a file goes)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from .common import EXIT_OK


def add_parser(sub: Any, common: Callable) -> None:
    """``samples`` takes none of the common options (``--debug`` is accepted and hidden)."""
    p = sub.add_parser("samples", help="list the sample USID files shipped with usidgpu")
    p.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(device=None, memory=None, func=cmd_samples)


def cmd_samples(args: argparse.Namespace) -> int:
    from ..samples import PREFIX, SAMPLES, sample_path

    for name, (_file, description) in SAMPLES.items():
        print(f"{PREFIX}{name:<12} {description}\n{'':19} {sample_path(name)}")
    return EXIT_OK
