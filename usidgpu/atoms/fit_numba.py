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

from .fit import LAMBDA_DOWN, LAMBDA_MAX, LAMBDA_START, LAMBDA_UP, STEP_TOL, q_bounds


@njit(cache=True, fastmath=False)
def _cost_and_normal(p, yy, xx, data, weight, jtj, grad, with_normal):
    """Σ w·(f − d)² of one column; with_normal also fills JᵀJ (lower triangle) and Jᵀr.

    The 28 + 7 sums are scalars written out one by one: LLVM keeps them in registers, where a
    loop over a 7 × 7 array would load and store memory for every pixel (about twice as slow).
    """
    a, y0, x0, qa, qb, qc, b = p[0], p[1], p[2], p[3], p[4], p[5], p[6]
    s00 = s10 = s11 = s20 = s21 = s22 = s30 = s31 = s32 = s33 = s40 = s41 = s42 = s43 = 0.0
    s44 = s50 = s51 = s52 = s53 = s54 = s55 = s60 = s61 = s62 = s63 = s64 = s65 = s66 = 0.0
    g0 = g1 = g2 = g3 = g4 = g5 = g6 = 0.0
    cost = 0.0
    for k in range(data.shape[0]):
        wk = weight[k]
        if wk == 0.0:
            continue
        dx, dy = xx[k] - x0, yy[k] - y0
        g = math.exp(-(qa * dx * dx + 2.0 * qb * dx * dy + qc * dy * dy))
        r = (a * g + b - data[k]) * wk
        cost += r * r
        if not with_normal:
            continue
        ag = a * g * wk
        j0 = g * wk
        j1 = 2.0 * ag * (qb * dx + qc * dy)
        j2 = 2.0 * ag * (qa * dx + qb * dy)
        j3 = -ag * dx * dx
        j4 = -2.0 * ag * dx * dy
        j5 = -ag * dy * dy
        j6 = wk
        g0 += j0 * r
        g1 += j1 * r
        g2 += j2 * r
        g3 += j3 * r
        g4 += j4 * r
        g5 += j5 * r
        g6 += j6 * r
        s00 += j0 * j0
        s10 += j1 * j0
        s11 += j1 * j1
        s20 += j2 * j0
        s21 += j2 * j1
        s22 += j2 * j2
        s30 += j3 * j0
        s31 += j3 * j1
        s32 += j3 * j2
        s33 += j3 * j3
        s40 += j4 * j0
        s41 += j4 * j1
        s42 += j4 * j2
        s43 += j4 * j3
        s44 += j4 * j4
        s50 += j5 * j0
        s51 += j5 * j1
        s52 += j5 * j2
        s53 += j5 * j3
        s54 += j5 * j4
        s55 += j5 * j5
        s60 += j6 * j0
        s61 += j6 * j1
        s62 += j6 * j2
        s63 += j6 * j3
        s64 += j6 * j4
        s65 += j6 * j5
        s66 += j6 * j6
    if with_normal:
        jtj[0, 0] = s00
        jtj[1, 0] = s10
        jtj[1, 1] = s11
        jtj[2, 0] = s20
        jtj[2, 1] = s21
        jtj[2, 2] = s22
        jtj[3, 0] = s30
        jtj[3, 1] = s31
        jtj[3, 2] = s32
        jtj[3, 3] = s33
        jtj[4, 0] = s40
        jtj[4, 1] = s41
        jtj[4, 2] = s42
        jtj[4, 3] = s43
        jtj[4, 4] = s44
        jtj[5, 0] = s50
        jtj[5, 1] = s51
        jtj[5, 2] = s52
        jtj[5, 3] = s53
        jtj[5, 4] = s54
        jtj[5, 5] = s55
        jtj[6, 0] = s60
        jtj[6, 1] = s61
        jtj[6, 2] = s62
        jtj[6, 3] = s63
        jtj[6, 4] = s64
        jtj[6, 5] = s65
        jtj[6, 6] = s66
        grad[0] = g0
        grad[1] = g1
        grad[2] = g2
        grad[3] = g3
        grad[4] = g4
        grad[5] = g5
        grad[6] = g6
    return cost


@njit(cache=True, fastmath=False)
def _cholesky(low):
    """Cholesky factor of the 7 × 7 matrix in the lower triangle of ``low``, in place; False if
    it is not positive definite."""
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
    return True


@njit(cache=True, fastmath=False)
def _cholesky_solve(low, rhs, x):
    """x = (L·Lᵀ)⁻¹·rhs for the factor from :func:`_cholesky`."""
    for i in range(7):  # forward: L·z = rhs
        t = rhs[i]
        for k in range(i):
            t -= low[i, k] * x[k]
        x[i] = t / low[i, i]
    for i in range(6, -1, -1):  # backward: Lᵀ·x = z
        t = x[i]
        for k in range(i + 1, 7):
            t -= low[k, i] * x[k]
        x[i] = t / low[i, i]


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
    if not _cholesky(low):
        return False
    _cholesky_solve(low, grad, step)
    for i in range(7):  # the step solves for −Jᵀr (negated here: no temporary array per iteration)
        step[i] = -step[i]
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
def _lm_columns(
    yy, xx, data, weight, p, start, radius, q_lo, q_hi, max_iter, tol, ridge, converged, n_iter, cov, rms, n_pixels
):
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
            if not _damped_step(jtj, grad, lam, step):  # not solvable: a rejected step, more damping
                n_iter[n] += 1
                lam = lam * LAMBDA_UP
                if lam > LAMBDA_MAX:
                    break
                continue
            for i in range(7):
                trial[i] = pn[i] + step[i]
            _project(trial, start[n, 0], start[n, 1], radius, q_lo, q_hi)
            c_t = _cost_and_normal(trial, yy[n], xx[n], data[n], weight[n], jtj_t, grad_t, True)
            better = c_t < cost
            small_step = True
            for i in range(7):
                scale = 1.0 if i == 1 or i == 2 else 1.0 + abs(pn[i])  # centre: absolute px
                if not abs(trial[i] - pn[i]) <= STEP_TOL * scale:  # NaN is not small
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
        # JᵀJ and the cost are those of the final point: its covariance comes without another pass
        npx = 0.0
        for k in range(weight.shape[1]):
            npx += weight[n, k]
        _covariance(jtj, cost, npx, ridge, cov[n])
        rms[n] = math.sqrt(cost / max(npx, 1.0))
        n_pixels[n] = np.int64(npx)


@njit(cache=True, fastmath=False)
def _covariance(jtj, cost, npx, ridge, out):
    """s²·(JᵀJ + ridge·max diag·I)⁻¹ from the lower triangle of JᵀJ (as
    :func:`usidgpu.atoms.fit.covariance`), by Cholesky: columns of the inverse one by one."""
    dmax = 0.0
    for i in range(7):
        dmax = max(dmax, jtj[i, i])
    low = np.zeros((7, 7))
    for i in range(7):
        for j in range(i + 1):
            low[i, j] = jtj[i, j]
        low[i, i] += ridge * dmax + 1e-300
    if not _cholesky(low):  # degenerate even with the ridge: nothing is determined
        out[:, :] = np.inf
        return
    s2 = cost / max(npx - 7.0, 1.0)
    unit = np.zeros(7)
    column = np.empty(7)
    for c in range(7):
        unit[:] = 0.0
        unit[c] = 1.0
        _cholesky_solve(low, unit, column)
        for i in range(7):
            out[i, c] = column[i] * s2


@njit(cache=True, fastmath=False)
def _fit_pixel(image, start, neighbours, radius, n, row, col):
    """Whether pixel (row, col) belongs to column n's fit (as :func:`usidgpu.atoms.fit.fit_masks`)."""
    h, w = image.shape
    if row < 0 or row >= h or col < 0 or col >= w:
        return False
    own = (row - start[n, 0]) ** 2 + (col - start[n, 1]) ** 2
    if own > radius * radius:
        return False
    for k in range(neighbours.shape[1]):
        if own > (row - neighbours[n, k, 0]) ** 2 + (col - neighbours[n, k, 1]) ** 2:
            return False
    return True


@njit(parallel=True, cache=True, fastmath=False)
def _count_pixels(image, start, neighbours, radius, r_int, counts):
    for n in prange(start.shape[0]):
        r0 = np.int64(np.rint(start[n, 0])) - r_int
        c0 = np.int64(np.rint(start[n, 1])) - r_int
        c = 0
        for i in range(2 * r_int + 1):
            for j in range(2 * r_int + 1):
                if _fit_pixel(image, start, neighbours, radius, n, r0 + i, c0 + j):
                    c += 1
        counts[n] = c


@njit(parallel=True, cache=True, fastmath=False)
def _pack_pixels(image, start, neighbours, radius, r_int, q_lo, q_hi, yy, xx, data, weight, p0):
    log2 = math.log(2.0)
    for n in prange(start.shape[0]):
        r0 = np.int64(np.rint(start[n, 0])) - r_int
        c0 = np.int64(np.rint(start[n, 1])) - r_int
        k = 0
        low, high = np.inf, -np.inf
        for i in range(2 * r_int + 1):
            for j in range(2 * r_int + 1):
                row, col = r0 + i, c0 + j
                if _fit_pixel(image, start, neighbours, radius, n, row, col):
                    v = image[row, col]
                    yy[n, k], xx[n, k], data[n, k], weight[n, k] = row, col, v, 1.0
                    low, high = min(low, v), max(high, v)
                    k += 1
        # start values as usidgpu.atoms.gaussian.start_values, projected as fit._project
        amplitude = max(high - low, 1e-12)
        above = 0
        for m in range(k):
            if data[n, m] - low >= 0.5 * amplitude:
                above += 1
        q = 0.5 / (max(above, 1) / (2.0 * math.pi * log2))
        q = min(max(q, q_lo), q_hi)
        p0[n, 0], p0[n, 1], p0[n, 2] = amplitude, start[n, 0], start[n, 1]
        p0[n, 3], p0[n, 4], p0[n, 5], p0[n, 6] = q, 0.0, q, low


def prepare_numba(image, start, neighbours, radius):
    """Compiled :func:`usidgpu.atoms.fit.prepare`: the same fit pixels (in the same packed order,
    row-major within the window) and start values, without the (N, S, S) temporaries.

    Columns with fewer fit pixels than the longest row are padded with weight 0.
    """
    image = np.ascontiguousarray(image, dtype=np.float64)
    start = np.ascontiguousarray(start, dtype=np.float64)
    neighbours = np.ascontiguousarray(neighbours, dtype=np.float64)
    n = start.shape[0]
    r_int = int(math.ceil(radius))
    counts = np.zeros(n, dtype=np.int64)
    _count_pixels(image, start, neighbours, float(radius), r_int, counts)
    m = max(int(counts.max()) if n else 1, 1)
    yy, xx, data, weight = (np.zeros((n, m)) for _ in range(4))
    p0 = np.empty((n, 7))
    _pack_pixels(image, start, neighbours, float(radius), r_int, *q_bounds(radius), yy, xx, data, weight, p0)
    return yy, xx, data, weight, p0


def lm_numba(yy, xx, data, weight, p0, start, radius, max_iter, tol, ridge):
    """Compiled batched LM on NumPy arrays (see :func:`usidgpu.atoms.fit.lm_array`).

    Returns
    -------
    p, converged, n_iter, and the covariance, RMS residual and pixel count of
    :func:`usidgpu.atoms.fit.covariance`.
    """
    p = np.ascontiguousarray(p0, dtype=np.float64).copy()
    n = p.shape[0]
    converged = np.zeros(n, dtype=np.bool_)
    n_iter = np.zeros(n, dtype=np.int64)
    cov = np.empty((n, 7, 7))
    rms = np.empty(n)
    n_pixels = np.empty(n, dtype=np.int64)
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
        float(ridge),
        converged,
        n_iter,
        cov,
        rms,
        n_pixels,
    )
    return p, converged, n_iter, cov, rms, n_pixels
