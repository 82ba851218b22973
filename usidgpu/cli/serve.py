"""``usidgpu serve FOLDER...``: serve the USID datasets of folders over HTTP (see :mod:`usidgpu.service`)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any


def add_parser(sub: Any, common: Callable) -> None:
    p = sub.add_parser(
        "serve",
        help="serve the USID datasets of folders over HTTP: search, describe, slice by dimension name",
    )
    p.add_argument("folders", nargs="+", help="folders to serve (read-only; a catalog is kept in the first)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    p.add_argument("--state", default=None, help="folder of the catalog and keys (default FOLDER/.usidgpu-serve)")
    p.add_argument(
        "--api-key",
        default=None,
        help="store this API key (≥ 16 characters); off loopback one is generated when none is stored",
    )
    p.add_argument("--read-only", action="store_true", help="serve data only: no jobs, no rescans")
    p.add_argument("--max-slice", default="1GB", help="largest selection one request may ask for (default 1GB)")
    common(p)
    p.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    """Run ``usidgpu serve`` until stopped; returns the exit status."""
    from ..core.memory import parse_bytes
    from ..service.server import serve

    serve(
        args.folders,
        host=args.host,
        port=args.port,
        state_dir=args.state,
        api_key=args.api_key,
        read_only=args.read_only,
        max_slice_bytes=parse_bytes(args.max_slice),
    )
    return 0
