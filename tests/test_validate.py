"""The malformed-file suite: one file per broken USID rule, and the right problem is named.

Each file is broken in HDF5 (with h5py) and then validated as it is and as the zarr copy that
``usidgpu convert`` makes of it (the ``storage`` fixture of storage_fixtures.py): validation
reads, and must name the same problems in both. pyUSID, the independent oracle, reads HDF5 only."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import storage_fixtures
from helpers import make_file

import usidgpu
from usidgpu.cli import main as cli

storage = storage_fixtures.storage  # the fixture: each reading test on HDF5, then on its zarr copy

MAIN = "/Measurement_000/Channel_000/Raw_Data"
CH = "/Measurement_000/Channel_000"


def _replace(group: h5py.Group, name: str, data: np.ndarray, like: h5py.Dataset | None = None, **attrs):
    """Replace dataset ``name`` (new object), keeping the attributes of ``like`` unless overridden."""
    old = dict(like.attrs) if like is not None else {}
    del group[name]
    ds = group.create_dataset(name, data=data)
    for k, v in {**old, **attrs}.items():
        ds.attrs[k] = v
    return ds


def _relink(f: h5py.File) -> None:
    m = f[MAIN]
    for name in ("Position_Indices", "Position_Values", "Spectroscopic_Indices", "Spectroscopic_Values"):
        m.attrs[name] = f[f"{CH}/{name}"].ref


def _break(f: h5py.File, how: str) -> None:
    m, ch = f[MAIN], f[CH]
    if how == "missing-attribute":
        del m.attrs["quantity"]
    elif how == "attribute-not-string":
        m.attrs["units"] = 5
    elif how == "missing-reference":
        del m.attrs["Position_Values"]
    elif how == "not-a-reference":
        m.attrs["Position_Indices"] = "Position_Indices"
    elif how == "dangling-reference":
        del ch["Spectroscopic_Values"]
    elif how == "reference-not-dataset":
        m.attrs["Spectroscopic_Indices"] = ch.ref
    elif how == "main-not-2d":
        attrs = dict(m.attrs)
        del ch["Raw_Data"]
        d = ch.create_dataset("Raw_Data", data=np.zeros((3, 4, 5), np.float32))
        for k, v in attrs.items():
            d.attrs[k] = v
    elif how == "ancillary-shape":
        _replace(
            ch,
            "Position_Values",
            np.zeros((12, 3), np.float32),
            ch["Position_Values"],
            labels=np.array([b"Y", b"X", b"Z"]),
            units=np.array([b"um", b"nm", b"nm"]),
        )
        _relink(f)
    elif how == "ancillary-size":
        for name, dtype in (("Position_Indices", np.uint32), ("Position_Values", np.float32)):
            _replace(ch, name, np.zeros((10, 2), dtype), ch[name])
        _relink(f)
    elif how == "ancillary-not-2d":
        _replace(ch, "Spectroscopic_Values", np.linspace(-1, 1, 5).astype(np.float32), ch["Spectroscopic_Values"])
        _relink(f)
    elif how == "ancillary-missing-attribute":
        del ch["Spectroscopic_Indices"].attrs["labels"]
    elif how == "labels-units-length":
        ch["Position_Indices"].attrs["units"] = np.array([b"um"])
    elif how == "labels-mismatch":
        ch["Position_Values"].attrs["labels"] = np.array([b"Y", b"Q"])
    elif how == "units-mismatch":
        ch["Spectroscopic_Values"].attrs["units"] = np.array([b"mV"])
    elif how == "labels-count":
        for name in ("Spectroscopic_Indices", "Spectroscopic_Values"):
            ch[name].attrs["labels"] = np.array([b"Bias", b"Cycle"])
            ch[name].attrs["units"] = np.array([b"V", b""])
    elif how == "index-dtype":
        _replace(ch, "Position_Indices", ch["Position_Indices"][()].astype(np.float32), ch["Position_Indices"])
        _relink(f)
    elif how == "negative-index":
        inds = ch["Position_Indices"][()].astype(np.int32)
        inds[3, 1] = -1
        _replace(ch, "Position_Indices", inds, ch["Position_Indices"])
        _relink(f)
    elif how == "values-dtype":
        _replace(ch, "Spectroscopic_Values", np.array([[b"a", b"b", b"c", b"d", b"e"]]), ch["Spectroscopic_Values"])
        _relink(f)
    elif how == "not-a-grid":
        inds = ch["Position_Indices"][()]
        inds[[0, 1]] = inds[[1, 0]]
        ch["Position_Indices"][...] = inds
        vals = ch["Position_Values"][()]
        vals[[0, 1]] = vals[[1, 0]]
        ch["Position_Values"][...] = vals
    elif how == "index-value-mismatch":
        vals = ch["Position_Values"][()]
        vals[5, 0] += 100
        ch["Position_Values"][...] = vals
    elif how == "duplicate-label":
        for name in ("Spectroscopic_Indices", "Spectroscopic_Values"):
            ch[name].attrs["labels"] = np.array([b"X"])
    elif how == "empty-label":
        for name in ("Spectroscopic_Indices", "Spectroscopic_Values"):
            ch[name].attrs["labels"] = np.array([b""])
    elif how == "results-source-dangling":
        g = ch.create_group("Raw_Data-SVD_000")
        tmp = ch.create_dataset("tmp", data=[1])
        g.attrs["source_000"] = tmp.ref
        del ch["tmp"]
    elif how == "results-source-mismatch":
        g = ch.create_group("Raw_Data-SVD_000")
        g.attrs["source_000"] = ch["Position_Indices"].ref
    else:  # pragma: no cover
        raise AssertionError(how)


# rule -> (severity, path the problem names, does pyUSID's check_if_main reject it too?)
CASES = {
    "missing-attribute": ("error", MAIN, True),
    "attribute-not-string": ("error", MAIN, True),
    "missing-reference": ("error", MAIN, True),
    "not-a-reference": ("error", MAIN, True),
    "dangling-reference": ("error", MAIN, None),  # pyUSID follows it to the unlinked object
    "reference-not-dataset": ("error", MAIN, None),  # pyUSID crashes (AttributeError)
    "main-not-2d": ("error", MAIN, True),
    "ancillary-shape": ("error", MAIN, True),
    "ancillary-size": ("error", f"{CH}/Position_Indices", True),
    "ancillary-not-2d": ("error", f"{CH}/Spectroscopic_Values", None),
    "ancillary-missing-attribute": ("error", f"{CH}/Spectroscopic_Indices", None),
    "labels-units-length": ("error", f"{CH}/Position_Indices", True),
    "labels-mismatch": ("error", MAIN, True),
    "units-mismatch": ("error", MAIN, True),
    "labels-count": ("error", f"{CH}/Spectroscopic_Indices", True),
    "index-dtype": ("error", f"{CH}/Position_Indices", False),
    "negative-index": ("error", f"{CH}/Position_Indices", False),
    "values-dtype": ("error", f"{CH}/Spectroscopic_Values", False),
    "not-a-grid": ("warning", MAIN, False),
    "index-value-mismatch": ("warning", f"{CH}/Position_Values", False),
    "duplicate-label": ("warning", MAIN, False),
    "empty-label": ("warning", f"{CH}/Spectroscopic_Indices", False),
    "results-source-dangling": ("error", f"{CH}/Raw_Data-SVD_000", False),
    "results-source-mismatch": ("warning", f"{CH}/Raw_Data-SVD_000", False),
}


# errors that leave the dataset readable (like pyUSID, usidgpu still opens it)
OPENS = {"index-dtype", "negative-index", "results-source-dangling", "results-source-mismatch"}


@pytest.fixture
def valid_file(tmp_path):
    path = tmp_path / "valid.h5"
    make_file(path)
    assert usidgpu.validate(path) == []
    return path


@pytest.mark.parametrize("rule", sorted(CASES))
def test_each_broken_rule_is_named(valid_file, rule, pyusid, capsys, storage):
    severity, where, pyusid_rejects = CASES[rule]
    with h5py.File(valid_file, "r+") as f:
        _break(f, rule)
    target = storage.path(valid_file)
    problems = usidgpu.validate(target)
    named = [p for p in problems if p.rule == rule]
    assert named, f"{rule} not reported; got {[str(p) for p in problems]}"
    assert named[0].severity == severity
    assert named[0].path == where
    assert where in str(named[0])
    # pyUSID, the independent oracle for the structural rules, agrees the dataset is (not) Main
    if pyusid_rejects is not None:
        with h5py.File(valid_file, "r") as f:
            assert bool(pyusid.hdf_utils.check_if_main(f[MAIN])) == (not pyusid_rejects)
    code = cli(["validate", str(target)])
    out = capsys.readouterr().out
    assert rule in out
    errors = [p for p in problems if p.severity == "error"]
    assert code == (1 if errors else 0)
    if errors:
        assert "INVALID" in out
    with usidgpu.open(target) as f:
        if rule in OPENS:
            f.dataset(MAIN)  # usable despite the problem: the data can still be read
        elif severity == "error":
            with pytest.raises(usidgpu.NotMainError, match="not a USID Main dataset"):
                f.dataset(MAIN)


def test_every_problem_is_listed_not_just_the_first(valid_file, storage):
    with h5py.File(valid_file, "r+") as f:
        _break(f, "missing-attribute")
        _break(f, "labels-mismatch")
        _break(f, "dangling-reference")
    rules = {p.rule for p in usidgpu.validate(storage.path(valid_file))}
    assert {"missing-attribute", "labels-mismatch", "dangling-reference"} <= rules


def test_nan_only_data_is_valid(tmp_path, storage):
    make_file(tmp_path / "nan.h5", data=np.full((3, 4, 5), np.nan, np.float32))
    path = storage.path(tmp_path / "nan.h5")
    assert usidgpu.validate(path) == []
    with usidgpu.open(path) as f:
        assert np.isnan(f[MAIN].to_ndim()).all()


def test_file_without_main_dataset(tmp_path, capsys, storage):
    with h5py.File(tmp_path / "plain.h5", "w") as f:
        f.create_dataset("image", data=np.zeros((4, 4)))
        f["image"].attrs["quantity"] = "Height"
        f["image"].attrs["units"] = "m"
    path = storage.path(tmp_path / "plain.h5")
    assert [p.rule for p in usidgpu.validate(path)] == ["no-main"]
    assert cli(["validate", str(path)]) == 2
    assert "not a USID file" in capsys.readouterr().err


def test_validate_single_dataset(valid_file, capsys, storage):
    with h5py.File(valid_file, "r+") as f:
        _break(f, "units-mismatch")
    target = storage.path(valid_file)
    assert cli(["validate", str(target), "-d", MAIN]) == 1
    assert "units-mismatch" in capsys.readouterr().out
    assert cli(["validate", str(target), "-d", "/nope"]) == 2
    err = capsys.readouterr().err
    assert "no dataset '/nope'" in err and str(target) in err


def test_empty_main_dataset(valid_file, storage):
    with h5py.File(valid_file, "r+") as f:
        _break(f, "main-not-2d")
        attrs = dict(f[MAIN].attrs)
        del f[CH]["Raw_Data"]
        d = f[CH].create_dataset("Raw_Data", shape=(0, 5), dtype=np.float32)
        for k, v in attrs.items():
            d.attrs[k] = v
    target = storage.path(valid_file)
    assert "main-empty" in {p.rule for p in usidgpu.validate(target)}
    with usidgpu.open(target) as f:
        assert f.main_datasets() == []


# HDF5-only: flips bytes of the HDF5 file itself (a damaged zarr store is damaged differently)
def test_damaged_files_never_give_a_traceback(valid_file, tmp_path, capsys):
    raw = bytearray(valid_file.read_bytes())
    rng = np.random.default_rng(11)
    for trial in range(40):
        damaged = bytearray(raw)
        for offset in rng.integers(0, len(raw), size=8):
            damaged[offset] ^= 0xFF
        path = tmp_path / f"damaged_{trial}.h5"
        path.write_bytes(bytes(damaged))
        for command in ("info", "validate"):
            code = cli([command, str(path)])
            captured = capsys.readouterr()
            assert "Traceback" not in captured.err
            if code == 2:
                assert captured.err.count("\n") == 1 and path.name in captured.err
            else:
                assert code in (0, 1)


def _pyusid_file_with_a_partial_link(path, pyusid, quantity_units: bool):
    """A file built the way pyUSID's tests build it: a Main dataset written by pyUSID, and an
    ordinary dataset linked to the Main's Spectroscopic_Values by ``check_and_link_ancillary``."""
    with h5py.File(path, "w") as f:
        group = f.create_group("Measurement_000/Channel_000")
        main = pyusid.hdf_utils.write_main_dataset(
            group, np.random.default_rng(0).random((6, 7)), "Raw_Data", "Current", "nA",
            [pyusid.Dimension("X", "nm", 6)], [pyusid.Dimension("Bias", "V", 7)],
        )  # fmt: skip
        other = group.create_dataset("Fit_Parameters", data=np.zeros((6, 7)))
        if quantity_units:  # it then claims to be Main, and is checked (and refused) as one
            other.attrs["quantity"], other.attrs["units"] = "Fit", "a.u."
        pyusid.hdf_utils.check_and_link_ancillary(other, ["Spectroscopic_Values"], anc_refs=[main.h5_spec_vals])
    return path


def test_a_partial_ancillary_link_is_a_note_not_an_error(tmp_path, pyusid, capsys):
    path = _pyusid_file_with_a_partial_link(tmp_path / "linked.h5", pyusid, quantity_units=False)
    problems = usidgpu.validate(path)
    assert [p.rule for p in problems] == ["partial-ancillary-link"] and problems[0].severity == "note"
    assert problems[0].path == "/Measurement_000/Channel_000/Fit_Parameters"
    with h5py.File(path, "r") as f:  # pyUSID agrees: one Main dataset, the linked one is not
        assert [d.name for d in pyusid.hdf_utils.get_all_main(f)] == ["/Measurement_000/Channel_000/Raw_Data"]
    with usidgpu.open(path) as f:
        assert [m.name for m in f.main_datasets()] == ["/Measurement_000/Channel_000/Raw_Data"]
    assert cli(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert "note: links Spectroscopic_Values" in out and "valid USID (1 note)" in out


def test_a_dataset_that_claims_to_be_main_is_still_checked_as_main(tmp_path, pyusid):
    path = _pyusid_file_with_a_partial_link(tmp_path / "claims.h5", pyusid, quantity_units=True)
    problems = usidgpu.validate(path)
    errors = [p for p in problems if p.severity == "error"]
    assert errors and all(p.path == "/Measurement_000/Channel_000/Fit_Parameters" for p in errors)
    assert {p.rule for p in errors} >= {"missing-reference"}
    with h5py.File(path, "r") as f:
        assert not pyusid.hdf_utils.check_if_main(f["/Measurement_000/Channel_000/Fit_Parameters"])
