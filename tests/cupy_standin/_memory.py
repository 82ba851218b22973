"""Device memory accounting, CuPy's memory pools, and pinned host memory.

Imitates ``cupy/cuda/memory.pyx`` and ``cupy/cuda/pinned_memory.pyx`` as far as callers can see:

* every live device array counts in the default pool's ``used_bytes`` (rounded up to 512 bytes,
  CuPy's allocation unit); when it dies its bytes move to ``free_bytes`` (the pool keeps freed
  blocks) until ``free_all_blocks``; ``Device().mem_info`` reports the configured device size
  minus both, so budgets computed from free memory behave as on a GPU;
* an allocation beyond the device size first frees the pool's cached blocks, then raises
  ``OutOfMemoryError`` with CuPy's message;
* pinned host memory is a NumPy array on a :class:`PinnedMemoryPointer` buffer, so
  :func:`is_pinned` can tell pinned from pageable memory (an asynchronous copy reads pinned
  memory late, pageable memory at the call).
"""

from __future__ import annotations

import ctypes
import threading
from typing import Any

import numpy as np

from ._config import CONFIG

_UNIT = 512


def _round(n: int) -> int:
    return -(-max(int(n), 1) // _UNIT) * _UNIT


class OutOfMemoryError(MemoryError):
    """``cupy.cuda.memory.OutOfMemoryError(size, total, limit=0)`` with CuPy's message."""

    def __init__(self, size: int, total: int, limit: int = 0):
        self._size, self._total, self._limit = size, total, limit
        if limit == 0:
            msg = f"Out of memory allocating {size:,} bytes"
            if total != -1:
                msg += f" (allocated so far: {total:,} bytes)."
        else:
            msg = (
                f"Out of memory allocating {size:,} bytes (allocated so far: {total:,} bytes, "
                f"limit set to: {limit:,} bytes)."
            )
        super().__init__(msg)

    def __reduce__(self):
        return (type(self), (self._size, self._total, self._limit))


class MemoryPool:
    """The default device memory pool (``cupy.get_default_memory_pool()``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._used = 0
        self._free = 0
        self._blocks = 0
        self._limit = 0

    def malloc(self, size: int) -> int:
        """Account for ``size`` bytes; returns the rounded size to give back to :meth:`_release`."""
        n = _round(size)
        with self._lock:
            limit = self._limit or CONFIG.total_memory
            if CONFIG.out_of_memory and self._used + n > limit:
                self._free = self._blocks = 0  # CuPy frees the cached blocks and retries first
                raise OutOfMemoryError(n, self._used, self._limit)
            if self._free >= n:  # a cached block is reused
                self._free -= n
                self._blocks = max(self._blocks - 1, 0)
            elif self._used + self._free + n > CONFIG.total_memory:
                self._free = self._blocks = 0
            self._used += n
        return n

    def _release(self, n: int) -> None:
        with self._lock:
            self._used -= n
            self._free += n
            self._blocks += 1

    def used_bytes(self) -> int:
        return self._used

    def free_bytes(self) -> int:
        return self._free

    def total_bytes(self) -> int:
        return self._used + self._free

    def n_free_blocks(self) -> int:
        return self._blocks

    def free_all_blocks(self, stream: Any = None) -> None:
        with self._lock:
            self._free, self._blocks = 0, 0

    def free_all_free(self) -> None:
        self.free_all_blocks()

    def set_limit(self, size: int | None = None, fraction: float | None = None) -> None:
        if size is not None and fraction is not None:
            raise ValueError("size and fraction cannot be specified at one time")
        self._limit = int(size) if size is not None else int((fraction or 0) * CONFIG.total_memory)

    def get_limit(self) -> int:
        return self._limit


class PinnedMemoryPointer(bytearray):
    """A page-locked host buffer (here: a bytearray that is known to be "pinned")."""

    @property
    def ptr(self) -> int:
        return ctypes.addressof(ctypes.c_char.from_buffer(self)) if len(self) else 0

    @property
    def size(self) -> int:
        return len(self)

    def __repr__(self) -> str:
        return f"<PinnedMemoryPointer {len(self)} bytes>"


class PinnedMemoryPool:
    """``cupy.get_default_pinned_memory_pool()``."""

    def __init__(self) -> None:
        self._used = 0

    def malloc(self, size: int) -> PinnedMemoryPointer:
        return PinnedMemoryPointer(int(size))

    def free_all_blocks(self) -> None:
        pass

    def n_free_blocks(self) -> int:
        return 0

    def used_bytes(self) -> int:
        return self._used

    def free_bytes(self) -> int:
        return 0

    def total_bytes(self) -> int:
        return self._used


DEFAULT_POOL = MemoryPool()
DEFAULT_PINNED_POOL = PinnedMemoryPool()


def alloc_pinned_memory(size: int) -> PinnedMemoryPointer:
    """``cupy.cuda.alloc_pinned_memory``."""
    return DEFAULT_PINNED_POOL.malloc(size)


def is_pinned(a: np.ndarray) -> bool:
    """True when ``a`` lives in memory from :func:`alloc_pinned_memory` (a view of it included)."""
    base: Any = a
    while isinstance(base, np.ndarray):
        base = base.base
    return isinstance(base, PinnedMemoryPointer)


def pinned_array(shape: Any, dtype: Any, order: str, poison: bool) -> np.ndarray:
    """A NumPy array on pinned memory, as ``cupyx.empty_pinned`` returns."""
    dt = np.dtype(dtype)
    shape = (int(shape),) if np.ndim(shape) == 0 else tuple(int(s) for s in shape)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
    mem = alloc_pinned_memory(max(nbytes, 1))
    out = np.ndarray(shape, dtype=dt, buffer=mem, order=order)
    if poison:
        from ._poison import poison as _poison

        _poison(out)
    return out
