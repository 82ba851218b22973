"""Compressed chunks decoded in parallel threads equal h5py's read bit for bit, for every filter
pipeline decoded here; any other pipeline falls back to h5py and says why at debug level."""

from __future__ import annotations

import logging

import h5py
import numpy as np
import pytest

from usidgpu.core import chunks
from usidgpu.core.chunks import chunk_reader
from usidgpu.core.errors import FileProblem
from usidgpu.core.stream import iter_blocks

hdf5plugin = pytest.importorskip("hdf5plugin")
pytest.importorskip("imagecodecs")  # lzf and lz4 (the compression extra)

PIPELINES = {
    "gzip": {"compression": "gzip", "compression_opts": 4},
    "gzip+shuffle": {"compression": "gzip", "compression_opts": 6, "shuffle": True},
    "zstd": dict(hdf5plugin.Zstd()),
    "lzf": {"compression": "lzf"},
    "lzf+shuffle": {"compression": "lzf", "shuffle": True},
    "lz4": dict(hdf5plugin.LZ4()),
    "blosc-lz4-shuffle": dict(hdf5plugin.Blosc(cname="lz4", clevel=5, shuffle=hdf5plugin.Blosc.SHUFFLE)),
    "blosc-zstd-bitshuffle": dict(hdf5plugin.Blosc(cname="zstd", clevel=3, shuffle=hdf5plugin.Blosc.BITSHUFFLE)),
}
DTYPES = [np.float32, np.float64, np.int16, np.uint8, np.complex64]


def values(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) * 100
    if np.dtype(dtype).kind == "c":
        return (x + 1j * rng.standard_normal(shape)).astype(dtype)
    return np.round(x).astype(dtype) if np.dtype(dtype).kind in "iu" else x.astype(dtype)


@pytest.mark.parametrize("name", PIPELINES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_rows_decoded_in_threads_equal_h5py(tmp_path, name, dtype):
    data = values((203, 77), dtype)  # chunks that do not divide the shape: partial edge chunks
    with h5py.File(tmp_path / "c.h5", "w") as f:
        f.create_dataset("d", data=data, chunks=(16, 30), **PIPELINES[name])
    with h5py.File(tmp_path / "c.h5", "r") as f:
        d = f["d"]
        reader = chunk_reader(d, threads=3)
        assert reader is not None, name
        try:
            for a, b in [(0, 203), (5, 6), (15, 17), (190, 203), (31, 97)]:
                out = np.full((b - a, 77), 7, dtype=dtype)
                reader.read_rows(a, b, out)
                np.testing.assert_array_equal(out, d[a:b])
                assert out.tobytes() == d[a:b].tobytes()  # bit for bit (NaN payloads, -0.0)
        finally:
            reader.close()


@pytest.mark.parametrize("name", PIPELINES)
def test_chunks_of_whole_rows_decoded_in_place_equal_h5py(tmp_path, name):
    # chunks spanning every column are decoded straight into the caller's rows where the codec
    # can write into a buffer; edge chunks and shuffled ones go through a copy
    data = values((203, 40), np.float32, seed=4)
    with h5py.File(tmp_path / "c.h5", "w") as f:
        f.create_dataset("d", data=data, chunks=(16, 40), **PIPELINES[name])
    with h5py.File(tmp_path / "c.h5", "r") as f:
        reader = chunk_reader(f["d"], threads=2)
        try:
            for a, b in [(0, 203), (16, 48), (3, 200)]:
                out = np.full((b - a, 40), 7, dtype=np.float32)
                reader.read_rows(a, b, out)
                assert out.tobytes() == data[a:b].tobytes()
        finally:
            reader.close()


def test_lzf_chunks_stored_raw_are_read_as_stored(tmp_path):
    # h5py's lzf filter is optional: a chunk it cannot shrink (full-precision noise) is stored
    # as it is, marked in the chunk's filter mask, beside compressed ones
    data = values((64, 50), np.float64, seed=2)
    data[:16] = 1.0  # the first chunk compresses, the others do not
    with h5py.File(tmp_path / "c.h5", "w") as f:
        f.create_dataset("d", data=data, chunks=(16, 50), compression="lzf")
    with h5py.File(tmp_path / "c.h5", "r") as f:
        d = f["d"]
        masks = [d.id.read_direct_chunk((i, 0))[0] for i in range(0, 64, 16)]
        assert masks[0] == 0 and any(masks[1:])
        reader = chunk_reader(d, threads=2)
        out = np.empty((64, 50))
        reader.read_rows(0, 64, out)
        reader.close()
        assert out.tobytes() == data.tobytes()


def test_chunks_never_written_hold_the_fill_value(tmp_path):
    with h5py.File(tmp_path / "c.h5", "w") as f:
        d = f.create_dataset("d", shape=(64, 20), dtype="f4", chunks=(8, 20), compression="gzip", fillvalue=-3.5)
        d[8:16] = 1.0  # one chunk written, the others not
    with h5py.File(tmp_path / "c.h5", "r") as f:
        reader = chunk_reader(f["d"], threads=2)
        out = np.zeros((64, 20), "f4")
        reader.read_rows(0, 64, out)
        reader.close()
        np.testing.assert_array_equal(out, f["d"][()])


@pytest.mark.parametrize(
    "options, why",
    [({}, "contiguous"), ({"chunks": (8, 10)}, "uncompressed"),
     ({"chunks": (8, 10), **hdf5plugin.Bitshuffle()}, "bitshuffle"),
     ({"chunks": (8, 10), "compression": "gzip", "fletcher32": True}, "checksum"),
     ({"chunks": (8, 10), "compression": "gzip", "dtype": ">f4"}, "big-endian")],
)  # fmt: skip
def test_what_is_not_decoded_here_is_left_to_h5py(tmp_path, options, why, caplog):
    options = dict(options)
    dtype = options.pop("dtype", "<f4")
    with h5py.File(tmp_path / "c.h5", "w") as f:
        f.create_dataset("d", data=values((40, 20), np.float32).astype(dtype), **options)
    with h5py.File(tmp_path / "c.h5", "r") as f, caplog.at_level(logging.DEBUG, logger="usidgpu.chunks"):
        assert chunk_reader(f["d"], threads=4) is None, why
        if why in ("bitshuffle", "checksum"):
            assert "read through HDF5" in caplog.text
        # and the stream still reads it, through h5py
        got = np.concatenate([b.data for b in iter_blocks(f["d"], budget="4kB", copy=True)])
        np.testing.assert_array_equal(got, f["d"][()])


def test_one_thread_means_hdf5s_own_path(tmp_path, monkeypatch):
    with h5py.File(tmp_path / "c.h5", "w") as f:
        f.create_dataset("d", data=values((40, 20), np.float32), chunks=(8, 20), compression="gzip")
    monkeypatch.setenv(chunks.THREADS_ENV, "1")
    with h5py.File(tmp_path / "c.h5", "r") as f:
        assert chunk_reader(f["d"]) is None


@pytest.mark.parametrize("prefetch", [True, False])
def test_streamed_blocks_of_a_compressed_dataset_equal_h5py(tmp_path, prefetch):
    data = values((1000, 130), np.float32, seed=3)
    with h5py.File(tmp_path / "c.h5", "w") as f:
        f.create_dataset("d", data=data, chunks=(37, 130), compression="gzip", shuffle=True)
    with h5py.File(tmp_path / "c.h5", "r") as f:
        blocks = list(iter_blocks(f["d"], budget="64kB", prefetch=prefetch, copy=True))
        assert len(blocks) > 3
        np.testing.assert_array_equal(np.concatenate([b.data for b in blocks]), data)


def test_a_damaged_chunk_is_an_error_not_garbage(tmp_path):
    data = values((64, 32), np.float32)
    with h5py.File(tmp_path / "c.h5", "w") as f:
        d = f.create_dataset("d", data=data, chunks=(16, 32), compression="gzip")
        offset = d.id.get_chunk_info(1).byte_offset
    raw = bytearray((tmp_path / "c.h5").read_bytes())
    raw[offset + 10 : offset + 40] = bytes(30)  # scribble over the second chunk's deflate stream
    (tmp_path / "c.h5").write_bytes(bytes(raw))
    with h5py.File(tmp_path / "c.h5", "r") as f:
        reader = chunk_reader(f["d"], threads=2)
        with pytest.raises(FileProblem, match=r"chunk at \(16, 0\) of /d cannot be decoded; the file is damaged"):
            reader.read_rows(0, 64, np.empty((64, 32), np.float32))
        reader.close()
        with pytest.raises(OSError):
            f["d"][()]


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.int16, np.complex64])
def test_chunks_compressed_in_threads_read_back_through_hdf5(tmp_path, shuffle, dtype):
    from usidgpu.core.chunks import write_compressed

    data = values((203, 77), dtype, seed=5)
    with h5py.File(tmp_path / "w.h5", "w") as f:
        d = f.create_dataset("d", shape=data.shape, dtype=dtype, chunks=(16, 30), compression="gzip",
                             compression_opts=5, shuffle=shuffle)  # fmt: skip
        assert write_compressed(d, data, threads=3)
        f.create_dataset("ref", data=data, chunks=(16, 30), compression="gzip", compression_opts=5, shuffle=shuffle)
    with h5py.File(tmp_path / "w.h5", "r") as f:
        np.testing.assert_array_equal(f["d"][()], data)  # HDF5's own decoder reads them
        assert f["d"].id.get_storage_size() == f["ref"].id.get_storage_size()  # zlib at the same level


@pytest.mark.parametrize("name", [p for p in PIPELINES if not p.startswith("gzip")])
@pytest.mark.parametrize("dtype", [np.float32, np.int16])
def test_other_codecs_compressed_in_threads_read_back_through_hdf5(tmp_path, name, dtype):
    from usidgpu.core.chunks import write_compressed

    data = values((203, 77), dtype, seed=6)
    data[:32] = 0  # chunks that shrink beside (for lzf) chunks that do not
    with h5py.File(tmp_path / "w.h5", "w") as f:
        d = f.create_dataset("d", shape=data.shape, dtype=dtype, chunks=(16, 30), **PIPELINES[name])
        assert write_compressed(d, data, threads=3)
    with h5py.File(tmp_path / "w.h5", "r") as f:
        d = f["d"]
        np.testing.assert_array_equal(d[()], data)  # HDF5's own filters (hdf5plugin, h5py) read them
        assert d.id.get_storage_size() < data.nbytes  # compressed, not stored raw everywhere
        reader = chunk_reader(d, threads=2)  # and the threads read them back too
        out = np.empty_like(data)
        reader.read_rows(0, 203, out)
        reader.close()
        np.testing.assert_array_equal(out, data)


def test_write_main_compresses_in_threads_and_declines_other_filters(tmp_path):
    import usidgpu
    from usidgpu import Dimension
    from usidgpu.core.chunks import write_compressed

    data = values((40, 30, 50), np.float32, seed=6)
    pos, spec = [Dimension("Y", "nm", 40), Dimension("X", "nm", 30)], [Dimension("Bias", "V", 50)]
    with h5py.File(tmp_path / "m.h5", "w") as f:
        m = usidgpu.write_main(f, "Raw_Data", data, "Current", "nA", pos, spec, compression="gzip")
        np.testing.assert_array_equal(m.to_ndim(), data)
        other = f.create_dataset("bs", shape=(10, 10), dtype="f4", chunks=(5, 5), **hdf5plugin.Bitshuffle())
        assert not write_compressed(other, np.zeros((10, 10), "f4"), threads=2)  # left to h5py
