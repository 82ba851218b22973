"""Igor Pro binary waves (.ibw): AFM images, image stacks and force curves, through igor2.

Why igor2: the maintained successor of the ``igor`` package (SciFiReaders' IgorIBWReader is a
wrapper around it; rosettasciio has no IBW reader). Tried on ../shared/data, SciFiReaders gives
force-curve channels the Z-sensor column as their x axis and copies the data units onto the
spatial axes of phase images; we take the wave's own scaling instead. igor2 reads the whole wave
into memory (IBW files are small: one wave per file); blocks are still written one at a time.

Quirks handled: dimension labels are NUL-terminated 32-byte fields with stale bytes after the
NUL, and igor2 0.5.15 joins them (``PhaseRetracerace``) — labels are re-read from the file and
cut at the first NUL. Igor stores one data unit for the whole wave; Asylum Research phase
channels are in degrees, so a channel whose label starts with ``Phase`` gets ``deg`` (the
wave's own unit is kept in the ``wave_units`` attribute), as pycroscopy's translator did.

Layout (Igor arrays are column-major: dim 0 is X / rows, dim 1 is Y / columns):
1-D wave → one position, spectroscopic along dim 0; 2-D wave whose columns are labelled (force
curve: Raw, Defl, ZSnsr) → one channel per column, each one position × dim 0; 2-D image →
positions (Y, X); 3-D → positions (Y, X) with the layers as channels when labelled, else as the
spectroscopic Frame dimension.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import FileProblem
from ..usid.dimension import Dimension
from ._common import Channel, axis_values, clean_label, quiet_logger, reason, row_blocks


def _labels_from_file(path: Path, bin_header: dict[str, Any], version: int) -> list[list[str]]:
    """Dimension labels of a v5 wave, each cut at its first NUL (one list per dimension)."""
    sizes = [int(s) for s in bin_header.get("dimLabelsSize", [0, 0, 0, 0])]
    if version != 5 or not any(sizes):
        return [[] for _ in range(4)]
    offset = (
        64
        + int(bin_header["wfmSize"])
        + int(bin_header["formulaSize"])
        + int(bin_header["noteSize"])
        + int(bin_header["dataEUnitsSize"])
        + int(np.sum(bin_header["dimEUnitsSize"]))
    )
    out = []
    with open(path, "rb") as fh:
        fh.seek(offset)
        for size in sizes:
            raw = fh.read(size)
            out.append([clean_label(raw[i : i + 32]) for i in range(0, len(raw), 32)])
    return out


def parse_note(note: bytes) -> dict[str, Any]:
    """The wave note's ``key:value`` lines (separated by CR) as a dict; numbers as floats."""
    text = note.decode("latin-1") if isinstance(note, bytes) else str(note)
    out: dict[str, Any] = {}
    for line in text.replace("\r\n", "\r").replace("\n", "\r").split("\r"):
        if ":" not in line:
            continue
        key, value = line.split(":", 1)
        key, value = key.strip(), value.strip()
        if not key:
            continue
        try:
            out[key] = float(value)
        except ValueError:
            out[key] = value
    return out


def _units(arr: Any) -> str:
    return b"".join(np.asarray(arr).reshape(-1)).split(b"\x00", 1)[0].decode("latin-1").strip()


def read_ibw(path: Path, **_: Any) -> tuple[list[Channel], dict, dict]:
    import igor2
    from igor2 import binarywave

    try:
        with quiet_logger("igor2"):  # igor2 logs a cut wave's whole data buffer before raising
            ibw = binarywave.load(str(path))
        wave = ibw["wave"]
        header, data = wave["wave_header"], wave["wData"]
        labels = _labels_from_file(path, wave["bin_header"], ibw["version"])
    except Exception as exc:  # igor2 raises ValueError, struct.error, TypeError... on damaged waves
        raise FileProblem(f"{path}: not a readable Igor binary wave ({reason(exc)})") from None
    if not isinstance(data, np.ndarray) or data.dtype.kind not in "biufc" or data.size == 0:
        raise FileProblem(f"{path}: the wave holds no numeric data (text waves are not supported)")
    name = clean_label(header.get("bname", b"")) or path.stem
    units = _units(header["dataUnits"]) or (wave.get("data_units") or b"").decode("latin-1").strip()
    nd = data.ndim
    dims = []
    for i in range(nd):
        dim_label = labels[i][0] if labels[i] else ""
        dunits = _units(header["dimUnits"][i])
        default = {0: "X", 1: "Y"}.get(i, f"Dim_{i}")
        if nd <= 2 and i == 0 and dunits == "s":
            default = "Time"
        dims.append(
            Dimension(
                dim_label or default,
                dunits,
                axis_values(data.shape[i], float(header["sfA"][i]), float(header["sfB"][i])),
            )
        )
    layer_labels = [lbl for lbl in (labels[nd - 1][1:] if nd >= 2 else [])]
    note = parse_note(wave.get("note", b""))
    meta = {"note": note, "wave_name": name, "wave_units": units, "igor_version": int(ibw["version"])}
    channels = []

    def channel(ch_name: str, arr: np.ndarray, pos_dims, spec_dims, pa, sa, ch_units: str) -> Channel:
        attrs = {"wave_units": units}
        return Channel(ch_name, ch_name, ch_units, pos_dims, spec_dims, arr.dtype, row_blocks(arr, pa, sa), {}, attrs)

    def layer_units(label: str) -> str:
        return "deg" if label.startswith("Phase") else units

    image = nd >= 2 and (dims[0].units == dims[1].units and dims[0].units not in ("", "s") or nd == 3)
    if nd == 1:
        channels.append(channel(name, data, [Dimension("Position", "", 1)], [dims[0]], [], [0], units))
    elif nd == 2 and not image:
        cols = [lbl or f"Column_{k}" for k, lbl in enumerate(layer_labels + [""] * data.shape[1])][: data.shape[1]]
        for k, col in enumerate(cols):
            channels.append(
                channel(col, data[:, k], [Dimension("Position", "", 1)], [dims[0]], [], [0], layer_units(col))
            )
    elif nd == 2:
        channels.append(channel(name, data, [dims[1], dims[0]], [Dimension("Frame", "", 1)], [1, 0], [], units))
    elif nd == 3 and any(layer_labels):
        cols = [lbl or f"Layer_{k}" for k, lbl in enumerate(layer_labels + [""] * data.shape[2])][: data.shape[2]]
        for k, col in enumerate(cols):
            channels.append(
                channel(
                    col, data[:, :, k], [dims[1], dims[0]], [Dimension("Frame", "", 1)], [1, 0], [], layer_units(col)
                )
            )
    elif nd == 3:
        frames = Dimension("Frame", dims[2].units, dims[2].values)
        channels.append(channel(name, data, [dims[1], dims[0]], [frames], [1, 0], [2], units))
    else:  # 4-D: positions (Y, X), spectroscopic (dim 2, dim 3)
        channels.append(channel(name, data, [dims[1], dims[0]], [dims[2], dims[3]], [1, 0], [2, 3], units))
    info = {"format": "Igor binary wave", "reader": "igor2", "reader_version": igor2.__version__}
    return channels, info, meta
