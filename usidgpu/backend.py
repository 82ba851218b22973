"""Deprecated: the device, memory-budget, array and kernel helpers moved to :mod:`usidgpu.core`
(``core.device``, ``core.memory``, ``core.arrays``, ``core.kernels``). The public ones are also
at the top: ``usidgpu.select_device``, ``usidgpu.memory_budget``, ...; names looked up here still
work and warn."""

from __future__ import annotations

import importlib
import warnings

_HOMES = {
    "device": ("gpu_status", "gpu_available", "Device", "select_device", "DEVICE_ENV", "DEVICES"),
    "memory": ("parse_bytes", "format_bytes", "free_memory", "memory_budget", "MEMORY_ENV", "DEFAULT_BUDGET_FRACTION"),
    "arrays": ("is_cupy_array", "get_array_module", "asnumpy", "to_device"),
    "kernels": ("kernel_dir", "kernel_path", "kernel_source", "ctype_of", "get_kernel", "clear_kernel_cache"),
}
_WHERE = {name: module for module, names in _HOMES.items() for name in names}


def __getattr__(name: str):
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'usidgpu.backend' has no attribute {name!r}")
    warnings.warn(f"usidgpu.backend.{name} moved to usidgpu.core.{module}.{name}", DeprecationWarning, stacklevel=2)
    return getattr(importlib.import_module(f"usidgpu.core.{module}"), name)


def __dir__() -> list[str]:
    return sorted(_WHERE)
