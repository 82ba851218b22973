"""Results groups: written to a sidecar, resumable, attached in one short step, recognized by pyUSID."""

from __future__ import annotations

import warnings

import h5py
import numpy as np
import pytest
from helpers import make_file

import usidgpu
from usidgpu import Dimension, ResultsWriter
from usidgpu.usid.results import find_partial, sidecar_dir

SOURCE = "/Measurement_000/Channel_000/Raw_Data"
PARAMS = {"num_components": 3, "method": "gram"}


def _snapshot(path):
    """Every dataset's bytes and every attribute of the source part of the file."""
    out = {}
    with h5py.File(path, "r") as f:

        def visit(name, obj):
            if "-" in name:
                return  # results groups are allowed to appear
            attrs = {k: (v.tobytes() if isinstance(v, np.ndarray) else str(v)) for k, v in obj.attrs.items()}
            data = obj[()].tobytes() if isinstance(obj, h5py.Dataset) else None
            out[name] = (data, attrs)

        f.visititems(visit)
    return out


@pytest.fixture
def source(tmp_path):
    path = tmp_path / "measurement.h5"
    make_file(path)
    return path


def _run(writer: ResultsWriter, m: usidgpu.MainDataset, stop_after: int | None = None) -> None:
    """A toy 'analysis': U = first 3 points of every spectrum, written block by block."""
    k = 3
    u = writer.write_main("U", (m.n_positions, k), "Abundance", "a.u.", m, [Dimension("Principal Component", "", k)])
    writer.write_main(
        "V", np.eye(k, m.n_spectral, dtype=np.float32), "Loading", "a.u.", [Dimension("Principal Component", "", k)], m
    )
    if "S" not in writer.group:
        writer.group.create_dataset("S", data=np.arange(k, dtype=np.float32))
    done = 0
    for a, b in writer.pending():
        for block in m.blocks(budget=4 * m.n_spectral * 4, start=a, stop=b):
            u.write_rows(block.start, block.data[:, :k])
            writer.mark_done(block.start, block.stop)
            done += 1
            if stop_after is not None and done >= stop_after:
                return


def _uninterrupted_copy(source, tmp_path):
    """A copy of the source with the results of an uninterrupted run attached."""
    import shutil

    reference = tmp_path / "reference.h5"
    shutil.copy(source, reference)
    with usidgpu.open(reference) as f:
        w = ResultsWriter.begin(f[SOURCE], "SVD", PARAMS)
        _run(w, f[SOURCE])
        w.finish()
    return reference


def test_full_run_attaches_a_group_pyusid_recognizes(source, pyusid):
    before = _snapshot(source)
    with usidgpu.open(source) as f:
        m = f[SOURCE]
        writer = ResultsWriter.begin(m, "SVD", PARAMS, device="cpu")
        assert writer.group_name == "Raw_Data-SVD_000" and not writer.resumed
        assert writer.sidecar_path.parent == sidecar_dir(source)
        _run(writer, m)
        path = writer.finish()
    assert path == "/Measurement_000/Channel_000/Raw_Data-SVD_000"
    assert not sidecar_dir(source).exists()
    assert _snapshot(source) == before  # the source data and its ancillaries are untouched
    with h5py.File(source, "r") as h, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        main = h[SOURCE]
        groups = pyusid.hdf_utils.find_results_groups(main, "SVD")
        assert [g.name for g in groups] == [path]
        assert [g.name for g in pyusid.hdf_utils.check_for_old(main, "SVD", new_parms=PARAMS)] == [path]
        assert pyusid.hdf_utils.check_for_old(main, "SVD", new_parms={"num_components": 4}) == []
        assert pyusid.hdf_utils.get_source_dataset(h[path]).name == SOURCE
        g = h[path]
        assert g.attrs["tool"] == "SVD" and g.attrs["num_source_dsets"] == 1
        assert h[g.attrs["source_000"]] == main
        assert g.attrs["last_pixel"] == main.shape[0] and g["completed_positions"][()].all()
        assert g.attrs["usidgpu_status"] == "complete" and g.attrs["device"] == "cpu"
        u = pyusid.USIDataset(g["U"])
        assert u.pos_dim_labels == ["Y", "X"] and u.spec_dim_labels == ["Principal Component"]
        assert h[g["U"].attrs["Position_Indices"]] == h[main.attrs["Position_Indices"]]  # reused, not copied
        np.testing.assert_array_equal(g["U"][()], main[()][:, :3])
        assert pyusid.USIDataset(g["V"]).spec_dim_labels == ["Bias"]
    assert usidgpu.validate(source) == []
    with usidgpu.open(source) as f:
        (r,) = f.results_groups(SOURCE)
        assert r.complete and r.tool == "SVD" and r.index == 0


def test_interrupted_run_resumes_and_matches(source, tmp_path):

    reference = _uninterrupted_copy(source, tmp_path)

    with usidgpu.open(source) as f:
        w = ResultsWriter.begin(f[SOURCE], "SVD", PARAMS)
        _run(w, f[SOURCE], stop_after=2)  # "killed" after two blocks
        w.close()
    (partial,) = find_partial(source)
    assert partial["status"] == "partial" and 0 < partial["done"] < partial["total"]
    with usidgpu.open(source) as f:
        assert f.results_groups(SOURCE) == []  # nothing half-written in the source file
        other = ResultsWriter.begin(f[SOURCE], "SVD", {"num_components": 5})
        assert other.group_name == "Raw_Data-SVD_001" and not other.resumed  # different parameters
        other.close()
        w = ResultsWriter.begin(f[SOURCE], "SVD", PARAMS)
        assert w.resumed and w.group_name == "Raw_Data-SVD_000"
        assert sum(b - a for a, b in w.pending()) == partial["total"] - partial["done"]
        _run(w, f[SOURCE])
        w.finish()
    with h5py.File(source, "r") as a, h5py.File(reference, "r") as b:
        g = "/Measurement_000/Channel_000/Raw_Data-SVD_000"
        for name in ("U", "V", "S", "completed_positions"):
            np.testing.assert_array_equal(a[g][name][()], b[g][name][()])


def test_interrupted_attach_is_cleaned_up(source):
    with usidgpu.open(source) as f:
        w = ResultsWriter.begin(f[SOURCE], "NMF", {"k": 2})
        _run(w, f[SOURCE])
        w.group.attrs["usidgpu_status"] = "computed"
        w.close()
    # a crash during the attach step leaves a temporary group that no tool mistakes for results
    with h5py.File(source, "r+") as h:
        h.create_group("/Measurement_000/Channel_000/_usidgpu_attaching_Raw_Data-NMF_000")
    with usidgpu.open(source) as f:
        assert f.results_groups(SOURCE) == []
        w = ResultsWriter.begin(f[SOURCE], "NMF", {"k": 2})
        assert w.resumed and w.done
        w.finish()
    with h5py.File(source, "r") as h:
        ch = h["/Measurement_000/Channel_000"]
        assert "Raw_Data-NMF_000" in ch and not [k for k in ch if k.startswith("_usidgpu")]


def test_results_into_a_separate_file(source, tmp_path, pyusid):
    out = tmp_path / "results.h5"
    before = _snapshot(source)
    with usidgpu.open(source) as f:
        w = ResultsWriter.begin(f[SOURCE], "SVD", PARAMS, output=out)
        _run(w, f[SOURCE])
        path = w.finish()
        assert f.h5.id.valid  # the source stayed open: it was never written
    assert _snapshot(source) == before
    with h5py.File(out, "r") as h:
        g = h[path]
        assert pyusid.hdf_utils.check_if_main(g["U"]) and pyusid.hdf_utils.check_if_main(g["V"])
        assert g.attrs["source_file"] == str(source.resolve()) and g.attrs["source_dataset"] == SOURCE
        assert "source_000" not in g.attrs  # object references cannot cross files
        assert "/Measurement_000/Channel_000/Position_Indices" in h  # ancillaries came along
    assert usidgpu.validate(out) == []


def test_second_run_gets_next_index(source):
    for expected in ("Raw_Data-SVD_000", "Raw_Data-SVD_001"):
        with usidgpu.open(source) as f:
            w = ResultsWriter.begin(f[SOURCE], "SVD", PARAMS, resume=False)
            assert w.group_name == expected
            _run(w, f[SOURCE])
            w.finish()


def test_misuse_is_reported(source):
    with usidgpu.open(source) as f:
        with pytest.raises(usidgpu.ResultsError, match="letters"):
            ResultsWriter.begin(f[SOURCE], "S-V-D")
        w = ResultsWriter.begin(f[SOURCE], "SVD")
        with pytest.raises(usidgpu.ResultsError, match="not done yet"):
            w.finish()
        with pytest.raises(ValueError):
            w.mark_done(0, 10**6)
        w.close()
    with pytest.raises(TypeError, match="begin"):
        ResultsWriter()


KILL_SCRIPT = """
import sys, time
sys.path.insert(0, sys.argv[2])
import usidgpu
from test_results import SOURCE, PARAMS, _run
from usidgpu import ResultsWriter

class Loud(ResultsWriter):
    def mark_done(self, start, stop):
        super().mark_done(start, stop)
        print("done", stop, flush=True)
        time.sleep(0.05)

with usidgpu.open(sys.argv[1]) as f:
    w = Loud.begin(f[SOURCE], "SVD", PARAMS)
    _run(w, f[SOURCE])
    w.finish()
print("finished", flush=True)
"""


@pytest.mark.parametrize("kill_after", [1, 3])
def test_kill_minus_9_then_resume(source, tmp_path, kill_after):
    import signal
    import subprocess
    import sys
    from pathlib import Path

    from helpers import file_digest

    reference = _uninterrupted_copy(source, tmp_path)
    digest = file_digest(source)
    tests_dir = str(Path(__file__).parent)
    child = subprocess.Popen(
        [sys.executable, "-c", KILL_SCRIPT, str(source), tests_dir], stdout=subprocess.PIPE, text=True
    )
    for _ in range(kill_after):
        assert child.stdout.readline().startswith("done")
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert file_digest(source) == digest  # the source file was never opened for writing
    assert usidgpu.validate(source) == []
    (partial,) = find_partial(source)
    assert partial["status"] == "partial" and partial["done"] >= kill_after
    done = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(source), tests_dir], capture_output=True, text=True)
    assert done.returncode == 0 and "finished" in done.stdout, done.stderr
    with h5py.File(source, "r") as a, h5py.File(reference, "r") as b:
        g = "/Measurement_000/Channel_000/Raw_Data-SVD_000"
        assert a[g].attrs["usidgpu_status"] == "complete"
        for name in ("U", "V", "S"):
            np.testing.assert_array_equal(a[g][name][()], b[g][name][()])
    assert not sidecar_dir(source).exists()


def test_crash_after_attach_before_cleanup(source):
    with usidgpu.open(source) as f:
        w = ResultsWriter.begin(f[SOURCE], "SVD", PARAMS)
        _run(w, f[SOURCE])
        w.group.attrs["usidgpu_status"] = "computed"
        w.close()
        kept = w.sidecar_path.read_bytes()
    with usidgpu.open(source) as f:
        w = ResultsWriter.begin(f[SOURCE], "SVD", PARAMS)
        w.finish()
    # the process "died" after attaching: the sidecar is still there
    sidecar_dir(source).mkdir()
    w.sidecar_path.write_bytes(kept)
    assert find_partial(source)
    with usidgpu.open(source) as f:
        again = ResultsWriter.begin(f[SOURCE], "SVD", PARAMS)
        # the rerun picks up the kept sidecar and recognises its group in the file: no second group
        assert again.resumed and again.status == "computed" and again.group_name == "Raw_Data-SVD_000"
        assert again.finish() == w.name
    assert not w.sidecar_path.exists() and not sidecar_dir(source).exists()
    with h5py.File(source, "r") as h:
        assert h[w.name].attrs["usidgpu_status"] == "complete"
        assert [k for k in h[w.name].parent if "SVD" in k] == ["Raw_Data-SVD_000"]


def test_output_file_with_other_ancillaries_at_the_same_path(source, tmp_path, pyusid):
    out = tmp_path / "other.h5"
    make_file(out, pos=[Dimension("Row", "", 2), Dimension("Col", "", 6)], spec=[Dimension("Bias", "V", 5)])
    with usidgpu.open(source) as f:
        w = ResultsWriter.begin(f[SOURCE], "SVD", PARAMS, output=out)
        _run(w, f[SOURCE])
        path = w.finish()
    with usidgpu.open(out) as f:
        u = f[f"{path}/U"]
        assert [d.name for d in u.pos_dims] == ["Y", "X"] and u.pos_sizes == (3, 4)
        assert [d.name for d in f[SOURCE].pos_dims] == ["Row", "Col"]  # the other scan is intact
    assert usidgpu.validate(out) == []
