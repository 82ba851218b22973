"""MainDataset: n-d views, selection and reduction against NumPy on the known truth; writing.

The reading tests run on HDF5 and on the zarr copy made by ``usidgpu convert`` (the ``storage``
fixture of storage_fixtures.py); the writing tests and the HDF5-specific ones stay HDF5-only."""

from __future__ import annotations

import warnings

import h5py
import numpy as np
import pytest
import storage_fixtures
from helpers import make_file
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import usidgpu
from usidgpu import Dimension

storage = storage_fixtures.storage  # the fixture: each reading test on HDF5, then on its zarr copy

POS = [Dimension("Y", "µm", np.arange(4) * 0.25), Dimension("X", "nm", np.arange(5) * 2.0)]
SPEC = [Dimension("Cycle", "", 3), Dimension("Bias", "V", np.linspace(-1, 1, 6))]
SHAPE = (4, 5, 3, 6)


@pytest.fixture(scope="module")
def ds_files(tmp_path_factory):
    """The test file of each dimension order (HDF5, and its zarr copy), written once per module:
    the tests only read it."""
    files = {}

    def get(order, storage):
        if (order, storage.kind) not in files:
            if order not in files:
                data = np.random.default_rng(3).standard_normal(SHAPE).astype(np.float32)
                files[order] = tmp_path_factory.mktemp(order) / "d.h5"
                make_file(files[order], data=data, pos=POS, spec=SPEC, dim_order=order)
            files[(order, storage.kind)] = storage.path(files[order])
        return files[(order, storage.kind)]

    return get


def _open_ds(path, order):
    f = usidgpu.open(path)
    m = f.main_datasets()[0]
    # the truth with its axes in file order (what to_ndim returns)
    data = np.random.default_rng(3).standard_normal(SHAPE).astype(np.float32)
    if order == "fast_to_slow":
        truth = np.transpose(data, (1, 0, 3, 2))
        names = ["X", "Y", "Bias", "Cycle"]
    else:
        truth, names = data, ["Y", "X", "Cycle", "Bias"]
    return f, (m, truth, names)


@pytest.fixture(params=["slow_to_fast", "fast_to_slow"])
def ds(request, storage, ds_files):
    f, value = _open_ds(ds_files(request.param, storage), request.param)
    yield value
    f.close()


@pytest.fixture(params=["slow_to_fast", "fast_to_slow"])
def ds_h5(request, tmp_path):
    """The same dataset in HDF5 only, for pyUSID (which reads HDF5 through h5py only)."""
    path = tmp_path / "d.h5"
    data = np.random.default_rng(3).standard_normal(SHAPE).astype(np.float32)
    make_file(path, data=data, pos=POS, spec=SPEC, dim_order=request.param)
    f, value = _open_ds(path, request.param)
    yield value
    f.close()


def test_to_ndim_and_metadata(ds):
    m, truth, names = ds
    assert m.dim_names == names
    assert m.nd_shape == truth.shape
    np.testing.assert_array_equal(m.to_ndim(), truth)
    assert m.quantity == "Current" and m.units == "nA"
    assert m.dim("Bias").units == "V" and m.dim("Y").units == "µm"
    with pytest.raises(KeyError, match="no dimension 'Q'"):
        m.dim("Q")
    assert "Raw_Data" in repr(m) and m.n_positions == 20 and m.n_spectral == 18


KEYS = st.one_of(
    st.integers(-3, 2),
    st.builds(
        slice,
        st.one_of(st.none(), st.integers(0, 2)),
        st.one_of(st.none(), st.integers(3, 6)),
        st.one_of(st.none(), st.integers(1, 2)),
    ),
    st.lists(st.integers(0, 2), min_size=1, max_size=3),
)


@given(st.dictionaries(st.sampled_from(["Y", "X", "Cycle", "Bias"]), KEYS, max_size=4))
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_sel_equals_numpy_indexing(ds, selection):
    m, truth, names = ds
    index = tuple(selection.get(n, slice(None)) for n in names)
    expected = truth
    # apply one axis at a time so list selections act independently (outer indexing)
    for axis in reversed(range(len(names))):
        key = index[axis]
        expected = (
            np.take(expected, key, axis=axis)
            if not isinstance(key, slice)
            else expected[(slice(None),) * axis + (key,)]
        )
    np.testing.assert_array_equal(m.sel(**selection), expected)


# HDF5-only: pyUSID, the oracle here, reads HDF5 files through h5py only
def test_sel_agrees_with_pyusid_slice(ds_h5, pyusid):
    m, truth, names = ds_h5
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        u = pyusid.USIDataset(m.h5)
        for selection in ({"Bias": 2}, {"X": slice(1, 4), "Cycle": 0}, {"Y": [0, 2], "Bias": slice(0, 6, 2)}):
            theirs, ok = u.slice(selection)
            assert ok is True
            np.testing.assert_array_equal(np.squeeze(m.sel(**selection)), np.squeeze(np.asarray(theirs)))


def test_sel_errors(ds):
    m, _truth, _ = ds
    with pytest.raises(KeyError, match="no dimension"):
        m.sel(Q=1)
    with pytest.raises(IndexError, match="out of range"):
        m.sel(Bias=6)
    with pytest.raises(IndexError, match="empty"):
        m.sel(Bias=slice(3, 3))
    with pytest.raises(TypeError):
        m.sel(Bias=1.5)


def test_sel_reads_scattered_rows_through_streaming(ds, monkeypatch):
    from usidgpu.usid import selection as sel_mod

    m, truth, names = ds
    monkeypatch.setattr(sel_mod, "MAX_ROW_RUNS", 1)
    monkeypatch.setattr(sel_mod, "MAX_COL_RUNS", 1)
    key = {names[1]: [0, 3], names[3]: [0, 2]}
    idx = [key.get(n, slice(None)) for n in names]
    expected = truth[idx[0]][:, idx[1]][:, :, idx[2]][:, :, :, idx[3]]
    np.testing.assert_array_equal(m.sel(**key), expected)


@pytest.mark.parametrize("prefetch", [True, False])
def test_blocks_cover_the_rows_in_order(ds, prefetch):
    m, truth, names = ds
    # as stored: rows Y-major (X fastest), columns Cycle-major (Bias fastest), whatever order the
    # ancillary datasets list the dimensions in
    raw = (truth if names[0] == "Y" else truth.transpose(1, 0, 3, 2)).reshape(m.shape)
    np.testing.assert_array_equal(m[()], raw)
    budget = 3 * 18 * 4  # a few positions per block
    blocks = [(b.start, b.stop, b.data.copy()) for b in m.blocks(budget=budget, prefetch=prefetch)]
    assert len(blocks) > 2 and blocks[0][0] == 0 and blocks[-1][1] == m.n_positions
    assert all(a[1] == b[0] for a, b in zip(blocks, blocks[1:]))  # contiguous, in order
    assert max(b - a for a, b, _ in blocks) == m.block_plan(budget=budget, prefetch=prefetch).rows_per_block
    np.testing.assert_array_equal(np.concatenate([d for _a, _b, d in blocks]), raw)
    part = list(m.blocks(budget=budget, copy=True, start=5, stop=13))
    assert part[0].start == 5 and part[-1].stop == 13
    np.testing.assert_array_equal(np.concatenate([b.data for b in part]), raw[5:13])


REDUCTIONS = ["mean", "sum", "min", "max", "var", "std", np.mean, np.amax, np.nanstd]


@pytest.mark.parametrize("func", REDUCTIONS)
@pytest.mark.parametrize("dims", [["Bias"], ["X"], ["Y", "X"], ["X", "Cycle"], ["Y", "X", "Cycle", "Bias"]])
def test_reduce_equals_numpy(ds, func, dims):
    m, truth, names = ds
    axes = tuple(names.index(d) for d in dims)
    np_func = getattr(np, func) if isinstance(func, str) else func
    expected = np_func(truth.astype(np.float64), axis=axes)
    got = m.reduce(dims, func, budget=2 * 18 * 4 * 6)  # several blocks
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-9)


def test_reduce_nan_variants_and_callables(tmp_path, storage):
    data = np.random.default_rng(5).standard_normal((4, 5, 6)).astype(np.float32)
    data[1, 2, :] = np.nan
    data[0, :, 3] = np.nan
    make_file(tmp_path / "n.h5", data=data, pos=POS, spec=[Dimension("E", "eV", 6)])
    with storage.open(tmp_path / "n.h5") as f:
        m = f.main_datasets()[0]
        for name in ("nanmean", "nansum", "nanmin", "nanmax", "nanvar"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                expected = getattr(np, name)(data.astype(np.float64), axis=(0, 1))
            np.testing.assert_allclose(m.reduce(["Y", "X"], name, budget=300), expected, rtol=1e-6)
        assert np.isnan(m.reduce(["Y", "X"], "mean")).any()  # plain mean propagates NaN like NumPy
        np.testing.assert_allclose(m.reduce("E", np.median), np.median(data, axis=2))
        with pytest.raises(ValueError, match="cannot be streamed over position"):
            m.reduce("X", np.median)


def test_reduce_complex(tmp_path, storage):
    rng = np.random.default_rng(7)
    data = (rng.standard_normal((4, 5, 6)) + 1j * rng.standard_normal((4, 5, 6))).astype(np.complex64)
    make_file(tmp_path / "c.h5", data=data, pos=POS, spec=[Dimension("F", "kHz", 6)])
    with storage.open(tmp_path / "c.h5") as f:
        m = f.main_datasets()[0]
        np.testing.assert_allclose(m.reduce(["Y"], "mean"), data.mean(axis=0), rtol=1e-5)
        np.testing.assert_allclose(m.reduce(["Y", "F"], "var"), data.var(axis=(0, 2)), rtol=1e-5)
        with pytest.raises(TypeError, match="complex"):
            m.reduce("Y", "max")


def test_var_is_stable_for_large_offsets(tmp_path, storage):
    data = (1e4 + np.random.default_rng(2).standard_normal((4, 5, 6))).astype(np.float32)
    make_file(tmp_path / "o.h5", data=data, pos=POS, spec=[Dimension("E", "eV", 6)])
    with storage.open(tmp_path / "o.h5") as f:
        got = f.main_datasets()[0].reduce(["Y", "X"], "std", budget=600)
    np.testing.assert_allclose(got, data.astype(np.float64).std(axis=(0, 1)), rtol=1e-4)


# ------------------------------------------------------------------------------- writing
# HDF5-only from here to test_default_chunks_are_whole_positions: these tests write (zarr stores
# are read-only) or test HDF5 storage options (filters, chunks).
def test_single_position_and_single_point(tmp_path, pyusid):
    path = tmp_path / "s.h5"
    spectrum = np.linspace(0, 1, 7, dtype=np.float32)
    with h5py.File(path, "w") as f:
        a = usidgpu.write_main(
            f,
            "Spectrum",
            spectrum,
            "Deflection",
            "m",
            [Dimension("X", "a. u.", 1)],
            [Dimension("Z", "m", np.linspace(5, 6, 7))],
        )
        b = usidgpu.write_main(
            f.create_group("img"),
            "Image",
            np.arange(12.0).reshape(3, 4),
            "Height",
            "m",
            [Dimension("Y", "nm", 3), Dimension("X", "nm", 4)],
            [Dimension("arb", "a.u.", 1)],
        )
        assert a.shape == (1, 7) and a.nd_shape == (1, 7)
        assert b.shape == (12, 1) and b.nd_shape == (3, 4, 1)
        np.testing.assert_array_equal(a.to_ndim()[0], spectrum)
        np.testing.assert_array_equal(b.sel(arb=0), np.arange(12.0).reshape(3, 4))
        assert pyusid.USIDataset(f["Spectrum"]).get_n_dim_form().shape == (1, 7)
        assert pyusid.USIDataset(f["img/Image"]).get_n_dim_form().shape == (3, 4, 1)
    assert usidgpu.validate(path) == []


def test_incremental_writing_and_reuse_of_ancillaries(tmp_path):
    path = tmp_path / "inc.h5"
    with h5py.File(path, "w") as f:
        g = f.create_group("Measurement_000/Channel_000")
        m = usidgpu.write_main(g, "Raw_Data", None, "Counts", "", POS, SPEC, dtype=np.uint16)
        assert m.dtype == np.uint16 and m.chunks is not None
        full = np.arange(20 * 18, dtype=np.uint16).reshape(20, 18)
        for start in range(0, 20, 7):
            m.write_rows(start, full[start : start + 7])
        np.testing.assert_array_equal(m[()], full)
        # a second channel reuses the first one's ancillary datasets (same dims: reused by name)
        m2 = usidgpu.write_main(g, "Raw_Data_2", full * 2, "Counts", "", POS, SPEC)
        assert m2.h5_pos_inds == m.h5_pos_inds and m2.h5_spec_vals == m.h5_spec_vals
        # or explicitly through a MainDataset
        m3 = usidgpu.write_main(
            f.create_group("Other"), "Derived", full[:, :1], "Mean", "", m, [Dimension("arb", "", 1)]
        )
        assert m3.h5_pos_inds == m.h5_pos_inds
        with pytest.raises(usidgpu.NotUSIDError, match="other dimensions"):
            usidgpu.write_main(g, "Bad", full[:, :6], "C", "", POS, [Dimension("Bias", "V", 6)])
        with pytest.raises(ValueError, match="rows"):
            m.write_rows(18, full[:5])
        with pytest.raises(ValueError, match="block must have shape"):
            m.write_rows(0, full[:, :3])


def test_write_errors(tmp_path):
    with h5py.File(tmp_path / "e.h5", "w") as f:
        with pytest.raises(ValueError, match="do not fit 20 positions"):
            usidgpu.write_main(f, "A", np.zeros((21, 18)), "q", "u", POS, SPEC)
        with pytest.raises(ValueError, match="describe 20 entries but the data have 21"):
            usidgpu.write_main(f, "A", (21, 18), "q", "u", POS, SPEC)
        with pytest.raises(ValueError, match="do not fit"):
            usidgpu.write_main(f, "A", np.zeros((5, 7)), "q", "u", POS, SPEC)
        with pytest.raises(TypeError, match="Dimensions"):
            usidgpu.write_main(f, "A", np.zeros((20, 18)), "q", "u", ["Y", "X"], SPEC)
        with pytest.warns(UserWarning, match="contains '-'"):
            m = usidgpu.write_main(f, "My-Data", np.zeros((20, 18)), "q", "u", POS, SPEC)
        assert m.name == "/My_Data"
        with pytest.raises(usidgpu.NotUSIDError, match="already holds"):
            usidgpu.write_main(f, "My_Data", np.zeros((20, 18)), "q", "u", POS, SPEC)
    make_file(tmp_path / "ro.h5")
    with usidgpu.open(tmp_path / "ro.h5") as f:
        with pytest.raises(usidgpu.NotUSIDError, match="read-only"):
            usidgpu.write_main(f, "X", np.zeros((20, 18)), "q", "u", POS, SPEC)


@pytest.mark.parametrize("compression", ["gzip", "lzf", 6, "zstd", "blosc"])
def test_compression_options(tmp_path, compression):
    if compression in ("zstd", "blosc"):
        pytest.importorskip("hdf5plugin")
    data = np.tile(np.arange(18, dtype=np.float32), (20, 1))
    make_file(tmp_path / "z.h5", data=data, pos=POS, spec=SPEC, compression=compression)
    with usidgpu.open(tmp_path / "z.h5") as f:
        m = f.main_datasets()[0]
        assert m.h5.id.get_create_plist().get_nfilters() >= 1
        np.testing.assert_array_equal(m[()], data)
        np.testing.assert_array_equal(np.concatenate([b.data for b in m.blocks(copy=True)]), data)


def test_unknown_compression(tmp_path):
    with pytest.raises(usidgpu.NotUSIDError, match="compression"):
        make_file(tmp_path / "u.h5", pos=POS, spec=SPEC, compression="nonesuch")


def test_dask_array_is_stored_blockwise(tmp_path):
    da = pytest.importorskip("dask.array")
    data = da.random.default_rng(0).random((20, 18), chunks=(6, 18)).astype(np.float32)
    make_file(tmp_path / "k.h5", data=data, pos=POS, spec=SPEC)
    with usidgpu.open(tmp_path / "k.h5") as f:
        np.testing.assert_array_equal(f.main_datasets()[0][()], data.compute())


def test_default_chunks_are_whole_positions():
    from usidgpu.usid.write import default_chunks

    assert default_chunks((10**6, 1024), 4) == (256, 1024)
    assert default_chunks((10, 10**7), 4) == (1, 262144)
    assert default_chunks((3, 5), 8) == (3, 5)


# ------------------------------------------------------------------------------- reading again
def _one_side(tmp_path, data, storage, name="r.h5"):
    make_file(
        tmp_path / name, data=data, pos=[Dimension("X", "m", data.shape[0])], spec=[Dimension("B", "V", data.shape[1])]
    )
    return storage.open(tmp_path / name)


def test_var_per_cell_with_offsets_and_infinities(tmp_path, storage):
    rng = np.random.default_rng(0)
    d = rng.standard_normal((3, 4))
    d[1:] += 1e8  # cells at very different levels must not share a shift
    with _one_side(tmp_path, d, storage, "a.h5") as f:
        m = f.main_datasets()[0]
        np.testing.assert_allclose(m.reduce("B", "var", budget=400), d.var(axis=1), rtol=1e-6)
        with pytest.raises(usidgpu.BudgetError, match="200 B is too small for reduce"):
            m.reduce("B", "var", budget=200)
    d = rng.standard_normal((3, 4))
    d[0, 0] = np.inf  # spoils its own cell only, as in NumPy
    with _one_side(tmp_path, d, storage, "b.h5") as f:
        with np.errstate(invalid="ignore"):
            np.testing.assert_array_equal(np.isnan(f.main_datasets()[0].reduce("B", "std")), np.isnan(d.std(axis=1)))
            np.testing.assert_allclose(f.main_datasets()[0].reduce("B", "std")[1:], d.std(axis=1)[1:])


def test_reduce_keeps_numpy_dtypes_and_exact_integers(tmp_path, storage):
    big = np.array([[2**60, 2**60 + 1], [3, -(2**61)]], dtype=np.int64)
    with _one_side(tmp_path, big, storage, "i.h5") as f:
        m = f.main_datasets()[0]
        for func in ("max", "min", "sum"):
            got = m.reduce("X", func, budget=192)
            assert got.dtype == getattr(np, func)(big, axis=0).dtype
            np.testing.assert_array_equal(got, getattr(np, func)(big, axis=0))
        assert m.reduce("X", "mean").dtype == np.float64
    f32 = np.random.default_rng(1).random((5, 3)).astype(np.float32)
    with _one_side(tmp_path, f32, storage, "f.h5") as f:
        m = f.main_datasets()[0]
        for func in ("mean", "sum", "std", "var", "max", "nanmean"):
            assert m.reduce("X", func).dtype == np.float32, func
    u8 = np.arange(15, dtype=np.uint8).reshape(5, 3)
    with _one_side(tmp_path, u8, storage, "u.h5") as f:
        got = f.main_datasets()[0].reduce("X", "max")
        assert got.dtype == np.uint8 and (got == u8.max(axis=0)).all()
