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
