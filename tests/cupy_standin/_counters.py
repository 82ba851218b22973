"""Counting what would cost time on a real GPU: transfers, host waits and kernel launches.

A test asserts on these to check a GPU code path's data movement ("the data went up once and the
results came down once", "nothing in the iteration loop waits for the device"), which results
alone cannot show. Counts are taken in every thread (the block reader uploads from a prefetch
thread); each event also records its thread's name and what caused it, for the failure message.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

#: Kinds of events.
KINDS = ("h2d", "d2h", "syncs", "launches")


@dataclass
class Counts:
    """Events seen while a :func:`counters` block was open.

    Attributes
    ----------
    h2d : int
        Host → device transfers (``cupy.asarray(numpy)``, ``ndarray.set``, a host index array).
    d2h : int
        Device → host transfers (``get``, ``asnumpy``, ``item``, ``float()``, ``bool()``, ``repr``).
    syncs : int
        Host waits for the device: blocking device → host copies, ``synchronize`` calls, and the
        hidden waits of operations whose output shape depends on the data (boolean masks,
        ``nonzero``, ``unique``).
    launches : int
        ``RawKernel`` launches.
    events : list of (kind, thread name, what, where)
        ``where`` is the ``file:line`` of the first caller outside the stand-in and NumPy.
    """

    h2d: int = 0
    d2h: int = 0
    syncs: int = 0
    launches: int = 0
    events: list[tuple[str, str, str, str]] = field(default_factory=list)

    def of(self, kind: str, thread: str | None = None) -> list[tuple[str, str, str, str]]:
        """Events of one kind, optionally only those of one thread (by name)."""
        return [e for e in self.events if e[0] == kind and (thread is None or e[1] == thread)]

    def summary(self) -> str:
        """One line per event, for assertion messages."""
        return "\n".join(f"{k:8s} [{t}] {w}  at {at}" for k, t, w, at in self.events) or "(no events)"

    def as_dict(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in KINDS}


_LOCK = threading.Lock()
_ACTIVE: list[Counts] = []
#: Counts since the stand-in was imported (never reset).
TOTAL = Counts()


_HERE = os.path.dirname(os.path.abspath(__file__))
_SKIP = (_HERE, os.path.dirname(np.__file__), os.path.dirname(threading.__file__))


def _caller() -> str:
    f = sys._getframe(2)
    while f is not None and f.f_code.co_filename.startswith(_SKIP):
        f = f.f_back
    return f"{f.f_code.co_filename}:{f.f_lineno}" if f is not None else "?"


def record(kind: str, what: str) -> None:
    """Count one event of ``kind`` in every open :func:`counters` block."""
    if not _ACTIVE:
        with _LOCK:
            setattr(TOTAL, kind, getattr(TOTAL, kind) + 1)
        return
    entry = (kind, threading.current_thread().name, what, _caller())
    with _LOCK:
        for c in (TOTAL, *_ACTIVE):
            setattr(c, kind, getattr(c, kind) + 1)
            if c is not TOTAL:
                c.events.append(entry)


@contextlib.contextmanager
def counters() -> Iterator[Counts]:
    """Count transfers, host waits and launches of the code inside the ``with`` block.

    Examples
    --------
    >>> with counters() as c:
    ...     y = cupy.asarray(x) * 2
    ...     z = y.get()
    >>> (c.h2d, c.d2h, c.syncs)
    (1, 1, 1)
    """
    c = Counts()
    with _LOCK:
        _ACTIVE.append(c)
    try:
        yield c
    finally:
        with _LOCK:
            _ACTIVE.remove(c)


# -- cupyx.allow_synchronize (cupy/_core/syncdetect.py) ----------------------------------------

_SYNC_ALLOWED = threading.local()


class DeviceSynchronized(RuntimeError):
    """Raised when a synchronization happens inside ``cupyx.allow_synchronize(False)``."""

    def __init__(self, message: str | None = None):
        super().__init__(message or "Device synchronization was detected while disallowed.")


DeviceSynchronized.__module__ = "cupyx"


def sync_allowed() -> bool:
    return getattr(_SYNC_ALLOWED, "allowed", True)


def set_sync_allowed(allowed: bool) -> None:
    _SYNC_ALLOWED.allowed = allowed


def declare_synchronize(what: str) -> None:
    """A host wait that CuPy's syncdetect sees (``get`` and ``Device.synchronize``)."""
    if not sync_allowed():
        raise DeviceSynchronized()
    record("syncs", what)
