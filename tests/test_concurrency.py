"""Analyses while other processes hold the file (issue 16, items 7 and 8).

HDF5 cannot open a file for writing while any other process has it open (a notebook's h5py
handle, a second analysis). A run checks the target before its work (a read-only file is refused
with one line), notes a reader on stderr, and at the end waits for the file
(``$USIDGPU_ATTACH_WAIT``); when it stays busy the complete results are kept in their sidecar
(exit 0, the message says where), listed by ``usidgpu info``, attached by ``usidgpu resume`` or at
the end of the next analysis writing to the file.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import h5py
import pytest
from fault_tools import finished, leftovers, make_sources, results_groups, start_usidgpu, usidgpu

import usidgpu as ug

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

SVD = ["svd", "-k", "3", "--no-progress"]
CLUSTER = ["cluster", "-k", "3", "--no-progress"]


@pytest.fixture(scope="module")
def templates(tmp_path_factory):
    return make_sources(tmp_path_factory.mktemp("templates"))


@pytest.fixture
def spectra(templates, tmp_path):
    path = tmp_path / "spectra.h5"
    shutil.copy(templates["spectra"], path)
    return path


def _wait_for(proc, text: str, timeout: float = 60) -> None:
    """Until the child's stderr shows ``text`` (read line by line)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if text in line:
            return
        if not line and proc.poll() is not None:
            raise AssertionError(f"the run ended before saying {text!r}")
    raise AssertionError(f"no {text!r} within {timeout} s")


def test_a_reader_that_closes_within_the_wait(spectra):
    reader = h5py.File(spectra, "r")  # a notebook's handle
    proc = start_usidgpu("svd", spectra, *SVD[1:], env={"USIDGPU_ATTACH_WAIT": "60"})
    try:
        _wait_for(proc, "waiting up to 60 s")
    finally:
        reader.close()
    ran = finished(proc)
    assert ran.returncode == 0, ran.stderr
    assert "Raw_Data-SVD_000" in ran.stdout
    assert len(results_groups(spectra, "SVD")) == 1
    assert leftovers(spectra.parent, keep=[spectra]) == []


def test_a_reader_that_stays_keeps_the_results_for_the_next_analysis(spectra):
    with h5py.File(spectra, "r"):
        ran = usidgpu("svd", spectra, *SVD[1:], env={"USIDGPU_ATTACH_WAIT": "0.5"})
        assert ran.returncode == 0, ran.stderr
        assert "Traceback" not in ran.stderr
        assert "is open in pid" in ran.stderr and "kept in" in ran.stdout  # the note before, the message after
        info = usidgpu("info", spectra)  # reading works while the reader stays
        assert info.returncode == 0 and "attach pending" in info.stdout, info.stdout
    assert results_groups(spectra, "SVD") == []
    other = usidgpu("cluster", spectra, *CLUSTER[1:])  # the next analysis attaches the kept results
    assert other.returncode == 0, other.stderr
    assert len(results_groups(spectra, "SVD")) == 1 and len(results_groups(spectra, "KMeans")) == 1
    assert leftovers(spectra.parent, keep=[spectra]) == []
    assert ug.validate(spectra) == []


def test_kept_block_wise_results_are_attached_by_resume(templates, tmp_path):
    path = tmp_path / "giv.h5"
    shutil.copy(templates["giv"], path)
    bayes = ["bayes", path, "--samples", "50", "--grid-points", "20", "--memory", "64KB"]
    with h5py.File(path, "r"):
        ran = usidgpu(*bayes, env={"USIDGPU_ATTACH_WAIT": "0.5"})
        assert ran.returncode == 0, ran.stderr
        assert "kept in" in ran.stdout
    resumed = usidgpu("resume", path)
    assert resumed.returncode == 0, resumed.stderr
    assert "Bayesian_Inference_000" in resumed.stdout
    assert len(results_groups(path, "Bayesian_Inference")) == 1
    assert leftovers(tmp_path, keep=[path]) == []
    again = usidgpu(*bayes)  # the same run again finds its group: no second one
    assert again.returncode == 0, again.stderr
    assert len(results_groups(path, "Bayesian_Inference")) == 1


def test_two_analyses_at_once_both_attach(spectra):
    env = {"USIDGPU_ATTACH_WAIT": "60"}
    runs = [
        start_usidgpu("svd", spectra, *SVD[1:], env=env),
        start_usidgpu("cluster", spectra, *CLUSTER[1:], "--scheduler", "threads", "--workers", "2", env=env),
    ]
    for proc in runs:
        ran = finished(proc)
        assert ran.returncode == 0, ran.stderr
    assert len(results_groups(spectra, "SVD")) == 1 and len(results_groups(spectra, "KMeans")) == 1
    assert leftovers(spectra.parent, keep=[spectra]) == []
    assert ug.validate(spectra) == []


@pytest.fixture
def read_only(spectra):
    """The file made read-only, for root too (immutable), in its writable folder."""
    if subprocess.run(["chattr", "+i", str(spectra)], capture_output=True).returncode != 0:
        os.chmod(spectra, 0o444)
        if os.access(spectra, os.W_OK):
            pytest.skip("cannot make a file read-only for this user here")
    yield spectra
    subprocess.run(["chattr", "-i", str(spectra)], capture_output=True)


def test_a_read_only_source_is_refused_before_the_work(read_only):
    spectra = read_only
    ran = usidgpu("svd", spectra, *SVD[1:])
    assert ran.returncode == 2
    assert "read-only" in ran.one_line_error()
    assert "singular values" not in ran.stdout  # refused before computing
    assert leftovers(spectra.parent, keep=[spectra]) == []
    ok = usidgpu("svd", spectra, *SVD[1:], "--output", spectra.parent / "out.h5")
    assert ok.returncode == 0, ok.stderr
