"""Which compute device a call runs on: ``auto | cpu | gpu``.

``auto`` (default) uses a GPU when CuPy is installed and a CUDA device answers, else the CPU;
``gpu`` raises :class:`~usidgpu.core.errors.DeviceError` when no GPU is usable (never a silent CPU
run); ``cpu`` always uses NumPy. The environment variable ``USIDGPU_DEVICE`` sets the default.
CuPy is imported only when a GPU is asked for or probed, so ``import usidgpu`` works without CUDA.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
from dataclasses import dataclass
from types import ModuleType

import numpy as np

from .errors import DeviceError

log = logging.getLogger("usidgpu")

DEVICE_ENV = "USIDGPU_DEVICE"
DEVICES = ("auto", "cpu", "gpu")


@functools.lru_cache(maxsize=1)
def gpu_status() -> tuple[bool, str]:
    """Whether a CUDA GPU is usable through CuPy, and why (not).

    Returns
    -------
    usable : bool
    description : str
        The GPU's name when usable, otherwise the reason it is not (CuPy missing, no driver, ...).
    """
    if importlib.util.find_spec("cupy") is None:
        return False, "CuPy is not installed (pip install 'usidgpu[cuda12]' or '[cuda13]')"
    try:
        import cupy

        n = cupy.cuda.runtime.getDeviceCount()
        if n < 1:
            return False, "CuPy found no CUDA device"
        dev = cupy.cuda.Device()
        props = cupy.cuda.runtime.getDeviceProperties(dev.id)
        name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
        # A tiny allocation proves that the driver and runtime really work together.
        cupy.zeros(1, dtype=np.float32).sum().item()
        return True, f"GPU {dev.id}: {name}"
    except Exception as exc:  # any CUDA/driver failure means "not usable"
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return False, f"CuPy cannot use a GPU ({msg})"


def gpu_available() -> bool:
    """True when CuPy is installed and a CUDA device works."""
    return gpu_status()[0]


@dataclass(frozen=True)
class Device:
    """The compute device a call will use.

    Attributes
    ----------
    kind : {"cpu", "gpu"}
    requested : {"auto", "cpu", "gpu"}
        What the caller asked for.
    description : str
        For GPUs the device name; for the CPU why it was chosen (e.g. ``auto`` without CuPy).
    """

    kind: str
    requested: str
    description: str

    @property
    def xp(self) -> ModuleType:
        """The array module of this device: :mod:`numpy` or :mod:`cupy`."""
        if self.kind == "gpu":
            import cupy

            return cupy
        return np

    @property
    def is_gpu(self) -> bool:
        return self.kind == "gpu"

    def __str__(self) -> str:
        if self.requested == "auto":
            return f"{self.kind} (auto: {self.description})"
        return f"{self.kind} ({self.description})"


def select_device(device: str | Device | None = None) -> Device:
    """Resolve ``auto | cpu | gpu`` into the device that will run.

    Parameters
    ----------
    device : {"auto", "cpu", "gpu"}, Device or None
        None reads ``USIDGPU_DEVICE`` (default ``auto``).

    Returns
    -------
    Device
        Its ``str()`` says which device was chosen and why, for logs and CLI output.

    Raises
    ------
    DeviceError
        ``gpu`` was requested and no GPU is usable, or the name is unknown.
    """
    if isinstance(device, Device):
        return device
    requested = (device if device is not None else os.environ.get(DEVICE_ENV, "auto")).strip().lower()
    if requested not in DEVICES:
        raise DeviceError(f"unknown device {requested!r}: choose one of {', '.join(DEVICES)}")
    if requested == "cpu":
        return Device("cpu", "cpu", "NumPy")
    usable, why = gpu_status()
    if requested == "gpu":
        if not usable:
            raise DeviceError(f"--device gpu was requested but no GPU is usable: {why}")
        return Device("gpu", "gpu", why)
    chosen = Device("gpu", "auto", why) if usable else Device("cpu", "auto", f"NumPy; no GPU: {why}")
    log.info("device: %s", chosen)
    return chosen
