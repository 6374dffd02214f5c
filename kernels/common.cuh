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
// Shared memory, 16-byte aligned so that it can be read as vectors. On the
// GPU this is plain `__shared__`; the emulator gives each block its own
// storage and fills it with 0xFF bytes (NaN) first.
#define ADV_SHARED(T, name, dims) __shared__ __align__(16) T name dims
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

// Infinity (−infinity is the identity of max reductions).
template <typename T>
struct Limits;
template <>
struct Limits<float> {
    __device__ __forceinline__ static float infinity() { return __int_as_float(0x7f800000); }
};
template <>
struct Limits<double> {
    __device__ __forceinline__ static double infinity() {
        return __longlong_as_double(0x7ff0000000000000ll);
    }
};

// 16-byte vector of T, for vectorised loads and stores.
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

// A vector's values as an array, and back.
__device__ __forceinline__ void unpack(const float4& v, float* o) {
    o[0] = v.x;
    o[1] = v.y;
    o[2] = v.z;
    o[3] = v.w;
}
__device__ __forceinline__ void unpack(const double2& v, double* o) {
    o[0] = v.x;
    o[1] = v.y;
}
__device__ __forceinline__ float4 pack(const float* i) { return make_float4(i[0], i[1], i[2], i[3]); }
__device__ __forceinline__ double2 pack(const double* i) { return make_double2(i[0], i[1]); }

// Whether p may be accessed as a 16-byte vector.
__device__ __forceinline__ bool aligned16(const void* p) { return (u64)p % 16 == 0; }

// The VN = 16 / sizeof(T) values at p (global or shared memory) as one
// 16-byte access, and the store of VN values. Every vector access of every
// kernel goes through these two, so the emulator checks each one's
// alignment (a misaligned vector access is an error there, as on the GPU).
template <typename T>
__device__ __forceinline__ void load16(const T* p, T* out) {
    typedef typename Vec16<T>::type V;
#ifdef ADVGRAD_SIMT
    simt::check_vector(p, sizeof(V), "load");
#endif
    unpack(*reinterpret_cast<const V*>(p), out);
}
template <typename T>
__device__ __forceinline__ void store16(T* p, const T* in) {
    typedef typename Vec16<T>::type V;
#ifdef ADVGRAD_SIMT
    simt::check_vector(p, sizeof(V), "store");
#endif
    *reinterpret_cast<V*>(p) = pack(in);
}

// Asynchronous 16-byte copy from global to shared memory (sm_80's
// `cp.async.cg`, which bypasses L1 and the registers), grouped by
// cp_async_commit; cp_async_wait<N>() waits until at most the N most
// recent groups are still in flight. Both addresses must be 16-byte
// aligned. Before sm_80 the copy is an ordinary vector load and store. The
// emulator checks both addresses and performs the copy when the thread
// waits for its group, not before (so a read before the wait sees poison).
#ifndef ADVGRAD_SIMT
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem) {
#if __CUDA_ARCH__ >= 800
    const unsigned s = (unsigned)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(gmem) : "memory");
#else
    *reinterpret_cast<float4*>(smem) = *reinterpret_cast<const float4*>(gmem);
#endif
}
__device__ __forceinline__ void cp_async_commit() {
#if __CUDA_ARCH__ >= 800
    asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}
template <int N>
__device__ __forceinline__ void cp_async_wait() {
#if __CUDA_ARCH__ >= 800
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#endif
}
#else
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem) {
    simt::cp_async(smem, gmem, 16);
}
__device__ __forceinline__ void cp_async_commit() { simt::cp_async_commit(); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
    simt::cp_async_wait(N);
}
#endif

// The activations, by the codes of kernels/types.rs (`Activation::code`):
// 0 relu (x <= 0 ? 0 : x: NaN stays NaN, -0 becomes +0, as on the CPU),
// 1 sigmoid, 2 tanh.
constexpr int ACT_RELU = 0;
constexpr int ACT_SIGMOID = 1;
constexpr int ACT_TANH = 2;

// 1 / (1 + e^-x), written so that the exponential never overflows.
template <typename T>
__device__ __forceinline__ T sigmoid(T x) {
    if (x >= T(0)) return T(1) / (T(1) + exp_(-x));
    const T e = exp_(x);
    return e / (T(1) + e);
}

template <int ACT, typename T>
__device__ __forceinline__ T activate(T x) {
    if (ACT == ACT_RELU) return x <= T(0) ? T(0) : x;
    if (ACT == ACT_SIGMOID) return sigmoid(x);
    return tanh_(x);
}

// The matmul epilogues (matmul.rs `Epilogue::code`), shared by matmul.cu
// and matmul_half.cu.
constexpr int MM_EPI_STORE = 0;
constexpr int MM_EPI_ACCUMULATE = 1;
constexpr int MM_EPI_BIAS_ACT = 2;  // + the activation code

// The epilogue of one value p of the product in column `col`: p, old + p
// (old the value in C), or f(p + bias[col]).
template <typename T>
__device__ __forceinline__ T epilogue_of(int epilogue, T p, const T* __restrict__ out,
                                         const T* __restrict__ bias, int col) {
    switch (epilogue) {
        case MM_EPI_ACCUMULATE: return out[col] + p;
        case MM_EPI_BIAS_ACT + ACT_RELU: return activate<ACT_RELU>(p + bias[col]);
        case MM_EPI_BIAS_ACT + ACT_SIGMOID: return activate<ACT_SIGMOID>(p + bias[col]);
        case MM_EPI_BIAS_ACT + ACT_TANH: return activate<ACT_TANH>(p + bias[col]);
        default: return p;
    }
}

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

// Max (NaN-propagating) and sum over a group of `group` lanes (a power of
// two up to 32, aligned in the warp) that share one row: every lane of the
// group gets the result, bitwise the same in each (the butterfly adds the
// same pairs in every lane, and IEEE addition commutes). Every lane of the
// warp must take part, also those of groups past the last row.
template <typename T>
__device__ __forceinline__ T group_max(T v, int group) {
    for (int o = group / 2; o > 0; o >>= 1) v = max_(v, __shfl_xor_sync(ADV_FULL_MASK, v, o));
    return v;
}

template <typename T>
__device__ __forceinline__ T group_sum(T v, int group) {
    for (int o = group / 2; o > 0; o >>= 1) v += __shfl_xor_sync(ADV_FULL_MASK, v, o);
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
