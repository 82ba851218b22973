"""SIGKILL at every moment of every analysis' results path, then rerun: nothing lost, nothing
duplicated, nothing modified (issue 16).

Each case runs the real command line in a child process that kills itself at a named crash
point (:mod:`usidgpu.core.faults`), reruns the same command, and checks: the rerun succeeds, the
file holds exactly one results group of the tool, with the same datasets as an uninterrupted run,
no sidecar or store is left, the source's data are unchanged and the file is valid.

Child runs cost about a second each, so the kill points are spread across the tools rather than
run as the full product; every point is hit in-process and block-wise where both paths reach it:

==============  ===============================================================================
command         kill points (test_kill_then_rerun unless said)
==============  ===============================================================================
svd             results.attach_copied, results.attached; results.attach_copied under another
                ``--memory`` (test_rerun_with_other_free_memory_is_the_same_run);
                results.sidecar_done, then the sidecar damaged (test_damaged_sidecar_...)
cluster         results.before_sidecar, results.attach_referenced
denoise         results.sidecar_write:2, results.attach_renamed; results.sidecar_done under
                another ``--memory`` (test_rerun_with_other_free_memory_is_the_same_run)
atoms           results.sidecar_done
svd-blocks      process.block:2, then a rerun without ``--memory`` (test_block_wise_rerun_...)
cluster-blocks  (run at once with an in-process svd: test_concurrency.py)
denoise-blocks  process.block:1
bayes           process.block:2, results.sidecar_write:3 (mid-consolidation), results.attached
==============  ===============================================================================

``bayes`` runs as a block-wise Process in this process; ``*-blocks`` with ``--scheduler threads``.
``results.before_sidecar`` is the moment an in-process analysis has computed everything and
written nothing (a kill during its computation leaves the same: nothing).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import h5py
import pytest
from fault_tools import data_digests, group_digests, leftovers, make_sources, results_groups, usidgpu

import usidgpu as ug

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

TOOLS = {
    "svd": "SVD",
    "cluster": "KMeans",
    "denoise": "Windowed_SVD",
    "atoms": "Atomic_Columns",
    "bayes": "Bayesian_Inference",
}
BLOCKS = ["--scheduler", "threads", "--workers", "2", "--memory", "4KB"]


def _command(name: str) -> tuple[str, list[str]]:
    """(which template file, arguments after the file) of each command of the matrix."""
    base = name.removesuffix("-blocks")
    args = {
        "svd": ("spectra", ["svd", "-k", "3", "--no-progress"]),
        "cluster": ("spectra", ["cluster", "-k", "3", "--no-progress"]),
        "denoise": ("image", ["denoise", "--window", "8", "-k", "3", "--device", "cpu"]),
        "atoms": ("image", ["atoms", "--device", "cpu"]),
        "bayes": ("giv", ["bayes", "--samples", "50", "--grid-points", "20", "--memory", "64KB"]),
    }[base]
    template, rest = args
    if name.endswith("-blocks"):
        rest = [*rest, *BLOCKS]
        if base == "denoise":
            rest = [a for a in rest if a != "--device" and a != "cpu"][:-2] + ["--memory", "400KB"]
    return template, rest


CASES = [
    ("svd", "results.attach_copied"),
    ("svd", "results.attached"),
    ("cluster", "results.before_sidecar"),
    ("cluster", "results.attach_referenced"),
    ("denoise", "results.sidecar_write:2"),
    ("denoise", "results.attach_renamed"),
    ("atoms", "results.sidecar_done"),
    ("denoise-blocks", "process.block:1"),
    ("bayes", "process.block:2"),
    ("bayes", "results.sidecar_write:3"),
    ("bayes", "results.attached"),
]


@pytest.fixture(scope="module")
def templates(tmp_path_factory) -> dict[str, Path]:
    """Small source files, made once (see :func:`fault_tools.make_sources`)."""
    return make_sources(tmp_path_factory.mktemp("templates"))


_baselines: dict[str, dict[str, str]] = {}


def fresh(templates: dict[str, Path], template: str, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{template}.h5"
    shutil.copy(templates[template], path)
    return path


def baseline(name: str, templates: dict[str, Path], folder: Path) -> dict[str, str]:
    """Dataset digests of the results group of an uninterrupted run (computed once per command)."""
    if name not in _baselines:
        template, args = _command(name)
        path = fresh(templates, template, folder / f"baseline-{name}")
        ran = usidgpu(args[0], path, *args[1:])
        assert ran.returncode == 0, ran.stderr
        (group,) = results_groups(path, TOOLS[name.removesuffix("-blocks")])
        _baselines[name] = group_digests(path, group)
    return _baselines[name]


def check_after(path: Path, tool: str, before: dict[str, str], expected: dict[str, str]) -> None:
    """One complete group equal to the uninterrupted run's, nothing left over, source unchanged, valid."""
    groups = results_groups(path, tool)
    assert len(groups) == 1, groups
    assert groups[0].endswith(f"-{tool}_000"), groups  # interrupted runs do not use up names
    with h5py.File(path, "r") as f:
        assert f[groups[0]].attrs["usidgpu_status"] == "complete"
    assert group_digests(path, groups[0]) == expected
    after = data_digests(path)
    assert {k: after.get(k) for k in before} == before  # the source's data (and all else) unchanged
    assert leftovers(path.parent, keep=[path]) == []  # no sidecar, store, lock or temporary
    assert ug.validate(path) == []


@pytest.mark.parametrize("name, point", CASES, ids=[f"{n}@{p}" for n, p in CASES])
def test_kill_then_rerun(name, point, templates, tmp_path):
    template, args = _command(name)
    expected = baseline(name, templates, tmp_path.parent / "baselines")
    path = fresh(templates, template, tmp_path / "case")
    before = data_digests(path)
    killed = usidgpu(args[0], path, *args[1:], kill_at=point)
    assert killed.killed, f"{point} was not reached: {killed.returncode} {killed.stderr}"
    rerun = usidgpu(args[0], path, *args[1:])
    assert rerun.returncode == 0, rerun.stderr
    assert "Traceback" not in rerun.stderr
    check_after(path, TOOLS[name.removesuffix("-blocks")], before, expected)


@pytest.mark.parametrize(
    "name, point, memory",
    [("denoise", "results.sidecar_done", "64MB"), ("svd", "results.attach_copied", "8MB")],
)
def test_rerun_with_other_free_memory_is_the_same_run(name, point, memory, templates, tmp_path):
    """Item 3: the tile edge (denoise) and the reason of the method (svd) follow the memory budget;
    a rerun under another budget still finds the interrupted run (one group ``_000``)."""
    template, args = _command(name)
    path = fresh(templates, template, tmp_path / "case")
    before = data_digests(path)
    assert usidgpu(args[0], path, *args[1:], "--memory", memory, kill_at=point).killed
    sidecars = list((path.parent / f"{path.name}.usidgpu").glob("*.h5"))
    assert len(sidecars) == 1
    rerun = usidgpu(args[0], path, *args[1:])
    assert rerun.returncode == 0, rerun.stderr
    check_after(path, TOOLS[name], before, baseline(name, templates, tmp_path.parent / "baselines"))
    with h5py.File(path, "r") as f:  # the conditions are recorded, outside the identity
        (group,) = results_groups(path, TOOLS[name])
        conditions = list(f[group].attrs["usidgpu_conditions"])
        assert ("tile_edge" in conditions) if name == "denoise" else ("method_reason" in conditions)
        assert not any(c in f[group].attrs["usidgpu_parameters"] for c in conditions)


def test_block_wise_rerun_without_memory_resumes_the_interrupted_blocks(templates, tmp_path):
    """The default block plan follows the free memory: a rerun without --memory must resume the
    interrupted run's blocks, not start a new plan (it is killed if it computes more blocks than
    were missing)."""
    from usidgpu.storage.sidecar import read_meta

    template, args = _command("svd-blocks")
    path = fresh(templates, template, tmp_path / "case")
    before = data_digests(path)
    assert usidgpu(args[0], path, *args[1:], kill_at="process.block:2").killed
    (store,) = (path.parent / f"{path.name}.usidgpu").glob("*.zarr")
    n_blocks = len(read_meta(store)["blocks"])
    assert n_blocks > 3
    no_memory = [a for a in args[1:] if a not in ("--memory", "4KB")]
    rerun = usidgpu(args[0], path, *no_memory, kill_at=f"process.block:{n_blocks - 1}")
    assert rerun.returncode == 0, rerun.stderr  # only the n - 2 missing blocks ran
    check_after(path, "SVD", before, baseline("svd-blocks", templates, tmp_path.parent / "baselines"))


def test_damaged_sidecar_never_breaks_info_and_the_next_run_removes_it(templates, tmp_path):
    template, args = _command("svd")
    path = fresh(templates, template, tmp_path / "case")
    before = data_digests(path)
    assert usidgpu(args[0], path, *args[1:], kill_at="results.sidecar_done").killed
    (sidecar,) = (path.parent / f"{path.name}.usidgpu").glob("*.h5")
    sidecar.write_bytes(sidecar.read_bytes()[:1500])  # cut short, as a full disk or a power cut leaves it
    info = usidgpu("info", path)
    assert info.returncode == 0, info.stderr
    assert re.search(r"unfinished .*damaged", info.stdout), info.stdout
    rerun = usidgpu(args[0], path, *args[1:])
    assert rerun.returncode == 0, rerun.stderr
    check_after(path, "SVD", before, baseline("svd", templates, tmp_path.parent / "baselines"))


def test_every_crash_point_is_exercised_by_a_test():
    """Each crash point registered anywhere in usidgpu is named by some test (a kill there)."""
    package = Path(__file__).resolve().parents[1] / "usidgpu"
    registered = set()
    for source in package.rglob("*.py"):
        registered |= set(re.findall(r"""register\(\s*["']([\w.]+)["']""", source.read_text()))
    assert {"results.before_sidecar", "process.block", "results.attached"} <= registered
    tests = "".join(
        p.read_text() for p in Path(__file__).parent.glob("test_*.py") if p.name != "test_faults.py"
    ).replace(Path(__file__).read_text().split("def test_every_crash_point")[1], "")
    unexercised = sorted(name for name in registered if not re.search(rf"""["']{re.escape(name)}(:\d+)?["']""", tests))
    assert unexercised == []
