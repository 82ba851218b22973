"""The README's example runs, and .ci/run runs the README's test command."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")


def test_ten_line_example_runs(tmp_path, monkeypatch):
    (code,) = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    code = code.replace("        ...", "        assert block.data.shape[1] == 200")
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert scope["image"].shape == (64, 64)
    assert scope["mean_spectrum"].shape == (200,)
    assert np.isfinite(scope["mean_spectrum"]).all()


def test_ci_runs_the_readme_test_command():
    out = subprocess.run(
        ["awk", "/<!-- test-command/{found=1; next} found && /^python/{print; exit}", str(REPO / "README.md")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert out == 'python -m pip install -e ".[test]" && python -m pytest -q -n 2'
    assert f"```bash\n{out}\n```" in README
    assert 'eval "$command"' in (REPO / ".ci" / "run").read_text()


def test_first_command_describes_the_sample(capsys):
    from usidgpu.cli import main

    assert "usidgpu info sample:stem-image" in README
    assert main(["info", "sample:stem-image"]) == 0
    assert "(256, 256, 1)" in capsys.readouterr().out
