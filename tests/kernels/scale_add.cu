// Test-only kernel: exercises usidgpu.core.kernels.get_kernel (template instantiation per dtype,
// per-device caching) and the nvcc compile check. y <- alpha * x + y.
template <typename T>
__global__ void scale_add(const T* __restrict__ x, T* __restrict__ y, const T alpha, const long long n) {
    const long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x;
    if (i < n) {
        y[i] = alpha * x[i] + y[i];
    }
}

extern "C" __global__ void fill_index(float* out, const long long n) {
    const long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x;
    if (i < n) {
        out[i] = static_cast<float>(i);
    }
}

#ifdef USIDGPU_COMPILE_CHECK
template __global__ void scale_add<float>(const float*, float*, const float, const long long);
template __global__ void scale_add<double>(const double*, double*, const double, const long long);
#endif
