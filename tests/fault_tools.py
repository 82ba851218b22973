"""Tools of the fault-injection tests: run the real command line in a child process (killed at a
named crash point, see :mod:`usidgpu.core.faults`), make a small file system that fills up, and
fingerprint what a run must leave unchanged.

Shared by the crash-safety tests of every results path (analyses, convert, translate).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pytest

KILLED = -signal.SIGKILL
"""``returncode`` of a child killed by SIGKILL."""

#: no command of the fault tests may run longer than this (a hang is a failure, not a wait)
TIMEOUT_S = 120


@dataclass
class Ran:
    """What one command-line run left: exit status and its output."""

    returncode: int
    stdout: str
    stderr: str

    @property
    def killed(self) -> bool:
        return self.returncode == KILLED

    def one_line_error(self) -> str:
        """The run's error, checked to be one ``usidgpu: error:`` line with no traceback."""
        lines = [ln for ln in self.stderr.splitlines() if ln.strip()]
        assert "Traceback" not in self.stderr, self.stderr
        errors = [ln for ln in lines if ln.startswith("usidgpu: error: ")]
        assert len(errors) == 1, self.stderr
        return errors[0]


def usidgpu(
    *args: str | os.PathLike, kill_at: str | None = None, env: dict | None = None, timeout: float = TIMEOUT_S
) -> Ran:
    """Run ``python -m usidgpu ARGS`` in a child process.

    Parameters
    ----------
    kill_at : str, optional
        A crash point (``name`` or ``name:N``): the child kills itself there with SIGKILL.
    env : dict, optional
        Extra environment variables.
    """
    child_env = dict(os.environ)
    child_env.pop("USIDGPU_TEST_KILL_AT", None)
    child_env.setdefault("USIDGPU_DEVICE", "cpu")
    child_env.update(env or {})
    if kill_at:
        child_env["USIDGPU_TEST_KILL_AT"] = kill_at
    proc = subprocess.run(
        [sys.executable, "-m", "usidgpu", *map(str, args)],
        capture_output=True,
        text=True,
        env=child_env,
        timeout=timeout,
    )
    return Ran(proc.returncode, proc.stdout, proc.stderr)


# ------------------------------------------------------------------------------ what must not change
def data_digests(path: str | os.PathLike) -> dict[str, str]:
    """SHA-256 of every dataset's values in an HDF5 file, by path (results groups included)."""
    out: dict[str, str] = {}

    def visit(name: str, obj) -> None:
        if isinstance(obj, h5py.Dataset):
            value = obj[()]
            raw = value.tobytes() if isinstance(value, np.ndarray) else repr(value).encode()
            out[name] = hashlib.sha256(raw).hexdigest()

    with h5py.File(path, "r") as f:
        f.visititems(visit)
    return out


def results_groups(path: str | os.PathLike, tool: str | None = None) -> list[str]:
    """Paths of the results groups (``*-Tool_NNN``) in an HDF5 file, optionally of one tool."""
    from usidgpu.usid.file import RESULTS_NAME

    found: list[str] = []

    def visit(name: str, obj) -> None:
        m = RESULTS_NAME.match(name.rsplit("/", 1)[-1])
        if isinstance(obj, h5py.Group) and m and (tool is None or m.group("tool") == tool):
            found.append("/" + name)

    with h5py.File(path, "r") as f:
        f.visititems(visit)
    return sorted(found)


def leftovers(folder: str | os.PathLike, keep: Sequence[str | os.PathLike] = ()) -> list[str]:
    """Everything under ``folder`` except the paths in ``keep`` (sidecars, stores, temporaries)."""
    keep_set = {Path(k).resolve() for k in keep}
    return sorted(
        str(p.relative_to(folder))
        for p in Path(folder).rglob("*")
        if p.resolve() not in keep_set and not any(k in p.resolve().parents for k in keep_set)
    )


# ------------------------------------------------------------------------------ a disk that fills up
@contextlib.contextmanager
def small_filesystem(where: Path, size: int) -> Iterator[Path]:
    """A tmpfs of ``size`` bytes mounted at ``where`` (created), unmounted afterwards.

    A real file system that really fills up: the writes of HDF5's C library, zarr, and Python
    all get ``ENOSPC`` from the kernel, as on a full disk. Needs root (mount); skips otherwise.
    """
    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True, text=True
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def fill_up(folder: Path, leave: int = 0, name: str = "filler.bin") -> Path:
    """Fill the file system of ``folder`` until ``leave`` bytes are free; returns the filler file
    (delete it to free the space again)."""
    filler = folder / name
    free = os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize
    with open(filler, "ab") as fh:
        todo = max(0, free - leave)
        block = b"\0" * (1 << 20)
        while todo > 0:
            try:
                todo -= fh.write(block[: min(todo, len(block))])
                fh.flush()
            except OSError:
                break
    return filler


def free_bytes(folder: Path) -> int:
    """Bytes free on the file system of ``folder``."""
    st = os.statvfs(folder)
    return st.f_bavail * st.f_frsize
