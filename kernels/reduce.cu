// reduce.cu — deterministic reductions.
//
//   sum_partial: pass 1 of sum/mean. Block b sums its grid-stride share of x
//                (each thread sequentially, then a fixed block tree) into
//                partials[b]. The plan fixes the grid from n alone, so the
//                bits of the result never depend on the device.
//   sum_final:   pass 2, one block: out[0] = scale · Σ partials[0..count)
//                (scale = 1 for sum, 1/n for mean).
//   sum_rows:    column sums of a rows×cols matrix, out[c] = Σ_r x[r, c]
//                (the bias gradient). Block = 32 columns × 8 row groups.
//   argmax_rows: out[r] = index of the largest value of row r; the first one
//                on ties; a NaN counts as larger than any number (the first
//                NaN wins). One warp per row.
// No float atomics anywhere.
#include "common.cuh"

namespace adv {

constexpr int RD_THREADS = 256;
constexpr int SR_COLS = 32;  // columns per sum_rows block
constexpr int SR_GROUPS = 8; // row groups per sum_rows block

template <typename T>
__device__ __forceinline__ void sum_partial(const T* __restrict__ x, T* __restrict__ partials,
                                            u64 n) {
    ADV_DYN_SHARED(T, scratch);  // 32 values
    T s = T(0);
    ADV_FOR_EACH(i, n) s += x[i];
    s = block_sum(s, scratch);
    if (threadIdx.x == 0) partials[blockIdx.x] = s;
}

template <typename T>
__device__ __forceinline__ void sum_final(const T* __restrict__ partials, T* __restrict__ out,
                                          T scale, u32 count) {
    ADV_DYN_SHARED(T, scratch);  // 32 values
    T s = T(0);
    for (u32 i = threadIdx.x; i < count; i += blockDim.x) s += partials[i];
    s = block_sum(s, scratch);
    if (threadIdx.x == 0) out[0] = s * scale;
}

template <typename T>
__device__ __forceinline__ void sum_rows(const T* __restrict__ x, T* __restrict__ out, int rows,
                                         int cols) {
    ADV_SHARED(T, part, [SR_GROUPS][SR_COLS + 1]);
    const int lane = threadIdx.x % SR_COLS;
    const int grp = threadIdx.x / SR_COLS;
    const int c = blockIdx.x * SR_COLS + lane;
    T s = T(0);
    if (c < cols)
        for (int r = grp; r < rows; r += SR_GROUPS) s += x[(u64)r * cols + c];
    part[grp][lane] = s;
    __syncthreads();
    if (grp == 0 && c < cols) {
        T t = part[0][lane];
#pragma unroll
        for (int k = 1; k < SR_GROUPS; ++k) t += part[k][lane];
        out[c] = t;
    }
}

// Whether candidate (a, ia) beats (b, ib) for argmax; ib == ~0u means "none".
template <typename T>
__device__ __forceinline__ bool argmax_beats(T a, u32 ia, T b, u32 ib) {
    if (ia == ~0u) return false;
    if (ib == ~0u) return true;
    const bool na = isnan_(a), nb = isnan_(b);
    if (na || nb) return na && (!nb || ia < ib);
    return a > b || (a == b && ia < ib);
}

template <typename T>
__device__ __forceinline__ void argmax_rows(const T* __restrict__ x, u32* __restrict__ out,
                                            int rows, int cols) {
    const int lane = threadIdx.x % ADV_WARP;
    const int row = blockIdx.x * (blockDim.x / ADV_WARP) + threadIdx.x / ADV_WARP;
    if (row >= rows) return;  // whole warps leave together
    const T* xr = x + (u64)row * cols;
    T best = T(0);
    u32 idx = ~0u;
    for (int c = lane; c < cols; c += ADV_WARP)
        if (argmax_beats(xr[c], (u32)c, best, idx)) {
            best = xr[c];
            idx = (u32)c;
        }
#pragma unroll
    for (int o = ADV_WARP / 2; o > 0; o >>= 1) {
        const T ob = __shfl_xor_sync(ADV_FULL_MASK, best, o);
        const u32 oi = __shfl_xor_sync(ADV_FULL_MASK, idx, o);
        if (argmax_beats(ob, oi, best, idx)) {
            best = ob;
            idx = oi;
        }
    }
    if (lane == 0) out[row] = idx;
}

}  // namespace adv

#define ADV_REDUCE(T, S)                                                                       \
    extern "C" __global__ void __launch_bounds__(adv::RD_THREADS)                              \
        sum_partial_##S(const T* __restrict__ x, T* __restrict__ partials, u64 n) {            \
        adv::sum_partial<T>(x, partials, n);                                                   \
    }                                                                                          \
    extern "C" __global__ void __launch_bounds__(adv::RD_THREADS)                              \
        sum_final_##S(const T* __restrict__ partials, T* __restrict__ out, T scale,            \
                      u32 count) {                                                             \
        adv::sum_final<T>(partials, out, scale, count);                                        \
    }                                                                                          \
    extern "C" __global__ void __launch_bounds__(adv::SR_COLS * adv::SR_GROUPS)               \
        sum_rows_##S(const T* __restrict__ x, T* __restrict__ out, int rows, int cols) {       \
        adv::sum_rows<T>(x, out, rows, cols);                                                  \
    }                                                                                          \
    extern "C" __global__ void __launch_bounds__(adv::RD_THREADS)                              \
        argmax_rows_##S(const T* __restrict__ x, u32* __restrict__ out, int rows, int cols) {  \
        adv::argmax_rows<T>(x, out, rows, cols);                                               \
    }
ADV_REDUCE(float, f32)
ADV_REDUCE(double, f64)
