"""The Levenberg–Marquardt settings and parameter bounds of the column fits: one leaf module that
the array engine (:mod:`.fit`), the compiled CPU engine (:mod:`.fit_numba`) and the CUDA
kernel's host side (:mod:`.fit_kernel`) all import, so the three run the same iteration and none
of them imports another."""

from __future__ import annotations

import numpy as np

#: Levenberg–Marquardt settings shared by the array path and the CUDA kernel.
LAMBDA_START = 1e-3
LAMBDA_DOWN = 1.0 / 3.0
LAMBDA_UP = 4.0
LAMBDA_MAX = 1e10
SIGMA_MIN = 0.2
#: A step this small ends the iteration: 1e-6 px for the centre (absolute: the coordinates are
#: large numbers), 1e-6·(1 + |value|) for the other parameters.
STEP_TOL = 1e-6
POSITION_FREE = np.array([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0])
#: Relative ridge of the covariance inverse (see :func:`usidgpu.atoms.fit.covariance`).
ERROR_RIDGE = 1e-12


def q_bounds(radius: float) -> tuple[float, float]:
    """Bounds of qa and qc: widths between 2·radius and SIGMA_MIN (q = 1/2σ²)."""
    return 0.5 / (2 * radius) ** 2, 0.5 / SIGMA_MIN**2
