// cudasim: executes CUDA kernels on the CPU, for tests on machines without a GPU.
//
// This header is force-included (g++ -include) in front of a kernel's .cu source, which is then
// compiled as plain C++. Every thread of a block becomes a cooperative fiber on one OS thread;
// a fiber runs until it reaches __syncthreads, a warp intrinsic or its end, so the scheduler
// sees every synchronization and checks it the way the hardware contract states it:
//
// * __syncthreads: every live thread of the block must reach the same call site; a barrier
//   reached while other threads exited, or at two different call sites, is reported.
// * warp intrinsics (__shfl*_sync, __ballot_sync, __any_sync, __all_sync, __syncwarp): the
//   calling lane must be in the mask; every lane named in the mask must exist (a mask of
//   0xffffffff in a block whose size is not a multiple of 32 names lanes that do not) and
//   arrive at the same intrinsic with the same mask; a shuffle may only read a lane that takes
//   part in it.
// * __shared__ variables live in one linker section that is filled with a poison byte before
//   each block (NaN for floating point), so reading shared memory nobody wrote shows.
//
// The launcher (cudasim::launch, driven from Python) runs the grid twice, threads resumed in
// ascending and then descending order, each time on fresh copies of the arrays placed against
// inaccessible guard pages (after the end, then before the start); const inputs are read-only.
// Results that depend on the order reveal races (a missing barrier); an access outside an
// array, a write into a const input or a stack overflow is caught as a fault and named.
//
// Written for this project's tests (no third-party code). Supported: 1-3-D grids and blocks,
// static __shared__ memory, the intrinsics above, atomics, the math functions of <cmath>.
// Not supported: dynamic (extern) shared memory, cooperative groups, textures, streams inside
// kernels, warp-synchronous code without *_sync intrinsics (it would run, unchecked).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <math.h>
#include <type_traits>
#include <utility>

// ------------------------------------------------------------------------------------------
// CUDA keywords
// ------------------------------------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __noinline__ __attribute__((noinline))
#define __forceinline__ inline __attribute__((always_inline))
#define __launch_bounds__(...)
#define __constant__
// Static locals in one named section: shared by all fibers of the block (one block runs at a
// time) and poisoned between blocks through the linker's __start_/__stop_ symbols.
#define __shared__ static __attribute__((section("cudasim_shared")))

struct uint3 {
    unsigned int x, y, z;
};
struct dim3 {
    unsigned int x, y, z;
    constexpr dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
};

namespace cudasim {

// ------------------------------------------------------------------------------------------
// Fibers
// ------------------------------------------------------------------------------------------
enum class State : int { runnable, barrier, warp, exited };
enum class WarpOp : int { shfl, shfl_up, shfl_down, shfl_xor, ballot, any, all, syncwarp };

struct Fiber {
    void* sp = nullptr;  // saved stack pointer while switched out
    char* stack_lo = nullptr;  // lowest usable byte (a guard page lies below it)
    size_t stack_size = 0;
    uint3 tid{0, 0, 0};
    int linear = 0, warp = 0, lane = 0;
    State state = State::runnable;
    // the synchronization point it waits at
    const char* file = "";
    int line = 0;
    int site = 0;  // the call site's __COUNTER__: two calls on one line are still two sites
    WarpOp op = WarpOp::syncwarp;
    unsigned mask = 0;
    int arg = 0, width = 32;
    unsigned char value[16]{};
    unsigned char result[16]{};
    unsigned vote = 0;
};

// The state of the launch in progress (one at a time: the Python side holds a lock). Defined in
// core.cpp, the part of the harness compiled once and shared by every kernel module.
extern Fiber* g_current;
extern uint3 g_block_idx;
extern dim3 g_block_dim;
extern dim3 g_grid_dim;

// Hands control back to the scheduler (core.cpp).
void switch_to_scheduler();
// Records the first error and abandons the launch (__trap, a failed device assert).
[[noreturn]] void fail_at(const char* what, const char* expression, const char* file, int line);

// ------------------------------------------------------------------------------------------
// Synchronization entry points used by the kernel code
// ------------------------------------------------------------------------------------------
inline void wait_here(State s, const char* file, int line, int site) {
    Fiber* f = g_current;
    f->state = s;
    f->file = file;
    f->line = line;
    f->site = site;
    // The kernel's shared variables are static locals whose address never escapes: without a
    // compiler barrier the optimizer could keep them in registers across the fiber switch.
    asm volatile("" ::: "memory");
    switch_to_scheduler();
    asm volatile("" ::: "memory");
}

inline void syncthreads(const char* file, int line, int site) { wait_here(State::barrier, file, line, site); }

template <class T>
inline T warp_exchange(WarpOp op, const char* file, int line, int site, unsigned mask, T value, int arg, int width) {
    static_assert(std::is_trivially_copyable<T>::value && sizeof(T) <= 16,
                  "cudasim: warp shuffles of types larger than 16 bytes are not supported");
    Fiber* f = g_current;
    f->op = op;
    f->mask = mask;
    f->arg = arg;
    f->width = width;
    std::memset(f->value, 0, sizeof f->value);
    std::memcpy(f->value, &value, sizeof(T));
    wait_here(State::warp, file, line, site);
    T out;
    std::memcpy(&out, f->result, sizeof(T));
    return out;
}

template <class T>
inline T shfl_at(const char* file, int line, int site, unsigned mask, T v, int src, int width = 32) {
    return warp_exchange(WarpOp::shfl, file, line, site, mask, v, src, width);
}
template <class T>
inline T shfl_up_at(const char* file, int line, int site, unsigned mask, T v, unsigned delta, int width = 32) {
    return warp_exchange(WarpOp::shfl_up, file, line, site, mask, v, static_cast<int>(delta), width);
}
template <class T>
inline T shfl_down_at(const char* file, int line, int site, unsigned mask, T v, unsigned delta, int width = 32) {
    return warp_exchange(WarpOp::shfl_down, file, line, site, mask, v, static_cast<int>(delta), width);
}
template <class T>
inline T shfl_xor_at(const char* file, int line, int site, unsigned mask, T v, int lane_mask, int width = 32) {
    return warp_exchange(WarpOp::shfl_xor, file, line, site, mask, v, lane_mask, width);
}
// Votes return the ballot of the lanes in the mask; __any_sync/__all_sync reduce it.
inline unsigned vote_at(WarpOp op, const char* file, int line, int site, unsigned mask, int predicate) {
    warp_exchange(op, file, line, site, mask, static_cast<int>(predicate != 0), 0, 32);
    return g_current->vote;
}
inline int any_at(const char* file, int line, int site, unsigned mask, int predicate) {
    return vote_at(WarpOp::any, file, line, site, mask, predicate) != 0u;
}
inline int all_at(const char* file, int line, int site, unsigned mask, int predicate) {
    return vote_at(WarpOp::all, file, line, site, mask, predicate) == mask;
}
inline void syncwarp_at(const char* file, int line, int site, unsigned mask = 0xffffffffu) {
    vote_at(WarpOp::syncwarp, file, line, site, mask, 0);
}

}  // namespace cudasim

// ------------------------------------------------------------------------------------------
// Built-in variables and intrinsics as the kernel source spells them
// ------------------------------------------------------------------------------------------
#define threadIdx (::cudasim::g_current->tid)
#define blockIdx (::cudasim::g_block_idx)
#define blockDim (::cudasim::g_block_dim)
#define gridDim (::cudasim::g_grid_dim)
#define warpSize 32

#define __syncthreads() ::cudasim::syncthreads(__FILE__, __LINE__, __COUNTER__)
#define __syncwarp(...) ::cudasim::syncwarp_at(__FILE__, __LINE__, __COUNTER__, ##__VA_ARGS__)
#define __shfl_sync(...) ::cudasim::shfl_at(__FILE__, __LINE__, __COUNTER__, __VA_ARGS__)
#define __shfl_up_sync(...) ::cudasim::shfl_up_at(__FILE__, __LINE__, __COUNTER__, __VA_ARGS__)
#define __shfl_down_sync(...) ::cudasim::shfl_down_at(__FILE__, __LINE__, __COUNTER__, __VA_ARGS__)
#define __shfl_xor_sync(...) ::cudasim::shfl_xor_at(__FILE__, __LINE__, __COUNTER__, __VA_ARGS__)
#define __ballot_sync(mask, pred) \
    ::cudasim::vote_at(::cudasim::WarpOp::ballot, __FILE__, __LINE__, __COUNTER__, (mask), (pred))
#define __any_sync(mask, pred) ::cudasim::any_at(__FILE__, __LINE__, __COUNTER__, (mask), (pred))
#define __all_sync(mask, pred) ::cudasim::all_at(__FILE__, __LINE__, __COUNTER__, (mask), (pred))
#define __threadfence() asm volatile("" ::: "memory")
#define __threadfence_block() asm volatile("" ::: "memory")
#define __trap() ::cudasim::fail_at("__trap()", "", __FILE__, __LINE__)
#undef assert
#define assert(e) ((e) ? (void)0 : ::cudasim::fail_at("device assert failed: ", #e, __FILE__, __LINE__))

// math functions that CUDA provides beyond <cmath>
__forceinline__ double rsqrt(double x) { return 1.0 / std::sqrt(x); }
__forceinline__ float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
__forceinline__ float __expf(float x) { return std::exp(x); }
__forceinline__ float __logf(float x) { return std::log(x); }
__forceinline__ float __fdividef(float a, float b) { return a / b; }
__forceinline__ float __saturatef(float x) { return x < 0.f ? 0.f : (x > 1.f ? 1.f : x); }
__forceinline__ int __popc(unsigned x) { return __builtin_popcount(x); }
__forceinline__ int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
__forceinline__ int __ffs(int x) { return __builtin_ffs(x); }
__forceinline__ int __clz(int x) { return x == 0 ? 32 : __builtin_clz(static_cast<unsigned>(x)); }
template <class T>
__forceinline__ T __ldg(const T* p) { return *p; }
__forceinline__ int min(int a, int b) { return a < b ? a : b; }
__forceinline__ unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
__forceinline__ long long min(long long a, long long b) { return a < b ? a : b; }
__forceinline__ unsigned long long min(unsigned long long a, unsigned long long b) { return a < b ? a : b; }
__forceinline__ float min(float a, float b) { return std::fmin(a, b); }
__forceinline__ double min(double a, double b) { return std::fmin(a, b); }
__forceinline__ int max(int a, int b) { return a > b ? a : b; }
__forceinline__ unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
__forceinline__ long long max(long long a, long long b) { return a > b ? a : b; }
__forceinline__ unsigned long long max(unsigned long long a, unsigned long long b) { return a > b ? a : b; }
__forceinline__ float max(float a, float b) { return std::fmax(a, b); }
__forceinline__ double max(double a, double b) { return std::fmax(a, b); }

// Atomics: fibers switch only at synchronization points, so a read-modify-write is atomic.
template <class T>
__forceinline__ T atomicAdd(T* p, T v) { T old = *p; *p = old + v; return old; }
template <class T>
__forceinline__ T atomicSub(T* p, T v) { T old = *p; *p = old - v; return old; }
template <class T>
__forceinline__ T atomicExch(T* p, T v) { T old = *p; *p = v; return old; }
template <class T>
__forceinline__ T atomicMin(T* p, T v) { T old = *p; *p = v < old ? v : old; return old; }
template <class T>
__forceinline__ T atomicMax(T* p, T v) { T old = *p; *p = v > old ? v : old; return old; }
template <class T>
__forceinline__ T atomicCAS(T* p, T compare, T v) { T old = *p; if (old == compare) *p = v; return old; }
template <class T>
__forceinline__ T atomicAnd(T* p, T v) { T old = *p; *p = old & v; return old; }
template <class T>
__forceinline__ T atomicOr(T* p, T v) { T old = *p; *p = old | v; return old; }
template <class T>
__forceinline__ T atomicXor(T* p, T v) { T old = *p; *p = old ^ v; return old; }
