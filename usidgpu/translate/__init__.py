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
Crash and full-disk safety (:mod:`usidgpu.storage.staging`): the output is written in a private
work folder beside ``out_path`` (``.OUT.h5.usidgpu-part-PID-…``) and renamed to ``out_path``
only when complete, so it never exists half-written; a failure removes the work folder, and the
work folder of a killed run is removed by the next translation to the same ``out_path`` (never
a file of the user's). An existing ``out_path`` is never overwritten. A full disk is one
:class:`~usidgpu.core.errors.FileProblem` (``no space left on device writing OUT: about N
needed, M free``), refused up front when the data cannot fit; the input is only read.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._version import __version__
from ..core.errors import FileProblem, UsidgpuError
from ..core.faults import crash_point, register
from ..storage.staging import GuardedFile, Staging, check_space, disk_full, h5_output, no_space, prepare_output

# the moments the fault-injection tests kill a translation at (tests/test_fault_convert_translate.py)
WRITE = register("translate.write", "after each block of a channel is written to the new file")
PUBLISH = register("translate.publish", "the output complete in its work folder, before the rename to OUT")
CLEANUP = register("translate.cleanup", "OUT renamed into place, before the work folder is removed")


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
        Missing, unknown, corrupt or unsupported input, an existing output, or a full disk.
        ``out_path`` appears only when complete: a failure leaves nothing behind (see the
        module's description).
    """
    src, dst = Path(in_path), Path(out_path)
    if not src.is_file():
        raise FileProblem(f"{src}: no such file")
    prepare_output(dst)  # removes what a killed translation left; refuses an existing output
    reader = find_reader(src)
    read = reader.load()
    with _one_line(src, reader):
        channels, info, metadata = read(src, **options)
    file_attrs = {
        "original_file": src.name,
        "original_path": str(src.resolve()),
        "translator": f"usidgpu.translate {__version__}",
        **info,
    }
    needed = _data_bytes(channels)
    try:
        check_space(dst, needed)
        with _one_line(src, reader), Staging(dst, "translate") as stage:
            paths = _write(stage.path, channels, file_attrs, metadata)
            crash_point(PUBLISH)
            stage.publish()
            crash_point(CLEANUP)
    except OSError as exc:
        if disk_full(exc):
            raise no_space(dst, needed) from None
        raise
    return paths[0]


@contextlib.contextmanager
def _one_line(src: Path, reader: Reader) -> Iterator[None]:
    """Turn a reader's failure on damaged input into one :class:`FileProblem` naming the file.

    usidgpu's own errors and a full disk pass unchanged (the caller reports the latter).
    """
    try:
        yield
    except UsidgpuError:
        raise
    except Exception as exc:
        if disk_full(exc):
            raise
        from ._common import reason  # the first line, printable and short (readers quote raw bytes)

        raise FileProblem(f"{src}: cannot translate this {reader.name} file ({reason(exc)})") from exc


def _write(path: Path, channels: Sequence[Any], file_attrs: dict[str, Any], metadata: Any) -> list[str]:
    """Write the channels as a new USID file at ``path`` (through a file that survives a full disk)."""
    from ._common import write_channels

    with h5_output(path) as out:
        # write_channels hands its first argument to h5py.File, which takes a file object too
        return write_channels(out, [_watched(c, out) for c in channels], file_attrs, metadata)


def _watched(channel: Any, out: GuardedFile) -> Any:
    """``channel`` whose blocks, once each is written, stop on a failed write and pass the crash
    point ``translate.write``."""
    blocks = channel.blocks

    def gen() -> Iterator[Any]:
        for block in blocks():
            yield block
            # resumed once the writer has stored the block
            out.check()
            crash_point(WRITE)

    return dataclasses.replace(channel, blocks=gen)


def _data_bytes(channels: Sequence[Any]) -> int:
    """Bytes the output takes at least: each Main dataset and its ancillaries (an index and a
    value of at least 4 bytes each per dimension), uncompressed."""
    total = 0
    for c in channels:
        n_pos, n_spec = (int(n) for n in c.shape)
        total += n_pos * n_spec * np.dtype(c.dtype).itemsize
        total += 8 * (n_pos * len(c.pos_dims) + n_spec * len(c.spec_dims))
    return total


__all__ = ["READERS", "Reader", "find_reader", "readers", "translate"]
