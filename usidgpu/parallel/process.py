"""``Process``: write the per-block science, get blocks, workers, progress, results and resume.

pyUSID's Process gives a scientist memory management, parallel cores, MPI and resuming for
writing only the per-position computation. Here the same contract runs on dask: a subclass says
what it outputs per position (:meth:`Process.outputs`) and how to compute a block of positions
(:meth:`Process.compute`); :meth:`Process.run` plans blocks within the memory budget, sends
them to the executor (in-process, threads, a dask ``LocalCluster``, dask-cuda, or any running
scheduler), writes each block into a zarr store as it finishes, and finally consolidates the
store into a USID results group ``<Source>-<Tool>_NNN`` next to the source.

Workers open the source HDF5 file read-only, each on its own, and never write to it. Running a
computation that is already attached (same process, parameters, source and blocks) returns the
existing results group, as pyUSID's ``check_for_old`` does. A run that
is interrupted — Ctrl-C, a crash, kill -9 at any moment — leaves its store marked ``partial``;
running the same process again (or ``usidgpu resume FILE``) computes only the blocks without a
done marker and gives exactly the uninterrupted result. Global steps (reductions over all
positions, such as the Gram matrix of an SVD) go through :meth:`Process.reduce`, combined in a
fixed tree on the workers; they are cheap to redo and are recomputed on resume.

A Process must pickle: it travels to the workers without its ``source`` (an open HDF5
dataset); copy what :meth:`compute` needs from the source (e.g. the bias values) into plain
attributes in ``__init__``.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..core.arrays import asnumpy
from ..core.device import select_device
from ..core.errors import InvalidInput, ResultsError, UsidgpuError
from ..core.faults import crash_point, register
from ..core.memory import memory_budget
from ..core.stream import plan_blocks as plan_rows
from ..storage.locks import run_lock
from ..storage.sidecar import PARTIAL, BlockStore, clear_removed, read_meta, remove_store
from ..usid.dimension import Dimension
from ..usid.results import (
    COMPUTED,
    AttachPending,
    ResultsWriter,
    attach_pending,
    check_space,
    check_target,
    disk_full,
    read_when_free,
    sidecar_dir,
    sidecar_prefix,
    sidecar_state,
)
from .executors import Executor, get_executor

BLOCK_DONE = register("process.block", "a block-wise run stored one more block (N-th: between blocks)")


@dataclass
class Output:
    """One per-position output of a Process: ``columns`` values for every position.

    ``dims``: its spectroscopic dimensions — ``None`` for one dimension named after the output
    with ``columns`` steps, ``"source"`` for the source's own (same length), or a list of
    :class:`~usidgpu.Dimension`.
    """

    columns: int
    quantity: str = "a. u."
    units: str = "a. u."
    dtype: Any = np.float32
    dims: Any = None


class Process:
    """Base class of block-wise computations on a USID Main dataset.

    Parameters
    ----------
    source : MainDataset
    scheduler : str, Executor or distributed.Client, optional
        Where blocks run (see :func:`~usidgpu.parallel.get_executor`); default in this process.
    workers : int, optional
        Threads or worker processes.
    device : {"cpu", "gpu"}
        Array module the blocks reach :meth:`compute` as (each worker uses its own GPU).
    budget : int or str, optional
        Memory per worker for one block (default: the usual fraction of free memory).
    output : path, optional
        Attach the results group to this file instead of the source's.
    rows_per_block : int, optional
        Force the block size (positions per block).
    progress : bool
        Show a progress bar over the blocks.

    Subclasses implement :meth:`outputs`, :meth:`compute` and :meth:`parameters`, and may
    override :meth:`prepare` (global steps before the blocks, e.g. with :meth:`reduce`) and
    :meth:`finalize` (extra datasets in the results group).
    """

    tool = "Process"

    def __init__(
        self,
        source: Any,
        *,
        scheduler: Any = None,
        workers: int | None = None,
        device: str = "cpu",
        budget: int | str | None = None,
        output: str | os.PathLike | None = None,
        rows_per_block: int | None = None,
        progress: bool = True,
    ) -> None:
        self.source = source
        self.source_file = str(Path(source.filename).resolve())
        self.source_name = source.name
        self.source_shape = tuple(source.shape)
        self.scheduler, self.workers = scheduler, workers
        self.device = select_device(device).kind
        self.budget, self.output, self.progress = budget, output, progress
        self._rows_per_block = rows_per_block
        self._executor: Executor | None = None

    # ------------------------------------------------------------------ what subclasses write
    def outputs(self) -> dict[str, Output]:
        """The per-position outputs, by name."""
        raise NotImplementedError

    def compute(self, block: Any, xp: Any) -> dict[str, Any]:
        """Outputs of one block of positions: ``block`` is (rows, spectroscopic points), NumPy or
        CuPy (``xp``); return name → (rows, columns) array for every output."""
        raise NotImplementedError

    def parameters(self) -> dict[str, Any]:
        """JSON-able keyword arguments that rebuild this process with the same results (they name
        the results group's parameters and identify a run to resume)."""
        return {}

    def prepare(self) -> None:
        """Global steps before the blocks run (default: none); :meth:`reduce` runs on the workers."""

    def finalize(self, writer: ResultsWriter) -> None:
        """Write extra datasets or attributes into the results group (default: none)."""

    # ------------------------------------------------------------------ helpers for subclasses
    def reduce(self, partial: Any, combine: Any, with_rows: bool = False) -> Any:
        """``combine`` over all blocks of ``partial(block, xp)``, in a fixed tree on the executor.

        ``partial`` and ``combine`` must pickle (module-level functions, or bound methods of
        this process). With ``with_rows`` the call is ``partial(block, xp, rows, span)``:
        the block's own rows and the rows read (see :meth:`read_span`).
        """
        tasks = [(self, a, b, partial, with_rows) for a, b in self.blocks()]
        return self.executor.tree_reduce(_reduce_block, combine, tasks)

    def read_span(self, start: int, stop: int) -> tuple[int, int]:
        """Rows to read for the block ``[start, stop)`` — more than its own for computations with
        a halo (windows that reach into the neighbouring blocks). Default: its own rows."""
        return start, stop

    def compute_block(self, block: Any, xp: Any, rows: tuple[int, int], span: tuple[int, int]) -> dict[str, Any]:
        """:meth:`compute` with the block's place: ``rows`` its own rows, ``span`` the rows read
        (``block`` holds ``span``). Override this instead of :meth:`compute` for halos."""
        return self.compute(block, xp)

    @property
    def executor(self) -> Executor:
        if self._executor is None:
            self._executor = get_executor(self.scheduler, self.workers)
        return self._executor

    def _close_executor(self) -> None:
        """Close the executor this process started (one passed in as ``scheduler`` stays open)."""
        if self._executor is not None and self._executor is not self.scheduler:
            self._executor.close()
        self._executor = None

    def blocks(self) -> list[tuple[int, int]]:
        """Row ranges of the blocks, within the memory budget per worker (those of the run being
        resumed, when there is one)."""
        if getattr(self, "_blocks", None):
            return list(self._blocks)
        return self.plan_blocks()

    def plan_blocks(self) -> list[tuple[int, int]]:
        """A fresh block plan from ``rows_per_block`` or the memory budget."""
        n_rows, n_cols = self.source_shape
        if self._rows_per_block is not None:
            rows = int(self._rows_per_block)
            if rows < 1:
                raise InvalidInput(f"rows_per_block must be at least 1, got {self._rows_per_block}")
        else:
            row_bytes = n_cols * np.dtype(self.source.dtype).itemsize * 4  # the block, its float copy, outputs
            rows = plan_rows(n_rows, row_bytes, memory_budget(self.budget, self.device), n_buffers=1).rows_per_block
        return [(a, min(a + rows, n_rows)) for a in range(0, n_rows, rows)]

    # ------------------------------------------------------------------ running
    def fingerprint(self) -> str:
        """What identifies this computation: class, parameters and source (not the block plan,
        which follows the free memory: an interrupted run resumes with its own plan)."""
        ident = dict(
            process=_class_path(type(self)),
            parameters=self.parameters(),
            source_file=self.source_file,
            source_name=self.source_name,
            shape=list(self.source_shape),
        )
        return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()

    def store_path(self) -> Path:
        target = Path(self.output or self.source_file)
        parent = self.source_name.rsplit("/", 1)[0] or "/"
        base = self.source_name.rsplit("/", 1)[1]
        return sidecar_dir(target) / f"{sidecar_prefix(parent)}{base}-{self.tool}-{self.fingerprint()[:12]}.zarr"

    def run(self) -> str:
        """Compute every block not yet done, then write the results group; returns its path.

        Raises
        ------
        RunInProgress
            The same computation (same fingerprint) is running in another process.
        """
        check_target(self.output or self.source_file)
        if Path(self.source_file).is_dir():
            raise InvalidInput(
                f"{self.source_file}: block-wise runs read HDF5 sources; convert the zarr store first "
                "(usidgpu convert STORE.zarr FILE.h5)"
            )
        lock = self.store_path().with_name(self.store_path().name + ".lock")
        try:
            with run_lock(lock, f"{self.tool} of {self.source_name} in {self.source_file}"):
                return self._run_locked()
        finally:
            _remove_empty(lock.parent)  # a sidecar folder with nothing left in it (also after a failure)

    def _run_locked(self) -> str:
        old = read_meta(self.store_path())
        stamp = self.source_stamp()
        if old.get("status") == PARTIAL and old.get("fingerprint") == self.fingerprint():
            if old.get("source_stamp") != stamp:
                # the source changed since the run began: its blocks would mix old and new data
                remove_store(self.store_path())
            else:
                self._blocks = [tuple(b) for b in old["blocks"]]  # resume with the interrupted run's blocks
        self._blocks = self.blocks()  # one plan for the whole run (the free memory may change)
        specs = self.outputs()
        self._check_outputs(specs)
        blocks = self.blocks()
        meta = dict(
            process=_class_path(type(self)),
            tool=self.tool,
            parameters=self.parameters(),
            source_file=self.source_file,
            source_name=self.source_name,
            output=str(Path(self.output).resolve()) if self.output else None,
            device=self.device,
            source_stamp=stamp,
        )
        path = self.store_path()
        clear_removed(path.parent)
        attached = self._attached_group()
        if attached is not None:
            # this very computation is attached already (a run killed after attaching, or a repeat
            # of a finished run): reuse it, as pyUSID's check_for_old does, and drop any leftovers
            sidecar = old.get("sidecar") if old.get("fingerprint") == self.fingerprint() else None
            if sidecar and Path(sidecar).exists():
                Path(sidecar).unlink()  # its group is attached: the copy is garbage
            remove_store(path)
            _remove_empty(path.parent)
            return attached
        kept = self._kept_sidecar()
        if kept is not None:
            # this computation finished before but could not attach (a busy file, a full disk):
            # attach what it kept instead of computing it again
            remove_store(path)
            return ResultsWriter.reopen(kept, Path(self.output or self.source_file)).finish()
        columns = {name: (spec.columns, np.dtype(spec.dtype)) for name, spec in specs.items()}
        if not (path.exists() and old.get("fingerprint") == self.fingerprint()):
            # the store, the sidecar it is consolidated into, and that group's copy in the target
            row_bytes = sum(cols * dtype.itemsize for cols, dtype in columns.values())
            check_space(path.parent.parent, 3 * self.source_shape[0] * row_bytes, f"the results of {self.tool}")
        path.parent.mkdir(exist_ok=True)
        store, resumed = BlockStore.open_or_create(path, self.fingerprint(), blocks, columns, meta)
        try:
            try:
                self.prepare()
            except UsidgpuError:
                # the input is refused before any block ran: a new store holds nothing to resume
                if not resumed and not store.done().any():
                    store.remove()
                    _remove_empty(path.parent)
                raise
            pending = [i for i, done in enumerate(store.done()) if not done]
            tasks = [(self, store, i) for i in pending]
            bar = _progress(self.progress, len(blocks), len(blocks) - len(pending), self.tool)
            for _i, _ in self.executor.map_unordered(_run_block, tasks):
                bar.update(1)
                crash_point(BLOCK_DONE)
            bar.close()
        finally:
            self._close_executor()
        return self._consolidate(store, specs)

    def source_stamp(self) -> str:
        """Size and modification time of the source file: a run whose source changed is not resumed
        (its blocks would mix old and new data). Conservative: attaching other results to the
        same file also changes it, and the interrupted run then starts over."""
        st = Path(self.source_file).stat()
        return f"{st.st_size}:{st.st_mtime_ns}"

    def _check_outputs(self, specs: dict[str, Output]) -> None:
        """Catch output specifications that could only fail after all the work."""
        for name, spec in specs.items():
            if not (isinstance(spec.columns, (int, np.integer)) and spec.columns >= 1):
                raise InvalidInput(f"{type(self).__name__}: output {name!r} needs at least one column: {spec.columns}")
            if isinstance(spec.dims, str) and spec.dims == "source" and spec.columns != self.source_shape[1]:
                raise InvalidInput(
                    f"{type(self).__name__}: output {name!r} uses the source's spectroscopic dimensions, so it needs "
                    f"{self.source_shape[1]} columns, not {spec.columns}"
                )
            if isinstance(spec.dims, (list, tuple)):
                size = int(np.prod([d.size for d in spec.dims]))
                if size != spec.columns:
                    raise InvalidInput(
                        f"{type(self).__name__}: output {name!r} has {spec.columns} columns but its dims hold {size}"
                    )

    def _attached_group(self) -> str | None:
        """A complete results group this very run (same fingerprint) attached already, if any."""
        from ..usid.file import RESULTS_NAME

        target = Path(self.output or self.source_file)
        if not target.exists():  # a new output file: nothing attached yet (it is created on attach)
            return None
        parent, base = self.source_name.rsplit("/", 1)
        with read_when_free(target) as f:
            group_of = f.get(parent or "/")
            if group_of is None:
                return None
            for key in group_of:
                match = RESULTS_NAME.match(key)
                if not match or match.group("source") != base or match.group("tool") != self.tool:
                    continue
                attrs = group_of[key].attrs
                if attrs.get("usidgpu_run") == self.fingerprint() and attrs.get("usidgpu_status") == "complete":
                    return group_of[key].name
        return None

    def _kept_sidecar(self) -> Path | None:
        """The sidecar of this very run (same fingerprint) holding complete results not attached yet."""
        import h5py

        parent, base = self.source_name.rsplit("/", 1)
        folder = sidecar_dir(Path(self.output or self.source_file))
        for p in sorted(folder.glob(f"{sidecar_prefix(parent or '/')}{base}-{self.tool}_*.h5")):
            if sidecar_state(p) != "ok":
                continue
            with h5py.File(p, "r") as f:
                g = f.get(f"{parent}/{p.name[:-3].rsplit('~', 1)[-1]}")
                if (
                    g is not None
                    and g.attrs.get("usidgpu_run") == self.fingerprint()
                    and g.attrs.get("usidgpu_status") == COMPUTED
                ):
                    return p
        return None

    def _consolidate(self, store: BlockStore, specs: dict[str, Output]) -> str:
        if not store.done().all():
            raise ResultsError(f"{store.path}: {int((~store.done()).sum())} block(s) are not done")
        _remove_if_broken(store.meta.get("sidecar"))
        row_bytes = sum(spec.columns * np.dtype(spec.dtype).itemsize for spec in specs.values())
        writer = ResultsWriter.begin(
            self.source,
            self.tool,
            self.parameters(),
            output=self.output,
            device=self.device,
            n_units=1,
            size_hint=self.source_shape[0] * row_bytes,
        )
        store.set_meta(sidecar=str(writer.sidecar_path))
        if not (writer.resumed and writer.status == COMPUTED):
            if writer.resumed:  # an earlier consolidation was interrupted: write it again
                writer.restart()
            self._fill(writer, store, specs)
        try:
            group = writer.finish()
        except AttachPending:
            # complete in the sidecar, which a rerun, `usidgpu resume` or the next analysis attaches
            store.remove()
            _remove_empty(store.path.parent)
            raise
        store.remove()
        _remove_empty(store.path.parent)
        attach_pending(Path(self.output or self.source_file))  # results earlier runs kept for this file
        return group

    def _fill(self, writer: ResultsWriter, store: BlockStore, specs: dict[str, Output]) -> None:
        """Write the store's outputs and the extras into the sidecar, then mark it done."""
        import dask

        try:
            # here, in this process: the store is local, the HDF5 target open in this process only
            with dask.config.set(scheduler="synchronous"):
                self._write_outputs(writer, store, specs)
            self.finalize(writer)
            writer.group.attrs["usidgpu_run"] = self.fingerprint()  # how a rerun knows it is attached
            writer.mark_done(0, 1)
        except Exception as exc:
            if not disk_full(exc):
                writer.close()  # the sidecar stays: the next run resumes the consolidation
                raise
            writer.discard()  # the store keeps every block: the next run writes it again
            raise ResultsError(
                f"writing the results of {self.tool} next to {writer.target} failed: the disk is full; the computed "
                f"blocks are kept in {store.path} (`usidgpu resume` finishes them once there is room)"
            ) from None
        except BaseException:
            writer.close()  # the sidecar stays: the next run resumes the consolidation
            raise

    def _write_outputs(self, writer: ResultsWriter, store: BlockStore, specs: dict[str, Output]) -> None:
        for name, spec in specs.items():
            prefix: str | None = f"{name}_Spectroscopic_"  # outputs' own dims don't collide
            dims = spec.dims
            if dims is None:
                dims = [Dimension(name, "a. u.", spec.columns)]
            elif isinstance(dims, str) and dims == "source":
                dims, prefix = self.source, None
            writer.write_main(
                name, store.array(name), spec.quantity, spec.units, self.source, dims, aux_spec_prefix=prefix
            )

    # ------------------------------------------------------------------ pickling
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["source"] = None  # an open HDF5 dataset does not travel; workers read by path
        state["_executor"] = None
        state["scheduler"] = None  # a Client or an Executor does not pickle, and workers need neither
        return state

    @classmethod
    def from_parameters(cls, source: Any, parameters: dict[str, Any], **run_options: Any) -> Process:
        """Rebuild a process from its :meth:`parameters` (used by ``usidgpu resume``)."""
        return cls(source, **parameters, **run_options)


def _remove_empty(folder: Path) -> None:
    """Remove the sidecar folder when nothing else is left in it."""
    try:
        folder.rmdir()
    except OSError:
        pass


def _remove_if_broken(sidecar: str | None) -> None:
    """Delete the sidecar of a consolidation killed while writing it, when HDF5 cannot read it
    any more: the store still holds every block, so nothing is lost, and the results group keeps
    its name instead of moving on to the next number."""
    if sidecar and Path(sidecar).exists() and sidecar_state(sidecar) == "damaged":
        Path(sidecar).unlink()


def _class_path(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def load_class(path: str) -> type:
    """The class named ``module:QualName``."""
    module, _, name = path.partition(":")
    obj: Any = importlib.import_module(module)
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


def read_rows(process: Process, a: int, b: int) -> Any:
    """Rows [a, b) of the source, read on the worker through its own read-only handle."""
    import h5py

    with h5py.File(process.source_file, "r") as f:
        data = f[process.source_name][a:b]
    xp = select_device(process.device).xp
    return xp.asarray(data), xp


def _run_block(task: tuple[Process, BlockStore, int]) -> int:
    process, store, index = task
    a, b = store.blocks[index]
    ra, rb = process.read_span(a, b)
    block, xp = read_rows(process, ra, rb)
    values = process.compute_block(block, xp, (a, b), (ra, rb))
    missing = set(process.outputs()) - set(values)
    if missing:
        raise InvalidInput(f"{type(process).__name__}.compute returned no {sorted(missing)}")
    store.write_block(index, {name: asnumpy(v) for name, v in values.items()})
    return index


def _reduce_block(task: tuple[Process, int, int, Any, bool]) -> Any:
    process, a, b, partial, with_rows = task
    if not with_rows:
        block, xp = read_rows(process, a, b)
        return _to_host(partial(block, xp))
    ra, rb = process.read_span(a, b)
    block, xp = read_rows(process, ra, rb)
    return _to_host(partial(block, xp, (a, b), (ra, rb)))


def _to_host(value: Any) -> Any:
    """Partial results travel as NumPy (tuples, lists and dicts of arrays too)."""
    if isinstance(value, tuple | list):
        return type(value)(_to_host(v) for v in value)
    if isinstance(value, dict):
        return {k: _to_host(v) for k, v in value.items()}
    return asnumpy(value) if hasattr(value, "shape") else value


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(show: bool, total: int, done: int, tool: str) -> Any:
    if not show or total <= 1:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=done, desc=tool, unit="block", leave=False)
