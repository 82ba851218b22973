"""The threshold line of the k rule, for the scree plot of a windowed SVD."""

from __future__ import annotations

import numpy as np


def threshold_of(result) -> float | None:
    """The Gavish–Donoho threshold the result's k was chosen by (None when k was given)."""
    if not str(getattr(result, "k_rule", "")).startswith("Gavish"):
        return None
    from ..denoise.rank import omega

    s = np.asarray(result.singular_values, dtype=np.float64)
    n_windows = int(getattr(result, "n_windows", 0)) or 1
    n_frames = 1 if np.ndim(result.raw) == 2 else np.shape(result.raw)[0]
    p = result.window[0] * result.window[1]
    n = n_windows * n_frames
    beta = min(n, p) / max(n, p)
    return float(omega(beta) * np.median(s))
