"""MainDataset.to_sidpy and ``usidgpu convert --to nsid``: sidpy Datasets with typed dimensions,
NSID files read back by SciFiReaders' NSID reader (an independent oracle) with the same values,
dimensions, units and types."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import make_file

import usidgpu
from usidgpu import Dimension
from usidgpu.cli import main as cli

sidpy = pytest.importorskip("sidpy")
pytest.importorskip("pyNSID")
SciFiReaders = pytest.importorskip("SciFiReaders")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning", "ignore::FutureWarning")

CASES = {
    # name: (pos, spec, expected data type, expected dimension types (slowest first))
    "spectrum image": ([Dimension("Y", "nm", 4), Dimension("X", "nm", 5)],
                       [Dimension("Bias", "V", np.linspace(-1, 1, 6))], "SPECTRAL_IMAGE",
                       ["SPATIAL", "SPATIAL", "SPECTRAL"]),
    "image": ([Dimension("Y", "Å", np.arange(6) * 0.5), Dimension("X", "Å", np.arange(7) * 0.5)],
              [Dimension("arb", "a.u.", 1)], "IMAGE", ["SPATIAL", "SPATIAL"]),
    "image stack": ([Dimension("Y", "nm", 4), Dimension("X", "nm", 5)], [Dimension("Frame", "s", np.arange(3) * 0.1)],
                    "IMAGE_STACK", ["SPATIAL", "SPATIAL", "TEMPORAL"]),
    "one spectrum": ([Dimension("X", "nm", 1)], [Dimension("Energy", "eV", np.geomspace(1, 10, 8))],
                     "SPECTRUM", ["SPECTRAL"]),
    "clusters": ([Dimension("Cluster", "a.u.", 3)], [Dimension("Bias", "V", 6)], "LINE_PLOT_FAMILY",
                 ["UNKNOWN", "SPECTRAL"]),
}  # fmt: skip


def data_for(pos, spec, seed=0):
    return np.random.default_rng(seed).standard_normal([d.size for d in pos + spec]).astype(np.float32)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("order", ["slow_to_fast", "fast_to_slow"])
def test_to_sidpy_types_the_dimensions_and_keeps_the_values(tmp_path, case, order):
    pos, spec, kind, types = CASES[case]
    data = data_for(pos, spec)
    make_file(tmp_path / "f.h5", data, pos=pos, spec=spec, dim_order=order)
    with usidgpu.open(tmp_path / "f.h5") as f:
        m = f.main_datasets()[0]
        dataset = m.to_sidpy()
        assert dataset.data_type.name == kind
        assert [dataset._axes[i].dimension_type.name for i in range(dataset.ndim)] == types
        expected = data.reshape([d.size for d in pos + spec if d.size > 1] or [1])
        np.testing.assert_array_equal(np.asarray(dataset), expected)
        assert (dataset.quantity, dataset.units) == ("Current", "nA")
        kept = [d for d in pos + spec if d.size > 1]
        for i, d in enumerate(kept):
            assert dataset._axes[i].name == d.name and dataset._axes[i].units == d.units
            np.testing.assert_allclose(np.asarray(dataset._axes[i].values), d.values, rtol=1e-6)


def test_convert_to_nsid_is_read_back_by_scifireaders(tmp_path, capsys):
    pos, spec, *_ = CASES["spectrum image"]
    data = data_for(pos, spec, seed=2)
    make_file(tmp_path / "si.h5", data, pos=pos, spec=spec, dim_order="fast_to_slow")
    compound = np.zeros((4, 5, 6), dtype=[("amp", "f4"), ("phase", "f4")])
    make_file(tmp_path / "si.h5", compound, pos=pos, spec=spec, name="Fit", dim_order="fast_to_slow")
    assert cli(["convert", str(tmp_path / "si.h5"), str(tmp_path / "si_nsid.h5"), "--to", "nsid"]) == 0
    out = capsys.readouterr().out
    assert "SPECTRAL_IMAGE" in out and "skipped /Measurement_000/Channel_000/Fit: compound data" in out
    read = SciFiReaders.NSIDReader(str(tmp_path / "si_nsid.h5")).read()
    (dataset,) = read.values() if isinstance(read, dict) else read
    np.testing.assert_array_equal(np.asarray(dataset), data)
    assert [dataset._axes[i].name for i in range(3)] == ["Y", "X", "Bias"]
    assert [dataset._axes[i].dimension_type.name for i in range(3)] == ["SPATIAL", "SPATIAL", "SPECTRAL"]
    np.testing.assert_allclose(np.asarray(dataset._axes[2].values), spec[0].values, rtol=1e-6)
    assert dataset.quantity == "Current" and dataset.units == "nA"
    # and usidgpu translates that NSID file back into USID with the same values
    assert cli(["translate", str(tmp_path / "si_nsid.h5"), str(tmp_path / "back.h5")]) == 0
    with usidgpu.open(tmp_path / "back.h5") as f:
        np.testing.assert_array_equal(f.main_datasets()[0].to_ndim(), data)


def test_nsid_needs_an_hdf5_name_and_a_grid(tmp_path, capsys):
    make_file(tmp_path / "a.h5")
    assert cli(["convert", str(tmp_path / "a.h5"), str(tmp_path / "a.zarr"), "--to", "nsid"]) == 2
    assert "NSID is HDF5" in capsys.readouterr().err
    assert not (tmp_path / "a.zarr").exists()
