"""Shared fixtures: pyUSID as an oracle, the real data folder, a GPU marker that skips cleanly."""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = (REPO / ".." / "shared" / "data").resolve()


def import_pyusid():
    """pyUSID 0.0.12 with the NumPy-2 shim it needs (test helper only, never shipped)."""
    if not hasattr(np, "product"):
        np.product = np.prod  # pyUSID 0.0.12 calls np.product, removed in NumPy 2
    if not hasattr(np, "cumproduct"):
        np.cumproduct = np.cumprod
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return importlib.import_module("pyUSID")


@pytest.fixture(scope="session")
def pyusid():
    try:
        return import_pyusid()
    except ImportError:
        pytest.skip("pyUSID is not installed (pip install '.[test]')")


SAMPLES_DIR = REPO / "usidgpu" / "data"


def real_file(name: str) -> Path:
    """A real public file: from ../shared/data, or the copy shipped in usidgpu/data."""
    for folder in (DATA_DIR, SAMPLES_DIR):
        if (folder / name).is_file():
            return folder / name
    pytest.skip(f"{name} is in neither {DATA_DIR} nor {SAMPLES_DIR}")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA_DIR.is_dir():
        pytest.skip(f"real data folder {DATA_DIR} is absent")
    return DATA_DIR


# ------------------------------------------------------------------------------------------
# One test body for NumPy and the device
#
# Tests take the ``device`` fixture (parametrized "cpu" | "gpu") or, for GPU-only behaviour, the
# ``gpu`` fixture. "gpu" is real CuPy where a CUDA GPU is usable (``pytest -m gpu`` on a GPU
# machine); everywhere else it is the strict CuPy stand-in of tests/cupy_standin, with the CUDA
# kernels executed on the CPU by tests/cudasim, so CI without a GPU executes every GPU path.
# USIDGPU_TEST_DEVICE=standin forces the stand-in even where a GPU exists.
# ------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def real_gpu() -> bool:
    """Whether the "gpu" tests run on real CuPy (a usable CUDA GPU, not forced to the stand-in)."""
    if os.environ.get("USIDGPU_TEST_DEVICE", "").lower() == "standin":
        return False
    try:
        import cupy

        return bool(cupy.is_available()) and not hasattr(cupy, "__cupy_standin__")
    except Exception:
        return False


class DeviceUnderTest:
    """What one test body needs to run on the CPU or the device.

    Attributes
    ----------
    name : {"cpu", "gpu"}
        The ``device=`` argument of usidgpu calls.
    xp : module
        numpy, cupy, or the stand-in (installed as ``cupy``).
    kind : {"numpy", "cupy", "standin"}
    """

    def __init__(self, name: str, xp, kind: str):
        self.name, self.xp, self.kind = name, xp, kind

    @property
    def is_gpu(self) -> bool:
        return self.name == "gpu"

    def asarray(self, a, dtype=None):
        """``a`` on this device (a host → device copy on the GPU)."""
        return self.xp.asarray(a, dtype=dtype)

    def asnumpy(self, a):
        from usidgpu.core.arrays import asnumpy

        return asnumpy(a)

    def is_device_array(self, a) -> bool:
        from usidgpu.core.arrays import is_cupy_array

        return is_cupy_array(a) if self.is_gpu else isinstance(a, np.ndarray)

    @contextlib.contextmanager
    def counting(self):
        """Counts of host↔device transfers, host waits and kernel launches inside the block
        (``None`` where nothing counts them: NumPy and real CuPy)."""
        if self.kind != "standin":
            yield None
            return
        import cupy_standin

        with cupy_standin.counters() as counts:
            yield counts

    def __repr__(self) -> str:
        return f"<device {self.name} ({self.kind})>"


def _gpu_device(monkeypatch, cuml: bool = False) -> DeviceUnderTest:
    if real_gpu():
        import cupy

        from usidgpu.core import device

        device.gpu_status.cache_clear()
        return DeviceUnderTest("gpu", cupy, "cupy")
    if shutil.which("g++") is None:  # pragma: no cover - CI machines have it
        pytest.skip("no CUDA GPU, and the CuPy stand-in's kernel harness needs g++")
    import cupy_standin

    cupy_standin.reset()
    xp = cupy_standin.install_into(monkeypatch, cuml=cuml)
    from usidgpu.core.device import select_device

    select_device("gpu")  # the one-time probe of the device, before anything is counted
    return DeviceUnderTest("gpu", xp, "standin")


@pytest.fixture(params=["cpu", pytest.param("gpu", marks=pytest.mark.gpu)])
def device(request, monkeypatch) -> DeviceUnderTest:
    """Each test body twice: on NumPy and on the device (real CuPy or the stand-in)."""
    if request.param == "cpu":
        return DeviceUnderTest("cpu", np, "numpy")
    return _gpu_device(monkeypatch)


@pytest.fixture
def gpu(request, monkeypatch) -> DeviceUnderTest:
    """The device only, for GPU-only behaviour (mark such tests ``pytest.mark.gpu``)."""
    return _gpu_device(monkeypatch)


@pytest.fixture
def gpu_with_cuml(monkeypatch) -> DeviceUnderTest:
    """The device with cuML: real cuML on a GPU where it is installed, else the cuML stand-in."""
    if real_gpu():
        pytest.importorskip("cuml", reason="cuML is not installed")
    return _gpu_device(monkeypatch, cuml=True)


@pytest.fixture
def no_gpu(monkeypatch):
    """Make usidgpu believe no GPU exists, whatever the machine has."""
    from usidgpu.core import device

    device.gpu_status.cache_clear()
    monkeypatch.setattr(device, "gpu_status", lambda: (False, "GPU hidden by the test"))
    yield
    device.gpu_status.cache_clear() if hasattr(device.gpu_status, "cache_clear") else None
