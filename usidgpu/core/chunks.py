"""Compressed HDF5 chunks decoded (and written) in parallel threads.

HDF5 decodes the chunks of a read one after another on the calling thread, so a gzip-compressed
dataset streams at what one core inflates (~0.3 GB/s) however many cores wait. Here the raw
chunks are fetched with ``read_direct_chunk`` (HDF5 I/O only, cheap) and decoded by a pool of
threads — the codecs release the GIL — then each copied into its place in the caller's buffer.

Written here because no library does it for HDF5: h5py exposes the raw chunks, the codecs come
from well-kept libraries (``isal`` for deflate when installed, else the standard ``zlib``;
``numcodecs`` for zstd and blosc; ``imagecodecs`` for h5py's lzf and hdf5plugin's lz4, whose
HDF5 framing it reads), and this module only orders the work. Only the filter pipelines listed
in :data:`DECODERS` are decoded here, and only where their library is installed; any other
(szip, fletcher32, scale-offset, bitshuffle, unknown plugins) makes :func:`chunk_reader` return
None and the caller reads through h5py as before, saying why at debug level. Values are bit for
bit those of h5py.

Writing is the mirror image (:func:`write_compressed`): a whole array's chunks are compressed by
threads and stored with ``write_direct_chunk``, so translating or writing a compressed file is not
bound to one core either.
"""

from __future__ import annotations

import logging
import os
import threading
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import h5py
import numpy as np

from .errors import FileProblem

log = logging.getLogger("usidgpu.chunks")

#: HDF5 filter ids (h5py's lzf; hdf5plugin's lz4, blosc, zstd).
DEFLATE, SHUFFLE, FLETCHER32, LZF, LZ4, ZSTD, BLOSC = 1, 2, 3, 32000, 32004, 32015, 32001

#: Threads decoding chunks (default: the CPUs this process may use, at most 16).
THREADS_ENV = "USIDGPU_DECODE_THREADS"


#: A decoder: (stored bytes, bytes of the decoded chunk, a buffer of that size or None) → the
#: decoded bytes (``out`` itself where one was given and the codec writes into it).
Decoder = Callable[[Any, int, Any], Any]


def _inflate() -> Decoder:
    try:
        from isal import isal_zlib  # ISA-L: several times zlib's inflate speed, same bytes

        return lambda raw, _size, _out: isal_zlib.decompress(raw)
    except ImportError:
        return lambda raw, _size, _out: zlib.decompress(raw)


def _numcodecs(name: str) -> Decoder | None:
    try:
        import numcodecs
    except ImportError:
        return None
    codec = {"zstd": numcodecs.Zstd, "blosc": numcodecs.Blosc}[name]()
    return lambda raw, _size, out: codec.decode(raw, out=out)


def _imagecodecs(name: str) -> Decoder | None:
    try:
        import imagecodecs
    except ImportError:
        return None
    if name == "lzf":  # LZF keeps no decoded size: the chunk's is the output's
        return lambda raw, size, out: imagecodecs.lzf_decode(raw, out=size if out is None else out)
    return lambda raw, _size, out: imagecodecs.lz4h5_decode(raw, out=out)  # sizes in the HDF5 framing


def _decoders() -> dict[int, Decoder | None]:
    return {
        DEFLATE: _inflate(),
        ZSTD: _numcodecs("zstd"),
        BLOSC: _numcodecs("blosc"),
        LZF: _imagecodecs("lzf"),
        LZ4: _imagecodecs("lz4"),
    }


#: The compression filters decoded here (a pipeline may add byte shuffling before one of them).
DECODERS = (DEFLATE, ZSTD, BLOSC, LZF, LZ4)


def default_threads() -> int:
    """Threads for decoding: ``$USIDGPU_DECODE_THREADS``, else the usable CPUs (≤ 16)."""
    text = os.environ.get(THREADS_ENV)
    if text:
        return max(1, int(text))
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(16, cpus))


def unshuffle(raw: bytes, itemsize: int) -> bytes:
    """Undo HDF5's shuffle filter: the bytes were grouped by their place within each element."""
    n = len(raw) // itemsize
    if itemsize == 1 or n == 0:
        return raw
    body = np.frombuffer(raw, dtype=np.uint8, count=n * itemsize)
    out = body.reshape(itemsize, n).T.tobytes()
    return out + raw[n * itemsize :]  # a tail that is no whole element is stored unshuffled


class ChunkReader:
    """Rows of a chunked, compressed 2-D dataset read with its chunks decoded in parallel.

    Use :func:`chunk_reader` to get one (None where this module cannot decode the dataset).
    """

    def __init__(self, dset: h5py.Dataset, pipeline: list[int], threads: int) -> None:
        self.dset = dset
        self.chunks: tuple[int, int] = dset.chunks
        self.dtype = dset.dtype
        self.pipeline = pipeline  # filter ids in the order they were applied when writing
        self.threads = threads
        decoders = _decoders()
        # reading undoes the pipeline backwards; bit i of a chunk's filter mask says filter i was
        # skipped for that chunk (an optional filter that could not shrink it, as h5py's lzf)
        self._steps = [(1 << i, f, decoders.get(f)) for i, f in reversed(list(enumerate(pipeline)))]
        self._io = threading.Lock()  # HDF5 serializes its calls anyway; one fetch at a time
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="usidgpu-decode")
        self._chunk_bytes = int(np.prod(self.chunks)) * self.dtype.itemsize
        self._fill = np.zeros((), dtype=self.dtype)
        if dset.fillvalue is not None:
            self._fill = np.asarray(dset.fillvalue, dtype=self.dtype)

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def _chunk(self, offset: tuple[int, int], dest: np.ndarray | None = None) -> np.ndarray | None:
        """One chunk as an array of the chunk shape (None: never written, it holds the fill value).

        ``dest``, a C-contiguous array of the chunk's shape, may receive the decoded values
        directly (then ``dest`` is returned): a fast codec's output is not copied once more.
        """
        with self._io:
            try:
                mask, raw = self.dset.id.read_direct_chunk(offset)
            except (KeyError, OSError, ValueError, RuntimeError):
                # "chunk storage is not allocated": a chunk never written holds the fill value
                # (a damaged chunk index fails the same way in HDF5's own read: checked there)
                if self.dset.id.get_chunk_info_by_coord(offset).byte_offset is not None:
                    raise
                return None
        active = [(fid, decode) for bit, fid, decode in self._steps if not mask & bit]
        target = None if dest is None else dest.reshape(-1).view(np.uint8)
        data: Any = raw
        try:
            for i, (fid, decode) in enumerate(active):
                if fid == SHUFFLE:
                    data = unshuffle(bytes(data), self.dtype.itemsize)
                else:  # the last step writes into dest when there is one
                    into = target if i == len(active) - 1 else None
                    data = decode(data, self._chunk_bytes, into)  # type: ignore[misc]
            if target is not None and data is target:
                return dest
            if len(data) != self._chunk_bytes:
                raise ValueError(f"{len(data)} bytes decoded, {self._chunk_bytes} expected")
            return np.frombuffer(data, dtype=self.dtype).reshape(self.chunks)
        except Exception as exc:  # zlib.error, IsalError, a blosc/zstd/lz4/lzf error, a short chunk
            raise FileProblem(
                f"{self.dset.file.filename}: the compressed chunk at {offset} of {self.dset.name} cannot be "
                f"decoded; the file is damaged ({type(exc).__name__}: {exc})"
            ) from None

    def read_rows(self, a: int, b: int, out: np.ndarray) -> None:
        """Rows ``a:b`` (all columns) into ``out[: b - a]`` (native byte order, C-contiguous)."""
        rows, cols = self.chunks
        n_rows, n_cols = self.dset.shape
        if b <= a:
            return
        offsets = [(i, j) for i in range((a // rows) * rows, b, rows) for j in range(0, n_cols, cols)]
        whole_rows = cols == n_cols and out.flags.c_contiguous

        def place(offset: tuple[int, int]) -> None:
            i, j = offset
            r0, r1 = max(a, i), min(b, i + rows, n_rows)
            c1 = min(j + cols, n_cols)
            target = out[r0 - a : r1 - a, j:c1]
            # a chunk of whole rows that lies entirely in the block is decoded in its place
            inside = whole_rows and r0 == i and r1 == i + rows
            chunk = self._chunk(offset, target if inside else None)
            if chunk is None:
                target[...] = self._fill
            elif chunk is not target:
                target[...] = chunk[r0 - i : r1 - i, : c1 - j]

        for _ in self._pool.map(place, offsets):  # re-raises a decoding error here
            pass


def chunk_reader(dset: h5py.Dataset, threads: int | None = None) -> ChunkReader | None:
    """A :class:`ChunkReader` for ``dset``, or None when its chunks are better read by HDF5
    itself: not chunked, not compressed, one thread, not 2-D, or a filter not decoded here."""
    threads = threads or default_threads()
    if not isinstance(dset, h5py.Dataset) or dset.chunks is None or dset.ndim != 2 or threads < 2:
        return None
    plist = dset.id.get_create_plist()
    pipeline = [plist.get_filter(k)[0] for k in range(plist.get_nfilters())]
    if not pipeline or pipeline == [SHUFFLE]:
        return None  # nothing to decode: HDF5 reads it as fast as memory allows
    decoders = _decoders()
    unsupported = [f for f in pipeline if f != SHUFFLE and (f not in DECODERS or decoders.get(f) is None)]
    if unsupported or dset.dtype.kind not in "biufc" or not dset.dtype.isnative:
        log.debug("%s: filters %s read through HDF5 (decoded here: %s)", dset.name, pipeline, DECODERS)
        return None
    return ChunkReader(dset, pipeline, threads)


def shuffle(raw: bytes, itemsize: int) -> bytes:
    """HDF5's shuffle filter: the bytes grouped by their place within each element."""
    n = len(raw) // itemsize
    if itemsize == 1 or n == 0:
        return raw
    body = np.frombuffer(raw, dtype=np.uint8, count=n * itemsize)
    return body.reshape(n, itemsize).T.tobytes() + raw[n * itemsize :]


#: Blosc's compressor codes in its HDF5 filter's parameters.
BLOSC_COMPRESSORS = {0: "blosclz", 1: "lz4", 2: "lz4hc", 3: "snappy", 4: "zlib", 5: "zstd"}


def _encoder(filter_id: int, values: tuple[int, ...], dtype: np.dtype) -> Callable[[bytes], bytes] | None:
    """The compressor of one HDF5 filter, with the dataset's parameters (None: not written here,
    or its library is not installed). Each makes the bytes the filter itself would store."""
    try:
        if filter_id == DEFLATE:
            level = int(values[0]) if values else 4
            return lambda raw: zlib.compress(raw, level)  # zlib at that level: the file h5py would write
        if filter_id == ZSTD:
            import numcodecs

            zstd = numcodecs.Zstd(level=int(values[0]) if values else 3)
            return lambda raw: bytes(zstd.encode(raw))
        if filter_id == BLOSC and len(values) >= 7 and int(values[6]) in BLOSC_COMPRESSORS:
            import numcodecs

            blosc = numcodecs.Blosc(
                cname=BLOSC_COMPRESSORS[int(values[6])], clevel=int(values[4]), shuffle=int(values[5])
            )  # the shuffle within blosc works on elements: typed input
            return lambda raw: bytes(blosc.encode(np.frombuffer(raw, dtype=dtype)))
        if filter_id == LZ4:
            import imagecodecs

            return lambda raw: bytes(imagecodecs.lz4h5_encode(raw))
        if filter_id == LZF:
            import imagecodecs

            return lambda raw: bytes(imagecodecs.lzf_encode(raw))
    except ImportError:
        return None
    return None


def write_compressed(dset: h5py.Dataset, array: np.ndarray, threads: int | None = None) -> bool:
    """Write a whole 2-D array into a new compressed chunked dataset with its chunks compressed
    in parallel threads and stored by ``write_direct_chunk``. Returns False, writing nothing,
    when the dataset is not of that kind (the caller then writes through h5py).

    Pipelines written here: one of deflate, zstd, blosc, lz4 or lzf, optionally after HDF5's
    byte shuffle, with the dataset's own parameters (zlib at the dataset's deflate level: the
    file is the one h5py would write). An lzf chunk that does not shrink is stored as it is,
    marked in its filter mask, as h5py's optional lzf filter does.
    """
    threads = threads or default_threads()
    if dset.chunks is None or dset.ndim != 2 or threads < 2 or array.shape != dset.shape:
        return False
    plist = dset.id.get_create_plist()
    filters = [plist.get_filter(k) for k in range(plist.get_nfilters())]
    ids = [f[0] for f in filters]
    if ids[:1] == [SHUFFLE]:
        ids, filters = ids[1:], filters[1:]
    if len(ids) != 1 or dset.dtype.kind not in "biufc" or not dset.dtype.isnative:
        return False
    encode = _encoder(ids[0], tuple(filters[0][2]), dset.dtype)
    if encode is None:
        return False
    shuffled = len(ids) != plist.get_nfilters()
    optional_bit = 1 << (plist.get_nfilters() - 1)  # the codec's place in the pipeline
    data = np.ascontiguousarray(array, dtype=dset.dtype)
    rows, cols = dset.chunks
    n_rows, n_cols = dset.shape
    io_lock = threading.Lock()

    def store(offset: tuple[int, int]) -> None:
        i, j = offset
        part = data[i : i + rows, j : j + cols]
        if part.shape != (rows, cols):  # an edge chunk is stored whole, padded with zeros
            full = np.zeros((rows, cols), dtype=dset.dtype)
            full[: part.shape[0], : part.shape[1]] = part
            part = full
        raw = np.ascontiguousarray(part).tobytes()
        if shuffled:
            raw = shuffle(raw, dset.dtype.itemsize)
        packed, mask = encode(raw), 0  # the codecs release the GIL: the threads compress at once
        if ids[0] == LZF and len(packed) >= len(raw):
            packed, mask = raw, optional_bit
        with io_lock:
            dset.id.write_direct_chunk(offset, packed, filter_mask=mask)

    offsets = [(i, j) for i in range(0, n_rows, rows) for j in range(0, n_cols, cols)]
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="usidgpu-compress") as pool:
        for _ in pool.map(store, offsets):
            pass
    return True


__all__ = ["DECODERS", "ChunkReader", "chunk_reader", "default_threads", "shuffle", "unshuffle", "write_compressed"]
