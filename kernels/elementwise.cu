// elementwise.cu — elementwise arithmetic the ops, optimisers and attacks
// need. All kernels take a flat count n and use a grid-stride loop
// (elementwise.rs, grid_stride.rs: 256 threads, grid capped).
//
//   add/sub/mul:   y = a ∘ b
//   add_row:       y[r, c] = x[r, c] + b[c]      (bias add; x is rows×cols)
//   affine:        y = alpha · x + beta          (host scalars)
//   axpy:          y += alpha · x                (in place)
//   sign:          y = sign(x)  (−1, 0, +1; NaN stays NaN)
//   clamp:         y = min(max(x, lo), hi)
//   project_linf:  y = min(max(x, max(x0 − eps, lo)), min(x0 + eps, hi))
//                  (projection onto the L∞ ball around x0, within [lo, hi];
//                  the CPU backend's formula, NaN-propagating max/min)
//   sign_step:     y = min(max(x + alpha · sign(g), max(x0 − eps, lo)),
//                          min(x0 + eps, hi))
//                  (one signed-gradient attack step, projected: the
//                  sign, step and projection in one pass)
//   fill:          y = value                     (host scalar)
//   fill_scalar:   y = s[0] · scale              (device scalar: backward
//                                                 of sum, scale = 1, and of
//                                                 mean, scale = 1/n)
//   scale_scalar:  y = x · s[0] · scale          (device scalar times tensor)
#include "common.cuh"

namespace adv {

template <typename T>
__device__ __forceinline__ void add(const T* __restrict__ a, const T* __restrict__ b,
                                    T* __restrict__ y, u64 n) {
    ADV_FOR_EACH(i, n) y[i] = a[i] + b[i];
}
template <typename T>
__device__ __forceinline__ void sub(const T* __restrict__ a, const T* __restrict__ b,
                                    T* __restrict__ y, u64 n) {
    ADV_FOR_EACH(i, n) y[i] = a[i] - b[i];
}
template <typename T>
__device__ __forceinline__ void mul(const T* __restrict__ a, const T* __restrict__ b,
                                    T* __restrict__ y, u64 n) {
    ADV_FOR_EACH(i, n) y[i] = a[i] * b[i];
}
template <typename T>
__device__ __forceinline__ void add_row(const T* __restrict__ x, const T* __restrict__ b,
                                        T* __restrict__ y, u64 n, u64 cols) {
    ADV_FOR_EACH(i, n) y[i] = x[i] + b[i % cols];
}
template <typename T>
__device__ __forceinline__ void affine(const T* __restrict__ x, T* __restrict__ y, T alpha,
                                       T beta, u64 n) {
    ADV_FOR_EACH(i, n) y[i] = alpha * x[i] + beta;
}
template <typename T>
__device__ __forceinline__ void axpy(const T* __restrict__ x, T* __restrict__ y, T alpha,
                                     u64 n) {
    ADV_FOR_EACH(i, n) y[i] += alpha * x[i];
}
template <typename T>
__device__ __forceinline__ void sign(const T* __restrict__ x, T* __restrict__ y, u64 n) {
    ADV_FOR_EACH(i, n) {
        const T v = x[i];
        y[i] = v > T(0) ? T(1) : (v < T(0) ? T(-1) : v);  // 0 → 0, NaN → NaN
    }
}
template <typename T>
__device__ __forceinline__ void clamp(const T* __restrict__ x, T* __restrict__ y, T lo, T hi,
                                      u64 n) {
    ADV_FOR_EACH(i, n) y[i] = min_(max_(x[i], lo), hi);
}
template <typename T>
__device__ __forceinline__ void project_linf(const T* __restrict__ x, const T* __restrict__ x0,
                                             T* __restrict__ y, T eps, T lo, T hi, u64 n) {
    ADV_FOR_EACH(i, n) {
        const T lower = max_(x0[i] - eps, lo);
        const T upper = min_(x0[i] + eps, hi);
        y[i] = min_(max_(x[i], lower), upper);
    }
}
template <typename T>
__device__ __forceinline__ void sign_step(const T* __restrict__ x, const T* __restrict__ g,
                                          const T* __restrict__ x0, T* __restrict__ y, T alpha,
                                          T eps, T lo, T hi, u64 n) {
    ADV_FOR_EACH(i, n) {
        const T s = g[i] > T(0) ? T(1) : (g[i] < T(0) ? T(-1) : g[i]);
        const T lower = max_(x0[i] - eps, lo);
        const T upper = min_(x0[i] + eps, hi);
        y[i] = min_(max_(x[i] + alpha * s, lower), upper);
    }
}
template <typename T>
__device__ __forceinline__ void fill(T* __restrict__ y, T value, u64 n) {
    ADV_FOR_EACH(i, n) y[i] = value;
}
template <typename T>
__device__ __forceinline__ void fill_scalar(const T* __restrict__ s, T* __restrict__ y, T scale,
                                            u64 n) {
    const T v = s[0] * scale;
    ADV_FOR_EACH(i, n) y[i] = v;
}
template <typename T>
__device__ __forceinline__ void scale_scalar(const T* __restrict__ x, const T* __restrict__ s,
                                             T* __restrict__ y, T scale, u64 n) {
    const T v = s[0] * scale;
    ADV_FOR_EACH(i, n) y[i] = x[i] * v;
}

}  // namespace adv

#define ADV_BINARY(op, T, S)                                                           \
    extern "C" __global__ void op##_##S(const T* __restrict__ a, const T* __restrict__ b, \
                                        T* __restrict__ y, u64 n) {                      \
        adv::op<T>(a, b, y, n);                                                        \
    }
#define ADV_ELEMENTWISE(T, S)                                                                  \
    ADV_BINARY(add, T, S)                                                                      \
    ADV_BINARY(sub, T, S)                                                                      \
    ADV_BINARY(mul, T, S)                                                                      \
    extern "C" __global__ void add_row_##S(const T* __restrict__ x, const T* __restrict__ b,   \
                                           T* __restrict__ y, u64 n, u64 cols) {               \
        adv::add_row<T>(x, b, y, n, cols);                                                     \
    }                                                                                          \
    extern "C" __global__ void affine_##S(const T* __restrict__ x, T* __restrict__ y, T alpha, \
                                          T beta, u64 n) {                                     \
        adv::affine<T>(x, y, alpha, beta, n);                                                  \
    }                                                                                          \
    extern "C" __global__ void axpy_##S(const T* __restrict__ x, T* __restrict__ y, T alpha,   \
                                        u64 n) {                                               \
        adv::axpy<T>(x, y, alpha, n);                                                          \
    }                                                                                          \
    extern "C" __global__ void sign_##S(const T* __restrict__ x, T* __restrict__ y, u64 n) {   \
        adv::sign<T>(x, y, n);                                                                 \
    }                                                                                          \
    extern "C" __global__ void clamp_##S(const T* __restrict__ x, T* __restrict__ y, T lo,     \
                                         T hi, u64 n) {                                        \
        adv::clamp<T>(x, y, lo, hi, n);                                                        \
    }                                                                                          \
    extern "C" __global__ void project_linf_##S(const T* __restrict__ x,                       \
                                                const T* __restrict__ x0, T* __restrict__ y,   \
                                                T eps, T lo, T hi, u64 n) {                    \
        adv::project_linf<T>(x, x0, y, eps, lo, hi, n);                                        \
    }                                                                                          \
    extern "C" __global__ void sign_step_##S(                                                  \
        const T* __restrict__ x, const T* __restrict__ g, const T* __restrict__ x0,            \
        T* __restrict__ y, T alpha, T eps, T lo, T hi, u64 n) {                                \
        adv::sign_step<T>(x, g, x0, y, alpha, eps, lo, hi, n);                                 \
    }                                                                                          \
    extern "C" __global__ void fill_##S(T* __restrict__ y, T value, u64 n) {                   \
        adv::fill<T>(y, value, n);                                                             \
    }                                                                                          \
    extern "C" __global__ void fill_scalar_##S(const T* __restrict__ s, T* __restrict__ y,     \
                                               T scale, u64 n) {                               \
        adv::fill_scalar<T>(s, y, scale, n);                                                   \
    }                                                                                          \
    extern "C" __global__ void scale_scalar_##S(const T* __restrict__ x,                       \
                                                const T* __restrict__ s, T* __restrict__ y,    \
                                                T scale, u64 n) {                              \
        adv::scale_scalar<T>(x, s, y, scale, n);                                               \
    }
ADV_ELEMENTWISE(float, f32)
ADV_ELEMENTWISE(double, f64)
