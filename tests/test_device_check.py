"""benchmarks/device_check.py works before anyone has a GPU: run end to end on the CuPy stand-in
(timings meaningless, every section's code executed), and refuses to run without a GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "device_check.py"


def test_the_device_check_runs_every_section_on_the_stand_in(tmp_path):
    out = tmp_path / "check.json"
    cmd = [
        sys.executable, str(SCRIPT), "--standin", "--quick", "--output", str(out), "--workdir", str(tmp_path),
        "--", "tests/test_device_core.py", "-k", "selection or kernel_loader",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(out.read_text())
    assert doc["env"]["standin"] and doc["env"]["fit_precision_auto"] in ("float32", "float64")
    assert doc["tests"]["counts"]["passed"] >= 3 and doc["tests"]["counts"]["failed"] == 0
    assert doc["sanitizer"]["none"]["returncode"] == 0
    fits = doc["bench"]["column_fits"]
    assert fits["float64"]["converged"] == 1.0 and fits["float32"]["converged"] == 1.0
    assert fits["float32_vs_float64_max_px"] < 1e-3
    assert doc["bench"]["windowed_svd"]["cleaned_max_abs_diff_gpu_vs_cpu"] < 1e-3
    assert doc["bench"]["svd_vs_copy"]["svd_over_copy"] > 0
    assert "device_check: done" in proc.stdout


def test_the_device_check_without_a_gpu_is_a_one_line_error(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["USIDGPU_DEVICE"] = "cpu"
    code = (
        "import runpy, sys; sys.modules['cupy'] = None; "  # CuPy absent, whatever this machine has
        f"sys.argv = ['device_check.py', '--sections', 'env', '--output', {str(tmp_path / 'x.json')!r}]; "
        f"runpy.run_path({str(SCRIPT)!r}, run_name='__main__')"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.count("\n") == 1 and "no usable CUDA GPU" in proc.stderr
    assert not (tmp_path / "x.json").exists()


@pytest.mark.parametrize("name", ["device_check.py", "kernel_smoke.py", "device_check.sh"])
def test_the_device_check_files_are_there(name):
    assert (REPO / "benchmarks" / name).is_file()
