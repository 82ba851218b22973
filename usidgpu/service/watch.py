"""Watch the folders: a file is taken once it is complete.

Instruments write files over seconds to minutes. A file is taken when its size and modification
time have not changed for ``settle`` seconds *and* it can be opened (HDF5 refuses a file a
writer still holds with its lock; a vendor file must be read whole by its reader, which the
translation job does). Changes come from watchfiles (inotify / FSEvents / ReadDirectoryChangesW,
with polling where the platform has none), so nothing is polled while nothing changes; a full
rescan at start catches what arrived while the service was down.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

log = logging.getLogger("usidgpu.service")

#: Seconds (at least; 10 × the settle time otherwise) a still file that cannot be opened is waited
#: on before it is taken and reported as failed. Taking it early does no harm: when its writer
#: lets go and it changes again, it is taken again and its failure replaced.
GIVE_UP_S = 5.0


class Settler:
    """Paths seen changing, handed on once they have been still for ``settle`` seconds."""

    def __init__(self, settle: float, ready: Callable[[Path], bool], take: Callable[[Path], None]) -> None:
        self.settle = settle
        self.ready, self.take = ready, take
        self._pending: dict[Path, tuple[tuple[int, int], float]] = {}
        self._lock = threading.Lock()

    def saw(self, path: Path) -> None:
        """A change was seen at ``path`` (its stillness clock starts again)."""
        with self._lock:
            self._pending[path] = ((-1, -1), time.monotonic())

    def check(self) -> None:
        """Hand on every path still for ``settle`` seconds and openable; forget vanished ones."""
        now = time.monotonic()
        with self._lock:
            items = list(self._pending.items())
        for path, (stamp, since) in items:
            try:
                st = path.stat()
            except OSError:
                with self._lock:
                    self._pending.pop(path, None)
                continue
            current = (st.st_size, st.st_mtime_ns)
            if current != stamp:
                with self._lock:
                    self._pending[path] = (current, now)
                continue
            if now - since < self.settle:
                continue
            # a file that stays unopenable (damaged, or a writer that never lets go) is taken
            # after a while anyway, so it is reported as failed rather than waited on forever
            if not self.ready(path) and now - since < max(GIVE_UP_S, 10 * self.settle):
                continue
            with self._lock:
                self._pending.pop(path, None)
            try:
                self.take(path)
            except Exception:  # one file's failure must never stop the watcher
                log.exception("taking %s failed", path)

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._pending)


def watch_folders(
    folders: Sequence[Path], settler: Settler, wanted: Callable[[Path], bool], stop: threading.Event
) -> threading.Thread:
    """Follow changes under ``folders`` in a thread until ``stop`` is set; returns the thread."""
    from watchfiles import watch

    def run() -> None:
        checker = threading.Thread(target=_check_loop, args=(settler, stop), daemon=True)
        checker.start()
        force_polling = os.environ.get("USIDGPU_WATCH_POLLING") == "1"  # e.g. network mounts
        for changes in watch(
            *folders, stop_event=stop, yield_on_timeout=True, rust_timeout=500, force_polling=force_polling
        ):
            for _change, raw in changes:
                path = Path(raw)
                if wanted(path):
                    settler.saw(path)

    thread = threading.Thread(target=run, name="usidgpu-watch", daemon=True)
    thread.start()
    return thread


def _check_loop(settler: Settler, stop: threading.Event) -> None:
    while not stop.wait(min(0.25, settler.settle / 4 or 0.25)):
        settler.check()
