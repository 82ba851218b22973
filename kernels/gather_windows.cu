// Gather a chunk of image windows into rows of a patch matrix, minus a constant shift.
//
// out[n, q] = image[(i·sy + a)·width + j·sx + b] − shift,  with window n = (i − i0)·nx + j and
// in-window offset q = a·wx + b. One thread per output element; consecutive threads write
// consecutive q (consecutive image columns), so reads and writes are coalesced. This replaces a
// strided copy of a sliding-window view and fuses the mean shift that keeps float32 Gram
// products accurate. NumPy reference: usidgpu.denoise.patches.patch_chunks on the CPU.
template <typename T>
__global__ void gather_windows(const T* __restrict__ image, T* __restrict__ out, const long long width,
                               const long long i0, const long long n_windows, const long long nx,
                               const int wy, const int wx, const int sy, const int sx, const T shift) {
    const long long n_pix = static_cast<long long>(wy) * wx;
    const long long total = n_windows * n_pix;
    for (long long idx = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; idx < total;
         idx += static_cast<long long>(gridDim.x) * blockDim.x) {
        const long long n = idx / n_pix;
        const long long q = idx - n * n_pix;
        const long long i = i0 + n / nx;
        const long long j = n - (n / nx) * nx;
        const long long a = q / wx;
        const long long b = q - a * wx;
        out[idx] = image[(i * sy + a) * width + j * sx + b] - shift;
    }
}

#ifdef USIDGPU_COMPILE_CHECK
template __global__ void gather_windows<float>(const float*, float*, const long long, const long long,
                                               const long long, const long long, const int, const int,
                                               const int, const int, const float);
template __global__ void gather_windows<double>(const double*, double*, const long long, const long long,
                                                const long long, const long long, const int, const int,
                                                const int, const int, const double);
#endif
