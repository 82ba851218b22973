"""The compiled CPU engine of :func:`usidgpu.atoms.refine`: the batched LM, one column per loop
iteration, columns in parallel (``numba.prange``).

It runs exactly the iteration of :func:`usidgpu.atoms.fit.lm_array` — same model, start values,
Marquardt scaling, bounds, damping updates and stopping tests — but without the (N, 7, M)
temporaries: each column accumulates its 7 × 7 normal equations pixel by pixel and solves them by
Cholesky in registers. The array engine is its oracle in the tests.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from .fit import LAMBDA_DOWN, LAMBDA_MAX, LAMBDA_START, LAMBDA_UP, q_bounds


@njit(cache=True, fastmath=False)
def _cost_and_normal(p, yy, xx, data, weight, jtj, grad, with_normal):
    """Σ w·(f − d)² of one column; with_normal also fills JᵀJ (lower triangle) and Jᵀr."""
    a, y0, x0, qa, qb, qc, b = p[0], p[1], p[2], p[3], p[4], p[5], p[6]
    if with_normal:
        for i in range(7):
            grad[i] = 0.0
            for j in range(7):
                jtj[i, j] = 0.0
    jac = np.empty(7)
    cost = 0.0
    for k in range(data.shape[0]):
        wk = weight[k]
        if wk == 0.0:
            continue
        dx, dy = xx[k] - x0, yy[k] - y0
        g = math.exp(-(qa * dx * dx + 2.0 * qb * dx * dy + qc * dy * dy))
        r = (a * g + b - data[k]) * wk
        cost += r * r
        if with_normal:
            ag = a * g * wk
            jac[0] = g * wk
            jac[1] = 2.0 * ag * (qb * dx + qc * dy)
            jac[2] = 2.0 * ag * (qa * dx + qb * dy)
            jac[3] = -ag * dx * dx
            jac[4] = -2.0 * ag * dx * dy
            jac[5] = -ag * dy * dy
            jac[6] = wk
            for i in range(7):
                grad[i] += jac[i] * r
                for j in range(i + 1):
                    jtj[i, j] += jac[i] * jac[j]
    return cost


@njit(cache=True, fastmath=False)
def _damped_step(jtj, grad, lam, step):
    """Solve (JᵀJ + λ·diag(scale))·step = −Jᵀr by Cholesky; False if not positive definite."""
    dmax = 0.0
    for i in range(7):
        dmax = max(dmax, jtj[i, i])
    low = np.empty((7, 7))
    for i in range(7):
        for j in range(i + 1):
            low[i, j] = jtj[i, j]
        low[i, i] += lam * (jtj[i, i] + 1e-9 * dmax + 1e-30)
    for j in range(7):
        d = low[j, j]
        for k in range(j):
            d -= low[j, k] * low[j, k]
        if not d > 0.0:
            return False
        d = math.sqrt(d)
        low[j, j] = d
        for i in range(j + 1, 7):
            t = low[i, j]
            for k in range(j):
                t -= low[i, k] * low[j, k]
            low[i, j] = t / d
    for i in range(7):  # forward: L·z = −g
        t = -grad[i]
        for k in range(i):
            t -= low[i, k] * step[k]
        step[i] = t / low[i, i]
    for i in range(6, -1, -1):  # backward: Lᵀ·step = z
        t = step[i]
        for k in range(i + 1, 7):
            t -= low[k, i] * step[k]
        step[i] = t / low[i, i]
    return True


@njit(cache=True, fastmath=False)
def _project(p, y_start, x_start, radius, q_lo, q_hi):
    p[0] = max(p[0], 1e-12)
    p[1] = min(max(p[1], y_start - radius), y_start + radius)
    p[2] = min(max(p[2], x_start - radius), x_start + radius)
    p[3] = min(max(p[3], q_lo), q_hi)
    p[5] = min(max(p[5], q_lo), q_hi)
    limit = 0.999 * math.sqrt(p[3] * p[5])
    p[4] = min(max(p[4], -limit), limit)


@njit(parallel=True, cache=True, fastmath=False)
def _lm_columns(yy, xx, data, weight, p, start, radius, q_lo, q_hi, max_iter, tol, converged, n_iter):
    for n in prange(data.shape[0]):
        jtj = np.empty((7, 7))
        grad = np.empty(7)
        jtj_t = np.empty((7, 7))
        grad_t = np.empty(7)
        step = np.empty(7)
        trial = np.empty(7)
        pn = p[n]
        cost = _cost_and_normal(pn, yy[n], xx[n], data[n], weight[n], jtj, grad, True)
        lam = LAMBDA_START
        for _ in range(max_iter):
            ok = _damped_step(jtj, grad, lam, step)
            if ok:
                for i in range(7):
                    trial[i] = pn[i] + step[i]
            else:  # not solvable: keep the point, the step counts as rejected
                for i in range(7):
                    trial[i] = pn[i]
            _project(trial, start[n, 0], start[n, 1], radius, q_lo, q_hi)
            c_t = _cost_and_normal(trial, yy[n], xx[n], data[n], weight[n], jtj_t, grad_t, True)
            better = c_t < cost
            small_step = True
            for i in range(7):
                if abs(trial[i] - pn[i]) > 1e-6 * (1.0 + abs(pn[i])):
                    small_step = False
            small_gain = better and (cost - c_t) <= tol * cost
            n_iter[n] += 1
            if better:
                for i in range(7):
                    pn[i] = trial[i]
                    grad[i] = grad_t[i]
                    for j in range(7):
                        jtj[i, j] = jtj_t[i, j]
                cost = c_t
                lam = max(lam * LAMBDA_DOWN, 1e-12)
            else:
                lam = lam * LAMBDA_UP
            if small_gain or small_step or lam > LAMBDA_MAX:
                converged[n] = small_gain or small_step
                break


@njit(parallel=True, cache=True, fastmath=False)
def _covariance_columns(yy, xx, data, weight, p, ridge, cov_out, rms, n_pixels):
    """s²·(JᵀJ + ridge·max diag·I)⁻¹ per column (as :func:`usidgpu.atoms.fit.covariance`)."""
    for n in prange(data.shape[0]):
        jtj = np.empty((7, 7))
        grad = np.empty(7)
        cost = _cost_and_normal(p[n], yy[n], xx[n], data[n], weight[n], jtj, grad, True)
        npx = 0.0
        for k in range(weight.shape[1]):
            npx += weight[n, k]
        for i in range(7):
            for j in range(i):
                jtj[j, i] = jtj[i, j]
        dmax = 0.0
        for i in range(7):
            dmax = max(dmax, jtj[i, i])
        for i in range(7):
            jtj[i, i] += ridge * dmax + 1e-300
        cov = np.linalg.inv(jtj)
        s2 = cost / max(npx - 7.0, 1.0)
        for i in range(7):
            for j in range(7):
                cov_out[n, i, j] = cov[i, j] * s2
        rms[n] = math.sqrt(cost / max(npx, 1.0))
        n_pixels[n] = int(npx)


def covariance_numba(yy, xx, data, weight, p, ridge):
    """Compiled :func:`usidgpu.atoms.fit.covariance`."""
    n = p.shape[0]
    cov = np.empty((n, 7, 7))
    rms = np.empty(n)
    n_pixels = np.empty(n, dtype=np.int64)
    _covariance_columns(yy, xx, data, weight, np.ascontiguousarray(p), float(ridge), cov, rms, n_pixels)
    return cov, rms, n_pixels


def lm_numba(yy, xx, data, weight, p0, start, radius, max_iter, tol):
    """Compiled batched LM on NumPy arrays (see :func:`usidgpu.atoms.fit.lm_array`)."""
    p = np.ascontiguousarray(p0, dtype=np.float64).copy()
    n = p.shape[0]
    converged = np.zeros(n, dtype=np.bool_)
    n_iter = np.zeros(n, dtype=np.int64)
    _lm_columns(
        np.ascontiguousarray(yy, dtype=np.float64),
        np.ascontiguousarray(xx, dtype=np.float64),
        np.ascontiguousarray(data, dtype=np.float64),
        np.ascontiguousarray(weight, dtype=np.float64),
        p,
        np.ascontiguousarray(start, dtype=np.float64),
        float(radius),
        *q_bounds(radius),
        int(max_iter),
        float(tol),
        converged,
        n_iter,
    )
    return p, converged, n_iter
