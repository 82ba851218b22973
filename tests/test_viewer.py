"""The notebook viewer, built headlessly and driven through its widgets' values."""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest

pytest.importorskip("ipywidgets")
pytest.importorskip("xarray")
pytest.importorskip("matplotlib")

from matplotlib.backend_bases import MouseEvent  # noqa: E402

import usidgpu  # noqa: E402
from usidgpu import Dimension  # noqa: E402
from usidgpu.usid import interop  # noqa: E402
from usidgpu.viz.viewer import MainViewer  # noqa: E402

DIMS = {
    "Y": Dimension("Y", "nm", np.linspace(0, 4, 5)),
    "X": Dimension("X", "nm", np.linspace(0, 6, 7)),
    "Z": Dimension("Z", "Å", np.linspace(1, 2, 3)),
    "Bias": Dimension("Bias", "V", np.linspace(-1, 1, 9)),
    "Cycle": Dimension("Cycle", "", 2),
}


def _write(path, pos, spec, dtype=np.float32, dim_order="slow_to_fast"):
    pos_dims, spec_dims = [DIMS[n] for n in pos], [DIMS[n] for n in spec]
    n_pos = int(np.prod([d.size for d in pos_dims]))
    n_spec = int(np.prod([d.size for d in spec_dims]))
    rng = np.random.default_rng(len(pos) * 10 + len(spec))
    data = rng.random((n_pos, n_spec))
    if np.dtype(dtype).kind == "c":
        data = data * np.exp(1j * rng.uniform(-3, 3, data.shape))
    with h5py.File(path, "w") as f:
        usidgpu.write_main(
            f.create_group("Measurement_000/Channel_000"),
            "Raw_Data",
            data.astype(dtype),
            "Current",
            "nA",
            pos_dims,
            spec_dims,
            dim_order=dim_order,
        )
    return path


def _expected(m, v):
    """What the panels must show, computed independently from to_ndim() (through xarray)."""
    x = m.to_xarray(lazy=False)
    idx = v.indices
    img = x.isel({n: i for n, i in idx.items() if n not in v.image_axes}).transpose(*v.image_axes).values
    spec = x.isel({n: i for n, i in idx.items() if n != v.spectrum_axis}).values
    return img, spec


def _check(m, v):
    img, spec = _expected(m, v)
    np.testing.assert_array_equal(v.image_data, img)
    np.testing.assert_array_equal(v.spectrum_data, spec)
    # what is drawn is those values (in the units shown on the axes)
    f = v._vfactor
    img, spec = (np.abs(a) if np.iscomplexobj(a) else a for a in (img, spec))  # default: amplitude
    np.testing.assert_allclose(np.asarray(v.spectrum_line.get_ydata()) * f, spec, rtol=1e-6)
    if v.map_kind == "image":
        np.testing.assert_allclose(np.asarray(v.map_artist.get_array()) * f, img, rtol=1e-6)
    elif v.map_kind == "line":
        np.testing.assert_allclose(np.asarray(v.map_artist.get_ydata()) * f, img, rtol=1e-6)


def _has_units(label, units):
    return f"({units})" in label if units else bool(label)


@pytest.mark.parametrize(
    "pos,spec,order",
    [
        (("Y", "X"), ("Bias",), "slow_to_fast"),
        (("Y", "X"), ("Cycle", "Bias"), "fast_to_slow"),
        (("X",), ("Bias",), "slow_to_fast"),
        (("Z", "Y", "X"), ("Cycle", "Bias"), "slow_to_fast"),
    ],
)
def test_sliders_drive_the_panels(tmp_path, pos, spec, order):
    path = _write(tmp_path / "a.h5", pos, spec, dim_order=order)
    with usidgpu.open(path) as f:
        m = f.main_datasets()[0]
        v = m.visualize(interactive=False)
        assert isinstance(v, MainViewer)
        assert set(v.sliders) == set(pos) | set(spec)  # a slider for every dimension
        assert v.map_kind == ("image" if len(pos) > 1 else "line")
        assert v.spectrum_axis == "Bias"
        if len(pos) > 1:
            assert v.image_axes == ("Y", "X")  # x: the fastest position dim, y: the next one
        _check(m, v)
        rng = np.random.default_rng(0)
        for _ in range(2):
            for s in v.sliders.values():
                s.value = int(rng.integers(0, s.max + 1))  # as a user moving the slider
                _check(m, v)
        # units on every axis
        xd = m.dim(v.image_axes[-1])
        assert _has_units(v.ax_map.get_xlabel(), xd.units)
        assert _has_units(v.ax_spectrum.get_xlabel(), "V")
        assert _has_units(v.ax_spectrum.get_ylabel(), "nA")
        if v.map_kind == "image":
            assert _has_units(v.ax_map.get_ylabel(), "nm")
            assert _has_units(v.colorbar.ax.get_ylabel(), "nA")
        else:
            assert _has_units(v.ax_map.get_ylabel(), "nA")
        # the readouts give the chosen coordinate with its units
        v.set(Bias=8)
        assert "1 V" in v._readouts["Bias"].value
        assert "Bias = 1 V" in v.ax_map.get_title()


def test_reads_only_the_slices_shown(tmp_path, monkeypatch):
    path = _write(tmp_path / "a.h5", ("Y", "X"), ("Cycle", "Bias"))
    read = []
    real = interop.read_rows_cols

    def counting(main, plan, *a, **k):
        read.append(plan.rows.size * plan.cols.size)
        return real(main, plan, *a, **k)

    monkeypatch.setattr(interop, "read_rows_cols", counting)
    with usidgpu.open(path) as f:
        m = f.main_datasets()[0]
        monkeypatch.setattr(type(m), "to_ndim", lambda self: pytest.fail("the viewer read the whole dataset"))
        v = m.visualize(interactive=False)
        assert v.reads == [("map", (5, 7)), ("spectrum", (9,))]
        v.reads.clear()
        v.sliders["Bias"].value = 4  # the spectroscopic point of the map: only the map is read
        assert v.reads == [("map", (5, 7))]
        v.reads.clear()
        v.set(X=3, Y=1)  # the position: only the spectrum, read once for both sliders
        assert v.reads == [("spectrum", (9,))]
        v.reads.clear()
        v.sliders["Cycle"].value = 1  # neither panel's own axis: both
        assert sorted(r[0] for r in v.reads) == ["map", "spectrum"]
    assert max(read) <= 5 * 7 and sum(read) < m.shape[0] * m.shape[1]


def _click(v, ax, x, y):
    px, py = ax.transData.transform((x, y))
    event = MouseEvent("button_press_event", v.figure.canvas, px, py, button=1)
    v.figure.canvas.callbacks.process("button_press_event", event)


def test_click_picks_position_and_spectroscopic_point(tmp_path):
    path = _write(tmp_path / "a.h5", ("Y", "X"), ("Bias",))
    with usidgpu.open(path) as f:
        m = f.main_datasets()[0]
        v = m.visualize(interactive=False)
        _click(v, v.ax_map, 4.1, 2.9)  # X = 4 nm (index 4), Y = 3 nm (index 3)
        assert (v.indices["X"], v.indices["Y"]) == (4, 3)
        _check(m, v)
        _click(v, v.ax_spectrum, 0.5, float(np.mean(v.ax_spectrum.get_ylim())))  # Bias = 0.5 V
        assert v.indices["Bias"] == 6
        _check(m, v)
        np.testing.assert_allclose(v._marker.get_data(), [[4.0], [3.0]])


def test_line_map_click(tmp_path):
    path = _write(tmp_path / "a.h5", ("X",), ("Cycle", "Bias"))
    with usidgpu.open(path) as f:
        m = f.main_datasets()[0]
        v = m.visualize(interactive=False, spectrum_dim="Bias")
        _click(v, v.ax_map, 2.2, float(np.mean(v.ax_map.get_ylim())))
        assert v.indices["X"] == 2
        _check(m, v)


def test_widget_renders_headlessly(tmp_path):
    import ipywidgets

    path = _write(tmp_path / "a.h5", ("Y", "X"), ("Bias",))
    with usidgpu.open(path) as f:
        v = f.main_datasets()[0].visualize(interactive=False)
        assert isinstance(v.widget, ipywidgets.VBox)
        png = v._output.value
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        v.set(Bias=2)
        assert v._output.value != png  # redrawn
        assert "application/vnd.jupyter.widget-view+json" in v._repr_mimebundle_()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # ipympl's Toolbar and traitlets
def test_ipympl_canvas(tmp_path):
    pytest.importorskip("ipympl")
    path = _write(tmp_path / "a.h5", ("Y", "X"), ("Bias",))
    with usidgpu.open(path) as f:
        m = f.main_datasets()[0]
        v = m.visualize(interactive=True)
        assert type(v.figure.canvas).__module__.startswith("ipympl")
        _click(v, v.ax_map, 1.0, 2.0)
        assert (v.indices["X"], v.indices["Y"]) == (1, 2)
        _check(m, v)


def test_complex_parts(tmp_path):
    path = _write(tmp_path / "c.h5", ("Y", "X"), ("Bias",), dtype=np.complex64)
    with usidgpu.open(path) as f:
        m = f.main_datasets()[0]
        v = m.visualize(interactive=False)
        v.set(X=2, Y=1, Bias=3)
        _check(m, v)
        np.testing.assert_allclose(v.spectrum_line.get_ydata() * v._vfactor, np.abs(v.spectrum_data), rtol=1e-6)
        v.part_dropdown.value = "phase"
        np.testing.assert_allclose(v.spectrum_line.get_ydata(), np.angle(v.spectrum_data), rtol=1e-6)
        assert "(rad)" in v.ax_spectrum.get_ylabel()


def test_sparse_positions_scatter(tmp_path):
    from conftest import real_file

    path = tmp_path / "sparse.h5"
    shutil.copyfile(real_file("sparse_sampling.h5"), path)
    with usidgpu.open(path) as f:
        m = f["/Measurement_000/Channel_000/Raw_Data"]
        v = m.visualize(interactive=False)
        assert v.map_kind == "scatter" and set(v.sliders) == {"Position", "Frequency"}
        flat = m[:]
        v.set(Position=5, Frequency=2)
        np.testing.assert_array_equal(v.image_data, flat[:, 2])
        np.testing.assert_array_equal(v.spectrum_data, flat[5])
        assert v.ax_map.get_xlabel() == "X (nm)" and v.ax_map.get_ylabel() == "Y (um)"
        assert v.ax_spectrum.get_xlabel() == "Frequency (kHz)"
        table = m.h5_pos_vals[()]
        _click(v, v.ax_map, table[3, 0], table[3, 1])
        assert v.indices["Position"] == 3
        np.testing.assert_array_equal(v.spectrum_data, flat[3])


@pytest.mark.parametrize("name", ["simulated_STEM_Image.h5", "AFM_Force_Curve.h5"])
def test_real_files(tmp_path, name):
    from conftest import real_file

    path = tmp_path / name
    shutil.copyfile(real_file(name), path)
    with usidgpu.open(path) as f:
        m = f.main_datasets()[0]
        v = m.visualize(interactive=False)
        nd = m.to_ndim()
        if name.startswith("simulated"):  # X listed first and fastest: the image rows are Y
            assert v.image_axes == ("Y", "X")
            v.set(X=10, Y=200)
            np.testing.assert_array_equal(v.image_data, nd[:, :, 0].T)
            assert v.spectrum_data.tolist() == [nd[10, 200, 0]]
            assert v.ax_map.get_xlabel() == "X (nm)"
        else:  # one position, a 2045-point force curve in m, shown in µm / nm
            assert v.map_kind == "line"
            v.set(Z=100)
            np.testing.assert_array_equal(v.spectrum_data, nd[0])
            assert v.ax_spectrum.get_xlabel() == "Z (µm)"
            assert v.ax_spectrum.get_ylabel() == "Deflection (nm)"
        _check(m, v)
