"""The storage suite: the USID data-model tests read the same file from HDF5 and from zarr.

A test that reads takes the ``storage`` fixture and reaches its file through it::

    from storage_fixtures import storage  # noqa: F401  (the fixture)

    def test_something(storage, tmp_path):
        make_file(tmp_path / "d.h5", ...)                  # written as HDF5, as before
        with storage.open(tmp_path / "d.h5") as f:         # read from HDF5, or from its zarr copy
            ...

The zarr copy is made by the public converter (``usidgpu convert IN OUT.zarr``) and opened with
``usidgpu.open``, as a user would. Writing stays HDF5 (zarr stores are opened read-only): a
test breaks or builds its HDF5 file first, then asks ``storage.path(...)`` for the file to read.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest

import usidgpu
from usidgpu.cli import main as cli

STORAGES = ("h5", "zarr")


def to_zarr(h5_path: str | Path) -> Path:
    """A new zarr copy of an HDF5 file, made by ``usidgpu convert IN OUT.zarr``, next to it."""
    h5_path = Path(h5_path)
    out = h5_path.with_name(f"{h5_path.stem}.zarr")
    n = 0
    while out.exists():
        n += 1
        out = h5_path.with_name(f"{h5_path.stem}-{n}.zarr")
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = cli(["convert", str(h5_path), str(out)])
    assert code == 0, f"usidgpu convert {h5_path.name} {out.name} failed ({code}): {stderr.getvalue().strip()}"
    return out


class Storage:
    """Where a test reads its file from: ``"h5"`` (the file itself) or ``"zarr"`` (a converted copy)."""

    def __init__(self, kind: str) -> None:
        assert kind in STORAGES, kind
        self.kind = kind

    def path(self, h5_path: str | Path) -> Path:
        """The file to read: ``h5_path`` itself, or a zarr copy of it as it is now."""
        return Path(h5_path) if self.kind == "h5" else to_zarr(h5_path)

    def open(self, h5_path: str | Path) -> usidgpu.USIDFile:
        """``usidgpu.open`` of :meth:`path`."""
        return usidgpu.open(self.path(h5_path))

    def __repr__(self) -> str:
        return f"<storage {self.kind}>"


@pytest.fixture(params=STORAGES)
def storage(request) -> Storage:
    """Each reading test twice: on the HDF5 file and on its zarr copy."""
    if request.param == "zarr":
        pytest.importorskip("zarr", reason="zarr is not installed")
    return Storage(request.param)
