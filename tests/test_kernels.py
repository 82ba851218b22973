"""CUDA sources compile (nvcc, no GPU needed), and the wheel carries them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from usidgpu.core.kernels import kernel_dir

REPO = Path(__file__).resolve().parents[1]
SOURCES = sorted(kernel_dir().glob("*.cu")) + sorted((REPO / "tests" / "kernels").glob("*.cu"))
NVCC = shutil.which("nvcc")


def compile_check(source: Path) -> subprocess.CompletedProcess:
    """Compile one CUDA source to PTX with its explicit instantiations."""
    return subprocess.run(
        [NVCC, "-ptx", "-arch=sm_80", "-std=c++17", "-DUSIDGPU_COMPILE_CHECK", "-o", os.devnull, str(source)],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.skipif(NVCC is None, reason="nvcc is not installed")
@pytest.mark.parametrize("source", SOURCES, ids=[s.name for s in SOURCES])
def test_kernel_sources_compile(source):
    result = compile_check(source)
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(NVCC is None, reason="nvcc is not installed")
def test_compile_check_catches_broken_kernels(tmp_path):
    bad = tmp_path / "bad.cu"
    bad.write_text("__global__ void k(float* x) { x[0] = undefined_name; }\n")
    assert compile_check(bad).returncode != 0


def test_wheel_ships_kernels_and_finds_them(tmp_path):
    pytest.importorskip("hatchling")
    wheel_dir = tmp_path / "wheel"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(wheel_dir),
            str(REPO),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    (wheel,) = wheel_dir.glob("usidgpu-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for source in kernel_dir().iterdir():
        assert f"usidgpu/kernels/{source.name}" in names
    assert "usidgpu/cli/__init__.py" in names and not [n for n in names if n.startswith("tests/")]
    assert "usidgpu/data/simulated_STEM_Image.h5" in names and "usidgpu/data/README.md" in names
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    code = (
        "import sys, usidgpu, usidgpu.core.kernels as b; "
        "print(b.kernel_dir()); print(usidgpu.__file__); print('cupy' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(target)},
    )
    kdir, module, cupy_loaded = out.stdout.split()
    assert Path(kdir) == target / "usidgpu" / "kernels"
    assert Path(module).is_relative_to(target)
    assert cupy_loaded == "False"
