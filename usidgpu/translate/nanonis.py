"""Nanonis scans (.sxm) and grid spectroscopy (.3ds), through nanonispy2.

Why nanonispy2: the maintained fork of nanonispy (the parser SciFiReaders vendors), small and
dependency-free; it returns native arrays plus the parsed header. SciFiReaders' readers wrap the
same parser but invent pixel-index axes labelled ``nm`` for grids and fill missing header fields
with made-up defaults. nanonispy2 1.2.0 refuses .3ds headers lacking ``Delay before measuring
(s)`` / ``Start time`` / ``End time`` / ``Comment`` (older Nanonis versions); we pass neutral
overrides for exactly the missing keys and leave them out of the stored metadata.

SXM orientation: nanonispy2 returns images as recorded; like SciFiReaders and pySPM we flip
up-scans vertically and backward scans horizontally, so all four images of a channel share one
(Y, X) grid (recorded in each channel's ``flipped`` attribute). Data are big-endian float32 in
the file and stored as native float32. Grid (.3ds) positions are the grid's own axes (0 … size,
metres); its centre and rotation angle are in the metadata, the measured X/Y/Z of every point in
the ``Parameters`` channel.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import FileProblem
from ..usid.dimension import Dimension
from ._common import Channel, reason, row_blocks

GRID_OPTIONAL = {"Delay before measuring (s)": 0.0, "Start time": "", "End time": "", "Comment": ""}


def _split_name(text: str) -> tuple[str, str]:
    """``'Current (A)'`` → (``'Current'``, ``'A'``)."""
    m = re.match(r"^(.*?)\s*\(([^()]*)\)\s*$", text)
    return (m.group(1).strip(), m.group(2).strip()) if m else (text.strip(), "")


def _fail(path: Path, what: str, exc: Exception) -> FileProblem:
    return FileProblem(f"{path}: not a readable {what} ({reason(exc)})")


def sxm_image(signal: np.ndarray, scan_dir: str, direction: str) -> np.ndarray:
    """An SXM image in the stored orientation (up-scans flipped vertically, backward horizontally)."""
    img = signal
    if scan_dir == "up":
        img = img[::-1]
    if direction == "backward":
        img = img[:, ::-1]
    return img


def read_sxm(path: Path, **_: Any) -> tuple[list[Channel], dict, dict]:
    import nanonispy2

    try:
        scan = nanonispy2.read.Scan(str(path))
        header, signals = scan.header, scan.signals
        n_x, n_y = (int(v) for v in header["scan_pixels"])
        w, h = (float(v) for v in header["scan_range"])
    except Exception as exc:
        raise _fail(path, "Nanonis .sxm file", exc) from None
    scan_dir = str(header.get("scan_dir", "")).strip()
    units = {}
    info = header.get("data_info")
    if isinstance(info, dict):
        for name, unit in zip(info.get("Name", ()), info.get("Unit", ())):
            units[name] = unit
    pos = [Dimension("Y", "m", np.arange(n_y) * h / n_y), Dimension("X", "m", np.arange(n_x) * w / n_x)]
    channels = []
    for name, dirs in signals.items():
        for direction, img in dirs.items():
            if img.shape != (n_y, n_x):
                raise FileProblem(f"{path}: channel {name} {direction} has shape {img.shape}, not {(n_y, n_x)}")
            oriented = sxm_image(img, scan_dir, direction)
            flipped = ("vertical " if scan_dir == "up" else "") + ("horizontal" if direction == "backward" else "")
            channels.append(
                Channel(
                    f"{name} {direction}",
                    name,
                    units.get(name, ""),
                    pos,
                    [Dimension("Frame", "", 1)],
                    np.dtype(np.float32),
                    row_blocks(oriented, [0, 1], []),
                    {},
                    {"direction": direction, "scan_dir": scan_dir, "flipped": flipped.strip() or "none"},
                )
            )
    return channels, {"format": "Nanonis SXM", "reader": "nanonispy2", "reader_version": _version()}, {"header": header}


def _version() -> str:
    from importlib.metadata import version

    return version("nanonispy2")


def read_3ds(path: Path, **_: Any) -> tuple[list[Channel], dict, dict]:
    import nanonispy2

    try:
        with open(path, "rb") as fh:
            raw_header = fh.read(64 * 1024).split(b":HEADER_END:", 1)[0].decode("latin-1")
        present = {line.split("=", 1)[0].strip() for line in raw_header.splitlines() if "=" in line}
        override = {k: v for k, v in GRID_OPTIONAL.items() if k not in present}
        grid = nanonispy2.read.Grid(str(path), header_override=override or None)
        header, signals = grid.header, grid.signals
        n_x, n_y = (int(v) for v in header["dim_px"])
        size_x, size_y = (float(v) for v in header["size_xy"])
        per_point = int(header["num_parameters"]) + int(header["num_sweep_signal"]) * int(header["num_channels"])
    except Exception as exc:
        raise _fail(path, "Nanonis .3ds grid file", exc) from None
    # nanonispy2 reads the data with np.fromfile and resizes: a truncated file would come back
    # zero-filled without a word, so the size the header announces is checked here
    expected = n_x * n_y * per_point * 4
    have = Path(path).stat().st_size - int(grid.byte_offset)  # the data begin after the header
    if have < expected:
        raise FileProblem(
            f"{path}: truncated Nanonis .3ds grid file: the header announces {n_y}×{n_x} points of "
            f"{per_point} values ({expected} bytes of data), the file holds {max(have, 0)}"
        )
    sweep_name, sweep_units = _split_name(str(header.get("sweep_signal", "Sweep")))
    sweep = np.asarray(signals["sweep_signal"], dtype=np.float64)
    pos = [
        Dimension("Y", "m", np.linspace(0, size_y, n_y) if n_y > 1 else [0.0]),
        Dimension("X", "m", np.linspace(0, size_x, n_x) if n_x > 1 else [0.0]),
    ]
    channels = []
    for key, arr in signals.items():
        if key in ("sweep_signal", "params", "topo"):
            continue
        quantity, units = _split_name(key)
        if arr.shape[:2] != (n_y, n_x):
            raise FileProblem(f"{path}: channel {key} has shape {arr.shape}")
        channels.append(
            Channel(
                quantity,
                quantity,
                units,
                pos,
                [Dimension(sweep_name, sweep_units, sweep)],
                np.dtype(np.float32),
                row_blocks(arr, [0, 1], [2]),
            )
        )
    params = signals.get("params")
    if params is not None and params.ndim == 3:
        names = list(header.get("fixed_parameters", [])) + list(header.get("experimental_parameters", []))
        channels.append(
            Channel(
                "Parameters",
                "Parameters",
                "",
                pos,
                [Dimension("Parameter", "", params.shape[2])],
                np.dtype(np.float32),
                row_blocks(params, [0, 1], [2]),
                {},
                {"parameter_names": names[: params.shape[2]]},
            )
        )
    invented = {"measure_delay", "start_time", "end_time", "comment"} if override else set()
    meta = {k: v for k, v in header.items() if k not in invented}
    meta["overridden_missing_keys"] = sorted(override)
    return channels, {"format": "Nanonis 3DS", "reader": "nanonispy2", "reader_version": _version()}, {"header": meta}
