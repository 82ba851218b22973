"""Vendor and plain formats → USID HDF5.

>>> import usidgpu.translate as T
>>> T.translate("spectrum_image.dm3", "spectrum_image.h5")
'/Measurement_000/Channel_000/Raw_Data'

Each format family has a small module naming the reader library it uses and why:
:mod:`.rsciio_formats` (DM3/DM4, EMD; rosettasciio), :mod:`.igor` (IBW; igor2),
:mod:`.nanonis` (SXM, 3DS; nanonispy2), :mod:`.nsid` (NSID HDF5; SciFiReaders/sidpy),
:mod:`.images` (NPY; NumPy, TIFF; tifffile).

Output layout: ``/Measurement_000`` (attributes ``original_file``, ``format``, ``reader``,
``reader_version``, ``translator``; ``Metadata`` group with what all channels share) and one
``Channel_NNN`` group per signal/channel holding the Main dataset ``Raw_Data`` and a ``Metadata``
group (instrument metadata flattened into attributes, nested keys joined by ``.``).
The output is written to a temporary file next to ``out_path`` and renamed at the end, so a
failure never leaves a partial file behind.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._version import __version__
from ..core.errors import FileProblem, UsidgpuError


@dataclass(frozen=True)
class Reader:
    name: str
    suffixes: tuple[str, ...]
    library: str
    module: str
    function: str
    description: str

    def load(self) -> Callable[..., Any]:
        import importlib

        try:
            mod = importlib.import_module(f"{__name__}.{self.module}")
            return getattr(mod, self.function)
        except ImportError as exc:
            raise FileProblem(
                f"reading {self.name} files needs {self.library} (pip install 'usidgpu[vendor]'): {exc}"
            ) from None


READERS = (
    Reader("DM3/DM4", (".dm3", ".dm4"), "rosettasciio", "rsciio_formats", "read_dm",
           "Gatan DigitalMicrograph images, stacks, spectra, spectrum images"),
    Reader("EMD", (".emd",), "rosettasciio", "rsciio_formats", "read_emd",
           "FEI/Thermo Velox EMD images, spectra, spectrum images"),
    Reader("IBW", (".ibw",), "igor2", "igor", "read_ibw", "Igor binary wave: AFM images, image stacks, force curves"),
    Reader("SXM", (".sxm",), "nanonispy2", "nanonis", "read_sxm", "Nanonis scan images"),
    Reader("3DS", (".3ds",), "nanonispy2", "nanonis", "read_3ds", "Nanonis grid spectroscopy"),
    Reader("NSID", (".h5", ".hdf5", ".hf5"), "SciFiReaders", "nsid", "read_nsid", "NSID HDF5 written by pyNSID/sidpy"),
    Reader("TIFF", (".tif", ".tiff"), "tifffile", "images", "read_tiff", "TIFF images and stacks"),
    Reader("NPY", (".npy",), "numpy", "images", "read_npy", "NumPy arrays: image, stack, spectrum (image)"),
)  # fmt: skip


def readers() -> list[dict[str, Any]]:
    """The supported formats: name, file suffixes, reader library, description."""
    return [
        {"format": r.name, "suffixes": list(r.suffixes), "library": r.library, "description": r.description}
        for r in READERS
    ]


def _sniff(path: Path) -> str | None:
    """A suffix from the file's first bytes (for files without a known suffix)."""
    with open(path, "rb") as fh:
        head = fh.read(512)
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return ".h5"
    if head.startswith(b"\x93NUMPY"):
        return ".npy"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return ".tif"
    if head[:4] in (b"\x00\x00\x00\x03", b"\x00\x00\x00\x04"):
        return ".dm3" if head[3] == 3 else ".dm4"
    if head.startswith(b":NANONIS_VERSION:"):
        return ".sxm"
    if head.startswith(b"Grid dim="):
        return ".3ds"
    return None


def find_reader(path: str | os.PathLike) -> Reader:
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in {s for r in READERS for s in r.suffixes}:
        suffix = _sniff(p) if p.is_file() else None
    for r in READERS:
        if suffix in r.suffixes:
            return r
    known = ", ".join(s for r in READERS for s in r.suffixes)
    raise FileProblem(f"{p}: unknown format {p.suffix or '(no suffix)'!r}; usidgpu translate reads {known}")


def translate(in_path: str | os.PathLike, out_path: str | os.PathLike, **options: Any) -> str:
    """Translate a vendor file into a new USID HDF5 file.

    Parameters
    ----------
    in_path : path
        Input file (format from the suffix, or from the first bytes when the suffix is unknown).
    out_path : path
        New HDF5 file; an existing file is never overwritten.
    **options
        Reader options: ``layout="stack"|"spectrum_image"`` for 3-D ``.npy`` arrays.

    Returns
    -------
    str
        HDF5 path of the first Main dataset written.

    Raises
    ------
    FileProblem
        Missing, unknown, corrupt or unsupported input, or an existing output. Nothing is left
        at ``out_path`` after a failure.
    """
    src, dst = Path(in_path), Path(out_path)
    if not src.is_file():
        raise FileProblem(f"{src}: no such file")
    if dst.exists() or dst.is_symlink():
        raise FileProblem(f"{dst}: already exists; refusing to overwrite it")
    reader = find_reader(src)
    read = reader.load()
    from ._common import write_channels

    tmp = dst.with_name(f".{dst.name}.part-{os.getpid()}")
    try:
        channels, info, metadata = read(src, **options)
        file_attrs = {
            "original_file": src.name,
            "original_path": str(src.resolve()),
            "translator": f"usidgpu.translate {__version__}",
            **info,
        }
        paths = write_channels(str(tmp), channels, file_attrs, metadata)
        if dst.exists():
            raise FileProblem(f"{dst}: appeared while translating; refusing to overwrite it")
        os.replace(tmp, dst)
    except UsidgpuError:
        tmp.unlink(missing_ok=True)
        raise
    except Exception as exc:  # a reader failing on damaged input: one line naming the file
        tmp.unlink(missing_ok=True)
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise FileProblem(f"{src}: cannot translate this {reader.name} file ({text})") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return paths[0]


__all__ = ["READERS", "Reader", "find_reader", "readers", "translate"]
