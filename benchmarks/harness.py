"""Timing and memory helpers shared by the benchmarks: interleaved repetitions, medians, peak RSS
of a child process (VmHWM reset through /proc/self/clear_refs), JSON encoding."""

from __future__ import annotations

import gc
import os
import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from machine import status_bytes

MB = 1000**2


def summarize(seconds: list[float], description: str) -> dict[str, Any]:
    return {
        "description": description,
        "seconds": [round(s, 4) for s in seconds],
        "median_s": round(statistics.median(seconds), 4),
        "min_s": round(min(seconds), 4),
        "max_s": round(max(seconds), 4),
    }


def _r(x: float | None, digits: int = 4) -> float | None:
    """Round to ``digits`` significant digits (JSON stays readable)."""
    if x is None or not np.isfinite(x) or x == 0:
        return float(x) if x is not None else None
    return float(f"{x:.{digits}g}")


class Case:
    """A timed callable; ``metrics`` turns its return value into figures (not timed)."""

    def __init__(self, fn: Callable[[], Any], description: str, metrics: Callable[[Any], dict] | None = None):
        self.fn, self.description, self.metrics = fn, description, metrics


def run_interleaved(
    cases: dict[str, Case], reps: int, sync: Callable[[], None], log: Callable[[str], None], warmup: bool = True
) -> tuple[dict[str, Any], dict[str, dict]]:
    """Time every case ``reps`` times, interleaved; the order rotates each repetition."""
    names = list(cases)
    times: dict[str, list[float]] = {n: [] for n in names}
    metrics: dict[str, dict] = {}

    def one(name: str) -> float:
        case = cases[name]
        gc.collect()
        t0 = time.perf_counter()
        out = case.fn()
        sync()
        dt = time.perf_counter() - t0
        if case.metrics is not None:
            metrics[name] = case.metrics(out)
        del out
        return dt

    if warmup:
        for name in names:
            log(f"    warm-up {name}: {one(name):.3f} s")
    for rep in range(reps):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:
            times[name].append(one(name))
        log(f"    repetition {rep + 1}/{reps}: " + ", ".join(f"{n} {times[n][-1]:.2f}" for n in names))
    return {n: summarize(times[n], cases[n].description) for n in names}, metrics


def _reset_peak() -> str:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return "VmHWM after clear_refs=5"
    except OSError:
        return "ru_maxrss (peak not resettable)"


def _peak(method: str, base_rss: int, base_maxrss: int) -> int:
    if method.startswith("VmHWM"):
        return status_bytes("VmHWM") - base_rss
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return max(0, maxrss - max(base_maxrss, base_rss))


def run_child(target: Callable, args: tuple, timeout: float) -> dict[str, Any]:
    """Run ``target(*args, queue)`` in a spawned process; a crash is reported, not raised."""
    import multiprocessing as mp
    import queue as _queue

    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=target, args=(*args, q))
    t0 = time.perf_counter()
    p.start()
    out = None
    while out is None:
        try:
            out = q.get(timeout=1.0)
        except _queue.Empty:
            if not p.is_alive():
                out = {"ok": False, "error": f"child process died with exit code {p.exitcode} (no report)"}
            elif time.perf_counter() - t0 > timeout:
                p.kill()
                out = {"ok": False, "error": f"child process killed after {timeout:.0f} s"}
    p.join(timeout=60)
    out["child_wall_s"] = round(time.perf_counter() - t0, 2)
    out["exitcode"] = p.exitcode
    if "peak_over_baseline_bytes" in out:
        out["peak_over_baseline_MB"] = round(out["peak_over_baseline_bytes"] / MB, 1)
    return out


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def start_run(script: str, device: str) -> tuple[Callable[[str], None], Callable[[], None]] | None:
    """``(log, sync)`` for a benchmark on ``device``; ``None`` after a one-line error when
    ``--device gpu`` finds no usable GPU (the caller exits with status 2)."""
    from machine import gpu_check

    sync: Callable[[], None] = lambda: None  # noqa: E731
    if device == "gpu":
        why = gpu_check()
        if why is not None:
            import sys

            print(f"{script}: error: --device gpu needs a usable CUDA GPU: {why}", file=sys.stderr)
            return None
        import cupy

        sync = cupy.cuda.Device().synchronize

    def log(msg: str) -> None:
        print(msg, flush=True)

    return log, sync


def run_header(device: str) -> dict[str, Any]:
    """Keys every results JSON starts with (after its "benchmark"): when, how, where."""
    import datetime as _dt
    import sys
    from pathlib import Path

    from machine import machine_info

    return {
        "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "device": device,
        "machine": machine_info(),
    }


def results_header(
    benchmark: str, args: Any, versions: dict[str, Any], device: str = "cpu", **notes: Any
) -> dict[str, Any]:
    """The first keys of every results JSON: what ran, when, how, where, with which versions, thread
    pools and parameters (``args`` less ``output``); then the benchmark's own ``notes``; the load
    average last; the card's name on a GPU."""
    from machine import gpu_name, threadpools

    header = {
        "benchmark": benchmark,
        **run_header(device),
        "versions": versions,
        "threadpools": threadpools(),
        "parameters": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "output"},
        **notes,
        "loadavg_before": [round(v, 2) for v in os.getloadavg()],
    }
    if device == "gpu":
        header["gpu"] = gpu_name()
    return header


def announce(log: Callable[[str], None], script: str, result: dict[str, Any], detail: str = "") -> None:
    """The first line a benchmark prints: device (and card), CPU, cores, load, then ``detail``."""
    machine = result["machine"]
    card = f" ({result['gpu']})" if "gpu" in result else ""
    log(
        f"{script}: device {result['device']}{card}, {machine['cpu_model']}, {machine['cpu_count']} cores, "
        f"load {result['loadavg_before']}{detail}"
    )
