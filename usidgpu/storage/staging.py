"""New output files that appear only when complete: staging beside the output, atomic publishing,
leftovers of killed runs removed, full disks reported in one line.

``usidgpu convert`` and ``usidgpu translate`` write a new file (or zarr store) ``OUT`` this way:

1. :class:`Staging` makes a private work folder beside ``OUT``, named
   ``.OUT.usidgpu-part-PID-XXXXXXXX``, holding a marker file :data:`MARKER` (which names the
   command, the output, the process and host) on which the run holds an advisory ``flock``.
2. The output is written inside that folder under its final name (``…/OUT``).
3. :meth:`Staging.publish` renames it to ``OUT`` — one atomic ``rename`` in the same folder, so
   ``OUT`` is either absent or complete, never partial, whatever happens.
4. The work folder is removed, on success and on any failure.

A killed run (``kill -9``, a power cut, the OOM killer) leaves its work folder behind. The next
run for the same ``OUT`` removes it, but only when it is provably an abandoned usidgpu work
folder: its name is the pattern above for that ``OUT``, it holds the marker, and the marker's
lock is free — the operating system releases a ``flock`` when its holder ends in any way, so a
free lock means the run that made it is gone (a running one keeps its folder). On file systems
without ``flock`` the marker's process id is checked instead (same host, process gone). A user's
file or folder that merely has a similar name is never touched.

A full disk: :func:`disk_full` recognises ``ENOSPC``/``EDQUOT`` in an exception and its causes,
:func:`no_space` makes the one-line error (``no space left on device writing OUT: about N
needed, M free``), and :func:`check_space` refuses up front when the output cannot fit.
:func:`h5_output` gives a new HDF5 file as a :class:`GuardedFile` (for h5py's ``fileobj``
driver), which never lets a failed write reach the HDF5 library: HDF5 does not survive one while
it closes a dataset (h5py prints tracebacks as it frees the half-closed object, and the
interpreter crashes at exit). The failure is kept, later writes are dropped, the writer stops at
its next block, and the discarded file closes cleanly.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

from ..core.errors import FileProblem

#: the marker file in a work folder: who made it, for which output; its flock is held while running
MARKER = "usidgpu-partial.json"
#: what a work folder's name adds to ``.OUT`` (then the process id and a random part)
PART = ".usidgpu-part-"
#: errno values that mean "the disk (or the user's quota) is full"
_FULL = (errno.ENOSPC, errno.EDQUOT)


# ------------------------------------------------------------------------------ staging
class Staging:
    """A private work folder beside ``dst`` in which ``dst`` is written before it is published.

    Use as a context manager; write to :attr:`path`, then call :meth:`publish`. The work folder is
    removed on leaving the block, whether published or not, so a failure leaves nothing behind.

    Parameters
    ----------
    dst : path
        The output to write (a file or a folder such as a zarr store).
    command : str
        What writes it (recorded in the marker).
    """

    def __init__(self, dst: str | os.PathLike, command: str):
        self.dst = Path(dst)
        self.command = command
        self.work: Path | None = None
        self._lock_fd: int | None = None

    @property
    def path(self) -> Path:
        """Where to write the output: ``dst``'s name inside the work folder."""
        if self.work is None:
            raise RuntimeError("Staging is used outside its with block")
        return self.work / self.dst.name

    def __enter__(self) -> Staging:
        prepare_output(self.dst)
        prefix = f".{self.dst.name}{PART}{os.getpid()}-"
        self.work = Path(tempfile.mkdtemp(prefix=prefix, dir=self.dst.parent))
        try:
            self._lock_fd = _write_marker(self.work / MARKER, self.dst.name, self.command)
        except BaseException:
            self._discard()
            raise
        return self

    def publish(self) -> None:
        """Rename the finished output to ``dst`` (atomic); refuses when ``dst`` appeared meanwhile.

        Raises
        ------
        FileProblem
            ``dst`` was created by someone else while this run wrote.
        """
        if self.dst.exists() or self.dst.is_symlink():
            raise FileProblem(f"{self.dst}: appeared while writing it; refusing to overwrite it")
        _fsync_file(self.path)
        # rename in one folder: atomic; a folder (zarr) is renamed as a whole
        os.rename(self.path, self.dst)
        _fsync_dir(self.dst.parent)

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._discard()

    def _discard(self) -> None:
        if self.work is not None:
            shutil.rmtree(self.work, ignore_errors=True)
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the lock (after the folder is gone)
            self._lock_fd = None


def _write_marker(path: Path, output: str, command: str) -> int | None:
    """Create the marker, lock it and say who we are; returns the descriptor holding the lock."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        with contextlib.suppress(OSError):  # no flock on this file system: the record's pid tells
            _lock(fd)
        record = {"usidgpu": command, "output": output, "pid": os.getpid(), "host": socket.gethostname()}
        os.write(fd, json.dumps(record).encode())
    except BaseException:
        os.close(fd)
        raise
    return fd


def _lock(fd: int) -> bool:
    """Take an exclusive ``flock`` without waiting; False when another process holds it.

    Raises OSError (``ENOLCK``, ``EOPNOTSUPP``...) where the file system has no locks.
    """
    try:
        import fcntl
    except ImportError:  # Windows: no flock; the process id is what tells
        raise OSError(errno.ENOLCK, "no flock on this platform") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _fsync_file(path: Path) -> None:
    """Flush a finished file to disk before it is published (a folder's files are left to the OS)."""
    if path.is_file():
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # some file systems cannot fsync a folder; the rename stands
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# ------------------------------------------------------------------------------ leftovers
def prepare_output(dst: str | os.PathLike) -> None:
    """Remove what killed runs left for ``dst``, then refuse when ``dst`` exists or has no folder.

    Raises
    ------
    FileProblem
        ``dst`` exists (it is never overwritten), or its folder does not.
    """
    dst = Path(dst)
    if not dst.parent.is_dir():
        raise FileProblem(f"{dst.parent}: no such folder (writing {dst.name})")
    remove_abandoned(dst)
    if dst.exists() or dst.is_symlink():
        raise FileProblem(f"{dst}: already exists; refusing to overwrite it")


def work_folders(dst: str | os.PathLike) -> list[Path]:
    """Folders beside ``dst`` named like a usidgpu work folder of ``dst`` (live or abandoned)."""
    dst = Path(dst)
    if not dst.parent.is_dir():
        return []
    prefix = f".{dst.name}{PART}"
    return sorted(p for p in dst.parent.iterdir() if p.name.startswith(prefix) and _pid_of(p.name, prefix) is not None)


def _pid_of(name: str, prefix: str) -> int | None:
    pid, _, rest = name[len(prefix) :].partition("-")
    return int(pid) if pid.isdigit() and rest else None


def remove_abandoned(dst: str | os.PathLike) -> list[Path]:
    """Remove the work folders that killed runs left for ``dst``; returns those removed.

    Only folders proven abandoned go (see the module's description): a folder of a running
    process, or anything without the marker naming ``dst``, stays.
    """
    removed = []
    for folder in work_folders(dst):
        if _is_abandoned(folder, Path(dst).name):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def _is_abandoned(folder: Path, output: str) -> bool:
    marker = folder / MARKER
    if not folder.is_dir() or folder.is_symlink():
        return False
    if not marker.is_file():
        # killed between making the folder and its marker: only an empty folder is that
        return not any(folder.iterdir())
    try:
        fd = os.open(marker, os.O_RDONLY)
    except OSError:
        return False
    try:
        record = _read_record(fd)
        if record is not None and record.get("output") != output:
            return False
        try:
            return _lock(fd)  # free lock: its holder is gone (released without unlocking on purpose)
        except OSError:  # no flock here: the process id tells
            return record is not None and _process_gone(record)
    finally:
        os.close(fd)


def _read_record(fd: int) -> dict[str, Any] | None:
    """The marker's record; None when empty (killed while writing these few bytes)."""
    raw = os.read(fd, 4096)
    if not raw:
        return None
    try:
        record = json.loads(raw)
    except ValueError:
        return {"output": None}  # not ours: never matches an output name
    return record if isinstance(record, dict) else {"output": None}


def _process_gone(record: dict[str, Any]) -> bool:
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process there
        return False
    if record.get("host") != socket.gethostname() or not isinstance(record.get("pid"), int):
        return False  # another machine's run (a shared file system): cannot tell, keep it
    try:
        os.kill(record["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


# ------------------------------------------------------------------------------ full disks
def disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception it was raised from) says the disk or quota is full."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _FULL:
            return True
        current = current.__cause__ or current.__context__
    return False


def free_space(folder: str | os.PathLike) -> int:
    """Bytes an unprivileged user may still write on the file system of ``folder``."""
    st = os.statvfs(folder)
    return st.f_bavail * st.f_frsize


def no_space(dst: str | os.PathLike, needed: int | None) -> FileProblem:
    """The one-line error for a full disk while writing ``dst`` (free space measured now)."""
    from ..core.memory import format_bytes

    dst = Path(dst)
    free = format_bytes(free_space(dst.parent)) if dst.parent.is_dir() else "unknown"
    need = f"about {format_bytes(needed)} needed, " if needed else ""
    return FileProblem(f"no space left on device writing {dst}: {need}{free} free")


def check_space(dst: str | os.PathLike, needed: int) -> None:
    """Refuse up front when the folder of ``dst`` has less than ``needed`` bytes free.

    Raises
    ------
    FileProblem
        Not enough space (the message of :func:`no_space`).
    """
    dst = Path(dst)
    if dst.parent.is_dir() and free_space(dst.parent) < needed:
        raise no_space(dst, needed)


# ------------------------------------------------------------------------------ HDF5 outputs
class GuardedFile(io.RawIOBase):
    """A new file for h5py's ``fileobj`` driver that never lets a failed write reach HDF5.

    HDF5 does not survive a write failure while it closes a dataset or a file (a full disk then):
    the object stays half-closed, h5py prints tracebacks as it frees it, and the interpreter
    crashes at exit. So the first failure is kept in :attr:`failure` and every write from then
    on is dropped and reported as done; the writer calls :meth:`check` between blocks to stop,
    and HDF5 closes the (discarded) file without an error. A file with a failure is never
    complete: :func:`h5_output` raises it.
    """

    def __init__(self, path: str | os.PathLike):
        super().__init__()
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        self._pos = 0
        self.failure: OSError | None = None

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: os.fstat(self._fd).st_size}[whence]
        self._pos = base + pos
        return self._pos

    def tell(self) -> int:
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        os.lseek(self._fd, self._pos, os.SEEK_SET)
        data = os.read(self._fd, len(view))
        view[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def write(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self.failure is None:
            try:
                self._write_at(view, self._pos)
            except OSError as exc:
                self.failure = exc
        self._pos += len(view)
        return len(view)

    def _write_at(self, view: memoryview, pos: int) -> None:
        os.lseek(self._fd, pos, os.SEEK_SET)
        done = 0
        while done < len(view):  # a write may take less than asked
            done += os.write(self._fd, view[done:])

    def truncate(self, size: int | None = None) -> int:
        size = self._pos if size is None else size
        if self.failure is None:
            try:
                os.ftruncate(self._fd, size)
            except OSError as exc:
                self.failure = exc
        return size

    def check(self) -> None:
        """Raise the first write failure, if any (an :class:`OSError`, ``ENOSPC`` for a full disk)."""
        if self.failure is not None:
            raise OSError(self.failure.errno, self.failure.strerror)

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()


@contextlib.contextmanager
def h5_output(path: str | os.PathLike) -> Iterator[GuardedFile]:
    """A new file at ``path`` to hand to ``h5py.File(file, "w-")``; raises its write failure at the end.

    Every HDF5 object must be closed inside the block. Once a write failed, the failure is what
    is raised on leaving the block, whatever else the writer raised meanwhile (reading back
    what was never written, for instance): a half-written file never passes for a complete one.
    """
    guarded = GuardedFile(path)
    try:
        yield guarded
    except BaseException:
        guarded.close()
        guarded.check()
        raise
    guarded.close()
    guarded.check()


__all__ = [
    "MARKER",
    "PART",
    "GuardedFile",
    "Staging",
    "check_space",
    "disk_full",
    "free_space",
    "h5_output",
    "no_space",
    "prepare_output",
    "remove_abandoned",
    "work_folders",
]
