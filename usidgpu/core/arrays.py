"""One algorithm body for NumPy and CuPy: the array module of an input, and host/device copies.

Functions take the array module from their input (:func:`get_array_module`) and never import
CuPy at module import time.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

from .device import Device, select_device


def is_cupy_array(x: Any) -> bool:
    """True for CuPy arrays, without importing CuPy."""
    return type(x).__module__.split(".")[0] == "cupy"


def get_array_module(*arrays: Any) -> ModuleType:
    """:mod:`cupy` if any argument is a CuPy array, else :mod:`numpy`."""
    for a in arrays:
        if is_cupy_array(a):
            import cupy

            return cupy
    return np


def asnumpy(x: Any) -> np.ndarray:
    """Copy a CuPy array to the host; NumPy arrays (and array-likes) pass through."""
    if is_cupy_array(x):
        return x.get()
    return np.asarray(x)


def to_device(x: Any, device: str | Device = "cpu") -> Any:
    """Move an array to ``device`` (NumPy for ``cpu``, CuPy for ``gpu``)."""
    dev = select_device(device)
    if dev.is_gpu:
        import cupy

        return cupy.asarray(x)
    return asnumpy(x)
