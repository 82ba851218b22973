"""The CPU kernel harness (tests/cudasim) itself: it runs correct kernels to the right answer and
fails loudly on each kind of bug it exists to catch."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="the CPU kernel harness needs g++")

cudasim = pytest.importorskip("cudasim")

# A block sum: per-warp shuffles, partials in shared memory, one barrier, thread 0 finishes.
BLOCK_SUM = r"""
extern "C" __global__ void block_sum(const double* x, double* out, const int n) {
    __shared__ double partial[32];
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    double v = i < n ? x[i] : 0.0;
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(MASK, v, offset);
    if ((threadIdx.x & 31) == 0) partial[threadIdx.x >> 5] = v;
    BARRIER
    if (threadIdx.x == 0) {
        double s = 0.0;
        for (int w = 0; w < (blockDim.x + 31) / 32; ++w) s += partial[w];
        out[blockIdx.x] = s;
    }
}
"""


def block_sum(mask="0xffffffffu", barrier="__syncthreads();"):
    code = BLOCK_SUM.replace("MASK", mask).replace("BARRIER", barrier)
    return cudasim.Module(code, filename="block_sum.cu").get_function("block_sum")


def run_block_sum(kernel, n=1000, threads=128):
    x = np.random.default_rng(0).standard_normal(n)
    blocks = -(-n // threads)
    out = np.zeros(blocks)
    stats = kernel((blocks,), (threads,), (x, out, np.int32(n)))
    return x, out, stats


def test_a_correct_kernel_gives_numpys_answer_in_both_thread_orders():
    x, out, stats = run_block_sum(block_sum())
    np.testing.assert_allclose(out, [x[i : i + 128].sum() for i in range(0, 1000, 128)], rtol=1e-13)
    assert stats.blocks == 2 * 8 and stats.barriers == 2 * 8 and stats.warp_ops == 2 * 8 * 4 * 5


def test_a_missing_barrier_is_a_race_between_thread_orders():
    with pytest.raises(cudasim.KernelError, match="differs between thread orders"):
        run_block_sum(block_sum(barrier=""))


def test_a_full_mask_in_a_partial_warp_names_lanes_that_do_not_exist():
    with pytest.raises(cudasim.KernelError, match=r"names lanes 8-31 .* 40 threads, not a multiple of 32"):
        run_block_sum(block_sum(), n=80, threads=40)


def test_a_partial_mask_that_leaves_out_a_lane_that_is_read():
    with pytest.raises(cudasim.KernelError, match="not in its mask|reads lane"):
        run_block_sum(block_sum(mask="0x0000ffffu"))


def test_shuffle_source_outside_the_mask():
    code = r"""
    extern "C" __global__ void k(int* out) {
        int v = threadIdx.x;
        if (threadIdx.x < 16) v = __shfl_down_sync(0x0000ffffu, v, 8);
        out[threadIdx.x] = v;
    }
    """
    kernel = cudasim.Module(code).get_function("k")
    with pytest.raises(cudasim.KernelError, match="reads lane 16, which is not in the mask"):
        kernel((1,), (32,), (np.zeros(32, np.int32),))


def test_warp_intrinsics_of_partial_groups_and_votes():
    code = r"""
    extern "C" __global__ void k(int* out, unsigned* ballot) {
        const int lane = threadIdx.x & 31;
        int v = lane;
        // two halves of the warp shuffle separately (butterfly within 16 lanes)
        const unsigned half = lane < 16 ? 0x0000ffffu : 0xffff0000u;
        for (int m = 8; m > 0; m >>= 1) v += __shfl_xor_sync(half, v, m, 16);
        out[threadIdx.x] = v;
        const unsigned b = __ballot_sync(0xffffffffu, lane % 3 == 0);
        const int any = __any_sync(0xffffffffu, lane == 31);
        const int all = __all_sync(0xffffffffu, lane < 31);
        if (lane == 0) { ballot[0] = b; ballot[1] = any; ballot[2] = all; }
        __syncwarp();
        const int up = __shfl_up_sync(0xffffffffu, lane, 3);
        const int idx = __shfl_sync(0xffffffffu, lane, 5);
        out[32 + threadIdx.x] = up * 100 + idx;
    }
    """
    out = np.zeros(64, np.int32)
    ballot = np.zeros(3, np.uint32)
    cudasim.Module(code).get_function("k")((1,), (32,), (out, ballot))
    lanes = np.arange(32)
    np.testing.assert_array_equal(out[:32], np.where(lanes < 16, 120, 376))
    assert ballot[0] == sum(1 << i for i in range(0, 32, 3)) and ballot[1] == 1 and ballot[2] == 0
    np.testing.assert_array_equal(out[32:], np.where(lanes >= 3, lanes - 3, lanes) * 100 + 5)


def test_a_barrier_in_divergent_code():
    code = r"""
    extern "C" __global__ void k(float* out) {
        if (threadIdx.x >= 16) return;
        __syncthreads();
        out[threadIdx.x] = 1.0f;
    }
    """
    with pytest.raises(cudasim.KernelError, match="reached by 16 threads while 16 .* exited"):
        cudasim.Module(code).get_function("k")((1,), (32,), (np.zeros(32, np.float32),))


def test_threads_at_different_barriers():
    code = r"""
    extern "C" __global__ void k(float* out) {
        if (threadIdx.x < 16) { __syncthreads(); } else { __syncthreads(); }
        out[threadIdx.x] = 1.0f;
    }
    """
    with pytest.raises(cudasim.KernelError, match="different barriers"):
        cudasim.Module(code).get_function("k")((1,), (32,), (np.zeros(32, np.float32),))


def test_a_shuffle_waiting_for_a_lane_that_waits_at_a_barrier():
    code = r"""
    extern "C" __global__ void k(float* out) {
        float v = 1.0f;
        if (threadIdx.x == 0) __syncthreads();
        else v = __shfl_down_sync(0xffffffffu, v, 1);
        out[threadIdx.x] = v;
    }
    """
    with pytest.raises(cudasim.KernelError, match="waits at __syncthreads"):
        cudasim.Module(code).get_function("k")((1,), (32,), (np.zeros(32, np.float32),))


def test_shared_memory_nobody_wrote_is_poisoned():
    code = r"""
    extern "C" __global__ void k(double* out) {
        __shared__ double s[64];
        if (threadIdx.x < 32) s[threadIdx.x] = threadIdx.x;
        __syncthreads();
        out[threadIdx.x] = s[threadIdx.x];  // threads 32-63 read what nobody wrote
    }
    """
    with pytest.raises(cudasim.KernelError, match="differs between thread orders"):
        cudasim.Module(code).get_function("k")((1,), (64,), (np.zeros(64),))
    out = np.zeros(64)
    cudasim.Module(code).get_function("k")((1,), (64,), (out,), orders="ascending")
    assert np.isnan(out[32:]).all() and (out[:32] == np.arange(32)).all()


@pytest.mark.parametrize(
    "body, message",
    [
        ("if (i < n) y[i + 1] = x[i];", "past the end of argument 1"),
        ("if (i < n) y[i] = x[i - 1];", "before the start of argument 0"),
        ("if (i < n) const_cast<float*>(x)[i] = 0.0f;", "const .*input"),
    ],
    ids=["overrun", "underrun", "const-write"],
)
def test_memory_faults_are_caught_and_named(body, message):
    code = f"""
    extern "C" __global__ void k(const float* x, float* y, const int n) {{
        const int i = blockIdx.x * blockDim.x + threadIdx.x;
        {body}
    }}
    """
    x = np.ones(100, np.float32)
    y = np.zeros(100, np.float32)
    with pytest.raises(cudasim.KernelError, match=message):
        cudasim.Module(code).get_function("k")((1,), (128,), (x, y, np.int32(100)))
    assert (y == 0).all()  # nothing is written back after a fault


def test_launch_configurations_cuda_refuses():
    kernel = block_sum()
    x, out = np.zeros(10), np.zeros(1)
    for grid, block in [((1,), (2048,)), ((1,), (32, 32, 2)), ((0,), (32,)), ((1,), (1, 1, 65))]:
        with pytest.raises(cudasim.KernelError, match="invalid configuration"):
            kernel(grid, block, (x, out, np.int32(10)))


def test_arguments_must_match_the_parameters():
    kernel = block_sum()
    x, out = np.zeros(64), np.zeros(1)
    with pytest.raises(cudasim.KernelError, match="int64 value .* parameter 2 is int"):
        kernel((1,), (64,), (x, out, np.int64(64)))
    with pytest.raises(cudasim.KernelError, match="float32 array but parameter 0 is const double"):
        kernel((1,), (64,), (x.astype(np.float32), out, np.int32(64)))
    with pytest.raises(cudasim.KernelError, match="not C-contiguous"):
        kernel((1,), (64,), (np.zeros(128)[::2], out, np.int32(64)))
    ro = np.zeros(1)
    ro.flags.writeable = False
    with pytest.raises(cudasim.KernelError, match="read-only"):
        kernel((1,), (64,), (x, ro, np.int32(64)))
    with pytest.raises(cudasim.KernelError, match="NumPy scalar"):
        kernel((1,), (64,), (x, out, 64))
    with pytest.raises(cudasim.KernelError, match="takes 3 arguments"):
        kernel((1,), (64,), (x, out))


def test_grid_stride_loops_and_multi_dimensional_launches():
    code = r"""
    extern "C" __global__ void k(int* out, const long long n) {
        const long long tid = (blockIdx.y * gridDim.x + blockIdx.x) * (blockDim.x * blockDim.y)
                              + threadIdx.y * blockDim.x + threadIdx.x;
        const long long stride = (long long)gridDim.x * gridDim.y * blockDim.x * blockDim.y;
        for (long long i = tid; i < n; i += stride) atomicAdd(&out[i % 7], 1);
    }
    """
    out = np.zeros(7, np.int32)
    cudasim.Module(code).get_function("k")((3, 2), (8, 4), (out, np.int64(1000)))
    np.testing.assert_array_equal(out, np.bincount(np.arange(1000) % 7))


def test_device_traps_asserts_stack_overflow_and_endless_loops():
    trap = r'extern "C" __global__ void k(int* x) { if (threadIdx.x == 3) __trap(); x[threadIdx.x] = 1; }'
    with pytest.raises(cudasim.KernelError, match=r"__trap\(\)"):
        cudasim.Module(trap).get_function("k")((1,), (32,), (np.zeros(32, np.int32),))
    check = r'extern "C" __global__ void k(int* x) { assert(x[threadIdx.x] == 0); }'
    with pytest.raises(cudasim.KernelError, match="device assert failed"):
        cudasim.Module(check).get_function("k")((1,), (32,), (np.arange(32, dtype=np.int32),))
    deep = r"""
    extern "C" __global__ void k(double* x) {
        volatile double big[65536];
        for (int i = 0; i < 65536; ++i) big[i] = i;
        x[threadIdx.x] = big[threadIdx.x];
    }
    """
    with pytest.raises(cudasim.KernelError, match="stack overflow"):
        cudasim.Module(deep).get_function("k")((1,), (2,), (np.zeros(2),))
    spin = r'extern "C" __global__ void k(volatile int* x) { while (x[0] == 0) {} }'
    with pytest.raises(cudasim.KernelError, match="ran longer than"):
        cudasim.Module(spin).get_function("k")((1,), (1,), (np.zeros(1, np.int32),), timeout=0.3)
    # the process and the harness are fine afterwards
    x, out, _ = run_block_sum(block_sum(), n=64, threads=64)
    assert out[0] == pytest.approx(x.sum())


def test_template_kernels_are_instantiated_per_type():
    code = r"""
    template <typename T>
    __global__ void twice(const T* x, T* y, const long long n) {
        const long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
        if (i < n) y[i] = T(2) * x[i];
    }
    """
    module = cudasim.Module(code, name_expressions=("twice<float>",))
    for dtype, name in ((np.float32, "twice<float>"), (np.float64, "twice<double>")):
        x = np.arange(50, dtype=dtype)
        y = np.zeros_like(x)
        kernel = module.get_function(name)
        assert kernel.params[0].ctype == ("const float*" if dtype == np.float32 else "const double*")
        kernel((1,), (64,), (x, y, np.int64(50)))
        np.testing.assert_array_equal(y, 2 * x)


def test_a_source_the_compiler_rejects():
    with pytest.raises(cudasim.CompileError, match="undefined_name"):
        cudasim.Module('extern "C" __global__ void k(float* x) { x[0] = undefined_name; }').get_function("k")
