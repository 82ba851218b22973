"""usidgpu.storage: the node protocol, the attribute codec, the zarr view and the converters."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import h5py
import numpy as np
import pytest
from helpers import make_file

import usidgpu
from usidgpu import Dimension
from usidgpu.core.errors import FileProblem
from usidgpu.storage import (
    AttributesNode,
    ChunkLayout,
    Compression,
    DatasetNode,
    FileNode,
    GroupNode,
    Node,
    copy_dataset,
    filter_count,
    is_dataset,
    is_group,
    is_open,
    is_reference,
    open_file,
    read_only_reason,
)
from usidgpu.storage import h5 as storage_h5
from usidgpu.storage.codec import (
    META,
    REF_PREFIX,
    decode_attr,
    dtype_from_json,
    dtype_to_json,
    encode_attr,
    guess_attr,
)
from usidgpu.storage.convert import h5_to_zarr, zarr_to_h5
from usidgpu.storage.protocol import missing_members, protocol_members
from usidgpu.storage.zarr_view import READ_ONLY, ZarrReference, open_zarr
from usidgpu.usid.attrs import book_keeping, write_attrs

zarr = pytest.importorskip("zarr")

RECORD = np.dtype([("amp", "<f4"), ("phase", "<f4"), ("q", "<f8")])


# ------------------------------------------------------------------------------ a small file
@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A Main dataset, attributes of every type the USID model writes, and storage variety."""
    path = tmp_path_factory.mktemp("storage") / "s.h5"
    make_file(path, compression="gzip", compression_opts=3)
    with h5py.File(path, "a") as f:
        main = f["/Measurement_000/Channel_000/Raw_Data"]
        g = f.create_group("Extra/Nested µm")
        write_attrs(g, book_keeping())
        write_attrs(g, {"tool": "SVD", "labels": ["µm", "Å", "°"], "flag": True, "count": 3, "ratio": 0.5})
        a = g.attrs
        a["vlen_text"] = "Å ° µ ✓"
        a["vlen_list"] = np.array(["µm", ""], dtype=h5py.string_dtype())
        a["fixed_bytes"] = np.bytes_(b"raw\x00")
        a["ints"] = np.arange(4, dtype=np.uint32)
        a["i64"] = np.int64(-7)
        a["floats"] = np.array([np.nan, np.inf, -np.inf, 1.25])
        a["f32"] = np.float32(2.5)
        a["complex"] = np.complex64(1 - 2j)
        a["bools"] = np.array([True, False])
        a["bool"] = np.bool_(False)
        a["empty_array"] = np.array([], dtype=np.float64)
        a["empty_strings"] = np.array([], dtype="S1")
        a["null"] = h5py.Empty("f8")
        a["record"] = np.array((1.0, 2.0, 3.0), RECORD)
        a["ref"] = main.ref
        a.create("null_ref", data=h5py.Reference(), dtype=h5py.ref_dtype)
        a["refs"] = np.array([main.ref, f["/Measurement_000"].ref], dtype=h5py.ref_dtype)
        g.create_dataset("chunked", data=np.arange(60, dtype=np.int16).reshape(6, 10), chunks=(2, 5), shuffle=True)
        g.create_dataset("checked", data=np.arange(8.0), chunks=(4,), fletcher32=True)
        if storage_h5.filter_available("lzf"):
            g.create_dataset("lzf", data=np.ones((4, 4), np.float32), compression="lzf")
        g.create_dataset("contiguous", data=np.arange(12, dtype=">f8").reshape(3, 4))
        g.create_dataset("growing", data=np.arange(5.0), maxshape=(None,), chunks=(2,), fillvalue=-1.0)
        g.create_dataset("text", data=np.array(["µ", "ab"], dtype=object), dtype=h5py.string_dtype())
        g.create_dataset("records", data=np.zeros(3, RECORD))
        g["hard"] = g["chunked"]
    return path


@pytest.fixture(scope="module")
def store(source, tmp_path_factory):
    out = tmp_path_factory.mktemp("storage_zarr") / "s.zarr"
    report = h5_to_zarr(source, out)
    assert report.dropped == []
    return out


# ------------------------------------------------------------------------------ the protocol
def _h5_nodes(f):
    return {
        FileNode: f,
        GroupNode: f["/Extra/Nested µm"],
        DatasetNode: f["/Measurement_000/Channel_000/Raw_Data"],
        AttributesNode: f["/Extra/Nested µm"].attrs,
    }


@pytest.mark.parametrize("kind", ["h5", "zarr"])
def test_both_stores_satisfy_the_node_protocol(kind, source, store):
    with open_file(source if kind == "h5" else store) as f:
        for protocol, obj in _h5_nodes(f).items():
            assert isinstance(obj, protocol), (protocol.__name__, missing_members(obj, protocol))
            assert missing_members(obj, protocol) == []
        ds = f["/Measurement_000/Channel_000/Raw_Data"]
        for protocol in (Node, ChunkLayout, Compression):
            assert isinstance(ds, protocol)
        assert isinstance(f["/Measurement_000"], Node) and not isinstance(f["/Measurement_000"], DatasetNode)


def test_protocol_members_are_the_h5py_subset_the_model_uses():
    members = protocol_members(DatasetNode)
    for name in ("name", "file", "parent", "attrs", "ref", "shape", "dtype", "chunks", "compression"):
        assert name in members
    assert "__getitem__" in members and "read_direct" in members
    assert "id" not in members and "_is_protocol" not in members
    assert set(protocol_members(GroupNode)) >= {"visititems", "get", "keys", "__contains__"}
    assert set(protocol_members(FileNode)) >= set(protocol_members(GroupNode)) | {"filename", "mode", "close"}


@pytest.mark.parametrize("kind", ["h5", "zarr"])
def test_node_helpers_ask_the_node_not_the_store(kind, source, store):
    f = open_file(source if kind == "h5" else store)
    main = f["/Measurement_000/Channel_000/Raw_Data"]
    group = f["/Extra/Nested µm"]
    assert is_dataset(main) and not is_group(main)
    assert is_group(group) and is_group(f) and not is_dataset(group)
    ref = group.attrs["ref"]
    assert is_reference(ref) and not is_reference(main) and not is_reference("h5ref:/x")
    assert f[ref] == main and f[ref].name == main.name
    assert is_reference(group.attrs["null_ref"]) and not group.attrs["null_ref"]
    m = usidgpu.MainDataset(main)
    assert not is_dataset(m) and not is_group(m)  # a MainDataset wraps a node, it is not one
    assert read_only_reason(group) is not None  # opened for reading
    if kind == "zarr":
        assert READ_ONLY in read_only_reason(group)
    assert filter_count(group["contiguous"]) == 0
    if kind == "h5":
        assert filter_count(main) >= 1 and filter_count(group["chunked"]) == 1
    assert is_open(f) and is_open(main)
    f.close()
    assert not is_open(f)


def test_read_only_reason_names_the_file(tmp_path, store):
    path = tmp_path / "w.h5"
    make_file(path)
    with h5py.File(path, "r") as f:
        assert read_only_reason(f) == f"{f.filename} is open read-only; open it with mode='r+' or 'a' to write"
    with h5py.File(path, "a") as f:
        assert read_only_reason(f["/Measurement_000"]) is None
    with open_zarr(store) as f:
        assert read_only_reason(f["/Measurement_000"]) == f"{store}: {READ_ONLY}"


def test_the_zarr_view_imitates_no_h5py_internals(store):
    with open_zarr(store) as f:
        for obj in (f, f["/Measurement_000"], f["/Measurement_000/Channel_000/Raw_Data"]):
            assert not hasattr(obj, "id")


@pytest.mark.parametrize("kind", ["h5", "zarr"])
def test_copy_dataset_from_either_store(kind, source, store, tmp_path):
    with open_file(source if kind == "h5" else store) as src, h5py.File(tmp_path / "t.h5", "w") as dst:
        inds = src["/Measurement_000/Channel_000/Position_Indices"]
        new = copy_dataset(inds, dst, "copied")
        assert isinstance(new, h5py.Dataset) and new.name == "/copied"
        np.testing.assert_array_equal(new[()], inds[()])
        assert [x.decode() for x in new.attrs["labels"]] == ["Y", "X"]
        main = copy_dataset(src["/Measurement_000/Channel_000/Raw_Data"], dst, "main")
        if kind == "zarr":  # references point into the source store: not carried
            assert "Position_Indices" not in main.attrs and main.attrs["quantity"] == "Current"


# ------------------------------------------------------------------------------ storage.h5
def test_open_h5_explains_every_failure(tmp_path):
    with pytest.raises(FileProblem, match="no such file"):
        storage_h5.open_h5(tmp_path / "missing.h5")
    with pytest.raises(FileProblem, match="is a directory"):
        storage_h5.open_h5(tmp_path)
    (tmp_path / "empty.h5").write_bytes(b"")
    with pytest.raises(FileProblem, match="empty file"):
        storage_h5.open_h5(tmp_path / "empty.h5")
    (tmp_path / "text.h5").write_text("hello")
    with pytest.raises(FileProblem, match="not an HDF5 file"):
        storage_h5.open_h5(tmp_path / "text.h5")
    with pytest.raises(ValueError, match="mode must be one of"):
        storage_h5.open_h5(tmp_path / "x.h5", "rw")
    assert storage_h5.is_h5_path("A.HDF5") and not storage_h5.is_h5_path("a.zarr")


def test_close_handles_closes_every_handle_on_that_file_only(tmp_path):
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    make_file(a)
    make_file(b)
    fa1, fa2, fb = h5py.File(a, "r"), h5py.File(a, "r"), h5py.File(b, "r")
    ds = fa1["/Measurement_000/Channel_000/Raw_Data"]
    storage_h5.close_handles(tmp_path / "." / "a.h5")
    assert not is_open(fa1) and not is_open(fa2) and not is_open(ds)
    assert is_open(fb)
    with h5py.File(a, "a") as w:  # writable now
        w.attrs["x"] = 1
    fb.close()


def test_h5_low_level_questions(source):
    assert storage_h5.filter_available("gzip")
    assert not storage_h5.filter_available("no-such-filter")
    with h5py.File(source, "r") as f:
        g = f["/Extra/Nested µm"]
        dtype, shape = storage_h5.attr_type(g, "labels")
        assert h5py.check_string_dtype(dtype).length is not None and shape == (3,)
        dtype, shape = storage_h5.attr_type(g, "vlen_text")
        assert h5py.check_string_dtype(dtype).length is None and shape == ()
        assert storage_h5.attr_type(g, "null")[1] is None
        assert storage_h5.object_key(g["hard"]) == storage_h5.object_key(g["chunked"])
        assert storage_h5.object_key(g["hard"]) != storage_h5.object_key(g["checked"])


# ------------------------------------------------------------------------------ the codec
def _same(a, b, target_a, target_b):
    """Equal values of equal Python/NumPy types; references compared by target path."""
    if is_reference(a):
        return is_reference(b) and target_a(a) == target_b(b)
    if isinstance(a, h5py.Empty):
        return isinstance(b, h5py.Empty) and a.dtype == b.dtype
    if type(a) is not type(b):
        return False
    if isinstance(a, np.ndarray) and a.dtype.kind == "O":
        return a.shape == b.shape and all(_same(x, y, target_a, target_b) for x, y in zip(a.ravel(), b.ravel()))
    a_arr, b_arr = np.asarray(a), np.asarray(b)
    if a_arr.dtype != b_arr.dtype or a_arr.shape != b_arr.shape:
        return False
    if a_arr.dtype.names is None and a_arr.dtype.kind in "fc":
        return bool(np.array_equal(a_arr, b_arr, equal_nan=True))
    return a_arr.tobytes() == b_arr.tobytes()


def test_codec_round_trips_every_attribute_type_through_plain_json(source):
    with h5py.File(source, "r") as f:
        g = f["/Extra/Nested µm"]

        def ref_path(ref):
            return f[ref].name if ref else ""

        names = sorted(g.attrs)
        assert len(names) >= 25
        for name in names:
            value = g.attrs[name]
            dtype, shape = storage_h5.attr_type(g, name)
            x, spec = encode_attr(value, dtype, shape, ref_path)
            x, spec = json.loads(json.dumps(x, allow_nan=False)), json.loads(json.dumps(spec))  # plain JSON
            back = decode_attr(x, spec, ZarrReference)
            assert _same(value, back, ref_path, lambda r: r.path), (name, value, back)
            assert dtype_to_json(dtype_from_json(spec["dtype"])) == spec["dtype"], name
        # what any zarr tool sees
        enc = {n: encode_attr(g.attrs[n], *storage_h5.attr_type(g, n), ref_path)[0] for n in names}
        assert enc["vlen_text"] == "Å ° µ ✓" and enc["labels"] == ["µm", "Å", "°"]
        assert enc["ref"] == REF_PREFIX + "/Measurement_000/Channel_000/Raw_Data" and enc["null_ref"] == REF_PREFIX
        assert enc["floats"] == ["NaN", "Infinity", "-Infinity", 1.25] and enc["complex"] == [1.0, -2.0]
        assert enc["bools"] == [True, False] and enc["empty_array"] == [] and enc["null"] is None
        assert enc["fixed_bytes"] == "raw" and enc["flag"] is True and enc["record"] == [1.0, 2.0, 3.0]


def test_codec_reads_json_written_by_other_tools():
    make = ZarrReference
    assert guess_attr("h5ref:/a/b", make) == ZarrReference("/a/b")
    assert guess_attr("µm", make) == "µm"
    assert isinstance(guess_attr(True, make), np.bool_) and guess_attr(True, make)
    assert isinstance(guess_attr(3, make), np.int64) and isinstance(guess_attr(0.5, make), np.float64)
    labels = guess_attr(["µm", "nm"], make)
    assert labels.dtype.kind == "S" and [v.decode() for v in labels] == ["µm", "nm"]
    refs = guess_attr(["h5ref:/a", "h5ref:"], make)
    assert list(refs) == [ZarrReference("/a"), ZarrReference("")]
    np.testing.assert_array_equal(guess_attr([[1, 2], [3, 4]], make), [[1, 2], [3, 4]])
    assert isinstance(guess_attr(None, make), h5py.Empty)
    assert decode_attr("x", None, make) == "x"


@pytest.mark.parametrize(
    "dtype",
    [
        np.dtype("<f4"),
        np.dtype(">i8"),
        np.dtype("?"),
        np.dtype("<c16"),
        RECORD,
        np.dtype(("<f4", (2, 3))),
        h5py.string_dtype(),
        h5py.string_dtype("ascii", 7),
        h5py.ref_dtype,
        h5py.regionref_dtype,
        h5py.vlen_dtype(np.dtype("<i4")),
        h5py.enum_dtype({"off": 0, "on": 1}, basetype="u1"),
    ],
)
def test_dtype_descriptions_round_trip(dtype):
    spec = dtype_to_json(dtype)
    assert json.loads(json.dumps(spec)) == spec
    back = dtype_from_json(spec)
    assert back == dtype and dtype_to_json(back) == spec


# ------------------------------------------------------------------------------ the zarr view
def test_zarr_view_reads_like_h5py(source, store):
    with open_zarr(store) as z, h5py.File(source, "r") as h:
        seen, expected = [], []
        z.visititems(lambda name, obj: seen.append((name, is_group(obj))))
        h.visititems(lambda name, obj: expected.append((name, isinstance(obj, h5py.Group))))
        assert seen == expected
        g, hg = z["/Extra/Nested µm"], h["/Extra/Nested µm"]
        assert META not in g.attrs and sorted(g.attrs) == sorted(hg.attrs)
        assert g.parent.name == "/Extra" and g.file is z and z.parent is z
        assert g["hard"].name == "/Extra/Nested µm/chunked"  # the second hard link resolves
        assert "chunked" in g and "missing" not in g and g.get("missing", 7) == 7
        with pytest.raises(KeyError):
            z["/no/such"]
        ds, hds = g["chunked"], hg["chunked"]
        assert (ds.shape, ds.dtype, ds.ndim, ds.size, ds.nbytes, ds.chunks) == (
            hds.shape,
            hds.dtype,
            hds.ndim,
            hds.size,
            hds.nbytes,
            hds.chunks,
        )
        np.testing.assert_array_equal(ds[1:5, ::3], hds[1:5, ::3])
        np.testing.assert_array_equal(ds[[0, 2], 1], hds[[0, 2], 1])
        np.testing.assert_array_equal(ds[..., 2], hds[..., 2])
        out = np.zeros((2, 10), np.int16)
        ds.read_direct(out, np.s_[3:5], np.s_[0:2])
        np.testing.assert_array_equal(out, hds[3:5])
        assert len(ds) == 6 and np.asarray(ds).shape == (6, 10)
        assert list(g["text"].asstr()[()]) == ["µ", "ab"]
        assert g["growing"].maxshape == (None,)
        assert g["contiguous"].dtype == np.dtype(">f8")
        np.testing.assert_array_equal(g["records"][()], hg["records"][()])
        with pytest.raises(OSError, match="read-only"):
            g.create_group("new")
        with pytest.raises(OSError, match="read-only"):
            ds[0, 0] = 1
        with pytest.raises(OSError, match="read-only"):
            g.attrs["x"] = 1
    # a closed store says so; its nodes stay readable, as they always were
    assert not is_open(z)
    np.testing.assert_array_equal(ds[0], np.arange(10, dtype=np.int16))


def test_open_zarr_and_open_file_refuse_what_they_cannot_open(tmp_path, store):
    with pytest.raises(FileProblem, match=READ_ONLY):
        open_file(store, "r+")
    with pytest.raises(FileProblem, match="no such file"):
        open_file(tmp_path / "missing.zarr")
    (tmp_path / "empty.zarr").mkdir()
    with pytest.raises(FileProblem, match="not a zarr store"):
        open_file(tmp_path / "empty.zarr")
    assert isinstance(open_file(store), FileNode)


# ------------------------------------------------------------------------------ the converters
def _tree(f):
    out = {"/": f}
    f.visititems(lambda name, obj: out.__setitem__("/" + name, obj))
    return out


def _ref_target(f):
    return lambda ref: f[ref].name if ref else ""


def test_h5_zarr_h5_keeps_groups_datasets_attributes_chunks_and_compression(source, store, tmp_path):
    back = tmp_path / "back.h5"
    report = zarr_to_h5(store, back)
    assert report.dropped == [] and report.datasets >= 10
    with h5py.File(source, "r") as a, h5py.File(back, "r") as b:
        ta, tb = _tree(a), _tree(b)
        assert sorted(ta) == sorted(tb)
        for path, x in ta.items():
            y = tb[path]
            assert type(x) is type(y), path
            if isinstance(x, h5py.Dataset):
                assert dtype_to_json(x.dtype) == dtype_to_json(y.dtype), path
                storage_a = (x.shape, x.chunks, x.maxshape, x.compression, x.compression_opts, x.shuffle, x.fletcher32)
                storage_b = (y.shape, y.chunks, y.maxshape, y.compression, y.compression_opts, y.shuffle, y.fletcher32)
                assert storage_a == storage_b, path
                assert filter_count(x) == filter_count(y), path
                if x.dtype.kind != "O":
                    assert np.asarray(x[()]).tobytes() == np.asarray(y[()]).tobytes(), path
                    assert np.asarray(x.fillvalue).tobytes() == np.asarray(y.fillvalue).tobytes(), path
                else:
                    assert list(x.asstr()[()]) == list(y.asstr()[()]), path
            assert sorted(x.attrs) == sorted(y.attrs), path
            for name in x.attrs:
                assert storage_h5.attr_type(x, name)[1] == storage_h5.attr_type(y, name)[1], (path, name)
                ta_, tb_ = storage_h5.attr_type(x, name)[0], storage_h5.attr_type(y, name)[0]
                assert dtype_to_json(ta_) == dtype_to_json(tb_), (path, name)
                assert _same(x.attrs[name], y.attrs[name], _ref_target(a), _ref_target(b)), (path, name)
        assert b["/Extra/Nested µm/hard"] == b["/Extra/Nested µm/chunked"]  # still one object, two links
    assert usidgpu.validate(back) == [] == usidgpu.validate(store)
    with usidgpu.open(store) as z, usidgpu.open(back) as h:
        np.testing.assert_array_equal(z.dataset().to_ndim(), h.dataset().to_ndim())


# ------------------------------------------------------------------------------ old homes
def test_old_module_paths_forward_and_warn(store):
    from usidgpu.storage import convert, locks, sidecar, zarr_view

    old = importlib.import_module("usidgpu.usid.zarr_store")
    for name, new in (
        ("h5_to_zarr", convert.h5_to_zarr),
        ("ConvertReport", convert.ConvertReport),
        ("open_zarr", zarr_view.open_zarr),
        ("ZarrFile", zarr_view.ZarrFile),
        ("is_dataset", is_dataset),
        ("META", META),
    ):
        with pytest.warns(DeprecationWarning, match=f"usidgpu.usid.zarr_store.{name} moved to usidgpu.storage"):
            assert getattr(old, name) is new
    with pytest.raises(AttributeError):
        old.no_such_name  # noqa: B018
    import usidgpu.parallel

    store_module = importlib.import_module("usidgpu.parallel.store")
    assert store_module.BlockStore is sidecar.BlockStore and store_module.run_lock is locks.run_lock
    assert usidgpu.parallel.RunInProgress is locks.RunInProgress
    # the USID model still offers its old helper names
    from usidgpu.usid.file import open_h5
    from usidgpu.usid.rules import is_dataset as rules_is_dataset

    assert open_h5 is storage_h5.open_h5 and rules_is_dataset is is_dataset


def test_importing_storage_imports_neither_zarr_nor_dask():
    code = "import sys, usidgpu.storage; print([m for m in ('zarr', 'dask') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_storage_imports_only_the_ground_floor():
    """storage sits between usidgpu.core and usidgpu.usid: nothing above it is imported."""
    import ast
    from pathlib import Path

    import usidgpu.storage

    allowed = ("core", "_version", "_deprecated", "storage")
    wrong = []
    for path in Path(usidgpu.storage.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level:
                # "from . import x" stays in storage; "from ..pkg import x" names a sibling package
                package = "storage" if node.level == 1 else (node.module or "").split(".")[0]
                if package not in allowed:
                    wrong.append(f"{path.name}: from {'.' * node.level}{node.module or ''}")
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                wrong += [f"{path.name}: {n}" for n in names if n.startswith("usidgpu")]
    assert not wrong, wrong


def test_a_foreign_store_reads_through_the_protocol(tmp_path):
    path = tmp_path / "plain.zarr"
    g = zarr.open_group(str(path), mode="w", zarr_format=3)
    a = g.create_array("data", shape=(4, 3), dtype="f4", chunks=(2, 3), compressors=None)
    a[...] = np.arange(12, dtype=np.float32).reshape(4, 3)
    a.attrs.update(units="nA", labels=["x", "y"], ref="h5ref:/data")
    with open_zarr(path) as f:
        ds = f["data"]
        assert isinstance(ds, DatasetNode) and ds.compression is None and filter_count(ds) == 0
        assert ds.attrs["units"] == "nA" and f[ds.attrs["ref"]] == ds
        assert [v.decode() for v in ds.attrs["labels"]] == ["x", "y"]


def test_parallel_uses_the_storage_sidecar(tmp_path):
    from usidgpu.storage.sidecar import BlockStore, done_count, lock_path, read_meta

    blocks = [(0, 2), (2, 4)]
    s, resumed = BlockStore.open_or_create(tmp_path / "r.zarr", "f" * 64, blocks, {"a": (2, np.float32)}, {"x": 1})
    assert not resumed and done_count(s.path) == 0 and read_meta(s.path)["x"] == 1
    s.write_block(1, {"a": np.ones((2, 2))})
    assert done_count(s.path) == 1 and s.done().tolist() == [False, True]
    assert lock_path(s.path) == tmp_path / "r.zarr.lock"
    again, resumed = BlockStore.open_or_create(tmp_path / "r.zarr", "f" * 64, blocks, {"a": (2, np.float32)}, {})
    assert resumed and again.done().tolist() == [False, True]
    s.remove()
    assert not s.path.exists()


def test_main_dataset_needs_a_writable_hdf5_group(tmp_path, store):
    with usidgpu.open(store) as f, pytest.raises(usidgpu.NotUSIDError, match=READ_ONLY):
        usidgpu.write_main(
            f.h5["/Measurement_000"], "x", np.zeros((2, 2)), "q", "u", [Dimension("p", "", 2)], [Dimension("s", "", 2)]
        )
    with pytest.raises(TypeError, match="group must be"):
        usidgpu.write_main({}, "x", np.zeros((2, 2)), "q", "u", [Dimension("p", "", 2)], [Dimension("s", "", 2)])
