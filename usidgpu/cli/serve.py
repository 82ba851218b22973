"""``usidgpu serve FOLDER...``: serve the USID datasets of folders over HTTP, translate and analyze
what lands in them (see :mod:`usidgpu.service`)."""

from __future__ import annotations

import argparse
import contextlib
import io
from collections.abc import Callable
from typing import Any

from .common import PREFIX, add_scheduler_options


def add_parser(sub: Any, common: Callable) -> None:
    p = sub.add_parser(
        "serve",
        help="serve folders over HTTP: search, slice by dimension name, analyze what lands (jobs, pipeline)",
    )
    p.add_argument("folders", nargs="+", help="folders to serve (data read-only; a catalog is kept in the first)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    p.add_argument(
        "--state", default=None, help="folder of the catalog, keys and translations (default FOLDER/.usidgpu-serve)"
    )
    p.add_argument(
        "--api-key",
        default=None,
        help="store this API key (≥ 16 characters); off loopback one is generated when none is stored",
    )
    p.add_argument("--read-only", action="store_true", help="serve data only: no jobs, no pipeline, no translations")
    p.add_argument("--pipeline", default=None, help="TOML file of pipeline rules (default: the built-in rules)")
    p.add_argument("--no-pipeline", action="store_true", help="run nothing by itself, only submitted jobs")
    p.add_argument("--settle", type=float, default=2.0, help="seconds a new file must stay unchanged (default 2)")
    p.add_argument("--no-watch", action="store_true", help="do not follow the folders (scan at start and on rescan)")
    p.add_argument("--max-slice", default="1GB", help="largest selection one request may ask for (default 1GB)")
    p.add_argument(
        "--rate", type=float, default=500.0, help="requests per second per client (default 500; 0: no limit)"
    )
    p.add_argument(
        "--jobs-per-client", type=int, default=16, help="jobs a client may have waiting or running (default 16)"
    )
    add_scheduler_options(p)
    common(p)
    p.set_defaults(func=cmd_serve)


def job_commands() -> Any:
    """The analyses a service job may run, read from this command line's own parsers (their
    options, defaults and checks), as a :class:`usidgpu.service.commands.Commands`."""
    from ..service.commands import ANALYSES, SERVICE_OPTIONS, Commands, Option
    from . import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    options: dict[str, list[Option]] = {}
    for name in ANALYSES:
        options[name] = [
            _option(action, Option) for action in sub.choices[name]._actions if action.dest not in SERVICE_OPTIONS
        ]

    def check(analysis: str, argv: list[str]) -> None:
        from ..core.errors import InvalidInput

        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                build_parser().parse_args([analysis, "FILE", *argv])
        except SystemExit:
            raise InvalidInput(err.getvalue().strip().splitlines()[-1].removeprefix(PREFIX)) from None

    return Commands(options=options, check=check)


def _option(action: argparse.Action, option_class: Any) -> Any:
    flag = max(action.option_strings, key=len)
    if isinstance(action, argparse._StoreTrueAction):
        kind = "bool"
    elif action.nargs in ("+", "*"):
        kind = "list"
    else:
        kind = {int: "int", float: "float"}.get(action.type, "str")  # type: ignore[call-overload]
    return option_class(
        name=action.dest,
        flag=flag,
        kind=kind,
        default=action.default,
        choices=tuple(action.choices) if action.choices else None,
        required=bool(action.required),
        help=action.help or "",
    )


def cmd_serve(args: argparse.Namespace) -> int:
    """Run ``usidgpu serve`` until stopped; returns the exit status."""
    from ..core.memory import parse_bytes
    from ..service.instance import Options
    from ..service.pipeline import load_rules
    from ..service.server import serve

    commands = job_commands()
    rules = [] if args.no_pipeline else load_rules(args.pipeline, commands)
    options = Options(
        device=args.device or "auto",
        scheduler=args.scheduler,
        max_running=args.workers or 1,
        settle=args.settle,
        watch=not args.no_watch,
        memory=args.memory,
    )
    serve(
        args.folders,
        host=args.host,
        port=args.port,
        commands=commands,
        rules=rules,
        options=options,
        state_dir=args.state,
        api_key=args.api_key,
        read_only=args.read_only,
        max_slice_bytes=parse_bytes(args.max_slice),
        rate=args.rate,
        jobs_per_client=args.jobs_per_client,
    )
    return 0
