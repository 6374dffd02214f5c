// pool.cu — 2-D max- and average-pooling with kernel = stride = K and no
// padding, over planes [P, H, W] (P = N·C), forward and backward. Output
// [P, OH, OW] with OH = ⌊H/K⌋, OW = ⌊W/K⌋; rows and columns past the last
// whole window are never read forward and get 0 gradient.
//
//   max_pool_fwd  y[p,i,j] = max_{a,b<K} x[p, i·K+a, j·K+b]
//   max_pool_bwd  dx[p,h,w] = g[p, h/K, w/K] if (h, w) is the window's
//                 argmax, else 0
//   avg_pool_fwd  y[p,i,j] = scale·Σ_a (Σ_b x[p, i·K+a, j·K+b]), scale = 1/K²
//   avg_pool_bwd  dx[p,h,w] = g[p, h/K, w/K]·scale inside the windows, else 0
//
// The argmax is the CPU backend's (cpu/conv.rs): the window is scanned in
// row-major order and a value replaces the best so far when it is larger or
// NaN; the first maximum wins ties (PyTorch's choice), and a NaN is the
// maximum (of several NaNs the last, as in PyTorch). The backward
// recomputes it from x, so the forward saves no indices. Every kernel is a grid-stride loop over its outputs, one thread
// per output element, so each element is written exactly once (no
// atomics); the backward kernels run over dx, each thread recomputing its
// window's argmax (K² reads, K = 2 in the common case).
#include "common.cuh"

namespace adv {

// The flat position in its plane of the argmax of window (i, j), and the
// value there.
template <typename T>
__device__ __forceinline__ u64 pool_argmax(const T* __restrict__ plane, int w, int k, int i,
                                           int j, T& best) {
    u64 at = (u64)i * k * w + (u64)j * k;
    best = plane[at];
    for (int a = 0; a < k; ++a) {
        const u64 row = ((u64)i * k + a) * w + (u64)j * k;
        for (int b = a == 0 ? 1 : 0; b < k; ++b) {
            const T v = plane[row + b];
            if (v > best || isnan_(v)) {
                best = v;
                at = row + b;
            }
        }
    }
    return at;
}

template <typename T>
__device__ __forceinline__ void max_pool_fwd(const T* __restrict__ x, T* __restrict__ y, u64 n,
                                             int h, int w, int k) {
    const int oh = h / k, ow = w / k;
    ADV_FOR_EACH(e, n) {
        const u64 p = e / ((u64)oh * ow);
        const int r = (int)(e - p * oh * ow);
        T best;
        pool_argmax(x + p * h * w, w, k, r / ow, r % ow, best);
        y[e] = best;
    }
}

template <typename T>
__device__ __forceinline__ void max_pool_bwd(const T* __restrict__ x, const T* __restrict__ g,
                                             T* __restrict__ dx, u64 n, int h, int w, int k) {
    const int oh = h / k, ow = w / k;
    ADV_FOR_EACH(e, n) {
        const u64 p = e / ((u64)h * w);
        const int r = (int)(e - p * h * w);
        const int i = r / w / k, j = r % w / k;
        T v = T(0);
        if (i < oh && j < ow) {
            T best;
            if (pool_argmax(x + p * h * w, w, k, i, j, best) == (u64)r)
                v = g[(p * oh + i) * ow + j];
        }
        dx[e] = v;
    }
}

template <typename T>
__device__ __forceinline__ void avg_pool_fwd(const T* __restrict__ x, T* __restrict__ y, u64 n,
                                             int h, int w, int k, T scale) {
    const int oh = h / k, ow = w / k;
    ADV_FOR_EACH(e, n) {
        const u64 p = e / ((u64)oh * ow);
        const int r = (int)(e - p * oh * ow);
        const int i = r / ow, j = r % ow;
        const T* plane = x + p * h * w;
        T sum = T(0);
        for (int a = 0; a < k; ++a) {
            const T* row = plane + ((u64)i * k + a) * w + (u64)j * k;
            T s = T(0);
            for (int b = 0; b < k; ++b) s += row[b];
            sum += s;
        }
        y[e] = sum * scale;
    }
}

template <typename T>
__device__ __forceinline__ void avg_pool_bwd(const T* __restrict__ g, T* __restrict__ dx, u64 n,
                                             int h, int w, int k, T scale) {
    const int oh = h / k, ow = w / k;
    ADV_FOR_EACH(e, n) {
        const u64 p = e / ((u64)h * w);
        const int r = (int)(e - p * h * w);
        const int i = r / w / k, j = r % w / k;
        dx[e] = (i < oh && j < ow) ? g[(p * oh + i) * ow + j] * scale : T(0);
    }
}

}  // namespace adv

#define ADV_POOL(T, S)                                                                          \
    extern "C" __global__ void max_pool_fwd_##S(const T* __restrict__ x, T* __restrict__ y,    \
                                                u64 n, int h, int w, int k) {                   \
        adv::max_pool_fwd<T>(x, y, n, h, w, k);                                                 \
    }                                                                                           \
    extern "C" __global__ void max_pool_bwd_##S(const T* __restrict__ x,                        \
                                                const T* __restrict__ g, T* __restrict__ dx,    \
                                                u64 n, int h, int w, int k) {                   \
        adv::max_pool_bwd<T>(x, g, dx, n, h, w, k);                                             \
    }                                                                                           \
    extern "C" __global__ void avg_pool_fwd_##S(const T* __restrict__ x, T* __restrict__ y,    \
                                                u64 n, int h, int w, int k, T scale) {          \
        adv::avg_pool_fwd<T>(x, y, n, h, w, k, scale);                                          \
    }                                                                                           \
    extern "C" __global__ void avg_pool_bwd_##S(const T* __restrict__ g, T* __restrict__ dx,   \
                                                u64 n, int h, int w, int k, T scale) {          \
        adv::avg_pool_bwd<T>(g, dx, n, h, w, k, scale);                                         \
    }
ADV_POOL(float, f32)
ADV_POOL(double, f64)
