"""Shipped vendor samples as USID files: translated once into the user's cache.

``sample:NAME`` names a file shipped with usidgpu (:mod:`usidgpu.samples`). A vendor sample (the
Gatan DM3 survey) is translated here on first use into the cache folder of
:func:`usidgpu.samples.cache_dir`, so every command that reads USID files takes it; later uses
find the translation (:func:`usidgpu.samples.resolve`).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from ..core.errors import FileProblem
from ..samples import PREFIX, needs_translation, resolve, sample_path, translation_path
from . import translate  # the package's translate() function


def usid_sample(name: str) -> Path:
    """A shipped sample as a USID file: the file itself, or its translation (made on first use).

    Raises
    ------
    FileProblem
        No such sample, or the translation failed (e.g. a full disk).
    MissingDependency
        The sample's reader (rosettasciio for DM3) is not installed.
    """
    if not needs_translation(name):
        return sample_path(name)
    target = translation_path(name)
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            translate(sample_path(name), target)
    except FileProblem:
        if not target.is_file():  # else another process translated it meanwhile: use that
            raise
    return target


def resolve_usid(path: str | os.PathLike) -> Path:
    """A file path, or the USID file of the sample that ``sample:NAME`` names (translated on first use)."""
    text = os.fspath(path)
    if text.startswith(PREFIX):
        return usid_sample(text[len(PREFIX) :])
    return resolve(text)
