"""The command line: output, exit codes, one-line errors on bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest
from helpers import make_file

from usidgpu import Dimension
from usidgpu.cli import main as cli

MAIN = "/Measurement_000/Channel_000/Raw_Data"


@pytest.fixture
def usid_file(tmp_path):
    path = tmp_path / "scan.h5"
    make_file(path, compression="gzip")
    return path


def _one_line_error(capsys, *fragments):
    captured = capsys.readouterr()
    err = captured.err
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, err
    return err


def test_info_text(usid_file, capsys):
    assert cli(["info", str(usid_file)]) == 0
    out = capsys.readouterr().out
    assert f"{usid_file}: 1 Main dataset" in out
    assert MAIN in out
    assert "12 positions × 5 points, float32" in out
    assert "Current (nA)" in out
    assert "Y (3 pts, 0 … 1 µm), X (4 pts, 0 … 3 nm)" in out
    assert "Bias (5 pts, -1 … 1 V)" in out
    assert "gzip" in out and "chunks" in out
    assert "(3, 4, 5)" in out


def test_info_json(usid_file, capsys):
    assert cli(["info", str(usid_file), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    (entry,) = doc["main_datasets"]
    assert entry["path"] == MAIN and entry["shape"] == [12, 5] and entry["nd_shape"] == [3, 4, 5]
    assert [d["name"] for d in entry["position_dims"]] == ["Y", "X"]
    assert entry["position_dims"][0]["units"] == "µm"
    assert entry["results"] == [] and doc["unfinished"] == []


def test_info_lists_results_and_unfinished_runs(usid_file, capsys):
    import usidgpu
    from usidgpu import ResultsWriter

    with usidgpu.open(usid_file) as f:
        w = ResultsWriter.begin(f[MAIN], "SVD", {"k": 1})
        w.mark_done(0, 12)
        w.finish()
    with usidgpu.open(usid_file) as f:
        w = ResultsWriter.begin(f[MAIN], "KMeans", {"k": 2})
        w.mark_done(0, 5)
        w.close()
    assert cli(["info", str(usid_file)]) == 0
    out = capsys.readouterr().out
    assert "results       Raw_Data-SVD_000 (SVD)" in out
    assert "unfinished" in out and "Raw_Data-KMeans_000" in out and "5/12 done" in out


def test_validate_valid(usid_file, capsys):
    assert cli(["validate", str(usid_file)]) == 0
    assert "valid USID" in capsys.readouterr().out
    assert cli(["validate", str(usid_file), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["valid"] is True


def test_missing_file(tmp_path, capsys):
    assert cli(["info", str(tmp_path / "nope.h5")]) == 2
    _one_line_error(capsys, "nope.h5", "no such file")


def test_directory(tmp_path, capsys):
    assert cli(["validate", str(tmp_path)]) == 2
    _one_line_error(capsys, str(tmp_path), "directory")


def test_not_hdf5_and_empty(tmp_path, capsys):
    text = tmp_path / "notes.h5"
    text.write_text("not hdf5 at all\n" * 100)
    assert cli(["info", str(text)]) == 2
    _one_line_error(capsys, "notes.h5", "not an HDF5 file")
    empty = tmp_path / "empty.h5"
    empty.touch()
    assert cli(["info", str(empty)]) == 2
    _one_line_error(capsys, "empty.h5", "empty file")


def test_truncated_file(usid_file, tmp_path, capsys):
    cut = tmp_path / "cut.h5"
    raw = usid_file.read_bytes()
    cut.write_bytes(raw[: len(raw) // 2])
    for command in ("info", "validate"):
        assert cli([command, str(cut)]) == 2
        _one_line_error(capsys, "cut.h5", "truncated")
    with pytest.raises(Exception, match="truncated"):
        cli(["info", str(cut), "--debug"])


def test_hdf5_that_is_not_usid(tmp_path, capsys):
    path = tmp_path / "plain.h5"
    with h5py.File(path, "w") as f:
        f["x"] = np.arange(3)
    assert cli(["info", str(path)]) == 2
    _one_line_error(capsys, "plain.h5", "not a USID file")


def test_missing_dataset_and_group_path(usid_file, capsys):
    assert cli(["info", str(usid_file), "-d", "/Measurement_000/Channel_000/Nope"]) == 2
    _one_line_error(capsys, str(usid_file), "no dataset '/Measurement_000/Channel_000/Nope'")
    assert cli(["info", str(usid_file), "-d", "/Measurement_000"]) == 2
    _one_line_error(capsys, "is a group, not a dataset")
    assert cli(["info", str(usid_file), "-d", "/Measurement_000/Channel_000/Position_Indices"]) == 2
    _one_line_error(capsys, "Position_Indices is not a USID Main dataset")
    assert cli(["info", str(usid_file), "-d", MAIN]) == 0
    assert cli(["info", str(usid_file), "-d", ""]) == 2


def test_bad_options(usid_file, capsys):
    with pytest.raises(SystemExit) as exc:
        cli(["info"])
    assert exc.value.code == 2
    capsys.readouterr()
    assert cli(["info", str(usid_file), "--memory", "lots"]) == 2
    _one_line_error(capsys, "cannot read memory size 'lots'")
    with pytest.raises(SystemExit) as exc:
        cli(["frobnicate"])
    assert exc.value.code == 2


def test_device_gpu_without_gpu_is_an_error(usid_file, capsys, no_gpu):
    assert cli(["info", str(usid_file), "--device", "gpu"]) == 2
    _one_line_error(capsys, "--device gpu was requested but no GPU is usable")
    assert cli(["info", str(usid_file), "--device", "cpu"]) == 0


def test_sparse_dataset_in_info(tmp_path, capsys):
    path = tmp_path / "sparse.h5"
    xs = Dimension("X", "nm", [0, 100, 50], incomplete=True)
    ys = Dimension("Y", "nm", [5, 0, 2.5], incomplete=True)
    make_file(path, data=np.ones((3, 2), np.float32), pos=[xs, ys], spec=[Dimension("F", "kHz", 2)])
    assert cli(["info", str(path)]) == 0
    assert "[sparse sampling]" in capsys.readouterr().out


def test_module_and_console_script(usid_file):
    out = subprocess.run([sys.executable, "-m", "usidgpu", "info", str(usid_file)], capture_output=True, text=True)
    assert out.returncode == 0 and MAIN in out.stdout
    from pathlib import Path

    beside = Path(sys.executable).parent / "usidgpu"
    script = str(beside) if beside.exists() else shutil.which("usidgpu")
    if script is None:
        pytest.skip("console script not on PATH (package not installed)")
    out = subprocess.run([script, "validate", str(usid_file)], capture_output=True, text=True)
    assert out.returncode == 0 and "valid USID" in out.stdout


def test_an_error_usidgpu_does_not_know_is_reported_as_a_bug(usid_file, capsys, monkeypatch):
    """Only usidgpu's own errors (every input problem it detects), OS errors and HDF5's reports of
    a damaged file are bad input (exit 2); anything else is a bug and says so (exit 70)."""
    from usidgpu.cli import build_parser

    def broken(args):
        raise ValueError("an internal invariant failed")

    monkeypatch.setattr("usidgpu.cli.build_parser", lambda: _with_info(build_parser(), broken))
    assert cli(["info", str(usid_file)]) == 70
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error (a bug in usidgpu" in err and "ValueError" in err
    assert "--debug" in err and "Traceback" not in err
    with pytest.raises(ValueError, match="invariant"):
        cli(["info", str(usid_file), "--debug"])


def _with_info(parser, func):
    for action in parser._subparsers._group_actions:  # the sub-command table
        action.choices["info"].set_defaults(func=func)
    return parser


def test_library_input_errors_are_usidgpu_errors_and_keep_their_builtin_type():
    import usidgpu
    from usidgpu.core.errors import InvalidInput, UnknownName, UsidgpuError

    with pytest.raises(InvalidInput) as exc:
        usidgpu.svd(np.zeros((4, 3)), 9)
    assert isinstance(exc.value, UsidgpuError) and isinstance(exc.value, ValueError)
    assert issubclass(UnknownName, KeyError)


def test_hdf5_reports_of_damage_are_recognised(tmp_path):
    from usidgpu.storage.h5 import raised_by_hdf5

    with h5py.File(tmp_path / "x.h5", "w") as f:
        f["a"] = 1
        try:
            f["missing/deeper"]
        except KeyError as exc:  # raised inside h5py
            assert raised_by_hdf5(exc)
    try:
        {}["x"]
    except KeyError as exc:  # raised here
        assert not raised_by_hdf5(exc)
