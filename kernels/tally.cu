// tally.cu — running statistics of a training or attack loop, kept on the
// device so that a step needs no read back to the host.
//
//   tally_step: one block. tally is a double[2] accumulator:
//                 tally[0] += (double)loss[0] · rows
//                 tally[1] += #{r : argmax logits[r, :] == labels[r]}
//               with the argmax of reduce.cu (first on ties, the first NaN
//               wins). A NaN or infinite loss makes tally[0] non-finite,
//               which is how the host's finiteness check, done when it
//               reads the tally, sees it. The count is an integer sum
//               (exact in double below 2^53) and the loss term is one
//               product and one add by thread 0, so the bits are those of
//               the same sums on the host.
#include "common.cuh"

namespace adv {

constexpr int TALLY_THREADS = 256;

// Whether candidate (a, ia) beats (b, ib), as argmax_rows in reduce.cu.
template <typename T>
__device__ __forceinline__ bool tally_beats(T a, int ia, T b, int ib) {
    const bool na = isnan_(a), nb = isnan_(b);
    if (na || nb) return na && (!nb || ia < ib);
    return a > b || (a == b && ia < ib);
}

template <typename T>
__device__ __forceinline__ void tally_step(const T* __restrict__ loss, const T* __restrict__ logits,
                                           const u32* __restrict__ labels,
                                           double* __restrict__ tally, int rows, int cols) {
    ADV_SHARED(double, scratch, [ADV_WARP]);
    double hits = 0.0;
    for (int r = threadIdx.x; r < rows; r += blockDim.x) {
        const T* z = logits + (u64)r * cols;
        int best = 0;
        for (int c = 1; c < cols; ++c)
            if (tally_beats(z[c], c, z[best], best)) best = c;
        hits += (u32)best == labels[r] ? 1.0 : 0.0;
    }
    hits = block_sum(hits, scratch);
    if (threadIdx.x == 0) {
        tally[0] += (double)loss[0] * (double)rows;
        tally[1] += hits;
    }
}

}  // namespace adv

#define ADV_TALLY(T, S)                                                                          \
    extern "C" __global__ void __launch_bounds__(adv::TALLY_THREADS)                             \
        tally_step_##S(const T* __restrict__ loss, const T* __restrict__ logits,                 \
                       const u32* __restrict__ labels, double* __restrict__ tally, int rows,     \
                       int cols) {                                                               \
        adv::tally_step<T>(loss, logits, labels, tally, rows, cols);                             \
    }
ADV_TALLY(float, f32)
ADV_TALLY(double, f64)
