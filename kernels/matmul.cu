// matmul.cu — C = op(A) · op(B) (+ C), tiled in shared memory with register
// blocking.
//
// Shapes (all row-major): op(A) is M×K, op(B) is K×N, C is M×N.
//   trans_a = 0: A is stored [M, K];  trans_a = 1: A is stored [K, M].
//   trans_b = 0: B is stored [K, N];  trans_b = 1: B is stored [N, K].
//   accumulate = 1 adds the product to C instead of overwriting it.
// The transposed variants are what backward needs: dA = dC·Bᵀ, dB = Aᵀ·dC.
//
// Launch (matmul.rs): block 256 threads (16×16), grid
// (ceil(N/64), ceil(M/64)), no dynamic shared memory. Each block computes a
// 64×64 tile of C; each thread a 4×4 sub-tile held in registers. For every
// 16-wide slice of K, the block stages a 64×16 tile of op(A) and a 16×64 tile
// of op(B) in shared memory, loaded with 16-byte vector loads where the
// source row is aligned and fully in bounds, and element by element (zero
// padded) at the edges. Any M, N, K ≥ 0 is handled.
#include "common.cuh"

namespace adv {

constexpr int MM_BM = 64;       // rows of C per block
constexpr int MM_BN = 64;       // cols of C per block
constexpr int MM_BK = 16;       // depth of one shared-memory stage
constexpr int MM_TM = 4;        // rows of C per thread
constexpr int MM_TN = 4;        // cols of C per thread
constexpr int MM_THREADS = 256; // (MM_BM / MM_TM) * (MM_BN / MM_TN)

// Copies the R×C rectangle at (r0, c0) of a row-major matrix `src`
// (nrows×ncols, leading dimension ld) into shared memory `dst` (row stride
// `ds`), zero-filling what lies outside the matrix. With TRANSPOSE the
// element (r, c) lands at dst[c*ds + r], else at dst[r*ds + c].
template <typename T, int R, int C, bool TRANSPOSE>
__device__ __forceinline__ void load_tile(const T* __restrict__ src, int nrows, int ncols, int r0,
                                          int c0, bool vec_ok, T* dst, int ds) {
    typedef typename Vec16<T>::type V;
    constexpr int VN = Vec16<T>::N;
    constexpr int VPR = C / VN;  // vectors per tile row
    constexpr int NVEC = R * VPR;
    for (int v = threadIdx.x; v < NVEC; v += MM_THREADS) {
        const int r = v / VPR;
        const int c = (v % VPR) * VN;
        const int gr = r0 + r;
        const int gc = c0 + c;
        T vals[VN];
        if (vec_ok && gr < nrows && gc + VN <= ncols) {
            const V q = *reinterpret_cast<const V*>(src + (u64)gr * ncols + gc);
            const T* qs = reinterpret_cast<const T*>(&q);
#pragma unroll
            for (int j = 0; j < VN; ++j) vals[j] = qs[j];
        } else {
#pragma unroll
            for (int j = 0; j < VN; ++j)
                vals[j] = (gr < nrows && gc + j < ncols) ? src[(u64)gr * ncols + gc + j] : T(0);
        }
#pragma unroll
        for (int j = 0; j < VN; ++j) {
            if (TRANSPOSE)
                dst[(c + j) * ds + r] = vals[j];
            else
                dst[r * ds + c + j] = vals[j];
        }
    }
}

template <typename T, bool TA, bool TB>
__device__ __forceinline__ void matmul_tile(const T* __restrict__ A, const T* __restrict__ B,
                                            T* __restrict__ Cm, int M, int N, int K,
                                            int accumulate, T (*As)[MM_BM], T (*Bs)[MM_BN]) {

    const int tx = threadIdx.x % (MM_BN / MM_TN);  // column group
    const int ty = threadIdx.x / (MM_BN / MM_TN);  // row group
    const int m0 = blockIdx.y * MM_BM;
    const int n0 = blockIdx.x * MM_BN;
    constexpr int VN = Vec16<T>::N;

    // Vector loads need 16-byte aligned rows: aligned base and a leading
    // dimension that is a multiple of the vector width.
    const int lda = TA ? M : K;
    const int ldb = TB ? K : N;
    const bool a_vec = ((u64)A % 16 == 0) && (lda % VN == 0);
    const bool b_vec = ((u64)B % 16 == 0) && (ldb % VN == 0);

    T acc[MM_TM][MM_TN];
#pragma unroll
    for (int i = 0; i < MM_TM; ++i)
#pragma unroll
        for (int j = 0; j < MM_TN; ++j) acc[i][j] = T(0);

    for (int k0 = 0; k0 < K; k0 += MM_BK) {
        if (TA)  // A stored [K, M]: rows k, contiguous m
            load_tile<T, MM_BK, MM_BM, false>(A, K, M, k0, m0, a_vec, &As[0][0], MM_BM);
        else  // A stored [M, K]: rows m, contiguous k
            load_tile<T, MM_BM, MM_BK, true>(A, M, K, m0, k0, a_vec, &As[0][0], MM_BM);
        if (TB)  // B stored [N, K]: rows n, contiguous k
            load_tile<T, MM_BN, MM_BK, true>(B, N, K, n0, k0, b_vec, &Bs[0][0], MM_BN);
        else  // B stored [K, N]: rows k, contiguous n
            load_tile<T, MM_BK, MM_BN, false>(B, K, N, k0, n0, b_vec, &Bs[0][0], MM_BN);
        __syncthreads();

#pragma unroll
        for (int k = 0; k < MM_BK; ++k) {
            T a[MM_TM], b[MM_TN];
#pragma unroll
            for (int i = 0; i < MM_TM; ++i) a[i] = As[k][ty * MM_TM + i];
#pragma unroll
            for (int j = 0; j < MM_TN; ++j) b[j] = Bs[k][tx * MM_TN + j];
#pragma unroll
            for (int i = 0; i < MM_TM; ++i)
#pragma unroll
                for (int j = 0; j < MM_TN; ++j) acc[i][j] += a[i] * b[j];
        }
        __syncthreads();
    }

#pragma unroll
    for (int i = 0; i < MM_TM; ++i) {
        const int m = m0 + ty * MM_TM + i;
        if (m >= M) break;
#pragma unroll
        for (int j = 0; j < MM_TN; ++j) {
            const int n = n0 + tx * MM_TN + j;
            if (n < N) {
                T* c = Cm + (u64)m * N + n;
                *c = accumulate ? *c + acc[i][j] : acc[i][j];
            }
        }
    }
}

template <typename T>
__device__ __forceinline__ void matmul(const T* A, const T* B, T* C, int M, int N, int K,
                                       int trans_a, int trans_b, int accumulate) {
    // As[k][m] and Bs[k][n]: both read along their last axis in the inner
    // loop. Declared here, once, so the four variants share one allocation.
    ADV_SHARED(T, As, [MM_BK][MM_BM]);
    ADV_SHARED(T, Bs, [MM_BK][MM_BN]);
    if (trans_a) {
        if (trans_b)
            matmul_tile<T, true, true>(A, B, C, M, N, K, accumulate, As, Bs);
        else
            matmul_tile<T, true, false>(A, B, C, M, N, K, accumulate, As, Bs);
    } else {
        if (trans_b)
            matmul_tile<T, false, true>(A, B, C, M, N, K, accumulate, As, Bs);
        else
            matmul_tile<T, false, false>(A, B, C, M, N, K, accumulate, As, Bs);
    }
}

}  // namespace adv

#define ADV_MATMUL(T, S)                                                                        \
    extern "C" __global__ void __launch_bounds__(adv::MM_THREADS)                             \
        matmul_##S(const T* __restrict__ a, const T* __restrict__ b, T* __restrict__ c, int m, \
                   int n, int k, int trans_a, int trans_b, int accumulate) {                   \
        adv::matmul<T>(a, b, c, m, n, k, trans_a, trans_b, accumulate);                        \
    }
ADV_MATMUL(float, f32)
ADV_MATMUL(double, f64)
