"""Resume after kill -9 at random moments: every rerun finishes only what is missing, the result
equals an uninterrupted run exactly, and the source data never change."""

from __future__ import annotations

import hashlib
import importlib
import shutil
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from helpers import make_file

import usidgpu
from usidgpu import Dimension
from usidgpu.cli import main as cli
from usidgpu.parallel.fits import PolynomialFit
from usidgpu.parallel.resume import partial_runs
from usidgpu.usid.results import sidecar_dir

SOURCE = "/Measurement_000/Channel_000/Raw_Data"
RUN = """
import sys
import usidgpu
from usidgpu.parallel.fits import PolynomialFit
with usidgpu.open(sys.argv[1]) as f:
    print(PolynomialFit(f[sys.argv[2]], degree=3, rows_per_block=8, progress=False).run(), flush=True)
"""


def source_digest(path: Path) -> str:
    """Hash of the source dataset, its ancillary datasets and all their attributes."""
    h = hashlib.sha256()
    with h5py.File(path, "r") as f:
        main = f[SOURCE]
        objs = [main] + [f[main.attrs[k]] for k in ("Position_Indices", "Position_Values")]
        objs += [f[main.attrs[k]] for k in ("Spectroscopic_Indices", "Spectroscopic_Values")]
        for obj in objs:
            h.update(obj.name.encode())
            h.update(np.ascontiguousarray(obj[()]).tobytes())
            for key in sorted(obj.attrs):
                value = obj.attrs[key]
                h.update(
                    key.encode()
                    + (value.__class__.__name__ if isinstance(value, h5py.Reference) else repr(value)).encode()
                )
    return h.hexdigest()


@pytest.fixture
def spectra(tmp_path):
    rng = np.random.default_rng(1)
    x = np.linspace(-2, 2, 48)
    coef = rng.normal(size=(40 * 30, 4))
    data = (np.polynomial.polynomial.polyvander(x, 3) @ coef[:, ::-1].T).T + 0.05 * rng.normal(size=(1200, 48))
    path = tmp_path / "iv.h5"
    make_file(
        path,
        data.reshape(40, 30, 48).astype(np.float32),
        pos=[Dimension("Y", "nm", 40), Dimension("X", "nm", 30)],
        spec=[Dimension("Bias", "V", x)],
    )
    return path, x, data


def reference_result(path: Path, tmp_path: Path) -> np.ndarray:
    clean = tmp_path / "reference.h5"
    shutil.copy(path, clean)
    with usidgpu.open(clean) as f:
        group = PolynomialFit(f[SOURCE], degree=3, rows_per_block=8, progress=False).run()
    with h5py.File(clean, "r") as f:
        return f[group + "/Coefficients"][()], f[group + "/Residual"][()]


def test_kill_9_at_random_points_then_rerun(spectra, tmp_path):
    path, x, data = spectra
    before = source_digest(path)
    expected, expected_res = reference_result(path, tmp_path)
    np.testing.assert_allclose(expected, np.polyfit(x, data.T, 3).T, rtol=1e-4, atol=1e-4)
    rng = np.random.default_rng(7)
    kills, finished = 0, None
    for _ in range(4):
        proc = subprocess.Popen([sys.executable, "-c", RUN, str(path), SOURCE], stdout=subprocess.PIPE, text=True)
        time.sleep(rng.uniform(0.6, 2.0))  # start-up (imports) is ~0.5 s; 150 blocks take ~1 s more
        if proc.poll() is None:
            proc.kill()  # SIGKILL: no cleanup of any kind
            kills += 1
        out, _ = proc.communicate()
        if proc.returncode == 0:
            finished = out
            break
        runs = partial_runs(path)
        with usidgpu.open(path) as f:  # a group that looks complete is complete (killed after attaching)
            complete = [g.path for g in f.results_groups(SOURCE) if g.tool == "Polynomial_Fit" and g.complete]
        with h5py.File(path, "r") as f:
            for name in complete:
                np.testing.assert_array_equal(f[name + "/Coefficients"][()], expected)
        if complete and not runs:  # killed after its last step: the run is over
            finished = complete[0]
            break
        assert len(runs) <= 1  # one store (killed while consolidating, all its blocks may be done)
    if finished is None:
        final = subprocess.run([sys.executable, "-c", RUN, str(path), SOURCE], capture_output=True, text=True)
        assert final.returncode == 0, final.stderr
        finished = final.stdout
    assert kills >= 1
    group = finished.strip().splitlines()[-1]
    # once more: the computation is attached already, so this returns its group and clears any
    # leftover of the interruptions (a store whose deletion was cut short)
    again = subprocess.run([sys.executable, "-c", RUN, str(path), SOURCE], capture_output=True, text=True)
    assert again.returncode == 0 and again.stdout.strip() == group
    with h5py.File(path, "r") as f:
        groups = [g for g in f["/Measurement_000/Channel_000"] if "Polynomial_Fit" in g]
        assert len(groups) == 1, groups  # one results group, whatever the number of interruptions
        name = f"/Measurement_000/Channel_000/{groups[0]}"
        assert group == name
        np.testing.assert_array_equal(f[name + "/Coefficients"][()], expected)
        np.testing.assert_array_equal(f[name + "/Residual"][()], expected_res)
    assert partial_runs(path) == []
    leftovers = sidecar_dir(path)
    assert not leftovers.exists() or not any(leftovers.iterdir()), list(leftovers.iterdir())
    assert source_digest(path) == before
    assert usidgpu.validate(path) == []


def test_cli_resume_finishes_a_killed_run(spectra, tmp_path, capsys):
    path, x, data = spectra
    expected, _ = reference_result(path, tmp_path)
    proc = subprocess.Popen([sys.executable, "-c", RUN, str(path), SOURCE])
    deadline = time.time() + 30
    while time.time() < deadline and not any(r["done"] > 5 for r in partial_runs(path)):
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    runs = partial_runs(path)
    if not runs:
        pytest.skip("the run finished before it could be killed")
    assert cli(["info", str(path)]) == 0
    assert "partial (usidgpu resume)" in capsys.readouterr().out
    assert cli(["resume", str(path), "--list"]) == 0
    assert "Polynomial_Fit" in capsys.readouterr().out and partial_runs(path)
    assert cli(["resume", str(path), "--scheduler", "threads", "--workers", "2"]) == 0
    out = capsys.readouterr().out
    assert "results       /Measurement_000/Channel_000/Raw_Data-Polynomial_Fit_000" in out
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f[SOURCE + "-Polynomial_Fit_000/Coefficients"][()], expected)
    assert cli(["resume", str(path)]) == 0
    assert "no interrupted runs" in capsys.readouterr().out


def test_a_changed_process_does_not_resume_another_runs_store(spectra):
    path, _x, _data = spectra
    with usidgpu.open(path) as f:
        a = PolynomialFit(f[SOURCE], degree=2, rows_per_block=8, progress=False)
        b = PolynomialFit(f[SOURCE], degree=3, rows_per_block=8, progress=False)
        c = PolynomialFit(f[SOURCE], degree=3, rows_per_block=16, progress=False)
        # other parameters: another computation; another block plan: the same one (resumed with its plan)
        assert a.store_path() != b.store_path() and b.store_path() == c.store_path()


def _partial_run(path, degree=1):
    """A run stopped after its first block (the worker raises on the second)."""
    import usidgpu.parallel.process as proc

    original = proc._run_block
    calls = []

    def failing(task):
        calls.append(task[2])
        if len(calls) > 1:
            raise KeyboardInterrupt
        return original(task)

    proc._run_block = failing
    try:
        with usidgpu.open(path) as f, pytest.raises(KeyboardInterrupt):
            PolynomialFit(f[SOURCE], degree=degree, rows_per_block=300, progress=False).run()
    finally:
        proc._run_block = original
    assert partial_runs(path)


def test_a_changed_source_is_computed_again_not_mixed(spectra, tmp_path):
    path, x, data = spectra
    _partial_run(path)
    with h5py.File(path, "r+") as f:  # the data change between the interruption and the rerun
        f[SOURCE][...] = np.float32(7.0)
    with usidgpu.open(path) as f:
        group = PolynomialFit(f[SOURCE], degree=1, rows_per_block=300, progress=False).run()
    with h5py.File(path, "r") as f:
        np.testing.assert_allclose(f[group + "/Coefficients"][()], [[0.0, 7.0]] * 1200, atol=1e-5)


def test_repeats_into_another_file_reuse_the_group_and_given_executors_stay_open(spectra, tmp_path):
    from usidgpu.parallel import ThreadExecutor

    path, _x, _data = spectra
    out = tmp_path / "results.h5"
    with ThreadExecutor(2) as pool, usidgpu.open(path) as f:
        first = PolynomialFit(f[SOURCE], degree=1, output=out, scheduler=pool, progress=False).run()
        again = PolynomialFit(f[SOURCE], degree=1, output=out, scheduler=pool, progress=False).run()
        other = PolynomialFit(f[SOURCE], degree=2, output=out, scheduler=pool, progress=False).run()
    assert first == again and other != first
    with h5py.File(out, "r") as f:
        assert sorted(k for k in f["Measurement_000/Channel_000"] if "Polynomial_Fit" in k) == [
            "Raw_Data-Polynomial_Fit_000",
            "Raw_Data-Polynomial_Fit_001",
        ]


def test_outputs_that_cannot_be_written_fail_before_the_work(spectra):
    from usidgpu.parallel import Output

    class Wrong(PolynomialFit):
        def outputs(self):
            return {"Fit": Output(3, dims="source")}

    path, _x, _data = spectra
    with usidgpu.open(path) as f:
        with pytest.raises(ValueError, match="needs 48 columns"):
            Wrong(f[SOURCE], degree=1, progress=False).run()
        with pytest.raises(ValueError, match="at least 1"):
            PolynomialFit(f[SOURCE], degree=1, rows_per_block=-5, progress=False).run()
    assert partial_runs(path) == []


RUN_SLOW = """
import sys
sys.path.insert(0, sys.argv[3])
import usidgpu
from slow_process import SlowFit
with usidgpu.open(sys.argv[1]) as f:
    print(SlowFit(f[sys.argv[2]], degree=3, delay=1.0, rows_per_block=100, progress=False).run(), flush=True)
"""


def test_a_second_identical_run_is_refused_while_the_first_runs(spectra, capsys):
    """Two identical runs at once would share one store; the second is refused with who holds it,
    and once the first is killed (its lock dies with it) the computation resumes and finishes."""
    from slow_process import SlowFit

    from usidgpu.parallel import RunInProgress

    path, x, data = spectra
    tests = str(Path(__file__).parent)
    proc = subprocess.Popen([sys.executable, "-c", RUN_SLOW, str(path), SOURCE, tests], stdout=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not (list(sidecar_dir(path).glob("*.lock")) and partial_runs(path)) and time.monotonic() < deadline:
            time.sleep(0.05)  # the lock first, then the store
        locks = list(sidecar_dir(path).glob("*.lock"))
        assert len(locks) == 1 and proc.poll() is None
        with usidgpu.open(path) as f:
            second = SlowFit(f[SOURCE], degree=3, delay=0.0, rows_per_block=100, progress=False)
            with pytest.raises(RunInProgress, match=rf"pid {proc.pid} on .* right now"):
                second.run()
        # the store of a run in progress is not an interrupted run: info and resume say so
        (running,) = partial_runs(path)
        assert running["running"].startswith(f"pid {proc.pid} on ")
        assert cli(["resume", str(path)]) == 0
        out = capsys.readouterr().out
        assert "running now" in out and f"computed by pid {proc.pid} on" in out and "left to that run" in out
        assert cli(["info", str(path)]) == 0
        assert f"running (pid {proc.pid} on" in capsys.readouterr().out
        # where the holder cannot be seen (no /proc/locks) resume still leaves the run alone
        resume_module = importlib.import_module(
            "usidgpu.parallel.resume"
        )  # the package exports a function of that name
        with pytest.MonkeyPatch.context() as m:
            m.setattr(resume_module, "lock_holder", lambda lock: None)
            assert cli(["resume", str(path)]) == 0
        assert "interrupted" in capsys.readouterr().out and proc.poll() is None
    finally:
        proc.kill()
        proc.wait()
    assert locks[0].exists()  # a killed run cannot remove its lock file, but its lock is gone
    assert partial_runs(path)[0]["running"] is None
    with usidgpu.open(path) as f:
        group = SlowFit(f[SOURCE], degree=3, delay=0.0, rows_per_block=100, progress=False).run()
    with h5py.File(path, "r") as f:
        np.testing.assert_allclose(f[group + "/Coefficients"][()], np.polyfit(x, data.T, 3).T, rtol=1e-4, atol=1e-4)
    leftovers = sidecar_dir(path)
    assert not leftovers.exists() or not any(leftovers.iterdir()), list(leftovers.iterdir())


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="names open files through /proc (Linux)")
def test_a_block_is_on_disk_before_its_done_marker(tmp_path, monkeypatch):
    """Power-loss order: every chunk file of a block and its folders are fsynced before the
    marker that says the block is done (a killed process alone would not need it)."""
    import os

    from usidgpu.parallel.store import BlockStore

    blocks = [(0, 4), (4, 8), (8, 10)]
    store, resumed = BlockStore.open_or_create(
        tmp_path / "s.zarr", "f" * 64, blocks, {"a": (3, np.float64), "b": (1, np.int64)}, {}
    )
    assert not resumed
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(
        os, "fsync", lambda fd: (synced.append(Path(os.readlink(f"/proc/self/fd/{fd}"))), real_fsync(fd))
    )
    store.write_block(1, {"a": np.ones((4, 3)), "b": np.arange(4)})
    marker = tmp_path / "s.zarr" / "done" / "1"
    chunk_a, chunk_b = tmp_path / "s.zarr" / "a" / "c" / "1" / "0", tmp_path / "s.zarr" / "b" / "c" / "1" / "0"
    assert chunk_a.exists() and chunk_b.exists()
    order = {p: i for i, p in enumerate(synced)}
    for must in (chunk_a, chunk_a.parent, chunk_a.parent.parent, chunk_b, tmp_path / "s.zarr" / "b"):
        assert order[must] < order[marker], synced
    assert order[marker.parent] > order[marker]
    assert store.done().tolist() == [False, True, False]
    np.testing.assert_array_equal(store.array("b").compute()[4:8, 0], np.arange(4))


def test_a_file_system_without_flock_runs_unguarded(tmp_path, monkeypatch):
    import errno
    import fcntl

    from usidgpu.parallel.store import run_lock

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    ran = []
    with run_lock(tmp_path / "x.lock", "a test"):
        ran.append(True)
    assert ran == [True] and not (tmp_path / "x.lock").exists()


def test_a_lock_taken_on_a_file_removed_meanwhile_does_not_count(tmp_path, monkeypatch):
    """Run A holds the lock and B has opened the lock file; A ends (removes the file, then lets go)
    and C locks a fresh file at the same path before B's flock. B's flock then succeeds on the
    removed file, which must not count: B takes the file that is there now and is refused."""
    import fcntl
    import os

    from usidgpu.parallel.store import RunInProgress, run_lock

    lock = tmp_path / "run.zarr.lock"
    real_flock = fcntl.flock
    holders = []

    def flock_after_a_ends_and_c_starts(fd, op):
        if not holders:  # B's first flock: A and C act in between
            a = os.open(lock, os.O_RDWR)
            real_flock(a, fcntl.LOCK_EX | fcntl.LOCK_NB)
            lock.unlink()
            os.close(a)
            c = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
            real_flock(c, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.write(c, b"pid 4242 on elsewhere")
            holders.append(c)
        return real_flock(fd, op)

    monkeypatch.setattr(fcntl, "flock", flock_after_a_ends_and_c_starts)
    lock.touch()
    with pytest.raises(RunInProgress, match="pid 4242 on elsewhere"):
        with run_lock(lock, "a test"):
            pytest.fail("B must not run while C holds the lock")
    os.close(holders[0])


def test_a_run_that_fails_early_leaves_no_sidecar_folder(spectra):
    path, _, _ = spectra
    with usidgpu.open(path) as f, pytest.raises(ValueError):
        PolynomialFit(f[SOURCE], degree=3, rows_per_block=-5, progress=False).run()
    assert not sidecar_dir(path).exists()
