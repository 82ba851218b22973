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
// and CPU path, which the GPU test compares against. Inputs are the packed pixels of
// usidgpu.atoms.fit.prepare: yy, xx, data, weight (n_columns × m, row-major), weight 0 or 1.

#define N_PAR 7
#define N_SUM 36  // 28 JᵀJ lower-triangle entries + 7 gradient entries + cost
#define MAX_WARPS 32

__device__ __forceinline__ double warp_sum(double v) {
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
    return v;
}

// Normal equations at p over this column's pixels; result in sums[0..35] (valid for all threads
// after the call). Layout: sums[tri(i,j)] for j ≤ i (tri = i(i+1)/2 + j), sums[28 + i] = Jᵀr,
// sums[35] = cost.
__device__ void normal_equations(const double* __restrict__ yy, const double* __restrict__ xx,
                                 const double* __restrict__ data, const double* __restrict__ weight,
                                 const int m, const double* p, double* warp_partial, double* sums) {
    double acc[N_SUM];
#pragma unroll
    for (int i = 0; i < N_SUM; ++i) acc[i] = 0.0;
    const double a = p[0], y0 = p[1], x0 = p[2], qa = p[3], qb = p[4], qc = p[5], b = p[6];
    for (int k = threadIdx.x; k < m; k += blockDim.x) {
        const double wk = weight[k];
        if (wk == 0.0) continue;
        const double dx = xx[k] - x0, dy = yy[k] - y0;
        const double g = exp(-(qa * dx * dx + 2.0 * qb * dx * dy + qc * dy * dy));
        const double r = (a * g + b - data[k]) * wk;
        const double ag = a * g * wk;
        double jac[N_PAR];
        jac[0] = g * wk;
        jac[1] = 2.0 * ag * (qb * dx + qc * dy);
        jac[2] = 2.0 * ag * (qa * dx + qb * dy);
        jac[3] = -ag * dx * dx;
        jac[4] = -2.0 * ag * dx * dy;
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
        const double v = warp_sum(acc[i]);
        if (lane == 0) warp_partial[warp * N_SUM + i] = v;
    }
    __syncthreads();
    if (threadIdx.x < N_SUM) {
        double v = 0.0;
        for (int w = 0; w < n_warps; ++w) v += warp_partial[w * N_SUM + threadIdx.x];
        sums[threadIdx.x] = v;
    }
    __syncthreads();
}

// (JᵀJ + λ·diag(scale))·step = −Jᵀr by Cholesky; false when not positive definite.
__device__ bool damped_step(const double* sums, const double lam, double* step) {
    double low[N_PAR][N_PAR];
    double dmax = 0.0;
    for (int i = 0; i < N_PAR; ++i) dmax = fmax(dmax, sums[i * (i + 1) / 2 + i]);
    for (int i = 0; i < N_PAR; ++i) {
        for (int j = 0; j <= i; ++j) low[i][j] = sums[i * (i + 1) / 2 + j];
        low[i][i] += lam * (low[i][i] + 1e-9 * dmax + 1e-30);
    }
    for (int j = 0; j < N_PAR; ++j) {
        double d = low[j][j];
        for (int k = 0; k < j; ++k) d -= low[j][k] * low[j][k];
        if (!(d > 0.0)) return false;
        d = sqrt(d);
        low[j][j] = d;
        for (int i = j + 1; i < N_PAR; ++i) {
            double t = low[i][j];
            for (int k = 0; k < j; ++k) t -= low[i][k] * low[j][k];
            low[i][j] = t / d;
        }
    }
    for (int i = 0; i < N_PAR; ++i) {
        double t = -sums[28 + i];
        for (int k = 0; k < i; ++k) t -= low[i][k] * step[k];
        step[i] = t / low[i][i];
    }
    for (int i = N_PAR - 1; i >= 0; --i) {
        double t = step[i];
        for (int k = i + 1; k < N_PAR; ++k) t -= low[k][i] * step[k];
        step[i] = t / low[i][i];
    }
    return true;
}

__device__ void project(double* p, const double y_start, const double x_start, const double radius,
                        const double q_lo, const double q_hi) {
    p[0] = fmax(p[0], 1e-12);
    p[1] = fmin(fmax(p[1], y_start - radius), y_start + radius);
    p[2] = fmin(fmax(p[2], x_start - radius), x_start + radius);
    p[3] = fmin(fmax(p[3], q_lo), q_hi);
    p[5] = fmin(fmax(p[5], q_lo), q_hi);
    const double limit = 0.999 * sqrt(p[3] * p[5]);
    p[4] = fmin(fmax(p[4], -limit), limit);
}

extern "C" __global__ void fit_gaussian2d(const double* __restrict__ yy, const double* __restrict__ xx,
                                          const double* __restrict__ data, const double* __restrict__ weight,
                                          double* __restrict__ params, const double* __restrict__ start,
                                          const int n_columns, const int m, const double radius,
                                          const double q_lo, const double q_hi, const int max_iter,
                                          const double tol, const double lambda_start, const double lambda_down,
                                          const double lambda_up, const double lambda_max, const double step_tol,
                                          bool* __restrict__ converged, long long* __restrict__ n_iter) {
    __shared__ double warp_partial[MAX_WARPS * N_SUM];
    __shared__ double sums[N_SUM];
    __shared__ double sums_trial[N_SUM];
    __shared__ double p[N_PAR];
    __shared__ double trial[N_PAR];
    __shared__ int done;
    const int col = blockIdx.x;
    if (col >= n_columns) return;
    const long long off = static_cast<long long>(col) * m;
    const double* cy = yy + off;
    const double* cx = xx + off;
    const double* cd = data + off;
    const double* cw = weight + off;
    if (threadIdx.x < N_PAR) p[threadIdx.x] = params[col * N_PAR + threadIdx.x];
    if (threadIdx.x == 0) done = 0;
    __syncthreads();
    normal_equations(cy, cx, cd, cw, m, p, warp_partial, sums);
    double lam = lambda_start;  // kept by thread 0
    double cost = sums[35];
    long long iters = 0;
    bool conv = false;
    for (int it = 0; it < max_iter; ++it) {
        if (threadIdx.x == 0) {
            double step[N_PAR];
            const bool ok = damped_step(sums, lam, step);
            for (int i = 0; i < N_PAR; ++i) trial[i] = ok ? p[i] + step[i] : p[i];
            project(trial, start[2 * col], start[2 * col + 1], radius, q_lo, q_hi);
        }
        __syncthreads();
        normal_equations(cy, cx, cd, cw, m, trial, warp_partial, sums_trial);
        if (threadIdx.x == 0) {
            const double c_t = sums_trial[35];
            const bool better = c_t < cost;
            bool small_step = true;
            for (int i = 0; i < N_PAR; ++i) {
                const double scale = (i == 1 || i == 2) ? 1.0 : 1.0 + fabs(p[i]);  // centre: absolute px
                if (fabs(trial[i] - p[i]) > step_tol * scale) small_step = false;
            }
            const bool small_gain = better && (cost - c_t) <= tol * cost;
            ++iters;
            if (better) {
                for (int i = 0; i < N_PAR; ++i) p[i] = trial[i];
                for (int i = 0; i < N_SUM; ++i) sums[i] = sums_trial[i];
                cost = c_t;
                lam = fmax(lam * lambda_down, 1e-12);
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
