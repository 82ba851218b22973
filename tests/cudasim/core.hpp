// cudasim: the interface between a kernel module (launcher.hpp) and the shared core (core.cpp),
// and the structures the Python driver passes through ctypes.
#pragma once

#include <cstddef>

namespace cudasim {

struct Stats {
    long long blocks, threads, barriers, warp_ops, switches;
};

// Mirrors the ctypes structures of the Python driver (tests/cudasim/__init__.py).
struct LaunchRequest {
    unsigned grid[3];
    unsigned block[3];
    int n_args;
    void** values;  // pointer parameters: the host array; by value: the scalar's bytes
    const long long* nbytes;  // array size in bytes, or the scalar's size
    int orders;  // bit 0: threads resumed in ascending order; bit 1: descending
    double timeout_s;
};
struct LaunchResult {
    char error[4096];
    Stats stats;
};

// One kernel parameter as the compiler sees it.
struct ParamInfo {
    bool pointer;
    bool is_const;  // a pointer to const
    size_t size;  // bytes of the value (pointers: unused)
};

// Runs the grid (see core.cpp); thunk(args) calls the kernel with args[i] pointing at the
// i-th argument's value. shared_lo/hi bound the module's __shared__ section (null: none).
int run_launch(const LaunchRequest* req, LaunchResult* res, const ParamInfo* params, int n_params,
               void (*thunk)(void**), char* shared_lo, char* shared_hi);

}  // namespace cudasim
