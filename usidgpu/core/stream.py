"""Streaming a 2-D HDF5 dataset in blocks of whole rows (positions) within a memory budget.

The plan
    :func:`plan_blocks` picks the number of rows per block so that all buffers in flight fit the
    budget, and rounds it to whole HDF5 chunks so no chunk is decompressed twice.

The reader
    :func:`iter_blocks` reads each block with ``read_direct`` into a buffer that is reused (no
    allocation per block); compressed chunks are decoded by a pool of threads instead
    (:mod:`usidgpu.core.chunks`), since HDF5 decodes them one at a time on one core. With
    ``prefetch`` a background thread reads block *i+1* while the caller works on block *i*
    (h5py releases the GIL inside HDF5 reads, and NumPy/CuPy release it in
    their kernels, so the two overlap). On a GPU the reads land in page-locked (pinned) host
    buffers and go to the device by asynchronous copies on a separate CUDA stream; the caller's
    stream waits on an event, so the copy of the next block overlaps the compute on this one.

Memory
    Peak memory is ``n_buffers × block`` (plus the same again in pinned host memory on a GPU)
    plus HDF5's chunk cache: within the budget plus a small constant. A yielded block is a view
    of a reused buffer and is valid until the next block is requested; pass ``copy=True`` (or
    copy it yourself) to keep it.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import h5py
import numpy as np

from .chunks import ChunkReader, chunk_reader
from .device import Device, select_device
from .errors import BudgetError, InvalidInput, InvalidType
from .memory import format_bytes, memory_budget

#: Blocks larger than this gain nothing in throughput and delay the first result.
DEFAULT_MAX_BLOCK_BYTES = 64 * 1024**2


@dataclass(frozen=True)
class BlockPlan:
    """Blocks of whole rows covering rows ``[start, stop)`` of a 2-D dataset.

    Attributes
    ----------
    start, stop : int
        Row range covered.
    rows_per_block : int
    row_bytes : int
        Bytes of one row (one position with all its spectroscopic points).
    n_buffers : int
        Buffers the reader keeps in flight (2 with prefetch, else 1).
    """

    start: int
    stop: int
    rows_per_block: int
    row_bytes: int
    n_buffers: int

    @property
    def n_rows(self) -> int:
        return self.stop - self.start

    @property
    def n_blocks(self) -> int:
        return -(-self.n_rows // self.rows_per_block) if self.n_rows else 0

    @property
    def block_bytes(self) -> int:
        return self.rows_per_block * self.row_bytes

    @property
    def peak_bytes(self) -> int:
        """Bytes of all buffers the reader allocates."""
        return self.n_buffers * self.block_bytes

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for a in range(self.start, self.stop, self.rows_per_block):
            yield a, min(a + self.rows_per_block, self.stop)

    def __len__(self) -> int:
        return self.n_blocks


def plan_blocks(
    n_rows: int,
    row_bytes: int,
    budget: int,
    chunk_rows: int | None = None,
    n_buffers: int = 2,
    max_block_bytes: int = DEFAULT_MAX_BLOCK_BYTES,
    start: int = 0,
    stop: int | None = None,
) -> BlockPlan:
    """Plan blocks of whole rows whose buffers fit ``budget``.

    Parameters
    ----------
    n_rows : int
        Rows (positions) in the dataset.
    row_bytes : int
        Bytes per row.
    budget : int
        Bytes the buffers may take together.
    chunk_rows : int, optional
        Rows per HDF5 chunk: blocks are rounded down to whole chunks when they hold at least one.
    n_buffers : int
        Buffers in flight (2 for double buffering).
    max_block_bytes : int
        Upper bound on one block.
    start, stop : int, optional
        Row range to cover (default: all rows).

    Returns
    -------
    BlockPlan

    Raises
    ------
    BudgetError
        When not even one row fits the budget.
    """
    stop = n_rows if stop is None else stop
    if not 0 <= start <= stop <= n_rows:
        raise InvalidInput(f"row range [{start}, {stop}) is outside [0, {n_rows})")
    row_bytes = max(int(row_bytes), 1)
    per_buffer = min(int(budget) // max(n_buffers, 1), max(int(max_block_bytes), row_bytes))
    rows = per_buffer // row_bytes
    if rows < 1:
        raise BudgetError(
            f"memory budget {format_bytes(budget)} is too small: one position takes "
            f"{format_bytes(row_bytes)} and {n_buffers} buffer(s) are needed "
            f"(at least {format_bytes(n_buffers * row_bytes)})"
        )
    if chunk_rows and rows >= chunk_rows:
        rows -= rows % chunk_rows
    rows = max(1, min(rows, max(stop - start, 1)))
    return BlockPlan(start, stop, rows, row_bytes, n_buffers)


class Block(NamedTuple):
    """Rows ``[start, stop)`` of a dataset as a NumPy or CuPy array of shape (stop-start, n_cols)."""

    start: int
    stop: int
    data: Any

    @property
    def rows(self) -> slice:
        return slice(self.start, self.stop)


def _row_bytes(dset: h5py.Dataset) -> int:
    return int(np.prod(dset.shape[1:], dtype=np.int64)) * dset.dtype.itemsize


def plan_for(
    dset: h5py.Dataset,
    budget: int | str | None = None,
    device: str | Device | None = None,
    prefetch: bool = True,
    start: int = 0,
    stop: int | None = None,
    max_block_bytes: int = DEFAULT_MAX_BLOCK_BYTES,
) -> BlockPlan:
    """The :class:`BlockPlan` :func:`iter_blocks` would use for ``dset``."""
    dev = select_device(device)
    nbytes = memory_budget(budget, dev)
    if dev.is_gpu and budget is None:
        # pinned host staging mirrors the device buffers, so it must fit the host too
        nbytes = min(nbytes, memory_budget(None, "cpu"))
    chunk_rows = dset.chunks[0] if dset.chunks else None
    return plan_blocks(
        dset.shape[0], _row_bytes(dset), nbytes, chunk_rows, 2 if prefetch else 1, max_block_bytes, start, stop
    )


class _Buffer:
    """One reusable block buffer: host memory (pinned on GPU), the device copy, and its events."""

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype, gpu: bool):
        self.key = _buffer_key(shape, dtype, gpu)
        self.copied: Any = None  # event: host → device copy finished
        self.released: Any = None  # event: the caller finished with the device array
        if gpu:
            import cupy
            import cupyx

            # page-locked host memory: HDF5 reads into it, the DMA engine copies from it
            self.host = cupyx.empty_pinned(shape, dtype=dtype)
            self.device = cupy.empty(shape, dtype=dtype)
        else:
            self.host = np.empty(shape, dtype=dtype)
            self.device = None


def _buffer_key(shape: tuple[int, ...], dtype: np.dtype, gpu: bool) -> tuple:
    device_id = None
    if gpu:
        import cupy

        device_id = cupy.cuda.Device().id
    dt = np.dtype(dtype)
    return tuple(shape), dt.str if dt.fields is None else str(dt.descr), device_id


class _Slots:
    """The buffers of one streaming pass."""

    def __init__(self, buffers: list[_Buffer], gpu: bool):
        self.buffers = buffers
        self.gpu = gpu
        self.reader: ChunkReader | None = None  # set for the pass when chunks are decoded here
        if gpu:
            import cupy

            self.stream = cupy.cuda.Stream(non_blocking=True)

    def __len__(self) -> int:
        return len(self.buffers)

    def fill(self, k: int, dset: h5py.Dataset, a: int, b: int) -> None:
        """Read rows a:b into slot k (and start its copy to the device)."""
        buf, n = self.buffers[k], b - a
        if self.gpu and buf.copied is not None:
            buf.copied.synchronize()  # the previous upload from this pinned buffer is done
        if n and self.reader is not None:
            self.reader.read_rows(a, b, buf.host)  # compressed chunks, decoded in parallel
        elif n:
            dset.read_direct(buf.host, np.s_[a:b], np.s_[0:n])
        if self.gpu:
            if buf.released is not None:
                self.stream.wait_event(buf.released)
            buf.device[:n].set(buf.host[:n], stream=self.stream)
            buf.copied = self.stream.record()

    def view(self, k: int, n: int) -> Any:
        """The data of slot k as the caller sees it (device arrays wait for their upload)."""
        buf = self.buffers[k]
        if self.gpu:
            import cupy

            cupy.cuda.get_current_stream().wait_event(buf.copied)
            return buf.device[:n]
        return buf.host[:n]

    def release(self, k: int) -> None:
        if self.gpu:
            import cupy

            self.buffers[k].released = cupy.cuda.get_current_stream().record()


class BufferPool:
    """Keeps the buffers of finished passes for the next pass over the same dataset.

    Fresh buffers cost page faults (and, on a GPU, pinned-memory registration) on every pass:
    about a tenth of a warm-cache read, which multi-pass algorithms (randomized SVD, k-means)
    would pay again and again. A pass checks its buffers out and returns them when it ends, so
    two passes running at once never share one. At most ``keep`` buffers of the most recent
    shape are kept, i.e. one double-buffered pass's worth (``plan.peak_bytes``).
    """

    def __init__(self, keep: int = 2) -> None:
        self.keep = keep
        self._free: list[_Buffer] = []
        self._lock = threading.Lock()

    def take(self, shape: tuple[int, ...], dtype: np.dtype, n: int, gpu: bool) -> _Slots:
        key = _buffer_key(shape, dtype, gpu)
        with self._lock:
            reuse = [b for b in self._free if b.key == key][:n]
            # buffers of another shape are dropped before new ones are allocated
            self._free = [b for b in self._free if b.key == key and b not in reuse]
        return _Slots(reuse + [_Buffer(shape, dtype, gpu) for _ in range(n - len(reuse))], gpu)

    def give(self, slots: _Slots) -> None:
        with self._lock:
            key = slots.buffers[0].key if slots.buffers else None
            same = [b for b in self._free if b.key == key]
            self._free = (slots.buffers + same)[: self.keep]

    def clear(self) -> None:
        """Free the kept buffers."""
        with self._lock:
            self._free = []


def iter_blocks(
    dset: h5py.Dataset,
    budget: int | str | None = None,
    device: str | Device | None = None,
    prefetch: bool = True,
    copy: bool = False,
    progress: bool | str = False,
    start: int = 0,
    stop: int | None = None,
    max_block_bytes: int = DEFAULT_MAX_BLOCK_BYTES,
    pool: BufferPool | None = None,
) -> Iterator[Block]:
    """Iterate over blocks of whole rows of a 2-D dataset within a memory budget.

    Parameters
    ----------
    dset : h5py.Dataset
        2-D dataset (positions × spectroscopic points).
    budget : int or str, optional
        Bytes for the buffers; default a fraction of free memory on ``device``.
    device : {"auto", "cpu", "gpu"} or Device, optional
        Where the blocks are delivered: NumPy arrays on the CPU, CuPy arrays on the GPU.
    prefetch : bool
        Read the next block in a background thread while the caller works on this one.
    copy : bool
        Yield independent arrays instead of views of reused buffers.
    progress : bool or str
        Show a tqdm progress bar (a string is its description); it appears only for passes
        longer than a second.
    start, stop : int, optional
        Row range to stream (default: all rows).
    max_block_bytes : int
        Upper bound on one block.
    pool : BufferPool, optional
        Take the buffers from (and return them to) this pool, so repeated passes reuse them.

    Yields
    ------
    Block
        ``(start, stop, data)``; ``data`` is valid until the next block is requested unless
        ``copy`` is set.
    """
    dev = select_device(device)
    if dset.ndim != 2:
        raise InvalidInput(f"{dset.name}: expected a 2-D dataset, got shape {dset.shape}")
    if dev.is_gpu and dset.dtype.fields is not None and dev.requested == "auto":
        # compound rows (e.g. band-excitation data) cannot live in a CuPy array: "auto" means
        # the device that can take them, the CPU
        dev = select_device("cpu")
    if dev.is_gpu and dset.dtype.fields is not None:
        raise InvalidType(
            f"{dset.name}: compound dtype {dset.dtype} cannot live in a CuPy array; stream it with device='cpu'"
        )
    plan = plan_for(dset, budget, dev, prefetch, start, stop, max_block_bytes)
    if plan.n_blocks == 0:
        return
    n_slots = plan.n_buffers
    shape = (plan.rows_per_block,) + dset.shape[1:]
    # buffers in native byte order: read_direct converts big-endian files, CuPy has no other order
    dtype = dset.dtype if dset.dtype.fields is not None else dset.dtype.newbyteorder("=")
    pool = pool if pool is not None else BufferPool()
    slots = pool.take(shape, dtype, n_slots, dev.is_gpu)
    slots.reader = chunk_reader(dset)
    bar = progress_bar(progress, plan)
    try:
        source = _prefetched(slots, dset, plan) if prefetch else _inline(slots, dset, plan)
        try:
            for a, b, k in source:
                data = slots.view(k, b - a)
                yield Block(a, b, data.copy() if copy else data)
                slots.release(k)
                if bar is not None:
                    bar.update(b - a)
        finally:
            source.close()  # joins the reader thread
            if slots.gpu:
                # an upload queued for a block nobody will take must finish before its device
                # buffer can be freed or reused
                slots.stream.synchronize()
        pool.give(slots)
    finally:
        if slots.reader is not None:
            slots.reader.close()
            slots.reader = None
        if bar is not None:
            bar.close()


def _inline(slots: _Slots, dset: h5py.Dataset, plan: BlockPlan) -> Generator[tuple[int, int, int], None, None]:
    for a, b in plan:
        slots.fill(0, dset, a, b)
        yield a, b, 0


_DONE = object()


def _prefetched(slots: _Slots, dset: h5py.Dataset, plan: BlockPlan) -> Generator[tuple[int, int, int], None, None]:
    """Blocks read by a background thread, at most ``len(slots)`` in flight."""
    free: queue.Queue = queue.Queue()
    for k in range(len(slots)):
        free.put(k)
    ready: queue.Queue = queue.Queue()
    stop = threading.Event()
    device_id = None
    if slots.gpu:
        import cupy

        device_id = cupy.cuda.Device().id

    def work() -> None:
        try:
            if device_id is not None:
                import cupy

                cupy.cuda.Device(device_id).use()
            for a, b in plan:
                k = free.get()
                if stop.is_set():
                    return
                slots.fill(k, dset, a, b)
                ready.put((a, b, k))
            ready.put(_DONE)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            ready.put(exc)

    thread = threading.Thread(target=work, name="usidgpu-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = ready.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            a, b, k = item
            yield a, b, k
            free.put(k)
    finally:
        stop.set()
        free.put(-1)  # wake the worker if it waits for a slot
        thread.join()


def progress_bar(progress: bool | str, plan: BlockPlan) -> Any:
    """A tqdm bar over the rows of ``plan`` that shows only for passes longer than a second
    (``progress``: False for none, True or a description); None when there is none."""
    if not progress:
        return None
    from tqdm.auto import tqdm

    desc = progress if isinstance(progress, str) else "reading"
    return tqdm(total=plan.n_rows, unit="pos", desc=desc, delay=1.0, leave=False, dynamic_ncols=True)
