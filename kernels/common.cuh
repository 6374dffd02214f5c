// common.cuh — helpers shared by every advgrad kernel.
//
// The kernels are plain CUDA C++ compiled to PTX by NVRTC (build.rs). The
// same source is also compiled as ordinary C++ by the CPU SIMT emulator
// (crates/simt), which defines ADVGRAD_SIMT and includes its shim header
// first; everything that differs between the two lives in this file.
//
// Conventions:
// - every kernel is a template on the element type T, instantiated for float
//   (`name_f32`) and double (`name_f64`) through `extern "C"` wrappers;
// - matrix extents are `int` (the launch plans check they fit), flat element
//   counts are `u64`;
// - sums use fixed reduction trees (no float atomics), so results do not
//   depend on scheduling;
// - `max` propagates NaN, like the CPU backend's `Float::max`.
#pragma once

typedef unsigned long long u64;
typedef unsigned int u32;

#ifndef ADVGRAD_SIMT
// Shared memory. On the GPU this is plain `__shared__`; the emulator gives
// each block its own storage and fills it with 0xFF bytes (NaN) first.
#define ADV_SHARED(T, name, dims) __shared__ T name dims
// Dynamic shared memory (size given at launch), aligned for any T.
#define ADV_DYN_SHARED(T, name)                                   \
    extern __shared__ __align__(16) unsigned char adv_dyn_smem[]; \
    T* name = reinterpret_cast<T*>(adv_dyn_smem)
#endif

#define ADV_FULL_MASK 0xffffffffu
#define ADV_WARP 32

// Grid-stride loop over [0, n): the launch plan caps the grid, every thread
// walks the range in steps of the whole grid.
#define ADV_FOR_EACH(i, n)                                              \
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < (n); \
         i += (u64)gridDim.x * blockDim.x)

namespace adv {

// Math by overloading, so templates pick the float or double function.
__device__ __forceinline__ float exp_(float x) { return expf(x); }
__device__ __forceinline__ double exp_(double x) { return exp(x); }
__device__ __forceinline__ float log_(float x) { return logf(x); }
__device__ __forceinline__ double log_(double x) { return log(x); }
__device__ __forceinline__ float tanh_(float x) { return tanhf(x); }
__device__ __forceinline__ double tanh_(double x) { return tanh(x); }
__device__ __forceinline__ float sqrt_(float x) { return sqrtf(x); }
__device__ __forceinline__ double sqrt_(double x) { return sqrt(x); }

template <typename T>
__device__ __forceinline__ bool isnan_(T x) {
    return x != x;
}

// The larger of a and b; NaN if either is NaN (CPU `Float::max`).
template <typename T>
__device__ __forceinline__ T max_(T a, T b) {
    return (a >= b || isnan_(a)) ? a : b;
}

// The smaller of a and b; NaN if either is NaN.
template <typename T>
__device__ __forceinline__ T min_(T a, T b) {
    return (a <= b || isnan_(a)) ? a : b;
}

// Largest finite value, used as the identity of max reductions.
template <typename T>
struct Limits;
template <>
struct Limits<float> {
    __device__ __forceinline__ static float lowest() { return -3.402823466e+38f; }
};
template <>
struct Limits<double> {
    __device__ __forceinline__ static double lowest() { return -1.7976931348623157e+308; }
};

// 16-byte vector of T, for vectorised global loads.
template <typename T>
struct Vec16;
template <>
struct Vec16<float> {
    typedef float4 type;
    static const int N = 4;
};
template <>
struct Vec16<double> {
    typedef double2 type;
    static const int N = 2;
};

// Butterfly sum over the 32 lanes of a warp: every lane gets the total, and
// the order of additions is fixed.
template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
    for (int o = ADV_WARP / 2; o > 0; o >>= 1) v += __shfl_xor_sync(ADV_FULL_MASK, v, o);
    return v;
}

// Butterfly max (NaN-propagating) over a warp; every lane gets the result.
template <typename T>
__device__ __forceinline__ T warp_max(T v) {
#pragma unroll
    for (int o = ADV_WARP / 2; o > 0; o >>= 1) v = max_(v, __shfl_xor_sync(ADV_FULL_MASK, v, o));
    return v;
}

// Sum over a whole block (blockDim.x a multiple of 32, at most 1024) with a
// fixed tree: warp sums, then warp 0 sums the per-warp results. `scratch`
// holds 32 values of shared memory. The result is valid in thread 0.
template <typename T>
__device__ __forceinline__ T block_sum(T v, T* scratch) {
    const int lane = threadIdx.x % ADV_WARP;
    const int warp = threadIdx.x / ADV_WARP;
    const int warps = blockDim.x / ADV_WARP;
    v = warp_sum(v);
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < warps ? scratch[lane] : T(0);
        v = warp_sum(v);
    }
    return v;
}

}  // namespace adv
