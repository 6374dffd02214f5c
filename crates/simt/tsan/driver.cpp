// driver.cpp — runs the tiled matmul and the sum reductions on the SIMT
// emulator, for a build with -fsanitize=thread (scripts/simt-tsan.sh).
// ThreadSanitizer sees every emulated CUDA thread as an OS thread and every
// barrier as a mutex/condition variable, so a missing __syncthreads shows
// up as a data race on shared memory. Exits non-zero on a wrong result.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "registry.h"
#include "simt.h"

// Found through -I: kernels/ normally, a modified copy when testing the test.
#include "matmul.cu"
#include "reduce.cu"

static const simt_entry REGISTRY[] = {
    SIMT_KERNEL(matmul_f32) SIMT_KERNEL(sum_partial_f32) SIMT_KERNEL(sum_final_f32)
    SIMT_KERNEL(sum_rows_f32)};

const simt_entry* simt_find_kernel(const char* name) {
    for (const auto& e : REGISTRY)
        if (std::string(e.name) == name) return &e;
    return nullptr;
}
const simt_entry* simt_kernel_at(size_t i) {
    return i < sizeof(REGISTRY) / sizeof(REGISTRY[0]) ? &REGISTRY[i] : nullptr;
}

extern "C" int simt_launch(const char*, const unsigned*, const unsigned*, size_t, int, void**,
                           size_t, unsigned, char*, size_t);

static int launch(const char* k, unsigned gx, unsigned gy, unsigned block, size_t smem,
                  std::vector<void*> args) {
    const unsigned grid[3] = {gx, gy, 1}, blk[3] = {block, 1, 1};
    char err[1024] = {0};
    // 0: cooperating threads, one OS thread each (what TSan watches).
    if (simt_launch(k, grid, blk, smem, 0, args.data(), args.size(), 60000, err, sizeof err)) {
        fprintf(stderr, "launch failed: %s\n", err);
        return 1;
    }
    return 0;
}

static float frand(unsigned& s) {
    s = s * 1664525u + 1013904223u;
    return (float)((s >> 8) & 0xffff) / 65536.0f - 0.5f;
}

int main() {
    int bad = 0;
    unsigned seed = 1;
    // Matmul: 2×2 blocks of 64×64, 3 stages of K, odd edges.
    int M = 70, N = 68, K = 41, ta = 0, tb = 0, acc = 0;
    std::vector<float> A(M * K), B(K * N), C(M * N, NAN);
    for (auto& v : A) v = frand(seed);
    for (auto& v : B) v = frand(seed);
    const float *pa = A.data(), *pb = B.data();
    float* pc = C.data();
    bad |= launch("matmul_f32", (N + 63) / 64, (M + 63) / 64, 256, 0,
                  {&pa, &pb, &pc, &M, &N, &K, &ta, &tb, &acc});
    for (int i = 0; i < M; ++i)
        for (int j = 0; j < N; ++j) {
            double s = 0;
            for (int k = 0; k < K; ++k) s += (double)A[i * K + k] * B[k * N + j];
            if (!(std::fabs(C[i * N + j] - s) <= 1e-4)) {
                if (!bad) fprintf(stderr, "matmul mismatch at %d,%d: %f vs %f\n", i, j, C[i * N + j], s);
                bad = 1;
            }
        }

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
    bad |= launch("sum_partial_f32", blocks, 1, 256, 32 * sizeof(float), {&px, &pp, &n});
    bad |= launch("sum_final_f32", 1, 1, 256, 32 * sizeof(float), {&cpp, &po, &scale, &blocks});
    if (!(std::fabs(out - want) <= 1e-3)) {
        fprintf(stderr, "sum mismatch: %f vs %f\n", out, want);
        bad = 1;
    }

    // Column sums (shared-memory tree across row groups).
    int rows = 37, cols = 45;
    std::vector<float> cs(cols, NAN);
    float* pcs = cs.data();
    bad |= launch("sum_rows_f32", (cols + 31) / 32, 1, 256, 0, {&px, &pcs, &rows, &cols});
    for (int c = 0; c < cols; ++c) {
        double s = 0;
        for (int r = 0; r < rows; ++r) s += x[r * cols + c];
        if (!(std::fabs(cs[c] - s) <= 1e-4)) bad = 1;
    }
    printf(bad ? "simt-tsan driver: WRONG RESULTS\n" : "simt-tsan driver: results ok\n");
    return bad;
}
