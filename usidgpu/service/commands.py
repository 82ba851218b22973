"""The analyses a job may run, and their options — given to the service by the command line.

A job runs a ``usidgpu`` command in a child process, so the service needs the commands' options
(to check a job's parameters when it is submitted and to show them on the page with their
defaults). The command line sits above the service, so it hands them down: a
:class:`Commands` object built from its own parsers (:func:`usidgpu.cli.serve.job_commands`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..core.errors import InvalidInput, UnknownName

#: The analyses the service runs as jobs.
ANALYSES = ("svd", "pca", "nmf", "cluster", "denoise", "atoms", "bayes")

#: Options a job may not set: where results and figures go, and how the service runs the work
#: (files, device, memory, scheduler) are the service's to choose.
SERVICE_OPTIONS = frozenset(
    {"file", "dataset", "output", "plot", "strain", "csv", "no_write", "no_progress", "debug", "device", "memory",
     "scheduler", "workers", "help"}
)  # fmt: skip


@dataclass(frozen=True)
class Option:
    """One option of an analysis: its parameter name (the command's option without dashes, ``-``
    as ``_``), command-line flag, kind (``int``, ``float``, ``str``, ``bool``, ``list``), default,
    choices and help."""

    name: str
    flag: str
    kind: str
    default: Any = None
    choices: tuple[Any, ...] | None = None
    required: bool = False
    help: str = ""


@dataclass
class Commands:
    """What the command line tells the service about its analyses.

    Attributes
    ----------
    options : dict
        analysis → its :class:`Option` list (the service's own options left out).
    check : callable
        ``check(analysis, argv)`` raises :class:`~usidgpu.core.errors.InvalidInput` with the
        command line's own one-line message when ``argv`` is not valid for the analysis.
    """

    options: dict[str, list[Option]] = field(default_factory=dict)
    check: Callable[[str, list[str]], None] = lambda analysis, argv: None

    def argv(self, analysis: str, parameters: Mapping[str, Any]) -> list[str]:
        """The command-line options of a job, checked.

        Raises
        ------
        UnknownName
            An analysis or parameter that does not exist (or is the service's to set).
        InvalidInput
            A value the command would refuse.
        """
        if analysis not in self.options:
            raise UnknownName(f"no analysis {analysis!r}; the service runs {', '.join(self.options)}")
        known = {o.name: o for o in self.options[analysis]}
        out: list[str] = []
        for name, value in parameters.items():
            option = known.get(name)
            if option is None:
                raise UnknownName(f"{analysis} has no parameter {name!r}; it takes {', '.join(known) or 'none'}")
            out += _flag_and_values(option, value)
        self.check(analysis, out)
        return out


def _flag_and_values(option: Option, value: Any) -> list[str]:
    if option.kind == "bool":
        if not isinstance(value, bool):
            raise InvalidInput(f"{option.name} is true or false, got {value!r}")
        return [option.flag] if value else []
    if value is None:
        return []
    values = value if isinstance(value, (list, tuple)) else [value]
    if option.kind != "list" and len(values) != 1:
        raise InvalidInput(f"{option.name} takes one value, got {value!r}")
    for v in values:
        if isinstance(v, (dict, list, tuple)) or (isinstance(v, str) and (not v or v.startswith("-"))):
            raise InvalidInput(f"{option.name}: {v!r} is not a value")
    return [option.flag, *(str(v) for v in values)]
