"""How many components to keep: a stated rule instead of a user's eye on the scree plot.

pycroscopy leaves the choice to the user. usidgpu uses the optimal hard threshold of Gavish &
Donoho ("The optimal hard threshold for singular values is 4/√3", IEEE Trans. Inf. Theory 60,
2014) for unknown noise level: keep the singular values above ``ω(β) · median(σ)``, with
``β = min(n, P) / max(n, P)`` the aspect ratio of the windows matrix (P pixels per window,
n windows) and ``ω(β) ≈ 0.56β³ − 0.95β² + 1.82β + 1.43``. The median singular value stands for
the noise level, which holds when most of the window's P dimensions are noise — true of
atomic-resolution images, whose signal lives in a few tens of components.
"""

from __future__ import annotations

import numpy as np


def omega(beta: float) -> float:
    """Gavish–Donoho's ω(β) for an unknown noise level."""
    return 0.56 * beta**3 - 0.95 * beta**2 + 1.82 * beta + 1.43


def choose_rank(singular_values: np.ndarray, n_windows: int, n_pixels: int) -> tuple[int, str]:
    """Number of components above the Gavish–Donoho threshold (at least 1), and the rule in words.

    Parameters
    ----------
    singular_values : array
        All singular values of the windows matrix (any order).
    n_windows, n_pixels : int
        Shape of the (implicit) windows matrix.
    """
    s = np.sort(np.asarray(singular_values, dtype=np.float64))[::-1]
    beta = min(n_windows, n_pixels) / max(n_windows, n_pixels)
    threshold = omega(beta) * float(np.median(s))
    k = max(1, int(np.count_nonzero(s > threshold)))
    rule = (
        f"Gavish–Donoho hard threshold: {k} singular values above ω(β)·median(σ) = "
        f"{omega(beta):.3f} × {np.median(s):.4g} (β = {beta:.3g})"
    )
    return k, rule
