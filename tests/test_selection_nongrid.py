"""Selecting by name on positions that fill no grid — sparse sampling, an aborted scan — answered
as pyUSID's ``USIDataset.slice`` answers: the entries whose index-table values are selected, one
flat axis (``sel`` keeps refusing only an n-d view, which needs a grid)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from conftest import DATA_DIR

import usidgpu
from usidgpu.core.errors import SelectionError


def pyusid_slice(pyusid, path: str, dataset: str, selection: dict) -> np.ndarray:
    with h5py.File(path, "r") as f:
        t = pyusid.USIDataset(f[dataset])
        values, _ok = t.slice({k: [v] if isinstance(v, int) else v for k, v in selection.items()}, ndim_form=False)
        return np.asarray(values)


SPARSE = DATA_DIR / "sparse_sampling.h5"


@pytest.mark.skipif(not SPARSE.exists(), reason="the sparse-sampling sample is not here")
@pytest.mark.parametrize(
    "selection",
    # (not a square answer: pyUSID transposes those by mistake when it squeezes)
    [{"X": 1}, {"Y": 4}, {"X": slice(2, 6)}, {"Y": [0, 7, 3], "Frequency": [0, 2]}, {"X": 5, "Frequency": 2},
     {"Y": slice(None), "X": [6]}],
)  # fmt: skip
def test_sparse_positions_select_as_pyusid_does(pyusid, selection):
    name = "/Measurement_000/Channel_001/Raw_Data"
    with usidgpu.open(SPARSE) as f:
        got = f.dataset(name).sel(**selection)
    want = pyusid_slice(pyusid, str(SPARSE), name, selection)
    np.testing.assert_array_equal(got.reshape(want.shape), want)


def aborted_scan(path, pyusid, rows: int = 13):
    """A 4 × 5 scan written by pyUSID, then cut to its first ``rows`` positions as an aborted scan
    leaves it (the index tables end where the data end)."""
    full = path.with_name("full.h5")
    data = np.random.default_rng(0).random((20, 6))
    with h5py.File(full, "w") as f:
        g = f.create_group("Measurement_000/Channel_000")
        pyusid.hdf_utils.write_main_dataset(
            g, data, "Raw_Data", "Current", "nA",
            [pyusid.Dimension("X", "nm", 5), pyusid.Dimension("Y", "nm", 4)], [pyusid.Dimension("Bias", "V", 6)],
        )  # fmt: skip
    with h5py.File(full, "r") as src, h5py.File(path, "w") as dst:
        g = dst.create_group("Measurement_000/Channel_000")
        s = src["Measurement_000/Channel_000"]
        copies = {}
        for name in ("Position_Indices", "Position_Values", "Spectroscopic_Indices", "Spectroscopic_Values"):
            cut = s[name][:rows] if name.startswith("Position") else s[name][()]
            copies[name] = g.create_dataset(name, data=cut)
            for k, v in s[name].attrs.items():
                copies[name].attrs[k] = v
        main = g.create_dataset("Raw_Data", data=s["Raw_Data"][:rows])
        for k, v in s["Raw_Data"].attrs.items():
            if not isinstance(v, h5py.Reference):
                main.attrs[k] = v
        for name, anc in copies.items():
            main.attrs[name] = anc.ref
    return path, data[:rows]


@pytest.mark.parametrize("selection", [{"X": 2}, {"Y": 2}, {"X": slice(1, 4), "Bias": 3}, {"Y": [0, 2], "X": 4}])
def test_an_aborted_scan_selects_as_pyusid_does(tmp_path, pyusid, selection):
    path, data = aborted_scan(tmp_path / "aborted.h5", pyusid)
    with usidgpu.open(path) as f:
        m = f.main_datasets()[0]
        assert not m.is_grid
        got = m.sel(**selection)
        with pytest.raises(usidgpu.NotAGridError):
            m.to_ndim()  # no n-d view without a grid
    want = pyusid_slice(pyusid, str(path), "/Measurement_000/Channel_000/Raw_Data", selection)
    np.testing.assert_array_equal(got.reshape(want.shape), want)
    # and the oracle of the oracle: the rows of the data whose X/Y index was chosen
    x, y = np.arange(13) % 5, np.arange(13) // 5
    keep = np.ones(13, bool)
    for name, index in (("X", x), ("Y", y)):
        if name in selection:
            keep &= np.isin(index, np.arange(5 if name == "X" else 4)[selection[name]])
    cols = np.arange(6)[selection.get("Bias", slice(None))]
    np.testing.assert_array_equal(got.reshape(-1), data[keep][:, np.atleast_1d(cols)].reshape(-1))


def test_a_selection_matching_nothing_says_so(tmp_path, pyusid):
    path, _ = aborted_scan(tmp_path / "aborted.h5", pyusid)
    with usidgpu.open(path) as f, pytest.raises(SelectionError, match="no positions have the indices"):
        f.main_datasets()[0].sel(Y=2, X=4)  # the scan stopped before the end of its third row


def test_the_service_answers_the_same_selections_with_their_axes_named(tmp_path, pyusid):
    import io

    httpx = pytest.importorskip("httpx")
    pytest.importorskip("fastapi")
    from service_tools import served

    folder = tmp_path / "instrument"
    folder.mkdir()
    path, _ = aborted_scan(folder / "aborted.h5", pyusid)
    with served(folder, "--read-only", "--state", tmp_path / "state") as srv, usidgpu.open(path) as f:
        m = f.main_datasets()[0]
        (entry,) = [d for d in httpx.get(f"{srv.url}/api/v1/datasets").json()["datasets"] if d["file"] == "aborted.h5"]
        url = f"{srv.url}/api/v1/datasets/{entry['id']}/data"
        for query, selection, dims in [({"X": "2"}, {"X": 2}, "Positions,Bias"), ({"Y": "0:2", "Bias": "3"},
                                       {"Y": slice(0, 2), "Bias": 3}, "Positions")]:  # fmt: skip
            r = httpx.get(url, params=query)
            assert r.status_code == 200, r.text
            np.testing.assert_array_equal(np.load(io.BytesIO(r.content)), m.sel(**selection))
            assert r.headers["x-array-dims"] == dims
        r = httpx.get(url, params={"Y": "2", "X": "4"})
        assert r.status_code == 400 and "no positions have the indices" in r.json()["detail"]


def relaxation_file(path, pyusid):
    """pyUSID's relaxation test file, built as its tests build it: spectroscopic dimensions
    Frequency × Repeats × DC_Offset and a dependent Field (1 on the first repeat, 0 after)."""
    freq, repeats, offsets = 3, 5, 7
    inds, vals = pyusid.io.write_utils.build_ind_val_matrices(
        [np.linspace(320, 340, freq), np.arange(repeats), 3 * np.pi * np.linspace(0, 1, offsets)]
    )
    field_inds = np.tile(np.repeat(np.hstack(([0], np.ones(repeats - 1))), freq), offsets)
    field_vals = np.tile(np.repeat(np.hstack(([1], np.zeros(repeats - 1))), freq), offsets)
    inds, vals = np.vstack((inds, field_inds)), np.vstack((vals, field_vals))
    pos_inds = np.vstack((np.tile(np.arange(11), 2), np.repeat(np.arange(2), 11))).T
    spec_labels, spec_units = ["Frequency", "Repeats", "DC_Offset", "Field"], ["kHz", "a. u.", "V", "a.u."]
    with h5py.File(path, "w") as f:
        g = f.create_group("Measurement_000/Channel_000")
        made = {}
        for name, data, dtype, labels, units in [
            ("Position_Indices", pos_inds, np.uint16, ["X", "Y"], ["nm", "um"]),
            ("Position_Values", pos_inds * [50, 1.25], np.float32, ["X", "Y"], ["nm", "um"]),
            ("Spectroscopic_Indices", inds, np.uint16, spec_labels, spec_units),
            ("Spectroscopic_Values", vals, np.float32, spec_labels, spec_units),
        ]:  # fmt: skip
            made[name] = g.create_dataset(name, data=data, dtype=dtype)
            made[name].attrs["labels"] = np.array(labels, dtype="S")
            made[name].attrs["units"] = np.array(units, dtype="S")
        main = g.create_dataset(
            "Raw_Data", data=np.random.default_rng(1).random((22, freq * repeats * offsets)), dtype=np.float32
        )
        main.attrs["units"], main.attrs["quantity"] = "V", "Cantilever Deflection"
        for name, dset in made.items():
            main.attrs[name] = dset.ref
    return path


@pytest.mark.parametrize(
    "selection", [{"Field": 0}, {"Field": 1, "X": 3}, {"DC_Offset": 2}, {"Repeats": [0, 4], "Y": 1}]
)
def test_a_dependent_spectroscopic_dimension_selects_as_pyusid_does(tmp_path, pyusid, selection):
    path = relaxation_file(tmp_path / "relaxation.h5", pyusid)
    with usidgpu.open(path) as f:
        got = f.main_datasets()[0].sel(**selection)
    if got.ndim == 3:  # the positions are a grid: (X, Y) in file order; pyUSID lists rows, Y slowest
        got = got.transpose(1, 0, 2)
    want = pyusid_slice(pyusid, str(path), "/Measurement_000/Channel_000/Raw_Data", selection)
    np.testing.assert_array_equal(got.reshape(want.shape), want)
