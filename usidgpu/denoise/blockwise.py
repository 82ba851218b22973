"""Windowed SVD denoising (:func:`usidgpu.windowed_svd`, step 1) as a
:class:`~usidgpu.parallel.Process`: bands of image rows with halos, on any executor.

Blocks are bands of whole image rows. The window Gram matrix is a tree reduction of one exact
FFT Gram per band, counting the windows whose origins lie in the band (which reads
``window − 1`` rows below it); the top-k eigen-windows come from it once; then every band is
rebuilt from a read that reaches ``window − 1`` rows above and below it, so each output pixel
sees every window that covers it — the same numbers as the in-process function.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..core.arrays import asnumpy
from ..core.errors import InvalidInput
from ..core.linalg import top_eigh
from ..core.memory import memory_budget
from ..parallel.process import Output, Process
from ..usid.dimension import Dimension
from .gram import gram_step1
from .rank import choose_rank
from .rebuild import coverage, project_and_rebuild
from .windowed import BYTES_PER_TILE_PIXEL


def _add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a + b


class WindowedSVD(Process):
    """Windowed SVD of the image(s) of a Main dataset (positions: the pixels; each spectroscopic
    point a frame sharing one basis), block-wise.

    Parameters
    ----------
    source : MainDataset
        Two position dimensions on a full grid.
    window : int
        Window edge in pixels.
    k : int, optional
        Components kept (default: the Gavish–Donoho rule, as :func:`usidgpu.windowed_svd`).
    **run_options
        See :class:`~usidgpu.parallel.Process`.
    """

    tool = "Windowed_SVD"

    def __init__(self, source: Any, window: int, k: int | None = None, **run_options: Any) -> None:
        super().__init__(source, **run_options)
        if len(source.pos_dims) != 2 or not source.pos_layout.is_grid:
            raise InvalidInput(f"{source.name}: not an image (two position dimensions on a full grid)")
        self.h, self.w = (int(n) for n in source.pos_layout.slow_to_fast_sizes)
        self.window = int(window)
        if not 1 <= self.window <= min(self.h, self.w):
            raise InvalidInput(f"a {self.window}-px window does not fit the {self.h}×{self.w} image")
        self.k_given = None if k is None else int(k)
        self.n_frames = source.n_spectral
        self.quantity, self.units = source.quantity, source.units
        self.components: np.ndarray | None = None
        self.singular_values: np.ndarray | None = None
        self.k: int | None = None
        self.k_rule = ""

    def parameters(self) -> dict[str, Any]:
        return {"window": self.window, "k": self.k_given}

    def plan_blocks(self) -> list[tuple[int, int]]:
        """Bands of whole image rows; their height from the memory budget (the FFT work of a band
        with its halo, about BYTES_PER_TILE_PIXEL per pixel), or from ``rows_per_block``."""
        if self._rows_per_block:
            rows = max(1, int(self._rows_per_block) // self.w)
        else:
            per_row = self.w * BYTES_PER_TILE_PIXEL * max(self.n_frames, 1)
            rows = max(1, memory_budget(self.budget, self.device) // per_row - 2 * (self.window - 1))
        return [(y * self.w, min(y + rows, self.h) * self.w) for y in range(0, self.h, rows)]

    def read_span(self, start: int, stop: int) -> tuple[int, int]:
        y0, y1 = start // self.w, stop // self.w
        return max(0, y0 - self.window + 1) * self.w, min(self.h, y1 + self.window - 1) * self.w

    def _frames(self, block: Any, span: tuple[int, int]) -> Any:
        """(frames, rows, W) float64 images of the rows read."""
        rows = (span[1] - span[0]) // self.w
        return block.astype(np.float64).T.reshape(self.n_frames, rows, self.w)

    def _gram(self, block: Any, xp: Any, rows: tuple[int, int], span: tuple[int, int]) -> Any:
        """Gram matrix of the windows whose origins lie in this band's rows."""
        y0, y1 = rows[0] // self.w, rows[1] // self.w
        top = span[0] // self.w
        last_origin = min(y1, self.h - self.window + 1)  # exclusive
        if last_origin <= y0:
            return np.zeros((self.window**2,) * 2)
        frames = self._frames(block, span)[:, y0 - top : last_origin - top + self.window - 1]
        return sum(gram_step1(xp, frame, (self.window, self.window)) for frame in frames)

    def prepare(self) -> None:
        if self.components is not None:
            return
        import numpy

        g = self.reduce(self._gram, _add, with_rows=True)
        if not numpy.isfinite(g).all():
            # a NaN or infinite pixel makes the Gram matrix so; the eigensolver would fail obscurely
            raise InvalidInput(
                f"{self.source.name} contains NaN or infinite values; denoising needs finite data "
                "(clean or mask them first)"
            )
        vals = numpy.linalg.eigvalsh(g)[::-1]
        self.singular_values = numpy.sqrt(numpy.maximum(vals, 0))
        n_windows = self.n_frames * (self.h - self.window + 1) * (self.w - self.window + 1)
        if self.k_given is None:
            self.k, self.k_rule = choose_rank(self.singular_values, n_windows, self.window**2)
        else:
            self.k, self.k_rule = self.k_given, "given"
        _vals, vecs = top_eigh(numpy, g, self.k)
        comps = vecs.T
        # the sign convention of usidgpu.windowed_svd: each eigen-window's largest pixel positive
        pivots = comps[numpy.arange(self.k), numpy.argmax(numpy.abs(comps), axis=1)]
        self.components = comps * numpy.where(pivots < 0, -1.0, 1.0)[:, None]

    def outputs(self) -> dict[str, Output]:
        return {
            "Cleaned_Image": Output(self.n_frames, self.quantity, self.units, np.float32, "source"),
            "Removed_Noise": Output(self.n_frames, self.quantity, self.units, np.float32, "source"),
        }

    def compute_block(self, block: Any, xp: Any, rows: tuple[int, int], span: tuple[int, int]) -> dict[str, Any]:
        win = (self.window, self.window)
        y0, y1 = rows[0] // self.w, rows[1] // self.w
        top = span[0] // self.w
        comps = xp.asarray(self.components)
        cov = coverage(xp, (self.h, self.w), win, (1, 1))[y0:y1]
        frames = self._frames(xp.asarray(block), span)
        cleaned = xp.empty((self.n_frames, y1 - y0, self.w))
        for f, frame in enumerate(frames):
            rec, _ = project_and_rebuild(xp, frame, comps, win, (1, 1))
            raw = frame[y0 - top : y1 - top]
            part = rec[y0 - top : y1 - top]
            cleaned[f] = xp.where(cov > 0, part / xp.maximum(cov, 1), raw)
        raw = frames[:, y0 - top : y1 - top]
        as_rows = lambda a: a.reshape(self.n_frames, -1).T  # noqa: E731  (frames, rows, W) → (pixels, frames)
        return {"Cleaned_Image": as_rows(cleaned), "Removed_Noise": as_rows(raw - cleaned)}

    def compute(self, block: Any, xp: Any) -> dict[str, Any]:
        raise RuntimeError("WindowedSVD computes with its halo: see compute_block")

    def finalize(self, writer: Any) -> None:
        assert self.components is not None, "finalize runs after the components were found"
        k, n_pix = self.components.shape
        writer.write_main(
            "Components",
            asnumpy(self.components).astype(np.float32),
            "Eigen-window",
            "a. u.",
            [Dimension("Component", "a. u.", k)],
            [Dimension("Window Y", "px", self.window), Dimension("Window X", "px", self.window)],
        )
        writer.group.create_dataset("Singular_Values", data=np.asarray(self.singular_values, dtype=np.float64))
        writer.group.attrs["num_components"] = int(k)
        writer.group.attrs["k_rule"] = self.k_rule


def windowed_svd_blockwise(source: Any, window: int, k: int | None = None, **run_options: Any) -> str:
    """Run :class:`WindowedSVD` and return the results group's path."""
    return WindowedSVD(source, window, k, **run_options).run()
