// registry.h — how the runtime finds a kernel by name and calls it with a
// cuLaunchKernel-style argument array (`void** args`, one pointer to each
// argument's value), checking nothing but the count: the Rust side checks
// the types against `sig` first.
#pragma once
#include <stddef.h>

#include <string>
#include <utility>

#include "simt_half.h"

struct simt_entry {
    const char* name;
    void (*call)(void** args);  // runs the kernel body for the calling thread
    std::string sig;            // parameter types, Rust spelling, comma separated
    size_t nargs;
};

// The kernel called `name`, or null.
const simt_entry* simt_find_kernel(const char* name);
// Entry i of the registry, or null past the end.
const simt_entry* simt_kernel_at(size_t i);

namespace simt_reg {
template <typename T>
struct TypeName;
#define SIMT_TYPE_NAME(T, s)                            \
    template <>                                         \
    struct TypeName<T> {                                \
        static const char* get() { return s; }          \
    };
SIMT_TYPE_NAME(int, "i32")
SIMT_TYPE_NAME(unsigned, "u32")
SIMT_TYPE_NAME(unsigned long, "u64")
SIMT_TYPE_NAME(unsigned long long, "u64")
SIMT_TYPE_NAME(float, "f32")
SIMT_TYPE_NAME(double, "f64")
SIMT_TYPE_NAME(const float*, "*const f32")
SIMT_TYPE_NAME(float*, "*mut f32")
SIMT_TYPE_NAME(const double*, "*const f64")
SIMT_TYPE_NAME(double*, "*mut f64")
SIMT_TYPE_NAME(const unsigned*, "*const u32")
SIMT_TYPE_NAME(unsigned*, "*mut u32")
SIMT_TYPE_NAME(const __half*, "*const f16")
SIMT_TYPE_NAME(__half*, "*mut f16")
SIMT_TYPE_NAME(const __nv_bfloat16*, "*const bf16")
SIMT_TYPE_NAME(__nv_bfloat16*, "*mut bf16")
SIMT_TYPE_NAME(const int*, "*const i32")
SIMT_TYPE_NAME(int*, "*mut i32")
#undef SIMT_TYPE_NAME

template <typename... A>
std::string sig(void (*)(A...)) {
    std::string s;
    const char* names[] = {"", TypeName<A>::get()...};
    for (size_t i = 1; i < sizeof...(A) + 1; ++i) {
        if (i > 1) s += ",";
        s += names[i];
    }
    return s;
}

template <typename... A, size_t... I>
void invoke_impl(void (*f)(A...), void** args, std::index_sequence<I...>) {
    f(*static_cast<typename std::remove_reference<A>::type*>(args[I])...);
}

template <typename... A>
void invoke(void (*f)(A...), void** args) {
    invoke_impl(f, args, std::index_sequence_for<A...>{});
}

template <typename... A>
constexpr size_t arity(void (*)(A...)) {
    return sizeof...(A);
}
}  // namespace simt_reg

#define SIMT_KERNEL(name) \
    {#name, [](void** a) { simt_reg::invoke(&name, a); }, simt_reg::sig(&name), simt_reg::arity(&name)},
