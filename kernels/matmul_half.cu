// matmul_half.cu — C = op(A)·op(B) on tensor cores: operands rounded to
// bf16 or f16, products and sums in f32, an f32 C through the f32 matmul's
// epilogues (stored, added to C, or f(P + bias[col])). Shapes, transposes
// and epilogue codes as in matmul.cu; any m, n, k.
//
// Each operand is stored either in the half type H itself or in f32, which
// is rounded to H (to nearest even) while it is staged into shared memory:
// autocast never materialises a converted copy of an f32 tensor. The entry
// points are matmul_tc_{tile}_{H}_{storage of A}_{storage of B}, storage
// `half` or `f32` (matmul_half.rs).
//
// The block tile (BM×BN = 128×128 with 8 warps, or 64×64 with 4), for
// BK = 32-deep slices of K:
// - Shared memory holds each stage of each operand in H, laid out as it is
//   stored in global memory, so that staging reads rows along their
//   contiguous dimension: A stored [M, K] as As[m][k] (a row_major
//   matrix_a), A stored [K, M] as As[k][m] (col_major); B stored [K, N] as
//   Bs[k][n] (row_major matrix_b), B stored [N, K] as Bs[n][k] (col_major).
//   Rows are padded by 8 values (16 bytes), which keeps every fragment
//   pointer 32-byte aligned and the leading dimensions multiples of 8, as
//   load_matrix_sync requires, and staggers the rows over the banks.
// - Warps: 2 (m) × 4 (n) for 128×128, each a 64×32 warp tile of 4×2
//   m16n16k16 accumulators; 2 × 2 for 64×64, each 32×32 (2×2).
// - Two stages (double buffering), one barrier per slice: the next slice
//   is on its way into one stage while the tensor cores multiply the other.
//   An operand stored in H is copied with cp.async (16 bytes, global to
//   shared without registers) where a chunk of 8 values lies in bounds and
//   aligned; an operand stored in f32 is read into registers as 16-byte
//   vectors before the product, rounded to H, and stored after it. Chunks
//   at the edges (or unaligned) go element by element, zero outside the
//   matrix, stored at once.
// - With both operands in H, 128×128 blocks are built for two per SM (at
//   most 128 registers a thread), 16 warps to hide the latency of the
//   loads and barriers (MinBlocks). The single-stage kernel this replaced
//   ran one block an SM: 51.8 TFLOP/s at 4096 on an H200 (f32 operands),
//   against cuBLAS's 650 (bf16 operands).
// - Epilogue: each warp stores one accumulator at a time to its own 16×16
//   f32 scratch tile in shared memory; each lane then writes 8 consecutive
//   values of one row through the epilogue, skipping what lies outside C.
// - Shared memory: 2 stages of each operand plus the scratch tiles, 48 KiB
//   for 128×128 (the static limit) and 24 KiB for 64×64.
//
// Split-K as in matmul.cu: blockIdx.z contracts [z·k_chunk,
// min(K, (z+1)·k_chunk)); with several ranges each writes its partial
// product (epilogue 0) to slice z of the workspace `c`, and matmul.cu's
// matmul_reduce_f32 adds them in order and applies the epilogue.
#include <mma.h>

#include "common.cuh"
#include "half.cuh"

namespace adv {
namespace tc {

using namespace nvcuda;

constexpr int BK = 32;
constexpr int PAD = 8;
constexpr int CHUNK = 8;  // values staged per 16-byte vector of H

// x rounded to H (to_half, half.cuh), or x itself when it already is one.
template <typename H, typename S>
struct Round {
    __device__ __forceinline__ static H of(S x) { return to_half<H>(x); }
};
template <typename H>
struct Round<H, H> {
    __device__ __forceinline__ static H of(H x) { return x; }
};

// 8 values of H, also seen as the 4 words of one 16-byte vector.
template <typename H>
union Chunk {
    H h[CHUNK];
    float w[4];
};

// The 8 values of S at p, read as 16-byte vectors, rounded to H.
template <typename H>
__device__ __forceinline__ void load_chunk(const float* p, Chunk<H>& out) {
    float v[CHUNK];
    load16(p, v);
    load16(p + 4, v + 4);
#pragma unroll
    for (int j = 0; j < CHUNK; ++j) out.h[j] = to_half<H>(v[j]);
}
template <typename H>
__device__ __forceinline__ void load_chunk(const H* p, Chunk<H>& out) {
    load16(reinterpret_cast<const float*>(p), out.w);
}

// Whether A and B are one type.
template <typename A, typename B>
struct Same {
    static constexpr bool value = false;
};
template <typename A>
struct Same<A, A> {
    static constexpr bool value = true;
};

// A when `first`, else B.
template <bool first, typename A, typename B>
struct Pick {
    typedef A type;
};
template <typename A, typename B>
struct Pick<false, A, B> {
    typedef B type;
};

// Stages an R×C tile (C contiguous) of a matrix stored with `ld` values
// per row into dst[r][c] (leading dimension LD). An operand stored in H
// (ASYNC) is issued straight into the stage by issue(); one stored in f32
// is read into registers by issue() and rounded, then store()d once the
// stage is free.
template <typename H, typename S, int R, int C, int LD, int THREADS>
struct Stager {
    static constexpr int PER_ROW = C / CHUNK;
    static constexpr int COUNT = R * PER_ROW / THREADS;
    static constexpr bool ASYNC = Same<H, S>::value;
    static_assert(R * PER_ROW % THREADS == 0, "whole chunks per thread");

    const S* src;
    int ld;
    bool vec;  // rows start 16-byte aligned
    Chunk<H> held[ASYNC ? 1 : COUNT];

    __device__ __forceinline__ Stager(const S* s, int ld_)
        : src(s), ld(ld_), vec(aligned16(s) && ld_ % (16 / (int)sizeof(S)) == 0) {}

    // Chunk i of this thread: its row and column in the tile.
    __device__ __forceinline__ static int row(int i) {
        return (i * THREADS + (int)threadIdx.x) / PER_ROW;
    }
    __device__ __forceinline__ static int col(int i) {
        return (i * THREADS + (int)threadIdx.x) % PER_ROW * CHUNK;
    }

    // The 8 values at global (gr, gc) rounded to H one by one, zero at rows
    // from row_end and columns from col_end on.
    __device__ __forceinline__ void edge(int gr, int gc, int row_end, int col_end,
                                         Chunk<H>& out) const {
        const S* p = src + (u64)gr * ld + gc;
#pragma unroll
        for (int j = 0; j < CHUNK; ++j)
            out.h[j] = (gr < row_end && gc + j < col_end) ? Round<H, S>::of(p[j]) : to_half<H>(0.0f);
    }

    // Starts staging the tile at (r0, c0), zero at rows from row_end and
    // columns from col_end on, into the stage dst.
    __device__ __forceinline__ void issue(H* dst, int r0, int c0, int row_end, int col_end) {
#pragma unroll
        for (int i = 0; i < COUNT; ++i) {
            const int gr = r0 + row(i);
            const int gc = c0 + col(i);
            const bool whole = vec && gr < row_end && gc + CHUNK <= col_end;
            if constexpr (ASYNC) {
                H* d = dst + row(i) * LD + col(i);
                if (whole) {
                    cp_async16(d, src + (u64)gr * ld + gc);
                } else {
                    edge(gr, gc, row_end, col_end, held[0]);
                    store16(reinterpret_cast<float*>(d), held[0].w);
                }
            } else if (whole) {
                load_chunk(src + (u64)gr * ld + gc, held[i]);
            } else {
                edge(gr, gc, row_end, col_end, held[i]);
            }
        }
    }

    // Finishes an f32 operand's issue() into dst (an H operand's copies are
    // waited for by cp_async_wait).
    __device__ __forceinline__ void store(H* dst) const {
        if constexpr (!ASYNC) {
#pragma unroll
            for (int i = 0; i < COUNT; ++i)
                store16(reinterpret_cast<float*>(dst + row(i) * LD + col(i)), held[i].w);
        }
    }
};

// An operand's stage geometry: k-inner (A stored [M, K], B stored [N, K]:
// T rows of BK) or k-outer (A stored [K, M], B stored [K, N]: BK rows of T).
template <int T, bool K_OUTER>
struct Stage {
    static constexpr int ROWS = K_OUTER ? BK : T;
    static constexpr int COLS = K_OUTER ? T : BK;
    static constexpr int LD = COLS + PAD;
    static constexpr int SIZE = ROWS * LD;
};

template <int T>
struct StageBuffer {
    static constexpr int SIZE = Stage<T, false>::SIZE > Stage<T, true>::SIZE
                                    ? Stage<T, false>::SIZE
                                    : Stage<T, true>::SIZE;
};

template <int BM_, int BN_, int WARPS_M_, int WARPS_N_, int MIN_BLOCKS_>
struct TcTile {
    static constexpr int BM = BM_;
    static constexpr int BN = BN_;
    static constexpr int WARPS_M = WARPS_M_;
    static constexpr int WARPS_N = WARPS_N_;
    static constexpr int THREADS = 32 * WARPS_M * WARPS_N;
    static constexpr int WM = BM / WARPS_M;  // warp tile
    static constexpr int WN = BN / WARPS_N;
    static constexpr int FM = WM / 16;  // accumulators per warp
    static constexpr int FN = WN / 16;
    // Blocks resident per SM when both operands are stored in the half
    // type (see MinBlocks).
    static constexpr int MIN_BLOCKS = MIN_BLOCKS_;
};

// A 16-bit stage buffer, 32-byte aligned for load_matrix_sync.
template <typename H, int N>
struct __align__(32) HalfStage {
    H v[N];
};
struct __align__(32) Scratch {
    float v[16 * 16];
};

template <typename H, typename SA, typename SB, class G, bool TA, bool TB>
__device__ __forceinline__ void tile(const SA* __restrict__ A, const SB* __restrict__ B,
                                     const float* __restrict__ bias, float* __restrict__ C, int M,
                                     int N, int K, int epilogue, int k_chunk, H* as, H* bs,
                                     Scratch* scratch) {
    typedef Stage<G::BM, TA> SA_;  // A is k-outer when stored [K, M]
    typedef Stage<G::BN, !TB> SB_;  // B is k-outer when stored [K, N]
    typedef typename Pick<TA, wmma::col_major, wmma::row_major>::type LA;
    typedef typename Pick<TB, wmma::col_major, wmma::row_major>::type LB;

    const int m0 = blockIdx.y * G::BM;
    const int n0 = blockIdx.x * G::BN;
    const int k_begin = (int)blockIdx.z * k_chunk;
    const int k_end = min(K, k_begin + k_chunk);
    const int stages = k_end > k_begin ? (k_end - k_begin + BK - 1) / BK : 0;

    Stager<H, SA, SA_::ROWS, SA_::COLS, SA_::LD, G::THREADS> a(A, TA ? M : K);
    Stager<H, SB, SB_::ROWS, SB_::COLS, SB_::LD, G::THREADS> b(B, TB ? K : N);
    constexpr int A_STAGE = StageBuffer<G::BM>::SIZE;
    constexpr int B_STAGE = StageBuffer<G::BN>::SIZE;
    // Starts slice k0 into stage st: where each operand's slice starts,
    // and where its rows and columns end (the depth at k_end, the other
    // extent at M or N).
    const auto issue = [&](int k0, int st) {
        if (TA)
            a.issue(as + st * A_STAGE, k0, m0, k_end, M);
        else
            a.issue(as + st * A_STAGE, m0, k0, M, k_end);
        if (TB)
            b.issue(bs + st * B_STAGE, n0, k0, N, k_end);
        else
            b.issue(bs + st * B_STAGE, k0, n0, k_end, N);
        cp_async_commit();
    };
    // Finishes the slice issued into stage st (the barrier is the caller's).
    const auto land = [&](int st) {
        a.store(as + st * A_STAGE);
        b.store(bs + st * B_STAGE);
        cp_async_wait<0>();
    };

    const int warp = threadIdx.x / ADV_WARP;
    const int wm = (warp / G::WARPS_N) * G::WM;
    const int wn = (warp % G::WARPS_N) * G::WN;

    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[G::FM][G::FN];
#pragma unroll
    for (int i = 0; i < G::FM; ++i)
#pragma unroll
        for (int j = 0; j < G::FN; ++j) wmma::fill_fragment(acc[i][j], 0.0f);

    if (stages > 0) {
        issue(k_begin, 0);
        land(0);
        __syncthreads();
    }
    for (int s = 0; s < stages; ++s) {
        const int cur = s & 1;
        // The other stage was last read before the previous barrier.
        if (s + 1 < stages) issue(k_begin + (s + 1) * BK, cur ^ 1);
        const H* at = as + cur * A_STAGE;
        const H* bt = bs + cur * B_STAGE;
#pragma unroll
        for (int kk = 0; kk < BK; kk += 16) {
            wmma::fragment<wmma::matrix_a, 16, 16, 16, H, LA> fa[G::FM];
            wmma::fragment<wmma::matrix_b, 16, 16, 16, H, LB> fb[G::FN];
#pragma unroll
            for (int i = 0; i < G::FM; ++i) {
                const int m = wm + 16 * i;
                wmma::load_matrix_sync(fa[i], TA ? at + kk * SA_::LD + m : at + m * SA_::LD + kk,
                                       SA_::LD);
            }
#pragma unroll
            for (int j = 0; j < G::FN; ++j) {
                const int n = wn + 16 * j;
                wmma::load_matrix_sync(fb[j], TB ? bt + n * SB_::LD + kk : bt + kk * SB_::LD + n,
                                       SB_::LD);
            }
#pragma unroll
            for (int i = 0; i < G::FM; ++i)
#pragma unroll
                for (int j = 0; j < G::FN; ++j) wmma::mma_sync(acc[i][j], fa[i], fb[j], acc[i][j]);
        }
        if (s + 1 < stages) land(cur ^ 1);
        // The next stage is in place, and nobody reads this one any more.
        __syncthreads();
    }

    // Slice z of the output: the workspace of a split product, else C.
    float* out = C + (u64)blockIdx.z * M * N;
    float* mine = scratch[warp].v;
    const int lane = threadIdx.x % ADV_WARP;
    const int r = lane / 2;
    const int c = (lane % 2) * 8;
#pragma unroll
    for (int i = 0; i < G::FM; ++i)
#pragma unroll
        for (int j = 0; j < G::FN; ++j) {
            wmma::store_matrix_sync(mine, acc[i][j], 16, wmma::mem_row_major);
            __syncwarp();
            const int row = m0 + wm + 16 * i + r;
            const int col = n0 + wn + 16 * j + c;
            if (row < M) {
                float* o = out + (u64)row * N;
#pragma unroll
                for (int e = 0; e < 8; ++e)
                    if (col + e < N)
                        o[col + e] = epilogue_of(epilogue, mine[r * 16 + c + e], o, bias, col + e);
            }
            __syncwarp();
        }
}

template <typename H, typename SA, typename SB, class G>
__device__ __forceinline__ void gemm(const SA* A, const SB* B, const float* bias, float* C, int M,
                                     int N, int K, int trans_a, int trans_b, int epilogue,
                                     int k_chunk) {
    // Declared once, so that the four layouts share one allocation.
    typedef HalfStage<H, StageBuffer<G::BM>::SIZE> StageA;
    typedef HalfStage<H, StageBuffer<G::BN>::SIZE> StageB;
    static_assert(sizeof(StageA) == sizeof(H) * StageBuffer<G::BM>::SIZE &&
                      sizeof(StageB) == sizeof(H) * StageBuffer<G::BN>::SIZE,
                  "stages follow each other without padding");
    ADV_SHARED(StageA, as, [2]);
    ADV_SHARED(StageB, bs, [2]);
    ADV_SHARED(Scratch, scratch, [G::THREADS / 32]);
    H* a = as[0].v;
    H* b = bs[0].v;
    if (trans_a) {
        if (trans_b)
            tile<H, SA, SB, G, true, true>(A, B, bias, C, M, N, K, epilogue, k_chunk, a, b, scratch);
        else
            tile<H, SA, SB, G, true, false>(A, B, bias, C, M, N, K, epilogue, k_chunk, a, b, scratch);
    } else {
        if (trans_b)
            tile<H, SA, SB, G, false, true>(A, B, bias, C, M, N, K, epilogue, k_chunk, a, b, scratch);
        else
            tile<H, SA, SB, G, false, false>(A, B, bias, C, M, N, K, epilogue, k_chunk, a, b, scratch);
    }
}

typedef TcTile<128, 128, 2, 4, 2> Tile128;
typedef TcTile<64, 64, 2, 2, 3> Tile64;

// The __launch_bounds__ minimum of blocks per SM: the tile's when both
// operands are stored in H (cp.async, no registers in flight), else one.
// An f32 operand keeps its next slice in registers across the product
// (8 floats a chunk), and 128×128 spills at two blocks' 128 registers.
template <class G, typename H, typename SA, typename SB>
struct MinBlocks {
    static constexpr int value = Same<H, SA>::value && Same<H, SB>::value ? G::MIN_BLOCKS : 1;
};

}  // namespace tc
}  // namespace adv

#define ADV_TC_ENTRY(TILE, G, H, HS, SA, SAS, SB, SBS)                                          \
    extern "C" __global__ void __launch_bounds__(                                              \
        adv::tc::G::THREADS, adv::tc::MinBlocks<adv::tc::G, H, SA, SB>::value)                 \
        matmul_tc_##TILE##_##HS##_##SAS##_##SBS(const SA* __restrict__ a,                      \
                                                const SB* __restrict__ b,                      \
                                                const float* __restrict__ bias,                \
                                                float* __restrict__ c, int m, int n, int k,    \
                                                int trans_a, int trans_b, int epilogue,        \
                                                int k_chunk) {                                 \
        adv::tc::gemm<H, SA, SB, adv::tc::G>(a, b, bias, c, m, n, k, trans_a, trans_b,         \
                                             epilogue, k_chunk);                               \
    }
#define ADV_TC_STORAGE(TILE, G, H, HS)                    \
    ADV_TC_ENTRY(TILE, G, H, HS, H, half, H, half)        \
    ADV_TC_ENTRY(TILE, G, H, HS, H, half, float, f32)     \
    ADV_TC_ENTRY(TILE, G, H, HS, float, f32, H, half)     \
    ADV_TC_ENTRY(TILE, G, H, HS, float, f32, float, f32)
#define ADV_TC(H, HS)                            \
    ADV_TC_STORAGE(128x128, Tile128, H, HS)      \
    ADV_TC_STORAGE(64x64, Tile64, H, HS)
ADV_TC(__nv_bfloat16, bf16)
ADV_TC(__half, f16)
