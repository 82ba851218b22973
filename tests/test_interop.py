"""xarray / dask views of Main datasets, and files exchanged with pyUSID and HyperSpy (rosettasciio)."""

from __future__ import annotations

import pickle
import shutil
import warnings

import h5py
import numpy as np
import pytest

import usidgpu
from usidgpu import Dimension, NotAGridError

da = pytest.importorskip("dask.array")
xr = pytest.importorskip("xarray")
dask = pytest.importorskip("dask")

LABELS = ["Y", "X", "Z", "Bias", "Cycle"]
UNITS = ["nm", "µm", "Å", "V", ""]

#: (position sizes, spectroscopic sizes) — 1 to 3 position and 1 to 2 spectroscopic dims
SHAPES = [
    ((5,), (7,)),
    ((4, 6), (1,)),
    ((3, 4), (5,)),
    ((1,), (6, 3)),
    ((2, 3, 4), (5,)),
    ((3, 5), (4, 2)),
    ((2, 1, 3), (3, 2)),
]


def _write(path, pos_sizes, spec_sizes, dim_order="slow_to_fast", dtype=np.float32, chunks=(2, 3), seed=0):
    rng = np.random.default_rng(seed)
    sizes = list(pos_sizes) + list(spec_sizes)
    dims = [
        Dimension(LABELS[i], UNITS[i], np.round(np.linspace(-1, 2, n) * (i + 1), 3) if n > 1 else [0.5])
        for i, n in enumerate(sizes)
    ]
    n_pos = int(np.prod(pos_sizes))
    data = rng.standard_normal((n_pos, int(np.prod(spec_sizes))))
    if np.dtype(dtype).kind == "c":
        data = data + 1j * rng.standard_normal(data.shape)
    data = data.astype(dtype)
    chunks = tuple(min(c, n) for c, n in zip(chunks, data.shape))
    with h5py.File(path, "w") as f:
        usidgpu.write_main(
            f.create_group("Measurement_000/Channel_000"),
            "Raw_Data",
            data,
            "Current",
            "nA",
            dims[: len(pos_sizes)],
            dims[len(pos_sizes) :],
            dim_order=dim_order,
            chunks=chunks,
        )
    return path


def _boundaries(chunks):
    return np.cumsum((0,) + tuple(chunks))


def _check_views(m):
    nd = m.to_ndim()
    flat = m[:]
    # 2-D dask: as stored, chunk edges on the file's chunk edges
    d2 = m.to_dask()
    assert d2.shape == m.shape and d2.dtype == m.dtype
    np.testing.assert_array_equal(d2.compute(), flat)
    if m.chunks:
        for axis in (0, 1):
            edges = _boundaries(d2.chunks[axis])[:-1]
            assert np.all(edges % m.chunks[axis] == 0), (d2.chunks, m.chunks)
    # n-d dask: shaped like to_ndim, also when sliced (dask fuses the slicing into the reads)
    dn = m.to_dask(ndim=True)
    assert dn.shape == m.nd_shape == nd.shape
    np.testing.assert_array_equal(dn.compute(), nd)
    np.testing.assert_array_equal(dn[..., 0].compute(), nd[..., 0])
    np.testing.assert_array_equal(dn[::-1, ..., ::2].compute(), nd[::-1, ..., ::2])
    if nd.ndim > 2:
        np.testing.assert_array_equal(dn[:, -1, ..., 1:].compute(), nd[:, -1, ..., 1:])
    # xarray: named dims in file order, coordinates with units, quantity and units on the array
    x = m.to_xarray()
    assert isinstance(x.data, da.Array)  # lazy
    assert list(x.dims) == m.dim_names
    for d in m.dims:
        np.testing.assert_array_equal(x[d.name].values, d.values)
        assert x[d.name].attrs["units"] == d.units
    assert x.name == m.quantity and x.attrs["units"] == m.units and x.attrs["quantity"] == m.quantity
    np.testing.assert_array_equal(x.values, nd)
    eager = m.to_xarray(lazy=False)
    assert isinstance(eager.data, np.ndarray)
    np.testing.assert_array_equal(eager.values, nd)
    # label-based selection agrees with sel()
    first = m.dims[0]
    np.testing.assert_array_equal(x.sel({first.name: first.values[-1]}).values, m.sel(**{first.name: -1}))


@pytest.mark.parametrize("pos_sizes,spec_sizes", SHAPES)
@pytest.mark.parametrize("dim_order", ["slow_to_fast", "fast_to_slow"])
def test_views_equal_to_ndim(tmp_path, pos_sizes, spec_sizes, dim_order):
    path = _write(tmp_path / "a.h5", pos_sizes, spec_sizes, dim_order)
    with usidgpu.open(path) as f, dask.config.set({"array.chunk-size": "32B"}):  # many chunks
        m = f.main_datasets()[0]
        _check_views(m)
        dn = m.to_dask(ndim=True)
        if m.n_positions > 4:
            assert dn.npartitions > 1


@pytest.mark.parametrize("dtype", [np.complex64, np.int16, np.float64])
def test_other_dtypes(tmp_path, dtype):
    path = _write(tmp_path / "c.h5", (3, 4), (5,), dtype=dtype)
    with usidgpu.open(path) as f:
        _check_views(f.main_datasets()[0])


def test_compound_dtype(tmp_path):
    comp = np.dtype([("Amplitude", np.float32), ("Phase", np.float32)])
    data = np.zeros((6, 4), comp)
    data["Amplitude"] = np.arange(24).reshape(6, 4)
    data["Phase"] = -data["Amplitude"]
    with h5py.File(tmp_path / "c.h5", "w") as f:
        usidgpu.write_main(
            f.create_group("M"),
            "Raw_Data",
            data,
            "Response",
            "a.u.",
            [Dimension("X", "nm", 6)],
            [Dimension("F", "Hz", 4)],
        )
    with usidgpu.open(tmp_path / "c.h5") as f:
        m = f.main_datasets()[0]
        out = m.to_dask(ndim=True).compute()
        assert out.dtype == comp
        np.testing.assert_array_equal(out, m.to_ndim())
        np.testing.assert_array_equal(m.to_xarray().values["Phase"], -data["Amplitude"])


def test_chunks_options_and_file_chunks(tmp_path):
    path = _write(tmp_path / "k.h5", (6, 8), (10,), chunks=(4, 5))
    with usidgpu.open(path) as f:
        m = f.main_datasets()[0]
        assert m.to_dask(chunks="file").chunks == ((4,) * 12, (5, 5))
        with dask.config.set({"array.chunk-size": "400B"}):
            d = m.to_dask()
        assert all(c % 4 == 0 for c in d.chunks[0][:-1]) and len(d.chunks[0]) > 1
        dn = m.to_dask(ndim=True, chunks=(16, 10))
        # 16 rows per chunk = 2 whole rows of the fast position dim (8)
        assert dn.chunks[:2] == ((2, 2, 2), (8,))
        np.testing.assert_array_equal(dn.compute(), m.to_ndim())


def test_dask_array_pickles(tmp_path):
    """Distributed schedulers pickle the graph: the source reopens the file by name."""
    path = _write(tmp_path / "p.h5", (3, 4), (5,))
    with usidgpu.open(path) as f:
        m = f.main_datasets()[0]
        nd = m.to_ndim()
        dn = pickle.loads(pickle.dumps(m.to_dask(ndim=True)))
        d2 = pickle.loads(pickle.dumps(m.to_dask()))
    np.testing.assert_array_equal(dn.compute(), nd)
    np.testing.assert_array_equal(d2.compute().reshape(nd.shape), nd)


def test_dask_follows_a_reopened_file(tmp_path):
    path = _write(tmp_path / "r.h5", (3, 4), (5,))
    f = usidgpu.open(path)
    m = f.main_datasets()[0]
    dn = m.to_dask(ndim=True)
    nd = m.to_ndim()
    f.close()  # MainDataset reopens its file read-only on the next read
    np.testing.assert_array_equal(dn.compute(), nd)


# ------------------------------------------------------------------ real files


def _copy(name, tmp_path):
    from conftest import real_file

    src = real_file(name)
    dst = tmp_path / name
    shutil.copyfile(src, dst)
    return dst


@pytest.mark.parametrize("name", ["simulated_STEM_Image.h5", "chip.h5", "AFM_Force_Curve.h5"])
def test_real_files(tmp_path, name):
    path = _copy(name, tmp_path)
    with usidgpu.open(path) as f, dask.config.set({"array.chunk-size": "16KiB"}):
        for m in f.main_datasets():
            _check_views(m)


def test_sparse_positions(tmp_path):
    path = _copy("sparse_sampling.h5", tmp_path)
    with usidgpu.open(path) as f:
        m = f["/Measurement_000/Channel_000/Raw_Data"]
        assert not m.pos_layout.is_grid
        with pytest.raises(NotAGridError):
            m.to_dask(ndim=True)
        np.testing.assert_array_equal(m.to_dask().compute(), m[:])
        x = m.to_xarray()
        assert x.dims == ("Position", "Frequency")
        table = m.h5_pos_vals[()]
        for j, d in enumerate(m.pos_dims):
            assert x[d.name].dims == ("Position",)
            np.testing.assert_array_equal(x[d.name].values, table[:, j])
            assert x[d.name].attrs["units"] == d.units
        assert x["Frequency"].attrs["units"] == "kHz"
        np.testing.assert_array_equal(x.values, m[:])
        np.testing.assert_array_equal(x.isel(Position=[5, 1], Frequency=2).values, m[:][[5, 1], 2])
        np.testing.assert_array_equal(m.to_xarray(lazy=False).values, m[:])


# ------------------------------------------------------------------ pyUSID both ways


def test_usidgpu_file_opens_in_pyusid(tmp_path, pyusid):
    path = _write(tmp_path / "ours.h5", (3, 4), (5, 2))
    with usidgpu.open(path) as f:
        m = f.main_datasets()[0]
        x = m.to_xarray(lazy=False)
    with h5py.File(path, "r") as h, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        u = pyusid.USIDataset(h["/Measurement_000/Channel_000/Raw_Data"])
        assert list(u.pos_dim_labels) + list(u.spec_dim_labels) == list(x.dims)
        assert list(u.pos_dim_sizes) + list(u.spec_dim_sizes) == list(x.shape)
        np.testing.assert_array_equal(np.asarray(u.get_n_dim_form()), x.values)
        for name in u.pos_dim_labels:
            np.testing.assert_array_equal(u.get_pos_values(name), x[name].values)
        for name in u.spec_dim_labels:
            np.testing.assert_array_equal(u.get_spec_values(name), x[name].values)
        units = [s.decode() if isinstance(s, bytes) else str(s) for s in u.h5_pos_inds.attrs["units"]]
        assert units == [x[n].attrs["units"] for n in u.pos_dim_labels]


@pytest.mark.parametrize("slow_to_fast", [True, False])
def test_pyusid_file_opens_in_usidgpu(tmp_path, pyusid, slow_to_fast):
    rng = np.random.default_rng(1)
    pos = [Dimension("Y", "µm", [0, 0.5, 1.0]), Dimension("X", "µm", np.linspace(0, 3, 4))]
    spec = [Dimension("Cycle", "", 2), Dimension("Bias", "V", np.linspace(-2, 2, 5))]
    data = rng.standard_normal((3, 4, 2, 5)).astype(np.float32)
    listed_pos, listed_spec = (pos, spec) if slow_to_fast else (pos[::-1], spec[::-1])
    path = tmp_path / "theirs.h5"
    with h5py.File(path, "w") as f, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pyusid.hdf_utils.write_main_dataset(
            f.create_group("Measurement_000/Channel_000"),
            data.reshape(12, 10),
            "Raw_Data",
            "Current",
            "pA",
            [pyusid.Dimension(d.name, d.units, d.values) for d in listed_pos],
            [pyusid.Dimension(d.name, d.units, d.values) for d in listed_spec],
            slow_to_fast=slow_to_fast,
        )
        u = pyusid.USIDataset(f["/Measurement_000/Channel_000/Raw_Data"])
        theirs = np.asarray(u.get_n_dim_form())
        their_dims = list(u.pos_dim_labels) + list(u.spec_dim_labels)
    with usidgpu.open(path) as f:
        m = f.main_datasets()[0]
        x = m.to_xarray()
        assert list(x.dims) == their_dims
        np.testing.assert_array_equal(x.values, theirs)
        np.testing.assert_array_equal(m.to_dask(ndim=True).compute(), theirs)
        # the same physical values whatever the column order
        np.testing.assert_array_equal(x.transpose("Y", "X", "Cycle", "Bias").values, data)
        for d in pos + spec:
            np.testing.assert_allclose(x[d.name].values, d.values, rtol=1e-6)
            assert x[d.name].attrs["units"] == d.units
        assert (x.name, x.attrs["units"]) == ("Current", "pA")


# ------------------------------------------------------------------ HyperSpy / rosettasciio both ways


@pytest.fixture(scope="module")
def rsciio_usid():
    from conftest import import_pyusid

    try:
        import_pyusid()  # NumPy-2 shim pyUSID needs; rosettasciio's USID plugin uses pyUSID
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from rsciio import usid
    except ImportError as exc:
        pytest.skip(f"rosettasciio's USID plugin is unavailable: {exc}")
    return usid


def _hs_axes_match(axes, m):
    """rosettasciio drops size-1 dims and lists the rest in to_ndim() order, uniform scale/offset."""
    kept = [d for d in m.dims if d.size > 1]
    assert [a["name"] for a in axes] == [d.name for d in kept]
    for a, d in zip(axes, kept):
        assert str(a["units"]) == d.units
        assert a["size"] == d.size
        np.testing.assert_allclose(a["offset"] + a["scale"] * np.arange(a["size"]), d.values, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("pos_sizes,spec_sizes", [((3, 4), (5, 2)), ((6,), (4,)), ((4, 5), (1,))])
def test_usidgpu_file_opens_in_rsciio(tmp_path, rsciio_usid, pos_sizes, spec_sizes):
    path = _write(tmp_path / "ours.h5", pos_sizes, spec_sizes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        (sig,) = rsciio_usid.file_reader(str(path))
    with usidgpu.open(path) as f:
        m = f.main_datasets()[0]
        x = m.to_xarray(lazy=False)
        np.testing.assert_array_equal(sig["data"], x.values.squeeze())
        _hs_axes_match(sig["axes"], m)
        assert sig["original_metadata"]["quantity"] == m.quantity
        assert sig["original_metadata"]["units"] == m.units


def test_usidgpu_file_opens_in_hyperspy(tmp_path, rsciio_usid):
    hs = pytest.importorskip("hyperspy.api")
    path = _write(tmp_path / "ours.h5", (3, 4), (5,))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = hs.load(str(path), reader="USID")
    with usidgpu.open(path) as f:
        m = f.main_datasets()[0]
        np.testing.assert_array_equal(s.data, m.to_ndim())
        # HyperSpy lists axes in reverse array order; rosettasciio marks none as navigation
        names = [ax.name for ax in s.axes_manager._axes]
        assert names == m.dim_names
        for ax, d in zip(s.axes_manager._axes, m.dims):
            assert ax.units == d.units
            np.testing.assert_allclose(ax.axis, d.values, rtol=1e-5, atol=1e-6)


def test_hyperspy_file_opens_in_usidgpu(tmp_path, rsciio_usid):
    hs = pytest.importorskip("hyperspy.api")
    rng = np.random.default_rng(2)
    data = rng.random((3, 4, 6)).astype(np.float32)
    s = hs.signals.Signal1D(data)
    # data axes: Y (slowest), X, Energy (fastest; the signal axis)
    for ax, (name, units, scale, offset) in zip(
        s.axes_manager._axes, [("Y", "nm", 2.0, 0.0), ("X", "µm", 0.5, 1.0), ("Energy", "eV", 0.25, 350.0)]
    ):
        ax.name, ax.units, ax.scale, ax.offset = name, units, scale, offset
    path = tmp_path / "hs.h5"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s.save(str(path), file_format="USID")
    assert usidgpu.validate(path) == []
    with usidgpu.open(path) as f:
        m = f.main_datasets()[0]
        assert [d.name for d in m.pos_dims] == ["Y", "X"]  # navigation axes are the positions
        assert [d.name for d in m.spec_dims] == ["Energy"]  # signal axes the spectroscopic dims
        x = m.to_xarray()
        np.testing.assert_array_equal(x.values, data)
        for ax in s.axes_manager._axes:
            assert x[ax.name].attrs["units"] == ax.units
            np.testing.assert_allclose(x[ax.name].values, ax.axis, rtol=1e-6)


def test_rsciio_writer_image_stack(tmp_path, rsciio_usid):
    """A 2-D signal with one navigation axis (an image stack) through rosettasciio's writer."""
    data = np.arange(2 * 5 * 7, dtype=np.float32).reshape(2, 5, 7)
    axes = [
        {"name": "Frame", "units": "s", "size": 2, "scale": 0.5, "offset": 0.0, "navigate": True},
        {"name": "Ky", "units": "1/nm", "size": 5, "scale": 0.1, "offset": -0.2, "navigate": False},
        {"name": "Kx", "units": "1/nm", "size": 7, "scale": 0.1, "offset": -0.3, "navigate": False},
    ]
    path = tmp_path / "stack.h5"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rsciio_usid.file_writer(str(path), {"data": data, "axes": axes, "metadata": {}, "original_metadata": {}})
    with usidgpu.open(path) as f:
        m = f.main_datasets()[0]
        x = m.to_xarray()
        assert list(x.dims) == ["Frame", "Ky", "Kx"]
        np.testing.assert_array_equal(x.values, data)
        for a in axes:
            np.testing.assert_allclose(x[a["name"]].values, a["offset"] + a["scale"] * np.arange(a["size"]), atol=1e-6)
            assert x[a["name"]].attrs["units"] == a["units"]
