"""Configuration knobs of the stand-in: the fake device it reports and how strict it is."""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator


@dataclasses.dataclass
class Config:
    """What the stand-in pretends the GPU is.

    Attributes
    ----------
    device_name : str
        ``getDeviceProperties(i)["name"]`` (as bytes there), so logs say the stand-in ran.
    device_count : int
        ``runtime.getDeviceCount()``.
    total_memory : int
        Bytes of device memory: ``Device().mem_info`` and ``totalGlobalMem``; allocations past it
        raise ``cupy.cuda.memory.OutOfMemoryError`` when ``out_of_memory`` is set.
    compute_capability : tuple of int
        (major, minor).
    multiprocessor_count, max_threads_per_block, single_to_double_ratio : int
        Device attributes.
    poison_empty : bool
        Fill ``cupy.empty``/``empty_like``/``cupy.ndarray(shape)``/``cupyx.empty_pinned`` memory
        with garbage (NaN, a large integer, True) instead of whatever NumPy returned.
    out_of_memory : bool
        Refuse allocations beyond ``total_memory`` (live arrays plus the pool's cached blocks,
        which are freed and retried first, as CuPy's pool does).
    defer_waits : bool
        ``stream.wait_event(e)`` only makes later work on ``stream`` wait (the copy runs at the
        stream's next operation) instead of running ``e``'s stream at once. Stricter: a host
        that refills a pinned buffer after ``wait_event`` but without ``Event.synchronize``
        uploads the wrong data when nothing ran on the stream in between, as the DMA engine
        could do on a GPU, since ``wait_event`` never blocks the host.
    """

    device_name: str = "cupy_standin (NumPy in host memory, not a GPU)"
    device_count: int = 1
    total_memory: int = 16 * 1024**3
    compute_capability: tuple[int, int] = (9, 0)
    multiprocessor_count: int = 132
    max_threads_per_block: int = 1024
    single_to_double_ratio: int = 2
    poison_empty: bool = True
    out_of_memory: bool = True
    defer_waits: bool = False


CONFIG = Config()


def _from_environment() -> None:
    """``CUPY_STANDIN_<KNOB>=value`` sets a knob (for subprocesses using the ``site`` shims)."""
    for f in dataclasses.fields(Config):
        raw = os.environ.get(f"CUPY_STANDIN_{f.name.upper()}")
        if raw is None:
            continue
        current = getattr(CONFIG, f.name)
        if isinstance(current, bool):
            value: object = raw.strip().lower() in ("1", "true", "yes", "on")
        elif isinstance(current, int):
            value = int(float(raw))
        elif isinstance(current, tuple):
            value = tuple(int(v) for v in raw.replace(".", ",").split(","))
        else:
            value = raw
        setattr(CONFIG, f.name, value)


_from_environment()


@contextlib.contextmanager
def configure(**changes) -> Iterator[Config]:
    """Change knobs of :data:`CONFIG` for the duration of a ``with`` block.

    Examples
    --------
    >>> with configure(total_memory=2**20, device_name="tiny"):
    ...     ...
    """
    unknown = set(changes) - {f.name for f in dataclasses.fields(Config)}
    if unknown:
        raise TypeError(f"unknown cupy_standin setting(s): {', '.join(sorted(unknown))}")
    old = {k: getattr(CONFIG, k) for k in changes}
    for k, v in changes.items():
        setattr(CONFIG, k, v)
    try:
        yield CONFIG
    finally:
        for k, v in old.items():
            setattr(CONFIG, k, v)
