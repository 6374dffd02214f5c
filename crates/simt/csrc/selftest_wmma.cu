// selftest_wmma.cu — one-warp kernels that exercise the emulator's WMMA
// (mma.h), compiled into the harness only.
#include <mma.h>

#include "../../../kernels/common.cuh"

namespace simt_test {
using namespace nvcuda;

constexpr int kLd = 24;  // padded leading dimension of the staged tiles

template <typename H>
struct __align__(32) Staged {
    H v[16 * kLd];
};

// Stages the row-major 16×16 f32 matrix m, rounded to H, in `col`-major
// order with leading dimension kLd.
template <typename H>
__device__ void stage(const float* m, H* dst, int col) {
    for (int f = simt::lane(); f < 256; f += 32) {
        const int r = f / 16, c = f % 16;
        dst[col ? c * kLd + r : r * kLd + c] = H(m[f]);
    }
    __syncwarp();
}

template <typename H, typename LA, typename LB>
__device__ void product(const H* as, const H* bs, float* c, int c_col, int fault) {
    wmma::fragment<wmma::matrix_a, 16, 16, 16, H, LA> fa;
    wmma::fragment<wmma::matrix_b, 16, 16, 16, H, LB> fb;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
    wmma::fill_fragment(acc, 0.0f);
    const unsigned ld = fault == 3 ? 12 : kLd;
    const H* a_at = fault == 1 ? as + 8 : fault == 4 && simt::lane() == 5 ? as + 16 * kLd : as;
    wmma::load_matrix_sync(fa, a_at, ld);
    wmma::load_matrix_sync(fb, bs, kLd);
    wmma::load_matrix_sync(acc, c, 16, wmma::mem_row_major);
    if (fault == 2 && simt::lane() == 31) return;
    wmma::mma_sync(acc, fa, fb, acc);
    for (int i = 0; i < acc.num_elements; ++i) acc.x[i] *= 2.0f;
    wmma::store_matrix_sync(c, acc, 16, c_col ? wmma::mem_col_major : wmma::mem_row_major);
}

// c = 2·(op(A)·op(B) + c) for 16×16 row-major f32 a, b, c, with A and B
// rounded to H and staged in shared memory row- or column-major. `fault`
// breaks a rule: 1 a misaligned pointer, 2 lane 31 skips mma_sync, 3 a
// leading dimension that is not a multiple of 8, 4 a pointer that is not
// warp-uniform.
template <typename H>
__device__ void one_warp(const float* a, const float* b, float* c, int a_col, int b_col,
                         int c_col, int fault) {
    ADV_SHARED(Staged<H>, as, [1]);
    ADV_SHARED(Staged<H>, bs, [1]);
    stage(a, as[0].v, a_col);
    stage(b, bs[0].v, b_col);
    if (a_col) {
        if (b_col)
            product<H, wmma::col_major, wmma::col_major>(as[0].v, bs[0].v, c, c_col, fault);
        else
            product<H, wmma::col_major, wmma::row_major>(as[0].v, bs[0].v, c, c_col, fault);
    } else {
        if (b_col)
            product<H, wmma::row_major, wmma::col_major>(as[0].v, bs[0].v, c, c_col, fault);
        else
            product<H, wmma::row_major, wmma::row_major>(as[0].v, bs[0].v, c, c_col, fault);
    }
}
}  // namespace simt_test

extern "C" __global__ void simt_wmma_bf16(const float* a, const float* b, float* c, int a_col,
                                          int b_col, int c_col, int fault) {
    simt_test::one_warp<__nv_bfloat16>(a, b, c, a_col, b_col, c_col, fault);
}
extern "C" __global__ void simt_wmma_f16(const float* a, const float* b, float* c, int a_col,
                                         int b_col, int c_col, int fault) {
    simt_test::one_warp<__half>(a, b, c, a_col, b_col, c_col, fault);
}

// Rounds each f32 to __half and to __nv_bfloat16 and back: out[2i] and
// out[2i + 1].
extern "C" __global__ void simt_half_round_trip(const float* in, float* out, int n) {
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        out[2 * i] = __half2float(__float2half_rn(in[i]));
        out[2 * i + 1] = __bfloat162float(__float2bfloat16_rn(in[i]));
    }
}
