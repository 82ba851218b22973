"""A corpus of hostile inputs: huge declared sizes, damaged headers and heaps, broken references,
wrong dtypes, bad indices, unsupported filters, broken zarr stores.

Each case is a function named after what is wrong with the file it makes: ``case(folder)`` writes
its input into the (empty) ``folder`` and returns the path to give the commands. Every case
starts from a valid file of :func:`helpers.make_file` (3 × 4 positions, 5 bias points) or builds
its own; damage is done at chosen places (found in the file's bytes), so the corpus is the same on
every run. :data:`CASES` lists them all; ``tests/test_hostile_files.py`` runs each through
``usidgpu.open`` and every command that reads a file.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
from helpers import make_file

CH = "Measurement_000/Channel_000"
MAIN = f"/{CH}/Raw_Data"
#: rows the "huge" cases declare: chunked and never written, they cost nothing on disk
HUGE = 4_000_000_000

CASES: dict[str, Callable[[Path], Path]] = {}


def case(fn: Callable[[Path], Path]) -> Callable[[Path], Path]:
    """Register a case under its function's name."""
    CASES[fn.__name__] = fn
    return fn


# ------------------------------------------------------------------------------------ helpers
def _valid(folder: Path, name: str = "data.h5", **kwargs) -> Path:
    path = folder / name
    make_file(path, **kwargs)
    return path


def _edit(folder: Path, edit: Callable[[h5py.Group, h5py.Dataset], None], **kwargs) -> Path:
    """A valid file, then ``edit(channel_group, main_dataset)`` applied with h5py."""
    path = _valid(folder, **kwargs)
    with h5py.File(path, "r+") as f:
        edit(f[CH], f[MAIN])
    return path


def _replace(group: h5py.Group, name: str, data, like: h5py.Dataset | None = None, **create) -> h5py.Dataset:
    """Put ``data`` in place of dataset ``name`` (attributes kept) and point Main's reference at it."""
    attrs = dict(like.attrs) if like is not None else dict(group[name].attrs)
    main_refs = {k: v for k, v in group["Raw_Data"].attrs.items() if k == name} if "Raw_Data" in group else {}
    del group[name]
    new = group.create_dataset(name, data=data, **create) if data is not None else group.create_dataset(name, **create)
    for k, v in attrs.items():
        new.attrs[k] = v
    if main_refs:
        group["Raw_Data"].attrs[name] = new.ref
    return new


def _patch(path: Path, find: bytes, replace: bytes, occurrence: int = 0) -> Path:
    """Replace the ``occurrence``-th appearance of ``find`` in the file's bytes (same length)."""
    assert len(find) == len(replace)
    raw = bytearray(path.read_bytes())
    at = -1
    for _ in range(occurrence + 1):
        at = raw.index(find, at + 1)
    raw[at : at + len(find)] = replace
    path.write_bytes(bytes(raw))
    return path


def _flip(path: Path, offsets, mask: int = 0xFF) -> Path:
    raw = bytearray(path.read_bytes())
    for off in offsets:
        raw[off % len(raw)] ^= mask
    path.write_bytes(bytes(raw))
    return path


def _usid_by_hand(path: Path, n_pos: int, n_spec: int, chunks_pos: tuple, main_dtype="f4") -> Path:
    """A USID file whose Main and ancillaries are declared, chunked and never written."""
    with h5py.File(path, "w") as f:
        g = f.create_group(CH)
        main = g.create_dataset("Raw_Data", shape=(n_pos, n_spec), dtype=main_dtype, chunks=chunks_pos)
        p_shape, s_shape = (n_pos, 1), (1, n_spec)
        pi = g.create_dataset("Position_Indices", shape=p_shape, dtype="u4", chunks=(min(n_pos, 2**20), 1))
        pv = g.create_dataset("Position_Values", shape=p_shape, dtype="f4", chunks=(min(n_pos, 2**20), 1))
        si = g.create_dataset("Spectroscopic_Indices", shape=s_shape, dtype="u4", chunks=(1, min(n_spec, 2**20)))
        sv = g.create_dataset("Spectroscopic_Values", shape=s_shape, dtype="f4", chunks=(1, min(n_spec, 2**20)))
        for a, label, unit in ((pi, b"X", b"nm"), (pv, b"X", b"nm"), (si, b"Bias", b"V"), (sv, b"Bias", b"V")):
            a.attrs["labels"] = np.array([label])
            a.attrs["units"] = np.array([unit])
            main.attrs[a.name.rsplit("/", 1)[1]] = a.ref
        main.attrs["quantity"] = "Current"
        main.attrs["units"] = "nA"
    return path


# ------------------------------------------------------------------------------ huge declared sizes
@case
def huge_positions_declared(folder: Path) -> Path:
    return _usid_by_hand(folder / "data.h5", HUGE, 5, (2**20, 5))


@case
def huge_spectroscopic_declared(folder: Path) -> Path:
    return _usid_by_hand(folder / "data.h5", 2, HUGE, (1, 2**20))


@case
def huge_main_small_ancillaries(folder: Path) -> Path:
    def edit(ch, m):
        _replace(ch, "Raw_Data", None, like=m, shape=(HUGE, 5), dtype="f4", chunks=(2**20, 5))

    return _edit(folder, edit)


@case
def huge_ancillary_wrong_axis(folder: Path) -> Path:
    def edit(ch, m):
        like = ch["Position_Indices"]
        _replace(ch, "Position_Indices", None, like=like, shape=(12, HUGE), dtype="u4", chunks=(12, 2**20))

    return _edit(folder, edit)


def _huge_attribute(folder: Path, obj: str, name: str) -> Path:
    """Attribute ``name`` of ``obj`` declares 2⁴⁴ elements (a dataspace damaged in place)."""
    path = _valid(folder)
    with h5py.File(path, "r+") as f:
        f[obj].attrs[name] = np.zeros(3011, dtype="S1")  # a size found nowhere else in the file
    # its dataspace message holds the size twice (dimension, maximum): both are changed
    for _ in range(2):
        _patch(path, (3011).to_bytes(8, "little"), (2**44).to_bytes(8, "little"))
    return path


@case
def huge_attribute_dataspace_quantity(folder: Path) -> Path:
    return _huge_attribute(folder, MAIN, "quantity")


@case
def huge_attribute_dataspace_labels(folder: Path) -> Path:
    return _huge_attribute(folder, f"/{CH}/Position_Indices", "labels")


@case
def huge_attribute_dataspace_reference(folder: Path) -> Path:
    return _huge_attribute(folder, MAIN, "Spectroscopic_Values")


# ------------------------------------------------------------------------------ damaged files
@case
def empty_file(folder: Path) -> Path:
    path = folder / "data.h5"
    path.write_bytes(b"")
    return path


@case
def zero_filled_file(folder: Path) -> Path:
    path = folder / "data.h5"
    path.write_bytes(bytes(4096))
    return path


@case
def text_file_named_h5(folder: Path) -> Path:
    path = folder / "data.h5"
    path.write_text("x,y\n1,2\n")
    return path


@case
def directory_named_h5(folder: Path) -> Path:
    path = folder / "data.h5"
    path.mkdir()
    return path


@case
def fifo_named_h5(folder: Path) -> Path:
    path = folder / "data.h5"
    os.mkfifo(path)  # opening it for reading waits for a writer that never comes
    return path


@case
def superblock_signature_damaged(folder: Path) -> Path:
    return _flip(_valid(folder), [1, 2])


@case
def superblock_root_address_damaged(folder: Path) -> Path:
    return _flip(_valid(folder), range(64, 72), 0x5A)


@case
def truncated_to_superblock(folder: Path) -> Path:
    path = _valid(folder)
    path.write_bytes(path.read_bytes()[:96])
    return path


@case
def truncated_half(folder: Path) -> Path:
    path = _valid(folder)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    return path


@case
def truncated_last_bytes(folder: Path) -> Path:
    path = _valid(folder)
    path.write_bytes(path.read_bytes()[:-16])
    return path


@case
def main_object_header_damaged(folder: Path) -> Path:
    path = _valid(folder)
    with h5py.File(path, "r") as f:
        addr = h5py.h5o.get_info(f[MAIN].id).addr
    return _flip(path, range(addr + 1, addr + 24, 3), 0xA5)


@case
def group_btree_damaged(folder: Path) -> Path:
    return _patch(_valid(folder), b"TREE", b"TRE\x00", occurrence=1)


@case
def local_heap_damaged(folder: Path) -> Path:
    path = _valid(folder)
    raw = path.read_bytes()
    at = raw.index(b"HEAP", raw.index(b"HEAP") + 1)
    return _flip(path, range(at + 8, at + 32), 0x77)


@case
def global_heap_free_space_of_size_zero(folder: Path) -> Path:
    """The free-space entry of the heap holding the string attributes declares size 0: HDF5 2.0
    walks that heap forever (found by random byte flips of a valid file)."""
    path = _valid(folder)
    raw = bytearray(path.read_bytes())
    at = raw.index(b"GCOL")
    end = at + int.from_bytes(raw[at + 8 : at + 16], "little")
    p = at + 16
    while p + 16 <= end:  # find the free-space entry (index 0)
        index, size = int.from_bytes(raw[p : p + 2], "little"), int.from_bytes(raw[p + 8 : p + 16], "little")
        if index == 0:
            raw[p + 8 : p + 16] = bytes(8)
            break
        p += 16 + (size + 7) // 8 * 8
    path.write_bytes(bytes(raw))
    return path


@case
def global_heap_object_size_huge(folder: Path) -> Path:
    path = _valid(folder)
    raw = bytearray(path.read_bytes())
    at = raw.index(b"GCOL") + 16
    raw[at + 8 : at + 16] = (2**62).to_bytes(8, "little")
    path.write_bytes(bytes(raw))
    return path


@case
def global_heap_signature_damaged(folder: Path) -> Path:
    return _patch(_valid(folder), b"GCOL", b"GCOX")


@case
def undecodable_link_name(folder: Path) -> Path:
    return _patch(_valid(folder), b"Channel_000", b"C\xc7annel_000")


@case
def byte_flips_in_metadata(folder: Path) -> Path:
    path = _valid(folder)
    rng = np.random.default_rng(11)
    return _flip(path, rng.integers(0, 4096, 8), 0x3C)


@case
def compressed_chunk_damaged(folder: Path) -> Path:
    path = _valid(folder, compression="gzip")
    with h5py.File(path, "r") as f:
        offset = f[MAIN].id.get_chunk_info(0).byte_offset
    return _flip(path, range(offset + 2, offset + 12))


@case
def checksum_mismatch(folder: Path) -> Path:
    path = folder / "data.h5"
    make_file(path)
    with h5py.File(path, "r+") as f:
        m = f[MAIN]
        _replace(f[CH], "Raw_Data", m[()], like=m, chunks=m.shape, fletcher32=True)
    with h5py.File(path, "r") as f:
        offset = f[MAIN].id.get_chunk_info(0).byte_offset
    return _flip(path, [offset + 5])


# ------------------------------------------------------------------------------ broken references
@case
def reference_to_deleted_dataset(folder: Path) -> Path:
    return _edit(folder, lambda ch, m: ch.__delitem__("Position_Values"))


@case
def reference_to_group(folder: Path) -> Path:
    return _edit(folder, lambda ch, m: m.attrs.__setitem__("Position_Indices", ch.ref))


@case
def reference_to_wrong_shape_dataset(folder: Path) -> Path:
    def edit(ch, m):
        wrong = ch.create_dataset("Wrong", data=np.zeros((7, 1), np.uint32))
        wrong.attrs["labels"], wrong.attrs["units"] = np.array([b"X"]), np.array([b"nm"])
        m.attrs["Position_Indices"] = wrong.ref

    return _edit(folder, edit)


@case
def reference_to_main_itself(folder: Path) -> Path:
    return _edit(folder, lambda ch, m: m.attrs.__setitem__("Spectroscopic_Values", m.ref))


@case
def null_reference(folder: Path) -> Path:
    return _edit(folder, lambda ch, m: m.attrs.__setitem__("Position_Indices", h5py.Reference()))


@case
def reference_is_a_string(folder: Path) -> Path:
    return _edit(folder, lambda ch, m: m.attrs.__setitem__("Position_Indices", f"/{CH}/Position_Indices"))


@case
def region_reference_instead_of_object(folder: Path) -> Path:
    def edit(ch, m):
        pi = ch["Position_Indices"]
        m.attrs["Position_Indices"] = pi.regionref[0:3]

    return _edit(folder, edit)


@case
def main_is_external_link_to_missing_file(folder: Path) -> Path:
    def edit(ch, m):
        attrs = dict(m.attrs)
        del ch["Raw_Data"]
        ch["Raw_Data"] = h5py.ExternalLink("nowhere.h5", "/data")
        ch["Raw_Data_attrs"] = 0
        for k, v in attrs.items():
            ch["Raw_Data_attrs"].attrs[k] = v

    return _edit(folder, edit)


@case
def soft_link_loop(folder: Path) -> Path:
    def edit(ch, m):
        ch["loop"] = h5py.SoftLink(f"/{CH}/loop")

    return _edit(folder, edit)


@case
def external_raw_file_missing(folder: Path) -> Path:
    def edit(ch, m):
        raw = folder / "raw.bin"
        m[()].tofile(raw)
        _replace(ch, "Raw_Data", None, like=m, shape=m.shape, dtype=m.dtype, external=[(str(raw), 0, m.nbytes)])
        raw.unlink()

    return _edit(folder, edit)


@case
def virtual_dataset_source_missing(folder: Path) -> Path:
    def edit(ch, m):
        layout = h5py.VirtualLayout(shape=m.shape, dtype=m.dtype)
        layout[:] = h5py.VirtualSource("gone.h5", "/data", shape=m.shape)
        attrs = dict(m.attrs)
        del ch["Raw_Data"]
        v = ch.create_virtual_dataset("Raw_Data", layout, fillvalue=np.nan)
        for k, val in attrs.items():
            v.attrs[k] = val

    return _edit(folder, edit)


# ------------------------------------------------------------------------------ wrong dtypes
def _main_of(dtype_data):
    def edit(ch, m):
        _replace(ch, "Raw_Data", dtype_data(m), like=m)

    return edit


@case
def string_main_data(folder: Path) -> Path:
    return _edit(folder, _main_of(lambda m: np.full(m.shape, b"abc", dtype="S3")))


@case
def vlen_string_main_data(folder: Path) -> Path:
    return _edit(folder, _main_of(lambda m: np.full(m.shape, "text", dtype=object).astype(h5py.string_dtype())))


@case
def bool_main_data(folder: Path) -> Path:
    return _edit(folder, _main_of(lambda m: m[()] > 0))


@case
def complex_main_data(folder: Path) -> Path:
    return _edit(folder, _main_of(lambda m: m[()] * (1 + 1j)))


@case
def int8_main_without_spectroscopic(folder: Path) -> Path:
    def edit(ch, m):
        _replace(ch, "Raw_Data", (m[()] * 10).astype(np.int8), like=m)
        for name in ("Spectroscopic_Indices", "Spectroscopic_Values"):
            del ch["Raw_Data"].attrs[name]
            del ch[name]

    return _edit(folder, edit)


@case
def compound_position_indices(folder: Path) -> Path:
    def edit(ch, m):
        inds = ch["Position_Indices"][()]
        rec = np.zeros(len(inds), dtype=[("y", "u4"), ("x", "u4")])
        rec["y"], rec["x"] = inds[:, 0], inds[:, 1]
        _replace(ch, "Position_Indices", np.stack([rec, rec], axis=1))

    return _edit(folder, edit)


@case
def string_position_values(folder: Path) -> Path:
    def edit(ch, m):
        _replace(ch, "Position_Values", np.full((12, 2), b"v", dtype="S1"))

    return _edit(folder, edit)


@case
def labels_are_numbers(folder: Path) -> Path:
    return _edit(folder, lambda ch, m: ch["Position_Indices"].attrs.__setitem__("labels", np.arange(2)))


@case
def labels_not_utf8(folder: Path) -> Path:
    def edit(ch, m):
        for name in ("Position_Indices", "Position_Values"):
            ch[name].attrs["labels"] = np.array([b"\xff\xfe", b"X\xc3"])

    return _edit(folder, edit)


@case
def quantity_is_a_number(folder: Path) -> Path:
    return _edit(folder, lambda ch, m: m.attrs.__setitem__("quantity", 42))


# ------------------------------------------------------------------------------ bad shapes
@case
def main_is_1d(folder: Path) -> Path:
    return _edit(folder, _main_of(lambda m: m[()].reshape(-1)))


@case
def main_is_3d(folder: Path) -> Path:
    return _edit(folder, _main_of(lambda m: m[()].reshape(3, 4, 5)))


@case
def main_is_scalar(folder: Path) -> Path:
    return _edit(folder, _main_of(lambda m: np.float32(1)))


@case
def main_has_no_positions(folder: Path) -> Path:
    def edit(ch, m):
        _replace(ch, "Raw_Data", np.zeros((0, 5), np.float32), like=m)
        for name in ("Position_Indices", "Position_Values"):
            _replace(ch, name, np.zeros((0, 2), ch[name].dtype))

    return _edit(folder, edit)


@case
def position_indices_1d(folder: Path) -> Path:
    return _edit(folder, lambda ch, m: _replace(ch, "Position_Indices", np.arange(12, dtype=np.uint32)))


# ------------------------------------------------------------------------------ bad indices and data
def _indices(transform):
    def edit(ch, m):
        _replace(ch, "Position_Indices", transform(ch["Position_Indices"][()]))

    return edit


@case
def nan_position_indices(folder: Path) -> Path:
    def nan(inds):
        out = inds.astype(np.float32)
        out[4, 1] = np.nan
        return out

    return _edit(folder, _indices(nan))


@case
def float_position_indices(folder: Path) -> Path:
    return _edit(folder, _indices(lambda inds: inds.astype(np.float64) + 0.5))


@case
def negative_position_indices(folder: Path) -> Path:
    def negative(inds):
        out = inds.astype(np.int32)
        out[3, 1] = -7
        return out

    return _edit(folder, _indices(negative))


@case
def enormous_index_values(folder: Path) -> Path:
    return _edit(folder, _indices(lambda inds: inds.astype(np.uint64) * np.uint64(2**62)))


@case
def all_positions_the_same(folder: Path) -> Path:
    return _edit(folder, _indices(lambda inds: np.zeros_like(inds)))


@case
def infinite_position_values(folder: Path) -> Path:
    def edit(ch, m):
        vals = ch["Position_Values"][()]
        vals[:, 0] = np.inf
        ch["Position_Values"][...] = vals

    return _edit(folder, edit)


@case
def nan_in_data(folder: Path) -> Path:
    data = np.random.default_rng(1).standard_normal((3, 4, 5)).astype(np.float32)
    data[1, 2, 3] = np.nan
    return _valid(folder, data=data)


@case
def all_nan_data(folder: Path) -> Path:
    return _valid(folder, data=np.full((3, 4, 5), np.nan, np.float32))


@case
def infinite_data(folder: Path) -> Path:
    data = np.random.default_rng(1).standard_normal((3, 4, 5)).astype(np.float32)
    data[0, 0, 0] = np.inf
    return _valid(folder, data=data)


# ------------------------------------------------------------------------------ filters
@case
def blosc_compressed(folder: Path) -> Path:
    """Fine where hdf5plugin is installed (usidgpu loads it); names the extra where it is not."""
    try:
        import hdf5plugin  # noqa: F401
    except ImportError:
        return _valid(folder)
    return _valid(folder, compression="blosc")


@case
def unknown_filter(folder: Path) -> Path:
    """A filter id no library provides (written as lzf, its id changed in the pipeline message)."""
    path = _valid(folder, compression="lzf")
    # the filter pipeline message: the 2-byte id (lzf: 32000), then the 2-byte length of its name
    return _patch(path, (32000).to_bytes(2, "little") + b"\x08\x00", (32999).to_bytes(2, "little") + b"\x08\x00")


# ------------------------------------------------------------------------------ zarr stores
def _zarr_store(folder: Path) -> Path:
    import usidgpu

    src = _valid(folder, name="src.h5")
    out = folder / "data.zarr"
    usidgpu.storage.h5_to_zarr(src, out)
    src.unlink()
    return out


@case
def zarr_root_json_broken(folder: Path) -> Path:
    store = _zarr_store(folder)
    (store / "zarr.json").write_text('{"zarr_format": 3, "node_type": "gro')
    return store


@case
def zarr_array_json_broken(folder: Path) -> Path:
    store = _zarr_store(folder)
    (store / CH / "Raw_Data" / "zarr.json").write_text("[1, 2")
    return store


@case
def zarr_array_json_huge_shape(folder: Path) -> Path:
    store = _zarr_store(folder)
    meta_path = store / CH / "Position_Indices" / "zarr.json"
    meta = json.loads(meta_path.read_text())
    meta["shape"] = [HUGE, 2]
    meta_path.write_text(json.dumps(meta))
    main_path = store / CH / "Raw_Data" / "zarr.json"
    meta = json.loads(main_path.read_text())
    meta["shape"] = [HUGE, 5]
    main_path.write_text(json.dumps(meta))
    return store


@case
def zarr_chunks_missing(folder: Path) -> Path:
    store = _zarr_store(folder)
    shutil.rmtree(store / CH / "Position_Indices" / "c")
    return store


@case
def zarr_empty_folder(folder: Path) -> Path:
    store = folder / "data.zarr"
    store.mkdir()
    return store


@case
def zarr_json_is_a_list(folder: Path) -> Path:
    store = _zarr_store(folder)
    (store / "zarr.json").write_text("[]")
    return store
