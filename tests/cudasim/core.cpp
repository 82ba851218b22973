// cudasim core: the part of the CPU kernel harness that does not depend on the kernel — fibers
// and their context switch, the block scheduler and its checks of __syncthreads and the warp
// intrinsics, guarded argument memory, fault trapping and the launch itself. Compiled once into
// a shared library that every kernel module links against (tests/cudasim/__init__.py), so a
// kernel module compiles in a fraction of a second. See runtime.hpp for what is checked.

#include "runtime.hpp"

#include <algorithm>
#include <csetjmp>
#include <csignal>
#include <ctime>
#include <string>
#include <sys/mman.h>
#include <unistd.h>
#include <vector>

#include "core.hpp"

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

namespace cudasim {

Fiber* g_current = nullptr;
uint3 g_block_idx{0, 0, 0};
dim3 g_block_dim{1, 1, 1};
dim3 g_grid_dim{1, 1, 1};

namespace {

Fiber* g_fibers = nullptr;
int g_n_threads = 0;
void* g_scheduler_sp = nullptr;
void (*g_thunk)(void**) = nullptr;
void** g_thunk_args = nullptr;
char g_error[4096] = {0};
Stats g_stats{};

// Thrown by fail() when the scheduler itself (not a fiber) finds a violation.
struct Failure {};

const char* warp_op_name(WarpOp op) {
    switch (op) {
        case WarpOp::shfl: return "__shfl_sync";
        case WarpOp::shfl_up: return "__shfl_up_sync";
        case WarpOp::shfl_down: return "__shfl_down_sync";
        case WarpOp::shfl_xor: return "__shfl_xor_sync";
        case WarpOp::ballot: return "__ballot_sync";
        case WarpOp::any: return "__any_sync";
        case WarpOp::all: return "__all_sync";
        case WarpOp::syncwarp: return "__syncwarp";
    }
    return "?";
}

// Records the first error and abandons the launch: a fiber hands control back to the scheduler
// for good; on the scheduler's own stack the check unwinds to the grid loop.
[[noreturn]] void fail(const std::string& message) {
    if (!g_error[0]) std::snprintf(g_error, sizeof g_error, "%s", message.c_str());
    if (g_current == nullptr) throw Failure{};
    switch_to_scheduler();
    std::abort();  // unreachable: a failed fiber is never resumed
}

std::string where(const char* file, int line) { return std::string(file) + ":" + std::to_string(line); }

std::string thread_name(const Fiber& f) {
    return "thread (" + std::to_string(f.tid.x) + "," + std::to_string(f.tid.y) + "," + std::to_string(f.tid.z) +
           ") of block (" + std::to_string(g_block_idx.x) + "," + std::to_string(g_block_idx.y) + "," +
           std::to_string(g_block_idx.z) + ")";
}

// ------------------------------------------------------------------------------------------
// Scheduler: one block at a time
// ------------------------------------------------------------------------------------------
int warp_size_of(int warp) { return std::min(32, g_n_threads - 32 * warp); }

std::string describe_wait(const Fiber& f) {
    switch (f.state) {
        case State::exited: return "has exited";
        case State::barrier: return "waits at __syncthreads (" + where(f.file, f.line) + ")";
        case State::warp: {
            char m[16];
            std::snprintf(m, sizeof m, "0x%08x", f.mask);
            return std::string("waits at ") + warp_op_name(f.op) + " (" + where(f.file, f.line) + ", mask " + m + ")";
        }
        default: return "is running";
    }
}

// Completes the warp operations whose participants have all arrived. Returns true when any
// fiber became runnable; fails on a contract violation.
bool resolve_warp_ops() {
    bool progressed = false;
    const int n_warps = (g_n_threads + 31) / 32;
    for (int w = 0; w < n_warps; ++w) {
        Fiber* lanes = g_fibers + 32 * w;
        const int size = warp_size_of(w);
        for (int l = 0; l < size; ++l) {
            Fiber& f = lanes[l];
            if (f.state != State::warp) continue;
            const unsigned mask = f.mask;
            const char* op = warp_op_name(f.op);
            if (!(mask >> l & 1u)) {
                char m[16];
                std::snprintf(m, sizeof m, "0x%08x", mask);
                fail(std::string(op) + " at " + where(f.file, f.line) + ": the calling " + thread_name(f) +
                     " (lane " + std::to_string(l) + ") is not in its mask " + m);
            }
            if (size < 32 && (mask >> size) != 0u) {
                char m[16];
                std::snprintf(m, sizeof m, "0x%08x", mask);
                fail(std::string(op) + " at " + where(f.file, f.line) + ": mask " + m + " names lanes " +
                     std::to_string(size) + "-31 of warp " + std::to_string(w) + ", which do not exist: the block has " +
                     std::to_string(g_n_threads) + " threads, not a multiple of 32");
            }
            // every lane of the mask must wait at the same intrinsic with the same mask
            bool ready = true;
            for (int k = 0; k < size; ++k) {
                if (!(mask >> k & 1u)) continue;
                const Fiber& o = lanes[k];
                if (o.state == State::runnable) {
                    ready = false;
                    continue;
                }
                if (o.state != State::warp || o.op != f.op || o.mask != mask || o.site != f.site) {
                    fail(std::string(op) + " at " + where(f.file, f.line) + " by lane " + std::to_string(l) +
                         " of warp " + std::to_string(w) + " names lane " + std::to_string(k) + " in its mask, but lane " +
                         std::to_string(k) + " " + describe_wait(o));
                }
            }
            if (!ready) continue;
            unsigned vote_bits = 0;
            for (int k = 0; k < size; ++k)
                if (mask >> k & 1u) {
                    int pred;
                    std::memcpy(&pred, lanes[k].value, sizeof pred);
                    if (pred) vote_bits |= 1u << k;
                }
            for (int k = 0; k < size; ++k) {
                if (!(mask >> k & 1u)) continue;
                Fiber& o = lanes[k];
                const int width = o.width;
                if (width < 1 || width > 32 || (width & (width - 1)) != 0)
                    fail(std::string(op) + " at " + where(o.file, o.line) + ": width " + std::to_string(width) +
                         " is not a power of two in [1, 32]");
                int src = k;
                const int base = k & ~(width - 1);
                switch (o.op) {
                    case WarpOp::shfl: src = base + (o.arg & (width - 1)); break;
                    case WarpOp::shfl_up: src = (k - base) >= o.arg ? k - o.arg : k; break;
                    case WarpOp::shfl_down: src = (k - base) + o.arg < width ? k + o.arg : k; break;
                    case WarpOp::shfl_xor: {
                        const int t = k ^ o.arg;
                        src = (t >= base + width || t < 0 || t > 31) ? k : t;
                        break;
                    }
                    default: break;
                }
                if (o.op == WarpOp::shfl || o.op == WarpOp::shfl_up || o.op == WarpOp::shfl_down ||
                    o.op == WarpOp::shfl_xor) {
                    if (src >= size || !(mask >> src & 1u)) {
                        char m[16];
                        std::snprintf(m, sizeof m, "0x%08x", mask);
                        fail(std::string(op) + " at " + where(o.file, o.line) + ": lane " + std::to_string(k) +
                             " of warp " + std::to_string(w) + " reads lane " + std::to_string(src) +
                             (src >= size ? ", which does not exist" : ", which is not in the mask ") +
                             (src >= size ? std::string() : std::string(m)) + ": the value would be undefined");
                    }
                    std::memcpy(o.result, lanes[src].value, sizeof o.result);
                } else {
                    o.vote = vote_bits;
                }
            }
            for (int k = 0; k < size; ++k)
                if (mask >> k & 1u) lanes[k].state = State::runnable;
            ++g_stats.warp_ops;
            progressed = true;
        }
    }
    return progressed;
}

// Releases a barrier all live threads reached; fails on divergence or deadlock.
bool resolve_barrier() {
    const Fiber* first = nullptr;
    int at_barrier = 0, exited = 0;
    for (int i = 0; i < g_n_threads; ++i) {
        const Fiber& f = g_fibers[i];
        if (f.state == State::exited) {
            ++exited;
        } else if (f.state == State::barrier) {
            ++at_barrier;
            if (!first) first = &f;
        } else if (f.state == State::warp) {
            fail("deadlock: " + thread_name(f) + " " + describe_wait(f) + ", but the lanes of its mask never arrive");
        }
    }
    if (at_barrier == 0) return false;  // all exited: the block is done
    if (exited) {
        fail("__syncthreads at " + where(first->file, first->line) + " is reached by " + std::to_string(at_barrier) +
             " threads while " + std::to_string(exited) +
             " threads of the block have exited: a barrier in divergent code is undefined behaviour");
    }
    for (int i = 0; i < g_n_threads; ++i) {
        const Fiber& f = g_fibers[i];
        if (f.site != first->site) {
            fail("threads wait at different barriers: " + thread_name(*first) + " at __syncthreads (" +
                 where(first->file, first->line) + "), " + thread_name(f) + " at __syncthreads (" +
                 where(f.file, f.line) + ")");
        }
    }
    for (int i = 0; i < g_n_threads; ++i) g_fibers[i].state = State::runnable;
    ++g_stats.barriers;
    return true;
}


}  // namespace

[[noreturn]] void fail_at(const char* what, const char* expression, const char* file, int line) {
    fail(std::string(what) + expression + " at " + where(file, line));
}

// ------------------------------------------------------------------------------------------
// Context switch. glibc's swapcontext makes a system call (the signal mask) on every switch,
// and a column fit switches millions of times, so x86-64 gets a 20-instruction switch of the
// callee-saved registers; other machines use ucontext.
// ------------------------------------------------------------------------------------------
extern "C" void cudasim_fiber_main();

#if defined(__x86_64__)
extern "C" void cudasim_switch(void** save_sp, void* new_sp);
extern "C" void cudasim_fiber_start();
asm(R"(
    .text
    .p2align 4
    .hidden cudasim_switch
    .type cudasim_switch,@function
cudasim_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size cudasim_switch, .-cudasim_switch

    .p2align 4
    .hidden cudasim_fiber_start
    .type cudasim_fiber_start,@function
cudasim_fiber_start:
    andq $-16, %rsp
    call cudasim_fiber_main
    ud2
    .size cudasim_fiber_start, .-cudasim_fiber_start
)");

inline void prepare_stack(Fiber& f) {
    // a frame that cudasim_switch "returns" into: saved MXCSR/x87 control word, six callee-saved
    // registers, then the entry point as the return address
    auto* top = reinterpret_cast<std::uint64_t*>(f.stack_lo + f.stack_size);
    top = reinterpret_cast<std::uint64_t*>(reinterpret_cast<std::uintptr_t>(top) & ~std::uintptr_t(15));
    std::uint64_t* sp = top - 8;
    std::uint32_t csr[2];
    asm volatile("stmxcsr %0" : "=m"(csr[0]));
    asm volatile("fnstcw %0" : "=m"(csr[1]));
    std::memcpy(sp, csr, 8);
    for (int i = 1; i <= 6; ++i) sp[i] = 0;
    sp[7] = reinterpret_cast<std::uint64_t>(&cudasim_fiber_start);
    f.sp = sp;
}
inline void switch_into(Fiber& f) { cudasim_switch(&g_scheduler_sp, f.sp); }
void switch_to_scheduler() { cudasim_switch(&g_current->sp, g_scheduler_sp); }
#else
ucontext_t g_scheduler_ctx;
std::vector<ucontext_t> g_contexts;
inline void prepare_stack(Fiber& f) {
    ucontext_t& c = g_contexts[f.linear];
    getcontext(&c);
    c.uc_stack.ss_sp = f.stack_lo;
    c.uc_stack.ss_size = f.stack_size;
    c.uc_link = nullptr;
    makecontext(&c, cudasim_fiber_main, 0);
}
inline void switch_into(Fiber& f) { swapcontext(&g_scheduler_ctx, &g_contexts[f.linear]); }
void switch_to_scheduler() { swapcontext(&g_contexts[g_current->linear], &g_scheduler_ctx); }
#endif

}  // namespace cudasim

extern "C" void cudasim_fiber_main() {
    cudasim::g_thunk(cudasim::g_thunk_args);
    cudasim::g_current->state = cudasim::State::exited;
    cudasim::switch_to_scheduler();
    std::abort();  // an exited fiber is never resumed
}

namespace cudasim {

inline size_t page_size() { return static_cast<size_t>(sysconf(_SC_PAGESIZE)); }

// ------------------------------------------------------------------------------------------
// Memory with inaccessible guard pages around it
// ------------------------------------------------------------------------------------------
struct Guarded {
    char* map = nullptr;  // whole mapping (guard + data pages + guard)
    size_t map_size = 0;
    char* data = nullptr;  // the array's first byte
    size_t nbytes = 0;

    Guarded() = default;
    Guarded(const Guarded&) = delete;
    Guarded& operator=(const Guarded&) = delete;
    size_t guard = 0;  // inaccessible bytes on each side

    Guarded(Guarded&& o) noexcept : map(o.map), map_size(o.map_size), data(o.data), nbytes(o.nbytes), guard(o.guard) {
        o.map = nullptr;
    }
    Guarded& operator=(Guarded&& o) noexcept {
        std::swap(map, o.map);
        std::swap(map_size, o.map_size);
        std::swap(data, o.data);
        std::swap(nbytes, o.nbytes);
        std::swap(guard, o.guard);
        return *this;
    }

    // at_end: the array ends exactly where the upper guard begins (overruns fault at the first
    // byte); otherwise it starts exactly after the lower guard (underruns fault). guard_bytes:
    // at least a page (fiber stacks take a large one: a big local array skips a single page).
    bool allocate(size_t n, bool at_end, size_t guard_bytes = 0) {
        const size_t page = page_size();
        guard = std::max(page, (guard_bytes + page - 1) / page * page);
        const size_t body = (n + page - 1) / page * page + (n == 0 ? page : 0);
        map_size = body + 2 * guard;
        void* m = mmap(nullptr, map_size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (m == MAP_FAILED) return false;
        map = static_cast<char*>(m);
        if (mprotect(map + guard, body, PROT_READ | PROT_WRITE) != 0) return false;
        nbytes = n;
        data = at_end ? map + guard + body - n : map + guard;
        return true;
    }
    void protect_read_only() { mprotect(map + guard, map_size - 2 * guard, PROT_READ); }
    bool contains_guard(const char* a) const {
        return map && a >= map && a < map + map_size && (a < map + guard || a >= map + map_size - guard);
    }
    ~Guarded() {
        if (map) munmap(map, map_size);
    }
};

// Fiber stacks: reused across launches, each between large guards.
constexpr size_t kStackSize = 256 * 1024;
constexpr size_t kStackGuard = 4 * 1024 * 1024;
inline std::vector<Guarded>& stack_pool() {
    static std::vector<Guarded> pool;
    return pool;
}

// ------------------------------------------------------------------------------------------
// Faults: SIGSEGV/SIGBUS and the watchdog timer jump back to the launcher
// ------------------------------------------------------------------------------------------
sigjmp_buf g_fault_env;
volatile sig_atomic_t g_in_launch = 0;
volatile sig_atomic_t g_fault_signal = 0;
void* volatile g_fault_address = nullptr;
struct sigaction g_old_segv {}, g_old_bus {}, g_old_fpe {}, g_old_watchdog {};

inline int watchdog_signal() { return SIGRTMIN + 5; }

}  // namespace cudasim

extern "C" void cudasim_on_fault(int sig, siginfo_t* info, void*) {
    using namespace cudasim;
    if (!g_in_launch) {
        // a late watchdog tick is dropped; a fault outside a launch is not ours: put the
        // previous handler back and let the instruction fault again into it
        if (sig == watchdog_signal()) return;
        sigaction(sig, sig == SIGSEGV ? &g_old_segv : sig == SIGBUS ? &g_old_bus : &g_old_fpe, nullptr);
        return;
    }
    g_fault_signal = sig;
    g_fault_address = info ? info->si_addr : nullptr;
    siglongjmp(g_fault_env, 1);
}

namespace cudasim {

struct SignalGuard {
    stack_t old_stack{};
    std::vector<char> alt;
    timer_t timer{};
    bool has_timer = false;

    explicit SignalGuard(double timeout_s) : alt(64 * 1024) {
        stack_t ss{};
        ss.ss_sp = alt.data();
        ss.ss_size = alt.size();
        sigaltstack(&ss, &old_stack);
        struct sigaction sa {};
        sa.sa_sigaction = cudasim_on_fault;
        sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGSEGV, &sa, &g_old_segv);
        sigaction(SIGBUS, &sa, &g_old_bus);
        sigaction(SIGFPE, &sa, &g_old_fpe);
        sigaction(watchdog_signal(), &sa, &g_old_watchdog);
        if (timeout_s > 0) {
            struct sigevent sev {};
            sev.sigev_notify = SIGEV_THREAD_ID;
            sev.sigev_signo = watchdog_signal();
#ifdef sigev_notify_thread_id
            sev.sigev_notify_thread_id = static_cast<pid_t>(gettid());
#else
            sev._sigev_un._tid = static_cast<pid_t>(gettid());
#endif
            if (timer_create(CLOCK_MONOTONIC, &sev, &timer) == 0) {
                has_timer = true;
                struct itimerspec its {};
                its.it_value.tv_sec = static_cast<time_t>(timeout_s);
                its.it_value.tv_nsec = static_cast<long>((timeout_s - static_cast<double>(its.it_value.tv_sec)) * 1e9);
                timer_settime(timer, 0, &its, nullptr);
            }
        }
    }
    ~SignalGuard() {
        if (has_timer) timer_delete(timer);
        sigaction(SIGSEGV, &g_old_segv, nullptr);
        sigaction(SIGBUS, &g_old_bus, nullptr);
        sigaction(SIGFPE, &g_old_fpe, nullptr);
        sigaction(watchdog_signal(), &g_old_watchdog, nullptr);
        sigaltstack(&old_stack, nullptr);
    }
};

// ------------------------------------------------------------------------------------------
// The launch
// ------------------------------------------------------------------------------------------
// Runs every block of the grid with the threads resumed in the given order.
bool run_grid(bool descending, unsigned char poison, char* shared_lo, char* shared_hi) {
    const unsigned nx = g_block_dim.x, ny = g_block_dim.y;
    const int n = g_n_threads;
    auto& pool = stack_pool();
    while (static_cast<int>(pool.size()) < n) {
        pool.emplace_back();
        if (!pool.back().allocate(kStackSize, true, kStackGuard)) {
            pool.pop_back();
            std::snprintf(g_error, sizeof g_error, "cudasim: cannot allocate fiber stacks");
            return false;
        }
    }
#if !defined(__x86_64__)
    g_contexts.resize(std::max<size_t>(g_contexts.size(), n));
#endif
    static std::vector<Fiber> fibers;  // static: a fault jumps out of this frame
    fibers.assign(n, Fiber{});
    g_fibers = fibers.data();
    const size_t shared_size = shared_lo ? static_cast<size_t>(shared_hi - shared_lo) : 0;
    for (unsigned bz = 0; bz < g_grid_dim.z; ++bz)
        for (unsigned by = 0; by < g_grid_dim.y; ++by)
            for (unsigned bx = 0; bx < g_grid_dim.x; ++bx) {
                g_block_idx = uint3{bx, by, bz};
                if (shared_size) std::memset(shared_lo, poison, shared_size);
                for (int i = 0; i < n; ++i) {
                    Fiber& f = fibers[i];
                    f = Fiber{};
                    f.linear = i;
                    f.warp = i / 32;
                    f.lane = i % 32;
                    f.tid = uint3{static_cast<unsigned>(i % nx), static_cast<unsigned>((i / nx) % ny),
                                  static_cast<unsigned>(i / (nx * ny))};
                    f.stack_lo = pool[i].data;
                    f.stack_size = kStackSize;
                    prepare_stack(f);
                }
                ++g_stats.blocks;
                g_stats.threads += n;
                try {
                    for (;;) {
                        // every runnable thread runs until it waits or exits...
                        for (int k = 0; k < n; ++k) {
                            Fiber& f = fibers[descending ? n - 1 - k : k];
                            if (f.state != State::runnable) continue;
                            g_current = &f;
                            ++g_stats.switches;
                            switch_into(f);
                            g_current = nullptr;
                            if (g_error[0]) return false;
                        }
                        // ...then complete the warp operations and barriers that everyone reached
                        if (resolve_warp_ops()) continue;
                        if (!resolve_barrier()) break;  // every thread has exited
                    }
                } catch (const Failure&) {
                    g_current = nullptr;
                    return false;
                }
            }
    return true;
}

int run_launch(const LaunchRequest* req, LaunchResult* res, const ParamInfo* params, int n_params,
               void (*thunk)(void**), char* shared_lo, char* shared_hi) {
    std::memset(res, 0, sizeof *res);
    g_error[0] = 0;
    g_stats = Stats{};
    auto error = [&](const std::string& m) {
        std::snprintf(res->error, sizeof res->error, "%s", m.c_str());
        return 1;
    };
    if (req->n_args != n_params)
        return error("the kernel takes " + std::to_string(n_params) + " arguments, " + std::to_string(req->n_args) +
                     " were given");
    const unsigned* b = req->block;
    const unsigned* g = req->grid;
    const unsigned long long threads = 1ull * b[0] * b[1] * b[2];
    if (!b[0] || !b[1] || !b[2] || !g[0] || !g[1] || !g[2] || threads > 1024 || b[0] > 1024 || b[1] > 1024 ||
        b[2] > 64 || g[0] > 2147483647u || g[1] > 65535 || g[2] > 65535) {
        return error("invalid configuration argument: grid (" + std::to_string(g[0]) + "," + std::to_string(g[1]) + "," +
                     std::to_string(g[2]) + "), block (" + std::to_string(b[0]) + "," + std::to_string(b[1]) + "," +
                     std::to_string(b[2]) + ") (CUDA refuses blocks above 1024 threads or 1024x1024x64, grids above " +
                     "2^31-1 x 65535 x 65535, and zero sizes)");
    }
    std::vector<char> is_pointer(n_params + 1), is_const(n_params + 1);
    for (int i = 0; i < n_params; ++i) {
        is_pointer[i] = params[i].pointer;
        is_const[i] = params[i].is_const;
        if (!is_pointer[i] && static_cast<size_t>(req->nbytes[i]) != params[i].size)
            return error("argument " + std::to_string(i) + ": " + std::to_string(req->nbytes[i]) +
                         " bytes given for a parameter of " + std::to_string(params[i].size) + " bytes");
    }
    g_thunk = thunk;
    g_block_dim = dim3(b[0], b[1], b[2]);
    g_grid_dim = dim3(g[0], g[1], g[2]);
    g_n_threads = static_cast<int>(threads);

    // one run per order, each on its own guarded copies of the arrays
    std::vector<std::vector<Guarded>> runs;
    const bool orders[2] = {(req->orders & 1) != 0, (req->orders & 2) != 0};
    for (int o = 0; o < 2; ++o) {
        if (!orders[o]) continue;
        runs.emplace_back(n_params);
        std::vector<Guarded>& copies = runs.back();
        std::vector<void*> slots(n_params + 1);
        std::vector<void*> values(n_params + 1);
        for (int i = 0; i < n_params; ++i) {
            if (!is_pointer[i]) {
                values[i] = req->values[i];
                continue;
            }
            const size_t nb = static_cast<size_t>(req->nbytes[i]);
            if (!copies[i].allocate(nb, o == 0)) return error("cudasim: cannot map argument memory");
            if (nb) std::memcpy(copies[i].data, req->values[i], nb);
            if (is_const[i]) copies[i].protect_read_only();
            slots[i] = copies[i].data;
            values[i] = &slots[i];
        }
        g_thunk_args = values.data();
        bool ok = false;
        {
            SignalGuard guard(req->timeout_s);
            if (sigsetjmp(g_fault_env, 1) == 0) {
                g_in_launch = 1;
                ok = run_grid(o == 1, o == 0 ? 0xff : 0x7f, shared_lo, shared_hi);
                g_in_launch = 0;
            } else {
                g_in_launch = 0;
                const char* addr = static_cast<const char*>(g_fault_address);
                std::string what;
                if (g_fault_signal == watchdog_signal()) {
                    what = "the kernel ran longer than " + std::to_string(req->timeout_s) +
                           " s (an endless loop, or a barrier some threads never reach)";
                } else if (g_fault_signal == SIGFPE) {
                    what = "arithmetic exception (integer division by zero?)";
                } else {
                    what = "invalid memory access at address " + std::to_string(reinterpret_cast<std::uintptr_t>(addr));
                    for (int i = 0; i < n_params; ++i) {
                        const Guarded& c = copies[i];
                        if (!is_pointer[i] || !c.map || !(addr >= c.map && addr < c.map + c.map_size)) continue;
                        if (addr >= c.data && addr < c.data + c.nbytes)
                            what = "write into argument " + std::to_string(i) +
                                   ", a const (read-only) input, at byte " + std::to_string(addr - c.data);
                        else if (addr >= c.data + c.nbytes)
                            what = "access " + std::to_string(addr - (c.data + c.nbytes)) +
                                   " bytes past the end of argument " + std::to_string(i) + " (" +
                                   std::to_string(c.nbytes) + " bytes)";
                        else
                            what = "access " + std::to_string(c.data - addr) +
                                   " bytes before the start of argument " + std::to_string(i);
                    }
                    const bool below_own_stack = g_current && addr < g_current->stack_lo &&
                                                 addr >= g_current->stack_lo - kStackGuard;
                    for (const Guarded& s : stack_pool())
                        if (below_own_stack || s.contains_guard(addr))
                            what = "stack overflow of a thread (more than 256 KiB of locals)";
                }
                std::string thread = g_current ? " in " + thread_name(*g_current) : std::string();
                return error(what + thread + (o == 1 ? " (threads resumed in descending order)" : ""));
            }
        }
        if (!ok) return error(std::string(g_error) + (o == 1 ? " (threads resumed in descending order)" : ""));
    }
    // both orders must agree byte for byte
    if (runs.size() == 2) {
        for (int i = 0; i < n_params; ++i) {
            if (!is_pointer[i]) continue;
            const Guarded &x = runs[0][i], &y = runs[1][i];
            if (x.nbytes && std::memcmp(x.data, y.data, x.nbytes) != 0) {
                size_t k = 0;
                while (x.data[k] == y.data[k]) ++k;
                return error("argument " + std::to_string(i) + " differs between thread orders (first at byte " +
                             std::to_string(k) +
                             "): the result depends on scheduling, i.e. a race such as a missing __syncthreads, "
                             "or a read of shared memory nobody wrote");
            }
        }
    }
    for (int i = 0; i < n_params; ++i)
        if (is_pointer[i] && !is_const[i] && runs[0][i].nbytes)
            std::memcpy(req->values[i], runs[0][i].data, runs[0][i].nbytes);
    res->stats = g_stats;
    return 0;
}

}  // namespace cudasim
