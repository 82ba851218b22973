#!/usr/bin/env python
"""Scale out: a compute-bound :class:`usidgpu.parallel.Process` on 1 and 2 workers, and the
framework's overhead against a bare loop over the same blocks.

The job (``SmoothPeaks``): every spectrum of a block is smoothed ``--passes`` times by a dense
n × n Gaussian operator (float32 GEMMs, 2·n²·passes flops per position — compute-bound: a
256 MiB file costs ~1.4 s of single-core GEMM per pass), then its peak index, peak height and
area are kept (3 float32 per position, so writing results costs next to nothing). The data:
``--rows`` × ``--n-spec`` float32 (default 65536 × 1024 = 256 MiB), written with
``usidgpu.write_main`` into ``bench_tmp/`` (same disk as the repository, gitignored; deleted
afterwards).

Cases, on the same block plan (``--rows-per-block``), repetitions interleaved (order rotated
each repetition), one untimed warm-up per case, medians:

``bare_loop``
    h5py opens the file, reads each block, runs the same job function, stores the outputs in a
    NumPy array and writes it to an HDF5 file — no framework.
``process_inline``
    ``SmoothPeaks(...).run()`` in this process: block store (zarr), done markers, per-block
    HDF5 opens, consolidation into a USID results group — the framework's full path.
``process_threads_1`` / ``_2``
    the thread executor with 1 and 2 threads.
``process_local_1`` / ``_2``
    a dask ``LocalCluster`` of 1 and 2 worker processes (one thread each), started once before
    the timings (start-up time reported separately) and passed as ``scheduler=client``.

After every Process run (untimed) its outputs are checked against the bare loop's (bitwise) and
its results group is deleted: a rerun of an attached computation would otherwise return the
existing group without computing.

BLAS runs **one thread everywhere**: ``OMP_NUM_THREADS`` / ``OPENBLAS_NUM_THREADS`` /
``MKL_NUM_THREADS`` = 1 are set before NumPy is imported (so this process and the dask workers,
which inherit the environment and whose nanny sets the same by default, use single-threaded
BLAS), checked with threadpoolctl in this process and on every worker. The parallelism measured
is the executor's, not BLAS's.

Targets (issue 7): 2 workers vs 1 on this compute-bound job ≥ 1.6× (on 2 cores), and the
framework in-process ≤ 10 % slower than the bare loop. Ratios are given from the medians and as
the median of the per-repetition ratios (pairs measured back to back: robust to the load of a
shared machine, recorded as load averages). Results: ``benchmarks/results/scale_cpu.json``.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # before NumPy loads BLAS; inherited by the dask workers

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
from harness import Case, _json_default, _r, announce, results_header, run_interleaved  # noqa: E402
from machine import versions  # noqa: E402

from usidgpu.parallel import Output, Process  # noqa: E402
from usidgpu.usid.dimension import Dimension  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_TMP = REPO / "bench_tmp"
RESULTS = Path(__file__).resolve().parent / "results"
DSET_PATH = "/Measurement_000/Channel_000/Raw_Data"


# ------------------------------------------------------------------------------ the job
def smoothing_operator(n: int, width: float) -> np.ndarray:
    """n × n float32 Gaussian smoothing matrix (columns sum to one)."""
    i = np.arange(n, dtype=np.float32)
    k = np.exp(-0.5 * ((i[:, None] - i[None, :]) / np.float32(width)) ** 2)
    return (k / k.sum(axis=0, keepdims=True)).astype(np.float32)


def smooth_peaks(block: Any, width: float, passes: int, xp: Any = np) -> Any:
    """The per-block job: ``passes`` dense smoothings, then peak index, height and area per row."""
    op = xp.asarray(smoothing_operator(block.shape[1], width))
    y = block.astype(np.float32)
    for _ in range(passes):
        y = y @ op
    idx = y.argmax(axis=1)
    height = y[xp.arange(y.shape[0]), idx]
    return xp.stack([idx.astype(np.float32), height, y.sum(axis=1)], axis=1)


class SmoothPeaks(Process):
    """A compute-bound user Process: peak of each spectrum after repeated dense smoothing."""

    tool = "Smooth_Peaks"

    def __init__(self, source: Any, passes: int = 4, width: float = 4.0, **run_options: Any) -> None:
        super().__init__(source, **run_options)
        self.passes, self.width = int(passes), float(width)

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["scheduler"] = None  # a distributed.Client does not pickle (see tests/test_parallel.py)
        return state

    def parameters(self) -> dict[str, Any]:
        return {"passes": self.passes, "width": self.width}

    def outputs(self) -> dict[str, Output]:
        return {"Peak": Output(3, "Peak", "a. u.", np.float32, [Dimension("Peak_Property", "", 3)])}

    def compute(self, block: Any, xp: Any) -> dict[str, Any]:
        return {"Peak": smooth_peaks(block, self.width, self.passes, xp)}


# ------------------------------------------------------------------------------ cases
def bare_loop(path: Path, blocks: list[tuple[int, int]], width: float, passes: int, out_path: Path) -> np.ndarray:
    import h5py

    with h5py.File(path, "r") as f:
        ds = f[DSET_PATH]
        out = np.empty((ds.shape[0], 3), dtype=np.float32)
        for a, b in blocks:
            out[a:b] = smooth_peaks(ds[a:b], width, passes)
    with h5py.File(out_path, "w") as g:
        g.create_dataset("Peak", data=out)
    return out


def process_run(path: Path, args: argparse.Namespace, scheduler: Any = None, workers: int | None = None) -> str:
    import usidgpu

    with usidgpu.open(path) as f:
        proc = SmoothPeaks(
            f[DSET_PATH],
            args.passes,
            args.width,
            scheduler=scheduler,
            workers=workers,
            rows_per_block=args.rows_per_block,
            progress=False,
        )
        return proc.run()


def write_data(path: Path, rows: int, n: int, seed: int) -> None:
    """Peaked spectra + noise as a USID Main dataset (positions Y × X, one Bias dimension)."""
    import h5py

    import usidgpu

    rng = np.random.default_rng(seed)
    side = int(np.sqrt(rows))
    pos = (
        [Dimension("Y", "nm", side), Dimension("X", "nm", rows // side)]
        if side * (rows // side) == rows
        else [Dimension("Position", "", rows)]
    )
    x = np.linspace(-1, 1, n, dtype=np.float32)
    data = np.empty((rows, n), dtype=np.float32)
    step = 4096
    for a in range(0, rows, step):
        b = min(a + step, rows)
        centre = rng.uniform(-0.8, 0.8, (b - a, 1)).astype(np.float32)
        data[a:b] = np.exp(-0.5 * ((x[None, :] - centre) / 0.05) ** 2) + 0.2 * rng.standard_normal((b - a, n))
    with h5py.File(path, "w") as f:
        g = f.require_group("Measurement_000/Channel_000")
        usidgpu.write_main(g, "Raw_Data", data, "Current", "nA", pos, [Dimension("Bias", "V", x)])


def start_cluster(n_workers: int) -> tuple[Any, Any, float]:
    from distributed import Client, LocalCluster

    t0 = time.perf_counter()
    cluster = LocalCluster(
        n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=":0", silence_logs=40
    )
    client = Client(cluster)
    client.wait_for_workers(n_workers)
    return cluster, client, time.perf_counter() - t0


def _worker_blas(client: Any) -> dict[str, Any]:
    def info() -> Any:
        from threadpoolctl import threadpool_info

        return [(d.get("internal_api"), d.get("num_threads")) for d in threadpool_info()]

    return {addr: v for addr, v in client.run(info).items()}


# ------------------------------------------------------------------------------ main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="A compute-bound usidgpu Process on 1 vs 2 workers (threads, dask LocalCluster), and the "
        "framework's overhead against a bare h5py loop over the same blocks.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--rows", type=int, default=65536, help="positions (a square grid when possible)")
    p.add_argument("--n-spec", type=int, default=1024, help="spectroscopic points per position")
    p.add_argument("--passes", type=int, default=4, help="dense smoothing passes per block (the compute)")
    p.add_argument("--width", type=float, default=4.0, help="Gaussian width of the smoothing, in points")
    p.add_argument("--rows-per-block", type=int, default=2048, help="positions per block (all cases)")
    p.add_argument("--repeats", type=int, default=3, help="timed repetitions per case")
    p.add_argument("--cases", default="bare,inline,threads,local", help="comma-separated: bare, inline, threads, local")
    p.add_argument("--tmp-dir", type=Path, default=DEFAULT_TMP, help="where the data file goes (same disk as the repo)")
    p.add_argument("--keep-files", action="store_true", help="do not delete the data file afterwards")
    p.add_argument("--output", type=Path, default=RESULTS / "scale_cpu.json", help="JSON path")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error("--repeats must be at least 1")
    args.cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    return args


def _paired(times: dict[str, Any], num: str, den: str) -> float | None:
    """Median over repetitions of ``time[num] / time[den]`` (measured back to back)."""
    if num not in times or den not in times:
        return None
    return _r(statistics.median(a / b for a, b in zip(times[num]["seconds"], times[den]["seconds"])))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def log(msg: str) -> None:
        print(msg, flush=True)

    args.tmp_dir.mkdir(parents=True, exist_ok=True)
    data_path = args.tmp_dir / "scale.h5"
    bare_out = args.tmp_dir / "scale_bare_out.h5"
    started = time.time()
    result = results_header(
        "bench_scale (compute-bound Process: 1 vs 2 workers, framework overhead vs a bare loop)",
        args,
        versions(False, extra=("dask", "distributed", "zarr", "threadpoolctl")),
        blas_threads="1 everywhere: OMP/OPENBLAS/MKL_NUM_THREADS=1 set before NumPy is imported, inherited "
        "by the dask workers; see threadpools and worker_threadpools",
        page_cache="warm: the file was just written and is read from the page cache",
        statistic="median of interleaved repetitions (order rotated each repetition), one untimed warm-up "
        "per case; every repetition listed",
    )
    gflop = 2.0 * args.rows * args.n_spec**2 * args.passes / 1e9
    result["job"] = {
        "description": f"per block: {args.passes} × (block @ {args.n_spec}×{args.n_spec} Gaussian operator, float32), "
        "then argmax, peak height and row sum (3 float32 per position)",
        "gflop_per_run": round(gflop, 1),
        "data_MiB": round(args.rows * args.n_spec * 4 / 2**20, 1),
    }
    announce(log, "bench_scale", result, f"; {args.rows}×{args.n_spec} float32, {gflop:.0f} GFLOP per run")
    clusters: list[tuple[Any, Any]] = []
    try:
        t0 = time.perf_counter()
        write_data(data_path, args.rows, args.n_spec, args.seed)
        log(f"  data written in {time.perf_counter() - t0:.1f} s ({data_path.stat().st_size / 2**20:.0f} MiB)")
        import usidgpu

        with usidgpu.open(data_path) as f:
            blocks = SmoothPeaks(f[DSET_PATH], args.passes, args.width, rows_per_block=args.rows_per_block).blocks()
        result["job"]["blocks"] = len(blocks)

        reference: dict[str, np.ndarray] = {}

        def check_group(group: str) -> dict[str, Any]:
            import h5py

            with h5py.File(data_path, "r") as h:
                peak = h[group]["Peak"][()]
            with h5py.File(data_path, "a") as h:  # keep the file from growing run after run
                del h[group]
            same = "bare" in reference and np.array_equal(peak, reference["bare"])
            return {"equals_bare_loop_bitwise": bool(same)}

        def check_bare(out: np.ndarray) -> dict[str, Any]:
            reference["bare"] = out
            return {}

        cases: dict[str, Case] = {}
        if "bare" in args.cases:
            cases["bare_loop"] = Case(
                lambda: bare_loop(data_path, blocks, args.width, args.passes, bare_out),
                "h5py read per block + the same job + outputs written to an HDF5 file; no framework",
                check_bare,
            )
        if "inline" in args.cases:
            cases["process_inline"] = Case(
                lambda: process_run(data_path, args), "SmoothPeaks.run() in this process", check_group
            )
        if "threads" in args.cases:
            for n in (1, 2):
                cases[f"process_threads_{n}"] = Case(
                    lambda n=n: process_run(data_path, args, "threads", n),
                    f"thread executor, {n} thread(s)",
                    check_group,
                )
        if "local" in args.cases:
            result["cluster_start_s"] = {}
            result["worker_threadpools"] = {}
            for n in (1, 2):
                cluster, client, dt = start_cluster(n)
                clusters.append((cluster, client))
                result["cluster_start_s"][f"local_{n}"] = round(dt, 2)
                result["worker_threadpools"][f"local_{n}"] = _worker_blas(client)
                log(f"  LocalCluster of {n} worker(s) started in {dt:.1f} s")
                cases[f"process_local_{n}"] = Case(
                    lambda client=client: process_run(data_path, args, client),
                    f"dask LocalCluster, {n} worker process(es) × 1 thread, passed as scheduler=client",
                    check_group,
                )
        load0 = os.getloadavg()
        times, metrics = run_interleaved(cases, args.repeats, lambda: None, log)
        result["cases"] = times
        result["checks"] = metrics
        result["loadavg_during"] = [round(load0[0], 2), round(os.getloadavg()[0], 2)]

        med = {name: t["median_s"] for name, t in times.items()}
        ratios: dict[str, Any] = {}
        if "process_local_1" in med and "process_local_2" in med:
            ratios["speedup_local_2_vs_1"] = _r(med["process_local_1"] / med["process_local_2"])
            ratios["speedup_local_2_vs_1_paired"] = _paired(times, "process_local_1", "process_local_2")
        if "process_threads_1" in med and "process_threads_2" in med:
            ratios["speedup_threads_2_vs_1"] = _r(med["process_threads_1"] / med["process_threads_2"])
            ratios["speedup_threads_2_vs_1_paired"] = _paired(times, "process_threads_1", "process_threads_2")
        if "bare_loop" in med:
            for name in ("process_inline", "process_threads_1", "process_local_1"):
                if name in med:
                    ratios[f"overhead_{name.removeprefix('process_')}_vs_bare"] = _r(med[name] / med["bare_loop"] - 1)
                    paired = _paired(times, name, "bare_loop")
                    ratios[f"overhead_{name.removeprefix('process_')}_vs_bare_paired"] = (
                        _r(paired - 1) if paired is not None else None
                    )
            for name in ("process_threads_2", "process_local_2"):
                if name in med:  # share of a perfect 2× over the bare single-core loop
                    ratios[f"efficiency_{name.removeprefix('process_')}_vs_bare"] = _r(
                        med["bare_loop"] / (2 * med[name])
                    )
            ratios["bare_loop_gflops"] = _r(gflop / med["bare_loop"])
        result["ratios"] = ratios
        speed = ratios.get("speedup_local_2_vs_1")
        over = ratios.get("overhead_inline_vs_bare")
        result["targets"] = {
            "speedup_2_workers_vs_1": {
                "target": ">= 1.6",
                "value": speed,
                "met": None if speed is None else speed >= 1.6,
            },
            "framework_overhead_vs_bare_loop": {
                "target": "<= 0.10",
                "value": over,
                "met": None if over is None else over <= 0.10,
            },
        }
        for name, v in ratios.items():
            log(f"  {name}: {v}")
    finally:
        for cluster, client in clusters:
            client.close()
            cluster.close()
        if not args.keep_files:
            for p in (data_path, bare_out):
                p.unlink(missing_ok=True)
            try:
                args.tmp_dir.rmdir()  # only when empty
            except OSError:
                pass
    result["elapsed_s"] = round(time.time() - started, 1)
    result["loadavg_after"] = [round(v, 2) for v in os.getloadavg()]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2, default=_json_default) + "\n")
    log(f"results written to {args.output} ({result['elapsed_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
