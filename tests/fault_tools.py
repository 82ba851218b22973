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


# ------------------------------------------------------------------------------ runs side by side
def start_usidgpu(*args: str | os.PathLike, env: dict | None = None) -> subprocess.Popen:
    """Start ``python -m usidgpu ARGS`` in a child without waiting (see :func:`finished`)."""
    child_env = dict(os.environ)
    child_env.pop("USIDGPU_TEST_KILL_AT", None)
    child_env.setdefault("USIDGPU_DEVICE", "cpu")
    child_env.update(env or {})
    return subprocess.Popen(
        [sys.executable, "-m", "usidgpu", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env,
    )


def finished(proc: subprocess.Popen, timeout: float = TIMEOUT_S) -> Ran:
    """Wait for a child of :func:`start_usidgpu`; what it left."""
    out, err = proc.communicate(timeout=timeout)
    return Ran(proc.returncode, out, err)


def group_digests(path: str | os.PathLike, group: str) -> dict[str, str]:
    """SHA-256 of every dataset's values in one results group, by path relative to the group."""
    prefix = group.strip("/") + "/"
    return {k[len(prefix) :]: v for k, v in data_digests(path).items() if k.startswith(prefix)}


# ------------------------------------------------------------------------------ small sources
def make_sources(folder: Path) -> dict[str, Path]:
    """Small USID files of the analyses' fault tests: ``spectra`` (8 × 8 positions × 16 points,
    low rank), ``image`` (64 × 64 px of atomic columns) and ``giv`` (3 × 4 G-mode I–V rows)."""
    from helpers import low_rank, make_file

    import usidgpu as ug
    from usidgpu import Dimension
    from usidgpu.atoms.synthetic import lattice_image
    from usidgpu.bayes.giv import simulate_giv
    from usidgpu.imageio import image_to_usid

    folder.mkdir(parents=True, exist_ok=True)
    spectra = folder / "spectra.h5"
    make_file(
        spectra,
        low_rank(64, 16, rank=4, dtype=np.float32).reshape(8, 8, 16),
        pos=[Dimension("Y", "µm", 8), Dimension("X", "µm", 8)],
        spec=[Dimension("Bias", "V", np.linspace(-1, 1, 16))],
    )
    image = folder / "image.h5"
    image_to_usid(lattice_image((64, 64), spacing=10.0, seed=1, dose=300).image, image)
    giv = folder / "giv.h5"
    sim = simulate_giv(12, 128, noise=0.03, seed=6, g_shunt=np.linspace(0.4, 0.8, 12))
    with h5py.File(giv, "a") as f:
        g = f.require_group("Measurement_000/Channel_000")
        g.attrs["excitation_frequency_[Hz]"] = sim["frequency"]
        ug.write_main(
            g,
            "Raw_Data",
            sim["current"].astype(np.float32).reshape(3, 4, -1),
            "Current",
            "nA",
            [Dimension("Y", "µm", 3), Dimension("X", "µm", 4)],
            [Dimension("Bias", "V", sim["bias"])],
        )
    return {"spectra": spectra, "image": image, "giv": giv}
