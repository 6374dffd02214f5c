// softmax_xent.cu — fused softmax + cross-entropy, forward and backward.
//
// logits is rows×cols (row-major), labels holds one u32 class per row.
// Forward, per row r (one warp per row, lanes stride over the columns):
//   mx     = max_c x[r, c]                (NaN-propagating)
//   s      = Σ_c exp(x[r, c] − mx)
//   loss_r = mx + log s − x[r, label_r]    (NaN if the label is out of range;
//                                           the CUDA backend rejects such
//                                           labels before launching)
//   p[r,c] = exp(x[r, c] − mx) · (1 / s)   (saved for backward)
// (the CPU backend's formulas, so both round the same way).
// The mean over rows is a separate reduction (reduce.cu, scale = 1/rows).
// Backward, elementwise over rows×cols, with g a device scalar (the
// gradient of the mean loss) and rows (as T) from the host:
//   gs = g / rows;  dlogits[r, c] = p[r, c] · gs − [c == label_r] · gs
// Launch (softmax_xent.rs): forward 256 threads = 8 rows per block,
// backward grid-stride.
#include "common.cuh"

namespace adv {

constexpr int SX_THREADS = 256;

template <typename T>
__device__ __forceinline__ void softmax_xent_fwd(const T* __restrict__ logits,
                                                 const u32* __restrict__ labels,
                                                 T* __restrict__ loss, T* __restrict__ probs,
                                                 int rows, int cols) {
    const int lane = threadIdx.x % ADV_WARP;
    const int row = blockIdx.x * (blockDim.x / ADV_WARP) + threadIdx.x / ADV_WARP;
    // Whole warps leave together, so the shuffles below always see 32 lanes.
    if (row >= rows) return;
    const T* x = logits + (u64)row * cols;
    T* p = probs + (u64)row * cols;

    T mx = Limits<T>::lowest();
    for (int c = lane; c < cols; c += ADV_WARP) mx = max_(mx, x[c]);
    mx = warp_max(mx);

    T s = T(0);
    for (int c = lane; c < cols; c += ADV_WARP) s += exp_(x[c] - mx);
    s = warp_sum(s);
    const T lse = mx + log_(s);

    const T inv = T(1) / s;
    for (int c = lane; c < cols; c += ADV_WARP) p[c] = exp_(x[c] - mx) * inv;
    if (lane == 0) {
        const u32 label = labels[row];
        loss[row] = label < (u32)cols ? lse - x[label] : T(0) / T(0);
    }
}

template <typename T>
__device__ __forceinline__ void softmax_xent_bwd(const T* __restrict__ probs,
                                                 const u32* __restrict__ labels,
                                                 const T* __restrict__ g,
                                                 T* __restrict__ dlogits, T rows, u64 n,
                                                 u64 cols) {
    const T gs = g[0] / rows;
    ADV_FOR_EACH(i, n) {
        const u64 r = i / cols;
        const u64 c = i - r * cols;
        T d = probs[i] * gs;
        if ((u64)labels[r] == c) d -= gs;
        dlogits[i] = d;
    }
}

}  // namespace adv

#define ADV_SOFTMAX_XENT(T, S)                                                              \
    extern "C" __global__ void __launch_bounds__(adv::SX_THREADS) softmax_xent_fwd_##S(    \
        const T* __restrict__ logits, const u32* __restrict__ labels, T* __restrict__ loss, \
        T* __restrict__ probs, int rows, int cols) {                                        \
        adv::softmax_xent_fwd<T>(logits, labels, loss, probs, rows, cols);                  \
    }                                                                                       \
    extern "C" __global__ void softmax_xent_bwd_##S(                                        \
        const T* __restrict__ probs, const u32* __restrict__ labels,                        \
        const T* __restrict__ g, T* __restrict__ dlogits, T rows, u64 n, u64 cols) {       \
        adv::softmax_xent_bwd<T>(probs, labels, g, dlogits, rows, n, cols);                 \
    }
ADV_SOFTMAX_XENT(float, f32)
ADV_SOFTMAX_XENT(double, f64)
