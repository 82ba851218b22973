"""Run locks: one process at a time computes into a given store.

Two identical runs at once would compute into the same store, and the first to finish would
delete it under the other. :func:`run_lock` holds an advisory ``flock`` on a small file next to
the store that names its holder; the operating system releases it when the process ends in any
way (kill -9 included), so a crashed run never blocks the next one. :func:`lock_holder` says who
holds one without taking it.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..core.errors import ResultsError


class RunInProgress(ResultsError):
    """The same computation is running in another process right now."""


@contextmanager
def run_lock(path: str | os.PathLike, what: str) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` while one run of a computation works on its store.

    Two identical runs at once would compute into the same store, and the first to finish
    would delete it under the other. The lock is an advisory ``flock`` on a small file that
    names its holder; the operating system releases it when the process ends in any way (kill -9
    included), so a crashed run never blocks the next one. Where ``fcntl`` does not exist
    (Windows) no lock is taken. On network file systems ``flock`` may be local to one node.

    Raises
    ------
    RunInProgress
        Another process holds the lock.
    """
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks here
        yield
        return
    path = Path(path)
    fd = _take_lock(path, fcntl, what)
    if fd is None:  # a file system without flock (some network mounts): run unguarded, as before
        yield
        return
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode())
        try:
            yield
        finally:
            # removed while still held: a run that opens it from now on creates a fresh one (and
            # one that opened this file before cannot keep its lock: see _take_lock)
            path.unlink(missing_ok=True)
    finally:
        os.close(fd)


def _take_lock(path: Path, fcntl: Any, what: str) -> int | None:
    """A descriptor of ``path`` that holds its exclusive flock; None without flock support.

    The holder before removes the file while it still holds its lock. A run that opened the file
    just before that gets the lock of a deleted file once the holder ends, while the next run
    locks the new file: two holders. So a lock counts only while ``path`` still names the file
    locked; otherwise the file now there is opened and locked instead.
    """
    for _ in range(1000):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:  # another run removed the empty folder in between: again
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise RunInProgress(
                f"{what} is being computed by {holder} right now; wait for it to finish "
                f"(or stop it: the next run resumes its blocks). Lock: {path}"
            ) from None
        except OSError:
            os.close(fd)
            path.unlink(missing_ok=True)
            return None
        try:
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # the lock of a file removed meanwhile: take the one there now
    raise ResultsError(f"{path}: the run lock changed hands 1000 times; try again")


def lock_holder(path: str | os.PathLike) -> str | None:
    """Who holds the run lock at ``path`` right now, or None (nobody, or not knowable here).

    Read from ``/proc/locks`` (Linux), so looking never takes the lock and cannot get in the way
    of a run that is starting.
    """
    path = Path(path)
    try:
        st = path.stat()
        table = Path("/proc/locks").read_text()
    except OSError:
        return None
    try:
        text = path.read_text(errors="replace").strip()
    except OSError:
        return None
    for line in table.splitlines():
        fields = line.split()  # "1: FLOCK  ADVISORY  WRITE 1234 fe:00:5678 0 EOF"; waiters carry "->"
        if len(fields) < 6 or fields[1] != "FLOCK" or "->" in fields:
            continue
        # the inode alone: on btrfs /proc/locks and stat() disagree on the device number; the
        # holder's pid in the file confirms that the lock is this file's
        if fields[5].rsplit(":", 1)[-1] == str(st.st_ino) and text.startswith(f"pid {fields[4]} "):
            return text
    return None


def file_users(path: str | os.PathLike) -> list[int]:
    """Other processes that hold a lock on the file at ``path`` right now (their pids, sorted).

    HDF5 takes a shared ``flock`` on every file it opens read-only and an exclusive one on every
    file it opens for writing, so a notebook's h5py handle, a second analysis reading the file or
    one attaching its results all show here. Read from ``/proc/locks`` (Linux) without taking a
    lock; empty where that table cannot be read. This process's own handles are not counted (it
    closes them itself before it writes).
    """
    try:
        st = Path(path).stat()
        table = Path("/proc/locks").read_text()
    except OSError:
        return []
    me = os.getpid()
    pids = set()
    for line in table.splitlines():
        fields = line.split()  # "1: FLOCK  ADVISORY  READ 1234 fe:00:5678 0 EOF"; waiters carry "->"
        if len(fields) < 6 or "->" in fields or fields[1] not in ("FLOCK", "POSIX", "OFDLCK"):
            continue
        # the inode alone (see lock_holder): device numbers differ between /proc/locks and stat()
        if fields[5].rsplit(":", 1)[-1] == str(st.st_ino) and fields[4].lstrip("-").isdigit():
            pid = int(fields[4])
            if pid > 0 and pid != me and _has_open(pid, st):
                pids.add(pid)
    return sorted(pids)


def _has_open(pid: int, st: os.stat_result) -> bool:
    """Whether process ``pid`` has the file ``st`` open (True when its descriptors cannot be read):
    an inode number alone may name a file of another file system."""
    fd_dir = Path(f"/proc/{pid}/fd")
    try:
        links = list(fd_dir.iterdir())
    except OSError:
        return True
    for link in links:
        try:
            if os.path.samestat(link.stat(), st):
                return True
        except OSError:
            continue
    return False


def describe_process(pid: int) -> str:
    """``pid N (command line)`` for a message, as far as ``/proc`` tells."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        cmd = ""
    if len(cmd) > 80:
        cmd = cmd[:77] + "..."
    return f"pid {pid} ({cmd})" if cmd else f"pid {pid}"
