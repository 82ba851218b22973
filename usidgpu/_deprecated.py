"""Old import paths that keep working after a move: a module ``__getattr__`` that warns and
forwards each old name to its new home (PEP 562)."""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Mapping
from typing import Any


def moved(old_module: str, new_module: str, names: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``old_module``: ``names`` maps each old name to its name in
    ``new_module``; looking one up warns with :class:`DeprecationWarning` and returns the object."""

    def __getattr__(name: str) -> Any:
        if name not in names:
            raise AttributeError(f"module {old_module!r} has no attribute {name!r}")
        new = names[name]
        warnings.warn(f"{old_module}.{name} moved to {new_module}.{new}", DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module(new_module), new)

    return __getattr__
