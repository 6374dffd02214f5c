// gelu.cu — GELU, forward and backward, in the tanh form (Hendrycks and
// Gimpel 2016; the form GPT-2 and PyTorch's approximate="tanh" use):
//
//   u  = k·(x + a·x³),  k = √(2/π),  a = 0.044715,  t = tanh u
//   y  = ½·x·(1 + t)
//   dx = g·(½·(1 + t) + ½·x·(1 − t²)·k·(1 + 3a·x²))
//
// The backward reads the forward's input x (as ReLU's does) and recomputes
// t. NaN in, NaN out; where 1 + t = 0 (x = −∞, or x so negative that t
// rounds to −1) y is 0, not ½·x·0 (NaN at −∞); where t = ±1 the second
// term of dx is 0, so ±∞ gives dx = g or 0 for finite g. Example 06 (examples/06_writing_a_cuda_kernel.rs)
// walks through this file, its launch plans (gelu.rs) and its tests.
// Launch (gelu.rs, grid_stride.rs): 256 threads, grid-stride loop.
#include "common.cuh"

namespace adv {

template <typename T>
__device__ __forceinline__ T gelu_tanh_of(T x) {
    const T k = T(0.7978845608028654);  // √(2/π)
    const T a = T(0.044715);
    return tanh_(k * (x + a * x * x * x));
}

template <typename T>
__device__ __forceinline__ void gelu_fwd(const T* __restrict__ x, T* __restrict__ y, u64 n) {
    ADV_FOR_EACH(i, n) {
        const T v = x[i];
        const T h = T(1) + gelu_tanh_of(v);
        y[i] = h == T(0) ? T(0) : T(0.5) * v * h;
    }
}

template <typename T>
__device__ __forceinline__ void gelu_bwd(const T* __restrict__ x, const T* __restrict__ g,
                                         T* __restrict__ dx, u64 n) {
    const T k = T(0.7978845608028654);
    const T a3 = T(3 * 0.044715);
    ADV_FOR_EACH(i, n) {
        const T v = x[i];
        const T t = gelu_tanh_of(v);
        // The second term is 0 where t = ±1 (|x| large or infinite): skip
        // it so that ∞·0 does not turn the derivative into NaN.
        const T slope = T(1) - t * t;
        const T inner = slope == T(0) ? T(0) : T(0.5) * v * slope * k * (T(1) + a3 * v * v);
        dx[i] = g[i] * (T(0.5) * (T(1) + t) + inner);
    }
}

}  // namespace adv

#define ADV_GELU(T, S)                                                                    \
    extern "C" __global__ void gelu_fwd_##S(const T* __restrict__ x, T* __restrict__ y,   \
                                            u64 n) {                                      \
        adv::gelu_fwd<T>(x, y, n);                                                        \
    }                                                                                     \
    extern "C" __global__ void gelu_bwd_##S(const T* __restrict__ x,                      \
                                            const T* __restrict__ g, T* __restrict__ dx,  \
                                            u64 n) {                                      \
        adv::gelu_bwd<T>(x, g, dx, n);                                                    \
    }
ADV_GELU(float, f32)
ADV_GELU(double, f64)
