"""The ``usidgpu`` command line.

Exit status: 0 success; 1 ``validate`` found problems; 2 bad input (missing file, not HDF5,
truncated, not USID, no such dataset, bad option, more than the memory holds) with a one-line
message naming the file and the problem — no traceback unless ``--debug``; 70 a bug in usidgpu: any
error that is neither one of usidgpu's own (:mod:`usidgpu.core.errors`, raised for every input
problem usidgpu detects) nor an operating-system error or the HDF5 library describing a damaged
file is reported as such, in one line, and ``--debug`` shows its traceback.
Turning every ``ValueError`` or ``KeyError`` into "bad input" would hide the bugs.

One module per command (``info``, ``validate``, ``samples``, ``decompose`` for ``svd | pca | nmf |
cluster``, ``denoise``, ``atoms``, ``bayes``, ``translate``, ``convert``, ``resume``, ``demo``,
``serve``), each with ``add_parser(subparsers, common)``, which registers the command and sets its ``cmd_*`` function
as the parser's ``func`` default, and that function; :mod:`usidgpu.cli.common` holds what they share.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .._version import __version__
from ..core.errors import UsidgpuError
from ..storage.h5 import raised_by_hdf5
from . import atoms, bayes, convert, decompose, demo, denoise, info, resume, samples, serve, translate, validate
from .common import (
    EXIT_BAD_INPUT,
    EXIT_BUG,
    EXIT_OK,
    EXIT_PROBLEMS,
    Parser,
    add_common_options,
    check_common_options,
    print_error,
)

__all__ = ["EXIT_BAD_INPUT", "EXIT_BUG", "EXIT_OK", "EXIT_PROBLEMS", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command; each command's parser carries its ``cmd_*`` function as ``func``."""
    parser = Parser(
        prog="usidgpu",
        description="USID HDF5 data on GPUs and CPUs: inspect, validate, stream and analyze.",
    )
    parser.add_argument("--version", action="version", version=f"usidgpu {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    # the order of the commands in ``usidgpu --help``
    for command in (info, validate, decompose, denoise, resume, demo, atoms, bayes, convert, translate, samples, serve):
        command.add_parser(sub, add_common_options)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``usidgpu`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        # the global options are checked up front, so a bad value fails before any work
        check_common_options(args)
        if getattr(args, "file", None) is not None:
            # sample:NAME wherever a file is read; a vendor sample is translated once into the cache
            from ..translate.samples import resolve_usid

            args.file = str(resolve_usid(args.file))
        return args.func(args)
    except UsidgpuError as exc:
        if args.debug:
            raise
        print_error(exc)
        return EXIT_BAD_INPUT
    except OSError as exc:
        # the file system and HDF5's I/O layer (a damaged or locked file): say which file and what
        if args.debug:
            raise
        where = getattr(args, "file", None) or getattr(args, "out", None)
        print_error(f"{where}: {_first_line(exc)}" if where else _first_line(exc))
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("usidgpu: interrupted", file=sys.stderr)
        return 130
    except MemoryError as exc:
        # an allocation the machine cannot make (usidgpu's own budget checks raise BudgetError,
        # above): the input is too large for this machine, not a bug
        if args.debug:
            raise
        where = getattr(args, "file", None) or getattr(args, "out", None)
        text = f"not enough memory: {_first_line(exc)}; use a machine with more memory or a smaller input"
        print_error(f"{where}: {text}" if where else text)
        return EXIT_BAD_INPUT
    except Exception as exc:
        if args.debug:
            raise
        if raised_by_hdf5(exc):  # the HDF5 library describing a damaged file
            where = getattr(args, "file", None) or getattr(args, "out", None)
            print_error(f"{where}: damaged HDF5 file: {_first_line(exc)}" if where else _first_line(exc))
            return EXIT_BAD_INPUT
        # not an input problem usidgpu knows: a bug, and said to be one
        print(
            f"usidgpu: internal error (a bug in usidgpu {__version__}; please report it with the command): "
            f"{type(exc).__name__}: {_first_line(exc)} — rerun with --debug for the traceback",
            file=sys.stderr,
        )
        return EXIT_BUG


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
