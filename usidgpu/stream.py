"""Deprecated: block streaming moved to :mod:`usidgpu.core.stream`; names looked up here still
work and warn."""

from __future__ import annotations

import warnings


def __getattr__(name: str):
    from .core import stream

    if name.startswith("__") or not hasattr(stream, name):
        raise AttributeError(f"module 'usidgpu.stream' has no attribute {name!r}")
    warnings.warn(f"usidgpu.stream.{name} moved to usidgpu.core.stream.{name}", DeprecationWarning, stacklevel=2)
    return getattr(stream, name)
