"""Gatan DigitalMicrograph (.dm3/.dm4) and FEI/Thermo Velox EMD (.emd), through rosettasciio.

Why rosettasciio: it is HyperSpy's maintained I/O library, reads DM3 *and* DM4 and every Velox
EMD variant, returns calibrated axes (scale, offset, units) and the complete tag tree
(``original_metadata``), and reads lazily (dask over a memory map), so large files are written
block by block. SciFiReaders' DMReader (tried on ../shared/data) loses the spatial calibration of
spectrum images (x/y become unit-less "frame" axes) and loads everything into memory.

Axis roles: an axis in energy units (eV, keV) or the single signal axis of a 1-D signal is
spectroscopic; for a 2-D signal (an image) the navigation axes (frames) are spectroscopic and the
image axes are the positions (Y, X). rosettasciio 0.15 flags the energy axis of DM3 spectrum
images (stored energy-slowest, (E, y, x)) as navigation — the energy-units rule puts it back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import FileProblem
from ..usid.dimension import Dimension
from ._common import Channel, axis_values, clean_label, reason, row_blocks

ENERGY_UNITS = {"ev", "kev", "mev"}


def _dimension(axis: dict[str, Any]) -> Dimension:
    name = clean_label(axis.get("name") or "") or f"Dim_{axis.get('index_in_array', 0)}"
    units = clean_label(axis.get("units") or "")
    if units in ("<undefined>", "<auto>"):
        units = ""
    if "axis" in axis and axis["axis"] is not None:
        values = np.asarray(axis["axis"], dtype=np.float64)
    else:
        values = axis_values(int(axis["size"]), float(axis.get("scale", 1.0)), float(axis.get("offset", 0.0)))
    if name.lower() in ("x", "y"):
        name = name.upper()
    return Dimension(name, units, values)


def axis_roles(axes: list[dict[str, Any]]) -> tuple[list[int], list[int]]:
    """(position axes, spectroscopic axes) of an rsciio signal, each slowest first."""
    n = len(axes)
    energy = [i for i, a in enumerate(axes) if str(a.get("units") or "").strip().lower() in ENERGY_UNITS]
    signal = [i for i, a in enumerate(axes) if not a.get("navigate", False)]
    if energy:
        spec = energy
    elif len(signal) == 1:
        spec = signal
    elif len(signal) >= 2:
        spec = [i for i in range(n) if i not in signal]
    else:
        spec = [n - 1] if n else []
    pos = [i for i in range(n) if i not in spec]
    return pos, spec


def signal_to_channel(sig: dict[str, Any], default_name: str) -> Channel:
    data = sig["data"]
    axes = sorted(sig["axes"], key=lambda a: a.get("index_in_array", 0))
    for i, a in enumerate(axes):  # single spectra from rsciio may lack index_in_array
        a.setdefault("index_in_array", i)
    if len(axes) != data.ndim:
        raise FileProblem(f"{default_name}: {len(axes)} axes for data of shape {data.shape}")
    pos_axes, spec_axes = axis_roles(axes)
    pos_dims = [_dimension(axes[i]) for i in pos_axes] or [Dimension("Position", "", 1)]
    spec_dims = [_dimension(axes[i]) for i in spec_axes] or [Dimension("Frame", "", 1)]
    md = sig.get("metadata") or {}
    general, signal = md.get("General", {}), md.get("Signal", {})
    title = clean_label(general.get("title", "")) or default_name
    quantity = clean_label(signal.get("quantity", "")) or "Intensity"
    units = ""
    if "(" in quantity and quantity.endswith(")"):  # HyperSpy style "Intensity (counts)"
        quantity, units = quantity[:-1].split("(", 1)
        quantity, units = quantity.strip(), units.strip()
    attrs = {"title": title, "signal_type": signal.get("signal_type", "")}
    return Channel(
        title,
        quantity,
        units,
        pos_dims,
        spec_dims,
        np.dtype(data.dtype),
        row_blocks(data, pos_axes, spec_axes),
        metadata={"metadata": md, "original_metadata": sig.get("original_metadata") or {}},
        attrs=attrs,
    )


def _read(module: Any, path: Path, fmt: str, **kwargs: Any) -> tuple[list[Channel], dict, dict]:
    import rsciio

    try:
        signals = module.file_reader(str(path), lazy=True, **kwargs)
    except Exception as exc:  # rsciio raises many types on damaged files
        raise FileProblem(f"{path}: not a readable {fmt} file ({reason(exc)})") from None
    channels = []
    for i, sig in enumerate(signals):
        if np.dtype(sig["data"].dtype).fields is not None and sig["data"].dtype.names == ("R", "G", "B"):
            raise FileProblem(f"{path}: RGB images are not supported")
        channels.append(signal_to_channel(sig, f"signal_{i}"))
    info = {"format": fmt, "reader": "rosettasciio", "reader_version": rsciio.__version__}
    return channels, info, {}


def read_dm(path: Path, **_: Any) -> tuple[list[Channel], dict, dict]:
    import rsciio.digitalmicrograph as dm

    return _read(dm, path, "Gatan DigitalMicrograph")


def read_emd(path: Path, **_: Any) -> tuple[list[Channel], dict, dict]:
    import rsciio.emd as emd

    # one spectrum image, not one per frame; without select_type every stream is returned
    return _read(emd, path, "EMD", sum_frames=True)
