"""Jobs: analyses queued, run in child processes, followed, cancelled — and still there after a
crash of the service.

The queue is a table in the catalog's SQLite database, so a restart finds every job: one that
was running when the service died is queued again, and its rerun resumes the interrupted work
(results are crash-safe and resumable: :mod:`usidgpu.usid.results`, :mod:`usidgpu.parallel`).

Each job runs the ``usidgpu`` command of its analysis in a child process: the command's own
checks, device choice and crash safety apply unchanged; a job that crashes (even in native
code) cannot take the service down; cancelling is ending the child. The child is tied to the
service (Linux ``PR_SET_PDEATHSIG``): if the service is killed, its jobs stop with it instead of
racing the restarted service's reruns. Progress is read from the command's progress bars
(tqdm, asked through its ``TQDM_*`` environment settings to report often and plainly).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from ..core.errors import InvalidInput, UsidgpuError
from .database import transaction

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
FINISHED = (DONE, FAILED, CANCELLED)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    analysis TEXT NOT NULL,
    dataset_id TEXT,            -- the catalogued dataset (NULL for a translation)
    file TEXT NOT NULL,         -- input file
    path TEXT,                  -- HDF5 path of the Main dataset
    argv TEXT NOT NULL,         -- JSON: the command's options (checked at submission)
    parameters TEXT NOT NULL,   -- JSON: as submitted
    origin TEXT NOT NULL,       -- api | pipeline:<rule> | watch
    status TEXT NOT NULL,
    progress REAL NOT NULL DEFAULT 0,
    message TEXT NOT NULL DEFAULT '',
    result TEXT,                -- the results group (or the translated file)
    attempts INTEGER NOT NULL DEFAULT 0,
    submitted REAL NOT NULL,
    started REAL,
    finished REAL
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status);
"""

_COLUMNS = (
    "id, analysis, dataset_id, file, path, argv, parameters, origin, status, progress, message, result, "
    "attempts, submitted, started, finished"
)


class NoSuchJob(UsidgpuError, KeyError):
    """No job with that id."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class Job:
    """One job, as stored."""

    id: int
    analysis: str
    dataset_id: str | None
    file: str
    path: str | None
    argv: list[str]
    parameters: dict[str, Any]
    origin: str
    status: str
    progress: float
    message: str
    result: str | None
    attempts: int
    submitted: float
    started: float | None
    finished: float | None

    def public(self) -> dict[str, Any]:
        """What clients see: no server paths."""
        return {
            "id": self.id,
            "analysis": self.analysis,
            "dataset_id": self.dataset_id,
            "file": os.path.basename(self.file),
            "parameters": self.parameters,
            "origin": self.origin,
            "status": self.status,
            "progress": self.progress,
            "message": self.message,
            "result": self.result if self.analysis != "translate" else os.path.basename(self.result or "") or None,
            "attempts": self.attempts,
            "submitted": self.submitted,
            "started": self.started,
            "finished": self.finished,
        }


class JobStore:
    """The job table (in the catalog's database)."""

    def __init__(self, db_path: str | os.PathLike) -> None:
        self._db = sqlite3.connect(db_path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _tx(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return transaction(self._db, self._lock)

    def add(
        self,
        analysis: str,
        file: str,
        argv: list[str],
        parameters: dict[str, Any],
        *,
        dataset_id: str | None = None,
        path: str | None = None,
        origin: str = "api",
    ) -> Job:
        """Queue a job; returns it."""
        now = time.time()
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO jobs (analysis, dataset_id, file, path, argv, parameters, origin, status, submitted) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (analysis, dataset_id, file, path, json.dumps(argv), json.dumps(parameters), origin, QUEUED, now),
            )
            job_id = int(cur.lastrowid or 0)
        return self.get(job_id)

    def get(self, job_id: int) -> Job:
        with self._lock:
            row = self._db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise NoSuchJob(f"no job {job_id}")
        return _job(row)

    def query(self, status: str | None = None, dataset_id: str | None = None, limit: int = 500) -> list[Job]:
        """Jobs, newest first."""
        sql, args = f"SELECT {_COLUMNS} FROM jobs WHERE 1=1", cast(list[Any], [])
        if status:
            sql, args = sql + " AND status = ?", [*args, status]
        if dataset_id:
            sql, args = sql + " AND dataset_id = ?", [*args, dataset_id]
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY id DESC LIMIT ?", (*args, limit)).fetchall()
        return [_job(r) for r in rows]

    def exists(self, dataset_id: str, origin: str) -> bool:
        """Whether a job of this origin was ever made for this dataset (pipelines run once)."""
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM jobs WHERE dataset_id = ? AND origin = ? LIMIT 1", (dataset_id, origin)
            ).fetchone()
        return row is not None

    def active(self, origin: str) -> int:
        """How many jobs of this origin are queued or running."""
        with self._lock:
            row = self._db.execute(
                "SELECT COUNT(*) FROM jobs WHERE origin = ? AND status IN (?, ?)", (origin, QUEUED, RUNNING)
            ).fetchone()
        return int(row[0])

    def claim(self) -> Job | None:
        """Mark the oldest queued job whose file no running job is using as running; return it."""
        with self._tx() as db:
            row = db.execute(
                f"SELECT {_COLUMNS} FROM jobs WHERE status = ? AND file NOT IN "
                "(SELECT file FROM jobs WHERE status = ?) ORDER BY id LIMIT 1",
                (QUEUED, RUNNING),
            ).fetchone()
            if row is None:
                return None
            db.execute(
                "UPDATE jobs SET status = ?, started = ?, attempts = attempts + 1, progress = 0 WHERE id = ?",
                (RUNNING, time.time(), row[0]),
            )
        return self.get(row[0])

    def update(self, job_id: int, **fields: Any) -> Job:
        """Set fields of a job (``status``, ``progress``, ``message``, ``result``, ``finished``)."""
        allowed = {"status", "progress", "message", "result", "finished"}
        if not fields or set(fields) - allowed:
            raise InvalidInput(f"cannot set {sorted(set(fields) - allowed)} of a job")
        sets = ", ".join(f"{k} = ?" for k in fields)
        with self._tx() as db:
            db.execute(f"UPDATE jobs SET {sets} WHERE id = ?", (*fields.values(), job_id))
        return self.get(job_id)

    def requeue_interrupted(self) -> list[int]:
        """Queue again the jobs a previous run of the service left running (it died meanwhile)."""
        with self._tx() as db:
            ids = [r[0] for r in db.execute("SELECT id FROM jobs WHERE status = ?", (RUNNING,))]
            db.execute(
                "UPDATE jobs SET status = ?, message = 'interrupted: the service stopped; resumed' WHERE status = ?",
                (QUEUED, RUNNING),
            )
        return ids


def _job(row: tuple) -> Job:
    values = list(row)
    values[5] = json.loads(values[5])
    values[6] = json.loads(values[6])
    return Job(*values)


# ------------------------------------------------------------------------------ running jobs
#: tqdm settings for a job's child: plain ASCII bars, updated at least every half second, shown
#: from the start (tqdm reads ``TQDM_*`` variables as its defaults).
TQDM_ENV = {"TQDM_DELAY": "0", "TQDM_MININTERVAL": "0.5", "TQDM_ASCII": "1", "TQDM_NCOLS": "100"}
_PERCENT = re.compile(r"(\d{1,3})%\|")
_RESULT = re.compile(r"^results\s+(\S+)")
_ERROR = "usidgpu: error: "


def _die_with_parent() -> None:
    """In the child, before exec: get SIGKILL when the service dies (Linux; elsewhere nothing)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class Runner:
    """Runs queued jobs, ``max_running`` at a time, each in a child process.

    Parameters
    ----------
    jobs : JobStore
    command : callable
        ``command(job) -> list[str]``: the full command line of a job's child.
    on_change : callable
        ``on_change(job)`` after each change of a job (progress, status): events, catalog updates.
    max_running : int
        Jobs at once (one per GPU is the sensible default; different files only).
    """

    def __init__(
        self,
        jobs: JobStore,
        command: Callable[[Job], list[str]],
        on_change: Callable[[Job], None],
        max_running: int = 1,
    ) -> None:
        self.jobs, self.command, self.on_change = jobs, command, on_change
        self.max_running = max(1, int(max_running))
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._children: dict[int, subprocess.Popen] = {}
        self._cancelled: set[int] = set()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for i in range(self.max_running):
            t = threading.Thread(target=self._loop, name=f"usidgpu-job-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def wake(self) -> None:
        """A job was queued: look now rather than at the next poll."""
        self._wake.set()

    def stop(self) -> None:
        """Stop taking jobs and end running children (their jobs are queued again at the next start)."""
        self._stop.set()
        self._wake.set()
        with self._lock:
            children = list(self._children.values())
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                child.terminate()
        for t in self._threads:
            t.join(timeout=10)

    def cancel(self, job_id: int) -> Job:
        """Cancel a queued or running job (a finished one stays as it is)."""
        job = self.jobs.get(job_id)
        if job.status in FINISHED:
            return job
        with self._lock:
            self._cancelled.add(job_id)
            child = self._children.get(job_id)
        if child is not None:
            with contextlib.suppress(ProcessLookupError):
                child.terminate()
            return self.jobs.get(job_id)  # the runner thread records the end
        job = self.jobs.update(job_id, status=CANCELLED, message="cancelled before it started", finished=time.time())
        self.on_change(job)
        return job

    def _loop(self) -> None:
        while not self._stop.is_set():
            job = self.jobs.claim()
            if job is None:
                self._wake.wait(0.5)
                self._wake.clear()
                continue
            if job.id in self._cancelled:
                job = self.jobs.update(job.id, status=CANCELLED, message="cancelled", finished=time.time())
                self.on_change(job)
                continue
            self.on_change(job)
            self._run(job)

    def _run(self, job: Job) -> None:
        env = dict(os.environ, **TQDM_ENV, PYTHONUNBUFFERED="1")
        try:
            child = subprocess.Popen(
                self.command(job),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,  # noqa: PLW1509
            )
        except OSError as exc:
            self._finish(job, FAILED, f"could not start: {exc}")
            return
        with self._lock:
            self._children[job.id] = child
        out_lines: list[str] = []
        err_lines: list[str] = []
        reader = threading.Thread(target=_collect, args=(child.stdout, out_lines, None), daemon=True)
        reader.start()
        _collect(child.stderr, err_lines, lambda pct: self._progress(job, pct))
        child.wait()
        reader.join(timeout=10)
        with self._lock:
            self._children.pop(job.id, None)
            cancelled = job.id in self._cancelled
        if self._stop.is_set() and not cancelled:
            return  # the service is stopping: the job stays "running" and is queued again at the next start
        if cancelled:
            self._finish(job, CANCELLED, "cancelled while running")
        elif child.returncode == 0:
            result = next((m.group(1) for ln in out_lines if (m := _RESULT.match(ln))), None)
            if result == "kept":  # "results  kept in SIDECAR (attach pending)": the file stayed busy
                message = "done; the file stayed busy, so the results wait beside it (attached by the next analysis)"
                self._finish(job, DONE, message, result=None, progress=1.0)
            else:
                self._finish(job, DONE, "done", result=result, progress=1.0)
        else:
            self._finish(job, FAILED, _failure(child.returncode, err_lines))

    def _progress(self, job: Job, percent: int) -> None:
        self.on_change(self.jobs.update(job.id, progress=min(percent, 100) / 100))

    def _finish(self, job: Job, status: str, message: str, **fields: Any) -> None:
        self.on_change(self.jobs.update(job.id, status=status, message=message, finished=time.time(), **fields))


def _collect(stream: Any, lines: list[str], on_percent: Callable[[int], None] | None) -> None:
    """Read a child's output: lines (tqdm's ``\\r`` updates split too), progress percentages."""
    buf = b""
    last = -1
    for chunk in iter(lambda: stream.read1(4096), b""):
        buf += chunk
        parts = re.split(rb"[\r\n]", buf)
        buf = parts.pop()
        for raw in parts:
            line = raw.decode(errors="replace").rstrip()
            if not line:
                continue
            m = _PERCENT.search(line) if on_percent else None
            if m and on_percent:
                pct = int(m.group(1))
                if pct != last:
                    last = pct
                    on_percent(pct)
                continue
            lines.append(line)
    if buf.strip():
        lines.append(buf.decode(errors="replace").rstrip())


def _failure(returncode: int, err_lines: list[str]) -> str:
    """One line that says why a job's command failed."""
    for line in reversed(err_lines):
        if line.startswith(_ERROR):
            return line[len(_ERROR) :]
    if returncode < 0:
        return f"stopped by signal {signal.Signals(-returncode).name}"
    return f"the command failed (exit {returncode})" + (f": {err_lines[-1][:300]}" if err_lines else "")


__all__ = ["CANCELLED", "DONE", "FAILED", "FINISHED", "QUEUED", "RUNNING", "Job", "JobStore", "NoSuchJob", "Runner"]


def translated_path(state_dir: Path, source: Path) -> Path:
    """Where the USID translation of a vendor file goes: ``STATE/translated/<name>-<hash>.h5``
    (the hash of the source's path keeps two files of one name apart)."""
    import hashlib

    tag = hashlib.sha256(str(source.resolve()).encode()).hexdigest()[:8]
    return state_dir / "translated" / f"{source.stem}-{tag}.h5"
