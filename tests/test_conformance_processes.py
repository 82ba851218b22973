"""Process/executor conformance suite: every block-wise Process shipped in usidgpu, on every
executor, passes one suite (as scikit-learn's ``check_estimator`` does for estimators).

For each concrete :class:`usidgpu.parallel.Process` subclass of the package — found by walking
``Process.__subclasses__()`` after importing the packages that ship them, so the suite does not
depend on where a class lives — and each executor (``inline``, ``threads``, a 2-worker dask
``LocalCluster`` shared by the module, ``cuda`` where dask-cuda and a GPU are there):

* the results equal those of the in-process run (``scheduler=None``), dataset for dataset;
* the run writes exactly one results group and leaves no store or lock behind;
* an interrupted run (stopped after some blocks, as Ctrl-C stops it) is finished by the same call
  — computing only the missing blocks — or by ``usidgpu resume FILE``, with the uninterrupted
  result and one results group;
* the source dataset (data, ancillary datasets, attributes) is unchanged.

``INPUTS`` maps every Process class (by name) to a small valid input; a Process shipped without an
entry fails ``test_every_shipped_process_has_an_input``, so the suite stays complete.
"""

from __future__ import annotations

import hashlib
import importlib
import pkgutil
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from helpers import low_rank

import usidgpu
from usidgpu import Dimension
from usidgpu.cli import main as cli
from usidgpu.parallel import Executor, Process, get_executor, partial_runs

SOURCE = "/Measurement_000/Channel_000/Raw_Data"
PACKAGES = ("usidgpu.parallel", "usidgpu.decompose", "usidgpu.denoise", "usidgpu.bayes")
N_BLOCKS = 6  # every input is planned in this many blocks
INTERRUPT_AFTER = 2  # blocks done when a run is stopped


def _import_all(package: str) -> None:
    """``package`` and every module in it (a Process may live in a submodule the package imports
    only lazily); modules whose optional dependencies are missing are passed over."""
    pkg = importlib.import_module(package)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # modules kept under old names warn when imported
        for info in pkgutil.walk_packages(pkg.__path__, f"{package}."):
            if info.name.rsplit(".", 1)[-1] == "__main__":
                continue
            try:
                importlib.import_module(info.name)
            except ImportError:
                pass


def shipped_processes() -> list[type]:
    """The concrete Process subclasses defined in usidgpu (not those of tests or user scripts)."""
    for name in PACKAGES:
        _import_all(name)
    found: dict[str, type] = {}
    stack = list(Process.__subclasses__())
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        if cls.__module__.split(".")[0] == "usidgpu" and not cls.__name__.startswith("_"):
            found[f"{cls.__module__}:{cls.__qualname__}"] = cls
    return [found[k] for k in sorted(found)]


PROCESSES = shipped_processes()


# ------------------------------------------------------------------------------ inputs
def _write(path: Path, data: np.ndarray, pos: list, spec: list, units: str = "a. u.", **group_attrs: Any) -> None:
    with h5py.File(path, "w") as f:
        g = f.create_group("Measurement_000/Channel_000")
        for k, v in group_attrs.items():
            g.attrs[k] = v
        usidgpu.write_main(g, "Raw_Data", data, "Signal", units, pos, spec)


def _spectra(path: Path) -> None:
    """Noisy quadratics, 6 × 5 positions × 16 bias points."""
    rng = np.random.default_rng(0)
    bias = np.linspace(-1, 1, 16)
    coef = rng.standard_normal((30, 3))
    y = np.stack([np.polyval(c, bias) for c in coef]) + 0.05 * rng.standard_normal((30, 16))
    _write(path, y.astype(np.float32).reshape(6, 5, 16), [Dimension("Y", "nm", 6), Dimension("X", "nm", 5)],
           [Dimension("Bias", "V", bias)])  # fmt: skip


def _low_rank(path: Path) -> None:
    """Rank 4 plus noise and an offset, 6 × 10 positions × 12 points."""
    x = (low_rank(60, 12, rank=4, seed=3) + 5.0).astype(np.float32)
    _write(path, x.reshape(6, 10, 12), [Dimension("Y", "nm", 6), Dimension("X", "nm", 10)],
           [Dimension("Frequency", "kHz", 12)])  # fmt: skip


def _clusters(path: Path) -> None:
    """Three clusters of spectra, 6 × 10 positions × 8 points."""
    rng = np.random.default_rng(1)
    centres = 3 * rng.standard_normal((3, 8))
    y = centres[rng.integers(0, 3, 60)] + 0.3 * rng.standard_normal((60, 8)) + 50
    _write(path, y.astype(np.float32).reshape(6, 10, 8), [Dimension("Y", "nm", 6), Dimension("X", "nm", 10)],
           [Dimension("Energy", "eV", 8)])  # fmt: skip


def _image(path: Path) -> None:
    """Two 12 × 10 frames of a smooth pattern plus noise."""
    rng = np.random.default_rng(2)
    yy, xx = np.mgrid[0:12, 0:10]
    frames = np.stack([np.sin(yy / 2.0 + k) * np.cos(xx / 3.0) for k in range(2)], axis=-1)
    frames = frames + 0.1 * rng.standard_normal(frames.shape)
    _write(path, frames.astype(np.float32), [Dimension("Y", "nm", 12), Dimension("X", "nm", 10)],
           [Dimension("Frame", "", 2)])  # fmt: skip


def _giv(path: Path) -> None:
    """G-mode I–V: 3 × 4 pixels, one 64-point bias period, the frequency on the channel group."""
    from usidgpu.bayes import simulate_giv

    sim = simulate_giv(12, 64, noise=0.03, seed=6)
    _write(path, sim["current"].astype(np.float32).reshape(3, 4, 64),
           [Dimension("Y", "um", 3), Dimension("X", "um", 4)], [Dimension("Bias", "V", sim["bias"])], units="nA",
           **{"excitation_frequency_[Hz]": sim["frequency"]})  # fmt: skip


@dataclass(frozen=True)
class Input:
    """How to build a small valid input of a Process: ``make(path)`` writes the file; the Process
    is ``cls(source, **kwargs, rows_per_block=rows_per_block)``, planned in N_BLOCKS blocks."""

    make: Callable[[Path], None]
    kwargs: dict[str, Any] = field(default_factory=dict)
    rows_per_block: int = 5


#: Every shipped Process, by class name (the module may change), and its input.
INPUTS: dict[str, Input] = {
    "PolynomialFit": Input(_spectra, {"degree": 2}, rows_per_block=5),
    "GramSVD": Input(_low_rank, {"k": 3}, rows_per_block=10),
    "BlockKMeans": Input(_clusters, {"k": 3, "random_state": 0}, rows_per_block=10),
    "WindowedSVD": Input(_image, {"window": 3, "k": 2}, rows_per_block=20),  # bands of 2 image rows
    "GIVBayesian": Input(_giv, {"num_samples": 100, "num_x_steps": 20}, rows_per_block=2),
}


# ------------------------------------------------------------------------------ executors
class Interrupting(Executor):
    """``inner``, stopped as Ctrl-C stops a run once ``after`` blocks are done: only those blocks
    are handed to ``inner``, so nothing is still running when the interruption comes (a block that
    is still running after the interruption would race with the resumed run for its store)."""

    name = "interrupting"

    def __init__(self, inner: Executor, after: int) -> None:
        self.inner, self.after = inner, after
        self.n_workers = inner.n_workers
        self.submitted: list[int] = []

    def map_unordered(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> Iterator[tuple[int, Any]]:
        items = list(items)
        self.submitted.append(len(items))
        yield from self.inner.map_unordered(fn, items[: self.after])
        raise KeyboardInterrupt

    def tree_reduce(self, fn: Callable[[Any], Any], combine: Callable[[Any, Any], Any], items: Sequence[Any]) -> Any:
        return self.inner.tree_reduce(fn, combine, items)


class Recording(Executor):
    """``inner``, recording how many blocks each map is given."""

    name = "recording"

    def __init__(self, inner: Executor) -> None:
        self.inner = inner
        self.n_workers = inner.n_workers
        self.submitted: list[int] = []

    def map_unordered(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> Iterator[tuple[int, Any]]:
        items = list(items)
        self.submitted.append(len(items))
        yield from self.inner.map_unordered(fn, items)

    def tree_reduce(self, fn: Callable[[Any], Any], combine: Callable[[Any, Any], Any], items: Sequence[Any]) -> Any:
        return self.inner.tree_reduce(fn, combine, items)


@pytest.fixture(scope="module")
def dask_client():
    """One 2-worker LocalCluster (one thread each) for the whole module: starting one costs seconds."""
    distributed = pytest.importorskip("distributed", reason="the 'local' executor needs dask.distributed")
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0", silence_logs=50
    )
    client = distributed.Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


@pytest.fixture(scope="module")
def cuda_client():
    """One dask-cuda cluster for the module, where dask-cuda and a usable GPU are there."""
    pytest.importorskip("dask_cuda", reason="the 'cuda' executor needs dask-cuda")
    if not usidgpu.gpu_available():
        pytest.skip("the 'cuda' executor needs a usable CUDA GPU")
    executor = get_executor("cuda")
    try:
        yield executor.client
    finally:
        executor.close()


@dataclass
class ExecutorUnderTest:
    """One executor: what a Process call and ``usidgpu resume`` are given to run on it."""

    name: str
    scheduler: Any  # the ``scheduler=`` of a Process
    workers: int | None
    cli: list[str]  # the scheduler options of ``usidgpu resume``
    device: str = "cpu"

    def executor(self) -> Executor:
        """A fresh executor instance (the caller closes it)."""
        return get_executor(self.scheduler, self.workers)


EXECUTORS = ["inline", "threads", "local", "cuda"]


@pytest.fixture(params=EXECUTORS)
def executor(request) -> ExecutorUnderTest:
    if request.param == "inline":
        return ExecutorUnderTest("inline", "inline", None, [])
    if request.param == "threads":
        return ExecutorUnderTest("threads", "threads", 2, ["--scheduler", "threads", "--workers", "2"])
    if request.param == "local":
        client = request.getfixturevalue("dask_client")
        return ExecutorUnderTest("local", client, None, ["--scheduler", client.scheduler.address])
    client = request.getfixturevalue("cuda_client")
    return ExecutorUnderTest("cuda", client, None, ["--scheduler", client.scheduler.address], device="gpu")


# ------------------------------------------------------------------------------ helpers
def _input_file(cls: type, folder: Path) -> Path:
    path = folder / f"{cls.__name__}.h5"
    INPUTS[cls.__name__].make(path)
    return path


def _process(cls: type, path_file: Any, scheduler: Any, workers: int | None = None, device: str = "cpu") -> Process:
    spec = INPUTS[cls.__name__]
    return cls(
        path_file[SOURCE],
        **spec.kwargs,
        scheduler=scheduler,
        workers=workers,
        device=device,
        rows_per_block=spec.rows_per_block,
        progress=False,
    )


def _run(cls: type, path: Path, scheduler: Any, workers: int | None = None, device: str = "cpu") -> str:
    with usidgpu.open(path) as f:
        proc = _process(cls, f, scheduler, workers, device)
        assert len(proc.blocks()) == N_BLOCKS, f"{cls.__name__}: the input must be planned in {N_BLOCKS} blocks"
        return proc.run()


def _groups(path: Path) -> list[str]:
    """The results groups of the source (any tool: a Process writes one, whatever its tool)."""
    with usidgpu.open(path) as f:
        return sorted(g.path for g in f.results_groups(SOURCE))


def _results(path: Path, group: str) -> dict[str, np.ndarray]:
    """Every dataset of a results group, by relative path."""
    out: dict[str, np.ndarray] = {}
    with h5py.File(path, "r") as h:

        def visit(name: str, obj: Any) -> None:
            if isinstance(obj, h5py.Dataset):
                out[name] = obj[()]

        h[group].visititems(visit)
    return out


def _assert_same_results(got: dict[str, np.ndarray], want: dict[str, np.ndarray], where: str) -> None:
    assert sorted(got) == sorted(want), where
    for name in want:
        a, b = got[name], want[name]
        assert a.dtype == b.dtype and a.shape == b.shape, f"{where} {name}"
        if a.dtype.kind in "fc":
            np.testing.assert_array_equal(a, b, err_msg=f"{where} {name}")
        else:
            assert a.tobytes() == b.tobytes(), f"{where} {name}"


def _source_digest(path: Path) -> str:
    """The source Main dataset, its ancillary datasets and all their attributes."""
    h = hashlib.sha256()
    with usidgpu.open(path) as f:
        m = f[SOURCE]
        for obj in (m.h5, m.h5_pos_inds, m.h5_pos_vals, m.h5_spec_inds, m.h5_spec_vals):
            h.update(obj.name.encode())
            h.update(np.ascontiguousarray(obj[()]).tobytes())
            for key in sorted(obj.attrs):
                value = obj.attrs[key]
                text = type(value).__name__ if isinstance(value, h5py.Reference) else repr(value)
                h.update(key.encode() + text.encode())
    return h.hexdigest()


def _no_leftovers(path: Path) -> None:
    assert partial_runs(path) == []
    sidecars = [p for p in path.parent.iterdir() if p.name.startswith(path.name) and p != path]
    leftovers = [q for p in sidecars if p.is_dir() for q in p.iterdir()] + [p for p in sidecars if p.is_file()]
    assert not leftovers, leftovers


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Callable[[type, str], dict[str, np.ndarray]]:
    """The in-process (``scheduler=None``) results of each Process, per device, computed once."""
    cache: dict[tuple[str, str], dict[str, np.ndarray]] = {}
    folder = tmp_path_factory.mktemp("reference")

    def get(cls: type, device: str = "cpu") -> dict[str, np.ndarray]:
        key = (f"{cls.__module__}:{cls.__qualname__}", device)
        if key not in cache:
            sub = folder / f"{cls.__name__}-{device}"
            sub.mkdir()
            path = _input_file(cls, sub)
            group = _run(cls, path, None, device=device)
            cache[key] = _results(path, group)
        return cache[key]

    return get


IDS = [cls.__name__ for cls in PROCESSES]


# ------------------------------------------------------------------------------ completeness
def test_every_shipped_process_has_an_input():
    names = {cls.__name__ for cls in PROCESSES}
    assert len(names) == len(PROCESSES), f"two shipped Process classes share a name: {PROCESSES}"
    missing = names - set(INPUTS)
    assert not missing, f"Process subclasses shipped without an entry in INPUTS: {sorted(missing)}"
    stale = set(INPUTS) - names
    assert not stale, f"INPUTS entries for no shipped Process (renamed or removed?): {sorted(stale)}"
    # the block-wise SVD, k-means and windowed SVD are among them, wherever they live
    assert {"PolynomialFit", "GramSVD", "BlockKMeans", "WindowedSVD", "GIVBayesian"} <= names


# ------------------------------------------------------------------------------ the suite
@pytest.mark.parametrize("cls", PROCESSES, ids=IDS)
def test_results_equal_the_in_process_run(cls, executor, reference, tmp_path):
    path = _input_file(cls, tmp_path)
    before = _source_digest(path)
    group = _run(cls, path, executor.scheduler, executor.workers, executor.device)
    assert _groups(path) == [group]  # exactly one results group
    _assert_same_results(_results(path, group), reference(cls, executor.device), f"{cls.__name__} on {executor.name}")
    _no_leftovers(path)
    assert _source_digest(path) == before
    # the same call again is the same computation: it returns the group, writes no second one
    assert _run(cls, path, executor.scheduler, executor.workers, executor.device) == group
    assert _groups(path) == [group]


def _interrupt(cls: type, path: Path, executor: ExecutorUnderTest) -> None:
    """A run stopped (KeyboardInterrupt) once INTERRUPT_AFTER of its blocks are done."""
    inner = executor.executor()
    stopper = Interrupting(inner, INTERRUPT_AFTER)
    try:
        with pytest.raises(KeyboardInterrupt):
            _run(cls, path, stopper, device=executor.device)
    finally:
        inner.close()
    assert stopper.submitted == [N_BLOCKS]
    (run,) = partial_runs(path)
    assert (run["done"], run["total"]) == (INTERRUPT_AFTER, N_BLOCKS)
    assert _groups(path) == []  # nothing attached yet


@pytest.mark.parametrize("cls", PROCESSES, ids=IDS)
def test_interrupted_run_is_finished_by_the_same_call(cls, executor, reference, tmp_path):
    path = _input_file(cls, tmp_path)
    before = _source_digest(path)
    _interrupt(cls, path, executor)
    inner = executor.executor()
    recorder = Recording(inner)
    try:
        group = _run(cls, path, recorder, device=executor.device)
    finally:
        inner.close()
    assert recorder.submitted == [N_BLOCKS - INTERRUPT_AFTER]  # only the missing blocks
    assert _groups(path) == [group]
    _assert_same_results(_results(path, group), reference(cls, executor.device), f"{cls.__name__} resumed")
    _no_leftovers(path)
    assert _source_digest(path) == before


@pytest.mark.parametrize("cls", PROCESSES, ids=IDS)
def test_interrupted_run_is_finished_by_usidgpu_resume(cls, executor, reference, tmp_path, capsys):
    path = _input_file(cls, tmp_path)
    before = _source_digest(path)
    _interrupt(cls, path, executor)
    capsys.readouterr()
    assert cli(["resume", str(path), *executor.cli]) == 0
    out = capsys.readouterr().out
    (group,) = _groups(path)
    assert f"results       {group}" in out, out
    _assert_same_results(_results(path, group), reference(cls, executor.device), f"{cls.__name__} resumed")
    _no_leftovers(path)
    assert _source_digest(path) == before
    assert cli(["resume", str(path)]) == 0
    assert "no interrupted runs" in capsys.readouterr().out
