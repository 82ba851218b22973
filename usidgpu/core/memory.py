"""Memory sizes and budgets: bytes a streamed computation may hold at once.

Default budget: a fraction of the free device memory (GPU) or of the available RAM (CPU).
``USIDGPU_MEMORY`` sets the default; strings such as ``"2GB"``, ``"512MiB"`` or plain byte counts
are accepted everywhere.
"""

from __future__ import annotations

import os
import re

import numpy as np

from .device import Device, select_device
from .errors import BudgetError

MEMORY_ENV = "USIDGPU_MEMORY"
#: Fraction of free memory a computation takes when no budget is given.
DEFAULT_BUDGET_FRACTION = 0.25

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kb": 1000,
    "kib": 1024,
    "m": 1024**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "g": 1024**3,
    "gb": 1000**3,
    "gib": 1024**3,
    "t": 1024**4,
    "tb": 1000**4,
    "tib": 1024**4,
}


def parse_bytes(value: int | float | str) -> int:
    """Turn a memory size into a number of bytes.

    Parameters
    ----------
    value : int, float or str
        Bytes as a number, or a string such as ``"2GB"`` (decimal, 2·10⁹), ``"2GiB"`` or ``"2G"``
        (binary, 2·2³⁰), ``"512 MiB"``, ``"1.5e9"``.

    Returns
    -------
    int
        The size in bytes (at least 1).

    Raises
    ------
    BudgetError
        When the value cannot be read or is not positive.
    """
    if isinstance(value, bool):
        raise BudgetError(f"memory size must be a number of bytes or a string like '2GB', not {value!r}")
    if isinstance(value, (int, np.integer, float, np.floating)):
        n = float(value)
    elif isinstance(value, str):
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*", value)
        if not m or m.group(2).lower() not in _UNITS:
            raise BudgetError(
                f"cannot read memory size {value!r}: use bytes or a number with a unit "
                "(kB, MB, GB, TB, KiB, MiB, GiB, TiB)"
            )
        n = float(m.group(1)) * _UNITS[m.group(2).lower()]
    else:
        raise BudgetError(f"memory size must be a number of bytes or a string like '2GB', not {value!r}")
    if not np.isfinite(n) or n < 1:
        raise BudgetError(f"memory size must be positive, got {value!r}")
    return int(n)


def format_bytes(n: float) -> str:
    """Human-readable size with binary units, e.g. ``1.5 GiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def free_memory(device: str | Device = "cpu") -> int:
    """Bytes free right now on the device (GPU: free device memory + CuPy pool; CPU: available RAM)."""
    dev = select_device(device)
    if dev.is_gpu:
        import cupy

        free, _total = cupy.cuda.Device().mem_info
        return int(free + cupy.get_default_memory_pool().free_bytes())
    import psutil

    return int(psutil.virtual_memory().available)


def memory_budget(
    budget: int | float | str | None = None,
    device: str | Device = "cpu",
    fraction: float = DEFAULT_BUDGET_FRACTION,
) -> int:
    """The memory budget, in bytes, of a computation on ``device``.

    Parameters
    ----------
    budget : int, float, str or None
        An explicit size (``"2GB"``, bytes). None reads ``USIDGPU_MEMORY`` and otherwise takes
        ``fraction`` of :func:`free_memory`.
    device : str or Device
        Device whose free memory sets the default.
    fraction : float
        Share of free memory used by default.

    Returns
    -------
    int
    """
    if budget is None:
        budget = os.environ.get(MEMORY_ENV) or None
    if budget is not None:
        return parse_bytes(budget)
    if not 0 < fraction <= 1:
        raise BudgetError(f"budget fraction must be in (0, 1], got {fraction}")
    return max(1, int(free_memory(device) * fraction))
