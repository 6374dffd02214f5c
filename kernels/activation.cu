// activation.cu — ReLU, sigmoid and tanh, forward and backward.
//
// Forward: y = f(x), elementwise over n values.
// Backward reads what forward saved:
//   relu:    dx = g · [x > 0]        (reads the input x)
//   sigmoid: dx = g · y · (1 − y)    (reads the output y)
//   tanh:    dx = g · (1 − y²)       (reads the output y)
// NaN inputs give NaN outputs (relu included: x <= 0 ? 0 : x, as on the CPU).
// Launch (activation.rs, grid_stride.rs): 256 threads, grid-stride loop.
#include "common.cuh"

namespace adv {

template <typename T>
__device__ __forceinline__ void relu_fwd(const T* __restrict__ x, T* __restrict__ y, u64 n) {
    // x <= 0 ? 0 : x, exactly the CPU's rule: NaN stays NaN, −0 becomes +0.
    ADV_FOR_EACH(i, n) {
        const T v = x[i];
        y[i] = v <= T(0) ? T(0) : v;
    }
}

template <typename T>
__device__ __forceinline__ void relu_bwd(const T* __restrict__ x, const T* __restrict__ g,
                                         T* __restrict__ dx, u64 n) {
    ADV_FOR_EACH(i, n) dx[i] = x[i] > T(0) ? g[i] : T(0);
}

// 1 / (1 + e^−x), written so that the exponential never overflows.
template <typename T>
__device__ __forceinline__ T sigmoid(T x) {
    if (x >= T(0)) return T(1) / (T(1) + exp_(-x));
    const T e = exp_(x);
    return e / (T(1) + e);
}

template <typename T>
__device__ __forceinline__ void sigmoid_fwd(const T* __restrict__ x, T* __restrict__ y, u64 n) {
    ADV_FOR_EACH(i, n) y[i] = sigmoid(x[i]);
}

template <typename T>
__device__ __forceinline__ void sigmoid_bwd(const T* __restrict__ y, const T* __restrict__ g,
                                            T* __restrict__ dx, u64 n) {
    ADV_FOR_EACH(i, n) dx[i] = g[i] * y[i] * (T(1) - y[i]);
}

template <typename T>
__device__ __forceinline__ void tanh_fwd(const T* __restrict__ x, T* __restrict__ y, u64 n) {
    ADV_FOR_EACH(i, n) y[i] = tanh_(x[i]);
}

template <typename T>
__device__ __forceinline__ void tanh_bwd(const T* __restrict__ y, const T* __restrict__ g,
                                         T* __restrict__ dx, u64 n) {
    ADV_FOR_EACH(i, n) dx[i] = g[i] * (T(1) - y[i] * y[i]);
}

}  // namespace adv

#define ADV_ACT_FWD(op, T, S)                                                       \
    extern "C" __global__ void op##_fwd_##S(const T* __restrict__ x, T* __restrict__ y, \
                                            u64 n) {                                  \
        adv::op##_fwd<T>(x, y, n);                                                  \
    }
#define ADV_ACT_BWD(op, saved, T, S)                                                      \
    extern "C" __global__ void op##_bwd_##S(const T* __restrict__ saved,                 \
                                            const T* __restrict__ g, T* __restrict__ dx, \
                                            u64 n) {                                       \
        adv::op##_bwd<T>(saved, g, dx, n);                                               \
    }
ADV_ACT_FWD(relu, float, f32)
ADV_ACT_FWD(relu, double, f64)
ADV_ACT_BWD(relu, x, float, f32)
ADV_ACT_BWD(relu, x, double, f64)
ADV_ACT_FWD(sigmoid, float, f32)
ADV_ACT_FWD(sigmoid, double, f64)
ADV_ACT_BWD(sigmoid, y, float, f32)
ADV_ACT_BWD(sigmoid, y, double, f64)
ADV_ACT_FWD(tanh, float, f32)
ADV_ACT_FWD(tanh, double, f64)
ADV_ACT_BWD(tanh, y, float, f32)
ADV_ACT_BWD(tanh, y, double, f64)
