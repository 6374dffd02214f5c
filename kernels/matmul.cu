// matmul.cu — C = op(A)·op(B), with an epilogue: stored, added to C, or a
// linear layer's bias and activation f(op(A)·op(B) + bias).
//
// Shapes (all row-major): op(A) is M×K, op(B) is K×N, C is M×N.
//   trans_a = 0: A is stored [M, K];  trans_a = 1: A is stored [K, M].
//   trans_b = 0: B is stored [K, N];  trans_b = 1: B is stored [N, K].
// The transposed variants are what backward needs: dA = dC·Bᵀ, dB = Aᵀ·dC.
// Epilogues (matmul.rs `Epilogue::code`): 0 C = P, 1 C += P, 2/3/4
// C = f(P + bias[col]) with f = relu / sigmoid / tanh, where P is the
// product (the CPU backend's order of operations).
//
// matmul_BMxBN: one block of 256 threads computes a BM×BN tile of C
// (128×128 or 64×64, chosen by the plan) over the depth range
// [z·k_chunk, min(K, (z+1)·k_chunk)) of blockIdx.z = z. With one range
// (gridDim.z = 1) it applies the epilogue; with several (split-K) each
// range writes its partial product to its own M×N slice of the workspace
// `c` (epilogue 0, slice z at c + z·M·N), and matmul_reduce adds the slices
// in the fixed order z = 0, 1, … and applies the epilogue: the result does
// not depend on which block ran first, and there are no atomics.
//
// The block tile, for BK-deep slices of K (BK = 16 floats or 8 doubles:
// 64 bytes of each row):
// - Shared memory holds two stages (double buffering) of As[k][m] (BK×BM)
//   and Bs[k][n] (BK×BN), both k-major, rows padded by one 16-byte vector:
//   2·BK·(BM+4 + BN+4) floats = 33 KiB for 128×128 in f32.
// - Warp tiling: 8 warps as 2 (m) × 4 (n), each a (BM/2)×(BN/4) warp tile;
//   a warp's lanes as 8 (m) × 4 (n), lane (lm, ln) owning the 4×4 sub-tiles
//   at rows lm·4 + 32·i and columns ln·4 + 16·j of its warp tile (i < BM/64,
//   j < BN/64): 8×8 values of C per thread for 128×128, 4×4 for 64×64, in
//   registers.
// - The inner product reads, per k, each thread's 4-row and 4-column
//   fragments as 16-byte vectors (load16): rows of As, columns of Bs.
// - The next stage is fetched while the current one is multiplied, then one
//   barrier per stage:
//     k-outer operands (A stored [K, M], B stored [K, N]: a tile row is
//     contiguous along m or n, as in shared memory) are copied with
//     cp.async (16 bytes each, global → shared without registers);
//     k-inner operands (A stored [M, K], B stored [N, K]) are loaded as
//     16-byte vectors into registers before the product and stored,
//     transposed, into the other stage after it.
//   A vector is used where the 16 bytes lie in bounds and are aligned (the
//   base pointer 16-byte aligned, the leading dimension a multiple of
//   16 / sizeof(T)); anything else — the edges, any M, N, K not a multiple
//   of 4, K = 0 — goes element by element, zero-filled outside the matrix.
//
// Bank analysis (f32; 32 banks of 4 bytes; a 16-byte access is served per
// quarter warp, 8 lanes):
// - Fragment reads: the 8 lanes of a quarter warp have lm = 0..7 and one ln,
//   so they read 8 consecutive vectors of an As row (32 consecutive words:
//   every bank once) and one vector of Bs (a broadcast). No conflict.
// - cp.async stores: a warp writes 32 consecutive vectors of one row. None.
// - Transposed stores of k-inner operands: thread t of the 256 handles tile
//   row r = (t / 2 + 128·i) mod BM and the vector kq = 2·(its half of the
//   k slice) + t mod 2, so two neighbouring lanes read one 32-byte sector
//   of global memory, and a warp stores, for each of the vector's 4 values,
//   16 rows r at word (4·kq + e)·LDA + r. With LDA = BM + 4 ≡ 4 (mod 32),
//   4·LDA ≡ 16: the lanes with kq odd land 16 banks from those with kq even,
//   so the 32 stores hit 32 distinct banks (unpadded, LDA ≡ 0: 2-way).
// - Epilogue: each quarter warp stores 8 rows × one 16-byte vector, a warp
//   4 vectors = 64 contiguous bytes per row.
//
// matmul_reduce: C[i] = epilogue(Σ_z partial[z·M·N + i]), grid-stride.
#include "common.cuh"

namespace adv {

constexpr int MM_THREADS = 256;

// The geometry of a BM×BN block tile for element type T.
template <typename T, int BM_, int BN_>
struct MmTile {
    static constexpr int BM = BM_;
    static constexpr int BN = BN_;
    static constexpr int VN = Vec16<T>::N;    // values per 16-byte vector
    static constexpr int BK = 16 * VN / 4;    // depth of a stage: 64 bytes of a row
    static constexpr int LDA = BM + VN;       // padded row of As (see the bank analysis)
    static constexpr int LDB = BN + VN;
    static constexpr int WARPS_N = 4;         // 8 warps: 2 (m) × 4 (n)
    static constexpr int WM = BM / 2;         // warp tile
    static constexpr int WN = BN / WARPS_N;
    static constexpr int IM = WM / 32;        // 4×4 sub-tiles per thread along m
    static constexpr int IN = WN / 16;        // and along n
    static_assert(IM >= 1 && IN >= 1 && WM % 32 == 0 && WN % 16 == 0, "tile too small");
    static_assert(BK / VN == 4, "the k-inner loader pairs lanes over 4 vectors per row");
};

// Loads tiles of a "k-outer" operand: a matrix stored with one row per k
// (A stored [K, M] or B stored [K, N]), `cols` values per row, into
// dst[k][c] of a BK×BT stage, by cp.async where a whole vector is in bounds.
template <typename T, int BK, int BT, int LD>
struct KOuterLoader {
    static constexpr int VN = Vec16<T>::N;
    static constexpr int PER_ROW = BT / VN;                   // vectors per tile row
    static constexpr int COUNT = BK * PER_ROW / MM_THREADS;   // vectors per thread
    static_assert(BK * PER_ROW % MM_THREADS == 0, "whole vectors per thread");

    const T* src;
    int cols;   // values per row (M or N), the leading dimension
    int c0;     // first column of the tile
    bool vec;   // rows start 16-byte aligned

    __device__ __forceinline__ void copy(int k0, int k_end, T (*dst)[LD]) const {
#pragma unroll
        for (int i = 0; i < COUNT; ++i) {
            const int v = i * MM_THREADS + threadIdx.x;
            const int r = v / PER_ROW;
            const int c = (v % PER_ROW) * VN;
            const int gk = k0 + r;
            const int gc = c0 + c;
            const T* s = src + (u64)gk * cols + gc;
            if (vec && gk < k_end && gc + VN <= cols) {
                cp_async16(&dst[r][c], s);
            } else {
#pragma unroll
                for (int j = 0; j < VN; ++j)
                    dst[r][c + j] = (gk < k_end && gc + j < cols) ? s[j] : T(0);
            }
        }
    }
};

// Loads tiles of a "k-inner" operand: a matrix stored with one row per m
// or n (A stored [M, K] or B stored [N, K]), K values per row, through
// registers (fetch before the product, store transposed after it) into
// dst[k][r] of a BK×BT stage.
template <typename T, int BK, int BT, int LD>
struct KInnerLoader {
    static constexpr int VN = Vec16<T>::N;
    static constexpr int COUNT = BT * (BK / VN) / MM_THREADS;  // vectors per thread
    static_assert(BT * (BK / VN) % MM_THREADS == 0, "whole vectors per thread");

    const T* src;
    int rows;   // M or N
    int depth;  // K, the leading dimension
    int r0;     // first row of the tile
    bool vec;   // rows start 16-byte aligned
    T held[COUNT][VN];

    // Tile row and vector of the thread's i-th vector (see the bank
    // analysis at the top of the file).
    __device__ __forceinline__ static int row_of(int i) {
        return ((i * MM_THREADS + (int)threadIdx.x) / 2) % BT;
    }
    __device__ __forceinline__ static int kq_of(int i) {
        const int v = i * MM_THREADS + threadIdx.x;
        return (v / (2 * BT)) * 2 + v % 2;
    }

    __device__ __forceinline__ void fetch(int k0, int k_end) {
#pragma unroll
        for (int i = 0; i < COUNT; ++i) {
            const int gr = r0 + row_of(i);
            const int gk = k0 + kq_of(i) * VN;
            const T* s = src + (u64)gr * depth + gk;
            if (vec && gr < rows && gk + VN <= k_end) {
                load16(s, held[i]);
            } else {
#pragma unroll
                for (int j = 0; j < VN; ++j)
                    held[i][j] = (gr < rows && gk + j < k_end) ? s[j] : T(0);
            }
        }
    }

    __device__ __forceinline__ void store(T (*dst)[LD]) const {
#pragma unroll
        for (int i = 0; i < COUNT; ++i) {
            const int r = row_of(i);
            const int k = kq_of(i) * VN;
#pragma unroll
            for (int j = 0; j < VN; ++j) dst[k + j][r] = held[i][j];
        }
    }
};

// One operand's loader by its layout: k-outer (cp.async) or k-inner
// (registers), with one interface: start(k0) before the product of the
// current stage, finish(stage) after it.
template <typename T, int BK, int BT, int LD, bool K_OUTER>
struct Operand;

template <typename T, int BK, int BT, int LD>
struct Operand<T, BK, BT, LD, true> {
    KOuterLoader<T, BK, BT, LD> l;
    __device__ __forceinline__ Operand(const T* src, int cols, int c0, int)
        : l{src, cols, c0, aligned16(src) && cols % Vec16<T>::N == 0} {}
    __device__ __forceinline__ void start(int k0, int k_end, T (*stage)[LD]) {
        l.copy(k0, k_end, stage);
    }
    __device__ __forceinline__ void finish(T (*)[LD]) const {}
};

template <typename T, int BK, int BT, int LD>
struct Operand<T, BK, BT, LD, false> {
    KInnerLoader<T, BK, BT, LD> l;
    __device__ __forceinline__ Operand(const T* src, int rows, int r0, int depth)
        : l{src, rows, depth, r0, aligned16(src) && depth % Vec16<T>::N == 0, {}} {}
    __device__ __forceinline__ void start(int k0, int k_end, T (*)[LD]) { l.fetch(k0, k_end); }
    __device__ __forceinline__ void finish(T (*stage)[LD]) const { l.store(stage); }
};

// Writes 4 consecutive values v of the product, from column `col` of a row
// of `out` (n columns), through the epilogue: as one or two vectors where
// all 4 are in bounds and aligned, else element by element.
template <typename T>
__device__ __forceinline__ void write4(T* __restrict__ row, const T* __restrict__ bias, int n,
                                       int col, bool vec, int epilogue, T (&v)[4]) {
    constexpr int VN = Vec16<T>::N;
    T* o = row + col;
    if (vec && col + 4 <= n) {
        if (epilogue == MM_EPI_ACCUMULATE) {
            T old[4];
#pragma unroll
            for (int q = 0; q < 4; q += VN) load16(o + q, old + q);
#pragma unroll
            for (int j = 0; j < 4; ++j) v[j] = old[j] + v[j];
        } else if (epilogue != MM_EPI_STORE) {
#pragma unroll
            for (int j = 0; j < 4; ++j) v[j] = epilogue_of(epilogue, v[j], row, bias, col + j);
        }
#pragma unroll
        for (int q = 0; q < 4; q += VN) store16(o + q, v + q);
    } else {
#pragma unroll
        for (int j = 0; j < 4; ++j)
            if (col + j < n) o[j] = epilogue_of(epilogue, v[j], row, bias, col + j);
    }
}

template <typename T, class G, bool TA, bool TB>
__device__ __forceinline__ void gemm_tile(const T* __restrict__ A, const T* __restrict__ B,
                                          const T* __restrict__ bias, T* __restrict__ C, int M,
                                          int N, int K, int epilogue, int k_chunk,
                                          T (*As)[G::BK][G::LDA],
                                          T (*Bs)[G::BK][G::LDB]) {
    constexpr int BK = G::BK;
    constexpr int VN = G::VN;
    const int m0 = blockIdx.y * G::BM;
    const int n0 = blockIdx.x * G::BN;
    const int k_begin = (int)blockIdx.z * k_chunk;
    const int k_end = min(K, k_begin + k_chunk);
    const int stages = k_end > k_begin ? (k_end - k_begin + BK - 1) / BK : 0;

    // A k-outer when stored [K, M] (trans_a), B when stored [K, N].
    Operand<T, BK, G::BM, G::LDA, TA> a(A, M, m0, K);
    Operand<T, BK, G::BN, G::LDB, !TB> b(B, N, n0, K);

    const int warp = threadIdx.x / ADV_WARP;
    const int lane = threadIdx.x % ADV_WARP;
    const int row0 = (warp / G::WARPS_N) * G::WM + (lane % 8) * 4;  // in the tile
    const int col0 = (warp % G::WARPS_N) * G::WN + (lane / 8) * 4;

    T acc[G::IM * 4][G::IN * 4];
#pragma unroll
    for (int i = 0; i < G::IM * 4; ++i)
#pragma unroll
        for (int j = 0; j < G::IN * 4; ++j) acc[i][j] = T(0);

    if (stages > 0) {
        a.start(k_begin, k_end, As[0]);
        b.start(k_begin, k_end, Bs[0]);
        a.finish(As[0]);
        b.finish(Bs[0]);
        cp_async_commit();
        cp_async_wait<0>();
        __syncthreads();
    }
    for (int s = 0; s < stages; ++s) {
        const int cur = s & 1;
        const bool more = s + 1 < stages;
        if (more) {
            const int k0 = k_begin + (s + 1) * BK;
            a.start(k0, k_end, As[cur ^ 1]);
            b.start(k0, k_end, Bs[cur ^ 1]);
        }
#pragma unroll
        for (int k = 0; k < BK; ++k) {
            T fa[G::IM * 4], fb[G::IN * 4];
#pragma unroll
            for (int i = 0; i < G::IM; ++i)
#pragma unroll
                for (int q = 0; q < 4; q += VN) load16(&As[cur][k][row0 + 32 * i + q], &fa[4 * i + q]);
#pragma unroll
            for (int j = 0; j < G::IN; ++j)
#pragma unroll
                for (int q = 0; q < 4; q += VN) load16(&Bs[cur][k][col0 + 16 * j + q], &fb[4 * j + q]);
#pragma unroll
            for (int i = 0; i < G::IM * 4; ++i)
#pragma unroll
                for (int j = 0; j < G::IN * 4; ++j) acc[i][j] += fa[i] * fb[j];
        }
        if (more) {
            a.finish(As[cur ^ 1]);
            b.finish(Bs[cur ^ 1]);
            cp_async_commit();
            cp_async_wait<0>();
            // The next stage is complete for every thread, and nobody
            // reads the current one any more: it is the one to refill.
            __syncthreads();
        }
    }

    // Slice z of the output: the workspace of a split product, else C.
    T* out = C + (u64)blockIdx.z * M * N;
    const bool vec = aligned16(out) && N % VN == 0;
#pragma unroll
    for (int i = 0; i < G::IM; ++i)
#pragma unroll
        for (int r = 0; r < 4; ++r) {
            const int row = m0 + row0 + 32 * i + r;
            if (row >= M) continue;
#pragma unroll
            for (int j = 0; j < G::IN; ++j) {
                const int col = n0 + col0 + 16 * j;
                if (col >= N) continue;
                T v[4];
#pragma unroll
                for (int e = 0; e < 4; ++e) v[e] = acc[4 * i + r][4 * j + e];
                write4(out + (u64)row * N, bias, N, col, vec, epilogue, v);
            }
        }
}

template <typename T, int BM, int BN>
__device__ __forceinline__ void gemm(const T* A, const T* B, const T* bias, T* C, int M, int N,
                                     int K, int trans_a, int trans_b, int epilogue, int k_chunk) {
    typedef MmTile<T, BM, BN> G;
    // Declared once, so that the four layouts share one allocation.
    ADV_SHARED(T, As, [2][G::BK][G::LDA]);
    ADV_SHARED(T, Bs, [2][G::BK][G::LDB]);
    if (trans_a) {
        if (trans_b)
            gemm_tile<T, G, true, true>(A, B, bias, C, M, N, K, epilogue, k_chunk, As, Bs);
        else
            gemm_tile<T, G, true, false>(A, B, bias, C, M, N, K, epilogue, k_chunk, As, Bs);
    } else {
        if (trans_b)
            gemm_tile<T, G, false, true>(A, B, bias, C, M, N, K, epilogue, k_chunk, As, Bs);
        else
            gemm_tile<T, G, false, false>(A, B, bias, C, M, N, K, epilogue, k_chunk, As, Bs);
    }
}

template <typename T>
__device__ __forceinline__ void matmul_reduce(const T* __restrict__ partial,
                                              const T* __restrict__ bias, T* __restrict__ c,
                                              int m, int n, int splits, int epilogue) {
    const u64 mn = (u64)m * n;
    const u64 cols = n > 0 ? (u64)n : 1;
    const u64 stride = (u64)gridDim.x * blockDim.x;
    u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    u64 col = i % cols;  // then stepped, without a division per element
    const u64 col_step = stride % cols;
    for (; i < mn; i += stride) {
        T v = partial[i];
        for (int z = 1; z < splits; ++z) v += partial[(u64)z * mn + i];
        c[i] = epilogue_of(epilogue, v, c + (i - col), bias, (int)col);
        col += col_step;
        if (col >= cols) col -= cols;
    }
}
// Registers: 64 accumulators, 16 fragment values and the k-inner operands'
// staged vectors fit 128 per thread in f32, so two 256-thread blocks share
// an SM; f64 may use up to 255.
template <typename T>
struct MmMinBlocks {
    static constexpr int value = sizeof(T) == 4 ? 2 : 1;
};

}  // namespace adv

#define ADV_MATMUL_TILE(BM, BN, T, S)                                                         \
    extern "C" __global__ void __launch_bounds__(adv::MM_THREADS, adv::MmMinBlocks<T>::value) \
        matmul_##BM##x##BN##_##S(const T* __restrict__ a, const T* __restrict__ b,            \
                                 const T* __restrict__ bias, T* __restrict__ c, int m, int n,  \
                                 int k, int trans_a, int trans_b, int epilogue, int k_chunk) { \
        adv::gemm<T, BM, BN>(a, b, bias, c, m, n, k, trans_a, trans_b, epilogue, k_chunk);    \
    }
#define ADV_MATMUL(T, S)                                                                     \
    ADV_MATMUL_TILE(128, 128, T, S)                                                          \
    ADV_MATMUL_TILE(64, 64, T, S)                                                            \
    extern "C" __global__ void matmul_reduce_##S(const T* __restrict__ partial,             \
                                                 const T* __restrict__ bias, T* __restrict__ c, \
                                                 int m, int n, int splits, int epilogue) {   \
        adv::matmul_reduce<T>(partial, bias, c, m, n, splits, epilogue);                     \
    }
ADV_MATMUL(float, f32)
ADV_MATMUL(double, f64)
