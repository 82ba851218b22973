"""Shared fixtures: pyUSID as an oracle, the real data folder, a GPU marker that skips cleanly."""

from __future__ import annotations

import importlib
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


def _gpu_usable() -> bool:
    try:
        import cupy

        return bool(cupy.is_available())
    except Exception:
        return False


def pytest_collection_modifyitems(config, items):
    if _gpu_usable():
        return
    skip = pytest.mark.skip(reason="no usable CUDA GPU (cupy.is_available() is false)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def no_gpu(monkeypatch):
    """Make usidgpu believe no GPU exists, whatever the machine has."""
    from usidgpu import backend

    backend.gpu_status.cache_clear()
    monkeypatch.setattr(backend, "gpu_status", lambda: (False, "GPU hidden by the test"))
    yield
    backend.gpu_status.cache_clear() if hasattr(backend.gpu_status, "cache_clear") else None
