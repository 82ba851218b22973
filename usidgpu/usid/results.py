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
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..core.errors import InvalidInput, InvalidType, ResultsError
from ..storage import is_open
from ..storage.h5 import close_handles
from .attrs import book_keeping, write_attrs
from .dataset import MainDataset
from .file import RESULTS_NAME, open_h5
from .write import same_dataset

PARTIAL = "partial"
COMPUTED = "computed"
COMPLETE = "complete"
_TMP_PREFIX = "_usidgpu_attaching_"


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


def sidecar_prefix(parent_path: str) -> str:
    """Sidecar files are named ``<parent path with / as ~>~<group name>.h5``."""
    flat = parent_path.strip("/").replace("/", "~")
    return f"{flat}~" if flat else ""


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
    tool : str
    group_name : str
        ``<Source>-<Tool>_NNN``.
    group : h5py.Group
        The group in the sidecar file; create result datasets in it (see :meth:`write_main`).
    completed : numpy.ndarray of bool
        Which units of work (by default: positions) are done.
    resumed : bool
        True when an interrupted run with the same parameters was picked up.
    """

    # set by begin() (the object is made there, not by __init__)
    source: Any
    tool: str
    parameters: dict[str, Any]
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

        Returns
        -------
        ResultsWriter
        """
        self = object.__new__(cls)
        self.source = source
        self.tool = _check_tool(tool)
        self.parameters = dict(parameters or {})
        self.target = Path(output).resolve() if output is not None else Path(source.filename).resolve()
        self.same_file = self.target == Path(source.filename).resolve()
        self.parent_path = source.h5.parent.name
        self.source_path = source.name  # kept: the source file may be closed before finish()
        self.source_file = str(Path(source.filename).resolve())
        self.source_base = self.source_path.rsplit("/", 1)[1]
        self.n_units = int(n_units if n_units is not None else source.n_positions)
        self.device = str(device) if device is not None else "cpu"
        self._closed = False
        folder = sidecar_dir(self.target)
        check_target(self.target)
        fingerprint = _canonical(self.parameters)
        found = self._find_resumable(folder, fingerprint) if resume else None
        if found is not None:
            self.sidecar_path, self.group_name = found
            self._h5 = open_h5(self.sidecar_path, "r+")
            self.group = self._h5[f"{self.parent_path.rstrip('/')}/{self.group_name}"]
            self.resumed = True
        else:
            self.group_name = self._next_name(folder)
            folder.mkdir(exist_ok=True)
            self.sidecar_path = folder / f"{sidecar_prefix(self.parent_path)}{self.group_name}.h5"
            self._h5 = open_h5(self.sidecar_path, "w")
            self.group = self._h5.require_group(self.parent_path).create_group(self.group_name)
            self._write_group_attrs(fingerprint)
            self.resumed = False
        self._completed = self.group["completed_positions"]
        self.completed = self._completed[()].astype(bool)
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
        # pyUSID's check_for_old compares parameters stored as plain attributes
        write_attrs(g, _flat_parameters(self.parameters))
        g.create_dataset("completed_positions", data=np.zeros(self.n_units, dtype=np.uint8))
        self._h5.flush()

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

    def _attached(self, name: str, fingerprint: str) -> bool:
        """True when the target already holds ``name`` complete, from this source and parameters
        (a run that crashed after attaching but before removing its sidecar)."""
        if not self.target.exists():
            return False
        handle = nullcontext(self.source.h5.file) if self._target_is_open() else open_h5(self.target, "r")
        with handle as t:
            g = t.get(f"{self.parent_path.rstrip('/')}/{name}")
            return (
                isinstance(g, h5py.Group)
                and g.attrs.get("usidgpu_status") == COMPLETE
                and g.attrs.get("usidgpu_parameters") == fingerprint
                and g.attrs.get("source_dataset") == self.source_path
            )

    def _target_is_open(self) -> bool:
        return self.same_file and is_open(self.source.h5.file)

    def _next_name(self, folder: Path) -> str:
        indices = [i for _p, _n, i in self._sidecar_groups(folder)]
        if self.target.exists():
            handle = nullcontext(self.source.h5.file) if self._target_is_open() else open_h5(self.target, "r")
            with handle as t:
                parent = t.get(self.parent_path)
                if isinstance(parent, h5py.Group):
                    for key in parent:
                        m = RESULTS_NAME.match(key)
                        if m and m.group("source") == self.source_base and m.group("tool") == self.tool:
                            indices.append(int(m.group("index")))
        return f"{self.source_base}-{self.tool}_{(max(indices) + 1 if indices else 0):03d}"

    def _find_resumable(self, folder: Path, fingerprint: str) -> tuple[Path, str] | None:
        for p, name, _index in self._sidecar_groups(folder):
            try:
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
                        found = p, name
                    else:
                        continue
            except OSError:
                continue  # a sidecar damaged by a crash cannot be resumed; a new run starts
            if self._attached(name, fingerprint):
                p.unlink()  # attached already: the sidecar is a leftover
                continue
            return found
        return None

    # ------------------------------------------------------------------ filling
    @property
    def name(self) -> str:
        """Path the group will have in the target file."""
        return f"{self.parent_path.rstrip('/')}/{self.group_name}"

    @property
    def done(self) -> bool:
        return bool(self.completed.all())

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
        return write_main(self.group, name, data, quantity, units, pos_dims, spec_dims, **kwargs)

    # ------------------------------------------------------------------ finishing
    def finish(self) -> str:
        """Attach the finished group to the target file and remove the sidecar.

        The source's file is closed first when the results go into it (HDF5 cannot hold one file
        open read-only and for writing at once); reopen it with :func:`usidgpu.open`.

        Returns
        -------
        str
            HDF5 path of the results group in the target file.
        """
        if not self.done:
            missing = sum(b - a for a, b in self.pending())
            raise ResultsError(f"{self.name}: {missing} of {self.n_units} units of work are not done yet")
        self.group.attrs["usidgpu_status"] = COMPUTED
        self.group.attrs["last_pixel"] = self.n_units
        self._h5.flush()
        if self._attached(self.group_name, self.group.attrs["usidgpu_parameters"]):
            self._remove_sidecar()  # attached by a run that crashed before removing this sidecar
            return self.name
        if self.same_file:
            _close_handles(self.target)
        try:
            with open_h5(self.target, "a") as target:
                path = _attach(
                    self._h5,
                    self.group,
                    target,
                    self.parent_path,
                    self.group_name,
                    self.source_path if self.same_file else None,
                )
        except OSError as exc:
            raise ResultsError(
                f"could not attach {self.name} to {self.target}: {exc}; the results are kept in {self.sidecar_path}"
            ) from None
        self._remove_sidecar()
        return path

    def discard(self) -> None:
        """Abandon this group: close and delete its sidecar (nothing was attached)."""
        self._remove_sidecar()

    def _remove_sidecar(self) -> None:
        self.close()
        self.sidecar_path.unlink()
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
    parent.move(tmp_name, group_name)
    target.flush()
    return final


def find_partial(target: str | os.PathLike) -> list[dict[str, Any]]:
    """Unfinished results of ``target``: sidecar files and their progress."""
    out: list[dict[str, Any]] = []
    folder = sidecar_dir(target)
    if not folder.is_dir():
        return out
    for p in sorted(folder.glob("*.h5")):
        groups: list[h5py.Group] = []

        def collect(name: str, obj: Any, groups: list = groups) -> None:
            if isinstance(obj, h5py.Group) and RESULTS_NAME.match(name.rsplit("/", 1)[-1]):
                if "completed_positions" in obj:
                    groups.append(obj)

        try:
            with h5py.File(p, "r") as f:
                f.visititems(collect)
                for g in groups:
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
        except OSError:
            out.append({"sidecar": str(p), "group": None, "tool": None, "status": "unreadable", "done": 0, "total": 0})
    return out


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


def write_result(result: Any, main: Any, output: str | os.PathLike | None, fill: Any) -> str:
    """Write a result object as a results group: begin it (``result.tool``, ``result.parameters``,
    ``result.device``), let ``fill(writer)`` write the datasets, attach it.

    A write of the same result that was interrupted earlier is started over; a failure inside
    ``fill`` discards the group, leaving nothing behind. Returns the group's path.
    """
    writer = ResultsWriter.begin(main, result.tool, result.parameters, output=output, device=result.device)
    if writer.resumed:  # an earlier write of the same result was interrupted: start it over
        for name in [n for n in writer.group if n != "completed_positions"]:
            del writer.group[name]
    try:
        fill(writer)
    except BaseException:
        writer.discard()
        raise
    writer.mark_done(0, writer.n_units)
    return writer.finish()


__all__ = ["ResultsWriter", "find_partial", "result_source", "sidecar_dir", "write_result"]
