"""Writing figures to disk."""

from __future__ import annotations

import os
from pathlib import Path

from ..core.errors import InvalidInput

FORMATS = ("png", "pdf", "svg")


def save_figure(fig, path: str | os.PathLike, dpi: int = 150) -> Path:
    """Write ``fig`` as PNG, PDF or SVG (by the extension of ``path``), creating its folders.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
    path : str or os.PathLike
        Ends in ``.png``, ``.pdf`` or ``.svg`` (any case).
    dpi : int
        Resolution of the PNG (and of images embedded in PDF/SVG). The saved area is the
        figure's content plus a small margin (``bbox_inches="tight"``), so no label is cut.

    Returns
    -------
    pathlib.Path
        The file written.

    Raises
    ------
    ValueError
        For another extension.
    """
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise InvalidInput(f"cannot tell the format of {str(path)!r}: use a .png, .pdf or .svg file name")
    fig = getattr(fig, "figure", fig)  # a SubFigure saves its whole figure
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, format=fmt, bbox_inches="tight", pad_inches=0.05)
    return path
