"""One running service: the catalog, the job queue and its runner, the watcher, the pipeline
and the event log, wired together. :mod:`~usidgpu.service.app` serves it over HTTP."""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.errors import InvalidInput, UnknownName
from .catalog import HDF5_SUFFIXES, STATE_DIR, Catalog, Entry
from .commands import Commands
from .events import EventLog
from .jobs import DONE, FAILED, FINISHED, RUNNING, Job, JobStore, Runner, translated_path
from .pipeline import Rule
from .readers import OpenDatasets
from .watch import Settler, watch_folders

log = logging.getLogger("usidgpu.service")

#: Vendor files the service translates to USID as they land (``usidgpu translate`` reads them).
VENDOR_SUFFIXES = (".dm3", ".dm4", ".emd", ".ibw", ".sxm", ".3ds", ".tif", ".tiff")

#: How the catalog words a file without Main datasets (then a translation is tried).
NOT_USID = "not a USID file"

#: Analyses that can run block-wise on a dask scheduler (``--scheduler``).
BLOCKWISE = frozenset({"svd", "cluster", "denoise"})


@dataclass
class Options:
    """How the service runs jobs.

    Attributes
    ----------
    device : str
        ``auto``, ``cpu`` or ``gpu`` for every job.
    scheduler : str or None
        Passed to the block-wise analyses (``threads``, ``local``, ``cuda``, ``tcp://…``).
    max_running : int
        Jobs at once (on different files).
    settle : float
        Seconds a new file must stay unchanged before it is taken.
    watch : bool
        Follow the folders for new files (else: only the scan at start and explicit rescans).
    memory : str or None
        Memory budget of each job.
    read_only : bool
        Serve only: no jobs, no pipeline, no translations.
    """

    device: str = "auto"
    scheduler: str | None = None
    max_running: int = 1
    settle: float = 2.0
    watch: bool = True
    memory: str | None = None
    read_only: bool = False


class Service:
    """The service's state and machinery (use as a context manager: :meth:`start` … :meth:`close`).

    Parameters
    ----------
    folders : sequence of path
        Watched folders.
    commands : Commands
        The analyses and their options (from the command line).
    rules : list of Rule
        The pipeline.
    state_dir : path, optional
        Catalog, keys, translated files (default ``folders[0]/.usidgpu-serve``).
    options : Options
    """

    def __init__(
        self,
        folders: Sequence[str | os.PathLike],
        commands: Commands,
        rules: list[Rule],
        state_dir: str | os.PathLike | None = None,
        options: Options | None = None,
    ) -> None:
        self.options = options or Options()
        self.commands = commands
        self.rules = [] if self.options.read_only else rules
        if not folders:
            raise InvalidInput("give at least one folder to serve")
        first = Path(folders[0]).resolve()
        state = Path(state_dir).resolve() if state_dir else first / STATE_DIR
        self.translated = state / "translated"
        if first.is_dir():
            self.translated.mkdir(parents=True, exist_ok=True)
        self.catalog = Catalog([*folders, self.translated], state)
        self.watched = self.catalog.folders[:-1]
        self.jobs = JobStore(self.catalog.db_path)
        self.events = EventLog()
        self.readers = OpenDatasets()
        self.runner = Runner(self.jobs, self.command_of, self.job_changed, self.options.max_running)
        self._stop = threading.Event()
        self.settler = Settler(self.options.settle, self.ready, self.take)

    # ------------------------------------------------------------------ lifetime
    def start(self) -> dict[str, int]:
        """Queue again what a previous run left running, scan, apply the pipeline, start the
        runner and the watcher. Returns the scan's counts."""
        self.jobs.requeue_interrupted()
        counts = self.catalog.scan()
        for entry in self.catalog.datasets():  # source data only: results are not analyzed again
            self.apply_pipeline(entry)
        for path, _reason in self.catalog.failed_files():
            if self.catalog.folder_of(path) is not None and path.parent != self.translated:
                self.translate_if_other_hdf5(path)
        if not self.options.read_only:
            for folder in self.watched:
                for path in _vendor_files(folder, self.catalog.state_dir):
                    self.take(path)
            self.runner.start()
        if self.options.watch:
            watch_folders(self.watched, self.settler, self.wanted, self._stop)
        return counts

    def close(self) -> None:
        """Stop watching and running (running jobs are queued again at the next start)."""
        self._stop.set()
        self.runner.stop()
        self.readers.close()
        self.jobs.close()
        self.catalog.close()

    def __enter__(self) -> Service:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ files
    def wanted(self, path: Path) -> bool:
        """Whether a changed path is a data file of the watched folders (not usidgpu's own files,
        not hidden files such as a translation's temporary output)."""
        if not path.name.lower().endswith(HDF5_SUFFIXES + VENDOR_SUFFIXES):
            return False
        state = self.catalog.state_dir
        if path == state or state in path.parents:
            return False
        folder = self.catalog.folder_of(path)
        if folder is None:
            return False
        rel = path.resolve().relative_to(self.catalog.folders[folder]).parts
        return not any(p.startswith(".") or p.endswith(".usidgpu") for p in rel)

    def ready(self, path: Path) -> bool:
        """An HDF5 file is ready when HDF5 opens it (a writer still holding it keeps it locked)."""
        if not path.name.lower().endswith(HDF5_SUFFIXES):
            return True
        import h5py

        try:
            with h5py.File(path, "r"):
                return True
        except OSError:
            return False

    def take(self, path: Path) -> None:
        """A file that landed (or changed) and is complete: catalog it, or translate it."""
        if path.name.lower().endswith(VENDOR_SUFFIXES):
            self.translate(path)
            return
        folder = self.catalog.folder_of(path)
        if folder is None:
            return
        self.readers.forget(str(path.resolve()))
        ok = self.catalog.add_file(folder, path)
        if ok:
            for entry in self.catalog.datasets_of(path):
                if not entry.description.get("result_of"):
                    self.events.publish("dataset", entry.summary())
                self.apply_pipeline(entry)
        elif not self.translate_if_other_hdf5(path):
            failed = [f for f in self.catalog.failures() if f["file"] == path.name]
            self.events.publish("failed", failed[0] if failed else {"file": path.name, "error": "unreadable"})

    def translate_if_other_hdf5(self, path: Path) -> bool:
        """An HDF5 file that holds no USID Main dataset may be another format ``usidgpu translate``
        reads (NSID, from sidpy/pyNSID): queue its translation. True when queued (or done)."""
        reason = dict((str(p), e) for p, e in self.catalog.failed_files()).get(str(path.resolve()), "")
        if self.options.read_only or not reason.startswith(NOT_USID):
            return False
        return self.translate(path) is not None or translated_path(self.catalog.state_dir, path).exists()

    def translate(self, path: Path) -> Job | None:
        """Queue the translation of a vendor file (once: not when its output exists or a job for it
        is queued or running)."""
        out = translated_path(self.catalog.state_dir, path)
        if out.exists() or self.options.read_only:
            return None
        for job in self.jobs.query(dataset_id=None):
            if job.analysis == "translate" and job.file == str(path.resolve()) and job.status not in FINISHED:
                return None
        job = self.jobs.add("translate", str(path.resolve()), [], {}, origin="watch")
        self.events.publish("job", job.public())
        self.runner.wake()
        return job

    # ------------------------------------------------------------------ jobs
    def apply_pipeline(self, entry: Entry) -> list[Job]:
        """Queue the jobs of every rule that matches ``entry`` and has not run on it yet."""
        made: list[Job] = []
        summary = entry.summary()
        if summary["result_of"]:
            return made  # results are not analyzed again by the pipeline
        for rule in self.rules:
            if rule.matches(summary) and not self.jobs.exists(entry.id, rule.origin):
                made.append(self.submit(entry, rule.analysis, rule.parameters, origin=rule.origin))
        return made

    def submit(self, entry: Entry, analysis: str, parameters: dict[str, Any], origin: str = "api") -> Job:
        """Queue one analysis of a catalogued dataset (parameters checked now)."""
        if self.options.read_only:
            raise InvalidInput("this service is read-only (--read-only): it runs no jobs")
        if analysis == "translate":
            raise UnknownName("translations are queued by the service itself")
        argv = self.commands.argv(analysis, parameters)
        job = self.jobs.add(analysis, entry.file, argv, parameters, dataset_id=entry.id, path=entry.path, origin=origin)
        self.events.publish("job", job.public())
        self.runner.wake()
        return job

    def command_of(self, job: Job) -> list[str]:
        """The child's command line of a job."""
        base = [sys.executable, "-m", "usidgpu"]
        if job.analysis == "translate":
            out = translated_path(self.catalog.state_dir, Path(job.file))
            return [*base, "translate", job.file, str(out)]
        argv = [*base, job.analysis, job.file, "--dataset", str(job.path), *job.argv, "--device", self.options.device]
        if self.options.memory:
            argv += ["--memory", self.options.memory]
        if self.options.scheduler and job.analysis in BLOCKWISE:
            argv += ["--scheduler", self.options.scheduler]
        return argv

    def job_changed(self, job: Job) -> None:
        """After each change of a job: tell the clients; let go of its file while it runs (it
        attaches its results at the end); when one is done, catalog what it made."""
        self.events.publish("job", job.public())
        if job.analysis == "translate" and job.status == FAILED and job.file.lower().endswith(HDF5_SUFFIXES):
            # an HDF5 file neither USID nor translatable: its reason is the translator's
            self.catalog.set_file_status(job.file, "failed", f"not USID, and not translatable: {job.message}")
        if job.status == RUNNING:
            self.readers.hold_off(job.file)
            return
        if job.status in FINISHED:
            self.readers.release(job.file)
        if job.status != DONE:
            return
        if job.analysis == "translate":
            out = translated_path(self.catalog.state_dir, Path(job.file))
            if out.exists():
                self.catalog.set_file_status(job.file, "translated")  # an NSID file: no failure any more
                self.take(out)
            return
        folder = self.catalog.folder_of(job.file)
        if folder is not None and self.catalog.add_file(folder, Path(job.file)):
            for entry in self.catalog.datasets_of(job.file):
                if not entry.description.get("result_of"):
                    self.events.publish("dataset", entry.summary())


def _vendor_files(folder: Path, state_dir: Path) -> list[Path]:
    """Vendor files already in a folder at start (hidden and usidgpu's own folders skipped)."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(
            d for d in dirs if not d.startswith(".") and not d.endswith(".usidgpu") and Path(root, d) != state_dir
        )
        found += [Path(root, n) for n in sorted(files) if not n.startswith(".") and n.lower().endswith(VENDOR_SUFFIXES)]
    return found
