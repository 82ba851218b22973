"""Sample files shipped inside the package, addressable as ``sample:<name>``: real public USID
files, and one vendor file (Gatan DM3) to translate."""

from __future__ import annotations

import os
from pathlib import Path

from .core.errors import FileProblem

_DIR = Path(__file__).resolve().parent / "data"

#: name -> (file, one-line description)
SAMPLES = {
    "stem-image": ("simulated_STEM_Image.h5", "simulated HAADF-STEM image of atomic columns, 256 × 256 (pycroscopy)"),
    "force-curve": ("AFM_Force_Curve.h5", "one AFM force curve, deflection vs Z, 2045 points (pyUSID)"),
    "survey-dm3": (
        "DMReader_Image_SI-Survey.dm3",
        "atomic-resolution STEM survey image, Gatan DM3 (a vendor file: usidgpu translate), 512 × 512",
    ),
}
PREFIX = "sample:"


def sample_path(name: str) -> Path:
    """Path of a shipped sample file (see :data:`SAMPLES`)."""
    try:
        return _DIR / SAMPLES[name][0]
    except KeyError:
        raise FileProblem(f"{PREFIX}{name}: no such sample; choose one of {', '.join(SAMPLES)}") from None


def resolve(path: str | os.PathLike) -> Path:
    """A file path, or the shipped sample that ``sample:<name>`` names."""
    text = os.fspath(path)
    if text.startswith(PREFIX):
        return sample_path(text[len(PREFIX) :])
    return Path(text)


def is_sample(path: str | os.PathLike) -> bool:
    """True for files inside the shipped sample folder (they are never written to)."""
    try:
        return Path(path).resolve().parent == _DIR
    except OSError:
        return False
