// softmax_xent.cu — fused softmax + cross-entropy, forward and backward.
//
// logits is rows×cols (row-major), labels holds one u32 class per row.
// Forward, per row r, with M its max (NaN-propagating) and S its sum of
// exponentials:
//   M      = max_c x[r, c]
//   S      = Σ_c exp(x[r, c] − M)
//   loss_r = M + log S − x[r, label_r]    (NaN if the label is out of range;
//                                          the CUDA backend rejects such
//                                          labels before launching)
//   p[r,c] = exp(x[r, c] − M) · (1 / S)   (saved for backward)
// (the CPU backend's formulas). A group of `group` lanes (a power of two
// up to 32, from the plan) handles one row, so a warp holds 32 / group
// rows and every load of a row is contiguous. Each lane holds up to HELD
// values of its row in registers:
// - Rows of up to group · HELD values are read once into registers: the
//   max, a group max, then each exp computed once, kept for both the sum and
//   the output, a group sum, and the output.
// - Longer rows use the online softmax: one read computes each lane's max
//   and sum together, rescaling the sum whenever the max grows
//   (s ← s·e^{m − v} + 1), one exp per value; the group merges its lanes'
//   (m, s) pairs, one exp per lane; a second read writes the output, with a
//   second exp per value.
// Two instantiations: softmax_xent_fwd holds 4 values per lane (32
// registers in f32, a full SM of warps) for rows of up to 128 classes, with
// about 4 values per lane; softmax_xent_wide_fwd, one warp per row, holds
// 16 (rows of up to 512 in registers) and takes longer rows online.
// The mean over rows is a separate reduction (reduce.cu, scale = 1/rows).
// Backward, one pass, elementwise over rows×cols, with g a device scalar
// (the gradient of the mean loss) and rows (as T) from the host:
//   gs = g / rows;  dlogits[r, c] = p[r, c] · gs − [c == label_r] · gs
// Launch (softmax_xent.rs): forward 256 threads = 256 / group rows per
// block, backward grid-stride.
#include "common.cuh"

namespace adv {

constexpr int SX_THREADS = 256;

template <typename T, int HELD>
__device__ __forceinline__ void softmax_xent_fwd(const T* __restrict__ logits,
                                                 const u32* __restrict__ labels,
                                                 T* __restrict__ loss, T* __restrict__ probs,
                                                 int rows, int cols, int group) {
    const int sub = threadIdx.x % group;
    const int row = (blockIdx.x * blockDim.x + threadIdx.x) / group;
    // The groups of rows past the end hold no values but still take part
    // in their warp's shuffles.
    const bool valid = row < rows;
    const int n = valid ? cols : 0;
    const T* x = logits + (u64)(valid ? row : 0) * cols;
    T* p = probs + (u64)(valid ? row : 0) * cols;
    const T neg_inf = -Limits<T>::infinity();

    T mx, s;
    if (cols <= group * HELD) {
        T v[HELD];
        T m = neg_inf;
#pragma unroll
        for (int j = 0; j < HELD; ++j) {
            const int c = sub + j * group;
            if (c < n) {
                v[j] = x[c];
                m = max_(m, v[j]);
            }
        }
        mx = group_max(m, group);
        T sum = T(0);
#pragma unroll
        for (int j = 0; j < HELD; ++j) {
            if (sub + j * group < n) {
                v[j] = exp_(v[j] - mx);
                sum += v[j];
            }
        }
        s = group_sum(sum, group);
        const T inv = T(1) / s;
#pragma unroll
        for (int j = 0; j < HELD; ++j) {
            const int c = sub + j * group;
            if (c < n) p[c] = v[j] * inv;
        }
    } else {
        T m = neg_inf, sum = T(0);
        for (int c = sub; c < n; c += group) {
            const T v = x[c];
            if (isnan_(v)) {
                m = v;
                sum = v;
            } else if (v > m) {
                // v − v + 1 is 1, or NaN for an infinite v, as the CPU's
                // exp(v − M) is.
                sum = sum * exp_(m - v) + (v - v + T(1));
                m = v;
            } else if (v > neg_inf) {
                sum += exp_(v - m);
            }
        }
        mx = group_max(m, group);
        s = group_sum(sum == T(0) ? sum : sum * exp_(m - mx), group);
        const T inv = T(1) / s;
        for (int c = sub; c < n; c += group) p[c] = exp_(x[c] - mx) * inv;
    }
    if (valid && sub == 0) {
        const u32 label = labels[row];
        loss[row] = label < (u32)cols ? mx + log_(s) - x[label] : T(0) / T(0);
    }
}

template <typename T>
__device__ __forceinline__ void softmax_xent_bwd(const T* __restrict__ probs,
                                                 const u32* __restrict__ labels,
                                                 const T* __restrict__ g,
                                                 T* __restrict__ dlogits, T rows, u64 n,
                                                 u64 cols) {
    const T gs = g[0] / rows;
    // Row and column step with the index, without a division per element.
    const u64 stride = (u64)gridDim.x * blockDim.x;
    const u64 row_step = stride / cols, col_step = stride % cols;
    u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    u64 r = i / cols, c = i % cols;
    for (; i < n; i += stride) {
        T d = probs[i] * gs;
        if ((u64)labels[r] == c) d -= gs;
        dlogits[i] = d;
        r += row_step;
        c += col_step;
        if (c >= cols) {
            c -= cols;
            ++r;
        }
    }
}

}  // namespace adv

#define ADV_SOFTMAX_XENT(T, S)                                                              \
    extern "C" __global__ void __launch_bounds__(adv::SX_THREADS) softmax_xent_fwd_##S(    \
        const T* __restrict__ logits, const u32* __restrict__ labels, T* __restrict__ loss, \
        T* __restrict__ probs, int rows, int cols, int group) {                             \
        adv::softmax_xent_fwd<T, 4>(logits, labels, loss, probs, rows, cols, group);        \
    }                                                                                       \
    extern "C" __global__ void __launch_bounds__(adv::SX_THREADS) softmax_xent_wide_fwd_##S( \
        const T* __restrict__ logits, const u32* __restrict__ labels, T* __restrict__ loss, \
        T* __restrict__ probs, int rows, int cols, int group) {                             \
        adv::softmax_xent_fwd<T, 16>(logits, labels, loss, probs, rows, cols, group);       \
    }                                                                                       \
    extern "C" __global__ void softmax_xent_bwd_##S(                                        \
        const T* __restrict__ probs, const u32* __restrict__ labels,                        \
        const T* __restrict__ g, T* __restrict__ dlogits, T rows, u64 n, u64 cols) {       \
        adv::softmax_xent_bwd<T>(probs, labels, g, dlogits, rows, n, cols);                 \
    }
ADV_SOFTMAX_XENT(float, f32)
ADV_SOFTMAX_XENT(double, f64)
