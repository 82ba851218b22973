"""The crash points of :mod:`usidgpu.core.faults`: inert without the variable, a real SIGKILL with it."""

from __future__ import annotations

import subprocess
import sys

from fault_tools import KILLED

from usidgpu.core import faults

CHILD = """
import sys
from usidgpu.core.faults import crash_point
for i in range(5):
    print(i, flush=True)
    crash_point("demo.loop")
print("done", flush=True)
"""


def run_child(env_value: str | None) -> subprocess.CompletedProcess:
    import os

    env = dict(os.environ)
    env.pop(faults.ENV, None)
    if env_value is not None:
        env[faults.ENV] = env_value
    return subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, env=env, timeout=60)


def test_without_the_variable_nothing_happens(monkeypatch):
    monkeypatch.delenv(faults.ENV, raising=False)
    faults.crash_point("demo.loop")  # returns: this test process lives on
    proc = run_child(None)
    assert proc.returncode == 0 and proc.stdout.split() == ["0", "1", "2", "3", "4", "done"]


def test_a_named_point_kills_with_sigkill_at_the_nth_hit():
    first = run_child("demo.loop")
    assert first.returncode == KILLED and first.stdout.split() == ["0"]
    third = run_child("demo.loop:3")
    assert third.returncode == KILLED and third.stdout.split() == ["0", "1", "2"]


def test_other_names_do_not_kill():
    proc = run_child("demo.elsewhere")
    assert proc.returncode == 0 and proc.stdout.split()[-1] == "done"


def test_register_lists_the_point():
    name = faults.register("test.registered", "in a unit test")
    assert name == "test.registered" and faults.POINTS[name] == "in a unit test"
    del faults.POINTS[name]
