"""Named crash points for the fault-injection tests (a *failpoint*, as etcd's gofail or SQLite's
test VFS do it).

Crash safety cannot be shown by reading code: the tests kill a real ``usidgpu`` process at each
moment that matters — during the computation, while the sidecar is written, at each step of
attaching results, after attaching and before cleaning up — then rerun the command and compare.
A signal sent from outside lands at a random moment; these points make the moment exact.

Each results path calls :func:`crash_point` with a name at those moments. It does nothing
unless the environment variable ``USIDGPU_TEST_KILL_AT`` names that point; then the process
kills itself with ``SIGKILL`` (no cleanup, no ``finally``, no ``atexit``: exactly what a power
cut or the OOM killer leaves). ``name:N`` kills at the N-th time the point is reached (1-based),
so a kill can land in the middle of a loop. The variable is read at each call, so a test can
set it in a child's environment only. Names in use are listed by :data:`POINTS` (the tests
check that each one is reached).
"""

from __future__ import annotations

import os
import signal
import threading

ENV = "USIDGPU_TEST_KILL_AT"

POINTS: dict[str, str] = {}
"""Registered crash points: name → when it is reached (filled by :func:`register`)."""

_hits: dict[str, int] = {}
_lock = threading.Lock()


def register(name: str, when: str) -> str:
    """Declare a crash point (at import of the module that uses it); returns ``name``."""
    POINTS[name] = when
    return name


def crash_point(name: str) -> None:
    """Kill this process with SIGKILL here when ``$USIDGPU_TEST_KILL_AT`` names ``name``.

    ``USIDGPU_TEST_KILL_AT=name`` kills the first time the point is reached, ``name:N`` the N-th
    time. Without the variable this is one dictionary lookup.
    """
    wanted = os.environ.get(ENV)
    if not wanted:
        return
    point, _, nth = wanted.partition(":")
    if point != name:
        return
    with _lock:
        _hits[name] = _hits.get(name, 0) + 1
        count = _hits[name]
    if count >= (int(nth) if nth.isdigit() else 1):
        os.kill(os.getpid(), signal.SIGKILL)


__all__ = ["ENV", "POINTS", "crash_point", "register"]
