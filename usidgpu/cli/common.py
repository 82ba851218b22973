"""What the commands of the ``usidgpu`` command line share.

Exit statuses, the parser that fails with one line, the options every command takes (``--debug``,
``--device``, ``--memory``) and their up-front checks, the ``--scheduler`` / ``--workers`` options of
the block-wise commands, the check of figure names, and the one-line error output.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, NoReturn

from ..core.device import select_device
from ..core.errors import InvalidInput, UsidgpuError
from ..core.memory import parse_bytes

EXIT_OK, EXIT_PROBLEMS, EXIT_BAD_INPUT = 0, 1, 2
#: A bug in usidgpu: an error that is no input problem usidgpu knows of (EX_SOFTWARE).
EXIT_BUG = 70
"""0 success; 1 ``validate`` found problems; 2 bad input (with a one-line message)."""

DEVICES = ("auto", "cpu", "gpu")
"""The values of ``--device``."""

PREFIX = "usidgpu: error: "
"""How every error line starts."""


class Parser(argparse.ArgumentParser):
    """argparse that exits with status 2 and one line on bad usage."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_BAD_INPUT, f"{PREFIX}{message}\n")


# ------------------------------------------------------------------------------ common options
def add_common_options(p: argparse.ArgumentParser) -> None:
    """``--debug``, ``--device`` and ``--memory``: the options every computing command takes."""
    p.add_argument("--debug", action="store_true", help="show full tracebacks")
    p.add_argument(
        "--device",
        choices=DEVICES,
        default=None,
        help="compute device (default: $USIDGPU_DEVICE or auto); gpu without a GPU is an error",
    )
    p.add_argument("--memory", default=None, help="memory budget, e.g. 2GB (default: a quarter of free memory)")


def check_device(value: str | None) -> None:
    """A ``--device`` value: ``gpu`` without a usable GPU raises :class:`~usidgpu.core.errors.DeviceError`."""
    if value is not None:
        select_device(value)


def check_memory(value: str | None) -> None:
    """A ``--memory`` value: one that cannot be read raises :class:`~usidgpu.core.errors.BudgetError`."""
    if value is not None:
        parse_bytes(value)


def check_common_options(args: argparse.Namespace) -> None:
    """The options of :func:`add_common_options`, checked up front so a bad value fails before any work."""
    check_device(args.device)
    check_memory(args.memory)


def add_scheduler_options(p: argparse.ArgumentParser) -> None:
    """``--scheduler`` and ``--workers``, shared by the commands that run block-wise."""
    p.add_argument(
        "--scheduler",
        default=None,
        help="where blocks run: threads, local (dask LocalCluster), cuda (one worker per GPU) "
        "or a dask scheduler address tcp://host:port (default: this process)",
    )
    p.add_argument("--workers", type=int, default=None, help="threads or worker processes (default: CPU count)")


# ------------------------------------------------------------------------------ results targets
def check_results_target(target: str) -> None:
    """Before the work: results can be attached to ``target`` (not a sample, a read-only file or
    folder: one-line error), and a note on stderr when another process holds it open (the attach
    at the end waits for it, then keeps the results for later)."""
    from ..usid.results import attach_wait, busy_with, check_target

    check_target(target)
    wait = attach_wait()  # a bad $USIDGPU_ATTACH_WAIT fails now, not after the work
    holders = busy_with(target)
    if holders:
        print(
            f"usidgpu: note: {target} is open in {', '.join(holders)}; the results are attached when it is "
            f"closed (waiting up to {wait:g} s at the end), else kept for `usidgpu resume {target}`",
            file=sys.stderr,
            flush=True,
        )


def write_results(write: Any, target: str) -> str | None:
    """Run ``write()`` (which attaches a results group and returns its path) and print the line
    ``results ...``; when the target stayed busy the results are kept (attach pending): say where
    and how they get attached, and return None. Either way the command succeeds (exit 0): the
    results are complete and safe."""
    from ..usid.results import AttachPending

    try:
        group = write()
    except AttachPending as pending:
        print(f"results       kept in {pending.sidecar} (attach pending)")
        print(f"usidgpu: note: {pending}", file=sys.stderr, flush=True)
        return None
    print(f"results       {group} in {target}")
    return str(group)


# ------------------------------------------------------------------------------ checks and errors
def check_plot_name(plot: str | None, option: str = "--plot") -> None:
    """A figure name (``--plot``, ``--strain``) must end in a format the figures are saved in; checked
    before the work, not after it."""
    if plot:
        from ..viz.save import FORMATS

        if Path(plot).suffix.lower().lstrip(".") not in FORMATS:
            raise InvalidInput(f"{option} {plot}: use a .png, .pdf or .svg file name")


def fail(message: str) -> NoReturn:
    """Stop the command with exit status 2 and ``message`` as its one-line error."""
    raise UsidgpuError(message)


def print_error(message: Any) -> None:
    """The one-line error on stderr: ``usidgpu: error: message``."""
    print(f"{PREFIX}{message}", file=sys.stderr)
