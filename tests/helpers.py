"""Small builders used by several test modules."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

import usidgpu
from usidgpu import Dimension


def make_file(
    path: Path,
    data: np.ndarray | None = None,
    pos=None,
    spec=None,
    name: str = "Raw_Data",
    quantity: str = "Current",
    units: str = "nA",
    **kwargs,
) -> str:
    """Write one Main dataset at /Measurement_000/Channel_000/<name>; return its path."""
    pos = pos if pos is not None else [Dimension("Y", "µm", np.arange(3) * 0.5), Dimension("X", "nm", 4)]
    spec = spec if spec is not None else [Dimension("Bias", "V", np.linspace(-1, 1, 5))]
    if data is None:
        shape = tuple(d.size for d in pos) + tuple(d.size for d in spec)
        data = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    with h5py.File(path, "a") as f:
        g = f.require_group("Measurement_000/Channel_000")
        m = usidgpu.write_main(g, name, data, quantity, units, pos, spec, **kwargs)
        return m.name


def file_digest(path: Path) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def principal_sines(a: np.ndarray, b: np.ndarray) -> float:
    """Sine of the largest principal angle between the row spaces of a and b (k × n each)."""
    qa, _ = np.linalg.qr(np.asarray(a, dtype=np.complex128).conj().T)
    qb, _ = np.linalg.qr(np.asarray(b, dtype=np.complex128).conj().T)
    cos = np.linalg.svd(qa.conj().T @ qb, compute_uv=False)
    return float(np.sqrt(max(0.0, 1 - float(cos.min()) ** 2)))


def low_rank(m: int, n: int, rank: int = 6, dtype=np.float64, noise: float = 1e-3, seed: int = 0) -> np.ndarray:
    """A matrix with well-separated singular values (100·0.6^i) plus a little noise."""
    rng = np.random.default_rng(seed)
    complex_ = np.dtype(dtype).kind == "c"

    def rand(*shape):
        x = rng.standard_normal(shape)
        return x + 1j * rng.standard_normal(shape) if complex_ else x

    u, _ = np.linalg.qr(rand(m, rank))
    v, _ = np.linalg.qr(rand(n, rank))
    s = 100 * 0.6 ** np.arange(rank)
    x = (u * s) @ v.conj().T + noise * rand(m, n)
    return x.astype(dtype)


def read_3ds_current(path: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    """The Current channel of a Nanonis .3ds grid (test-only parser of the documented layout)."""
    raw = Path(path).read_bytes()
    end = raw.index(b":HEADER_END:\r\n") + len(b":HEADER_END:\r\n")
    header = {}
    for line in raw[:end].decode("latin-1").splitlines():
        if "=" in line:
            key, value = line.split("=", 1)
            header[key.strip()] = value.strip().strip('"')
    nx, ny = (int(v) for v in header["Grid dim"].split(" x "))
    points = int(header["Points"])
    n_params = int(header["# Parameters (4 byte)"])
    channels = header["Channels"].split(";")
    record = n_params + points * len(channels)
    values = np.frombuffer(raw[end:], dtype=">f4")[: nx * ny * record].reshape(ny * nx, record)
    params = values[:, :n_params]
    current = values[:, n_params : n_params + points].astype(np.float32)
    bias = np.linspace(params[0, 0], params[0, 1], points)
    return current, bias, {"nx": nx, "ny": ny, "size": [float(v) for v in header["Grid settings"].split(";")[2:4]]}


def host_waits(gpu, fn) -> int | None:
    """Host waits of the computing thread while ``fn()`` runs on the device (the CuPy stand-in
    counts them; None on real CuPy). The block reader's prefetch thread waits for its own
    uploads, which costs the computation nothing: those are not counted."""
    with gpu.counting() as counts:
        fn()
    if counts is None:
        return None
    return len(counts.of("syncs", "MainThread"))


def assert_waits_do_not_grow_with_blocks(gpu, run, budgets=("16kB", "256kB")) -> list[int]:
    """``run(budget)`` under two memory budgets (many blocks, few blocks) waits equally often:
    nothing in the per-block loop stops the host for the device."""
    import pytest

    waits = [host_waits(gpu, lambda b=b: run(b)) for b in budgets]
    if waits[0] is None:
        pytest.skip("host waits are counted on the CuPy stand-in only")
    assert waits[0] == waits[1], f"host waits grow with the number of blocks: {waits} for budgets {budgets}"
    return waits
