"""MainDataset.to_hyperspy / usidgpu.from_hyperspy: positions → navigation axes, spectroscopic
dimensions → signal axes, slowest first, units, uniform and non-uniform axes, quantity, complex
and compound data, lazy signals; round trips equal in data, names, units and scales. The oracle
is ``MainDataset.sel`` on the same file and HyperSpy's own signals."""

from __future__ import annotations

import itertools

import h5py
import numpy as np
import pytest
from conftest import DATA_DIR
from helpers import make_file

import usidgpu
from usidgpu import Dimension

hs = pytest.importorskip("hyperspy.api")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")

POS = [Dimension("Y", "µm", np.arange(3) * 0.5), Dimension("X", "nm", np.arange(4) * 2.0 + 1), Dimension("Z", "nm", 2)]
SPEC = [Dimension("Bias", "V", np.linspace(-1, 1, 5)), Dimension("Cycle", "", 2)]
NONUNIFORM = Dimension("Energy", "eV", np.array([1.0, 2.0, 4.0, 8.0, 16.0]))


def cases():
    for n_pos, n_spec, order in itertools.product((1, 2, 3), (1, 2), ("slow_to_fast", "fast_to_slow")):
        yield pytest.param(POS[:n_pos], SPEC[:n_spec], order, np.float32, id=f"{n_pos}pos-{n_spec}spec-{order}")
    yield pytest.param(POS[:2], [NONUNIFORM], "slow_to_fast", np.float64, id="non-uniform")
    yield pytest.param(POS[:2], SPEC[:1], "fast_to_slow", np.complex64, id="complex")


def check_axes(signal, dims_slowest_first, navigate):
    """The signal's axes in array order are these dimensions, values and units kept."""
    axes = sorted(signal.axes_manager._axes, key=lambda a: a.index_in_array)
    assert [a.name for a in axes] == [d.name for d in dims_slowest_first]
    assert [a.navigate for a in axes] == navigate
    for a, d in zip(axes, dims_slowest_first):
        np.testing.assert_allclose(a.axis, d.values, rtol=1e-12)
        assert a.units == d.units
        assert a.is_uniform == (d.name != "Energy")


@pytest.mark.parametrize("pos, spec, order, dtype", cases())
def test_a_main_dataset_becomes_the_signal_a_user_expects(tmp_path, pos, spec, order, dtype):
    shape = tuple(d.size for d in pos) + tuple(d.size for d in spec)
    rng = np.random.default_rng(1)
    data = rng.standard_normal(shape).astype(dtype)
    if np.dtype(dtype).kind == "c":
        data = (data + 1j * rng.standard_normal(shape)).astype(dtype)
    make_file(tmp_path / "f.h5", data, pos=pos, spec=spec, dim_order=order)
    with usidgpu.open(tmp_path / "f.h5") as f:
        m = f.main_datasets()[0]
        signal = m.to_hyperspy()
        np.testing.assert_array_equal(signal.data, data)  # slowest first, whatever the column order
        check_axes(signal, pos + spec, [True] * len(pos) + [False] * len(spec))
        assert signal.metadata.Signal.quantity == "Current (nA)"
        assert not signal.metadata.Signal.signal_type
        expected = {1: "Signal1D", 2: "Signal2D"}[len(spec)]
        assert type(signal).__name__ == ("Complex" + expected if np.iscomplexobj(data) else expected)
        # a position read through HyperSpy's navigation is MainDataset.sel there
        index = {d.name: d.size - 1 for d in pos}
        nav = tuple(index[d.name] for d in reversed(pos))  # inav takes the fastest axis first
        np.testing.assert_array_equal(signal.inav[nav].data, data[tuple(index[d.name] for d in pos)])
        if order == "slow_to_fast":  # sel keeps the file's column order: here, slowest first too
            np.testing.assert_array_equal(signal.inav[nav].data, m.sel(**index))
        lazy = m.to_hyperspy(lazy=True)
        assert lazy._lazy and type(lazy).__name__.startswith("Lazy")
        np.testing.assert_array_equal(np.asarray(lazy.data.compute()), data)
        # and back: the same values, names, units, axis values and quantity
        with h5py.File(tmp_path / "back.h5", "w") as out:
            back = usidgpu.from_hyperspy(signal, out.create_group("Measurement_000/Channel_000"))
            again = back.to_hyperspy()
            np.testing.assert_array_equal(again.data, signal.data)
            check_axes(again, pos + spec, [True] * len(pos) + [False] * len(spec))
            assert back.quantity == "Current" and back.units == "nA"


def test_an_image_is_a_signal2d_of_its_positions_and_round_trips(tmp_path):
    image = np.random.default_rng(2).random((6, 9)).astype(np.float32)
    pos = [Dimension("Y", "Å", np.arange(6) * 0.25), Dimension("X", "Å", np.arange(9) * 0.25)]
    make_file(tmp_path / "img.h5", image[..., None], pos=pos, spec=[Dimension("arb", "a.u.", 1)],
              quantity="Intensity", units="counts", dim_order="fast_to_slow")  # fmt: skip
    with usidgpu.open(tmp_path / "img.h5") as f:
        signal = f.main_datasets()[0].to_hyperspy()
    assert type(signal).__name__ == "Signal2D" and signal.axes_manager.navigation_dimension == 0
    np.testing.assert_array_equal(signal.data, image)
    assert [a.scale for a in signal.axes_manager.signal_axes] == [0.25, 0.25]
    with h5py.File(tmp_path / "back.h5", "w") as out:
        back = usidgpu.from_hyperspy(signal, out)
        assert [d.name for d in back.pos_dims] == ["Y", "X"] and back.sel(arb=0).shape == (6, 9)
        np.testing.assert_array_equal(back.to_hyperspy().data, image)


def test_signals_made_in_hyperspy_round_trip(tmp_path):
    rng = np.random.default_rng(3)
    axes = [{"name": "y", "units": "nm", "size": 3, "scale": 0.5, "offset": 1.0, "navigate": True},
            {"name": "x", "units": "nm", "size": 4, "scale": 2.0, "offset": -3.0, "navigate": True},
            {"name": "E", "units": "eV", "axis": np.geomspace(1, 100, 7), "navigate": False}]  # fmt: skip
    signal = hs.signals.Signal1D(rng.random((3, 4, 7)), axes=axes)
    signal.metadata.Signal.quantity = "Intensity (counts)"
    for lazy in (False, True):
        s = signal.as_lazy() if lazy else signal
        with h5py.File(tmp_path / f"rt{lazy}.h5", "w") as out:
            m = usidgpu.from_hyperspy(s, out, compression="gzip")
            assert (m.quantity, m.units) == ("Intensity", "counts")
            back = m.to_hyperspy()
            np.testing.assert_array_equal(back.data, signal.data)
            for a, b in zip(back.axes_manager._axes, signal.axes_manager._axes):
                assert (a.name, a.units, a.navigate, a.size) == (b.name, b.units, b.navigate, b.size)
                # USID stores dimension values in float32 (pyUSID's VALUES_DTYPE)
                np.testing.assert_allclose(a.axis, b.axis, rtol=1e-7 if a.is_uniform else 1e-6)


def test_compound_data_give_one_signal_per_field(tmp_path):
    data = np.zeros((3, 4, 5), dtype=[("amplitude", "f4"), ("phase", "f4")])
    data["amplitude"] = np.arange(60).reshape(3, 4, 5)
    data["phase"] = -np.arange(60).reshape(3, 4, 5)
    make_file(tmp_path / "c.h5", data, pos=POS[:2], spec=SPEC[:1])
    with usidgpu.open(tmp_path / "c.h5") as f:
        signals = f.main_datasets()[0].to_hyperspy()
    assert [s.metadata.General.title for s in signals] == ["amplitude", "phase"]
    np.testing.assert_array_equal(signals[1].data, data["phase"])


def test_values_that_go_back_and_forth_are_kept_beside_a_counting_axis():
    from conftest import real_file

    with usidgpu.open(real_file("AFM_Force_Curve.h5")) as f:
        m = f.main_datasets()[0]
        signal = m.to_hyperspy()
        spec = m.spec_dims[0]
        kept = signal.original_metadata.USID.unordered_axis_values.as_dictionary()[spec.name]
        np.testing.assert_allclose(kept, spec.values)
        assert signal.axes_manager[spec.name].size == spec.size


def test_sparse_positions_are_one_navigation_axis(tmp_path):
    path = DATA_DIR / "sparse_sampling.h5"
    if not path.exists():
        pytest.skip("the sparse-sampling sample is not here")
    with usidgpu.open(path) as f:
        m = f.dataset("/Measurement_000/Channel_001/Raw_Data")
        signal = m.to_hyperspy()
        assert [a.name for a in signal.axes_manager.navigation_axes] == ["Position"]
        np.testing.assert_array_equal(signal.data, m[()])


@pytest.mark.parametrize("name", ["AFM_Force_Curve.h5", "simulated_STEM_Image.h5", "sparse_sampling.h5", "chip.h5"])
def test_every_main_dataset_of_the_real_files_round_trips(name, tmp_path):
    from conftest import real_file

    path = real_file(name)
    if not path.exists():
        pytest.skip(f"{name} is not here")
    with usidgpu.open(path) as f:
        mains = [m for m in f.main_datasets() if m.spec_layout.is_grid]
        assert mains
        for k, m in enumerate(mains):
            signals = m.to_hyperspy()
            for signal in signals if isinstance(signals, list) else [signals]:
                flat = (
                    m[()]
                    if not signal.original_metadata.USID.has_item("field")
                    else m[()][signal.original_metadata.USID.field]
                )
                assert signal.data.size == flat.size
                if m.pos_layout.is_grid:  # the first position of HyperSpy's is sel's first position
                    first = {d.name: 0 for d in m.pos_dims}
                    nav = (0,) * signal.axes_manager.navigation_dimension
                    got = signal.inav[nav].data if nav else signal.data
                    want = m.sel(**first) if nav else m.to_ndim()
                    np.testing.assert_array_equal(np.sort(np.ravel(got)), np.sort(np.ravel(want)))
                with h5py.File(tmp_path / f"{k}-{signal.metadata.General.title}.h5", "w") as out:
                    back = usidgpu.from_hyperspy(signal, out).to_hyperspy()
                    np.testing.assert_array_equal(back.data, signal.data)
                    assert [a.name for a in back.axes_manager._axes] == [a.name for a in signal.axes_manager._axes]


def test_one_spectrum_is_one_position_and_comes_back_without_navigation(tmp_path):
    spectrum = hs.signals.Signal1D(np.linspace(0, 1, 50), axes=[{"name": "Energy", "units": "eV", "size": 50,
                                                                  "scale": 0.1, "offset": 2.0}])  # fmt: skip
    with h5py.File(tmp_path / "one.h5", "w") as out:
        m = usidgpu.from_hyperspy(spectrum, out)
        assert m.shape == (1, 50) and m.spec_dims[0].name == "Energy"
        back = m.to_hyperspy()
    assert back.axes_manager.navigation_dimension == 0 and type(back).__name__ == "Signal1D"
    np.testing.assert_array_equal(back.data, spectrum.data)
    assert back.axes_manager[0].offset == pytest.approx(2.0) and back.axes_manager[0].scale == pytest.approx(0.1)
