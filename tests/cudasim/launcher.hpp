// cudasim launcher: the per-kernel glue, included after the kernel source. It deduces each
// kernel's parameter types from its function type and exports two C functions per kernel for
// the Python driver: its signature and its launch (which hands over to core.cpp).
#pragma once

#include <cstdio>
#include <type_traits>
#include <utility>

#include "core.hpp"

// The section of the module's __shared__ variables (weak: a module may have none). Hidden, so
// every module sees its own section, never another loaded module's.
extern "C" char __start_cudasim_shared[] __attribute__((weak, visibility("hidden")));
extern "C" char __stop_cudasim_shared[] __attribute__((weak, visibility("hidden")));

namespace cudasim {

template <class T>
constexpr char kind_of() {
    if constexpr (std::is_void<T>::value) return 'S';
    else if constexpr (std::is_same<T, bool>::value) return 'b';
    else if constexpr (std::is_floating_point<T>::value) return 'f';
    else if constexpr (std::is_integral<T>::value) return std::is_signed<T>::value ? 'i' : 'u';
    else return 'S';
}
template <class T>
constexpr size_t size_of() {
    if constexpr (std::is_void<T>::value) return 1;
    else return sizeof(T);
}

template <class A>
constexpr ParamInfo param_info() {
    if constexpr (std::is_pointer<A>::value)
        return ParamInfo{true, std::is_const<typename std::remove_pointer<A>::type>::value, sizeof(A)};
    else
        return ParamInfo{false, false, sizeof(A)};
}

// One token per parameter: "P" (pointer) with "c" when the pointee is const, or "V" (by value),
// then the element kind (f, i, u, b, S) and size in bytes, e.g. "Pcf8" for const double*.
template <class A>
int write_token(char* out, size_t room) {
    if constexpr (std::is_pointer<A>::value) {
        using E = typename std::remove_pointer<A>::type;
        using B = typename std::remove_cv<E>::type;
        return std::snprintf(out, room, "P%s%c%zu,", std::is_const<E>::value ? "c" : "", kind_of<B>(), size_of<B>());
    } else {
        return std::snprintf(out, room, "V%c%zu,", kind_of<A>(), sizeof(A));
    }
}

template <class... A>
const char* signature(void (*)(A...)) {
    static char text[2048];
    size_t used = 0;
    ((used += static_cast<size_t>(write_token<A>(text + used, sizeof text - used))), ...);
    if (used) text[used - 1] = 0;  // drop the last comma
    return text;
}

template <class... A, size_t... I>
void call_with(void (*kernel)(A...), void** args, std::index_sequence<I...>) {
    kernel(*static_cast<typename std::remove_reference<A>::type*>(args[I])...);
}

template <class... A>
struct Thunk {
    static inline void (*kernel)(A...) = nullptr;
    static void run(void** args) { call_with(kernel, args, std::index_sequence_for<A...>{}); }
};

template <class... A>
int launch(void (*kernel)(A...), const LaunchRequest* req, LaunchResult* res) {
    static constexpr ParamInfo params[] = {param_info<A>()..., ParamInfo{false, false, 0}};
    Thunk<A...>::kernel = kernel;
    return run_launch(req, res, params, static_cast<int>(sizeof...(A)), &Thunk<A...>::run, __start_cudasim_shared,
                      __stop_cudasim_shared);
}

}  // namespace cudasim

#define CUDASIM_EXPORT(index, ...)                                                               \
    extern "C" __attribute__((visibility("default"))) int cudasim_launch_##index(               \
        const cudasim::LaunchRequest* req, cudasim::LaunchResult* res) {                        \
        return cudasim::launch(&__VA_ARGS__, req, res);                                         \
    }                                                                                           \
    extern "C" __attribute__((visibility("default"))) const char* cudasim_signature_##index() { \
        return cudasim::signature(&__VA_ARGS__);                                                \
    }
