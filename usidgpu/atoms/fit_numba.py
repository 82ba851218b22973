"""The compiled CPU engine of :func:`usidgpu.atoms.refine`: each column's whole fit — finding
the neighbours that clip its disk, gathering its pixels, start values, Levenberg–Marquardt,
covariance, reported parameters — in one compiled function, columns in parallel over the cores
(``numba.prange``), with no per-pixel arrays of the whole batch.

It runs exactly the iteration of :func:`usidgpu.atoms.fit.lm_array` — same fit pixels, model,
start values, Marquardt scaling, bounds, damping updates and stopping tests — and each column
accumulates its 7 × 7 normal equations pixel by pixel and solves them by Cholesky. The array
engine is its oracle in the tests.

Why it is written out by hand (see :func:`_normal_equations`): one pass over a column's ~100
pixels is most of the cost of a fit, six or seven passes per column. Written as a scalar loop
with ``math.exp`` (a libm call LLVM cannot vectorize) a pass took about 30 ns per pixel; with an
exponential made of plain arithmetic (:func:`exp_nonpositive`), the sums allowed to be
reassociated and the pixels padded to whole SIMD vectors, LLVM turns it into SIMD code over
4–8 pixels at a time: about 5 ns per pixel on an AVX-512 CPU (AMD Zen 4). Nothing else (NumPy,
SciPy) fuses the Gaussian, its Jacobian and the normal equations into one pass.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import get_num_threads, njit, prange, types
from numba.extending import intrinsic

from .fit_settings import LAMBDA_DOWN, LAMBDA_MAX, LAMBDA_START, LAMBDA_UP, STEP_TOL, q_bounds

#: Reassociation lets LLVM split the pixel sums into SIMD lanes (the order of additions changes
#: the last bits only); contraction lets it fuse multiply-adds. No "finite-math" flags: the
#: stopping tests must still see NaN.
SUMS = {"reassoc", "contract"}
#: Pixel buffers are padded (with weight 0) to a multiple of this: the widest SIMD (AVX-512) lanes.
LANES = 8


@intrinsic
def _float_from_bits(typingctx, bits):
    """The float64 whose bit pattern is the int64 ``bits`` (an LLVM bitcast, so it vectorizes)."""
    if bits != types.int64:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(types.int64), codegen


_LOG2E = 1.4426950408889634
_LN2_HI = 6.93147180369123816490e-01  # ln 2 split so that n·_LN2_HI is exact (Cody–Waite)
_LN2_LO = 1.90821492927058770002e-10
_C2, _C3, _C4, _C5, _C6, _C7, _C8, _C9, _C10, _C11, _C12, _C13 = (1.0 / math.factorial(i) for i in range(2, 14))


@njit(cache=True, fastmath={"contract"})
def exp_nonpositive(x):
    """exp(x) for x ≤ 0 to 2 ulp, in arithmetic LLVM can vectorize (``math.exp`` is a libm call
    it cannot); below −708 it returns exp(−708) ≈ 3e−308; NaN stays NaN.

    exp(x) = 2ⁿ·exp(r) with |r| ≤ ln 2 / 2; exp(r) by its Taylor polynomial of degree 13
    (remainder < 5e-18) in Estrin's scheme — a dependency chain of 5 multiply-adds instead of
    Horner's 13, which is what bounds a SIMD loop around it; 2ⁿ assembled from its exponent bits.
    Only multiply-add contraction is allowed here (it makes the range reduction more exact, not
    less); no reassociation. LLVM inlines it into the callers and keeps these flags.
    """
    x = -708.0 if x < -708.0 else x  # written so that NaN passes through (max() may drop it)
    n = math.floor(x * _LOG2E + 0.5)
    r = (x - n * _LN2_HI) - n * _LN2_LO
    r2 = r * r
    r4 = r2 * r2
    r8 = r4 * r4
    q0 = (1.0 + r) + (_C2 + _C3 * r) * r2
    q1 = (_C4 + _C5 * r) + (_C6 + _C7 * r) * r2
    q2 = (_C8 + _C9 * r) + (_C10 + _C11 * r) * r2
    q3 = _C12 + _C13 * r
    p = (q0 + q1 * r4) + (q2 + q3 * r4) * r8
    return p * _float_from_bits((np.int64(n) + 1023) << 52)


@njit(cache=True, fastmath=SUMS)
def _normal_equations(p, cy, cx, yy, xx, data, weight, m, jtj, grad):
    """Σ (f − d)² over a column's m pixels, and its JᵀJ (lower triangle) and Jᵀr.

    The buffers hold the m pixels and then weight-0 padding up to a multiple of 8 (:data:`LANES`):
    the SIMD loop then never ends in a scalar remainder (a scalar exp is ten times slower per
    pixel), and padding adds exactly zero to every sum.

    Pixel coordinates (yy, xx) are relative to the column's window centre (cy, cx), so dx and dy
    are small numbers without cancellation. The 28 + 7 sums are scalars written out one by one:
    LLVM keeps them in (vector) registers, where a loop over a 7 × 7 array would go through
    memory for every pixel.
    """
    a, y0, x0, qa, qb, qc, b = p[0], p[1] - cy, p[2] - cx, p[3], p[4], p[5], p[6]
    s00 = s10 = s11 = s20 = s21 = s22 = s30 = s31 = s32 = s33 = s40 = s41 = s42 = s43 = 0.0
    s44 = s50 = s51 = s52 = s53 = s54 = s55 = s60 = s61 = s62 = s63 = s64 = s65 = 0.0
    g0 = g1 = g2 = g3 = g4 = g5 = g6 = 0.0
    cost = 0.0
    for k in range(-(-m // LANES) * LANES):
        dx, dy = xx[k] - x0, yy[k] - y0
        wk = weight[k]
        g = exp_nonpositive(-(qa * dx * dx + 2.0 * qb * dx * dy + qc * dy * dy)) * wk
        r = (a * g + b - data[k]) * wk
        cost += r * r
        ag = a * g
        j0 = g
        j1 = 2.0 * ag * (qb * dx + qc * dy)
        j2 = 2.0 * ag * (qa * dx + qb * dy)
        j3 = -ag * dx * dx
        j4 = -2.0 * ag * dx * dy
        j5 = -ag * dy * dy
        g0 += j0 * r
        g1 += j1 * r
        g2 += j2 * r
        g3 += j3 * r
        g4 += j4 * r
        g5 += j5 * r
        g6 += r
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
        s60 += j0
        s61 += j1
        s62 += j2
        s63 += j3
        s64 += j4
        s65 += j5
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
    jtj[6, 6] = float(m)  # ∂f/∂background = 1 on every pixel
    grad[0] = g0
    grad[1] = g1
    grad[2] = g2
    grad[3] = g3
    grad[4] = g4
    grad[5] = g5
    grad[6] = g6
    return cost


@njit(cache=True, fastmath=SUMS)
def _normal_equations_weighted(p, cy, cx, yy, xx, data, weight, m, jtj, grad):
    """:func:`_normal_equations` with any non-negative weights ``w`` (the square roots of the
    pixels' inverse variances): residuals (f − d)·w, Jacobian rows times w. Also returns the
    unweighted Σ (f − d)².

    A function of its own, not a generalization of the other: the 0/1 weights of the
    single-column fit let that pass skip eight multiplications per pixel, 3 % of its time.
    """
    a, y0, x0, qa, qb, qc, b = p[0], p[1] - cy, p[2] - cx, p[3], p[4], p[5], p[6]
    s00 = s10 = s11 = s20 = s21 = s22 = s30 = s31 = s32 = s33 = s40 = s41 = s42 = s43 = 0.0
    s44 = s50 = s51 = s52 = s53 = s54 = s55 = s60 = s61 = s62 = s63 = s64 = s65 = s66 = 0.0
    g0 = g1 = g2 = g3 = g4 = g5 = g6 = 0.0
    cost = raw = 0.0
    for k in range(-(-m // LANES) * LANES):
        dx, dy = xx[k] - x0, yy[k] - y0
        wk = weight[k]
        e = exp_nonpositive(-(qa * dx * dx + 2.0 * qb * dx * dy + qc * dy * dy))
        d = (a * e + b - data[k]) * (wk > 0.0)  # padding (weight 0) adds nothing to either sum
        r = d * wk
        raw += d * d
        cost += r * r
        g = e * wk
        ag = a * g
        j0 = g
        j1 = 2.0 * ag * (qb * dx + qc * dy)
        j2 = 2.0 * ag * (qa * dx + qb * dy)
        j3 = -ag * dx * dx
        j4 = -2.0 * ag * dx * dy
        j5 = -ag * dy * dy
        g0 += j0 * r
        g1 += j1 * r
        g2 += j2 * r
        g3 += j3 * r
        g4 += j4 * r
        g5 += j5 * r
        g6 += wk * r
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
        s60 += j0 * wk
        s61 += j1 * wk
        s62 += j2 * wk
        s63 += j3 * wk
        s64 += j4 * wk
        s65 += j5 * wk
        s66 += wk * wk
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
    return cost, raw


@njit(cache=True, fastmath=False)
def _cholesky(low, rdiag):
    """Cholesky factor of the 7 × 7 matrix in the lower triangle of ``low``, in place, and the
    reciprocals of its diagonal in ``rdiag`` (the solves then multiply: a division is a long
    latency in their dependency chains); False if it is not positive definite."""
    for j in range(7):
        d = low[j, j]
        for k in range(j):
            d -= low[j, k] * low[j, k]
        if not d > 0.0:
            return False
        d = math.sqrt(d)
        low[j, j] = d
        rd = 1.0 / d
        rdiag[j] = rd
        for i in range(j + 1, 7):
            t = low[i, j]
            for k in range(j):
                t -= low[i, k] * low[j, k]
            low[i, j] = t * rd
    return True


@njit(cache=True, fastmath=False)
def _cholesky_solve(low, rdiag, rhs, x):
    """x = (L·Lᵀ)⁻¹·rhs for the factor from :func:`_cholesky`."""
    for i in range(7):  # forward: L·z = rhs
        t = rhs[i]
        for k in range(i):
            t -= low[i, k] * x[k]
        x[i] = t * rdiag[i]
    for i in range(6, -1, -1):  # backward: Lᵀ·x = z
        t = x[i]
        for k in range(i + 1, 7):
            t -= low[k, i] * x[k]
        x[i] = t * rdiag[i]


@njit(cache=True, fastmath=False)
def _damped_step(jtj, grad, lam, low, rdiag, step):
    """Solve (JᵀJ + λ·diag(scale))·step = −Jᵀr by Cholesky (``low`` is scratch); False if not
    positive definite."""
    dmax = 0.0
    for i in range(7):
        dmax = max(dmax, jtj[i, i])
    for i in range(7):
        for j in range(i + 1):
            low[i, j] = jtj[i, j]
        low[i, i] += lam * (jtj[i, i] + 1e-9 * dmax + 1e-30)
    if not _cholesky(low, rdiag):
        return False
    _cholesky_solve(low, rdiag, grad, step)
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


@njit(cache=True, fastmath=False)
def _covariance(jtj, cost, npx, ridge, low, rdiag, inv, out):
    """s²·(JᵀJ + ridge·max diag·I)⁻¹ from the lower triangle of JᵀJ (as
    :func:`usidgpu.atoms.fit.covariance`): Cholesky factor L, its triangular inverse, then
    L⁻ᵀ·L⁻¹ (``low`` and ``inv`` are 7 × 7 scratch)."""
    dmax = 0.0
    for i in range(7):
        dmax = max(dmax, jtj[i, i])
    for i in range(7):
        for j in range(i + 1):
            low[i, j] = jtj[i, j]
        low[i, i] += ridge * dmax + 1e-300
    if not _cholesky(low, rdiag):  # degenerate even with the ridge: nothing is determined
        out[:, :] = np.inf
        return
    s2 = cost / max(npx - 7.0, 1.0)
    for i in range(7):
        inv[i, i] = rdiag[i]
        for j in range(i):
            t = 0.0
            for k in range(j, i):
                t += low[i, k] * inv[k, j]
            inv[i, j] = -t * inv[i, i]
    for i in range(7):
        for j in range(i + 1):
            t = 0.0
            for k in range(i, 7):
                t += inv[k, i] * inv[k, j]
            out[i, j] = out[j, i] = t * s2


@njit(cache=True, fastmath=False)
def _column_grid(start, reach):
    """Columns sorted into square cells (a counting sort): cells at least ``reach`` wide, and
    about one column per cell where the columns are sparser. Returns the grid origin, cell
    side, shape, each cell's first entry in ``order`` (cells row-major, one past the end last)
    and the column indices in cell order."""
    y0, x0 = start[:, 0].min(), start[:, 1].min()
    y1, x1 = start[:, 0].max(), start[:, 1].max()
    cell = max(reach, math.sqrt((y1 - y0 + 1.0) * (x1 - x0 + 1.0) / start.shape[0]))
    ny = np.int64((y1 - y0) // cell) + 1
    nx = np.int64((x1 - x0) // cell) + 1
    first = np.zeros(ny * nx + 1, dtype=np.int64)
    cells = np.empty(start.shape[0], dtype=np.int64)
    for n in range(start.shape[0]):
        cells[n] = np.int64((start[n, 0] - y0) // cell) * nx + np.int64((start[n, 1] - x0) // cell)
        first[cells[n] + 1] += 1
    for c in range(ny * nx):
        first[c + 1] += first[c]
    fill = first[:-1].copy()
    order = np.empty(start.shape[0], dtype=np.int64)
    for n in range(start.shape[0]):
        order[fill[cells[n]]] = n
        fill[cells[n]] += 1
    return y0, x0, cell, ny, nx, first, order


@njit(cache=True, fastmath=False)
def _near_columns(start, n, reach, y0, x0, cell, ny, nx, first, order, near):
    """The other columns within ``reach`` of column n into ``near``; their number. The grid's
    cells are at least ``reach`` wide, so they lie in the 3 × 3 cells around n's."""
    cy = np.int64((start[n, 0] - y0) // cell)
    cx = np.int64((start[n, 1] - x0) // cell)
    k = 0
    for gy in range(max(cy - 1, 0), min(cy + 2, ny)):
        for gx in range(max(cx - 1, 0), min(cx + 2, nx)):
            c = gy * nx + gx
            for e in range(first[c], first[c + 1]):
                other = order[e]
                dy, dx = start[other, 0] - start[n, 0], start[other, 1] - start[n, 1]
                if other != n and dy * dy + dx * dx <= reach * reach:
                    near[k, 0], near[k, 1] = start[other, 0], start[other, 1]
                    k += 1
    return k


@njit(cache=True, fastmath=False)
def _grid_crowd(first, ny, nx):
    """The most columns in any 3 × 3 block of cells: a bound on a neighbour list's length."""
    crowd = 1
    for gy in range(ny):
        for gx in range(nx):
            count = 0
            for c in range(max(gy - 1, 0), min(gy + 2, ny)):
                count += first[c * nx + min(gx + 2, nx)] - first[c * nx + max(gx - 1, 0)]
            crowd = max(crowd, count)
    return crowd


@njit(parallel=True, cache=True, fastmath=False)
def _neighbour_lists(start, reach, grid, crowd, fill):
    """With an empty ``fill``: the number of other columns within ``reach`` of each column and
    the squared distance to the nearest of them; otherwise their positions go into ``fill``
    (N, K, 2)."""
    y0, x0, cell, ny, nx, first, order = grid
    n_columns = start.shape[0]
    counts = np.zeros(n_columns, dtype=np.int64)
    closest = np.full(n_columns, np.inf)
    chunk = 1024
    for c in prange((n_columns + chunk - 1) // chunk):
        near = np.empty((crowd, 2))
        for n in range(c * chunk, min((c + 1) * chunk, n_columns)):
            target = fill[n] if fill.shape[0] else near
            k = _near_columns(start, n, reach, y0, x0, cell, ny, nx, first, order, target)
            counts[n] = k
            for j in range(k, fill.shape[1] if fill.shape[0] else 0):  # padding: never clips
                target[j, 0] = target[j, 1] = 1e9
            for j in range(k):
                d2 = (target[j, 0] - start[n, 0]) ** 2 + (target[j, 1] - start[n, 1]) ** 2
                closest[n] = min(closest[n], d2)
    return counts, closest


def neighbour_lists(start, radius):
    """Every other column within 2·radius of each column, as :func:`usidgpu.atoms.fit._neighbours`
    finds them with a KD-tree: here on a grid of cells, counted and then filled in parallel.

    Returns
    -------
    neighbours : (N, K, 2), padded with far-away points
    closest : float
        The smallest distance between two columns within 2·radius (inf if none).
    """
    start = np.ascontiguousarray(start, dtype=np.float64)
    if not len(start):
        return np.full((0, 1, 2), 1e9), np.inf
    reach = 2.0 * float(radius)
    grid = _column_grid(start, reach)
    crowd = _grid_crowd(grid[5], grid[3], grid[4])
    counts, closest = _neighbour_lists(start, reach, grid, crowd, np.empty((0, 1, 2)))
    out = np.empty((len(start), max(int(counts.max()), 1), 2))  # filled, padding too, in parallel
    _neighbour_lists(start, reach, grid, crowd, out)
    return out, float(np.sqrt(closest.min()))


@njit(cache=True, fastmath=False)
def _gather(image, start, near, radius, r_int, n, yy, xx, data, weight):
    """Column n's fit pixels (as :func:`usidgpu.atoms.fit.fit_masks`: inside the image, within
    the radius of its start, not closer to one of its neighbours ``near`` (K, 2), whose far-away
    padding never clips), row-major, coordinates relative to the window centre, weight 1; then
    weight-0 padding to a multiple of :data:`LANES`. Returns their number and the centre."""
    h, w = image.shape
    sy, sx = start[n, 0], start[n, 1]
    cy = np.int64(np.rint(sy))
    cx = np.int64(np.rint(sx))
    m = 0
    for i in range(-r_int, r_int + 1):
        row = cy + i
        if row < 0 or row >= h:
            continue
        for j in range(-r_int, r_int + 1):
            col = cx + j
            if col < 0 or col >= w:
                continue
            own = (row - sy) ** 2 + (col - sx) ** 2
            if own > radius * radius:
                continue
            nearer = False
            for k in range(near.shape[0]):
                if own > (row - near[k, 0]) ** 2 + (col - near[k, 1]) ** 2:
                    nearer = True
                    break
            if nearer:
                continue
            yy[m], xx[m], data[m], weight[m] = i, j, image[row, col], 1.0
            m += 1
    for k in range(m, -(-m // LANES) * LANES):
        yy[k], xx[k], data[k], weight[k] = 0.0, 0.0, 0.0, 0.0
    return m, cy, cx


@njit(cache=True, fastmath=False)
def _start_values(data, m, sy, sx, q_lo, q_hi, p):
    """As :func:`usidgpu.atoms.gaussian.start_values`, projected as :func:`usidgpu.atoms.fit._project`."""
    low, high = np.inf, -np.inf
    for k in range(m):
        low, high = min(low, data[k]), max(high, data[k])
    amplitude = max(high - low, 1e-12)
    above = 0
    for k in range(m):
        if data[k] - low >= 0.5 * amplitude:
            above += 1
    q = 0.5 / (max(above, 1) / (2.0 * math.pi * math.log(2.0)))
    q = min(max(q, q_lo), q_hi)
    p[0], p[1], p[2], p[3], p[4], p[5], p[6] = amplitude, sy, sx, q, 0.0, q, low


@njit(cache=True, fastmath=False)
def _widths_and_angle(qa, qb, qc):
    """Scalar :func:`usidgpu.atoms.gaussian.widths_and_angle` (same formulas)."""
    mean = 0.5 * (qa + qc)
    half = math.sqrt((0.5 * (qa - qc)) ** 2 + qb * qb)
    sigma_major = 1.0 / math.sqrt(2.0 * max(mean - half, 1e-300))
    sigma_minor = 1.0 / math.sqrt(2.0 * (mean + half))
    theta = 0.5 * math.atan2(2.0 * qb, qa - qc) + math.pi / 2
    return sigma_major, sigma_minor, _wrap_angle(theta)


@njit(cache=True, fastmath=False)
def _wrap_angle(theta):
    """θ into [−π/2, π/2) as NumPy's ``(θ + π/2) % π − π/2``."""
    t = (theta + math.pi / 2) % math.pi
    return t - math.pi / 2


@njit(cache=True, fastmath=False)
def _to_physical(p, cov, out, errors, t, q):
    """Scalar :func:`usidgpu.atoms.gaussian.to_physical` of one column: (σx, σy, θ) and the errors
    by the delta method with the same central differences (``t`` (3, 3), ``q`` (3,) scratch)."""
    for i in range(7):
        out[i] = p[i]
        errors[i] = math.sqrt(max(cov[i, i], 0.0))
    out[3], out[4], out[5] = _widths_and_angle(p[3], p[4], p[5])
    h = 1e-6 * max(max(abs(p[3]), abs(p[4]), abs(p[5])), 1e-12)
    for j in range(3):
        q[0], q[1], q[2] = p[3], p[4], p[5]
        q[j] = p[3 + j] + h
        u0, u1, u2 = _widths_and_angle(q[0], q[1], q[2])
        q[j] = p[3 + j] - h
        d0, d1, d2 = _widths_and_angle(q[0], q[1], q[2])
        t[0, j] = (u0 - d0) / (2.0 * h)
        t[1, j] = (u1 - d1) / (2.0 * h)
        t[2, j] = _wrap_angle(u2 - d2) / (2.0 * h)
    for i in range(3):
        v = 0.0
        for j in range(3):
            for k in range(3):
                v += t[i, j] * cov[3 + j, 3 + k] * t[i, k]
        errors[3 + i] = math.sqrt(max(v, 0.0))


@njit(cache=True, fastmath=False)
def _iterate(
    pn, cy, cx, yy, xx, data, weight, m, y_start, x_start, radius, q_lo, q_hi, max_iter, tol, weighted,
    jtj, jtj_t, grad, grad_t, low, rdiag, step, trial,
):  # fmt: skip
    """Levenberg–Marquardt on one column from ``pn`` (updated in place), as
    :func:`usidgpu.atoms.fit.lm_array`: JᵀJ and Jᵀr of the final point are left in ``jtj`` and
    ``grad`` (its covariance needs no other pass). ``weighted``: the pixel weights are any
    non-negative numbers (:func:`_normal_equations_weighted`), else 0 or 1.

    Returns
    -------
    cost : the (weighted) sum of squared residuals at the final point
    raw : the unweighted one (the same number without weights)
    n_iter : steps tried
    converged : bool
    """
    if weighted:
        cost, raw = _normal_equations_weighted(pn, cy, cx, yy, xx, data, weight, m, jtj, grad)
    else:
        cost = _normal_equations(pn, cy, cx, yy, xx, data, weight, m, jtj, grad)
        raw = cost
    lam = LAMBDA_START
    n_iter = 0
    converged = False
    for _ in range(max_iter):
        if not _damped_step(jtj, grad, lam, low, rdiag, step):  # not solvable: rejected, more damping
            n_iter += 1
            lam = lam * LAMBDA_UP
            if lam > LAMBDA_MAX:
                break
            continue
        for i in range(7):
            trial[i] = pn[i] + step[i]
        _project(trial, y_start, x_start, radius, q_lo, q_hi)
        if weighted:
            c_t, raw_t = _normal_equations_weighted(trial, cy, cx, yy, xx, data, weight, m, jtj_t, grad_t)
        else:
            c_t = _normal_equations(trial, cy, cx, yy, xx, data, weight, m, jtj_t, grad_t)
            raw_t = c_t
        better = c_t < cost
        small_step = True
        for i in range(7):
            scale = 1.0 if i == 1 or i == 2 else 1.0 + abs(pn[i])  # centre: absolute px
            if not abs(trial[i] - pn[i]) <= STEP_TOL * scale:  # NaN is not small
                small_step = False
        small_gain = better and (cost - c_t) <= tol * cost
        n_iter += 1
        if better:
            for i in range(7):
                pn[i] = trial[i]
                grad[i] = grad_t[i]
                for j in range(i + 1):
                    jtj[i, j] = jtj_t[i, j]
            cost, raw = c_t, raw_t
            lam = max(lam * LAMBDA_DOWN, 1e-12)
        else:
            lam = lam * LAMBDA_UP
        if small_gain or small_step or lam > LAMBDA_MAX:
            converged = small_gain or small_step
            break
    return cost, raw, n_iter, converged


@njit(parallel=True, cache=True, fastmath=False)
def _fit_columns(
    image, start, neighbours, radius, r_int, q_lo, q_hi, max_iter, tol, ridge, chunk,
    params, errors, converged, n_iter, rms, n_pixels,
):  # fmt: skip
    n_columns = start.shape[0]
    side = 2 * r_int + 1
    # columns in chunks, so that every thread allocates its scratch once, not once per column
    for c in prange((n_columns + chunk - 1) // chunk):
        size = -(-side * side // LANES) * LANES
        yy, xx, data, weight = np.empty(size), np.empty(size), np.empty(size), np.empty(size)
        jtj, jtj_t, low = np.empty((7, 7)), np.empty((7, 7)), np.empty((7, 7))
        grad, grad_t, step, trial = np.empty(7), np.empty(7), np.empty(7), np.empty(7)
        pn, rdiag, cov = np.empty(7), np.empty(7), np.empty((7, 7))
        t, q = np.empty((3, 3)), np.empty(3)
        for n in range(c * chunk, min((c + 1) * chunk, n_columns)):
            m, cy, cx = _gather(image, start, neighbours[n], radius, r_int, n, yy, xx, data, weight)
            _start_values(data, m, start[n, 0], start[n, 1], q_lo, q_hi, pn)
            cost, _, iters, conv = _iterate(
                pn, cy, cx, yy, xx, data, weight, m, start[n, 0], start[n, 1], radius, q_lo, q_hi, max_iter, tol,
                False, jtj, jtj_t, grad, grad_t, low, rdiag, step, trial,
            )  # fmt: skip
            n_iter[n] += iters
            converged[n] = conv
            # JᵀJ and the cost are those of the final point: its covariance needs no other pass
            _covariance(jtj, cost, float(m), ridge, low, rdiag, jtj_t, cov)
            _to_physical(pn, cov, params[n], errors[n], t, q)
            rms[n] = math.sqrt(cost / m) if m > 0 else np.nan  # no pixel: no residual (as the array engine)
            n_pixels[n] = m


def fit_numba(image, start, neighbours, radius, max_iter, tol, ridge):
    """Fit every column (see :func:`usidgpu.atoms.fit.lm_array` for the iteration).

    Parameters
    ----------
    image : (H, W) NumPy array
    start : (N, 2) start positions (y, x)
    neighbours : (N, K, 2) the columns that may clip each fit disk (:func:`neighbour_lists`)
    radius, max_iter, tol, ridge
        As :func:`usidgpu.atoms.fit.refine` and :func:`usidgpu.atoms.fit.covariance`.

    Returns
    -------
    params, errors (N, 7) as :func:`usidgpu.atoms.gaussian.to_physical`; converged, n_iter; the
    RMS residual and pixel count of :func:`usidgpu.atoms.fit.covariance`.
    """
    start = np.ascontiguousarray(start, dtype=np.float64)
    n = start.shape[0]
    params, errors = np.empty((n, 7)), np.empty((n, 7))
    converged = np.zeros(n, dtype=np.bool_)
    n_iter = np.zeros(n, dtype=np.int64)
    rms = np.empty(n)
    n_pixels = np.empty(n, dtype=np.int64)
    chunk = max(1, min(256, n // (8 * get_num_threads())))
    _fit_columns(
        np.ascontiguousarray(image, dtype=np.float64),
        start,
        np.ascontiguousarray(neighbours, dtype=np.float64),
        float(radius),
        int(math.ceil(radius)),
        *q_bounds(radius),
        int(max_iter),
        float(tol),
        float(ridge),
        chunk,
        params,
        errors,
        converged,
        n_iter,
        rms,
        n_pixels,
    )
    return params, errors, converged, n_iter, rms, n_pixels


# ------------------------------------------------------------------------------------------
# The neighbour-aware fit (usidgpu.atoms.neighbours): draw every column, subtract, refit each
# column on the image minus its neighbours, weighted by the noise model.
# ------------------------------------------------------------------------------------------
@njit(cache=True, fastmath=False)
def _draw(p, rho, ex, out, row0):
    """Add column ``p``'s Gaussian (fitted form, no background) to ``out`` in the (2ρ+1)² box
    around its rounded centre (as :func:`usidgpu.atoms.model_image.column_image`); ``out`` holds
    the image rows from ``row0`` on (a slab of it).

    exp(−(qa·dx² + 2qb·dx·dy + qc·dy²)) factorizes on the pixel grid: with dx = k + s (k the
    integer offset from the box centre), it is exp(−qa·dx²) · exp(−qc·dy² − 2qb·dy·s) · uᵏ with
    u = exp(−2qb·dy). So a box takes 2ρ+1 exponentials for its columns and two per row, and a
    pixel two multiplications (``ex`` is scratch of 2ρ+1): several times faster than an
    exponential per pixel, to ~1e-15 of the value.
    """
    h, w = out.shape
    a, y0, x0, qa, qb, qc = p[0], p[1], p[2], p[3], p[4], p[5]
    cy, cx = np.int64(np.rint(y0)), np.int64(np.rint(x0))
    s = cx - x0
    c0, c1 = max(cx - rho, 0), min(cx + rho + 1, w)
    for col in range(c0, c1):
        dx = col - x0
        ex[col - c0] = exp_nonpositive(-qa * dx * dx)
    k0 = c0 - cx
    for row in range(max(cy - rho, row0), min(cy + rho + 1, row0 + h)):
        dy = row - y0
        u = math.exp(-2.0 * qb * dy)
        factor = a * math.exp(-qc * dy * dy - 2.0 * qb * dy * s) * u**k0
        r = row - row0
        for col in range(c0, c1):
            out[r, col] += factor * ex[col - c0]
            factor *= u


@njit(parallel=True, cache=True, fastmath=False)
def _draw_slabs(params, rho, slab, first, order, bufs):
    """Draw the columns slab by slab in parallel, each slab (rows [t·slab, (t+1)·slab)) into a
    buffer of its own that reaches ρ rows beyond it: no two threads write one pixel, and no
    thread waits for another (a machine shared with other work does not stall on a barrier)."""
    for t in prange(bufs.shape[0]):
        ex = np.empty(2 * rho + 1)
        for e in range(first[t], first[t + 1]):
            _draw(params[order[e]], rho, ex, bufs[t], t * slab - rho)


@njit(cache=True, fastmath=False)
def _draw_direct(params, rho, out):
    """:func:`_draw` with one exponential per pixel, one column after another: for needles
    (|qb| so large that the factorized form's uᵏ would leave the float range)."""
    h, w = out.shape
    for n in range(params.shape[0]):
        a, y0, x0, qa, qb, qc = params[n, 0], params[n, 1], params[n, 2], params[n, 3], params[n, 4], params[n, 5]
        cy, cx = np.int64(np.rint(y0)), np.int64(np.rint(x0))
        for row in range(max(cy - rho, 0), min(cy + rho + 1, h)):
            dy = row - y0
            for col in range(max(cx - rho, 0), min(cx + rho + 1, w)):
                dx = col - x0
                out[row, col] += a * exp_nonpositive(-(qa * dx * dx + 2.0 * qb * dx * dy + qc * dy * dy))


def render_numba(shape, params, rho):
    """:func:`usidgpu.atoms.model_image.column_image` on the CPU cores: (H, W) float64."""
    h, w = shape
    rho = int(rho)
    p = np.ascontiguousarray(params, dtype=np.float64)
    p = p[np.isfinite(p).all(axis=1)]
    out = np.zeros((h, w))
    if not len(p):
        return out
    needle = 2.0 * np.abs(p[:, 4]) * (rho + 1.0) ** 2 >= 300.0
    if needle.any():
        _draw_direct(p[needle], rho, out)
        p = np.ascontiguousarray(p[~needle])
    n_slabs = max(1, min(get_num_threads(), h // max(2 * rho + 1, 1)))
    slab = -(-h // n_slabs)
    which = np.clip(np.rint(p[:, 1]).astype(np.int64), 0, h - 1) // slab
    order = np.argsort(which, kind="stable").astype(np.int64)
    first = np.searchsorted(which[order], np.arange(n_slabs + 1)).astype(np.int64)
    bufs = np.zeros((n_slabs, slab + 2 * rho, w))
    _draw_slabs(p, rho, slab, first, order, bufs)
    for t in range(n_slabs):
        lo, hi = t * slab - rho, min((t + 1) * slab + rho, h)
        out[max(lo, 0) : hi] += bufs[t, max(lo, 0) - lo : hi - lo]
    return out


@njit(cache=True, fastmath=False)
def _gather_subtract(image, model, start, near, drawn, own, rho, radius, alpha, beta, floor, n, yy, xx, data, weight):
    """Column n's fit pixels on the image minus every column's drawn model plus its own drawn one.

    The pixels are those :func:`_gather` takes for a disk of this ``radius`` (around the start
    position, none closer to one of the ``near`` columns); the column's own drawn model
    ``drawn`` (fitted form) is added back where :func:`_draw` drew it, the box of ρ around its
    rounded centre. Weights 1/√(alpha + beta·mean), the mean being the model image plus the
    column's background (``own[6]``). Coordinates relative to the window centre, weight-0
    padding to a multiple of :data:`LANES`. Returns the pixel count and the window centre.
    """
    h, w = image.shape
    sy, sx = start[n, 0], start[n, 1]
    cy, cx = np.int64(np.rint(sy)), np.int64(np.rint(sx))
    a, y0, x0, qa, qb, qc = drawn[0], drawn[1], drawn[2], drawn[3], drawn[4], drawn[5]
    by, bx = np.int64(np.rint(y0)), np.int64(np.rint(x0))
    r_int = np.int64(math.ceil(radius))
    m = 0
    for i in range(-r_int, r_int + 1):
        row = cy + i
        if row < 0 or row >= h:
            continue
        for j in range(-r_int, r_int + 1):
            col = cx + j
            if col < 0 or col >= w:
                continue
            d2 = (row - sy) ** 2 + (col - sx) ** 2
            if d2 > radius * radius:
                continue
            nearer = False
            for k in range(near.shape[0]):
                if d2 > (row - near[k, 0]) ** 2 + (col - near[k, 1]) ** 2:
                    nearer = True
                    break
            if nearer:
                continue
            back = 0.0
            if abs(row - by) <= rho and abs(col - bx) <= rho:
                dy, dx = row - y0, col - x0
                back = a * exp_nonpositive(-(qa * dx * dx + 2.0 * qb * dx * dy + qc * dy * dy))
            mod = model[row, col]
            var = max(alpha + beta * (mod + own[6]), floor)
            yy[m], xx[m] = i, j
            data[m] = image[row, col] - mod + back
            weight[m] = 1.0 / math.sqrt(var)
            m += 1
    for k in range(m, -(-m // LANES) * LANES):
        yy[k], xx[k], data[k], weight[k] = 0.0, 0.0, 0.0, 0.0
    return m, cy, cx


@njit(parallel=True, cache=True, fastmath=False)
def _fit_subtract(
    image, model, start, near, drawn, p_in, active, radius, bound, q_lo, q_hi, rho, alpha, beta, floor, max_iter,
    tol, ridge, chunk, p_out, params, errors, converged, n_iter, rms, n_pixels,
):  # fmt: skip
    n_columns = start.shape[0]
    side = 2 * np.int64(math.ceil(radius.max())) + 1
    for c in prange((n_columns + chunk - 1) // chunk):
        size = -(-side * side // LANES) * LANES
        yy, xx, data, weight = np.empty(size), np.empty(size), np.empty(size), np.empty(size)
        jtj, jtj_t, low = np.empty((7, 7)), np.empty((7, 7)), np.empty((7, 7))
        grad, grad_t, step, trial = np.empty(7), np.empty(7), np.empty(7), np.empty(7)
        pn, rdiag, cov = np.empty(7), np.empty(7), np.empty((7, 7))
        t, q = np.empty((3, 3)), np.empty(3)
        for n in range(c * chunk, min((c + 1) * chunk, n_columns)):
            for i in range(7):
                pn[i] = p_in[n, i]
            if not active[n]:
                p_out[n] = pn
                continue
            m, cy, cx = _gather_subtract(
                image, model, start, near[n], drawn[n], pn, rho, radius[n], alpha, beta, floor, n, yy, xx, data, weight
            )
            _project(pn, start[n, 0], start[n, 1], bound, q_lo, q_hi)
            cost, raw, iters, conv = _iterate(
                pn, cy, cx, yy, xx, data, weight, m, start[n, 0], start[n, 1], bound, q_lo, q_hi, max_iter, tol,
                True, jtj, jtj_t, grad, grad_t, low, rdiag, step, trial,
            )  # fmt: skip
            n_iter[n] += iters
            converged[n] = conv
            p_out[n] = pn
            _covariance(jtj, cost, float(m), ridge, low, rdiag, jtj_t, cov)
            _to_physical(pn, cov, params[n], errors[n], t, q)
            rms[n] = math.sqrt(raw / m) if m > 0 else np.nan
            n_pixels[n] = m


def fit_numba_subtract(
    image, model, start, near, drawn, p_in, active, radius, bound, rho, noise, max_iter, tol, ridge, out
):
    """Refit the ``active`` columns on the image minus the drawn models of their neighbours (see
    :func:`usidgpu.atoms.neighbours.refine_neighbours` for the iteration around it).

    Parameters
    ----------
    image, model : (H, W) the image and :func:`render_numba` of ``drawn``
    start : (N, 2) start positions: the window centres, and the centre bounds (± ``bound``)
    near : (N, K, 2) the columns that may clip each fit disk (:func:`neighbour_lists`)
    drawn : (N, 7) the models drawn (fitted form): the own one is added back
    p_in : (N, 7) current parameters (fitted form); the fit starts there
    active : (N,) bool, the columns to refit (the others keep their parameters and results)
    radius : (N,) fit-disk radius of each column
    bound : float, the centre bound and width scale (:func:`usidgpu.atoms.fit_settings.q_bounds`)
    rho : int, the box half-size the model was drawn with
    noise : (alpha, beta, floor) of :class:`usidgpu.atoms.model_image.NoiseModel`
    max_iter, tol, ridge : as :func:`fit_numba`
    out : dict of arrays updated in place: ``params``, ``errors`` (N, 7) reported, ``converged``,
        ``n_iter`` (added to), ``rms`` (unweighted RMS residual), ``n_pixels``

    Returns
    -------
    (N, 7) the new fitted-form parameters
    """
    start = np.ascontiguousarray(start, dtype=np.float64)
    n = start.shape[0]
    p_out = np.empty((n, 7))
    chunk = max(1, min(256, n // (8 * get_num_threads())))
    _fit_subtract(
        np.ascontiguousarray(image, dtype=np.float64),
        np.ascontiguousarray(model, dtype=np.float64),
        start,
        np.ascontiguousarray(near, dtype=np.float64),
        np.ascontiguousarray(drawn, dtype=np.float64),
        np.ascontiguousarray(p_in, dtype=np.float64),
        np.ascontiguousarray(active, dtype=np.bool_),
        np.ascontiguousarray(radius, dtype=np.float64),
        float(bound),
        *q_bounds(bound),
        int(rho),
        float(noise[0]),
        float(noise[1]),
        float(noise[2]),
        int(max_iter),
        float(tol),
        float(ridge),
        chunk,
        p_out,
        out["params"],
        out["errors"],
        out["converged"],
        out["n_iter"],
        out["rms"],
        out["n_pixels"],
    )
    return p_out
