"""Start a real ``usidgpu serve`` for the service tests, and wait on its jobs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field

import httpx


@dataclass
class Server:
    """A running ``usidgpu serve`` child: its URL, what it printed, the process."""

    url: str
    lines: list[str]
    proc: subprocess.Popen
    stderr_path: str = ""
    extra: dict = field(default_factory=dict)

    def stderr(self) -> str:
        with open(self.stderr_path) as fh:
            return fh.read()

    def get(self, path: str, **kw) -> httpx.Response:
        return httpx.get(f"{self.url}/api/v1/{path}", timeout=30, **kw)

    def post(self, path: str, **kw) -> httpx.Response:
        return httpx.post(f"{self.url}/api/v1/{path}", timeout=30, **kw)


def start_server(*args: str | os.PathLike) -> Server | subprocess.Popen:
    """Start ``usidgpu serve ARGS --port 0``; returns a :class:`Server` once it listens, or the
    ended process when it does not start."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", USIDGPU_DEVICE="cpu")
    err = tempfile.NamedTemporaryFile("w", suffix=".stderr", delete=False)
    proc = subprocess.Popen(
        [sys.executable, "-m", "usidgpu", "serve", *map(str, args), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=err,
        text=True,
        env=env,
    )
    err.close()
    lines: list[str] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        if line.startswith("serving"):
            return Server(line.split()[1].rstrip("/"), lines, proc, err.name)
    proc.wait(timeout=60)
    proc.stderr_path = err.name  # type: ignore[attr-defined]
    proc.lines = lines  # type: ignore[attr-defined]
    return proc


def stop_server(server: Server, kill: bool = False) -> None:
    """Stop it: Ctrl-C (or SIGKILL)."""
    if server.proc.poll() is None:
        server.proc.send_signal(signal.SIGKILL if kill else signal.SIGINT)
        try:
            server.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait()
    server.proc.stdout.close()


@contextmanager
def served(*args: str | os.PathLike):
    """A running server for the duration of a ``with`` block."""
    server = start_server(*args)
    assert isinstance(server, Server), f"the server did not start: {server.lines} {open(server.stderr_path).read()}"
    try:
        yield server
    finally:
        stop_server(server)


def wait_for(condition: Callable[[], object], timeout: float = 90, what: str = "condition") -> object:
    """Poll ``condition`` until it returns something true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
