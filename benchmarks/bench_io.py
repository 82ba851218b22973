#!/usr/bin/env python
"""Streaming read throughput of a USID Main dataset: usidgpu vs raw h5py vs pyUSID.

For each dataset case (uncompressed contiguous, gzip-4 chunked) this script writes a float32
low-rank + noise USID Main dataset (positions Y × X, one spectroscopic dimension) with
``usidgpu.write_main`` into a temporary directory on the repository's disk, then times, in one
process and interleaved repetition by repetition:

* ``usidgpu_blocks_prefetch``   - ``MainDataset.blocks(budget, device)`` over the whole dataset
* ``usidgpu_blocks_noprefetch`` - the same with ``prefetch=False``
* ``h5py_read_direct_full``     - one ``read_direct`` of the whole dataset into a preallocated
                                  array (the ceiling)
* ``h5py_read_direct_blocks``   - the usidgpu block plan read sequentially with ``read_direct``
                                  into one reused buffer (no thread)
* ``pyusid_get_n_dim_form``     - ``pyUSID.USIDataset(h5ds).get_n_dim_form()``
* ``pyusid_slices``             - ``h5ds[a:b]`` in slices of the usidgpu block size
* compute overlap               - per block a streamed-SVD step (``block @ W``, W n_spec × k;
                                  ``power`` also accumulates ``block.T @ (block @ W)``), with
                                  prefetch on / off, against read time + compute time.

Peak memory of a usidgpu streaming pass is measured in a spawned child process (VmHWM after
resetting it through /proc/self/clear_refs; ru_maxrss as fallback).

With ``--device gpu`` the blocks are delivered as CuPy arrays and the GPU baseline is a raw h5py
``read_direct`` per block followed by ``cupy.asarray``. Results go to
``benchmarks/results/io_cpu.json`` or ``io_gpu.json``.

Numbers are warm page-cache numbers unless ``--drop-cache`` is given (and even then the VM host
may still cache the file).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from harness import run_header, start_run
from machine import gpu_name, status_bytes, threadpools, versions

REPO = Path(__file__).resolve().parents[1]
DEFAULT_TMP = REPO / "bench_tmp"
RESULTS = Path(__file__).resolve().parent / "results"
DSET_PATH = "Measurement_000/Channel_000/Raw_Data"
MB = 1000**2
MiB = 1024**2


# ---------------------------------------------------------------------------------- helpers
def import_pyusid():
    """pyUSID 0.0.12 uses np.product / np.cumproduct, removed in NumPy 2: alias them first."""
    if not hasattr(np, "product"):
        np.product = np.prod  # type: ignore[attr-defined]
    if not hasattr(np, "cumproduct"):
        np.cumproduct = np.cumprod  # type: ignore[attr-defined]
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pyUSID
    return pyUSID


class blas_limit:
    """threadpoolctl limit on BLAS threads (None: leave as is); yields the thread counts in effect."""

    def __init__(self, n: int | None):
        self.n, self._ctl = n, None

    def __enter__(self) -> Any:
        try:
            from threadpoolctl import threadpool_info, threadpool_limits
        except ImportError:
            return "threadpoolctl unavailable"
        if self.n is not None:
            self._ctl = threadpool_limits(limits=self.n, user_api="blas")
        return sorted({d["num_threads"] for d in threadpool_info() if d.get("user_api") == "blas"})

    def __exit__(self, *exc: Any) -> None:
        if self._ctl is not None:
            self._ctl.restore_original_limits()


def drop_cache(path: Path) -> None:
    """Ask the kernel to forget the file's cached pages (best effort)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def summarize(seconds: list[float], nbytes: int, description: str) -> dict[str, Any]:
    med = statistics.median(seconds)
    return {
        "description": description,
        "seconds": [round(s, 5) for s in seconds],
        "GBps": [round(nbytes / s / 1e9, 4) for s in seconds],
        "median_s": round(med, 5),
        "min_s": round(min(seconds), 5),
        "median_GBps": round(nbytes / med / 1e9, 4),
        "best_GBps": round(nbytes / min(seconds) / 1e9, 4),
    }


# ---------------------------------------------------------------------------------- data
def write_dataset(
    path: Path, n_spec: int, size_mb: float, gzip: int | None, seed: int, filters: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Write a float32 low-rank + noise USID Main dataset with usidgpu.write_main (gzip at level
    ``gzip``, or the h5py dataset keywords ``filters``, or neither: contiguous)."""
    import h5py

    import usidgpu
    from usidgpu import Dimension

    row_bytes = n_spec * 4
    n_rows = max(1, int(round(size_mb * MiB / row_bytes)))
    nx = max(1, int(round(math.sqrt(n_rows))))
    ny = max(1, n_rows // nx)
    n_rows = ny * nx
    rng = np.random.default_rng(seed)
    rank = 8
    t = np.linspace(0, 1, n_spec, dtype=np.float32)
    basis = np.stack([np.sin((i + 1) * np.pi * t) * (1.0 / (i + 1)) for i in range(rank)]).astype(np.float32)
    kw: dict[str, Any] = (
        {"chunks": None} if gzip is None else {"chunks": "auto", "compression": "gzip", "compression_opts": gzip}
    )
    if filters is not None:
        kw = {"chunks": "auto", "compression": filters}
    t0 = time.perf_counter()
    with h5py.File(path, "w") as f:
        grp = f.require_group("Measurement_000/Channel_000")
        ds = usidgpu.write_main(
            grp,
            "Raw_Data",
            (n_rows, n_spec),
            "Current",
            "nA",
            [Dimension("Y", "nm", np.arange(ny) * 0.5), Dimension("X", "nm", np.arange(nx) * 0.5)],
            [Dimension("Bias", "V", np.linspace(-1, 1, n_spec))],
            dtype=np.float32,
            **kw,
        )
        step = max(1, (16 * MiB) // row_bytes)
        for a in range(0, n_rows, step):
            b = min(a + step, n_rows)
            coef = rng.standard_normal((b - a, rank), dtype=np.float32)
            block = coef @ basis
            block += 0.05 * rng.standard_normal(block.shape, dtype=np.float32)
            ds.write_rows(a, block)
        chunks, compression = ds.chunks, ds.compression
        storage = ds.h5.id.get_storage_size()
    fd = os.open(path, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
    write_s = time.perf_counter() - t0
    nbytes = n_rows * row_bytes
    return {
        "path": str(path),
        "dataset": "/" + DSET_PATH,
        "shape": [n_rows, n_spec],
        "pos_dims": {"Y": ny, "X": nx},
        "spec_dims": {"Bias": n_spec},
        "dtype": "float32",
        "data": f"low-rank (rank {rank}) + Gaussian noise (sigma 0.05)",
        "chunks": list(chunks) if chunks else None,
        "compression": compression,
        "compression_opts": gzip,
        "nbytes": nbytes,
        "storage_bytes": int(storage),
        "file_bytes": path.stat().st_size,
        "compression_ratio": round(nbytes / max(storage, 1), 3),
        "write_s": round(write_s, 3),
        "write_GBps_incl_fsync": round(nbytes / write_s / 1e9, 4),
    }


# ---------------------------------------------------------------------------------- compute
class Compute:
    """One streamed randomized-SVD step per block, on NumPy or CuPy."""

    def __init__(self, kind: str, n_spec: int, k: int, xp: Any, seed: int = 1):
        self.kind, self.xp = kind, xp
        w = np.random.default_rng(seed).standard_normal((n_spec, k), dtype=np.float32)
        self.W = xp.asarray(w)
        self.acc = xp.zeros((n_spec, k), dtype=np.float32)

    def __call__(self, x: Any) -> None:
        y = x @ self.W  # projection (n_rows × k)
        if self.kind == "power":
            self.acc += x.T @ y  # accumulate Xᵀ X W (one power-iteration pass)
        else:
            self.acc[:1] += y.sum(axis=0)  # keep the result alive, negligible cost

    def reset(self) -> None:
        self.acc[...] = 0


# ---------------------------------------------------------------------------------- bench
class Bench:
    def __init__(self, args: argparse.Namespace, info: dict[str, Any]):
        import h5py

        import usidgpu

        self.args = args
        self.info = info
        self.path = Path(info["path"])
        self.gpu = args.device == "gpu"
        self.f = h5py.File(self.path, "r")
        self.h5 = self.f[DSET_PATH]
        self.ds = usidgpu.MainDataset(self.h5)
        self.budget = int(args.budget_mb * MiB)
        self.dev = "gpu" if self.gpu else "cpu"
        self.plan = self.ds.block_plan(self.budget, device=self.dev, prefetch=True)
        self.plan_noprefetch = self.ds.block_plan(self.budget, device=self.dev, prefetch=False)
        self.nbytes = self.ds.nbytes
        self.full = np.empty(self.h5.shape, self.h5.dtype)
        self.full.fill(0)  # touch the pages once, outside the timings
        self.buf = np.empty((self.plan.rows_per_block, self.h5.shape[1]), self.h5.dtype)
        self.buf.fill(0)
        if self.gpu:
            import cupy

            self.cp = cupy
        self.pyusid = import_pyusid()
        self.usid_ds = self.pyusid.USIDataset(self.h5)

    def close(self) -> None:
        self.f.close()

    def sync(self) -> None:
        if self.gpu:
            self.cp.cuda.Device().synchronize()

    # --- the timed passes (each reads the whole dataset once) ---
    def usidgpu_blocks(self, prefetch: bool, compute: Compute | None = None) -> None:
        for blk in self.ds.blocks(budget=self.budget, device=self.dev, prefetch=prefetch):
            if compute is not None:
                compute(blk.data)
        self.sync()

    def h5py_full(self) -> None:
        self.h5.read_direct(self.full)

    def h5py_blocks(self, compute: Compute | None = None) -> None:
        buf, h5 = self.buf, self.h5
        for a, b in self.plan:
            n = b - a
            h5.read_direct(buf, np.s_[a:b], np.s_[0:n])
            if compute is not None:
                compute(buf[:n])

    def h5py_blocks_cupy(self, compute: Compute | None = None) -> None:
        cp, buf, h5 = self.cp, self.buf, self.h5
        for a, b in self.plan:
            n = b - a
            h5.read_direct(buf, np.s_[a:b], np.s_[0:n])
            d = cp.asarray(buf[:n])
            if compute is not None:
                compute(d)
            del d
        self.sync()

    def compute_only(self, compute: Compute) -> None:
        """The compute of a pass on data already in memory (same block shapes)."""
        if self.gpu:
            if getattr(self, "_dev_buf", None) is None:
                self._dev_buf = self.cp.asarray(self.buf)  # uploaded once, outside the timing
            src = self._dev_buf
        else:
            src = self.buf
        for a, b in self.plan:
            compute(src[: b - a])
        self.sync()

    def pyusid_ndim(self) -> None:
        arr = self.usid_ds.get_n_dim_form()
        del arr

    def pyusid_construct_ndim(self) -> None:
        arr = self.pyusid.USIDataset(self.h5).get_n_dim_form()
        del arr

    def pyusid_slices(self) -> None:
        h5 = self.h5
        for a, b in self.plan:
            x = h5[a:b]
            del x

    # --- driver ---
    def run_cases(
        self, cases: dict[str, tuple[Callable[[], None], str]], reps: int, warmup: bool = True
    ) -> dict[str, Any]:
        times: dict[str, list[float]] = {name: [] for name in cases}
        if warmup:
            for fn, _ in cases.values():
                fn()
        for _ in range(reps):
            for name, (fn, _) in cases.items():  # interleaved: drift hits every case alike
                if self.args.drop_cache:
                    drop_cache(self.path)
                gc.collect()
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
        return {name: summarize(times[name], self.nbytes, desc) for name, (_, desc) in cases.items()}


def bench_case(args: argparse.Namespace, info: dict[str, Any], log: Callable[[str], None]) -> dict[str, Any]:
    b = Bench(args, info)
    try:
        reps = args.gzip_repeats if info["compression"] else args.repeats
        dev = b.dev
        cases: dict[str, tuple[Callable[[], None], str]] = {
            "usidgpu_blocks_prefetch": (
                lambda: b.usidgpu_blocks(True),
                f"MainDataset.blocks(budget, device='{dev}', prefetch=True), whole dataset",
            ),
            "usidgpu_blocks_noprefetch": (
                lambda: b.usidgpu_blocks(False),
                f"MainDataset.blocks(budget, device='{dev}', prefetch=False), whole dataset",
            ),
            "h5py_read_direct_full": (
                b.h5py_full,
                "h5py read_direct of the whole dataset into a preallocated array (ceiling, host memory)",
            ),
            "h5py_read_direct_blocks": (
                b.h5py_blocks,
                "h5py read_direct per block of the usidgpu plan into one reused buffer, no thread",
            ),
            "pyusid_get_n_dim_form": (
                b.pyusid_ndim,
                "pyUSID USIDataset(h5ds).get_n_dim_form() (USIDataset built once, outside the timing)",
            ),
            "pyusid_construct_and_get_n_dim_form": (
                b.pyusid_construct_ndim,
                "pyUSID USIDataset(h5ds) construction + get_n_dim_form()",
            ),
            "pyusid_slices": (b.pyusid_slices, "h5ds[a:b] in slices of the usidgpu block size (new array per slice)"),
        }
        if b.gpu:
            cases["h5py_read_direct_blocks_cupy_asarray"] = (
                b.h5py_blocks_cupy,
                "GPU baseline: h5py read_direct per block into a reused (pageable) buffer + cupy.asarray, no thread",
            )
        log(
            f"  plan: {b.plan.n_blocks} blocks of {b.plan.rows_per_block} rows ({b.plan.block_bytes / MiB:.1f} MiB), "
            f"{b.plan.n_buffers} buffers; {reps} repetitions"
        )
        timings = b.run_cases(cases, reps)
        for name, t in timings.items():
            log(f"  {name:40s} median {t['median_s']:.3f} s  {t['median_GBps']:.3f} GB/s")

        # compute overlap: read-only, compute-only and read+compute passes measured interleaved
        xp = b.cp if b.gpu else np
        overlap: dict[str, Any] = {}
        for kind in args.compute:
            overlap[kind] = {}
            for blas in args.overlap_blas:
                comp = Compute(kind, b.h5.shape[1], args.k, xp)
                ocases: dict[str, tuple[Callable[[], None], str]] = {
                    "read_only": (lambda: b.usidgpu_blocks(False), "blocks(prefetch=False), no compute"),
                    "compute_only": (
                        lambda c=comp: b.compute_only(c),
                        f"compute '{kind}' per block on data already in memory",
                    ),
                    "usidgpu_prefetch_compute": (
                        lambda c=comp: b.usidgpu_blocks(True, c),
                        "blocks(prefetch=True) + compute per block",
                    ),
                    "usidgpu_noprefetch_compute": (
                        lambda c=comp: b.usidgpu_blocks(False, c),
                        "blocks(prefetch=False) + compute per block",
                    ),
                    "h5py_blocks_compute": (
                        (lambda c=comp: b.h5py_blocks_cupy(c)) if b.gpu else (lambda c=comp: b.h5py_blocks(c)),
                        "raw h5py read_direct per block (+cupy.asarray on GPU) + compute, no thread",
                    ),
                }
                with blas_limit(None if blas == "default" else int(blas)) as tp:
                    ot = b.run_cases(ocases, reps)
                read_s = ot["read_only"]["median_s"]
                comp_s = ot["compute_only"]["median_s"]
                serial = read_s + comp_s
                ideal = max(read_s, comp_s)
                pre = ot["usidgpu_prefetch_compute"]["median_s"]
                nopre = ot["usidgpu_noprefetch_compute"]["median_s"]
                hidden = (serial - pre) / (serial - ideal) if serial > ideal else float("nan")
                overlap[kind][f"blas_threads={blas}"] = {
                    "compute": ("block @ W" if kind == "project" else "acc += block.T @ (block @ W)")
                    + f", W float32 {b.h5.shape[1]}x{args.k}",
                    "blas_threads": tp,
                    "timings": ot,
                    "pure_read_s": read_s,
                    "pure_compute_s": comp_s,
                    "read_plus_compute_s": round(serial, 5),
                    "ideal_overlap_s": round(ideal, 5),
                    "prefetch_s": pre,
                    "noprefetch_s": nopre,
                    "speedup_prefetch_vs_noprefetch": round(nopre / pre, 3),
                    "fraction_of_hideable_time_hidden": round(hidden, 3),
                    "note": "hidden = (read+compute - prefetch) / (read+compute - max(read, compute)); "
                    "1 = perfect overlap, <= 0 = none",
                }
                log(
                    f"  compute '{kind}' (BLAS threads {blas}): read {read_s:.3f} + compute {comp_s:.3f}"
                    f" = {serial:.3f} s; "
                    f"prefetch {pre:.3f} s, no prefetch {nopre:.3f} s, hidden {hidden:.0%}"
                )

        t = {k: v["median_s"] for k, v in timings.items()}
        main_key = "usidgpu_blocks_prefetch"
        ratios = {
            "usidgpu_prefetch_over_h5py_read_direct_full": round(t["h5py_read_direct_full"] / t[main_key], 3),
            "usidgpu_noprefetch_over_h5py_read_direct_full": round(
                t["h5py_read_direct_full"] / t["usidgpu_blocks_noprefetch"], 3
            ),
            "usidgpu_prefetch_over_h5py_read_direct_blocks": round(t["h5py_read_direct_blocks"] / t[main_key], 3),
            "usidgpu_prefetch_over_pyusid_get_n_dim_form": round(t["pyusid_get_n_dim_form"] / t[main_key], 3),
            "usidgpu_prefetch_over_pyusid_slices": round(t["pyusid_slices"] / t[main_key], 3),
        }
        if b.gpu:
            ratios["usidgpu_gpu_prefetch_over_h5py_blocks_cupy_asarray"] = round(
                t["h5py_read_direct_blocks_cupy_asarray"] / t[main_key], 3
            )
        log("  ratios (throughput): " + ", ".join(f"{k} {v}" for k, v in ratios.items()))
        plan = {
            "budget_bytes": b.budget,
            "rows_per_block": b.plan.rows_per_block,
            "n_blocks": b.plan.n_blocks,
            "block_bytes": b.plan.block_bytes,
            "n_buffers_prefetch": b.plan.n_buffers,
            "rows_per_block_noprefetch": b.plan_noprefetch.rows_per_block,
            "n_buffers_noprefetch": b.plan_noprefetch.n_buffers,
        }
    finally:
        b.close()

    memory = {}
    for label, mode, prefetch in (
        ("usidgpu_prefetch", "usidgpu", True),
        ("usidgpu_noprefetch", "usidgpu", False),
        ("pyusid_get_n_dim_form", "pyusid", False),
    ):
        if mode == "pyusid" and not args.pyusid_memory:
            continue
        m = measure_memory(info["path"], mode, args.budget_mb, args.device, prefetch)
        memory[label] = m
        log(
            f"  peak memory {label}: {m['peak_over_baseline_bytes'] / MB:.1f} MB over baseline "
            f"(budget {b.budget / MB:.1f} MB, method {m['method']})"
        )
    target_bytes = b.budget + 100 * MB
    targets = {
        "throughput_ratio_target": 0.90,
        "throughput_ratio": ratios["usidgpu_prefetch_over_h5py_read_direct_full"],
        "throughput_target_met": ratios["usidgpu_prefetch_over_h5py_read_direct_full"] >= 0.90,
        "memory_target_bytes": target_bytes,
        "memory_target": "peak RSS over baseline <= budget + 100 MB",
        "memory_target_met": {
            k: v["peak_over_baseline_bytes"] <= target_bytes for k, v in memory.items() if k.startswith("usidgpu")
        },
    }
    return {
        "dataset": info,
        "plan": plan,
        "timings": timings,
        "compute_overlap": overlap,
        "ratios": ratios,
        "memory": memory,
        "targets": targets,
    }


# ---------------------------------------------------------------------------------- codecs (issue 20)
def codec_filters(name: str, gzip_level: int) -> dict[str, Any]:
    """h5py dataset keywords of one codec case."""
    if name == "gzip":
        return {"compression": "gzip", "compression_opts": gzip_level}
    if name == "lzf":
        return {"compression": "lzf"}
    import hdf5plugin

    cname = name.split("-", 1)[1]
    return dict(hdf5plugin.Blosc(cname=cname, clevel=5, shuffle=hdf5plugin.Blosc.SHUFFLE))


def bench_codec(args: argparse.Namespace, info: dict[str, Any], log: Callable[[str], None]) -> dict[str, Any]:
    """A compressed dataset read whole by usidgpu's block stream with 1…N decoding threads and by
    h5py's ``read_direct``, interleaved; the same values read uncompressed from the page cache as
    the ceiling."""
    import h5py

    import usidgpu
    from usidgpu.core import chunks

    f = h5py.File(info["path"], "r")
    try:
        h5 = f[DSET_PATH]
        ref = f["Reference"]
        ds = usidgpu.MainDataset(h5)
        budget = int(args.budget_mb * MiB)
        full = np.empty(h5.shape, h5.dtype)
        full.fill(0)
        threads = sorted({1, *args.decode_threads})

        def stream(n: int) -> Callable[[], None]:
            def run() -> None:
                os.environ[chunks.THREADS_ENV] = str(n)
                try:
                    for _blk in ds.blocks(budget=budget, device="cpu", prefetch=True):
                        pass
                finally:
                    os.environ.pop(chunks.THREADS_ENV, None)

            return run

        cases: dict[str, tuple[Callable[[], None], str]] = {
            f"usidgpu_blocks_threads_{n}": (
                stream(n),
                f"MainDataset.blocks(budget, device='cpu', prefetch=True) with {chunks.THREADS_ENV}={n}"
                + (" (1: HDF5's own decoding, one chunk at a time)" if n == 1 else " decoding threads"),
            )
            for n in threads
        }
        cases["h5py_read_direct_full"] = (lambda: h5.read_direct(full), "h5py read_direct of the whole dataset")
        cases["uncompressed_read_direct_full"] = (
            lambda: ref.read_direct(full),
            "h5py read_direct of the same values stored uncompressed (contiguous), warm page cache",
        )
        b = Bench.__new__(Bench)  # only run_cases (its repetitions, interleaving, drop-cache)
        b.args, b.path, b.nbytes = args, Path(info["path"]), info["nbytes"]
        timings = b.run_cases(cases, args.gzip_repeats)
        # the values, once: the stream equals h5py bit for bit
        got = np.concatenate([blk.data.copy() for blk in ds.blocks(budget=budget, device="cpu")])
        h5.read_direct(full)
        equal = got.tobytes() == full.tobytes()
    finally:
        f.close()
    for name, t in timings.items():
        log(f"  {name:40s} median {t['median_s']:.3f} s  {t['median_GBps']:.3f} GB/s")
    t = {k: v["median_s"] for k, v in timings.items()}
    best = f"usidgpu_blocks_threads_{max(threads)}"
    return {
        "dataset": info,
        "timings": timings,
        "values_equal_h5py_bit_for_bit": equal,
        "ratios": {
            "usidgpu_over_h5py_read_direct": round(t["h5py_read_direct_full"] / t[best], 3),
            "usidgpu_over_uncompressed_page_cache": round(t["uncompressed_read_direct_full"] / t[best], 3),
            "thread_scaling_over_1_thread": {
                str(n): round(t["usidgpu_blocks_threads_1"] / t[f"usidgpu_blocks_threads_{n}"], 3) for n in threads
            },
        },
        "threads_timed": threads,
    }


def add_reference_copy(path: Path) -> None:
    """Store the dataset's values again, uncompressed and contiguous, as ``/Reference``."""
    import h5py

    with h5py.File(path, "a") as f:
        src = f[DSET_PATH]
        dst = f.create_dataset("Reference", shape=src.shape, dtype=src.dtype)
        step = max(1, (64 * MiB) // (src.shape[1] * src.dtype.itemsize))
        for a in range(0, src.shape[0], step):
            dst[a : a + step] = src[a : a + step]


# ---------------------------------------------------------------------------------- memory child
def _memory_child(path: str, mode: str, budget_mb: float, device: str, prefetch: bool, q: Any) -> None:
    try:
        import h5py

        import usidgpu

        gpu = device == "gpu"
        if gpu:
            import cupy

            cupy.zeros(1, dtype=np.float32).sum().item()  # CUDA context before the baseline
        pyusid = import_pyusid() if mode == "pyusid" else None
        budget = int(budget_mb * MiB)
        f = h5py.File(path, "r")
        h5 = f[DSET_PATH]
        ds = usidgpu.MainDataset(h5)
        usid_ds = pyusid.USIDataset(h5) if pyusid is not None else None
        gc.collect()
        method = "VmHWM after clear_refs=5"
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
        except OSError:
            method = "ru_maxrss (peak not resettable)"
        base_rss = status_bytes("VmRSS")
        base_hwm = status_bytes("VmHWM")
        base_maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        pool0 = cupy.get_default_memory_pool().total_bytes() if gpu else None
        t0 = time.perf_counter()
        if mode == "usidgpu":
            n = 0
            for blk in ds.blocks(budget=budget, device=device, prefetch=prefetch):
                n += blk.stop - blk.start
            if gpu:
                cupy.cuda.Device().synchronize()
        else:
            arr = usid_ds.get_n_dim_form()
            n = arr.shape[0]
        dt = time.perf_counter() - t0
        hwm = status_bytes("VmHWM")
        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        if method.startswith("VmHWM"):
            peak = hwm
            over = hwm - base_rss
        else:
            peak = maxrss
            over = max(0, maxrss - max(base_maxrss, base_rss))
        out = {
            "method": method,
            "baseline_rss_bytes": base_rss,
            "hwm_after_reset_bytes": base_hwm,
            "peak_bytes": peak,
            "peak_over_baseline_bytes": over,
            "peak_over_baseline_MB": round(over / MB, 1),
            "budget_bytes": budget,
            "prefetch": prefetch,
            "mode": mode,
            "pass_s": round(dt, 4),
        }
        if gpu:
            pool = cupy.get_default_memory_pool()
            out["gpu_mempool_total_bytes_before"] = pool0
            out["gpu_mempool_total_bytes_after"] = pool.total_bytes()
            out["gpu_pinned_pool_n_free_blocks"] = cupy.get_default_pinned_memory_pool().n_free_blocks()
        f.close()
        q.put(out)
    except BaseException as exc:  # reported to the parent
        q.put({"error": f"{type(exc).__name__}: {exc}"})


def measure_memory(path: str, mode: str, budget_mb: float, device: str, prefetch: bool) -> dict[str, Any]:
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_memory_child, args=(path, mode, budget_mb, device, prefetch, q))
    p.start()
    try:
        out = q.get(timeout=900)
    finally:
        p.join(timeout=60)
    if "error" in out:
        raise RuntimeError(f"memory child ({mode}, prefetch={prefetch}) failed: {out['error']}")
    return out


# ---------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Streaming read throughput of a USID Main dataset: usidgpu MainDataset.blocks vs raw "
        "h5py read_direct vs pyUSID, plus compute/I-O overlap and peak memory.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--device", choices=("cpu", "gpu"), default="cpu", help="where blocks are delivered")
    p.add_argument("--size-mb", type=float, default=1024, help="uncompressed dataset size (MiB)")
    p.add_argument(
        "--gzip-size-mb", type=float, default=256, help="gzip-4 dataset size (MiB, uncompressed); 0 skips it"
    )
    p.add_argument("--gzip-level", type=int, default=4)
    p.add_argument("--n-spec", type=int, default=1024, help="spectroscopic points per position")
    p.add_argument("--budget-mb", type=float, default=256, help="memory budget for blocks() (MiB)")
    p.add_argument("--repeats", type=int, default=5, help="timed repetitions per measurement (median reported; >= 3)")
    p.add_argument("--gzip-repeats", type=int, default=3, help="timed repetitions for the (slow) gzip case; >= 3")
    p.add_argument(
        "--compute",
        default="project,power",
        help="compute kinds for the overlap case: project (block @ W), power (block.T @ (block @ W))",
    )
    p.add_argument(
        "--overlap-blas",
        default="default,1",
        help="BLAS thread settings for the overlap case: 'default' and/or a thread count (threadpoolctl)",
    )
    p.add_argument("-k", type=int, default=16, help="columns of W in the compute case")
    p.add_argument("--cases", default="uncompressed,gzip", help="comma-separated: uncompressed, gzip")
    p.add_argument(
        "--codecs",
        default="gzip,lzf,blosc-zstd,blosc-lz4",
        help="codec cases (issue 20), each a dataset of --codec-size-mb: gzip, lzf, blosc-zstd, blosc-lz4; '' skips",
    )
    p.add_argument("--codec-size-mb", type=float, default=1024, help="size of each codec case (MiB, uncompressed)")
    p.add_argument(
        "--decode-threads", default="2", help="decoding thread counts timed in the codec cases besides 1 (comma-sep.)"
    )
    p.add_argument("--tmp-dir", type=Path, default=DEFAULT_TMP, help="where the test files go (same disk as the repo)")
    p.add_argument("--keep-files", action="store_true", help="do not delete the test files afterwards")
    p.add_argument(
        "--drop-cache",
        action="store_true",
        help="posix_fadvise(DONTNEED) the file before every timed pass (default: warm page cache)",
    )
    p.add_argument(
        "--no-pyusid-memory",
        dest="pyusid_memory",
        action="store_false",
        help="skip the peak-memory measurement of pyUSID get_n_dim_form",
    )
    p.add_argument("--output", type=Path, default=None, help="JSON path (default benchmarks/results/io_<device>.json)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.repeats < 3 or args.gzip_repeats < 3:
        p.error("--repeats and --gzip-repeats must be at least 3")
    args.overlap_blas = [x.strip() for x in args.overlap_blas.split(",") if x.strip()]
    for x in args.overlap_blas:
        if x != "default" and not x.isdigit():
            p.error(f"--overlap-blas: {x!r} is neither 'default' nor a thread count")
    args.compute = [c.strip() for c in args.compute.split(",") if c.strip()]
    for c in args.compute:
        if c not in ("project", "power"):
            p.error(f"unknown compute kind {c!r} (project, power)")
    args.cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    for c in args.cases:
        if c not in ("uncompressed", "gzip"):
            p.error(f"unknown case {c!r} (uncompressed, gzip)")
    args.codecs = [c.strip() for c in args.codecs.split(",") if c.strip()]
    for c in args.codecs:
        if c not in ("gzip", "lzf", "blosc-zstd", "blosc-lz4"):
            p.error(f"unknown codec {c!r} (gzip, lzf, blosc-zstd, blosc-lz4)")
    args.decode_threads = [int(x) for x in args.decode_threads.split(",") if x.strip()]
    if args.gzip_size_mb <= 0 and "gzip" in args.cases:
        args.cases.remove("gzip")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    run = start_run("bench_io.py", args.device)
    if run is None:
        return 2
    log, _sync = run

    out_path = args.output or RESULTS / f"io_{args.device}.json"
    args.tmp_dir.mkdir(parents=True, exist_ok=True)
    load0 = os.getloadavg()
    started = time.time()
    result: dict[str, Any] = {
        "benchmark": "bench_io (HDF5 streaming read throughput)",
        **run_header(args.device),
        "versions": {**versions(args.device == "gpu", extra=("dask",)), "pyUSID": import_pyusid().__version__},
        "threadpools": threadpools(),
        "page_cache": "dropped before every timed pass (posix_fadvise DONTNEED; the VM host may still cache)"
        if args.drop_cache
        else "warm: the file was just written and is read from the page cache (warm-up pass first)",
        "parameters": {
            "size_mb_uncompressed": args.size_mb,
            "size_mb_gzip": args.gzip_size_mb,
            "gzip_level": args.gzip_level,
            "n_spec": args.n_spec,
            "budget_mb": args.budget_mb,
            "budget_bytes": int(args.budget_mb * MiB),
            "repeats": args.repeats,
            "gzip_repeats": args.gzip_repeats,
            "overlap_blas_threads": args.overlap_blas,
            "statistic": "median of repeats (all repetitions listed); one untimed warm-up pass per measurement",
            "compute": args.compute,
            "k": args.k,
            "cases": args.cases,
            "codecs": args.codecs,
            "codec_size_mb": args.codec_size_mb,
            "decode_threads": args.decode_threads,
            "tmp_dir": str(args.tmp_dir),
            "units": "GB/s = 1e9 bytes of uncompressed data per second; MB = 1e6 bytes; sizes given in MiB",
        },
        "cases": {},
    }
    if args.device == "gpu":
        result["gpu"] = gpu_name()
    log(
        f"bench_io: device {args.device}{' (' + result['gpu'] + ')' if args.device == 'gpu' else ''}, "
        f"{result['machine']['cpu_model']}, {result['machine']['cpu_count']} cores; {result['page_cache']}"
    )
    for case in args.cases:
        gz = args.gzip_level if case == "gzip" else None
        size = args.gzip_size_mb if case == "gzip" else args.size_mb
        name = f"gzip{gz}" if gz is not None else "uncompressed"
        path = args.tmp_dir / f"bench_io_{name}_{os.getpid()}.h5"
        log(f"[{name}] writing {size:.0f} MiB to {path} ...")
        try:
            info = write_dataset(path, args.n_spec, size, gz, args.seed)
            log(
                f"  wrote {info['shape']} chunks={info['chunks']} compression={info['compression']} "
                f"ratio {info['compression_ratio']} in {info['write_s']:.1f} s"
            )
            result["cases"][name] = bench_case(args, info, log)
        finally:
            if not args.keep_files and path.exists():
                path.unlink()
    result["codecs"] = {}
    for codec in args.codecs:
        path = args.tmp_dir / f"bench_io_codec_{codec}_{os.getpid()}.h5"
        log(f"[codec {codec}] writing {args.codec_size_mb:.0f} MiB to {path} ...")
        try:
            info = write_dataset(
                path, args.n_spec, args.codec_size_mb, None, args.seed, codec_filters(codec, args.gzip_level)
            )
            info["codec"] = codec
            add_reference_copy(path)
            log(f"  wrote {info['shape']} chunks={info['chunks']} ratio {info['compression_ratio']}")
            result["codecs"][codec] = bench_codec(args, info, log)
        finally:
            if not args.keep_files and path.exists():
                path.unlink()
    if result["codecs"]:
        r = result["codecs"]
        result["codec_targets"] = {
            "gzip_target": "usidgpu >= 1.8 x h5py read_direct on 2 cores",
            "gzip_met": r["gzip"]["ratios"]["usidgpu_over_h5py_read_direct"] >= 1.8 if "gzip" in r else None,
            "blosc_lz4_target": "usidgpu >= 0.8 x the uncompressed read from the page cache",
            "blosc_lz4_met": r["blosc-lz4"]["ratios"]["usidgpu_over_uncompressed_page_cache"] >= 0.8
            if "blosc-lz4" in r
            else None,
        }
    try:
        args.tmp_dir.rmdir()  # only when empty
    except OSError:
        pass
    result["elapsed_s"] = round(time.time() - started, 1)
    result["loadavg_before"] = [round(x, 2) for x in load0]
    result["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=2) + "\n")
    log(f"results written to {out_path} ({result['elapsed_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
