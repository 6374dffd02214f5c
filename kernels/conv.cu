// conv.cu — 2-D convolution over NCHW batches (stride s, zero padding pad),
// forward and backward, as implicit GEMMs: the unfolded input (im2col) is
// never written to global memory; each tile of it is gathered from x into
// shared memory when the product needs it, with out-of-image taps read as 0
// by bounds checks.
//
// Shapes: x [N, C, H, W], weight [O, C, KH, KW], bias [O], y [N, O, OH, OW]
// with OH = (H + 2·pad − KH)/s + 1 and OW likewise; a tap k = (c, p, q) of
// an output pixel (n, i, j) reads x[n, c, i·s + p − pad, j·s + q − pad].
//
// The three products (rows × cols, contracted over depth):
//   conv2d_fwd  y[n,o,i,j] = bias[o] + Σ_k A[(n,i,j), k]·weight[o, k]
//               rows (n, i, j) = N·OH·OW, cols o = O, depth k = C·KH·KW;
//               A gathered from x, the bias added in the epilogue.
//   conv2d_dx   dx[n,c,h,w] = Σ_{(o,p,q)} G[(n,h,w), (o,p,q)]·weight[o,c,p,q]
//               rows (n, h, w) = N·H·W, cols c = C, depth (o, p, q) = O·KH·KW,
//               G[(n,h,w),(o,p,q)] = g[n, o, (h+pad−p)/s, (w+pad−q)/s] where
//               both divisions are exact and land inside [0, OH) × [0, OW),
//               else 0: the transposed convolution, gathered from g.
//               This is the implicit GEMM of g with the weights rather than
//               a gather per dx element: it reuses the same tile machinery
//               and each staged tile of weights and g serves 64 dx values,
//               and every dx element is still written exactly once (no
//               atomics). With s > 1 only about 1/s² of the gathered taps
//               are nonzero; a decomposition into s² stride-1 phases would
//               skip them and is not done.
//   conv2d_dw   dw[o, k] = Σ_{(n,i,j)} g[n,o,i,j]·A[(n,i,j), k], computed
//               as its transpose: rows k = C·KH·KW, cols o = O, depth
//               (n, i, j) = N·OH·OW, so that consecutive threads write
//               consecutive dw. Split-K like matmul.cu: with gridDim.z > 1
//               the depth range [z·k_chunk, min(depth, (z+1)·k_chunk)) of
//               blockIdx.z writes its partial dw to slice z of a workspace
//               (O·C·KH·KW values each), and matmul.cu's matmul_reduce adds
//               the slices in the fixed order z = 0, 1, …: no atomics, the
//               bits do not depend on scheduling.
//   conv2d_db   db[o] = Σ_{n,i,j} g[n,o,i,j]: one block per o, each thread
//               a fixed strided share of every image's plane, then the fixed
//               block tree of common.cuh (no float atomics).
//
// The tile (conv_gemm): one block of 256 threads computes a 64×64 tile of
// the product over 16-deep slices of the depth, in f32 and f64.
// - Shared memory: As[k][row] (16×64) and Bs[k][col] (16×65), k-major;
//   8.1 KiB in f32, 16.3 KiB in f64.
// - Staging: each thread gathers 4 values of A (row tid % 64, depth
//   tid / 64 + 4·i) and 4 of B (depth tid % 16, col tid / 16 + 16·i) into
//   registers for the next slice while the current one is multiplied, then
//   stores them after a barrier; two barriers per slice. Consecutive lanes
//   gather consecutive rows of A (consecutive output pixels: consecutive x
//   addresses for s = 1) and consecutive depths of B (consecutive weights,
//   or consecutive pixels of g for conv2d_dw).
// - Product: thread (tx, ty) = (tid % 16, tid / 16) owns rows tx + 16·i and
//   cols ty + 16·j (i, j < 4): 16 accumulators. A warp reads 16
//   consecutive words of an As row (no bank conflict) and 2 words of Bs.
//   Bs rows are padded to 65 so the staging stores of 16 depths × 2 cols
//   per warp fall in distinct banks but for pairs (2-way).
// - Epilogue: each value written once, rows (the contiguous axis of y, dx
//   and dw) along the lanes.
// The index decoding is integer division per gathered value; the design
// stops at a sane tiling (no vector loads, no tensor cores).
#include "common.cuh"

namespace adv {

constexpr int CV_THREADS = 256;
constexpr int CV_BM = 64;  // rows of a block tile
constexpr int CV_BN = 64;  // cols of a block tile
constexpr int CV_BK = 16;  // depth of a stage
constexpr int CV_A_PER = CV_BM * CV_BK / CV_THREADS;  // staged A values per thread
constexpr int CV_B_PER = CV_BN * CV_BK / CV_THREADS;  // staged B values per thread
constexpr int CV_TM = CV_BM / 16;                      // rows per thread
constexpr int CV_TN = CV_BN / 16;                      // cols per thread
static_assert(CV_THREADS % CV_BM == 0 && CV_THREADS % CV_BK == 0, "whole staging rows");

// The sizes of one convolution (conv.rs `Conv2dDims`).
struct ConvGeom {
    int n, c, h, w, o, kh, kw, s, pad, oh, ow;
};

// x[n, c, row, col], or 0 outside the image (zero padding).
template <typename T>
__device__ __forceinline__ T conv_sample(const T* __restrict__ x, const ConvGeom& g, int n,
                                         int c, int row, int col) {
    if (row < 0 || row >= g.h || col < 0 || col >= g.w) return T(0);
    return x[(((u64)n * g.c + c) * g.h + row) * g.w + col];
}

// The unfolded input: tap k = (c, p, q) of output pixel m = (n, i, j).
template <typename T>
__device__ __forceinline__ T conv_unfolded(const T* __restrict__ x, const ConvGeom& g, int m,
                                           int k) {
    const int pixels = g.oh * g.ow;
    const int n = m / pixels;
    const int r = m - n * pixels;
    const int i = r / g.ow;
    const int j = r - i * g.ow;
    const int t = k / g.kw;
    const int q = k - t * g.kw;
    const int c = t / g.kh;
    const int p = t - c * g.kh;
    return conv_sample(x, g, n, c, i * g.s + p - g.pad, j * g.s + q - g.pad);
}

// y = bias + unfold(x)·weightᵀ.
template <typename T>
struct ConvForward {
    const T* __restrict__ x;
    const T* __restrict__ weight;
    const T* __restrict__ bias;
    T* __restrict__ y;
    ConvGeom g;

    __device__ __forceinline__ int rows() const { return g.n * g.oh * g.ow; }
    __device__ __forceinline__ int cols() const { return g.o; }
    __device__ __forceinline__ int depth() const { return g.c * g.kh * g.kw; }
    __device__ __forceinline__ T a(int m, int k) const { return conv_unfolded(x, g, m, k); }
    __device__ __forceinline__ T b(int k, int o) const {
        return weight[(u64)o * depth() + k];
    }
    __device__ __forceinline__ void store(int m, int o, T v) const {
        const int pixels = g.oh * g.ow;
        const int n = m / pixels;
        y[((u64)n * g.o + o) * pixels + (m - n * pixels)] = v + bias[o];
    }
};

// dx = G·weight (the transposed convolution of g).
template <typename T>
struct ConvInputGrad {
    const T* __restrict__ gy;
    const T* __restrict__ weight;
    T* __restrict__ dx;
    ConvGeom g;

    __device__ __forceinline__ int rows() const { return g.n * g.h * g.w; }
    __device__ __forceinline__ int cols() const { return g.c; }
    __device__ __forceinline__ int depth() const { return g.o * g.kh * g.kw; }
    // g at the output pixel whose tap (p, q) reads input pixel m, via
    // filter o; 0 where there is none.
    __device__ __forceinline__ T a(int m, int k) const {
        const int plane = g.h * g.w;
        const int n = m / plane;
        const int r = m - n * plane;
        const int hh = r / g.w;
        const int ww = r - hh * g.w;
        const int taps = g.kh * g.kw;
        const int o = k / taps;
        const int pq = k - o * taps;
        const int p = pq / g.kw;
        const int q = pq - p * g.kw;
        const int di = hh + g.pad - p;
        const int dj = ww + g.pad - q;
        if (di < 0 || dj < 0) return T(0);
        const int i = di / g.s;
        const int j = dj / g.s;
        if (i * g.s != di || j * g.s != dj || i >= g.oh || j >= g.ow) return T(0);
        return gy[(((u64)n * g.o + o) * g.oh + i) * g.ow + j];
    }
    __device__ __forceinline__ T b(int k, int c) const {
        const int taps = g.kh * g.kw;
        const int o = k / taps;
        return weight[((u64)o * g.c + c) * taps + (k - o * taps)];
    }
    __device__ __forceinline__ void store(int m, int c, T v) const {
        const int plane = g.h * g.w;
        const int n = m / plane;
        dx[((u64)n * g.c + c) * plane + (m - n * plane)] = v;
    }
};

// dwᵀ = unfold(x)ᵀ·g, slice blockIdx.z of the workspace when split.
template <typename T>
struct ConvWeightGrad {
    const T* __restrict__ gy;
    const T* __restrict__ x;
    T* __restrict__ dw;
    ConvGeom g;

    __device__ __forceinline__ int rows() const { return g.c * g.kh * g.kw; }
    __device__ __forceinline__ int cols() const { return g.o; }
    __device__ __forceinline__ int depth() const { return g.n * g.oh * g.ow; }
    __device__ __forceinline__ T a(int k, int m) const { return conv_unfolded(x, g, m, k); }
    __device__ __forceinline__ T b(int m, int o) const {
        const int pixels = g.oh * g.ow;
        const int n = m / pixels;
        return gy[((u64)n * g.o + o) * pixels + (m - n * pixels)];
    }
    __device__ __forceinline__ void store(int k, int o, T v) const {
        const u64 slice = (u64)g.o * rows();
        dw[(u64)blockIdx.z * slice + (u64)o * rows() + k] = v;
    }
};

// The block tile of problem P over the depth range of blockIdx.z (see the
// top of the file).
template <typename T, class P>
__device__ __forceinline__ void conv_gemm(const P& prob, int k_chunk) {
    ADV_SHARED(T, As, [CV_BK][CV_BM]);
    ADV_SHARED(T, Bs, [CV_BK][CV_BN + 1]);
    const int M = prob.rows();
    const int N = prob.cols();
    const int m0 = blockIdx.x * CV_BM;
    const int n0 = blockIdx.y * CV_BN;
    const int k_begin = (int)blockIdx.z * k_chunk;
    const int k_end = min(prob.depth(), k_begin + k_chunk);
    const int stages = k_end > k_begin ? (k_end - k_begin + CV_BK - 1) / CV_BK : 0;

    const int tid = threadIdx.x;
    const int a_row = tid % CV_BM;
    const int a_k = tid / CV_BM;
    const int b_k = tid % CV_BK;
    const int b_col = tid / CV_BK;
    const int tx = tid % 16;
    const int ty = tid / 16;

    T ra[CV_A_PER], rb[CV_B_PER];
    T acc[CV_TM][CV_TN];
#pragma unroll
    for (int i = 0; i < CV_TM; ++i)
#pragma unroll
        for (int j = 0; j < CV_TN; ++j) acc[i][j] = T(0);

    // Gathers the slice at depth k0 into registers, 0 outside the product.
    const auto fetch = [&](int k0) {
#pragma unroll
        for (int i = 0; i < CV_A_PER; ++i) {
            const int m = m0 + a_row;
            const int k = k0 + a_k + (CV_THREADS / CV_BM) * i;
            ra[i] = (m < M && k < k_end) ? prob.a(m, k) : T(0);
        }
#pragma unroll
        for (int i = 0; i < CV_B_PER; ++i) {
            const int k = k0 + b_k;
            const int n = n0 + b_col + (CV_THREADS / CV_BK) * i;
            rb[i] = (n < N && k < k_end) ? prob.b(k, n) : T(0);
        }
    };

    if (stages > 0) fetch(k_begin);
    for (int s = 0; s < stages; ++s) {
#pragma unroll
        for (int i = 0; i < CV_A_PER; ++i) As[a_k + (CV_THREADS / CV_BM) * i][a_row] = ra[i];
#pragma unroll
        for (int i = 0; i < CV_B_PER; ++i) Bs[b_k][b_col + (CV_THREADS / CV_BK) * i] = rb[i];
        __syncthreads();
        if (s + 1 < stages) fetch(k_begin + (s + 1) * CV_BK);
#pragma unroll
        for (int k = 0; k < CV_BK; ++k) {
            T fa[CV_TM], fb[CV_TN];
#pragma unroll
            for (int i = 0; i < CV_TM; ++i) fa[i] = As[k][tx + 16 * i];
#pragma unroll
            for (int j = 0; j < CV_TN; ++j) fb[j] = Bs[k][ty + 16 * j];
#pragma unroll
            for (int i = 0; i < CV_TM; ++i)
#pragma unroll
                for (int j = 0; j < CV_TN; ++j) acc[i][j] += fa[i] * fb[j];
        }
        // Everyone is done with this slice before it is overwritten.
        __syncthreads();
    }

#pragma unroll
    for (int i = 0; i < CV_TM; ++i) {
        const int m = m0 + tx + 16 * i;
        if (m >= M) continue;
#pragma unroll
        for (int j = 0; j < CV_TN; ++j) {
            const int n = n0 + ty + 16 * j;
            if (n < N) prob.store(m, n, acc[i][j]);
        }
    }
}

// db[o] = Σ_{n, pixel} g[n, o, pixel]: block o; thread t sums pixels
// t, t + 256, … of each image in turn, then the block tree.
template <typename T>
__device__ __forceinline__ void conv_bias_grad(const T* __restrict__ gy, T* __restrict__ db,
                                               int n, int o, int pixels) {
    ADV_SHARED(T, scratch, [ADV_WARP]);
    const int oc = blockIdx.x;
    T s = T(0);
    for (int img = 0; img < n; ++img) {
        const T* plane = gy + ((u64)img * o + oc) * pixels;
        for (int r = threadIdx.x; r < pixels; r += blockDim.x) s += plane[r];
    }
    s = block_sum(s, scratch);
    if (threadIdx.x == 0) db[oc] = s;
}

}  // namespace adv

#define ADV_CONV_DIMS int n, int c, int h, int w, int o, int kh, int kw, int stride, int pad, int oh, int ow
#define ADV_CONV_GEOM adv::ConvGeom{n, c, h, w, o, kh, kw, stride, pad, oh, ow}
#define ADV_CONV(T, S)                                                                          \
    extern "C" __global__ void __launch_bounds__(adv::CV_THREADS)                               \
        conv2d_fwd_##S(const T* __restrict__ x, const T* __restrict__ weight,                   \
                       const T* __restrict__ bias, T* __restrict__ y, ADV_CONV_DIMS) {          \
        const adv::ConvForward<T> p{x, weight, bias, y, ADV_CONV_GEOM};                         \
        adv::conv_gemm<T>(p, p.depth());                                                        \
    }                                                                                           \
    extern "C" __global__ void __launch_bounds__(adv::CV_THREADS)                               \
        conv2d_dx_##S(const T* __restrict__ g, const T* __restrict__ weight, T* __restrict__ dx, \
                      ADV_CONV_DIMS) {                                                          \
        const adv::ConvInputGrad<T> p{g, weight, dx, ADV_CONV_GEOM};                            \
        adv::conv_gemm<T>(p, p.depth());                                                        \
    }                                                                                           \
    extern "C" __global__ void __launch_bounds__(adv::CV_THREADS)                               \
        conv2d_dw_##S(const T* __restrict__ g, const T* __restrict__ x, T* __restrict__ dw,     \
                      ADV_CONV_DIMS, int k_chunk) {                                             \
        const adv::ConvWeightGrad<T> p{g, x, dw, ADV_CONV_GEOM};                                \
        adv::conv_gemm<T>(p, k_chunk);                                                          \
    }                                                                                           \
    extern "C" __global__ void conv2d_db_##S(const T* __restrict__ g, T* __restrict__ db, int n, \
                                             int o, int pixels) {                               \
        adv::conv_bias_grad<T>(g, db, n, o, pixels);                                            \
    }
ADV_CONV(float, f32)
ADV_CONV(double, f64)
