// optim.cu — in-place optimiser updates, one parameter tensor per launch
// (optim.rs, grid_stride.rs: 256 threads, grid-stride loop over n).
//
// With g' = g + weight_decay · w (L2 penalty folded into the gradient):
//   sgd:           w −= lr · g'
//   sgd_momentum:  v = momentum · v + g';  w −= lr · (nesterov ? g' + momentum · v : v)
//                  (PyTorch's rule with dampening 0; v starts at zero, so the
//                  first step sets v = g')
//   adam:          m = β1 m + (1 − β1) g';  v = β2 v + (1 − β2) g'²
//                  w −= step_size · m / (sqrt(v · inv_bc2) + eps)
//                  where step_size = lr / (1 − β1^t) and inv_bc2 = 1 / (1 − β2^t)
//                  are computed on the host (in double) for step t ≥ 1, the
//                  CPU backend's order of operations. With decoupled = 1 the decay is
//                  AdamW's instead: g' = g and w −= lr · weight_decay · w first.
#include "common.cuh"

namespace adv {

template <typename T>
__device__ __forceinline__ void sgd(T* __restrict__ w, const T* __restrict__ g, T lr,
                                    T weight_decay, u64 n) {
    ADV_FOR_EACH(i, n) {
        const T gi = g[i] + weight_decay * w[i];
        w[i] -= lr * gi;
    }
}

template <typename T>
__device__ __forceinline__ void sgd_momentum(T* __restrict__ w, const T* __restrict__ g,
                                             T* __restrict__ v, T lr, T momentum,
                                             T weight_decay, int nesterov, u64 n) {
    ADV_FOR_EACH(i, n) {
        const T gi = g[i] + weight_decay * w[i];
        const T vi = momentum * v[i] + gi;
        v[i] = vi;
        w[i] -= lr * (nesterov ? gi + momentum * vi : vi);
    }
}

template <typename T>
__device__ __forceinline__ void adam(T* __restrict__ w, const T* __restrict__ g,
                                     T* __restrict__ m, T* __restrict__ v, T lr, T beta1,
                                     T beta2, T eps, T weight_decay, T step_size,
                                     T inv_bc2, int decoupled, u64 n) {
    ADV_FOR_EACH(i, n) {
        T wi = w[i];
        T gi = g[i];
        if (decoupled)
            wi -= lr * weight_decay * wi;
        else
            gi += weight_decay * wi;
        const T mi = beta1 * m[i] + (T(1) - beta1) * gi;
        const T vi = beta2 * v[i] + (T(1) - beta2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        w[i] = wi - step_size * mi / (sqrt_(vi * inv_bc2) + eps);
    }
}

}  // namespace adv

#define ADV_OPTIM(T, S)                                                                         \
    extern "C" __global__ void sgd_##S(T* __restrict__ w, const T* __restrict__ g, T lr,       \
                                       T weight_decay, u64 n) {                                 \
        adv::sgd<T>(w, g, lr, weight_decay, n);                                                 \
    }                                                                                           \
    extern "C" __global__ void sgd_momentum_##S(T* __restrict__ w, const T* __restrict__ g,    \
                                                T* __restrict__ v, T lr, T momentum,           \
                                                T weight_decay, int nesterov, u64 n) {          \
        adv::sgd_momentum<T>(w, g, v, lr, momentum, weight_decay, nesterov, n);                 \
    }                                                                                           \
    extern "C" __global__ void adam_##S(T* __restrict__ w, const T* __restrict__ g,            \
                                        T* __restrict__ m, T* __restrict__ v, T lr, T beta1,   \
                                        T beta2, T eps, T weight_decay, T step_size,           \
                                        T inv_bc2, int decoupled, u64 n) {                      \
        adv::adam<T>(w, g, m, v, lr, beta1, beta2, eps, weight_decay, step_size, inv_bc2,      \
                     decoupled, n);                                                             \
    }
ADV_OPTIM(float, f32)
ADV_OPTIM(double, f64)
