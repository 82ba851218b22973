"""Crash and full-disk safety of ``usidgpu convert`` and ``usidgpu translate`` (issue 16, items 5–6).

A real ``python -m usidgpu`` is killed with SIGKILL at each crash point of convert and translate
(:mod:`usidgpu.core.faults`), then rerun: the output equals an uninterrupted run's, nothing of the
killed run is left, the input is byte for byte unchanged. On a small tmpfs that fills up, each
command fails with one line and exit status 2, leaves nothing partial, and succeeds once space is
freed. The rules for leftovers (only provably abandoned work folders go) are checked in-process.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from fault_tools import data_digests, fill_up, leftovers, small_filesystem
from fault_tools import usidgpu as cli
from helpers import make_file

from usidgpu.core import faults
from usidgpu.core.errors import FileProblem
from usidgpu.storage import convert, staging
from usidgpu.storage.convert import h5_to_zarr, zarr_to_h5
from usidgpu.translate import translate  # also registers the translate crash points
from usidgpu.usid.dimension import Dimension

pytestmark = pytest.mark.filterwarnings("ignore")

#: the crash points each command is killed at (``name:N``: the N-th time it is reached)
TO_ZARR = ("convert.copy:2", "convert.publish", "convert.cleanup")
TO_H5 = ("convert.copy:2", "convert.attributes", "convert.publish", "convert.cleanup")
TRANSLATE = ("translate.write", "translate.publish", "translate.cleanup")
#: chunks given to the zarr store, so its writes run many at once (as zarr does for big data)
CHUNKS = "8,64"


def tree_digest(path: Path) -> str:
    """SHA-256 of a file's bytes, or of every file (names and bytes) under a folder."""
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        h.update(str(f.relative_to(path) if path.is_dir() else f.name).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def assert_same_store(a: Path, b: Path) -> None:
    """Two zarr stores with the same nodes, attributes and array values."""
    import zarr

    ga, gb = zarr.open_group(str(a), mode="r"), zarr.open_group(str(b), mode="r")
    assert dict(ga.attrs) == dict(gb.attrs)
    ma, mb = dict(ga.members(max_depth=None)), dict(gb.members(max_depth=None))
    assert sorted(ma) == sorted(mb)
    for name, node in ma.items():
        other = mb[name]
        assert dict(node.attrs) == dict(other.attrs), name
        if isinstance(node, zarr.Array):
            assert node.chunks == other.chunks, name
            np.testing.assert_array_equal(node[...], other[...], err_msg=name)


def assert_no_leftovers(folder: Path, *keep: Path) -> None:
    assert leftovers(folder, keep=keep) == [], leftovers(folder, keep=keep)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A small USID file, its zarr store, a .npy stack, and what uninterrupted runs make of them."""
    d = tmp_path_factory.mktemp("inputs")
    h5 = d / "scan.h5"
    pos = [Dimension("Y", "um", np.arange(32) * 0.5), Dimension("X", "um", 32)]
    spec = [Dimension("Bias", "V", np.linspace(-1, 1, 64))]
    make_file(h5, data=np.random.default_rng(1).standard_normal((32, 32, 64)).astype(np.float32), pos=pos, spec=spec)
    store = d / "scan.zarr"
    h5_to_zarr(h5, store)
    npy = d / "stack.npy"
    np.save(npy, np.random.default_rng(2).standard_normal((4, 64, 64)).astype(np.float32))
    refs = d / "reference"
    refs.mkdir()
    ns = SimpleNamespace(h5=h5, store=store, npy=npy, ref_zarr=refs / "scan.zarr", ref_h5=refs / "scan.h5")
    ns.ref_chunked = refs / "chunked.zarr"
    ns.ref_npy = refs / "stack.h5"
    h5_to_zarr(h5, ns.ref_zarr)
    h5_to_zarr(h5, ns.ref_chunked, chunks=(8, 64))
    zarr_to_h5(store, ns.ref_h5)
    translate(npy, ns.ref_npy)
    ns.digests = {p: tree_digest(p) for p in (h5, store, npy)}
    return ns


def assert_inputs_unchanged(inputs) -> None:
    for path, digest in inputs.digests.items():
        assert tree_digest(path) == digest, f"{path} changed"


# ------------------------------------------------------------------------------ killed, then rerun
def _killed_then_rerun(args: tuple, out: Path, point: str) -> None:
    """Kill the command at ``point``, check what it left, rerun it."""
    killed = cli(*args, kill_at=point)
    assert killed.killed, (point, killed.returncode, killed.stderr)
    if point.endswith(".cleanup"):
        assert out.exists()  # complete and in place; only the work folder is left
    else:
        assert not out.exists(), f"a partial {out.name} is visible after a kill at {point}"
    assert staging.work_folders(out), "the killed run left no work folder: the point was not where it should be"
    rerun = cli(*args)
    if point.endswith(".cleanup"):  # OUT is complete: a rerun refuses it, as always, but cleans up
        assert rerun.returncode == 2 and "already exists" in rerun.one_line_error()
    else:
        assert rerun.returncode == 0, rerun.stderr
    assert_no_leftovers(out.parent, out)


@pytest.mark.parametrize("point", TO_ZARR)
def test_killed_convert_to_zarr(point, inputs, tmp_path):
    out = tmp_path / "scan.zarr"
    _killed_then_rerun(("convert", inputs.h5, out), out, point)
    assert_same_store(out, inputs.ref_zarr)
    assert_inputs_unchanged(inputs)


@pytest.mark.parametrize("point", TO_H5)
def test_killed_convert_to_hdf5(point, inputs, tmp_path):
    out = tmp_path / "scan.h5"
    _killed_then_rerun(("convert", inputs.store, out), out, point)
    assert data_digests(out) == data_digests(inputs.ref_h5)
    assert_inputs_unchanged(inputs)


@pytest.mark.parametrize("point", TRANSLATE)
def test_killed_translate(point, inputs, tmp_path):
    out = tmp_path / "stack.h5"
    _killed_then_rerun(("translate", inputs.npy, out), out, point)
    assert data_digests(out) == data_digests(inputs.ref_npy)
    assert_inputs_unchanged(inputs)


def test_every_crash_point_is_exercised():
    ours = {name for name in faults.POINTS if name.startswith(("convert.", "translate."))}
    used = {p.partition(":")[0] for p in TO_ZARR + TO_H5 + TRANSLATE}
    assert ours == used, f"registered but never killed at: {sorted(ours - used)}; unknown: {sorted(used - ours)}"
    assert {convert.COPY, convert.ATTRIBUTES, convert.PUBLISH, convert.CLEANUP} <= ours


# ------------------------------------------------------------------------------ full disks
def _full_disk_fails_cleanly(args: tuple, disk: Path, filler: Path) -> str:
    ran = cli(*args)
    assert ran.returncode == 2, ran.stderr
    line = ran.one_line_error()
    assert ran.stderr.strip() == line, ran.stderr  # nothing else: no asyncio or h5py noise
    assert "no space left on device writing" in line and " free" in line, line
    assert_no_leftovers(disk, filler)
    return line


def test_convert_to_zarr_on_a_full_disk(inputs, tmp_path):
    """zarr writes chunks concurrently: one failing must give one line and no partial store
    (before: thousands of 'Task was destroyed but it is pending!' lines, sometimes a store)."""
    with small_filesystem(tmp_path / "disk", 4 * 2**20) as disk:
        filler = fill_up(disk, leave=96 * 1024)
        out = disk / "scan.zarr"
        args = ("convert", inputs.h5, out, "--chunks", CHUNKS)
        _full_disk_fails_cleanly(args, disk, filler)
        filler.unlink()
        ran = cli(*args)
        assert ran.returncode == 0, ran.stderr
        assert_same_store(out, inputs.ref_chunked)
        assert_no_leftovers(disk, out)
    assert_inputs_unchanged(inputs)


def _leave_for_a_failure_mid_write(needed: int) -> int:
    """Free bytes that pass the up-front check (at least ``needed``) but cannot hold the file:
    the work folder's marker takes a page, and the file's metadata more than the rest."""
    page = 4096
    return -(-needed // page) * page + page


def test_convert_to_hdf5_on_a_full_disk(inputs, tmp_path):
    """Refused up front when the data cannot fit; a disk filling up mid-write (before: h5py
    tracebacks, then a segmentation fault at exit) gives the same one line."""
    from usidgpu.storage.zarr_view import open_zarr

    with open_zarr(inputs.store) as zf:
        needed = convert._h5_bytes(zf)
    with small_filesystem(tmp_path / "disk", 2 * 2**20) as disk:
        out = disk / "scan.h5"
        args = ("convert", inputs.store, out)
        filler = fill_up(disk, leave=needed // 2)
        assert "needed" in _full_disk_fails_cleanly(args, disk, filler)
        filler.unlink()
        filler = fill_up(disk, leave=_leave_for_a_failure_mid_write(needed))
        _full_disk_fails_cleanly(args, disk, filler)
        filler.unlink()
        ran = cli(*args)
        assert ran.returncode == 0, ran.stderr
        assert data_digests(out) == data_digests(inputs.ref_h5)
        assert_no_leftovers(disk, out)
    assert_inputs_unchanged(inputs)


def test_translate_on_a_full_disk(inputs, tmp_path):
    from usidgpu.translate import _data_bytes, find_reader

    channels, _, _ = find_reader(inputs.npy).load()(inputs.npy)
    needed = _data_bytes(channels)
    with small_filesystem(tmp_path / "disk", 2 * 2**20) as disk:
        out = disk / "stack.h5"
        args = ("translate", inputs.npy, out)
        filler = fill_up(disk, leave=needed // 2)
        assert "needed" in _full_disk_fails_cleanly(args, disk, filler)
        filler.unlink()
        filler = fill_up(disk, leave=_leave_for_a_failure_mid_write(needed))
        _full_disk_fails_cleanly(args, disk, filler)
        filler.unlink()
        ran = cli(*args)
        assert ran.returncode == 0, ran.stderr
        assert data_digests(out) == data_digests(inputs.ref_npy)
        assert_no_leftovers(disk, out)
    assert_inputs_unchanged(inputs)


def test_a_write_failing_mid_file_stops_the_writer_and_leaves_nothing(inputs, tmp_path, monkeypatch):
    """In-process, without a small file system: the third write of the HDF5 file fails."""
    import errno

    real_write_at = staging.GuardedFile._write_at
    calls = {"n": 0}

    def write_at(self, view, pos):
        calls["n"] += 1
        if calls["n"] >= 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write_at(self, view, pos)

    monkeypatch.setattr(staging.GuardedFile, "_write_at", write_at)
    out = tmp_path / "out" / "scan.h5"
    out.parent.mkdir()
    with pytest.raises(FileProblem, match="no space left on device writing .*scan.h5"):
        zarr_to_h5(inputs.store, out)
    assert calls["n"] == 3  # nothing written after the failure
    assert_no_leftovers(out.parent)
    calls["n"] = -(10**9)
    zarr_to_h5(inputs.store, out)
    assert data_digests(out) == data_digests(inputs.ref_h5)


# ------------------------------------------------------------------------------ what counts as a leftover
def _work_folder(dst: Path, pid: int, record: dict | None, marker: bool = True) -> Path:
    import json

    folder = dst.parent / f".{dst.name}{staging.PART}{pid}-abc123"
    folder.mkdir()
    (folder / dst.name).write_bytes(b"partial")
    if marker:
        (folder / staging.MARKER).write_text("" if record is None else json.dumps(record))
    return folder


def test_only_provably_abandoned_work_folders_are_removed(tmp_path):
    import fcntl
    import socket

    dst = tmp_path / "out.zarr"
    host = socket.gethostname()
    abandoned = _work_folder(dst, 999_999, {"usidgpu": "convert", "output": dst.name, "pid": 999_999, "host": host})
    dst_other = tmp_path / "other.zarr"
    other = _work_folder(dst_other, 999_998, {"output": dst_other.name, "pid": 999_998, "host": host})
    no_marker = _work_folder(dst, 999_997, None, marker=False)  # a user's folder with a similar name
    wrong_output = _work_folder(dst, 999_996, {"output": "someone-else.zarr", "pid": 999_996, "host": host})
    not_json = _work_folder(dst, 999_995, None)
    (not_json / staging.MARKER).write_text("my notes")
    live = _work_folder(dst, os.getpid(), {"output": dst.name, "pid": os.getpid(), "host": host})
    user_file = tmp_path / f".{dst.name}{staging.PART}123-xyz"  # a file, not a folder
    user_file.write_text("mine")
    plain = tmp_path / f".{dst.name}.part-{999_999}"  # what older versions left: not provably ours
    plain.write_text("old")
    fd = os.open(live / staging.MARKER, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a run in progress holds its marker's lock
    try:
        removed = staging.remove_abandoned(dst)
    finally:
        os.close(fd)
    assert removed == [abandoned]
    for kept in (other, no_marker, wrong_output, not_json, live, user_file, plain):
        assert kept.exists(), kept
    # an empty marker is a run killed while writing it; an empty folder one killed before it;
    # the "live" run's lock is released now (as when its process ends)
    empty_marker = _work_folder(dst, 999_994, None)
    empty = tmp_path / f".{dst.name}{staging.PART}999993-q"
    empty.mkdir()
    assert sorted(staging.remove_abandoned(dst)) == sorted([empty_marker, empty, live])


def test_a_failed_run_removes_its_work_folder_and_a_rerun_its_own_leftover(inputs, tmp_path):
    out = tmp_path / "scan.zarr"
    with pytest.raises(RuntimeError), staging.Staging(out, "test") as stage:
        assert stage.work is not None and stage.work.parent == tmp_path
        stage.path.mkdir()
        raise RuntimeError("failed")
    assert_no_leftovers(tmp_path)
    # a killed run's folder: marker present, lock free (its holder is gone)
    stale = _work_folder(out, 999_999, {"output": out.name, "pid": 999_999, "host": "x"})
    h5_to_zarr(inputs.h5, out)
    assert not stale.exists()
    assert_no_leftovers(tmp_path, out)


def test_publish_refuses_an_output_that_appeared_meanwhile(tmp_path):
    out = tmp_path / "o.h5"
    with pytest.raises(FileProblem, match="appeared while writing"), staging.Staging(out, "t") as s:
        s.path.write_bytes(b"new")
        out.write_bytes(b"someone else's")
        s.publish()
    assert out.read_bytes() == b"someone else's"
    assert_no_leftovers(tmp_path, out)


def test_disk_full_is_found_in_the_causes():
    import errno

    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as exc:
            raise RuntimeError("writing failed") from exc
    except RuntimeError as outer:
        assert staging.disk_full(outer)
    assert not staging.disk_full(OSError(errno.EACCES, "Permission denied"))
    assert staging.disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
