"""The elliptical 2-D Gaussian column model, its analytic Jacobian, and starting values.

Reported parameters (:data:`PARAMETERS`): ``f(y, x) = A·exp(−u²/2σx² − v²/2σy²) + B`` with
``u = cos θ·(x − x0) + sin θ·(y − y0)``, ``v = −sin θ·(x − x0) + cos θ·(y − y0)``; σx ≥ σy is the
width along the major axis, at angle θ ∈ [−π/2, π/2) from the +x (column) direction towards +y
(row).

Fitted parameters: the same Gaussian with its exponent as a quadratic form,
``E = qa·dx² + 2·qb·dx·dy + qc·dy²``, so ``f = A·exp(−E) + B``. The exponent is linear in
(qa, qb, qc), which keeps the least-squares problem well conditioned for round columns, where θ
is undetermined and an (σx, σy, θ) fit wanders between equivalent angles for tens of iterations.
:func:`to_physical` converts at the end (errors by the delta method). One body for NumPy and
CuPy; the numba engine and the CUDA kernel evaluate exactly these formulas.
"""

from __future__ import annotations

from typing import Any

import numpy as np

PARAMETERS = ("amplitude", "y", "x", "sigma_x", "sigma_y", "theta", "background")
AMPLITUDE, Y, X, SIGMA_X, SIGMA_Y, THETA, BACKGROUND = range(7)
#: Fitted (internal) parameters: the quadratic-form coefficients take the places of σx, σy, θ.
FIT_PARAMETERS = ("amplitude", "y", "x", "qa", "qb", "qc", "background")
QA, QB, QC = SIGMA_X, SIGMA_Y, THETA


def model_and_jacobian(xp: Any, p: Any, yy: Any, xx: Any, jacobian: bool = True) -> tuple[Any, Any]:
    """Model values and ∂f/∂q (fitted parameters) at the window pixels of every column.

    Parameters
    ----------
    xp : module
    p : (N, 7) fitted parameters (:data:`FIT_PARAMETERS`)
    yy, xx : (N, M) pixel coordinates (rows, columns)
    jacobian : bool

    Returns
    -------
    f : (N, M)
    J : (N, 7, M) or None
        Parameter-major, so that the normal equations ``J·Jᵀ`` are one batched matrix product.
    """
    a, y0, x0, qa, qb, qc, b = (p[:, i : i + 1] for i in range(7))
    dx, dy = xx - x0, yy - y0
    g = xp.exp(-(qa * dx * dx + 2 * qb * dx * dy + qc * dy * dy))
    f = a * g + b
    if not jacobian:
        return f, None
    ag = a * g
    jac = xp.empty((f.shape[0], 7, f.shape[1]), dtype=f.dtype)
    jac[:, AMPLITUDE] = g
    jac[:, Y] = 2 * ag * (qb * dx + qc * dy)
    jac[:, X] = 2 * ag * (qa * dx + qb * dy)
    jac[:, QA] = -ag * dx * dx
    jac[:, QB] = -2 * ag * dx * dy
    jac[:, QC] = -ag * dy * dy
    jac[:, BACKGROUND] = 1.0
    return f, jac


def start_values(xp: Any, values: Any, weight: Any, positions: Any) -> Any:
    """Starting (fitted) parameters from the data.

    Background: the window's low end; amplitude: the peak above it; the given positions; a round
    width from the area above half the peak (π·2 ln 2·σ² for a Gaussian) — unlike a second
    moment, not inflated by the pedestal of a dim column's background and noise.
    """
    big = xp.where(weight > 0, values, xp.inf)
    small = xp.where(weight > 0, values, -xp.inf)
    background = big.min(axis=1)
    amplitude = xp.maximum(small.max(axis=1) - background, 1e-12)
    above = ((values - background[:, None]) >= 0.5 * amplitude[:, None]) & (weight > 0)
    sigma2 = xp.maximum(above.sum(axis=1), 1) / (2 * np.pi * np.log(2))
    p = xp.empty((values.shape[0], 7), dtype=np.float64)
    p[:, AMPLITUDE] = amplitude
    p[:, Y] = positions[:, 0]
    p[:, X] = positions[:, 1]
    p[:, QA] = 0.5 / sigma2
    p[:, QB] = 0.0
    p[:, QC] = 0.5 / sigma2
    p[:, BACKGROUND] = background
    return p


def widths_and_angle(xp: Any, qa: Any, qb: Any, qc: Any) -> tuple[Any, Any, Any]:
    """(σx ≥ σy, θ) of the quadratic form ``qa·dx² + 2qb·dx·dy + qc·dy²``."""
    mean = 0.5 * (qa + qc)
    half = xp.sqrt((0.5 * (qa - qc)) ** 2 + qb * qb)
    sigma_major = 1.0 / xp.sqrt(2 * xp.maximum(mean - half, 1e-300))
    sigma_minor = 1.0 / xp.sqrt(2 * (mean + half))
    # atan2(2qb, qa − qc)/2 points along the stiffer (minor) axis; the major axis is ⟂ to it
    theta = 0.5 * xp.arctan2(2 * qb, qa - qc) + np.pi / 2
    theta = (theta + np.pi / 2) % np.pi - np.pi / 2
    return sigma_major, sigma_minor, theta


def quadratic_form(sigma_x: Any, sigma_y: Any, theta: Any) -> tuple[Any, Any, Any]:
    """(qa, qb, qc) of widths σx (along θ), σy and angle θ — the inverse of :func:`widths_and_angle`."""
    c, s = np.cos(theta), np.sin(theta)
    ix, iy = 0.5 / np.square(sigma_x), 0.5 / np.square(sigma_y)
    return c * c * ix + s * s * iy, c * s * (ix - iy), s * s * ix + c * c * iy


def to_physical(xp: Any, p: Any, cov: Any) -> tuple[Any, Any]:
    """Reported parameters and their one-sigma errors from the fitted ones and their covariance.

    The errors of (σx, σy, θ) come from the delta method, T·C·Tᵀ with T the Jacobian of
    :func:`widths_and_angle` by central differences; θ of a nearly round column gets a huge error.
    """
    out = p.copy()
    out[:, SIGMA_X], out[:, SIGMA_Y], out[:, THETA] = widths_and_angle(xp, p[:, QA], p[:, QB], p[:, QC])
    n = p.shape[0]
    t = xp.zeros((n, 7, 7))
    for i in (AMPLITUDE, Y, X, BACKGROUND):
        t[:, i, i] = 1.0
    q = p[:, [QA, QB, QC]]
    for j in range(3):
        h = 1e-6 * xp.maximum(xp.abs(q).max(axis=1), 1e-12)
        hi, lo = q.copy(), q.copy()
        hi[:, j] += h
        lo[:, j] -= h
        up = widths_and_angle(xp, hi[:, 0], hi[:, 1], hi[:, 2])
        dn = widths_and_angle(xp, lo[:, 0], lo[:, 1], lo[:, 2])
        for i, (u, d) in enumerate(zip(up, dn)):
            diff = u - d
            if i == 2:  # θ wraps at ±π/2
                diff = (diff + np.pi / 2) % np.pi - np.pi / 2
            t[:, SIGMA_X + i, QA + j] = diff / (2 * h)
    cov_out = t @ cov @ t.transpose(0, 2, 1)
    errors = xp.sqrt(xp.maximum(xp.diagonal(cov_out, axis1=1, axis2=2), 0))
    return out, errors
