"""Sample files shipped inside the package, addressable as ``sample:<name>``: real public USID
files, and one vendor file (Gatan DM3) to translate.

``sample:NAME`` works wherever a file is asked for on the command line: a vendor sample is
translated once (:func:`usidgpu.translate.samples.usid_sample`, rosettasciio) into a USID file in
the user's cache folder — ``$USIDGPU_CACHE``, else ``$XDG_CACHE_HOME/usidgpu``, else
``~/.cache/usidgpu`` — named after the sample's content hash, so a changed sample or a deleted
cache is translated again; :func:`resolve` (and so ``usidgpu.open``) finds that translation.
Samples and their translations are never written to (:func:`is_sample`).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from .core.errors import FileProblem

_DIR = Path(__file__).resolve().parent / "data"
#: Suffixes of the samples that are USID files already; every other sample is translated.
USID_SUFFIXES = (".h5", ".hdf5")

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


def cache_dir() -> Path:
    """The folder that holds the USID translations of vendor samples (module docstring)."""
    base = os.environ.get("USIDGPU_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "usidgpu"
    )
    return Path(base) / "samples"


def needs_translation(name: str) -> bool:
    """Whether the sample is a vendor file rather than a USID file."""
    return sample_path(name).suffix.lower() not in USID_SUFFIXES


def translation_path(name: str) -> Path:
    """Where the USID translation of a vendor sample lives in the cache (named after its content,
    so a changed sample gets a new translation); it may not exist yet."""
    source = sample_path(name)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    return cache_dir() / f"{source.stem}-{digest}.h5"


def resolve(path: str | os.PathLike, usid: bool = True) -> Path:
    """A file path, or the shipped sample that ``sample:<name>`` names.

    Parameters
    ----------
    path : str or path-like
    usid : bool
        For a vendor sample, its USID translation in the cache (default) or the vendor file itself
        (False: for ``usidgpu translate``).

    Raises
    ------
    FileProblem
        No such sample, or a vendor sample not translated yet:
        :func:`usidgpu.translate.samples.usid_sample` makes the translation (the command line does
        so by itself).
    """
    text = os.fspath(path)
    if not text.startswith(PREFIX):
        return Path(text)
    name = text[len(PREFIX) :]
    if not usid or not needs_translation(name):
        return sample_path(name)
    target = translation_path(name)
    if not target.is_file():
        raise FileProblem(
            f"{text} is a vendor file ({sample_path(name).name}); translate it once with "
            f"usidgpu.translate.samples.usid_sample({name!r}) — the command line does so by itself — "
            f"or usidgpu translate {text} OUT.h5"
        )
    return target


def is_sample(path: str | os.PathLike) -> bool:
    """True for shipped samples and their translations in the cache (they are never written to)."""
    try:
        parent = Path(path).resolve().parent
        return parent == _DIR or parent == cache_dir().resolve()
    except OSError:
        return False
