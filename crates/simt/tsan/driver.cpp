// driver.cpp — runs the block-tiled matmul (both tiles, operands loaded by
// cp.async and through registers, a split product and its reduction), the
// sum reductions and the implicit-GEMM convolution (forward, a split weight
// gradient and its reduction, the bias gradient) on the SIMT emulator, for
// a build with
// -fsanitize=thread (scripts/simt-tsan.sh). ThreadSanitizer sees every
// emulated CUDA thread as a fiber of its own, whose switches synchronise
// nothing, and every barrier as a mutex and atomics, so a missing
// __syncthreads shows up as a data race on shared memory. Exits non-zero on
// a wrong result.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "registry.h"
#include "simt.h"

// Found through -I: kernels/ normally, a modified copy when testing the test.
#include "conv.cu"
#include "matmul.cu"
#include "reduce.cu"

static const simt_entry REGISTRY[] = {
    SIMT_KERNEL(matmul_128x128_f32) SIMT_KERNEL(matmul_64x64_f32) SIMT_KERNEL(matmul_reduce_f32)
    SIMT_KERNEL(sum_partial_f32) SIMT_KERNEL(sum_final_f32) SIMT_KERNEL(sum_rows_f32)
    SIMT_KERNEL(conv2d_fwd_f32) SIMT_KERNEL(conv2d_dw_f32) SIMT_KERNEL(conv2d_db_f32)};

const simt_entry* simt_find_kernel(const char* name) {
    for (const auto& e : REGISTRY)
        if (std::string(e.name) == name) return &e;
    return nullptr;
}
const simt_entry* simt_kernel_at(size_t i) {
    return i < sizeof(REGISTRY) / sizeof(REGISTRY[0]) ? &REGISTRY[i] : nullptr;
}

extern "C" int simt_launch(const char*, const unsigned*, const unsigned*, size_t, int, void**,
                           size_t, char*, size_t);

static int launch(const char* k, const unsigned grid[3], unsigned block,
                  std::vector<void*> args, size_t smem = 0) {
    const unsigned blk[3] = {block, 1, 1};
    char err[1024] = {0};
    // 0: cooperating threads, one fiber each (what TSan watches).
    if (simt_launch(k, grid, blk, smem, 0, args.data(), args.size(), err, sizeof err)) {
        fprintf(stderr, "launch failed: %s\n", err);
        return 1;
    }
    return 0;
}

static float frand(unsigned& s) {
    s = s * 1664525u + 1013904223u;
    return (float)((s >> 8) & 0xffff) / 65536.0f - 0.5f;
}

// C = op(A)·op(B) by matmul_<tile>_f32 over `splits` depth ranges of
// k_chunk (reduced by matmul_reduce_f32 when there are several), checked
// against a double-precision reference.
static int matmul(const char* kernel, int tile, int M, int N, int K, int ta, int tb, int splits,
                  int k_chunk, unsigned& seed) {
    std::vector<float> A(M * K), B(K * N), C(M * N, NAN), P((size_t)splits * M * N, NAN);
    for (auto& v : A) v = frand(seed);
    for (auto& v : B) v = frand(seed);
    const float *pa = A.data(), *pb = B.data();
    float *pc = C.data(), *pp = P.data();
    const float* cpp = P.data();
    int store = 0;
    int bad = 0;
    const unsigned grid[3] = {(unsigned)(N + tile - 1) / tile, (unsigned)(M + tile - 1) / tile,
                              (unsigned)splits};
    bad |= launch(kernel, grid, 256, {&pa, &pb, &pa, splits > 1 ? &pp : &pc, &M, &N, &K, &ta,
                                      &tb, &store, &k_chunk});
    if (splits > 1) {
        const unsigned one[3] = {(unsigned)(M * N + 255) / 256, 1, 1};
        bad |= launch("matmul_reduce_f32", one, 256, {&cpp, &pa, &pc, &M, &N, &splits, &store});
    }
    for (int i = 0; i < M; ++i)
        for (int j = 0; j < N; ++j) {
            double s = 0;
            for (int k = 0; k < K; ++k)
                s += (double)A[ta ? k * M + i : i * K + k] * B[tb ? j * K + k : k * N + j];
            if (!(std::fabs(C[i * N + j] - s) <= 1e-4)) {
                if (!bad)
                    fprintf(stderr, "%s ta=%d tb=%d: mismatch at %d,%d: %f vs %f\n", kernel, ta,
                            tb, i, j, C[i * N + j], s);
                bad = 1;
            }
        }
    return bad;
}

// conv2d_fwd_f32 (two row blocks, two depth stages), conv2d_dw_f32 split in
// two depth ranges and reduced by matmul_reduce_f32, and conv2d_db_f32, on
// a stride-2, padded, 3×2 convolution, checked against a double reference.
static int conv(unsigned& seed) {
    int n = 4, c = 3, h = 9, w = 7, o = 5, kh = 3, kw = 2, stride = 2, pad = 1;
    int oh = (h + 2 * pad - kh) / stride + 1, ow = (w + 2 * pad - kw) / stride + 1;
    int patch = c * kh * kw, pixels = oh * ow;
    std::vector<float> x(n * c * h * w), wt(o * patch), b(o), g(n * o * pixels);
    for (auto* v : {&x, &wt, &b, &g})
        for (auto& e : *v) e = frand(seed);
    std::vector<float> y(g.size(), NAN), part(2 * wt.size(), NAN), dw(wt.size(), NAN), db(o, NAN);
    std::vector<double> ry(g.size()), rdw(wt.size()), rdb(o);
    for (int in = 0; in < n; ++in)
        for (int oc = 0; oc < o; ++oc)
            for (int i = 0; i < oh; ++i)
                for (int j = 0; j < ow; ++j) {
                    const int yi = ((in * o + oc) * oh + i) * ow + j;
                    ry[yi] += b[oc];
                    rdb[oc] += g[yi];
                    for (int ci = 0; ci < c; ++ci)
                        for (int p = 0; p < kh; ++p)
                            for (int q = 0; q < kw; ++q) {
                                const int hh = i * stride + p - pad, ww = j * stride + q - pad;
                                if (hh < 0 || hh >= h || ww < 0 || ww >= w) continue;
                                const int xi = ((in * c + ci) * h + hh) * w + ww;
                                const int wi = (oc * c + ci) * kh * kw + p * kw + q;
                                ry[yi] += (double)wt[wi] * x[xi];
                                rdw[wi] += (double)g[yi] * x[xi];
                            }
                }
    const float *px = x.data(), *pw = wt.data(), *pb = b.data(), *pg = g.data();
    const float* cpart = part.data();
    float *py = y.data(), *ppart = part.data(), *pdw = dw.data(), *pdb = db.data();
    int bad = 0, k_chunk = 48, splits = 2, store = 0;
    const unsigned gf[3] = {(unsigned)(n * pixels + 63) / 64, 1, 1};
    bad |= launch("conv2d_fwd_f32", gf, 256,
                  {&px, &pw, &pb, &py, &n, &c, &h, &w, &o, &kh, &kw, &stride, &pad, &oh, &ow});
    const unsigned gw[3] = {1, 1, (unsigned)splits};
    bad |= launch("conv2d_dw_f32", gw, 256,
                  {&pg, &px, &ppart, &n, &c, &h, &w, &o, &kh, &kw, &stride, &pad, &oh, &ow,
                   &k_chunk});
    const unsigned gr[3] = {1, 1, 1};
    bad |= launch("matmul_reduce_f32", gr, 256, {&cpart, &cpart, &pdw, &o, &patch, &splits, &store});
    const unsigned gb[3] = {(unsigned)o, 1, 1};
    bad |= launch("conv2d_db_f32", gb, 256, {&pg, &pdb, &n, &o, &pixels});
    const auto near = [&](const char* what, const std::vector<float>& got,
                          const std::vector<double>& want) {
        for (size_t i = 0; i < got.size(); ++i)
            if (!(std::fabs(got[i] - want[i]) <= 1e-4)) {
                fprintf(stderr, "%s mismatch at %zu: %f vs %f\n", what, i, got[i], want[i]);
                return 1;
            }
        return 0;
    };
    bad |= near("conv2d_fwd", y, ry) | near("conv2d_dw", dw, rdw) | near("conv2d_db", db, rdb);
    return bad;
}

int main() {
    int bad = 0;
    unsigned seed = 1;
    // A through registers and B by cp.async, then the reverse; 2×2 blocks
    // with odd edges and 3 stages; a product split in 3 depth ranges.
    bad |= matmul("matmul_64x64_f32", 64, 70, 68, 41, 0, 0, 1, 41, seed);
    bad |= matmul("matmul_128x128_f32", 128, 130, 132, 36, 1, 1, 1, 36, seed);
    bad |= matmul("matmul_64x64_f32", 64, 36, 68, 41, 1, 0, 3, 16, seed);

    // Two-pass sum of 5000 values over 5 blocks.
    unsigned long long n = 5000;
    unsigned blocks = 5;
    std::vector<float> x(n), partials(blocks, NAN);
    float out = NAN, scale = 1.0f;
    double want = 0;
    for (auto& v : x) want += (v = frand(seed));
    const float* px = x.data();
    float* pp = partials.data();
    const float* cpp = partials.data();
    float* po = &out;
    const unsigned g5[3] = {blocks, 1, 1}, g1[3] = {1, 1, 1};
    bad |= launch("sum_partial_f32", g5, 256, {&px, &pp, &n}, 32 * sizeof(float));
    bad |= launch("sum_final_f32", g1, 256, {&cpp, &po, &scale, &blocks}, 32 * sizeof(float));
    if (!(std::fabs(out - want) <= 1e-3)) {
        fprintf(stderr, "sum mismatch: %f vs %f\n", out, want);
        bad = 1;
    }

    // Column sums (shared-memory tree across row groups).
    int rows = 37, cols = 45;
    std::vector<float> cs(cols, NAN);
    float* pcs = cs.data();
    const unsigned gc[3] = {(unsigned)(cols + 31) / 32, 1, 1};
    bad |= launch("sum_rows_f32", gc, 256, {&px, &pcs, &rows, &cols});
    for (int c = 0; c < cols; ++c) {
        double s = 0;
        for (int r = 0; r < rows; ++r) s += x[r * cols + c];
        if (!(std::fabs(cs[c] - s) <= 1e-4)) bad = 1;
    }
    bad |= conv(seed);
    printf(bad ? "simt-tsan driver: WRONG RESULTS\n" : "simt-tsan driver: results ok\n");
    return bad;
}
