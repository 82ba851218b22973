"""Writing a windowed-SVD result as ``<Source>-Windowed_SVD_NNN``."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..core.errors import InvalidInput
from ..usid.dimension import Dimension
from ..usid.results import result_source, write_result


def write_windowed(result: Any, main: Any = None, output: str | os.PathLike | None = None) -> str:
    """``Cleaned_Image`` and ``Removed_Noise`` (Main, shaped like the source), ``Components``
    (Main: "Component" × window pixels "Window Y", "Window X"), ``Singular_Values`` (all),
    parameters as attributes. Returns the group path."""
    main = result_source(result, main)
    frames = result.cleaned if result.cleaned.ndim == 3 else result.cleaned[None]
    n_frames, h, w = frames.shape
    if (h * w, n_frames) != main.shape:
        raise InvalidInput(
            f"this result has {n_frames} frame(s) of {h}×{w} pixels but {main.name} has shape {main.shape}"
        )
    noise = result.noise if result.noise.ndim == 3 else result.noise[None]
    k, wy, wx = result.components.shape
    comp = Dimension("Component", "a. u.", k)
    window_dims = [Dimension("Window Y", "px", wy), Dimension("Window X", "px", wx)]

    def as_main(stack: np.ndarray) -> np.ndarray:
        # rows are pixels in C order (slow, fast) = the image flattened; columns are frames
        return stack.reshape(n_frames, h * w).T.astype(np.float32)

    def fill(writer: Any) -> None:
        writer.write_main("Cleaned_Image", as_main(frames), main.quantity, main.units, main, main)
        writer.write_main("Removed_Noise", as_main(noise), main.quantity, main.units, main, main)
        writer.write_main(
            "Components",
            result.components.reshape(k, wy * wx).astype(np.float32),
            "Eigen-window",
            "a. u.",
            [comp],
            window_dims,
        )
        writer.group.create_dataset("Singular_Values", data=np.asarray(result.singular_values, dtype=np.float64))
        if result.scores is not None:
            writer.group.create_dataset("Scores", data=result.scores.astype(np.float32))

    # the tiles follow the free memory (see windowed_svd): recorded, not part of the run's identity
    scores = 0 if result.scores is None else result.scores.size
    written = 4 * (2 * frames.size + result.components.size + scores)  # float32 datasets
    return write_result(result, main, output, fill, conditions=("tiles", "tile_edge"), size_hint=written)
