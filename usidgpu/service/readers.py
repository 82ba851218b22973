"""Open files kept for the requests that follow, and let go of when anyone else needs them.

Opening a USID dataset costs far more than reading one spectrum from it (HDF5's metadata, the
ancillary tables, usidgpu's checks of a damaged file), so a client scrubbing through a spectrum
image would wait on opens. Handles are kept while requests come and closed after
:data:`IDLE_S` seconds without one. They are also closed — and not kept — while a job of the
service works on the file: the job attaches its results at the end, which HDF5 allows only when
no other process holds the file. A file that changed on disk is opened again.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..core.errors import UsidgpuError

#: Seconds a kept file may go without a request before it is closed.
IDLE_S = 2.0


@dataclass
class _Kept:
    handle: Any  # USIDFile
    stamp: tuple[int, int]
    datasets: dict[str, Any] = field(default_factory=dict)
    users: int = 0
    last_used: float = 0.0


def _stamp(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


class OpenDatasets:
    """Kept-open USID files and their Main datasets (thread-safe)."""

    def __init__(self, idle_s: float = IDLE_S) -> None:
        self.idle_s = idle_s
        self._kept: dict[str, _Kept] = {}
        self._busy: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._janitor = threading.Thread(target=self._close_idle_loop, name="usidgpu-readers", daemon=True)
        self._janitor.start()

    @contextlib.contextmanager
    def dataset(self, file: str, path: str) -> Iterator[Any]:
        """The Main dataset ``path`` of ``file``, open for the duration of the ``with`` block."""
        from ..usid.file import USIDFile

        with self._lock:
            if file in self._busy:
                kept = None
            else:
                kept = self._kept.get(file)
                stamp = _stamp(file)
                if kept is not None and kept.stamp != stamp and kept.users == 0:
                    self._close(file)
                    kept = None
                if kept is None or kept.stamp != stamp:
                    kept = _Kept(USIDFile(file), stamp)
                    if file not in self._kept:
                        self._kept[file] = kept
                kept.users += 1
        if kept is None:  # a job works on this file: open for this request only
            with USIDFile(file) as handle:
                yield handle.dataset(path)
            return
        try:
            main = kept.datasets.get(path)
            if main is None:
                main = kept.datasets[path] = kept.handle.dataset(path)
            yield main
        finally:
            with self._lock:
                kept.users -= 1
                kept.last_used = time.monotonic()
                if self._kept.get(file) is not kept and kept.users == 0:
                    kept.handle.close()  # an extra handle made while the kept one was replaced

    def hold_off(self, file: str) -> None:
        """A job works on ``file``: close it as soon as no request uses it, and keep it closed."""
        with self._lock:
            self._busy.add(file)
            kept = self._kept.get(file)
            if kept is not None and kept.users == 0:
                self._close(file)

    def release(self, file: str) -> None:
        """The job on ``file`` has ended: it may be kept open again."""
        with self._lock:
            self._busy.discard(file)

    def forget(self, file: str) -> None:
        """The file changed or vanished: close it when unused."""
        with self._lock:
            kept = self._kept.get(file)
            if kept is not None and kept.users == 0:
                self._close(file)

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            for file in list(self._kept):
                self._close(file)

    def _close(self, file: str) -> None:
        kept = self._kept.pop(file)
        kept.handle.close()

    def _close_idle_loop(self) -> None:
        while not self._stop.wait(min(0.5, self.idle_s / 2)):
            now = time.monotonic()
            with self._lock:
                for file, kept in list(self._kept.items()):
                    if kept.users == 0 and (now - kept.last_used > self.idle_s or file in self._busy):
                        self._close(file)


class ServerBusy(UsidgpuError):
    """Too much data in flight for the memory budget, for too long (HTTP 503)."""


class ByteBudget:
    """Bytes of slices in flight (read and not yet sent), held under the service's memory budget.

    A request takes its selection's size before it reads and gives it back once its answer is
    sent; while the budget is spent, the next request waits (up to ``timeout`` seconds, then 503).
    One request larger than the whole budget may still run alone, so nothing is refused that a
    quiet server could answer.
    """

    def __init__(self, limit: int, timeout: float = 60.0) -> None:
        self.limit, self.timeout = max(1, int(limit)), timeout
        self.used = 0
        self._cond = threading.Condition()

    def acquire(self, nbytes: int) -> int:
        """Take ``nbytes`` (waiting for room); returns what to :meth:`release` later."""
        deadline = time.monotonic() + self.timeout
        with self._cond:
            while self.used and self.used + nbytes > self.limit:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ServerBusy(
                        "the server is busy sending other large slices (its memory budget is spent); retry shortly"
                    )
                self._cond.wait(left)
            self.used += nbytes
        return nbytes

    def release(self, nbytes: int) -> None:
        with self._cond:
            self.used = max(0, self.used - nbytes)
            self._cond.notify_all()
