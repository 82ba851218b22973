"""Device choice, memory budgets, array helpers."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from usidgpu.core import device, kernels
from usidgpu.core.arrays import asnumpy, get_array_module, to_device
from usidgpu.core.device import select_device
from usidgpu.core.errors import BudgetError, DeviceError
from usidgpu.core.memory import memory_budget, parse_bytes


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
    device.gpu_status.cache_clear()
    usable, why = device.gpu_status()
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
    assert (kernels.kernel_dir() / "README.md").is_file()
    assert kernels.ctype_of(np.float32) == "float" and kernels.ctype_of("complex128") == "complex<double>"
    with pytest.raises(TypeError):
        kernels.ctype_of(np.dtype("U3"))


def test_the_old_backend_module_still_answers_and_warns():
    import usidgpu.backend as old

    with pytest.warns(DeprecationWarning, match="usidgpu.core.device.select_device"):
        assert old.select_device("cpu").kind == "cpu"
    with pytest.warns(DeprecationWarning, match="usidgpu.core.memory.parse_bytes"):
        assert old.parse_bytes("1kB") == 1000
    with pytest.raises(AttributeError):
        old.no_such_name  # noqa: B018
    import usidgpu.stream as old_stream

    with pytest.warns(DeprecationWarning, match="usidgpu.core.stream.plan_blocks"):
        assert callable(old_stream.plan_blocks)
