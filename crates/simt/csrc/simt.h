// simt.h — the shim that lets kernels/*.cu compile as ordinary C++ and run
// on the CPU (one fiber per CUDA thread of a cooperating block).
//
// What it provides, and how it maps to the CPU:
// - threadIdx / blockIdx / blockDim / gridDim: each CUDA thread's own
//   (macros that read the running thread's Position);
// - __syncthreads(): a block barrier. Every thread of the block must reach
//   the same __syncthreads (same source line); a thread that reaches another
//   one, or leaves the kernel, while others wait is reported as a divergent
//   barrier, and barriers that can never complete (no waiting thread can go
//   on) are reported at once with where each waits, never a hang;
// - ADV_SHARED / ADV_DYN_SHARED (see kernels/common.cuh): per-block shared
//   memory, filled with 0xFF bytes (NaN) before each block; static shared
//   memory over 48 KiB is an error, as on the GPU;
// - __shfl_xor_sync / __shfl_down_sync / __shfl_up_sync / __shfl_sync /
//   __syncwarp: real warp semantics — the 32 lanes of a warp exchange values
//   through a warp barrier. Only the full mask is supported (every advgrad
//   kernel keeps warps whole), anything else is an error;
// - atomicAdd / atomicMax / atomicCAS on int and unsigned (none of the
//   kernels needs float atomics: sums are deterministic trees);
// - cp.async (kernels/common.cuh's cp_async16, cp_async_commit,
//   cp_async_wait): the 16 source bytes are read when the copy is issued
//   and written to shared memory when the thread waits for its group, so a
//   thread that reads the destination before waiting sees the poison; both
//   addresses must be 16-byte aligned, the destination in shared memory, and
//   a thread may not end the kernel with copies it never waited for;
// - vector accesses (kernels/common.cuh's load16/store16): a float4 or
//   double2 access at an address that is not 16-byte aligned fails the
//   launch with the kernel, the address and the thread, as on the GPU;
// - <mma.h>, <cuda_fp16.h>, <cuda_bf16.h>: the nvcuda::wmma subset of
//   mma.h (m16n16k16, warp-collective and strict about alignment; see
//   that file) and __half / __nv_bfloat16 with their conversions
//   (simt_half.h);
// - __global__, __device__, __forceinline__, __launch_bounds__, __align__,
//   float4 / double2, and the math functions through <math.h>.
// Blocks of a launch run one after another on the same set of fibers, all
// on the launching OS thread: a fiber runs until it waits at a barrier,
// then the next one that can go on runs. The barriers synchronise through
// std::mutex and atomics; under ThreadSanitizer each fiber is one of its
// fibers and the switches synchronise nothing, so a missing barrier shows
// up as a race. A launch whose plan declares independent threads runs them
// one after another instead, and any barrier, shuffle or shared memory in
// it is an error.
#pragma once
#define ADVGRAD_SIMT 1

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include <cstring>
#include <string>
#include <type_traits>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))

struct uint3 {
    unsigned x, y, z;
};
struct dim3 {
    unsigned x, y, z;
};
struct __attribute__((aligned(16))) float4 {
    float x, y, z, w;
};
struct __attribute__((aligned(16))) double2 {
    double x, y;
};
inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }
inline double2 make_double2(double x, double y) { return double2{x, y}; }

// CUDA's bit casts.
inline float __int_as_float(int i) {
    float f;
    memcpy(&f, &i, sizeof f);
    return f;
}
inline double __longlong_as_double(long long i) {
    double d;
    memcpy(&d, &i, sizeof d);
    return d;
}

// CUDA's integer min and max.
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a < b ? b : a; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a < b ? b : a; }

// Runtime functions that touch the word naming the running fiber, which
// every fiber of the OS thread reads: ThreadSanitizer leaves them alone.
#if defined(__SANITIZE_THREAD__)
#define SIMT_UNTRACKED __attribute__((no_sanitize("thread")))
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define SIMT_UNTRACKED __attribute__((no_sanitize("thread")))
#endif
#endif
#ifndef SIMT_UNTRACKED
#define SIMT_UNTRACKED
#endif

namespace simt {
// Where a CUDA thread is: what threadIdx, blockIdx, blockDim and gridDim
// read. Each emulated thread has its own.
struct Position {
    uint3 thread;
    uint3 block;
    dim3 block_dim;
    dim3 grid_dim;
};
// The running thread's position; the runtime sets it at every switch.
extern thread_local const Position* current_position;
SIMT_UNTRACKED inline const Position& position() { return *current_position; }
}  // namespace simt

#define threadIdx (simt::position().thread)
#define blockIdx (simt::position().block)
#define blockDim (simt::position().block_dim)
#define gridDim (simt::position().grid_dim)

namespace simt {
// Block barrier; `site` tells which __syncthreads it is.
void syncthreads(int site);
// Warp barrier of the calling lane; kinds tell shuffles from __syncwarp.
void syncwarp(unsigned mask, int kind);
// Exchanges `size` bytes through the warp: out = in of lane `src`.
void warp_exchange(unsigned mask, const void* in, void* out, size_t size, int src);
// Barrier sites of the warp-collective WMMA operations (mma.h).
constexpr int kWmmaLoad = -10;
constexpr int kWmmaMma = -11;
constexpr int kWmmaStore = -12;
// A warp-collective gather at barrier `site`: every lane gives `size` bytes
// (at most 64) and receives all 32 lanes' bytes, lane by lane, in out.
void warp_gather(int site, const void* in, size_t size, void* out);
// Fails the launch with `msg` and the calling thread's position.
[[noreturn]] void fail_launch(const std::string& msg);
// The address p as text.
std::string address(const void* p);
// This block's storage for the shared declaration identified by `key`.
void* shared_slot(const void* key, size_t size, size_t align);
// This block's dynamic shared memory.
void* dynamic_shared();
// The lane of the calling thread in its warp.
int lane();
// Fails the launch: a `bytes`-wide vector `what` ("load", "store") at the
// misaligned address p.
[[noreturn]] void misaligned(const void* p, size_t bytes, const char* what);
// Checks that p is aligned for a `bytes`-wide vector access.
inline void check_vector(const void* p, size_t bytes, const char* what) {
    if (reinterpret_cast<uintptr_t>(p) % bytes != 0) misaligned(p, bytes, what);
}
// cp.async of `bytes` from global src to shared dst, completed by
// cp_async_wait once committed.
void cp_async(void* dst, const void* src, size_t bytes);
// Closes the calling thread's current group of copies.
void cp_async_commit();
// Completes all but the `pending` most recent committed groups.
void cp_async_wait(int pending);
}  // namespace simt

inline void __syncthreads(int site = __builtin_LINE()) { simt::syncthreads(site); }
inline void __syncwarp(unsigned mask = 0xffffffffu) { simt::syncwarp(mask, -3); }

template <typename T>
inline T simt_shfl(unsigned mask, T v, int src) {
    static_assert(std::is_trivially_copyable<T>::value && sizeof(T) <= 8, "shuffle of 8 bytes at most");
    T out;
    simt::warp_exchange(mask, &v, &out, sizeof(T), src);
    return out;
}
template <typename T>
inline T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
    const int base = simt::lane() & ~(width - 1);
    return simt_shfl(mask, v, base + (src & (width - 1)));
}
template <typename T>
inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
    const int l = simt::lane();
    int src = l ^ lane_mask;
    if ((src & ~(width - 1)) != (l & ~(width - 1))) src = l;
    return simt_shfl(mask, v, src);
}
template <typename T>
inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    const int l = simt::lane();
    int src = l + (int)delta;
    if ((src & ~(width - 1)) != (l & ~(width - 1))) src = l;
    return simt_shfl(mask, v, src);
}
template <typename T>
inline T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    const int l = simt::lane();
    int src = l - (int)delta;
    if (src < (l & ~(width - 1))) src = l;
    return simt_shfl(mask, v, src);
}

template <typename T>
inline T atomicAdd(T* p, T v) {
    static_assert(std::is_integral<T>::value, "only integer atomics are emulated");
    return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST);
}
template <typename T>
inline T atomicMax(T* p, T v) {
    static_assert(std::is_integral<T>::value, "only integer atomics are emulated");
    T old = __atomic_load_n(p, __ATOMIC_SEQ_CST);
    while (old < v && !__atomic_compare_exchange_n(p, &old, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
    }
    return old;
}
template <typename T>
inline T atomicCAS(T* p, T cmp, T v) {
    static_assert(std::is_integral<T>::value, "only integer atomics are emulated");
    __atomic_compare_exchange_n(p, &cmp, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    return cmp;
}

// Shared memory declarations (kernels/common.cuh documents the GPU side).
// The key is a static local: one per declaration and template instance.
#define ADV_SHARED(T, name, dims)                                                  \
    typedef T simt_shared_##name##_t dims;                                         \
    static const char simt_key_##name = 0;                                         \
    simt_shared_##name##_t& name = *static_cast<simt_shared_##name##_t*>(          \
        simt::shared_slot(&simt_key_##name, sizeof(simt_shared_##name##_t),       \
                          alignof(simt_shared_##name##_t)))
#define ADV_DYN_SHARED(T, name) T* name = static_cast<T*>(simt::dynamic_shared())
