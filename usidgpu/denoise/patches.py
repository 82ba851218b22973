"""Windows of an image as rows of a patch matrix — built a bounded chunk at a time.

The patch matrix ``X`` has one row per window origin ``p = (i·sy, j·sx)`` and one column per
offset ``q = (a, b)`` inside the window (row-major, as scikit-learn's ``extract_patches_2d``
and pycroscopy flatten windows): ``X[p, q] = I[p + q]``. It is never built whole: these helpers
yield it in chunks of origin rows, which is what the general Gram path and the tests use.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from ..core.errors import InvalidInput


def origins(size: int, window: int, step: int) -> int:
    """Number of window origins along one axis: ``0, step, …`` while the window fits."""
    if window > size:
        raise InvalidInput(f"a window of {window} px does not fit an image side of {size} px")
    return (size - window) // step + 1


def patch_chunks(
    xp: Any,
    image: Any,
    window: tuple[int, int],
    step: tuple[int, int],
    rows_per_chunk: int,
    shift: float = 0.0,
) -> Iterator[tuple[int, int, Any]]:
    """Chunks of the patch matrix minus ``shift``: ``(i0, i1, X[i0·nx : i1·nx] − shift)`` for
    origin rows ``i0 … i1-1``; each a contiguous (n_windows × wy·wx) array.

    On a GPU the windows are gathered by the ``gather_windows`` CUDA kernel (one pass, shift
    fused); on the CPU — the reference — by copying a sliding-window view.
    """
    wy, wx = window
    sy, sx = step
    h, w = image.shape
    ny, nx = origins(h, wy, sy), origins(w, wx, sx)
    if xp is not np:
        yield from _gather_on_gpu(xp, image, window, step, rows_per_chunk, shift, ny, nx)
        return
    view = np.lib.stride_tricks.sliding_window_view(image, (wy, wx))[::sy, ::sx]  # (ny, nx, wy, wx)
    for i0 in range(0, ny, rows_per_chunk):
        i1 = min(i0 + rows_per_chunk, ny)
        chunk = np.array(view[i0:i1]).reshape((i1 - i0) * nx, wy * wx)  # always a writable copy
        if shift:
            chunk -= shift
        yield i0, i1, chunk


def _gather_on_gpu(
    xp: Any, image: Any, window: tuple[int, int], step: tuple[int, int], rows: int, shift: float, ny: int, nx: int
) -> Iterator[tuple[int, int, Any]]:  # pragma: no cover - GPU only
    from ..core.kernels import get_kernel

    wy, wx = window
    img = xp.ascontiguousarray(image)
    kernel = get_kernel("gather_windows.cu", "gather_windows", dtype=img.dtype)
    threads = 256
    for i0 in range(0, ny, rows):
        i1 = min(i0 + rows, ny)
        n_windows = (i1 - i0) * nx
        out = xp.empty((n_windows, wy * wx), dtype=img.dtype)
        blocks = min(65535, -(-out.size // threads))
        kernel(
            (blocks,),
            (threads,),
            (
                img,
                out,
                np.int64(img.shape[1]),
                np.int64(i0),
                np.int64(n_windows),
                np.int64(nx),
                np.int32(wy),
                np.int32(wx),
                np.int32(step[0]),
                np.int32(step[1]),
                img.dtype.type(shift),
            ),
        )
        yield i0, i1, out


def gram_by_patches(
    xp: Any, image: Any, window: tuple[int, int], step: tuple[int, int], chunk_bytes: int = 64 * 2**20
) -> Any:
    """``XᵀX`` (float64, P × P) by patch-matrix chunks, any step.

    The image is shifted by its mean first and the shift's exact contribution added back in
    float64, so float32 products do not lose the small (noise-level) eigenvalues to the large
    constant component of uncentred windows.
    """
    wy, wx = window
    n_pix = wy * wx
    mu = float(image.mean(dtype=np.float64))
    img = image if image.dtype.kind == "f" else image.astype(np.float32)
    nx = origins(image.shape[1], wx, step[1])
    rows = max(1, chunk_bytes // max(1, nx * n_pix * img.dtype.itemsize))
    g = xp.zeros((n_pix, n_pix), dtype=np.float64)
    s = xp.zeros(n_pix, dtype=np.float64)  # column sums of the shifted patch matrix
    n = 0
    for _i0, _i1, chunk in patch_chunks(xp, img, window, step, rows, shift=mu):
        g += (chunk.T @ chunk).astype(np.float64)
        s += chunk.sum(axis=0, dtype=np.float64)
        n += chunk.shape[0]
    # X = X̃ + μ·11ᵀ  ⇒  XᵀX = X̃ᵀX̃ + μ(s1ᵀ + 1sᵀ) + n·μ²·11ᵀ
    g += mu * (s[:, None] + s[None, :]) + n * mu * mu
    return g


def project_by_patches(xp: Any, image: Any, components: Any, window: tuple[int, int], step: tuple[int, int]) -> Any:
    """Scores ``X · Vᵀ`` as maps (k × ny × nx): the reference of the FFT projection."""
    wy, wx = window
    ny, nx = origins(image.shape[0], wy, step[0]), origins(image.shape[1], wx, step[1])
    out = xp.empty((components.shape[0], ny * nx), dtype=np.float64)
    for i0, i1, chunk in patch_chunks(xp, image.astype(np.float64), window, step, 64):
        out[:, i0 * nx : i1 * nx] = components @ chunk.T
    return out.reshape(components.shape[0], ny, nx)


def overlap_add_by_patches(
    xp: Any, patches: Any, shape: tuple[int, int], window: tuple[int, int], step: tuple[int, int]
) -> tuple[Any, Any]:
    """Sum of windows placed at their origins and the coverage count (the reference overlap-add).

    ``patches`` is (ny·nx × wy·wx), rows in origin order. Returns ``(sum, count)``.
    """
    wy, wx = window
    sy, sx = step
    ny, nx = origins(shape[0], wy, sy), origins(shape[1], wx, sx)
    total = xp.zeros(shape, dtype=np.float64)
    count = xp.zeros(shape, dtype=np.int64)
    tiles = patches.reshape(ny, nx, wy, wx)
    for a in range(wy):  # one strided add per in-window offset: exact, no per-window Python loop
        for b in range(wx):
            total[a : a + ny * sy : sy, b : b + nx * sx : sx] += tiles[:, :, a, b]
            count[a : a + ny * sy : sy, b : b + nx * sx : sx] += 1
    return total, count
