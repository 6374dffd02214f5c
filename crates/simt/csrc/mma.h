// mma.h for the emulator: the nvcuda::wmma subset advgrad's kernels use,
// m16n16k16 with __half or __nv_bfloat16 operands and a float accumulator.
//
// Fragments: `frag.num_elements` values `frag.x[i]` per lane. As on the
// GPU, which element of the 16×16 tile a lane holds is unspecified; the
// emulator gives lane l element i at flat index i·32 + l (row-major in the
// fragment's logical matrix: A is M×K, B is K×N, the accumulator M×N), and
// 8 elements per lane for every fragment (the GPU may hold some twice).
//
// load_matrix_sync, mma_sync and store_matrix_sync are warp-collective: all
// 32 lanes must call the same one together, with the same pointer, leading
// dimension and layout; they meet at the warp barrier, so a lane that
// skips one, or calls another, fails the launch as a divergent barrier. The
// pointer must be 256-bit (32-byte) aligned, the leading dimension a
// multiple of 8 elements for 16-bit types and of 4 for float; anything
// else fails the launch. fill_fragment is per lane (the CUDA guide: it is
// "ordinarily called by all threads in the warp with a common value").
//
// mma_sync computes D = A·B + C with every product of two 16-bit values
// exact in float and the sums in float: the emulator adds, for each element,
// the 16 products to C's value one at a time in the order k = 0, 1, …, 15.
// The hardware's order (and grouping) of the sums within a k-step is
// unspecified, so a GPU's result may differ from the emulator's in the last
// bits of each 16-deep step; both lie within the same error bound.
#pragma once
#include "simt.h"
#include "simt_half.h"

namespace nvcuda {
namespace wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

namespace detail {
constexpr int kElements = 8;  // per lane: 256 / 32

template <typename T>
struct IsHalf : std::false_type {};
template <>
struct IsHalf<__half> : std::true_type {};
template <>
struct IsHalf<__nv_bfloat16> : std::true_type {};

// Barrier sites of the collectives (simt::describe names them).
constexpr int kLoad = simt::kWmmaLoad;
constexpr int kMma = simt::kWmmaMma;
constexpr int kStore = simt::kWmmaStore;

// What every lane of a load or store must agree on.
struct Access {
    const void* p;
    unsigned ldm;
    int layout;
};

// The collective part of a load or store: meets the warp at `site`, checks
// that every lane passed the same access, and that it is aligned.
inline void collective_access(int site, const char* what, const void* p, unsigned ldm,
                              int layout, size_t elem) {
    const Access mine{p, ldm, layout};
    Access all[32];
    simt::warp_gather(site, &mine, sizeof mine, all);
    for (int l = 0; l < 32; ++l)
        if (all[l].p != p || all[l].ldm != ldm || all[l].layout != layout)
            simt::fail_launch(std::string("wmma::") + what + ": lane " + std::to_string(l) +
                              " passed a different pointer, leading dimension or layout than lane " +
                              std::to_string(simt::lane()) + " (they must be warp-uniform)");
    if (reinterpret_cast<uintptr_t>(p) % 32 != 0)
        simt::fail_launch(std::string("wmma::") + what + ": pointer " + simt::address(p) +
                          " is not 256-bit (32-byte) aligned");
    const unsigned multiple = 16 / (unsigned)elem;
    if (ldm % multiple != 0 || ldm < 16)
        simt::fail_launch(std::string("wmma::") + what + ": leading dimension " +
                          std::to_string(ldm) + " must be at least 16 and a multiple of " +
                          std::to_string(multiple) + " for " + std::to_string(elem) +
                          "-byte elements");
}

// Row and column of element i of the calling lane.
inline int row_of(int i) { return (i * 32 + simt::lane()) / 16; }
inline int col_of(int i) { return (i * 32 + simt::lane()) % 16; }

template <typename L>
struct IsColMajor : std::false_type {};
template <>
struct IsColMajor<col_major> : std::true_type {};
}  // namespace detail

// A warp's 16×16 tile of one operand of D = A·B + C, spread over its lanes.
template <typename Use, int M, int N, int K, typename T, typename Layout = void>
class fragment {
    static_assert(M == 16 && N == 16 && K == 16, "the emulator implements m16n16k16 only");
    static_assert(std::is_same<Use, accumulator>::value
                      ? std::is_same<T, float>::value && std::is_same<Layout, void>::value
                      : detail::IsHalf<T>::value && (std::is_same<Layout, row_major>::value ||
                                                     std::is_same<Layout, col_major>::value),
                  "matrix_a / matrix_b fragments hold __half or __nv_bfloat16 with row_major or "
                  "col_major; accumulators hold float with no layout");

  public:
    typedef T element_type;
    static constexpr int num_elements = detail::kElements;
    T x[detail::kElements];
};

template <typename Use, int M, int N, int K, typename T, typename Layout>
inline void fill_fragment(fragment<Use, M, N, K, T, Layout>& f, const T& v) {
    for (int i = 0; i < detail::kElements; ++i) f.x[i] = v;
}

// Loads a matrix_a (M×K) or matrix_b (K×N) tile from p: element (r, c) at
// p[r·ldm + c] for row_major, p[c·ldm + r] for col_major.
template <typename Use, typename T, typename Layout>
inline void load_matrix_sync(fragment<Use, 16, 16, 16, T, Layout>& f, const T* p, unsigned ldm) {
    const bool col = detail::IsColMajor<Layout>::value;
    detail::collective_access(detail::kLoad, "load_matrix_sync", p, ldm, col, sizeof(T));
    for (int i = 0; i < detail::kElements; ++i) {
        const int r = detail::row_of(i), c = detail::col_of(i);
        f.x[i] = col ? p[(size_t)c * ldm + r] : p[(size_t)r * ldm + c];
    }
}

// Loads an accumulator tile from p in the given memory layout.
inline void load_matrix_sync(fragment<accumulator, 16, 16, 16, float>& f, const float* p,
                             unsigned ldm, layout_t layout) {
    const bool col = layout == mem_col_major;
    detail::collective_access(detail::kLoad, "load_matrix_sync", p, ldm, col, sizeof(float));
    for (int i = 0; i < detail::kElements; ++i) {
        const int r = detail::row_of(i), c = detail::col_of(i);
        f.x[i] = col ? p[(size_t)c * ldm + r] : p[(size_t)r * ldm + c];
    }
}

// Stores an accumulator tile to p in the given memory layout.
inline void store_matrix_sync(float* p, const fragment<accumulator, 16, 16, 16, float>& f,
                              unsigned ldm, layout_t layout) {
    const bool col = layout == mem_col_major;
    detail::collective_access(detail::kStore, "store_matrix_sync", p, ldm, col, sizeof(float));
    for (int i = 0; i < detail::kElements; ++i) {
        const int r = detail::row_of(i), c = detail::col_of(i);
        (col ? p[(size_t)c * ldm + r] : p[(size_t)r * ldm + c]) = f.x[i];
    }
}

// D = A·B + C (see the top of the file for the order of the sums). d may
// be c.
template <typename T, typename LA, typename LB>
inline void mma_sync(fragment<accumulator, 16, 16, 16, float>& d,
                     const fragment<matrix_a, 16, 16, 16, T, LA>& a,
                     const fragment<matrix_b, 16, 16, 16, T, LB>& b,
                     const fragment<accumulator, 16, 16, 16, float>& c) {
    struct Operands {
        T a[detail::kElements];
        T b[detail::kElements];
    };
    Operands mine;
    for (int i = 0; i < detail::kElements; ++i) {
        mine.a[i] = a.x[i];
        mine.b[i] = b.x[i];
    }
    Operands all[32];
    simt::warp_gather(detail::kMma, &mine, sizeof mine, all);
    // The whole tiles, as floats: element (r, col) of flat index f is held
    // by lane f % 32 as its element f / 32.
    float A[16][16], B[16][16];
    for (int f = 0; f < 256; ++f) {
        A[f / 16][f % 16] = (float)all[f % 32].a[f / 32];
        B[f / 16][f % 16] = (float)all[f % 32].b[f / 32];
    }
    for (int i = 0; i < detail::kElements; ++i) {
        const int r = detail::row_of(i), col = detail::col_of(i);
        float acc = c.x[i];
        for (int k = 0; k < 16; ++k) acc += A[r][k] * B[k][col];
        d.x[i] = acc;
    }
}

}  // namespace wmma
}  // namespace nvcuda
