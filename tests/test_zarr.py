"""USID in zarr: h5 → zarr → h5 round trips, usidgpu.open on a zarr store, ``usidgpu convert``."""

from __future__ import annotations

import shutil
import warnings

import h5py
import numpy as np
import pytest
from conftest import real_file
from helpers import make_file

import usidgpu
from usidgpu import Dimension
from usidgpu.cli import main as cli
from usidgpu.core.errors import FileProblem
from usidgpu.storage import convert
from usidgpu.storage.codec import META, dtype_to_json
from usidgpu.storage.convert import h5_to_zarr, zarr_to_h5
from usidgpu.storage.zarr_view import ZarrReference, open_zarr

REAL = ["AFM_Force_Curve.h5", "simulated_STEM_Image.h5", "sparse_sampling.h5", "chip.h5"]
SHO = np.dtype([("amp", "<f4"), ("phase", "<f4"), ("q", "<f8")])


# ------------------------------------------------------------------------------ comparison helpers
def _target(f, ref):
    if isinstance(ref, ZarrReference):
        return ref.path
    return f[ref].name if ref else ""


def _is_region(obj, name):
    return h5py.check_ref_dtype(obj.attrs.get_id(name).dtype) is h5py.RegionReference


def _same_value(fa, a, fb, b):
    """Attribute / element values with numpy semantics; references by target path."""
    if isinstance(a, (h5py.Reference, ZarrReference)):
        return _target(fa, a) == _target(fb, b)
    if isinstance(a, h5py.Empty):
        return isinstance(b, h5py.Empty) and a.dtype == b.dtype
    if type(a) is not type(b):
        return False
    if isinstance(a, np.ndarray) and a.dtype.kind == "O":
        return a.shape == b.shape and all(_same_value(fa, x, fb, y) for x, y in zip(a.reshape(-1), b.reshape(-1)))
    a_arr, b_arr = np.asarray(a), np.asarray(b)
    if a_arr.dtype != b_arr.dtype or a_arr.shape != b_arr.shape:
        return False
    if a_arr.dtype.names is not None or a_arr.dtype.kind not in "fc":
        return a_arr.tobytes() == b_arr.tobytes()
    return np.array_equal(a_arr, b_arr, equal_nan=True)


def _objects(f):
    out = {}
    f.visititems(lambda name, obj: out.__setitem__("/" + name, obj))
    return out


def _links(f):
    out = {}

    def walk(group):
        for key in group:
            link = group.get(key, getlink=True)
            path = group.name.rstrip("/") + "/" + key
            if isinstance(link, h5py.SoftLink):
                out[path] = ("soft", link.path)
            elif isinstance(link, h5py.ExternalLink):
                out[path] = ("external", link.filename, link.path)
            else:
                obj = group[key]
                out[path] = ("hard", obj.name if obj.name != path else None)
                if isinstance(obj, h5py.Group) and obj.name == path:
                    walk(obj)

    walk(f)
    return out


def assert_same_h5(a_path, b_path, allow_region_drop=True):
    """Every object, dataset value (byte for byte), dtype, storage and attribute agrees."""
    with h5py.File(a_path, "r") as fa, h5py.File(b_path, "r") as fb:
        oa, ob = _objects(fa), _objects(fb)
        assert sorted(oa) == sorted(ob)
        assert set(_links(fa)) == set(_links(fb))
        for path in [*oa, "/"]:
            a, b = fa[path], fb[path]
            assert type(a) is type(b), path
            if isinstance(a, h5py.Dataset):
                assert dtype_to_json(a.dtype) == dtype_to_json(b.dtype), path
                assert a.shape == b.shape and a.chunks == b.chunks and a.maxshape == b.maxshape, path
                assert (a.compression, a.compression_opts, a.shuffle, a.fletcher32) == (
                    b.compression,
                    b.compression_opts,
                    b.shuffle,
                    b.fletcher32,
                ), path
                if a.shape is None:
                    assert b.shape is None
                elif a.dtype.kind == "O":
                    assert _same_value(fa, a[()], fb, b[()]), path
                else:
                    assert np.asarray(a[()]).tobytes() == np.asarray(b[()]).tobytes(), path
            names_a = {n for n in a.attrs if not (allow_region_drop and _is_region(a, n))}
            assert names_a == set(b.attrs), path
            for n in names_a:
                ia, ib = a.attrs.get_id(n), b.attrs.get_id(n)
                assert dtype_to_json(ia.dtype) == dtype_to_json(ib.dtype), (path, n)
                assert ia.shape == ib.shape, (path, n)
                if n in ("DIMENSION_LIST", "REFERENCE_LIST"):
                    continue
                assert _same_value(fa, a.attrs[n], fb, b.attrs[n]), (path, n, a.attrs[n], b.attrs[n])


def _mains(path):
    with usidgpu.open(path) as f:
        out = []
        for m in f.main_datasets():
            entry = {
                "name": m.name,
                "shape": m.shape,
                "dtype": m.dtype,
                "quantity": m.quantity,
                "units": m.units,
                "dims": [(d.name, d.units, np.asarray(d.values).tolist()) for d in m.dims],
                "blocks": np.concatenate([b.data.copy() for b in m.blocks(budget="64KB", prefetch=True)]),
                "nd": m.to_ndim() if m.is_grid else None,
                "results": [(r.path, r.tool) for r in f.results_groups(m)],
            }
            np.testing.assert_array_equal(entry["blocks"], m[:, :])
            out.append(entry)
        return out


def assert_same_mains(a, b):
    ma, mb = _mains(a), _mains(b)
    assert [m["name"] for m in ma] == [m["name"] for m in mb]
    assert len(ma) > 0
    for x, y in zip(ma, mb):
        for key in ("shape", "dtype", "quantity", "units", "dims", "results"):
            assert x[key] == y[key], (x["name"], key)
        assert x["blocks"].tobytes() == y["blocks"].tobytes()
        if x["nd"] is None:
            assert y["nd"] is None
        else:
            assert x["nd"].shape == y["nd"].shape and x["nd"].tobytes() == y["nd"].tobytes()


def _problems(path):
    return [str(p) for p in usidgpu.validate(path)]


# ------------------------------------------------------------------------------ a synthetic file
@pytest.fixture(scope="module")
def rich_file(tmp_path_factory):
    """Several Main datasets (Unicode units, complex, compound), a results group and odd objects."""
    path = tmp_path_factory.mktemp("zarr") / "rich.h5"
    pos = [Dimension("Y", "µm", np.arange(3) * 0.5), Dimension("X", "Å", 4)]
    spec = [Dimension("Bias", "V", np.linspace(-1, 1, 5)), Dimension("Cycle", "°", 2)]
    make_file(path, pos=pos, spec=spec, compression="gzip", compression_opts=4)
    rng = np.random.default_rng(1)
    with h5py.File(path, "a") as f:
        g = f.create_group("Measurement_000/Channel_001")
        data = (rng.standard_normal((6, 7)) + 1j * rng.standard_normal((6, 7))).astype(np.complex64)
        usidgpu.write_main(
            g, "Complex", data, "Response", "a.u.", [Dimension("P", "nm", 6)], [Dimension("F", "kHz", 7)]
        )
        sho = np.zeros((5, 4), SHO)
        for field in SHO.names:
            sho[field] = rng.standard_normal((5, 4))
        g2 = f.create_group("Measurement_000/Channel_002")
        usidgpu.write_main(g2, "SHO", sho, "SHO", "", [Dimension("X", "µm", 5)], [Dimension("DC", "V", 4)])
        # a single position: an ordinary dataset
        g3 = f.create_group("Measurement_000/Channel_003")
        usidgpu.write_main(
            g3, "One", rng.standard_normal((1, 3)), "I", "A", [Dimension("X", "m", 1)], [Dimension("t", "s", 3)]
        )
        odd = f.create_group("Å_odd µm")
        odd.create_dataset("scalar", data=np.float64(2.5))
        odd.create_dataset("empty", shape=(0, 3), dtype="f4")
        odd.create_dataset("null", data=h5py.Empty("i2"))
        odd.create_dataset("big_endian", data=np.arange(10, dtype=">i4"), chunks=(4,), shuffle=True, fletcher32=True)
        odd.create_dataset("bools", data=np.array([True, False, True]))
        odd.create_dataset("vlen_text", data=np.array(["µm", "Å", ""], dtype=object), dtype=h5py.string_dtype())
        odd.create_dataset("fixed_text", data=np.array([b"ab", b"cde"]))
        odd.create_dataset("scalar_record", data=np.array((1.0, 2.0, 3.0), SHO))
        odd.create_dataset("resizable", data=np.arange(6.0), maxshape=(None,), chunks=(2,), fillvalue=-1.0)
        main = f["Measurement_000/Channel_000/Raw_Data"]
        refs = odd.create_dataset("refs", shape=(2,), dtype=h5py.ref_dtype)
        refs[0] = main.ref
        refs[1] = f["Measurement_000"].ref
        odd.create_dataset("back\\slash", data=np.arange(3))
        odd.create_dataset("__reserved", data=np.arange(2))
        odd["soft"] = h5py.SoftLink("/Measurement_000/Channel_000/Raw_Data")
        odd["hard"] = odd["scalar"]
        a = odd.attrs
        a["f32"] = np.float32(1.5)
        a["nan"] = np.float64("nan")
        a["inf"] = np.array([np.inf, -np.inf, 1.0])
        a["c"] = np.complex128(1 - 2j)
        a["record"] = np.array((1.0, 2.0, 3.0), SHO)
        a["records"] = sho[0]
        a["labels"] = np.array(["µm".encode(), b"nm"])
        a["vlen_list"] = np.array(["Å", "x"], dtype=h5py.string_dtype())
        a["bytes"] = np.bytes_(b"\xff\x00raw")
        a["text"] = "° Unicode ✓"
        a["empty_attr"] = h5py.Empty("f4")
        a["flag"] = True
        a["ints"] = np.arange(4, dtype=np.uint64)
        a["ref"] = main.ref
        a.create("null_ref", data=h5py.Reference(), dtype=h5py.ref_dtype)
        a["ref_list"] = np.array([main.ref, f["Measurement_000"].ref], dtype=h5py.ref_dtype)
    with usidgpu.open(path) as f:
        usidgpu.svd(f["/Measurement_000/Channel_000/Raw_Data"], 3, device="cpu").write()
    return path


def test_rich_file_round_trip(rich_file, tmp_path):
    store, back = tmp_path / "rich.zarr", tmp_path / "back.h5"
    report = h5_to_zarr(rich_file, store)
    assert report.dropped == [] and report.datasets >= 20 and report.links == 2 and report.bytes > 0
    report_back = zarr_to_h5(store, back)
    assert report_back.dropped == [] and report_back.datasets == report.datasets
    assert report_back.attributes == report.attributes
    assert_same_h5(rich_file, back, allow_region_drop=False)
    names = [m["name"] for m in _mains(rich_file)]
    assert {"/Measurement_000/Channel_002/SHO", "/Measurement_000/Channel_001/Complex"} <= set(names)
    assert "/Measurement_000/Channel_000/Raw_Data-SVD_000/U" in names
    for path in (store, back):
        assert_same_mains(rich_file, path)
        assert _problems(path) == _problems(rich_file)


def test_zarr_store_layout_and_adapter(rich_file, tmp_path):
    """Plain JSON attributes any zarr reader sees; the adapter hands out h5py-like values."""
    import zarr

    store = tmp_path / "rich.zarr"
    h5_to_zarr(rich_file, store)
    z = zarr.open_group(str(store), mode="r")
    raw = z["Measurement_000/Channel_000/Raw_Data"]
    assert raw.attrs["Position_Indices"] == "h5ref:/Measurement_000/Channel_000/Position_Indices"
    assert raw.attrs["quantity"] == "Current" and raw.attrs["units"] == "nA"
    assert z["Measurement_000/Channel_000/Position_Indices"].attrs["units"] == ["µm", "Å"]
    odd = z["Å_odd µm"].attrs
    assert odd["nan"] == "NaN" and odd["c"] == [1.0, -2.0] and odd["null_ref"] == "h5ref:"
    assert raw.chunks == tuple(h5py.File(rich_file)["Measurement_000/Channel_000/Raw_Data"].chunks)
    with open_zarr(store) as f, h5py.File(rich_file, "r") as h:
        assert META not in f["/"].attrs
        for path in (
            "/Å_odd µm",
            "/Measurement_000/Channel_000/Position_Indices",
            "/Measurement_000/Channel_000/Raw_Data",
        ):
            for name in h[path].attrs:
                assert _same_value(h, h[path].attrs[name], f, f[path].attrs[name]), (path, name)
        ref = f["/Å_odd µm"].attrs["ref"]
        assert (
            f[ref] == f["/Measurement_000/Channel_000/Raw_Data"]
            and f[ref].parent.name == "/Measurement_000/Channel_000"
        )
        assert f["/Å_odd µm/soft"].name == "/Measurement_000/Channel_000/Raw_Data"
        assert "back\\slash" in f["/Å_odd µm"] and "__reserved" in f["/Å_odd µm"].keys()
        rec = f["/Å_odd µm/scalar_record"][()]
        assert rec.dtype == SHO and rec["q"] == 3.0
        np.testing.assert_array_equal(f["/Å_odd µm/big_endian"][2:7], np.arange(2, 7))
        assert f["/Å_odd µm/big_endian"].dtype == np.dtype(">i4")
        assert f["/Å_odd µm/null"].shape is None and f["/Å_odd µm/empty"][()].shape == (0, 3)
        sho = f["/Measurement_000/Channel_002/SHO"]
        np.testing.assert_array_equal(sho[1:3, ::2], h["/Measurement_000/Channel_002/SHO"][1:3, ::2])
        seen = []
        f.visititems(lambda name, obj: seen.append(name))
        expected = []
        h.visititems(lambda name, obj: expected.append(name))
        assert seen == expected
        with pytest.raises(OSError, match="read-only"):
            f["/Å_odd µm"].attrs["x"] = 1
        m = usidgpu.MainDataset(f["/Measurement_000/Channel_000/Raw_Data"])
        with pytest.raises(OSError, match="read-only"):
            m.write_rows(0, np.zeros((1, m.shape[1]), np.float32))


def test_streams_in_blocks(rich_file, tmp_path, monkeypatch):
    """Datasets larger than the block budget are copied block by block, both ways."""
    monkeypatch.setattr(convert, "BLOCK_BYTES", 64)
    calls = []
    real = convert._blocks

    def spy(*args, **kwargs):
        out = list(real(*args, **kwargs))
        calls.append(len(out))
        return iter(out)

    monkeypatch.setattr(convert, "_blocks", spy)
    src = tmp_path / "src.h5"
    shutil.copyfile(rich_file, src)
    with h5py.File(src, "a") as f:
        f.create_dataset("chunked", data=np.arange(400, dtype=np.float32).reshape(40, 10), chunks=(4, 5))
        records = np.zeros(30, SHO)
        records["q"] = np.arange(30)
        f.create_dataset("records", data=records, chunks=(3,))
    store, back = tmp_path / "s.zarr", tmp_path / "s.h5"
    h5_to_zarr(src, store)
    zarr_to_h5(store, back)
    assert max(calls) >= 10
    assert_same_h5(src, back, allow_region_drop=False)


def test_contiguous_dataset_gets_chunks_and_can_be_rechunked(tmp_path):
    src = tmp_path / "c.h5"
    with h5py.File(src, "w") as f:
        f.create_dataset("big", data=np.zeros((3000, 600), np.float32))  # 7.2 MB, contiguous
    h5_to_zarr(src, tmp_path / "a.zarr")
    with open_zarr(tmp_path / "a.zarr") as f:
        rows, cols = f["/big"].chunks
        assert cols == 600 and rows * cols * 4 <= convert.AUTO_CHUNK_BYTES
    h5_to_zarr(src, tmp_path / "b.zarr", chunks=(100, 600))
    with open_zarr(tmp_path / "b.zarr") as f:
        assert f["/big"].chunks == (100, 600)
    zarr_to_h5(tmp_path / "b.zarr", tmp_path / "b.h5")
    with h5py.File(tmp_path / "b.h5") as f:
        assert f["big"].chunks is None  # the HDF5 layout comes back, not the zarr one


# ------------------------------------------------------------------------------ real files
@pytest.mark.parametrize("name", REAL)
def test_real_file_round_trip(name, tmp_path):
    src = tmp_path / name
    shutil.copyfile(real_file(name), src)
    store, back = tmp_path / "x.zarr", tmp_path / "back.h5"
    report = h5_to_zarr(src, store)
    assert all("region reference" in d for d in report.dropped), report.dropped
    zarr_to_h5(store, back)
    assert_same_h5(src, back)
    for path in (store, back):
        assert_same_mains(src, path)
        assert _problems(path) == _problems(src)


def _pyusid_view(pyusid, h5, path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if not pyusid.hdf_utils.check_if_main(h5[path]):
            return None
        ds = pyusid.USIDataset(h5[path])
        try:
            nd = ds.get_n_dim_form()
        except ValueError as exc:
            nd = type(exc)
        return ds.pos_dim_labels, ds.spec_dim_labels, ds.pos_dim_sizes, ds.spec_dim_sizes, nd


@pytest.mark.parametrize("name", [*REAL, "rich"])
def test_pyusid_reads_round_tripped_file(name, pyusid, tmp_path, rich_file):
    src = rich_file if name == "rich" else real_file(name)
    back = tmp_path / "back.h5"
    h5_to_zarr(src, tmp_path / "x.zarr")
    zarr_to_h5(tmp_path / "x.zarr", back)
    with h5py.File(src, "r") as a, h5py.File(back, "r") as b:
        paths = [m["name"] for m in _mains(src) if m["dtype"].names is None]
        assert paths
        for path in paths:
            va, vb = _pyusid_view(pyusid, a, path), _pyusid_view(pyusid, b, path)
            assert va is not None and vb is not None, path
            assert va[:4] == vb[:4], path
            if isinstance(va[4], np.ndarray):
                np.testing.assert_array_equal(va[4], vb[4])
            else:
                assert va[4] is vb[4]


def test_foreign_zarr_store_without_usidgpu_metadata(tmp_path):
    """A USID layout written with plain zarr (references as 'h5ref:' strings) opens and converts."""
    import zarr

    store = tmp_path / "plain.zarr"
    g = zarr.open_group(str(store), mode="w", zarr_format=3)
    data = np.arange(12, dtype=np.float32).reshape(6, 2)
    m = g.create_array("Raw_Data", shape=(6, 2), dtype="f4", chunks=(3, 2))
    m[...] = data
    for name, arr, labels, units in (
        ("Position_Indices", np.indices((2, 3)).reshape(2, -1).T.astype(np.uint32), ["Y", "X"], ["µm", "nm"]),
        ("Position_Values", np.indices((2, 3)).reshape(2, -1).T.astype(np.float32), ["Y", "X"], ["µm", "nm"]),
        ("Spectroscopic_Indices", np.arange(2, dtype=np.uint32)[None], ["Bias"], ["V"]),
        ("Spectroscopic_Values", np.array([[-1.0, 1.0]], np.float32), ["Bias"], ["V"]),
    ):
        a = g.create_array(name, shape=arr.shape, dtype=arr.dtype)
        a[...] = arr
        a.attrs.update(labels=labels, units=units)
        m.attrs[name] = f"h5ref:/{name}"
    m.attrs.update(quantity="Current", units="nA")
    with usidgpu.open(store) as f:
        (ds,) = f.main_datasets()
        assert ds.nd_shape == (2, 3, 2) and [d.units for d in ds.pos_dims] == ["µm", "nm"]
        np.testing.assert_array_equal(ds.to_ndim().reshape(6, 2), data)
    assert _problems(store) == []
    zarr_to_h5(store, tmp_path / "plain.h5")
    assert_same_mains(store, tmp_path / "plain.h5")


def test_open_zarr_is_read_only_and_checks_the_path(tmp_path, rich_file):
    store = tmp_path / "r.zarr"
    h5_to_zarr(rich_file, store)
    with pytest.raises(FileProblem, match="zarr stores are opened read-only; convert to HDF5 to modify"):
        usidgpu.open(store, "r+")
    with pytest.raises(FileProblem, match="no such file"):
        usidgpu.open(tmp_path / "missing.zarr")
    (tmp_path / "empty.zarr").mkdir()
    with pytest.raises(FileProblem, match="not a zarr store"):
        usidgpu.open(tmp_path / "empty.zarr")
    with pytest.raises(FileProblem, match="already exists"):
        h5_to_zarr(rich_file, store)
    with pytest.raises(FileProblem, match="already exists"):
        zarr_to_h5(store, rich_file)


# ------------------------------------------------------------------------------ CLI
def _one_line_error(capsys, *fragments):
    err = capsys.readouterr().err
    assert err.endswith("\n") and err.count("\n") == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, err


def test_cli_convert_both_ways(tmp_path, capsys):
    src = tmp_path / "chip.h5"
    shutil.copyfile(real_file("chip.h5"), src)
    store, back = tmp_path / "chip.zarr", tmp_path / "chip_back.hdf5"
    assert cli(["convert", str(src), str(store)]) == 0
    out = capsys.readouterr().out
    assert "3 groups, 5 datasets" in out and "MiB" in out and " s" in out and "region reference" in out
    assert cli(["convert", str(store), str(back)]) == 0
    assert "3 groups, 5 datasets" in capsys.readouterr().out
    assert_same_h5(src, back)
    assert cli(["info", str(store)]) == 0
    assert "X (300 pts" in capsys.readouterr().out
    assert cli(["validate", str(store)]) == 0


def test_cli_convert_refuses_and_reports_bad_input(tmp_path, capsys, monkeypatch):
    src = tmp_path / "chip.h5"
    shutil.copyfile(real_file("chip.h5"), src)
    store = tmp_path / "chip.zarr"
    store.mkdir()
    (store / "keep.txt").write_text("mine")
    assert cli(["convert", str(src), str(store)]) == 2
    _one_line_error(capsys, str(store), "refusing to overwrite")
    assert (store / "keep.txt").read_text() == "mine"

    assert cli(["convert", str(tmp_path / "missing.h5"), str(tmp_path / "m.zarr")]) == 2
    _one_line_error(capsys, "missing.h5", "no such file")
    text = tmp_path / "notes.txt"
    text.write_text("not hdf5")
    assert cli(["convert", str(text), str(tmp_path / "t.zarr")]) == 2
    _one_line_error(capsys, "notes.txt", "not an HDF5 file")
    fake = tmp_path / "fake.h5"
    fake.write_bytes(b"\x00" * 100)
    assert cli(["convert", str(fake), str(tmp_path / "f.zarr")]) == 2
    _one_line_error(capsys, "fake.h5", "not an HDF5 file")
    assert cli(["convert", str(src), str(tmp_path / "out.txt")]) == 2
    _one_line_error(capsys, "cannot tell the direction")
    assert cli(["convert", str(src), str(tmp_path / "x.zarr"), "--chunks", "a,b"]) == 2
    _one_line_error(capsys, "--chunks")
    assert not any(p.name in ("m.zarr", "t.zarr", "f.zarr", "out.txt", "x.zarr") for p in tmp_path.iterdir())

    def boom(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(convert, "_copy_dataset_to_zarr", boom)
    assert cli(["convert", str(src), str(tmp_path / "partial.zarr")]) == 2
    _one_line_error(capsys, "chip.h5", "disk on fire")
    assert not (tmp_path / "partial.zarr").exists()
    monkeypatch.undo()

    good = tmp_path / "good.zarr"
    assert cli(["convert", str(src), str(good)]) == 0
    capsys.readouterr()
    monkeypatch.setattr(convert, "_create_h5_dataset", boom)
    assert cli(["convert", str(good), str(tmp_path / "partial.h5")]) == 2
    _one_line_error(capsys, "good.zarr", "disk on fire")
    assert not (tmp_path / "partial.h5").exists()


def test_results_cannot_go_into_a_zarr_store(tmp_path):
    from helpers import make_file

    src, store = tmp_path / "a.h5", tmp_path / "a.zarr"
    make_file(src)
    h5_to_zarr(src, store)
    with usidgpu.open(store) as f:
        ds = f.main_datasets()[0]
        result = usidgpu.svd(ds, 2, progress=False)
        with pytest.raises(usidgpu.ResultsError, match="zarr store"):
            result.write(ds)
        path = result.write(ds, output=tmp_path / "out.h5")  # another file is fine
    assert usidgpu.validate(tmp_path / "out.h5") == []
    assert path.endswith("-SVD_000")


def test_a_mostly_unwritten_dataset_copies_only_its_written_chunks(tmp_path, monkeypatch):
    """A dataset declaring far more rows than were written (an interrupted writer, a damaged file)
    converts in the time of its written chunks, and reads back equal, fill value included."""
    import zarr

    src = tmp_path / "sparse.h5"
    with h5py.File(src, "w") as f:
        d = f.create_dataset("x", shape=(2_000_000_000, 4), chunks=(1000, 4), dtype="f4", fillvalue=-1.5)
        d[:1000] = np.arange(4000, dtype="f4").reshape(1000, 4)
        d[1_500_000_000:1_500_000_010] = 7.0
    reads = []
    monkeypatch.setattr(convert, "_blocks", lambda *a, **k: reads.append(a) or iter(()))  # the dense path: unused
    h5_to_zarr(src, tmp_path / "sparse.zarr")
    z = zarr.open_group(str(tmp_path / "sparse.zarr"), mode="r")["x"]
    assert z.shape == (2_000_000_000, 4) and not reads
    with h5py.File(src, "r") as f:
        np.testing.assert_array_equal(z[:1000], f["x"][:1000])
        np.testing.assert_array_equal(z[1_500_000_000 - 5 : 1_500_000_020], f["x"][1_500_000_000 - 5 : 1_500_000_020])
        np.testing.assert_array_equal(z[123_456_789], np.full(4, -1.5, "f4"))
