"""Exceptions raised by usidgpu.

Every error a user can cause with bad input derives from :class:`UsidgpuError`, so the CLI can
turn it into a one-line message (and exit status 2) while real bugs still show a traceback.
"""

from __future__ import annotations

__all__ = [
    "BudgetError",
    "DatasetNotFoundError",
    "DeviceError",
    "FileProblem",
    "InvalidInput",
    "InvalidType",
    "MissingDependency",
    "NotAGridError",
    "NotMainError",
    "NotUSIDError",
    "ResultsError",
    "SelectionError",
    "UnknownName",
    "UsidgpuError",
]


class UsidgpuError(Exception):
    """Base class of every usidgpu error caused by input, configuration or environment."""


class FileProblem(UsidgpuError, OSError):
    """A file is missing, unreadable, not HDF5, or truncated."""


class NotUSIDError(UsidgpuError, ValueError):
    """An HDF5 file or dataset does not follow the USID model."""


class NotMainError(NotUSIDError):
    """A dataset is not a USID Main dataset; the message says which rule it breaks."""


class DatasetNotFoundError(UsidgpuError, KeyError):
    """A dataset path does not exist in a file."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class NotAGridError(UsidgpuError, ValueError):
    """A dataset's positions (or spectroscopic points) do not fill a full grid, so it has no n-d view."""


class DeviceError(UsidgpuError, RuntimeError):
    """The requested compute device is not usable (e.g. ``device="gpu"`` without a working GPU)."""


class BudgetError(UsidgpuError, MemoryError):
    """A memory budget is malformed or too small for the smallest unit of work."""


class ResultsError(UsidgpuError, RuntimeError):
    """A results group cannot be created, resumed or attached."""


class InvalidInput(UsidgpuError, ValueError):
    """An argument or the data are not what a function accepts (the message says what and why)."""


class InvalidType(UsidgpuError, TypeError):
    """An argument or the data have a type or dtype a function does not take."""


class UnknownName(UsidgpuError, KeyError):
    """A name (a dimension, a field) that the object does not have."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class SelectionError(UsidgpuError, IndexError):
    """An index or selection outside what a dataset holds."""


class MissingDependency(UsidgpuError, ImportError):
    """An optional package needed for this feature is not installed (the message says which)."""
