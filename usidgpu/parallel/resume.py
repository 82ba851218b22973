"""Finding and finishing interrupted :class:`~usidgpu.parallel.Process` runs, and attaching the
results runs had to keep in their sidecars (``usidgpu resume``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..core.errors import ResultsError
from ..storage.locks import RunInProgress, lock_holder
from ..storage.sidecar import PARTIAL, done_count, lock_path, read_meta
from ..usid.results import COMPUTED, attach_pending, attach_wait, find_partial, sidecar_dir


def partial_runs(target: str | os.PathLike) -> list[dict[str, Any]]:
    """Unfinished runs whose results go to ``target``: one dict per store (tool, source dataset,
    process class, parameters, blocks done / total, store path, and ``running``: who computes it
    right now, or None for an interrupted run)."""
    folder = sidecar_dir(target)
    runs = []
    if not folder.is_dir():
        return runs
    for path in sorted(folder.glob("*.zarr")):
        meta = read_meta(path)
        if meta.get("status") != PARTIAL:
            continue
        done = done_count(path)
        runs.append(
            dict(
                store=str(path),
                tool=meta.get("tool"),
                process=meta.get("process"),
                parameters=meta.get("parameters", {}),
                source_file=meta.get("source_file"),
                source_name=meta.get("source_name"),
                output=meta.get("output"),
                device=meta.get("device", "cpu"),
                blocks=meta.get("blocks", []),
                done=done,
                total=len(meta.get("blocks", [])),
                running=lock_holder(lock_path(path)),
            )
        )
    return runs


def kept_results(target: str | os.PathLike, which: str | None = None) -> list[dict[str, Any]]:
    """Complete results waiting to be attached to ``target`` (a busy file, a full disk or a crash
    stopped their attach): :func:`~usidgpu.usid.results.find_partial` entries with status
    ``computed``, optionally only those whose tool or group path contains ``which``."""
    return [
        r
        for r in find_partial(target)
        if r["status"] == COMPUTED and (which is None or which in (r["tool"] or "") or which in (r["group"] or ""))
    ]


def matches(run: dict[str, Any], which: str | None) -> bool:
    """Whether a run's tool or source dataset path contains ``which`` (every run for None)."""
    return which is None or which in (run["tool"] or "") or which in (run["source_name"] or "")


def resume(
    target: str | os.PathLike,
    which: str | None = None,
    scheduler: Any = None,
    workers: int | None = None,
    progress: bool = True,
) -> list[str]:
    """Finish the interrupted runs of ``target``: only their missing blocks are computed. Runs
    that another process is computing right now are left to it. Then attach the results kept for
    ``target`` (:func:`~usidgpu.usid.results.attach_pending`), waiting for the file while another
    process holds it (``$USIDGPU_ATTACH_WAIT`` s).

    Parameters
    ----------
    target : path
        The file the results go to (the source file, or the ``output`` of the run).
    which : str, optional
        Only runs whose tool or source dataset path contains this.
    scheduler, workers : optional
        Where to run the missing blocks (need not be where the run started).
    progress : bool

    Returns
    -------
    list of str
        The results groups written.
    """
    # a run another process is computing right now is left to it (it would refuse a second one)
    runs = [r for r in partial_runs(target) if matches(r, which) and not r["running"]]
    written = []
    failures = []
    for run in runs:
        try:
            written.append(_resume_one(run, scheduler, workers, progress))
        except RunInProgress:  # started meanwhile, or not seen as running here (no /proc/locks)
            continue
        except (ImportError, AttributeError) as exc:
            failures.append(
                f"{run['store']}: cannot rebuild {run['process']} ({exc}); the process class must be importable "
                "(a class defined in a script: rerun that script)"
            )
        except (RuntimeError, ValueError, OSError) as exc:
            failures.append(f"{run['store']}: {exc}")
    if which is None or kept_results(target, which):
        attached, problems = attach_pending(target, wait=attach_wait())
        written += attached
        failures += problems
    if failures:
        raise ResultsError("; ".join(failures) + (f" (resumed: {', '.join(written)})" if written else ""))
    return written


def _resume_one(run: dict[str, Any], scheduler: Any, workers: int | None, progress: bool) -> str:
    """Rebuild one interrupted run's process from its store and finish it."""
    from ..usid.file import USIDFile
    from .process import load_class

    cls = load_class(run["process"])
    first = run["blocks"][0] if run["blocks"] else [0, 1]
    with USIDFile(run["source_file"]) as f:
        source = f[run["source_name"]]
        process = cls.from_parameters(
            source,
            run["parameters"],
            scheduler=scheduler,
            workers=workers,
            device=run["device"],
            output=run["output"],
            rows_per_block=first[1] - first[0],  # the same blocks: the same store
            progress=progress,
        )
        if Path(process.store_path()) != Path(run["store"]):
            raise ResultsError("the source or the process changed since the run began; it cannot be resumed")
        return process.run()
