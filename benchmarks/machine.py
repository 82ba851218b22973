"""What every benchmark records about where it ran: machine, GPU, library versions, BLAS threads."""

from __future__ import annotations

import importlib
import os
import platform
from pathlib import Path
from typing import Any

import numpy as np


def gpu_check() -> str | None:
    """None when a GPU is usable, else the one-line reason."""
    from usidgpu.core.device import gpu_status

    ok, why = gpu_status()
    return None if ok else why


def gpu_name() -> str:
    import cupy

    name = cupy.cuda.runtime.getDeviceProperties(0)["name"]
    return name.decode() if isinstance(name, bytes) else str(name)


def _proc_field(path: str, prefix: str) -> str | None:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(prefix):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def machine_info() -> dict[str, Any]:
    """Platform, CPU model and count, RAM, transparent huge pages, host name."""
    mem = _proc_field("/proc/meminfo", "MemTotal:")
    ram = int(mem.split()[0]) * 1024 if mem else None
    try:
        thp = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text().strip()
    except OSError:
        thp = None
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": _proc_field("/proc/cpuinfo", "model name") or "unknown",
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "ram_bytes": ram,
        "ram_GiB": round(ram / 1024**3, 1) if ram else None,
        "transparent_hugepage": thp,
        "hostname": platform.node(),
    }


def versions(with_gpu: bool, extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """Versions of NumPy, h5py/HDF5, usidgpu, the modules named in ``extra``, and CuPy/CUDA on a GPU."""
    import h5py

    import usidgpu

    out: dict[str, Any] = {
        "usidgpu": usidgpu.__version__,
        "numpy": np.__version__,
        "h5py": h5py.__version__,
        "hdf5": h5py.version.hdf5_version,
    }
    for name in extra:
        try:
            out[name] = importlib.import_module(name).__version__
        except Exception as exc:  # reported, not fatal
            out[name] = f"unavailable ({type(exc).__name__})"
    if with_gpu:
        import cupy

        out["cupy"] = cupy.__version__
        out["cuda_runtime"] = cupy.cuda.runtime.runtimeGetVersion()
    return out


def threadpools() -> Any:
    """threadpoolctl's view of the BLAS/OpenMP pools (the BLAS kernel changes timings ~2×)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "skipped (threadpoolctl not installed)"
    keys = ("user_api", "internal_api", "prefix", "version", "num_threads", "architecture", "threading_layer")
    return [{k: d.get(k) for k in keys} for d in threadpool_info()]


def status_bytes(field: str) -> int | None:
    """A byte count from /proc/self/status (VmRSS, VmHWM, VmData)."""
    value = _proc_field("/proc/self/status", field + ":")
    return int(value.split()[0]) * 1024 if value else None
