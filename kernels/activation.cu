// activation.cu — ReLU, sigmoid and tanh, forward and backward, and a
// linear layer's bias and activation fused in one pass.
//
// Forward: y = f(x), elementwise over n values.
// Backward reads what forward saved:
//   relu:    dx = g · [x > 0]        (reads the input x)
//   sigmoid: dx = g · y · (1 − y)    (reads the output y)
//   tanh:    dx = g · (1 − y²)       (reads the output y)
// Bias and activation: y[r, c] = f(x[r, c] + b[c]) over rows×cols (n
// values), each element read and written once.
// NaN inputs give NaN outputs (relu included: x <= 0 ? 0 : x, as on the CPU).
// The functions themselves are common.cuh's `activate`, which the matmul's
// epilogue uses too.
// Launch (activation.rs, grid_stride.rs): 256 threads, grid-stride loop.
#include "common.cuh"

namespace adv {

template <typename T>
__device__ __forceinline__ void relu_fwd(const T* __restrict__ x, T* __restrict__ y, u64 n) {
    ADV_FOR_EACH(i, n) y[i] = activate<ACT_RELU>(x[i]);
}

template <typename T>
__device__ __forceinline__ void relu_bwd(const T* __restrict__ x, const T* __restrict__ g,
                                         T* __restrict__ dx, u64 n) {
    ADV_FOR_EACH(i, n) dx[i] = x[i] > T(0) ? g[i] : T(0);
}

template <typename T>
__device__ __forceinline__ void sigmoid_fwd(const T* __restrict__ x, T* __restrict__ y, u64 n) {
    ADV_FOR_EACH(i, n) y[i] = activate<ACT_SIGMOID>(x[i]);
}

template <typename T>
__device__ __forceinline__ void sigmoid_bwd(const T* __restrict__ y, const T* __restrict__ g,
                                            T* __restrict__ dx, u64 n) {
    ADV_FOR_EACH(i, n) dx[i] = g[i] * y[i] * (T(1) - y[i]);
}

template <typename T>
__device__ __forceinline__ void tanh_fwd(const T* __restrict__ x, T* __restrict__ y, u64 n) {
    ADV_FOR_EACH(i, n) y[i] = activate<ACT_TANH>(x[i]);
}

template <typename T>
__device__ __forceinline__ void tanh_bwd(const T* __restrict__ y, const T* __restrict__ g,
                                         T* __restrict__ dx, u64 n) {
    ADV_FOR_EACH(i, n) dx[i] = g[i] * (T(1) - y[i] * y[i]);
}

// y[r, c] = f(x[r, c] + b[c]): the column steps with the index, without a
// division per element.
template <int ACT, typename T>
__device__ __forceinline__ void bias_act(const T* __restrict__ x, const T* __restrict__ b,
                                         T* __restrict__ y, u64 n, u64 cols) {
    const u64 stride = (u64)gridDim.x * blockDim.x;
    const u64 col_step = stride % cols;
    u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    u64 c = i % cols;
    for (; i < n; i += stride) {
        y[i] = activate<ACT>(x[i] + b[c]);
        c += col_step;
        if (c >= cols) c -= cols;
    }
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

#define ADV_BIAS_ACT(op, ACT, T, S)                                                           \
    extern "C" __global__ void bias_##op##_##S(const T* __restrict__ x,                       \
                                               const T* __restrict__ b, T* __restrict__ y,    \
                                               u64 n, u64 cols) {                             \
        adv::bias_act<adv::ACT, T>(x, b, y, n, cols);                                         \
    }
ADV_BIAS_ACT(relu, ACT_RELU, float, f32)
ADV_BIAS_ACT(relu, ACT_RELU, double, f64)
ADV_BIAS_ACT(sigmoid, ACT_SIGMOID, float, f32)
ADV_BIAS_ACT(sigmoid, ACT_SIGMOID, double, f64)
ADV_BIAS_ACT(tanh, ACT_TANH, float, f32)
ADV_BIAS_ACT(tanh, ACT_TANH, double, f64)
