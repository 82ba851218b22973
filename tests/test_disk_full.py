"""A full disk while an analysis writes its results (issue 16, item 5), on a real small file system
(a tmpfs the test mounts: HDF5, zarr and Python all get ENOSPC from the kernel).

Wanted each time: one line, exit 2, no crash; nothing left that breaks the next command; the
source unchanged and not grown; once there is room again, the rerun (or ``usidgpu resume``)
finishes, with exactly one results group. The free space is checked before the sidecar is
written and before the group is copied into the source, so HDF5 never meets the full disk.
"""

from __future__ import annotations

import shutil

import pytest
from fault_tools import data_digests, fill_up, leftovers, make_sources, results_groups, small_filesystem, usidgpu

import usidgpu as ug

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

COMMANDS = {
    "denoise": ("image", ["denoise", "--window", "8", "-k", "3", "--device", "cpu"], "Windowed_SVD"),
    "bayes": ("giv", ["bayes", "--samples", "50", "--grid-points", "20", "--memory", "64KB"], "Bayesian_Inference"),
}


@pytest.fixture(scope="module")
def templates(tmp_path_factory):
    return make_sources(tmp_path_factory.mktemp("templates"))


@pytest.fixture
def disk(tmp_path):
    """A 4 MiB file system of its own."""
    with small_filesystem(tmp_path / "disk", 4 << 20) as where:
        yield where


def _on(disk, templates, name):
    template, args, tool = COMMANDS[name]
    path = disk / f"{template}.h5"
    shutil.copy(templates[template], path)
    return path, args, tool


def _unchanged(path, size, before):
    assert path.stat().st_size == size  # not grown: no copy was started
    assert data_digests(path) == before


def test_no_room_for_the_sidecar(disk, templates):
    path, args, tool = _on(disk, templates, "denoise")
    size, before = path.stat().st_size, data_digests(path)
    filler = fill_up(disk, leave=200_000)
    ran = usidgpu(args[0], path, *args[1:])
    assert ran.returncode == 2
    assert "not enough free space" in ran.one_line_error()
    _unchanged(path, size, before)
    assert leftovers(disk, keep=[path, filler]) == []  # no sidecar, no empty folder
    assert usidgpu("info", path).returncode == 0
    filler.unlink()
    rerun = usidgpu(args[0], path, *args[1:])
    assert rerun.returncode == 0, rerun.stderr
    assert len(results_groups(path, tool)) == 1
    assert leftovers(disk, keep=[path]) == []


@pytest.mark.parametrize("name", ["denoise", "bayes"])
def test_no_room_to_attach_keeps_the_results_and_resume_attaches_them(disk, templates, name):
    path, args, tool = _on(disk, templates, name)
    size, before = path.stat().st_size, data_digests(path)
    assert usidgpu(args[0], path, *args[1:], kill_at="results.sidecar_done").killed  # a complete sidecar
    filler = fill_up(disk, leave=100_000)
    ran = usidgpu(args[0], path, *args[1:])
    assert ran.returncode == 2
    error = ran.one_line_error()
    assert "not enough free space for attaching" in error and "usidgpu resume" in error, error
    _unchanged(path, size, before)
    info = usidgpu("info", path)
    assert info.returncode == 0 and "attach pending" in info.stdout, info.stdout + info.stderr
    filler.unlink()
    resumed = usidgpu("resume", path)
    assert resumed.returncode == 0, resumed.stderr
    assert len(results_groups(path, tool)) == 1
    assert leftovers(disk, keep=[path]) == []
    assert ug.validate(path) == []
