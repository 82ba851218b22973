// Batched Levenberg–Marquardt fit of an elliptical 2-D Gaussian, one thread block per column.
//
// Model (fitted form, see usidgpu/atoms/gaussian.py):
//   f = A·exp(−(qa·dx² + 2·qb·dx·dy + qc·dy²)) + B,  dx = x − x0, dy = y − y0,
//   p = (A, y0, x0, qa, qb, qc, B).
// Each block iterates its own column to convergence without returning to the host: every thread
// accumulates the normal equations (JᵀJ lower triangle, Jᵀr, cost) over its share of the
// column's pixels, the block reduces them (warp shuffles, then shared memory), and thread 0 solves
// the damped 7 × 7 system by Cholesky, projects the trial onto the bounds and decides. The damping
// rule, bounds and stopping tests are those of usidgpu.atoms.fit.lm_array, the NumPy reference
// and CPU path, which the tests compare against. Inputs are the packed pixels of
// usidgpu.atoms.fit.prepare: yy, xx, data, weight (n_columns × m, row-major), weight 0 or 1.
//
// Two precisions (usidgpu/atoms/fit_kernel.py prepares the inputs of each):
//   double — absolute pixel coordinates, the data as they are; the same iteration as lm_array.
//   float  — for cards whose FP64 rate is a small fraction of FP32 (GeForce/RTX: 1/64). The host
//            hands over coordinates relative to each column's start position and data scaled to
//            amplitude ~1 (so no float32 quantity carries large magnitudes), the 7 × 7 system is
//            solved with Jacobi scaling (unit diagonal), and a step whose cost change is within
//            the relative tolerance ends the iteration whether or not it was accepted: near the
//            optimum float32 costs differ only by rounding, and waiting for an accepted gain
//            would run the damping up to its limit and report a converged column as failed.
//
// Launch contract: blockDim = (THREADS, 1, 1) with THREADS a multiple of 32 (the reduction uses
// full-mask shuffles), at least N_SUM (thread i < N_SUM finishes sum i) and at most 1024
// (MAX_WARPS partial sums). The host checks it; a block that breaks it writes n_iter = −1 and
// returns without touching its column.

#define N_PAR 7
#define N_SUM 36  // 28 JᵀJ lower-triangle entries + 7 gradient entries + cost
#define MAX_WARPS 32

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
    return v;
}

// Normal equations at p over this column's pixels; result in sums[0..35] (valid for all threads
// after the call). Layout: sums[tri(i,j)] for j ≤ i (tri = i(i+1)/2 + j), sums[28 + i] = Jᵀr,
// sums[35] = cost.
template <typename T>
__device__ void normal_equations(const T* __restrict__ yy, const T* __restrict__ xx, const T* __restrict__ data,
                                 const T* __restrict__ weight, const int m, const T* p, T* warp_partial, T* sums) {
    T acc[N_SUM];
#pragma unroll
    for (int i = 0; i < N_SUM; ++i) acc[i] = T(0);
    const T a = p[0], y0 = p[1], x0 = p[2], qa = p[3], qb = p[4], qc = p[5], b = p[6];
    for (int k = threadIdx.x; k < m; k += blockDim.x) {
        const T wk = weight[k];
        if (wk == T(0)) continue;
        const T dx = xx[k] - x0, dy = yy[k] - y0;
        const T g = exp(-(qa * dx * dx + T(2) * qb * dx * dy + qc * dy * dy));
        const T r = (a * g + b - data[k]) * wk;
        const T ag = a * g * wk;
        T jac[N_PAR];
        jac[0] = g * wk;
        jac[1] = T(2) * ag * (qb * dx + qc * dy);
        jac[2] = T(2) * ag * (qa * dx + qb * dy);
        jac[3] = -ag * dx * dx;
        jac[4] = T(-2) * ag * dx * dy;
        jac[5] = -ag * dy * dy;
        jac[6] = wk;
        int t = 0;
#pragma unroll
        for (int i = 0; i < N_PAR; ++i) {
#pragma unroll
            for (int j = 0; j <= i; ++j) acc[t++] += jac[i] * jac[j];
        }
#pragma unroll
        for (int i = 0; i < N_PAR; ++i) acc[28 + i] += jac[i] * r;
        acc[35] += r * r;
    }
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = (blockDim.x + 31) >> 5;
#pragma unroll
    for (int i = 0; i < N_SUM; ++i) {
        const T v = warp_sum(acc[i]);
        if (lane == 0) warp_partial[warp * N_SUM + i] = v;
    }
    __syncthreads();
    if (threadIdx.x < N_SUM) {
        T v = T(0);
        for (int w = 0; w < n_warps; ++w) v += warp_partial[w * N_SUM + threadIdx.x];
        sums[threadIdx.x] = v;
    }
    __syncthreads();
}

// In-place Cholesky factor of the lower triangle of low; false when not positive definite.
template <typename T>
__device__ bool cholesky(T (&low)[N_PAR][N_PAR]) {
    for (int j = 0; j < N_PAR; ++j) {
        T d = low[j][j];
        for (int k = 0; k < j; ++k) d -= low[j][k] * low[j][k];
        if (!(d > T(0))) return false;
        d = sqrt(d);
        low[j][j] = d;
        for (int i = j + 1; i < N_PAR; ++i) {
            T t = low[i][j];
            for (int k = 0; k < j; ++k) t -= low[i][k] * low[j][k];
            low[i][j] = t / d;
        }
    }
    return true;
}

// Solves L·Lᵀ·x = rhs in place.
template <typename T>
__device__ void cholesky_solve(const T (&low)[N_PAR][N_PAR], T* x) {
    for (int i = 0; i < N_PAR; ++i) {
        T t = x[i];
        for (int k = 0; k < i; ++k) t -= low[i][k] * x[k];
        x[i] = t / low[i][i];
    }
    for (int i = N_PAR - 1; i >= 0; --i) {
        T t = x[i];
        for (int k = i + 1; k < N_PAR; ++k) t -= low[k][i] * x[k];
        x[i] = t / low[i][i];
    }
}

// (JᵀJ + λ·diag(scale))·step = −Jᵀr, scale = diag(JᵀJ) + floor·max diag + tiny; false when the
// matrix is not positive definite. double: exactly lm_array's system. float: the same system
// with the unknowns rescaled to unit diagonal (D = diag(JᵀJ)^−½), whose Cholesky keeps float32
// accuracy when the parameters' curvatures span many decades.
template <typename T>
__device__ bool damped_step(const T* sums, const T lam, const T floor, T* step) {
    T low[N_PAR][N_PAR];
    T dmax = T(0);
    for (int i = 0; i < N_PAR; ++i) dmax = fmax(dmax, sums[i * (i + 1) / 2 + i]);
    const T tiny = T(1e-30);
    if constexpr (sizeof(T) == 8) {
        for (int i = 0; i < N_PAR; ++i) {
            for (int j = 0; j <= i; ++j) low[i][j] = sums[i * (i + 1) / 2 + j];
            low[i][i] += lam * (low[i][i] + floor * dmax + tiny);
            step[i] = -sums[28 + i];
        }
        if (!cholesky(low)) return false;
        cholesky_solve(low, step);
    } else {
        T d[N_PAR];
        for (int i = 0; i < N_PAR; ++i) d[i] = T(1) / sqrt(sums[i * (i + 1) / 2 + i] + floor * dmax + tiny);
        for (int i = 0; i < N_PAR; ++i) {
            for (int j = 0; j < i; ++j) low[i][j] = sums[i * (i + 1) / 2 + j] * d[i] * d[j];
            // D·(JᵀJ + λ·diag(scale))·D with D² = 1/scale: the damping becomes λ·I
            low[i][i] = sums[i * (i + 1) / 2 + i] * d[i] * d[i] + lam;
            step[i] = -sums[28 + i] * d[i];
        }
        if (!cholesky(low)) return false;
        cholesky_solve(low, step);
        for (int i = 0; i < N_PAR; ++i) step[i] *= d[i];
    }
    return true;
}

template <typename T>
__device__ void project(T* p, const T y_start, const T x_start, const T radius, const T q_lo, const T q_hi) {
    p[0] = fmax(p[0], T(1e-12));
    p[1] = fmin(fmax(p[1], y_start - radius), y_start + radius);
    p[2] = fmin(fmax(p[2], x_start - radius), x_start + radius);
    p[3] = fmin(fmax(p[3], q_lo), q_hi);
    p[5] = fmin(fmax(p[5], q_lo), q_hi);
    const T limit = T(0.999) * sqrt(p[3] * p[5]);
    p[4] = fmin(fmax(p[4], -limit), limit);
}

template <typename T>
__global__ void fit_gaussian2d(const T* __restrict__ yy, const T* __restrict__ xx, const T* __restrict__ data,
                               const T* __restrict__ weight, T* __restrict__ params, const T* __restrict__ start,
                               const int n_columns, const int m, const T radius, const T q_lo, const T q_hi,
                               const int max_iter, const T tol, const T lambda_start, const T lambda_down,
                               const T lambda_up, const T lambda_max, const T step_tol, const T diag_floor,
                               bool* __restrict__ converged, long long* __restrict__ n_iter) {
    __shared__ T warp_partial[MAX_WARPS * N_SUM];
    __shared__ T sums[N_SUM];
    __shared__ T sums_trial[N_SUM];
    __shared__ T p[N_PAR];
    __shared__ T trial[N_PAR];
    __shared__ int done;
    const int col = blockIdx.x;
    if (col >= n_columns) return;
    // the launch contract (see the header): every thread of the block sees the same blockDim,
    // so all of them return here together and no barrier is left waiting
    if (blockDim.x % 32 != 0 || blockDim.x < N_SUM || blockDim.x > 32 * MAX_WARPS || blockDim.y != 1 ||
        blockDim.z != 1) {
        if (threadIdx.x == 0 && threadIdx.y == 0 && threadIdx.z == 0) {
            converged[col] = false;
            n_iter[col] = -1;
        }
        return;
    }
    const long long off = static_cast<long long>(col) * m;
    const T* cy = yy + off;
    const T* cx = xx + off;
    const T* cd = data + off;
    const T* cw = weight + off;
    const bool single = sizeof(T) == 4;
    if (threadIdx.x < N_PAR) p[threadIdx.x] = params[col * N_PAR + threadIdx.x];
    if (threadIdx.x == 0) done = 0;
    __syncthreads();
    normal_equations(cy, cx, cd, cw, m, p, warp_partial, sums);
    T lam = lambda_start;  // kept by thread 0
    T cost = sums[35];
    long long iters = 0;
    bool conv = false;
    for (int it = 0; it < max_iter; ++it) {
        if (threadIdx.x == 0) {
            T step[N_PAR];
            const bool ok = damped_step(sums, lam, diag_floor, step);
            for (int i = 0; i < N_PAR; ++i) trial[i] = ok ? p[i] + step[i] : p[i];
            project(trial, start[2 * col], start[2 * col + 1], radius, q_lo, q_hi);
        }
        __syncthreads();
        normal_equations(cy, cx, cd, cw, m, trial, warp_partial, sums_trial);
        if (threadIdx.x == 0) {
            const T c_t = sums_trial[35];
            const bool better = c_t < cost;
            bool small_step = true;
            for (int i = 0; i < N_PAR; ++i) {
                const T scale = (i == 1 || i == 2) ? T(1) : T(1) + fabs(p[i]);  // centre: absolute px
                if (fabs(trial[i] - p[i]) > step_tol * scale) small_step = false;
            }
            // float: a rejected step whose cost equals the current one to the tolerance is the
            // rounding floor, i.e. the optimum (see the header)
            const bool small_gain = (better || (single && c_t >= cost)) && fabs(cost - c_t) <= tol * cost;
            ++iters;
            if (better) {
                for (int i = 0; i < N_PAR; ++i) p[i] = trial[i];
                for (int i = 0; i < N_SUM; ++i) sums[i] = sums_trial[i];
                cost = c_t;
                lam = fmax(lam * lambda_down, T(1e-12));
            } else {
                lam *= lambda_up;
            }
            if (small_gain || small_step || lam > lambda_max) {
                conv = small_gain || small_step;
                done = 1;
            }
        }
        __syncthreads();
        if (done) break;
    }
    if (threadIdx.x < N_PAR) params[col * N_PAR + threadIdx.x] = p[threadIdx.x];
    if (threadIdx.x == 0) {
        converged[col] = conv;
        n_iter[col] = iters;
    }
}

#ifdef USIDGPU_COMPILE_CHECK
#define USIDGPU_INSTANTIATE(T)                                                                                  \
    template __global__ void fit_gaussian2d<T>(const T*, const T*, const T*, const T*, T*, const T*, const int,  \
                                               const int, const T, const T, const T, const int, const T, const T, \
                                               const T, const T, const T, const T, const T, bool*, long long*);
USIDGPU_INSTANTIATE(float)
USIDGPU_INSTANTIATE(double)
#endif
