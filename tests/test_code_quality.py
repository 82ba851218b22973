"""The habits the suite enforces: ruff (lint and format) on the whole tree, mypy on the typed
packages (the ``[tool.mypy] files`` of pyproject.toml)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *cmd], cwd=REPO, capture_output=True, text=True, timeout=600)


def test_ruff_lint_and_format():
    pytest.importorskip("ruff", reason="ruff is not installed (pip install '.[test]')")
    lint = run("ruff", "check", "usidgpu", "tests", "benchmarks")
    assert lint.returncode == 0, lint.stdout + lint.stderr
    fmt = run("ruff", "format", "--check", "usidgpu", "tests", "benchmarks")
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


def test_mypy_on_the_typed_packages():
    pytest.importorskip("mypy", reason="mypy is not installed (pip install '.[test]')")
    out = run("mypy")
    assert out.returncode == 0, out.stdout + out.stderr
