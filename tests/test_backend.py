"""Device choice, memory budgets, array helpers."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from usidgpu import backend
from usidgpu.backend import (
    asnumpy,
    get_array_module,
    memory_budget,
    parse_bytes,
    select_device,
    to_device,
)
from usidgpu.errors import BudgetError, DeviceError


@pytest.mark.parametrize(
    "text, expected",
    [
        ("2GB", 2 * 10**9),
        ("2GiB", 2 * 2**30),
        ("2G", 2 * 2**30),
        ("512 MiB", 512 * 2**20),
        ("1.5e9", 1_500_000_000),
        ("100kB", 100_000),
        ("64", 64),
        (1024, 1024),
        (2.5e6, 2_500_000),
        ("1tb", 10**12),
    ],
)
def test_parse_bytes(text, expected):
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("bad", ["lots", "2 parsecs", "-5MB", "0", "", None, True, [1]])
def test_parse_bytes_rejects(bad):
    with pytest.raises(BudgetError):
        parse_bytes(bad)


def test_memory_budget(monkeypatch):
    import psutil

    monkeypatch.delenv("USIDGPU_MEMORY", raising=False)
    assert memory_budget("1GB") == 10**9
    available = psutil.virtual_memory().available
    assert 0.2 * available <= memory_budget(device="cpu") <= 0.3 * available
    assert memory_budget(device="cpu", fraction=0.5) == pytest.approx(0.5 * available, rel=0.05)
    with pytest.raises(BudgetError):
        memory_budget(device="cpu", fraction=0)
    monkeypatch.setenv("USIDGPU_MEMORY", "300MB")
    assert memory_budget() == 300 * 10**6


def test_cpu_is_always_available():
    dev = select_device("cpu")
    assert dev.kind == "cpu" and dev.xp is np and not dev.is_gpu
    assert "cpu" in str(dev)


def test_auto_without_gpu_reports_why(no_gpu):
    dev = select_device("auto")
    assert dev.kind == "cpu" and dev.requested == "auto"
    assert "auto" in str(dev) and "GPU hidden by the test" in str(dev)


def test_gpu_without_gpu_is_an_error(no_gpu):
    with pytest.raises(DeviceError, match="no GPU is usable: GPU hidden by the test"):
        select_device("gpu")


def test_device_from_environment(monkeypatch, no_gpu):
    monkeypatch.setenv("USIDGPU_DEVICE", "gpu")
    with pytest.raises(DeviceError):
        select_device()
    monkeypatch.setenv("USIDGPU_DEVICE", "cpu")
    assert select_device().kind == "cpu"
    monkeypatch.setenv("USIDGPU_DEVICE", "tpu")
    with pytest.raises(DeviceError, match="unknown device 'tpu'"):
        select_device()


def test_gpu_status_explains_itself():
    backend.gpu_status.cache_clear()
    usable, why = backend.gpu_status()
    assert isinstance(usable, bool) and why
    if not usable:
        assert "CuPy" in why


def test_array_helpers_on_numpy():
    x = np.arange(3.0)
    assert get_array_module(x) is np and get_array_module(x, [1]) is np
    assert asnumpy(x) is x
    assert isinstance(to_device([1, 2], "cpu"), np.ndarray)


def test_import_never_imports_cupy():
    code = "import sys, usidgpu, usidgpu.cli, usidgpu.stream; import usidgpu.usid; print('cupy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_kernel_dir_in_checkout():
    assert (backend.kernel_dir() / "README.md").is_file()
    assert backend.ctype_of(np.float32) == "float" and backend.ctype_of("complex128") == "complex<double>"
    with pytest.raises(TypeError):
        backend.ctype_of(np.dtype("U3"))
