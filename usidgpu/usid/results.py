"""Results groups ``<Source>-<Tool>_NNN``: create, fill, resume and attach them without risking data.

HDF5 has no journal: a process killed while it writes can leave the whole file unreadable, the
raw data included. So a computation never writes into the file that holds its source. Results
stream into a *sidecar* HDF5 file in a folder next to the target (``<file>.usidgpu/``), which
also carries the resume book-keeping (``completed_positions``, ``last_pixel``) that pyUSID's
Process uses. When the computation is done, :meth:`ResultsWriter.finish` opens the target for
writing for one short step: it copies the group in under a temporary name, re-points its object
references, writes the final attributes and renames it to ``<Source>-<Tool>_NNN``. An
interrupted run leaves either the sidecar (marked ``partial``; rerunning resumes it) or a
temporary group no tool mistakes for results; a complete group always says
``usidgpu_status = "complete"``.

The group carries what pyUSID and pycroscopy look for — ``tool``, ``num_source_dsets``,
``source_000`` (an object reference when in the source's file), the parameters as attributes
(compared by ``check_for_old``), ``last_pixel`` and ``completed_positions`` — plus the usidgpu
version, the device, a timestamp and the source's file and path.

What makes a run *the same run* (resumed, or recognised as attached) is its tool, source and
parameters — never what the machine decided (a tile size from the free memory, the reason an
``auto`` method was picked): those are *conditions*, recorded as attributes but left out of the
identity (``usidgpu_parameters``), so a rerun finds the interrupted run whatever memory is free.

Failures that cost nothing: a target that cannot be written (a shipped sample, a read-only file,
a read-only folder) is refused by :func:`check_target` before the work; the free space is checked
before the sidecar is written (room for the sidecar and its copy) and before attaching (the
sidecar's size), so HDF5 never meets a full disk and a source never grows by a failed copy.
A target that another process holds open (a notebook's h5py handle, a second analysis) cannot
be opened for writing: :meth:`ResultsWriter.finish` waits for it (``$USIDGPU_ATTACH_WAIT``
seconds, default 30) and then keeps the finished results *attached later*: the sidecar, status
``computed``, listed by ``usidgpu info``, attached by ``usidgpu resume FILE`` or at the end of the
next analysis that writes to the file (:func:`attach_pending`). A sidecar that a crash left
unreadable is removed by the next run of its tool (never while another process has it open).
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..core.errors import FileProblem, InvalidInput, InvalidType, ResultsError
from ..core.faults import crash_point, register
from ..core.memory import format_bytes
from ..storage import is_open
from ..storage.h5 import close_handles, raised_by_hdf5
from ..storage.locks import describe_process, file_users
from .attrs import book_keeping, write_attrs
from .dataset import MainDataset
from .file import RESULTS_NAME, open_h5
from .write import same_dataset

PARTIAL = "partial"
COMPUTED = "computed"
COMPLETE = "complete"
_TMP_PREFIX = "_usidgpu_attaching_"

ATTACH_WAIT_ENV = "USIDGPU_ATTACH_WAIT"
"""Seconds to wait for a busy target at attach time (default :data:`ATTACH_WAIT_S`)."""
ATTACH_WAIT_S = 30.0
_POLL_S = 0.2

# the moments a crash must not lose or duplicate anything (see usidgpu.core.faults)
BEFORE_SIDECAR = register("results.before_sidecar", "an in-process analysis computed its result; nothing written yet")
SIDECAR_WRITE = register("results.sidecar_write", "a Main dataset was written into the sidecar (N-th: mid-write)")
SIDECAR_DONE = register("results.sidecar_done", "the sidecar is complete (status computed), nothing attached")
ATTACH_COPIED = register("results.attach_copied", "the group was copied into the target under its temporary name")
ATTACH_REFERENCED = register("results.attach_referenced", "the copy's object references were re-pointed")
ATTACH_RENAMED = register("results.attach_renamed", "the group got its final name (not yet flushed)")
ATTACHED = register("results.attached", "the target is closed with the group in it; the sidecar is not removed yet")


class AttachPending(ResultsError):
    """The results are complete but the target stayed busy (another process holds it open): they
    are kept in their sidecar, to be attached by ``usidgpu resume`` or the next analysis.

    Attributes
    ----------
    sidecar : Path
    group : str
        The path the group will have in the target.
    target : Path
    """

    def __init__(self, message: str, sidecar: Path, group: str, target: Path) -> None:
        super().__init__(message)
        self.sidecar, self.group, self.target = sidecar, group, target


def attach_wait() -> float:
    """Seconds :meth:`ResultsWriter.finish` waits for a busy target (``$USIDGPU_ATTACH_WAIT``)."""
    value = os.environ.get(ATTACH_WAIT_ENV)
    if value is None or not value.strip():
        return ATTACH_WAIT_S
    try:
        seconds = float(value)
    except ValueError:
        raise InvalidInput(f"${ATTACH_WAIT_ENV} must be a number of seconds, got {value!r}") from None
    if not seconds >= 0:
        raise InvalidInput(f"${ATTACH_WAIT_ENV} must be a number of seconds >= 0, got {value!r}")
    return seconds


def sidecar_dir(target: str | os.PathLike) -> Path:
    """Folder next to ``target`` that holds its unfinished results (``<name>.usidgpu``)."""
    t = Path(target).resolve()
    return t.parent / f"{t.name}.usidgpu"


def check_target(target: str | os.PathLike) -> None:
    """Raise :class:`ResultsError` when results cannot be attached to ``target``.

    Shipped sample files are never written to, and the sidecar needs a writable folder.
    """
    from ..samples import is_sample

    target = Path(target).resolve()
    if is_sample(target):
        raise ResultsError(
            f"{target} is a sample shipped with usidgpu and stays unchanged; write the results "
            "to another file (output=..., or --output on the command line)"
        )
    if target.is_dir():
        raise ResultsError(
            f"{target} is a zarr store, opened read-only; write the results into an HDF5 file (output=..., or "
            "--output OUT.h5), or convert the store first (usidgpu convert)"
        )
    if not os.access(target.parent, os.W_OK):
        raise ResultsError(
            f"cannot write results next to {target} (folder not writable); choose an output file in a writable folder"
        )
    if target.is_file() and not os.access(target, os.W_OK):
        raise ResultsError(
            f"{target} is read-only, so results cannot be attached to it; make it writable (chmod u+w) "
            "or write them to another file (--output OUT.h5)"
        )


def busy_with(target: str | os.PathLike) -> list[str]:
    """Other processes that hold ``target`` open (described for a message); empty when none are
    seen (or where ``/proc/locks`` does not exist)."""
    return [describe_process(pid) for pid in file_users(target)] if Path(target).exists() else []


def check_space(folder: str | os.PathLike, need: int, what: str) -> None:
    """Raise :class:`ResultsError` when the file system of ``folder`` has less than ``need`` bytes
    free: HDF5 must never meet a full disk (it cannot recover from one cleanly, and space it took
    in a file is never given back)."""
    free = shutil.disk_usage(folder).free
    if free < need:
        raise ResultsError(
            f"not enough free space for {what}: it needs about {format_bytes(need)}, "
            f"{format_bytes(free)} are free in {folder}"
        )


def _with_margin(nbytes: int) -> int:
    """Room for ``nbytes`` of data in an HDF5 file: its metadata, chunk indexes and rounding."""
    return int(nbytes * 1.25) + (256 << 10)


def disk_full(exc: BaseException) -> bool:
    """Whether an error is a full disk (from Python or from HDF5's I/O layer)."""
    return getattr(exc, "errno", None) == errno.ENOSPC or "No space left" in str(exc)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def sidecar_prefix(parent_path: str) -> str:
    """Sidecar files are named ``<parent path with / as ~>~<group name>.h5``."""
    flat = parent_path.strip("/").replace("/", "~")
    return f"{flat}~" if flat else ""


def identity(parameters: Mapping[str, Any], conditions: Iterable[str] = ()) -> str:
    """The identity of a run's parameters (``usidgpu_parameters``): all of them but the
    ``conditions``, the values the machine decided (they differ between runs of the same thing)."""
    skip = set(conditions)
    return _canonical({k: v for k, v in parameters.items() if k not in skip})


def _canonical(parameters: Mapping[str, Any]) -> str:
    def default(o: Any) -> Any:
        if isinstance(o, np.ndarray):
            return o.tolist()
        if isinstance(o, np.generic):
            return o.item()
        return str(o)

    return json.dumps(dict(parameters), sort_keys=True, default=default)


def _check_tool(tool: str) -> str:
    tool = tool.strip()
    if not re.fullmatch(r"[A-Za-z0-9_]+", tool):
        raise ResultsError(
            f"tool name {tool!r} may hold only letters, digits and '_' (it becomes part of a group name)"
        )
    return tool


def _flat_parameters(parameters: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in parameters.items():
        if isinstance(value, Mapping):
            for k2, v2 in _flat_parameters(value).items():
                out[f"{key}.{k2}"] = v2
        elif value is not None:
            out[key] = value
    return out


class ResultsWriter:
    """One results group being computed; use :meth:`begin` to create or resume one.

    Attributes
    ----------
    source : MainDataset
        None for a writer reopened from its sidecar (:meth:`reopen`).
    tool : str
    group_name : str
        ``<Source>-<Tool>_NNN``.
    group : h5py.Group
        The group in the sidecar file; create result datasets in it (see :meth:`write_main`).
    completed : numpy.ndarray of bool
        Which units of work (by default: positions) are done.
    resumed : bool
        True when an interrupted run with the same parameters was picked up.
    status : str
        ``partial`` while being filled, ``computed`` once every unit is done (then only the
        attach is missing: a resumed writer in this state needs no filling).
    """

    # set by begin() (the object is made there, not by __init__)
    source: Any
    tool: str
    parameters: dict[str, Any]
    conditions: tuple[str, ...]
    device: str
    target: Path
    same_file: bool
    parent_path: str
    source_path: str
    source_file: str
    source_base: str
    group_name: str
    sidecar_path: Path
    group: h5py.Group
    n_units: int
    completed: np.ndarray
    resumed: bool

    def __init__(self, *args: Any, **kwargs: Any):
        raise TypeError("use ResultsWriter.begin(...) to create or resume a results group")

    # ------------------------------------------------------------------ creation
    @classmethod
    def begin(
        cls,
        source: MainDataset,
        tool: str,
        parameters: Mapping[str, Any] | None = None,
        *,
        output: str | os.PathLike | None = None,
        device: Any = None,
        n_units: int | None = None,
        resume: bool = True,
        conditions: Iterable[str] = (),
        size_hint: int | None = None,
    ) -> ResultsWriter:
        """Create (or resume) the results group of ``tool`` applied to ``source``.

        Parameters
        ----------
        source : MainDataset
            The dataset analyzed (its file may be open read-only).
        tool : str
            Tool name, e.g. ``"SVD"`` (letters, digits, ``_``).
        parameters : mapping, optional
            The tool's parameters; written as attributes, compared when resuming.
        output : path, optional
            Attach the results to this file instead of the source's file.
        device : optional
            The device used (recorded as an attribute).
        n_units : int, optional
            Units of work tracked in ``completed_positions`` (default: the source's positions).
        resume : bool
            Pick up an unfinished run with equal tool, source and parameters.
        conditions : iterable of str
            Names of parameters the machine decided (e.g. a tile size from the free memory):
            recorded, but not part of the run's identity.
        size_hint : int, optional
            Bytes the results will take: a new sidecar is refused up front, with one line, when
            the disk has no room for it and its copy into the target.

        Returns
        -------
        ResultsWriter

        Raises
        ------
        ResultsError
            The target cannot be written (see :func:`check_target`), or the disk is too full.
        """
        self = object.__new__(cls)
        self.source = source
        self.tool = _check_tool(tool)
        self.parameters = dict(parameters or {})
        self.conditions = tuple(c for c in conditions if c in self.parameters)
        self.target = Path(output).resolve() if output is not None else Path(source.filename).resolve()
        self.same_file = self.target == Path(source.filename).resolve()
        self.parent_path = source.h5.parent.name
        self.source_path = source.name  # kept: the source file may be closed before finish()
        self.source_file = str(Path(source.filename).resolve())
        self.source_base = self.source_path.rsplit("/", 1)[1]
        self.n_units = int(n_units if n_units is not None else source.n_positions)
        self.device = str(device) if device is not None else "cpu"
        self._closed = True
        folder = sidecar_dir(self.target)
        check_target(self.target)
        fingerprint = identity(self.parameters, self.conditions)
        found = self._find_resumable(folder, fingerprint) if resume else None
        if found is not None:
            self.sidecar_path, self.group_name = found
            self._open_sidecar("r+")
            self.resumed = True
        else:
            if size_hint is not None:  # the sidecar, then its copy in the target (same file system)
                check_space(folder.parent, 2 * _with_margin(int(size_hint)), f"the results of {self.tool}")
            self._create_sidecar(folder, fingerprint)
            self.resumed = False
        return self

    def _open_sidecar(self, mode: str) -> None:
        self._h5 = open_h5(self.sidecar_path, mode)
        self._closed = False
        self.group = self._h5[f"{self.parent_path.rstrip('/')}/{self.group_name}"]
        self._completed = self.group["completed_positions"]
        self.completed = self._completed[()].astype(bool)

    def _create_sidecar(self, folder: Path, fingerprint: str) -> None:
        """A new sidecar under the next free name; the name is taken atomically (O_EXCL), so two
        runs starting at once never share one."""
        folder.mkdir(exist_ok=True)
        while True:
            self.group_name = self._next_name(folder)
            self.sidecar_path = folder / f"{sidecar_prefix(self.parent_path)}{self.group_name}.h5"
            try:
                os.close(os.open(self.sidecar_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
                break
            except FileExistsError:
                continue  # another run took this name just now
        self._write_new_sidecar(fingerprint)

    def _write_new_sidecar(self, fingerprint: str) -> None:
        """Write the empty group, its attributes and book-keeping into the (new) sidecar file; a
        failure (a full disk) removes the file and raises one line."""
        try:
            self._h5 = open_h5(self.sidecar_path, "w")
            self._closed = False
            self.group = self._h5.require_group(self.parent_path).create_group(self.group_name)
            self._write_group_attrs(fingerprint)
        except OSError as exc:
            self._abandon()
            raise self._failed(exc, "writing") from None
        self._completed = self.group["completed_positions"]
        self.completed = self._completed[()].astype(bool)

    @classmethod
    def reopen(cls, sidecar: str | os.PathLike, target: str | os.PathLike) -> ResultsWriter:
        """A writer over an existing sidecar of ``target`` (its source need not be open): to attach
        results kept there (:func:`attach_pending`)."""
        self = object.__new__(cls)
        self.sidecar_path = Path(sidecar)
        self.target = Path(target).resolve()
        self.source = None
        self._h5 = open_h5(self.sidecar_path, "r+")
        self._closed = False
        groups = _results_groups(self._h5)
        if len(groups) != 1:
            self.close()
            raise ResultsError(f"{self.sidecar_path}: holds {len(groups)} results groups, not one")
        self.group = groups[0]
        a = self.group.attrs
        self.tool = str(a.get("tool"))
        self.parameters, self.conditions, self.device = {}, (), str(a.get("device", "cpu"))
        self.parent_path = self.group.parent.name
        self.group_name = self.group.name.rsplit("/", 1)[1]
        self.source_path = str(a.get("source_dataset"))
        self.source_file = str(a.get("source_file"))
        self.source_base = self.source_path.rsplit("/", 1)[1]
        self.same_file = self.target == Path(self.source_file).resolve()
        self._completed = self.group["completed_positions"]
        self.completed = self._completed[()].astype(bool)
        self.n_units = int(self.completed.size)
        self.resumed = True
        return self

    def _write_group_attrs(self, fingerprint: str) -> None:
        g = self.group
        write_attrs(g, book_keeping())
        write_attrs(
            g,
            {
                "tool": self.tool,
                "num_source_dsets": 1,
                "source_file": self.source_file,
                "source_dataset": self.source_path,
                "source_shape": list(self.source.shape),
                "device": self.device,
                "usidgpu_parameters": fingerprint,
                "usidgpu_status": PARTIAL,
                "last_pixel": 0,
            },
        )
        if self.conditions:
            g.attrs["usidgpu_conditions"] = list(self.conditions)
        self.write_parameters()
        g.create_dataset("completed_positions", data=np.zeros(self.n_units, dtype=np.uint8))
        self._h5.flush()

    def write_parameters(self, parameters: Mapping[str, Any] | None = None) -> None:
        """Write the parameters as plain attributes (pyUSID's ``check_for_old`` compares those);
        a resumed run writes its own, so the conditions recorded are those of the run that wrote
        the data."""
        if parameters is not None:
            self.parameters = dict(parameters)
        write_attrs(self.group, _flat_parameters(self.parameters))

    def _sidecar_groups(self, folder: Path) -> list[tuple[Path, str, int]]:
        """Sidecar files of this source and tool: (path, group name, index)."""
        prefix = sidecar_prefix(self.parent_path)
        out = []
        if folder.is_dir():
            for p in sorted(folder.glob("*.h5")):
                if not p.name.startswith(prefix):
                    continue
                name = p.name[len(prefix) : -3]
                m = RESULTS_NAME.match(name)
                if m and m.group("source") == self.source_base and m.group("tool") == self.tool:
                    out.append((p, name, int(m.group("index"))))
        return out

    def _target_is_open(self) -> bool:
        return self.same_file and self.source is not None and is_open(self.source.h5.file)

    def _next_name(self, folder: Path) -> str:
        indices = [i for _p, _n, i in self._sidecar_groups(folder)]
        if self.target.exists():
            with self._read_target() as t:
                parent = t.get(self.parent_path)
                if isinstance(parent, h5py.Group):
                    for key in parent:
                        m = RESULTS_NAME.match(key)
                        if m and m.group("source") == self.source_base and m.group("tool") == self.tool:
                            indices.append(int(m.group("index")))
        return f"{self.source_base}-{self.tool}_{(max(indices) + 1 if indices else 0):03d}"

    @contextmanager
    def _read_target(self) -> Iterator[h5py.File]:
        """The target, read-only: this process's open handle when it has one, else a new one
        (waiting while another process holds it for writing: an attach is a short step)."""
        if self._target_is_open():
            yield self.source.h5.file
            return
        with _open_waiting(self.target, "r", attach_wait(), f"read {self.target}") as t:
            yield t

    def _find_resumable(self, folder: Path, fingerprint: str) -> tuple[Path, str] | None:
        for p, name, _index in self._sidecar_groups(folder):
            state = sidecar_state(p)
            if state == "damaged":
                p.unlink(missing_ok=True)  # a crash's leftover that cannot be read: garbage
                continue
            if state == "busy":
                continue  # another process writes or attaches it right now
            with h5py.File(p, "r") as f:
                g = f.get(f"{self.parent_path.rstrip('/')}/{name}")
                if not isinstance(g, h5py.Group):
                    continue
                a = g.attrs
                if (
                    a.get("usidgpu_parameters") == fingerprint
                    and a.get("source_dataset") == self.source_path
                    and a.get("source_file") == self.source_file
                    and list(a.get("source_shape", [])) == list(self.source.shape)
                    and a.get("usidgpu_status") in (PARTIAL, COMPUTED)
                    and "completed_positions" in g
                    and g["completed_positions"].shape == (self.n_units,)
                ):
                    return p, name
        return None

    # ------------------------------------------------------------------ filling
    @property
    def name(self) -> str:
        """Path the group will have in the target file."""
        return f"{self.parent_path.rstrip('/')}/{self.group_name}"

    @property
    def done(self) -> bool:
        return bool(self.completed.all())

    @property
    def status(self) -> str:
        return str(self.group.attrs.get("usidgpu_status", PARTIAL))

    def pending(self) -> list[tuple[int, int]]:
        """Ranges ``[start, stop)`` of units of work not yet marked done."""
        todo = ~self.completed
        if not todo.any():
            return []
        edges = np.flatnonzero(np.diff(np.concatenate(([0], todo.astype(np.int8), [0]))))
        return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2])]

    def mark_done(self, start: int, stop: int) -> None:
        """Record units ``[start, stop)`` as done (written to the sidecar and flushed)."""
        if not 0 <= start <= stop <= self.n_units:
            raise InvalidInput(f"range [{start}, {stop}) is outside [0, {self.n_units})")
        # the results of these units reach the disk before the flags that say they are done,
        # so a crash between the two can only make a rerun redo work, never skip it
        self._h5.flush()
        self.completed[start:stop] = True
        self._completed[start:stop] = 1
        todo = np.flatnonzero(~self.completed)
        self.group.attrs["last_pixel"] = int(todo[0]) if todo.size else self.n_units
        self._h5.flush()

    def restart(self) -> None:
        """Start the sidecar over under the same name (a write that was interrupted midway: what
        it holds is not trusted, a crash may have left any part of it half-written)."""
        fingerprint = identity(self.parameters, self.conditions)
        self.close()
        self.sidecar_path.unlink(missing_ok=True)
        self._write_new_sidecar(fingerprint)
        self.resumed = False

    def write_main(
        self, name: str, data: Any, quantity: str, units: str, pos_dims: Any, spec_dims: Any, **kwargs: Any
    ) -> MainDataset:
        """:func:`usidgpu.write_main` into this results group.

        Passing the source :class:`MainDataset` as ``pos_dims`` or ``spec_dims`` reuses its
        ancillary datasets (linked again to the originals when the group is attached).
        """
        from .write import write_main

        if name in self.group:
            return MainDataset(self.group[name])  # resumed run: the dataset exists already
        out = write_main(self.group, name, data, quantity, units, pos_dims, spec_dims, **kwargs)
        crash_point(SIDECAR_WRITE)
        return out

    # ------------------------------------------------------------------ finishing
    def finish(self, wait: float | None = None) -> str:
        """Attach the finished group to the target file and remove the sidecar.

        The source's file is closed first when the results go into it (HDF5 cannot hold one file
        open read-only and for writing at once); reopen it with :func:`usidgpu.open`.

        Parameters
        ----------
        wait : float, optional
            Seconds to wait while another process holds the target open (default
            ``$USIDGPU_ATTACH_WAIT``, else 30).

        Returns
        -------
        str
            HDF5 path of the results group in the target file.

        Raises
        ------
        AttachPending
            The target stayed busy: the results are kept in the sidecar (``usidgpu resume``
            attaches them, as does the next analysis that writes to the file).
        ResultsError
            Not all units are done, or the disk has no room for the group (kept in the sidecar).
        """
        if not self.done:
            missing = sum(b - a for a, b in self.pending())
            raise ResultsError(f"{self.name}: {missing} of {self.n_units} units of work are not done yet")
        try:
            self.group.attrs["usidgpu_status"] = COMPUTED
            self.group.attrs["last_pixel"] = self.n_units
            self._h5.flush()
        except OSError as exc:
            self._abandon()
            raise self._failed(exc, "writing") from None
        crash_point(SIDECAR_DONE)
        fingerprint = self.group.attrs["usidgpu_parameters"]
        if self.target.exists():
            # the group's size is known: never start a copy the disk cannot hold (a failed copy's
            # space stays in the target for good: HDF5 does not give space back)
            try:
                check_space(
                    self.target.parent, _with_margin(self.sidecar_path.stat().st_size), f"attaching {self.name}"
                )
            except ResultsError as exc:
                self.close()
                raise ResultsError(f"{exc}; {self._kept()}") from None
        if self.same_file:
            _close_handles(self.target)
        wait = attach_wait() if wait is None else wait
        try:
            with _open_waiting(self.target, "a", wait, f"attach {self.name}") as target:
                if _holds(target, self.name, fingerprint, self.source_path):
                    path = self.name  # attached by a run killed before it removed this sidecar
                else:
                    path = _attach(
                        self._h5,
                        self.group,
                        target,
                        self.parent_path,
                        self.group_name,
                        self.source_path if self.same_file else None,
                    )
        except _Busy as busy:
            self.close()
            raise AttachPending(
                f"{self.target} is still open in {busy.holders} after {wait:g} s; the results are complete and "
                f"{self._kept()}",
                self.sidecar_path,
                self.name,
                self.target,
            ) from None
        except OSError as exc:  # the file system (a full disk, an I/O error) or HDF5's I/O layer
            self.close()
            raise ResultsError(
                f"could not attach {self.name} to {self.target}: {_first_line(exc)}; {self._kept()}"
            ) from None
        crash_point(ATTACHED)
        self._remove_sidecar()
        return path

    def _kept(self) -> str:
        return (
            f"kept in {self.sidecar_path}: `usidgpu resume {self.target}` attaches them (so does the next "
            "analysis that writes to the file)"
        )

    def _failed(self, exc: OSError, doing: str) -> ResultsError:
        reason = "the disk is full" if disk_full(exc) else _first_line(exc)
        return ResultsError(
            f"{doing} the results of {self.tool} next to {self.target} failed: {reason}; nothing was attached"
        )

    def _abandon(self) -> None:
        """Drop a sidecar whose writing failed (a full disk): closed as far as HDF5 still can, then
        deleted; the source is untouched."""
        if not self._closed:
            self._closed = True
            try:
                self._h5.close()
            except (OSError, RuntimeError, ValueError):
                pass  # HDF5 could not flush the file it is dropping: the file goes anyway
        self.sidecar_path.unlink(missing_ok=True)
        try:
            self.sidecar_path.parent.rmdir()
        except OSError:
            pass  # other sidecars remain

    def discard(self) -> None:
        """Abandon this group: close and delete its sidecar (nothing was attached)."""
        self._remove_sidecar()

    def _remove_sidecar(self) -> None:
        self.close()
        self.sidecar_path.unlink(missing_ok=True)
        try:
            self.sidecar_path.parent.rmdir()
        except OSError:
            pass  # other sidecars remain

    def close(self) -> None:
        """Close the sidecar file (an unfinished run can be resumed later)."""
        if not self._closed:
            self._h5.close()
            self._closed = True

    def __enter__(self) -> ResultsWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class _Busy(Exception):
    """The file stayed open in other processes (internal: becomes :class:`AttachPending`)."""

    def __init__(self, holders: str) -> None:
        super().__init__(holders)
        self.holders = holders


@contextmanager
def _open_waiting(path: Path, mode: str, wait: float, what: str) -> Iterator[h5py.File]:
    """Open ``path`` with HDF5, waiting up to ``wait`` seconds while other processes hold it
    (one message on stderr); raises :class:`_Busy` when it stays held."""
    deadline = time.monotonic() + wait
    told = False
    while True:
        holders = [describe_process(pid) for pid in file_users(path)] if mode != "r" and path.exists() else []
        if not holders:
            try:
                handle = open_h5(path, mode)
            except FileProblem as exc:
                if "locked" not in str(exc):
                    raise
                holders = [describe_process(pid) for pid in file_users(path)] or ["another process"]
            else:
                with handle:
                    yield handle
                return
        if time.monotonic() >= deadline:
            raise _Busy(", ".join(holders))
        if not told:
            print(
                f"usidgpu: {path} is open in {', '.join(holders)}; waiting up to {wait:g} s to {what}",
                file=sys.stderr,
                flush=True,
            )
            told = True
        time.sleep(_POLL_S)


@contextmanager
def read_when_free(path: str | os.PathLike, wait: float | None = None) -> Iterator[h5py.File]:
    """``path`` opened read-only, waiting (up to ``wait`` s, default :func:`attach_wait`) while
    another process writes it (attaching its results: a short step).

    Raises
    ------
    ResultsError
        It stayed locked.
    """
    wait = attach_wait() if wait is None else wait
    try:
        with _open_waiting(Path(path), "r", wait, f"read {path}") as f:
            yield f
    except _Busy as busy:
        raise ResultsError(f"{path} stayed locked by {busy.holders} for {wait:g} s; try again later") from None


def _holds(target: h5py.File, name: str, fingerprint: str, source_path: str) -> bool:
    """Whether ``target`` already holds the group ``name``, complete, from this source and run."""
    g = target.get(name)
    return (
        isinstance(g, h5py.Group)
        and g.attrs.get("usidgpu_status") == COMPLETE
        and g.attrs.get("usidgpu_parameters") == fingerprint
        and g.attrs.get("source_dataset") == source_path
    )


def _results_groups(f: h5py.File) -> list[h5py.Group]:
    groups: list[h5py.Group] = []

    def collect(name: str, obj: Any) -> None:
        if isinstance(obj, h5py.Group) and RESULTS_NAME.match(name.rsplit("/", 1)[-1]):
            if "completed_positions" in obj:
                groups.append(obj)

    f.visititems(collect)
    return groups


def sidecar_state(path: str | os.PathLike) -> str:
    """``ok``, ``busy`` (another process has it open: being written or attached) or ``damaged``
    (HDF5 cannot read it: a crash or a full disk cut its writing short)."""
    path = Path(path)
    if file_users(path):
        return "busy"
    try:
        with h5py.File(path, "r") as f:
            for g in _results_groups(f):
                g["completed_positions"][()]
                dict(g.attrs)
    except Exception as exc:  # HDF5 reports damage through OSError, RuntimeError, KeyError, ...
        if "unable to lock" in str(exc).lower():
            return "busy"  # held where /proc/locks cannot tell (not "sblock": a damaged superblock)
        if isinstance(exc, OSError) or raised_by_hdf5(exc):
            return "damaged"
        raise
    return "ok"


def _close_handles(path: Path) -> None:
    """Close every handle this process holds on ``path``.

    HDF5 cannot open a file for writing while it is open read-only, so the short attach step
    first closes all read-only handles (usidgpu's file and dataset objects reopen themselves
    on their next use).
    """
    close_handles(path)


def _references(obj: h5py.HLObject) -> dict[str, h5py.Reference]:
    return {k: v for k, v in obj.attrs.items() if isinstance(v, h5py.Reference)}


def _attach(
    sidecar: h5py.File, group: h5py.Group, target: h5py.File, parent_path: str, group_name: str, source_path: str | None
) -> str:
    """Copy ``group`` into ``target`` under a temporary name, fix references, rename. Returns its path."""
    parent = target.require_group(parent_path)
    for key in list(parent):
        if key.startswith(_TMP_PREFIX):
            del parent[key]  # left by an attach that was interrupted
    final = f"{parent.name.rstrip('/')}/{group_name}"
    if group_name in parent:
        raise ResultsError(f"{target.filename} already holds {final}")
    tmp_name = f"{_TMP_PREFIX}{group_name}"
    sidecar.copy(group, parent, name=tmp_name, without_attrs=False)
    crash_point(ATTACH_COPIED)
    tmp = parent[tmp_name]
    prefix_side = group.name.rstrip("/") + "/"

    def target_path(side_path: str) -> str:
        if side_path == group.name:
            return tmp.name
        if side_path.startswith(prefix_side):
            return tmp.name + "/" + side_path[len(prefix_side) :]
        return side_path  # an ancillary of the source: same path in the target

    pairs: list[tuple[h5py.HLObject, h5py.HLObject]] = [(group, tmp)]

    def collect(name: str, obj: h5py.HLObject) -> None:
        pairs.append((obj, tmp[name]))

    group.visititems(collect)
    for side_obj, new_obj in pairs:
        for key, ref in _references(side_obj).items():
            if isinstance(ref, h5py.RegionReference):
                del new_obj.attrs[key]  # optional in USID; they cannot be rebuilt across files
                continue
            side_target = sidecar[ref]
            path = target_path(side_target.name)
            if path not in target:
                # results in a separate file: bring the referenced ancillary along
                dest_parent = target.require_group(path.rsplit("/", 1)[0] or "/")
                sidecar.copy(side_target, dest_parent, name=path.rsplit("/", 1)[1])
            elif (
                path != tmp.name and not path.startswith(tmp.name + "/") and not same_dataset(target[path], side_target)
            ):
                # that path holds another table (another scan's ancillaries): keep ours in the group
                name = side_target.name.rsplit("/", 1)[1]
                while name in tmp and not same_dataset(tmp[name], side_target):
                    name += "_"
                if name not in tmp:
                    sidecar.copy(side_target, tmp, name=name)
                path = f"{tmp.name}/{name}"
            new_obj.attrs[key] = target[path].ref
    if source_path is not None and source_path in target:
        tmp.attrs["source_000"] = target[source_path].ref
    tmp.attrs["usidgpu_attached"] = book_keeping()["timestamp"]
    tmp.attrs["usidgpu_status"] = COMPLETE
    crash_point(ATTACH_REFERENCED)
    parent.move(tmp_name, group_name)
    crash_point(ATTACH_RENAMED)
    target.flush()
    return final


def find_partial(target: str | os.PathLike) -> list[dict[str, Any]]:
    """Unfinished results of ``target``: sidecar files and their progress.

    ``status`` is ``partial`` (being computed, or interrupted: rerun to resume), ``computed``
    (complete, waiting to be attached: ``usidgpu resume``), ``busy`` (another process has the
    sidecar open right now) or ``damaged`` (cut short by a crash or a full disk; the next run of
    its tool removes it). A damaged sidecar never makes this fail.
    """
    out: list[dict[str, Any]] = []
    folder = sidecar_dir(target)
    if not folder.is_dir():
        return out
    for p in sorted(folder.glob("*.h5")):
        state = sidecar_state(p)
        if state != "ok":
            m = RESULTS_NAME.match(p.name[:-3].rsplit("~", 1)[-1])
            out.append(
                {
                    "sidecar": str(p),
                    "group": None,
                    "tool": m.group("tool") if m else None,
                    "status": state,
                    "done": 0,
                    "total": 0,
                }
            )
            continue
        with h5py.File(p, "r") as f:
            for g in _results_groups(f):
                done = g["completed_positions"][()]
                out.append(
                    {
                        "sidecar": str(p),
                        "group": g.name,
                        "tool": g.attrs.get("tool"),
                        "status": g.attrs.get("usidgpu_status"),
                        "done": int(done.sum()),
                        "total": int(done.size),
                    }
                )
    return out


def attach_pending(target: str | os.PathLike, wait: float = 0.0) -> tuple[list[str], list[str]]:
    """Attach the results kept for ``target`` (sidecars with status ``computed``: runs whose
    attach found the file busy, a full disk, or a crash) and drop damaged sidecars.

    Sidecars another process has open are left to it. Called by ``usidgpu resume`` and at the end
    of every analysis that attaches results to ``target``.

    Parameters
    ----------
    target : path
    wait : float
        Seconds to wait for the target when another process holds it.

    Returns
    -------
    (attached, problems)
        The groups attached; one line per sidecar that could not be attached (and why).
    """
    attached: list[str] = []
    problems: list[str] = []
    folder = sidecar_dir(target)
    if not folder.is_dir():
        return attached, problems
    for p in sorted(folder.glob("*.h5")):
        state = sidecar_state(p)
        if state == "damaged":
            p.unlink(missing_ok=True)
            continue
        if state == "busy" or _status_of(p) != COMPUTED:
            continue
        try:
            writer = ResultsWriter.reopen(p, target)
        except FileProblem:
            continue  # taken by another process just now
        try:
            attached.append(writer.finish(wait=wait))
        except ResultsError as exc:  # busy again, or no room: kept for later
            problems.append(str(exc))
    try:
        folder.rmdir()
    except OSError:
        pass  # other sidecars or stores remain
    return attached, problems


def _status_of(sidecar: Path) -> str | None:
    with h5py.File(sidecar, "r") as f:
        groups = _results_groups(f)
        return str(groups[0].attrs.get("usidgpu_status")) if len(groups) == 1 else None


def result_bytes(result: Any) -> int:
    """Bytes of the arrays a result holds: what its results group will take, about."""
    values = vars(result).values() if hasattr(result, "__dict__") else ()
    return int(sum(v.nbytes for v in values if isinstance(v, np.ndarray)))


def result_source(result: Any, main: Any = None) -> Any:
    """The Main dataset a result is written next to: ``main`` if given, else the one it was
    computed from.

    Raises
    ------
    TypeError
        The result was computed from an array and no Main dataset is given.
    """
    from .dataset import MainDataset

    main = main if main is not None else getattr(result, "source", None)
    if not isinstance(main, MainDataset):
        raise InvalidType(
            "this result was computed from an array; pass the MainDataset to write it next to (result.write(main))"
        )
    return main


def write_result(
    result: Any,
    main: Any,
    output: str | os.PathLike | None,
    fill: Callable[[ResultsWriter], None],
    *,
    conditions: Iterable[str] = (),
    size_hint: int | None = None,
) -> str:
    """Write a result object as a results group: begin it (``result.tool``, ``result.parameters``,
    ``result.device``), let ``fill(writer)`` write the datasets, attach it.

    A write of the same result that was interrupted earlier is started over under its name; one
    whose results were complete but not attached (a crash, a busy file, a full disk) is attached
    as it is; one attached already by a run that died before removing its sidecar is returned. A
    failure inside ``fill`` discards the group, leaving nothing behind. Results kept for the same
    file by earlier runs are attached afterwards (:func:`attach_pending`). Returns the group's path.

    Parameters
    ----------
    conditions : iterable of str
        Parameters the machine decided (see :meth:`ResultsWriter.begin`): not part of the identity.
    size_hint : int, optional
        Bytes the datasets take (default: the result's arrays); the disk is checked for room first.
    """
    crash_point(BEFORE_SIDECAR)
    need = (result_bytes(result) if size_hint is None else int(size_hint)) + _ancillary_bytes(main)
    writer = ResultsWriter.begin(
        main,
        result.tool,
        result.parameters,
        output=output,
        device=result.device,
        conditions=conditions,
        size_hint=need,
    )
    if not (writer.resumed and writer.status == COMPUTED):
        if writer.resumed:  # an earlier write of the same result was interrupted: start it over
            writer.restart()
        try:
            fill(writer)
            writer.mark_done(0, writer.n_units)
        except Exception as exc:
            if not disk_full(exc):
                writer.discard()
                raise
            writer._abandon()  # the disk filled up meanwhile (the check before is not a reservation)
            raise ResultsError(
                f"writing the results of {writer.tool} next to {writer.target} failed: the disk is full; "
                "nothing was attached"
            ) from None
        except BaseException:
            writer.discard()
            raise
    path = writer.finish()
    attach_pending(writer.target)  # results that earlier runs had to keep for this file
    return path


def _ancillary_bytes(main: Any) -> int:
    """The ancillary tables of ``main`` a results group may copy (index and value tables of both
    sides, for each of two Main datasets reusing them)."""
    return 2 * 16 * (main.n_positions * len(main.pos_dims) + main.n_spectral * len(main.spec_dims))


__all__ = [
    "AttachPending",
    "ResultsWriter",
    "attach_pending",
    "check_space",
    "disk_full",
    "find_partial",
    "identity",
    "read_when_free",
    "result_source",
    "sidecar_dir",
    "write_result",
]
