"""Every real file in ../shared/data: usidgpu agrees with pyUSID, and non-USID files are refused."""

from __future__ import annotations

import warnings

import h5py
import numpy as np
import pytest
from conftest import real_file

import usidgpu
from usidgpu.cli import main as cli

USID_FILES = ["AFM_Force_Curve.h5", "simulated_STEM_Image.h5", "sparse_sampling.h5", "chip.h5"]
NSID_FILES = ["bfo_iv_final.hf5", "PTO_Funakubo0001.h5"]
NOT_HDF5 = [
    "DMReader_EELS_STO.dm3",
    "IgorIBWReader_ForceCurve.ibw",
    "NanonisReader_STS_grid_lockin.3ds",
    "NanonisReader_BiasSpectroscopy.dat",
    "test.sxm",
]


def _labels(pyusid, ds, attr):
    return [str(x).strip() for x in pyusid.hdf_utils.get_attr(ds, attr)]


@pytest.mark.parametrize("name", USID_FILES)
def test_dims_units_and_ndim_agree_with_pyusid(pyusid, name):
    path = real_file(name)
    with usidgpu.open(path) as f, h5py.File(path, "r") as h, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = f.main_datasets()
        theirs = pyusid.hdf_utils.get_all_main(h)
        assert [m.name for m in ours] == [t.name for t in theirs]
        for m, t in zip(ours, theirs):
            assert [d.name for d in m.pos_dims] == list(t.pos_dim_labels)
            assert [d.name for d in m.spec_dims] == list(t.spec_dim_labels)
            assert [d.units for d in m.pos_dims] == _labels(pyusid, t.h5_pos_inds, "units")
            assert [d.units for d in m.spec_dims] == _labels(pyusid, t.h5_spec_inds, "units")
            assert m.quantity == pyusid.hdf_utils.get_attr(t, "quantity").strip()
            assert m.units == pyusid.hdf_utils.get_attr(t, "units").strip()
            assert m.shape == t.shape and m.dtype == t.dtype
            if m.is_grid:
                assert list(m.spec_sizes) == [int(s) for s in t.spec_dim_sizes]
                assert list(m.pos_sizes) == [int(s) for s in t.pos_dim_sizes]
                nd = m.to_ndim()
                np.testing.assert_array_equal(nd, np.asarray(t.get_n_dim_form()))
                assert nd.shape == m.nd_shape
            else:
                with pytest.raises(ValueError):
                    t.get_n_dim_form()  # pyUSID refuses too
                with pytest.raises(usidgpu.NotAGridError, match="full grid"):
                    m.to_ndim()
            # streaming reproduces the raw data exactly
            streamed = np.concatenate([b.data for b in m.blocks(budget="64kB", copy=True)])
            np.testing.assert_array_equal(streamed, t[()])


def test_stem_image_orientation():
    # MANIFEST: X varies fastest; get_n_dim_form() equals raw.reshape(256, 256).T
    with usidgpu.open(real_file("simulated_STEM_Image.h5")) as f:
        m = f.dataset("/Measurement_000/Channel_000/Raw_Data")
        assert m.pos_layout.order == (1, 0)  # file lists the fastest (X) first
        raw = m[()]
        np.testing.assert_array_equal(m.to_ndim()[..., 0], raw.reshape(256, 256).T)
        np.testing.assert_array_equal(m.sel(Y=10)[:, 0], raw.reshape(256, 256)[10])


def test_sparse_file_streams_selects_and_validates(data_dir):
    with usidgpu.open(data_dir / "sparse_sampling.h5") as f:
        m = f.dataset("/Measurement_000/Channel_001/Raw_Data")
        assert m.pos_layout.kind == "sparse" and m.spec_layout.is_grid
        np.testing.assert_allclose(m.dim("Y").values, [3.75, 0, 3.75, 1.25, 2.5, 2.5, 2.5, 5])
        with pytest.raises(usidgpu.NotAGridError, match="full grid"):
            _ = m.nd_shape
        np.testing.assert_array_equal(m.sel(Frequency=1), m[:, 1])
        np.testing.assert_allclose(m.reduce("Frequency", "mean"), m[()].astype(np.float64).mean(axis=1), rtol=1e-6)
        m.sel(X=0)  # answered as pyUSID answers (tests/test_selection_nongrid.py)
        assert usidgpu.validate(f) == [] or all(p.severity == "warning" for p in usidgpu.validate(f))
        groups = f.results_groups(m.name.replace("Channel_001", "Channel_000"))
        assert len(groups) == 12 and {g.tool for g in groups} == {"Simple_Process"}


@pytest.mark.parametrize("name", USID_FILES)
def test_cli_info_and_validate_accept_real_files(name, capsys):
    assert cli(["info", str(real_file(name))]) == 0
    out = capsys.readouterr().out
    assert "/Measurement_000/Channel_000/Raw_Data" in out
    assert cli(["validate", str(real_file(name))]) == 0
    assert "valid USID" in capsys.readouterr().out


def test_cli_info_shows_units_and_shape(data_dir, capsys):
    assert cli(["info", str(data_dir / "chip.h5")]) == 0
    out = capsys.readouterr().out
    assert "Topography (m)" in out
    assert "X (300 pts, 0 … 8e-05 m)" in out and "(300, 300, 1)" in out


@pytest.mark.parametrize("name", NSID_FILES)
def test_nsid_files_are_not_usid(data_dir, name, capsys):
    with usidgpu.open(data_dir / name) as f:
        assert f.main_datasets() == []
        problems = usidgpu.validate(f)
    assert [p.rule for p in problems] == ["no-main"]
    for command in ("info", "validate"):
        assert cli([command, str(data_dir / name)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and name in err[0] and "not a USID file" in err[0]


@pytest.mark.parametrize("name", NOT_HDF5)
def test_vendor_files_are_not_hdf5(data_dir, name, capsys):
    with pytest.raises(usidgpu.FileProblem, match="not an HDF5 file"):
        usidgpu.open(data_dir / name)
    assert cli(["validate", str(data_dir / name)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and name in err and "Traceback" not in err


def test_real_files_opened_read_only(data_dir, tmp_path):
    import shutil

    from helpers import file_digest

    copy = tmp_path / "chip.h5"
    shutil.copy(data_dir / "chip.h5", copy)
    before = file_digest(copy)
    with usidgpu.open(copy) as f:
        m = f.main_datasets()[0]
        m.to_ndim()
        m.reduce(["X", "Y"], "mean")
        list(m.blocks())
        assert f.h5.mode == "r"
    cli(["info", str(copy)])
    cli(["validate", str(copy)])
    assert file_digest(copy) == before
