"""Plain image files (TIFF, PNG, JPEG, NumPy .npy) as arrays, and as USID files.

Pillow (a dependency of matplotlib) reads TIFF — multi-page stacks and 16-bit or float pages
included — PNG and JPEG; colour images are converted to luminance. ``.npy`` files are loaded
with NumPy (memory-mapped). Anything else is refused with a one-line error.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .core.errors import FileProblem
from .usid.dimension import Dimension

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".npy")


def is_image_file(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def read_image(path: str | os.PathLike) -> np.ndarray:
    """An image (H, W) or a stack (frames, H, W) from a plain image file.

    Raises
    ------
    FileProblem
        Missing, unreadable or not an image.
    """
    p = Path(path)
    if not p.is_file():
        raise FileProblem(f"{p}: no such file")
    if p.suffix.lower() == ".npy":
        try:
            arr = np.load(p, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise FileProblem(f"{p}: not a readable .npy file ({exc})") from None
        if arr.ndim not in (2, 3):
            raise FileProblem(f"{p}: expected an image (H, W) or stack (frames, H, W), got shape {arr.shape}")
        return np.asarray(arr)
    from PIL import Image, ImageSequence, UnidentifiedImageError

    try:
        with Image.open(p) as img:
            pages = [np.asarray(_gray(page)) for page in ImageSequence.Iterator(img)]
    except (UnidentifiedImageError, OSError) as exc:
        raise FileProblem(f"{p}: not a readable image ({exc})") from None
    if len({page.shape for page in pages}) != 1:
        raise FileProblem(f"{p}: the pages of this stack have different sizes")
    return pages[0] if len(pages) == 1 else np.stack(pages)


def _gray(page):
    if page.mode in ("RGB", "RGBA", "P", "LA", "CMYK", "YCbCr"):
        return page.convert("F")  # luminance
    return page


def image_to_usid(
    image: np.ndarray,
    path: str | os.PathLike,
    name: str = "Raw_Data",
    quantity: str = "Intensity",
    units: str = "a. u.",
) -> str:
    """Write an image or stack as a USID Main dataset (positions Y × X in pixels, frames as the
    spectroscopic dimension) in a new file; returns the dataset path."""
    import h5py

    from .usid.write import write_main

    arr = np.asarray(image)
    stack = arr[None] if arr.ndim == 2 else arr
    n, h, w = stack.shape
    with h5py.File(path, "w-") as f:
        m = write_main(
            f.create_group("Measurement_000/Channel_000"),
            name,
            stack.reshape(n, h * w).T,
            quantity,
            units,
            [Dimension("Y", "px", h), Dimension("X", "px", w)],
            [Dimension("Frame", "", n)],
        )
        return m.name
