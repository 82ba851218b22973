"""Hostile inputs (``tests/hostile_files.py``) through ``usidgpu.open`` and every command that reads
a file: each ends in a clean result, validate's verdict, or one ``usidgpu: error:`` line with exit
status 2 — never a traceback, an internal error or a hang — and leaves the input's bytes and its
folder as they were, and no partial output.

The whole matrix runs in this process through ``usidgpu.cli.main`` (a per-call alarm turns a hang
into a failure; a hang inside C code, which no alarm interrupts, is ended by faulthandler); a
sample runs through real child processes.
"""

from __future__ import annotations

import faulthandler
import hashlib
import shutil
import signal
import subprocess
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path

import h5py
import numpy as np
import pytest
from fault_tools import usidgpu as run_cli
from hostile_files import CASES, MAIN

import usidgpu
from usidgpu.cli import main as cli

#: seconds one command may take on a hostile input (a hang is a failure, not a wait)
LIMIT_S = 20
#: a memory budget that every "huge" case exceeds whatever the machine
BUDGET = "256MB"

COMMANDS = {
    "info": ["info", "{file}"],
    "validate": ["validate", "{file}"],
    "svd": ["svd", "{file}", "-k", "2", "--no-write", "--no-progress"],
    "pca": ["pca", "{file}", "-k", "2", "--no-write", "--no-progress"],
    "nmf": ["nmf", "{file}", "-k", "2", "--no-write", "--no-progress"],
    "cluster": ["cluster", "{file}", "-k", "2", "--no-write", "--no-progress"],
    "denoise": ["denoise", "{file}", "--window", "2", "--no-write"],
    "atoms": ["atoms", "{file}", "--frame", "0", "--no-write"],
    "bayes": ["bayes", "{file}", "--frequency", "100", "--samples", "20", "--output", "{out}/bayes.h5"],
    "convert": ["convert", "{file}", "{out}/converted{other}"],
    "translate": ["translate", "{file}", "{out}/translated.h5"],
}


#: (case, command) pairs not run here, and why. ``convert`` copies every chunk a dataset declares,
#: written or not: 4·10⁹ declared rows take minutes (storage/convert.py, issue 16, to be fixed there:
#: then this goes, and the matrix covers them)
NOT_RUN: dict[tuple[str, str], str] = {}  # (case, command) pairs not run, and why


#: (case, command) pairs whose warnings are known and fixed outside this test's modules: atoms takes
#: the pixel size from the position values, inf − inf with infinite values (atoms/analysis.py)
KNOWN_WARNINGS: dict[tuple[str, str], str] = {}  # (case, command) → a warning allowed there


@pytest.fixture(autouse=True)
def _environment(monkeypatch):
    monkeypatch.setenv("USIDGPU_MEMORY", BUDGET)
    monkeypatch.setenv("USIDGPU_DEVICE", "cpu")


class Hang(BaseException):
    """A call ran past :data:`LIMIT_S` (a BaseException: the command line's handlers must not
    turn it into a one-line error, as they would a TimeoutError, which is an OSError)."""


@contextmanager
def bounded(what: str):
    """Fail instead of hanging: an alarm for Python code, faulthandler for a hang in C code."""

    def alarm(_signum, _frame):
        raise Hang(f"{what} took more than {LIMIT_S} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(LIMIT_S)
    faulthandler.dump_traceback_later(3 * LIMIT_S, exit=True, file=sys.__stderr__)
    try:
        yield
    finally:
        signal.alarm(0)
        faulthandler.cancel_dump_traceback_later()
        signal.signal(signal.SIGALRM, previous)


def fingerprint(path: Path) -> str:
    """The bytes of a file, or of every file of a folder (a zarr store); a FIFO by its kind alone."""
    if path.is_fifo():
        return "fifo"
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    h = hashlib.sha256()
    for p in files:
        h.update(str(p.relative_to(path.parent)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def check_outcome(command: str, code: int, out: str, err: str) -> None:
    """Exit 0 (or validate's 1) with no error, or exit 2 with exactly one error line and nothing else."""
    assert "Traceback" not in err and "Traceback" not in out, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    if code == 2:
        assert len(lines) == 1 and lines[0].startswith("usidgpu: error: "), err
        assert "internal error" not in lines[0]
        assert len(lines[0]) < 600, lines[0]
    else:
        assert code == 0 or (code == 1 and command == "validate"), (code, err)
        assert not [ln for ln in lines if ln.startswith("usidgpu: error") or "Warning" in ln], err


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Every case, made once: name → (input path, output folder)."""
    root = tmp_path_factory.mktemp("hostile")
    made = {}
    for name, make in CASES.items():
        folder = root / name / "in"
        folder.mkdir(parents=True)
        out = root / name / "out"
        out.mkdir()
        made[name] = (make(folder), out)
    return made


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_command_refuses_cleanly(name, corpus, capsys):
    path, out = corpus[name]
    before, folder_before = fingerprint(path), listing(path.parent)
    other = ".h5" if path.suffix == ".zarr" else ".zarr"
    for command, template in COMMANDS.items():
        if (name, command) in NOT_RUN:
            continue
        argv = [a.format(file=path, out=out, other=other) for a in template]
        with bounded(f"usidgpu {' '.join(argv)}"), warnings.catch_warnings(record=True) as warned:
            warnings.simplefilter("always")  # a command line run prints every warning: so do we
            code = cli(argv)
        captured = capsys.readouterr()
        shown = [f"{w.category.__name__}: {w.message}" for w in warned]
        err = captured.err + "".join(f"{w}\n" for w in shown if w != KNOWN_WARNINGS.get((name, command)))
        try:
            check_outcome(command, code, captured.out, err)
            assert fingerprint(path) == before, "the input changed"
            assert listing(path.parent) == folder_before, "something was left next to the input"
            if code == 2:
                assert listing(out) == [], "a refused run left output behind"
        except AssertionError as exc:
            raise AssertionError(f"usidgpu {' '.join(argv)} → {code}: {exc}") from None
        for leftover in out.iterdir():  # a successful run's output: not wanted by the next command
            shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()


@pytest.mark.parametrize("name", sorted(CASES))
def test_open_and_main_datasets_raise_only_usidgpu_errors(name, corpus):
    path, _out = corpus[name]
    with bounded(f"usidgpu.open({path})"):
        try:
            with usidgpu.open(path) as f:
                for m in f.main_datasets():
                    _ = m.shape, m.dtype, repr(m)
                    m.check_tables()
                    _ = m.pos_dims, m.spec_dims
        except usidgpu.UsidgpuError as exc:
            assert "\n" not in str(exc).strip(), str(exc)


# a sample through real child processes: the command line as users run it, warnings and all
CHILD_SAMPLE = [
    ("huge_positions_declared", "svd"),
    ("global_heap_free_space_of_size_zero", "info"),
    ("nan_position_indices", "cluster"),
    ("all_nan_data", "denoise"),
    ("undecodable_link_name", "info"),
    ("fifo_named_h5", "info"),
]


@pytest.mark.parametrize(("name", "command"), CHILD_SAMPLE)
def test_sample_in_child_processes(name, command, corpus):
    path, out = corpus[name]
    before = fingerprint(path)
    argv = [a.format(file=path, out=out, other=".zarr") for a in COMMANDS[command]]
    ran = run_cli(*argv, env={"USIDGPU_MEMORY": BUDGET}, timeout=60)
    assert ran.returncode == 2, ran.stderr
    assert ran.one_line_error()
    assert fingerprint(path) == before


def test_info_on_huge_tables_prints_what_it_can(corpus):
    path, _ = corpus["huge_positions_declared"]
    ran = run_cli("info", path, env={"USIDGPU_MEMORY": BUDGET}, timeout=60)
    assert ran.returncode == 0 and not ran.stderr.strip(), ran.stderr
    assert "4000000000 positions × 5 points" in ran.stdout and "Current (nA)" in ran.stdout
    (line,) = [ln for ln in ran.stdout.splitlines() if "dimensions    not read" in ln]
    assert "Position_Indices table declares 4000000000 entries" in line and "memory budget" in line


# ------------------------------------------------------------------------------ the fixes, one by one
def test_huge_tables_are_refused_before_reading(corpus):
    path, _ = corpus["huge_positions_declared"]
    with usidgpu.open(path) as f:
        (m,) = f.main_datasets()  # opened and described by shape without reading the tables
        assert m.shape == (4_000_000_000, 5)
        with pytest.raises(usidgpu.BudgetError, match="Position_Indices table declares 4000000000 entries"):
            _ = m.pos_dims


def test_validate_reports_huge_tables_as_unchecked(corpus):
    path, _ = corpus["huge_positions_declared"]
    problems = usidgpu.validate(path)
    (unchecked,) = [p for p in problems if p.rule == "too-large-to-check"]
    assert unchecked.severity == "warning" and unchecked.path.endswith("Position_Indices")
    assert not [p for p in problems if p.severity == "error"]


def test_an_attribute_declaring_a_huge_dataspace_is_a_problem_not_a_crash(corpus):
    path, _ = corpus["huge_attribute_dataspace_quantity"]
    with h5py.File(path, "r") as f:  # the oracle: HDF5 itself refuses the attribute's header
        with pytest.raises(KeyError, match="open attribute"):
            f[MAIN].attrs.get_id("quantity")
    with pytest.raises(usidgpu.FileProblem, match="damaged HDF5 file"):
        usidgpu.validate(path)


def test_attribute_sizes_are_read_from_the_header(tmp_path):
    from usidgpu.storage.nodes import attr_too_large

    with h5py.File(tmp_path / "a.h5", "w", libver="latest") as f:  # dense storage: large attributes
        f.attrs["small"] = np.zeros(10)
        f.attrs["big"] = np.zeros(9_000_000)  # 72 MB: more than any USID attribute
        assert attr_too_large(f, "small") is None
        assert attr_too_large(f, "big") == 72_000_000


def test_a_global_heap_that_hdf5_would_walk_forever_is_refused(corpus):
    from usidgpu.storage.h5 import damaged_heap

    path, _ = corpus["global_heap_free_space_of_size_zero"]
    raw = path.read_bytes()
    assert damaged_heap(path) == raw.index(b"GCOL")
    with pytest.raises(usidgpu.FileProblem, match="global heap at byte"):
        usidgpu.open(path)


def test_valid_files_have_no_damaged_heap(tmp_path):
    from helpers import make_file

    from usidgpu.storage.h5 import damaged_heap

    make_file(tmp_path / "ok.h5")
    assert damaged_heap(tmp_path / "ok.h5") is None


@pytest.mark.parametrize("name", ["nan_position_indices", "float_position_indices", "negative_position_indices"])
def test_analyses_apply_validates_index_rules(name, corpus, capsys):
    path, _ = corpus[name]
    (problem,) = [p for p in usidgpu.validate(path) if p.severity == "error"]
    for command in ("svd", "cluster", "denoise"):
        argv = [a.format(file=path) for a in COMMANDS[command]]
        assert cli(argv) == 2
        err = capsys.readouterr().err
        assert str(problem) in err, (command, err)


def test_undecodable_names_are_a_damaged_file(corpus):
    path, _ = corpus["undecodable_link_name"]
    with usidgpu.open(path) as f:
        with pytest.raises(usidgpu.FileProblem, match="not valid UTF-8"):
            f.main_datasets()


def test_damaged_structure_raises_file_problem_from_main_datasets(corpus):
    path, _ = corpus["group_btree_damaged"]
    with h5py.File(path, "r") as f:  # the oracle: h5py itself cannot walk the file
        with pytest.raises(Exception) as raised:
            f.visititems(lambda *_: None)
        assert not isinstance(raised.value, usidgpu.UsidgpuError)
    with pytest.raises(usidgpu.FileProblem, match="damaged HDF5 file"):
        with usidgpu.open(path) as f:
            f.main_datasets()


def test_a_fifo_is_refused_without_waiting(corpus):
    path, _ = corpus["fifo_named_h5"]
    with bounded("open a FIFO"), pytest.raises(usidgpu.FileProblem, match="not a regular file"):
        usidgpu.open(path)


def test_unknown_filter_is_named(corpus):
    path, _ = corpus["unknown_filter"]
    with h5py.File(path, "r") as f:
        assert f[MAIN].id.get_create_plist().get_filter(0)[0] == 32999
    with usidgpu.open(path) as f:
        with pytest.raises(usidgpu.FileProblem, match="HDF5 filter 32999"):
            f.dataset(MAIN)


def test_blosc_without_hdf5plugin_names_the_extra(tmp_path):
    pytest.importorskip("hdf5plugin")
    from helpers import make_file

    make_file(tmp_path / "b.h5", compression="blosc")
    # a child without hdf5plugin (blocked from importing), so no filter is registered there
    code = (
        "import sys; sys.modules['hdf5plugin'] = None\n"
        "import usidgpu\n"
        "try:\n"
        f"    usidgpu.open({str(tmp_path / 'b.h5')!r}).main_datasets()\n"
        "except usidgpu.core.errors.MissingDependency as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "Blosc (HDF5 filter 32001)" in done.stdout, done.stdout + done.stderr
    assert "pip install usidgpu[compression]" in done.stdout


def test_blosc_with_hdf5plugin_installed_is_read(tmp_path):
    pytest.importorskip("hdf5plugin")
    from helpers import make_file

    data = np.arange(60, dtype=np.float32).reshape(3, 4, 5)
    make_file(tmp_path / "b.h5", data=data, compression="blosc")
    with usidgpu.open(tmp_path / "b.h5") as f:
        np.testing.assert_array_equal(f.dataset(MAIN).to_ndim(), data)


def test_cut_ibw_error_is_short(tmp_path, capsys):
    src = Path(__file__).resolve().parents[2] / "shared" / "data" / "IgorIBWReader_ForceCurve.ibw"
    if not src.exists():
        pytest.skip("the IBW sample is not here")
    raw = src.read_bytes()
    cut = tmp_path / "cut.ibw"
    cut.write_bytes(raw[: len(raw) // 3])
    assert cli(["translate", str(cut), str(tmp_path / "out.h5")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and len(err) < 300, err
    assert "not a readable Igor binary wave" in err


def test_memory_error_is_one_line(monkeypatch, capsys, tmp_path):
    from helpers import make_file

    make_file(tmp_path / "m.h5")

    def no_memory(*_args, **_kwargs):
        raise MemoryError("Unable to allocate 29.8 GiB for an array with shape (4000000000, 1)")

    monkeypatch.setattr("usidgpu.usid.file.USIDFile.main_datasets", no_memory)
    assert cli(["info", str(tmp_path / "m.h5")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usidgpu: error: ") and "not enough memory" in err and err.count("\n") == 1


def test_block_wise_denoise_refuses_nan_in_one_line_and_leaves_nothing(tmp_path):
    from helpers import make_file

    image = np.random.default_rng(0).standard_normal((64, 64, 1)).astype(np.float32)
    image[10, 20, 0] = np.nan
    path = tmp_path / "nan.h5"
    make_file(path, image, pos=[usidgpu.Dimension("Y", "nm", 64), usidgpu.Dimension("X", "nm", 64)],
              spec=[usidgpu.Dimension("arb", "a.u.", 1)])  # fmt: skip
    ran = run_cli("denoise", path, "--scheduler", "threads")
    assert ran.returncode == 2 and "NaN or infinite" in ran.one_line_error()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nan.h5"]  # no store, no sidecar folder
