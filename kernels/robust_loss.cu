// robust_loss.cu — the losses of robustness evaluation and training (APGD,
// FAB, TRADES, MART) and their backward rules; the math is the CPU
// backend's (src/backend/cpu/robust.rs), each formula in T.
//
// Logits are rows×cols, row-major. Row-wise kernels give each row a group
// of `group` lanes (a power of two up to 32 from the plan, as
// softmax_xent.cu does: about 4 values per lane, 4 lanes for 10 classes),
// so a warp holds 32 / group rows and every read of a row is contiguous.
// A kernel makes a few passes over its row (max, sum, output); the row,
// at most a few KiB, is in L1 after the first.
//
//   log_softmax_fwd:  m = max_c x[c] (NaN-propagating), s = Σ_c e^{x[c] − m},
//                     y[c] = x[c] − m − ln s
//   log_softmax_bwd:  dx[c] = g[c] − e^{y[c]} · Σ_k g[k]
//   kl_div_fwd:       lp = log_softmax(a), lq = log_softmax(b),
//                     KL = Σ_c e^{lp[c]} (lp[c] − lq[c])   (one value per row)
//   kl_div_bwd:       da[c] = g · p[c] (lp[c] − lq[c] − KL),  db[c] = g · (q[c] − p[c])
//   dlr_fwd:          π = the classes by decreasing logit, lower index first
//                     on ties (the group merges each lane's sorted top 4);
//                     untargeted −(z_y − z_m) / (z_π1 − z_π3 + 1e−12), m the
//                     best class other than y; targeted
//                     −(z_y − z_t) / (z_π1 − (z_π3 + z_π4)/2 + 1e−12)
//   dlr_bwd:          with n the numerator, D the denominator and o the class
//                     subtracted in n: dz = −g/D at y, +g/D at o, then
//                     + g·n/D² · ∂D (∂D = e_π1 − e_π3, targeted
//                     e_π1 − (e_π3 + e_π4)/2), added in that order
//   pick_fwd:         y[r] = x[r, k[r]]                      (grid-stride over rows)
//   pick_bwd:         dx[r, c] = [c = k[r]] · g[r]           (grid-stride over elements)
//   exp_map, ln_map:  y = e^x, y = ln x                      (grid-stride)
//
// Non-finite rows give the CPU's results: a NaN or +inf logit makes every
// value of its row NaN in the log-softmax and KL; a −inf logit has
// probability 0. The CPU's DLR ranks a row with a NaN by insertion in
// column order, where a NaN ranks above everything after it; such a row
// (rare) is ranked the same way, sequentially, by every lane of its group.
//
// The host checks every class index (< cols) before launching, and the
// class counts DLR needs (3, 4 when targeted). Blocks are 256 threads
// (robust_loss.rs); the kernels declare no __launch_bounds__, with which
// ptxas 12.9 spilled a few bytes of the f64 KL and DLR kernels on sm_90.
#include "common.cuh"

namespace adv {

// The row of the calling lane's group, the lane's index in the group, and
// the number of values the lane reads (0 past the last row).
struct RowLane {
    int row;
    int sub;
    int n;
};

__device__ __forceinline__ RowLane row_lane(int rows, int cols, int group) {
    const int row = (blockIdx.x * blockDim.x + threadIdx.x) / group;
    const bool valid = row < rows;
    return RowLane{valid ? row : 0, (int)(threadIdx.x % group), valid ? cols : 0};
}

// The row max m (NaN-propagating) and s = Σ e^{x − m} of a group's row.
template <typename T>
__device__ __forceinline__ void max_and_sum_exp(const T* x, const RowLane& l, int group, T& m,
                                                T& s) {
    T mx = -Limits<T>::infinity();
    for (int c = l.sub; c < l.n; c += group) mx = max_(mx, x[c]);
    m = group_max(mx, group);
    T sum = T(0);
    for (int c = l.sub; c < l.n; c += group) sum += exp_(x[c] - m);
    s = group_sum(sum, group);
}

template <typename T>
__device__ __forceinline__ void log_softmax_fwd(const T* __restrict__ x, T* __restrict__ y,
                                                int rows, int cols, int group) {
    const RowLane l = row_lane(rows, cols, group);
    const u64 base = (u64)l.row * cols;
    T m, s;
    max_and_sum_exp(x + base, l, group, m, s);
    const T lse = log_(s);
    for (int c = l.sub; c < l.n; c += group) y[base + c] = x[base + c] - m - lse;
}

template <typename T>
__device__ __forceinline__ void log_softmax_bwd(const T* __restrict__ g, const T* __restrict__ y,
                                                T* __restrict__ dx, int rows, int cols,
                                                int group) {
    const RowLane l = row_lane(rows, cols, group);
    const u64 base = (u64)l.row * cols;
    T t = T(0);
    for (int c = l.sub; c < l.n; c += group) t += g[base + c];
    const T total = group_sum(t, group);
    for (int c = l.sub; c < l.n; c += group) dx[base + c] = g[base + c] - exp_(y[base + c]) * total;
}

// What the KL kernels share: both rows' max and ln Σ e^{x − max}, and KL.
template <typename T>
struct KlRow {
    T ma, la, mb, lb, kl;
    __device__ __forceinline__ T lp(T a) const { return a - ma - la; }
    __device__ __forceinline__ T lq(T b) const { return b - mb - lb; }
};

template <typename T>
__device__ __forceinline__ KlRow<T> kl_row(const T* a, const T* b, const RowLane& l, int group) {
    KlRow<T> r;
    T sa, sb;
    max_and_sum_exp(a, l, group, r.ma, sa);
    max_and_sum_exp(b, l, group, r.mb, sb);
    r.la = log_(sa);
    r.lb = log_(sb);
    T k = T(0);
    for (int c = l.sub; c < l.n; c += group) {
        const T lp = r.lp(a[c]);
        k += exp_(lp) * (lp - r.lq(b[c]));
    }
    r.kl = group_sum(k, group);
    return r;
}

template <typename T>
__device__ __forceinline__ void kl_div_fwd(const T* __restrict__ a, const T* __restrict__ b,
                                           T* __restrict__ kl, int rows, int cols, int group) {
    const RowLane l = row_lane(rows, cols, group);
    const u64 base = (u64)l.row * cols;
    const KlRow<T> r = kl_row(a + base, b + base, l, group);
    if (l.n > 0 && l.sub == 0) kl[l.row] = r.kl;
}

template <typename T>
__device__ __forceinline__ void kl_div_bwd(const T* __restrict__ a, const T* __restrict__ b,
                                           const T* __restrict__ g, T* __restrict__ da,
                                           T* __restrict__ db, int rows, int cols, int group) {
    const RowLane l = row_lane(rows, cols, group);
    const u64 base = (u64)l.row * cols;
    const KlRow<T> r = kl_row(a + base, b + base, l, group);
    const T gi = l.n > 0 ? g[l.row] : T(0);
    for (int c = l.sub; c < l.n; c += group) {
        const T lp = r.lp(a[base + c]), lq = r.lq(b[base + c]);
        const T p = exp_(lp), q = exp_(lq);
        da[base + c] = gi * p * (lp - lq - r.kl);
        db[base + c] = gi * (q - p);
    }
}

// The four best classes of a row, best first (−1: none yet). Every loop
// over the slots is unrolled, so the lists stay in registers.
template <typename T>
struct Top4 {
    T v[4];
    int i[4];

    __device__ __forceinline__ Top4() {
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            v[k] = T(0);
            i[k] = -1;
        }
    }

    // Inserts (va, ia) where it ranks: above an empty slot, a smaller value,
    // or the same value at a higher index (no NaN here). The candidate
    // walks down the list, swapping with each entry it ranks above.
    __device__ __forceinline__ void insert(T va, int ia) {
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            const bool above =
                ia >= 0 && (i[k] < 0 || va > v[k] || (va == v[k] && ia < i[k]));
            if (above) {
                const T tv = v[k];
                const int ti = i[k];
                v[k] = va;
                i[k] = ia;
                va = tv;
                ia = ti;
            }
        }
    }

    // The CPU's insertion (robust.rs `top4`): from the bottom, the value
    // moves up past empty slots and smaller values; a NaN compares as
    // neither, so nothing passes it and it passes nothing but empty slots.
    __device__ __forceinline__ void insert_in_order(T va, int ia) {
        int at = 4;
        bool climbing = true;
#pragma unroll
        for (int k = 3; k >= 0; --k) {
            climbing = climbing && (i[k] < 0 || v[k] < va);
            if (climbing) at = k;
        }
#pragma unroll
        for (int k = 3; k > 0; --k)
            if (k > at) {
                v[k] = v[k - 1];
                i[k] = i[k - 1];
            }
#pragma unroll
        for (int k = 0; k < 4; ++k)
            if (k == at) {
                v[k] = va;
                i[k] = ia;
            }
    }

    // Empty slots (rows of fewer than 4 classes) repeat the last class.
    __device__ __forceinline__ void fill() {
#pragma unroll
        for (int k = 1; k < 4; ++k)
            if (i[k] < 0) {
                v[k] = v[k - 1];
                i[k] = i[k - 1];
            }
    }
};

// The CPU's ranking of a whole row, in column order (for rows with a NaN).
template <typename T>
__device__ __forceinline__ Top4<T> top4_in_order(const T* z, int cols) {
    Top4<T> t;
    for (int c = 0; c < cols; ++c) t.insert_in_order(z[c], c);
    t.fill();
    return t;
}

// The group's top 4: each lane ranks its share, then a butterfly merges
// the lanes' lists (every lane ends with the same list). A row with a NaN
// is ranked by top4_in_order instead.
template <typename T>
__device__ __forceinline__ Top4<T> group_top4(const T* z, const RowLane& l, int group) {
    Top4<T> t;
    int nan = 0;
    for (int c = l.sub; c < l.n; c += group) {
        const T v = z[c];
        if (isnan_(v))
            nan = 1;
        else
            t.insert(v, c);
    }
    for (int o = group / 2; o > 0; o >>= 1) {
        T v[4];
        int i[4];
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            v[k] = __shfl_xor_sync(ADV_FULL_MASK, t.v[k], o);
            i[k] = __shfl_xor_sync(ADV_FULL_MASK, t.i[k], o);
        }
#pragma unroll
        for (int k = 0; k < 4; ++k) t.insert(v[k], i[k]);
    }
    if (group_max(nan, group)) return top4_in_order(z, l.n);
    t.fill();
    return t;
}

// One row's DLR: numerator n, denominator D, the class o subtracted in n,
// and ∂D as three (class, coefficient) pairs.
template <typename T>
struct DlrRow {
    T num, den;
    int other;
    int dk[3];
    T dc[3];
};

template <typename T>
__device__ __forceinline__ DlrRow<T> dlr_row(const T* z, const RowLane& l, int group, int y,
                                             int t, int targeted) {
    const Top4<T> top = group_top4(z, l, group);
    DlrRow<T> r;
    if (l.n == 0) {
        r.num = r.den = T(0);
        r.other = 0;
        for (int k = 0; k < 3; ++k) {
            r.dk[k] = 0;
            r.dc[k] = T(0);
        }
        return r;
    }
    if (targeted) {
        r.other = t;
        r.num = z[y] - z[t];
        r.den = z[top.i[0]] - T(0.5) * (z[top.i[2]] + z[top.i[3]]) + T(1e-12);
        r.dk[0] = top.i[0];
        r.dc[0] = T(1);
        r.dk[1] = top.i[2];
        r.dc[1] = T(-0.5);
        r.dk[2] = top.i[3];
        r.dc[2] = T(-0.5);
    } else {
        r.other = top.i[0] == y ? top.i[1] : top.i[0];
        r.num = z[y] - z[r.other];
        r.den = z[top.i[0]] - z[top.i[2]] + T(1e-12);
        r.dk[0] = top.i[0];
        r.dc[0] = T(1);
        r.dk[1] = top.i[2];
        r.dc[1] = T(-1);
        r.dk[2] = top.i[0];
        r.dc[2] = T(0);
    }
    return r;
}

template <typename T>
__device__ __forceinline__ void dlr_fwd(const T* __restrict__ z, const u32* __restrict__ labels,
                                        const u32* __restrict__ targets, T* __restrict__ out,
                                        int rows, int cols, int group, int targeted) {
    const RowLane l = row_lane(rows, cols, group);
    const int y = l.n > 0 ? (int)labels[l.row] : 0;
    const int t = l.n > 0 && targeted ? (int)targets[l.row] : 0;
    const DlrRow<T> r = dlr_row(z + (u64)l.row * cols, l, group, y, t, targeted);
    if (l.n > 0 && l.sub == 0) out[l.row] = -r.num / r.den;
}

template <typename T>
__device__ __forceinline__ void dlr_bwd(const T* __restrict__ z, const u32* __restrict__ labels,
                                        const u32* __restrict__ targets,
                                        const T* __restrict__ g, T* __restrict__ dz, int rows,
                                        int cols, int group, int targeted) {
    const RowLane l = row_lane(rows, cols, group);
    const u64 base = (u64)l.row * cols;
    const int y = l.n > 0 ? (int)labels[l.row] : 0;
    const int t = l.n > 0 && targeted ? (int)targets[l.row] : 0;
    const DlrRow<T> r = dlr_row(z + base, l, group, y, t, targeted);
    const T gi = l.n > 0 ? g[l.row] : T(0);
    const T step = gi / r.den;
    const T curve = gi * r.num / (r.den * r.den);
    for (int c = l.sub; c < l.n; c += group) {
        T d = T(0);
        if (c == y) d -= step;
        if (c == r.other) d += step;
#pragma unroll
        for (int k = 0; k < 3; ++k)
            if (c == r.dk[k]) d += curve * r.dc[k];
        dz[base + c] = d;
    }
}

template <typename T>
__device__ __forceinline__ void pick_fwd(const T* __restrict__ x, const u32* __restrict__ index,
                                         T* __restrict__ y, u64 rows, u64 cols) {
    ADV_FOR_EACH(r, rows) y[r] = x[r * cols + index[r]];
}

template <typename T>
__device__ __forceinline__ void pick_bwd(const T* __restrict__ g, const u32* __restrict__ index,
                                         T* __restrict__ dx, u64 n, u64 cols) {
    ADV_FOR_EACH(i, n) {
        const u64 r = i / cols;
        dx[i] = (u64)index[r] == i - r * cols ? g[r] : T(0);
    }
}

template <typename T>
__device__ __forceinline__ void exp_map(const T* __restrict__ x, T* __restrict__ y, u64 n) {
    ADV_FOR_EACH(i, n) y[i] = exp_(x[i]);
}

template <typename T>
__device__ __forceinline__ void ln_map(const T* __restrict__ x, T* __restrict__ y, u64 n) {
    ADV_FOR_EACH(i, n) y[i] = log_(x[i]);
}

}  // namespace adv

#define ADV_ROBUST_LOSS(T, S)                                                                  \
    extern "C" __global__ void log_softmax_fwd_##S(        \
        const T* __restrict__ x, T* __restrict__ y, int rows, int cols, int group) {           \
        adv::log_softmax_fwd<T>(x, y, rows, cols, group);                                      \
    }                                                                                          \
    extern "C" __global__ void log_softmax_bwd_##S(        \
        const T* __restrict__ g, const T* __restrict__ y, T* __restrict__ dx, int rows,        \
        int cols, int group) {                                                                 \
        adv::log_softmax_bwd<T>(g, y, dx, rows, cols, group);                                  \
    }                                                                                          \
    extern "C" __global__ void kl_div_fwd_##S(             \
        const T* __restrict__ a, const T* __restrict__ b, T* __restrict__ kl, int rows,        \
        int cols, int group) {                                                                 \
        adv::kl_div_fwd<T>(a, b, kl, rows, cols, group);                                       \
    }                                                                                          \
    extern "C" __global__ void kl_div_bwd_##S(             \
        const T* __restrict__ a, const T* __restrict__ b, const T* __restrict__ g,             \
        T* __restrict__ da, T* __restrict__ db, int rows, int cols, int group) {               \
        adv::kl_div_bwd<T>(a, b, g, da, db, rows, cols, group);                                \
    }                                                                                          \
    extern "C" __global__ void dlr_fwd_##S(                \
        const T* __restrict__ z, const u32* __restrict__ labels,                               \
        const u32* __restrict__ targets, T* __restrict__ out, int rows, int cols, int group,   \
        int targeted) {                                                                        \
        adv::dlr_fwd<T>(z, labels, targets, out, rows, cols, group, targeted);                 \
    }                                                                                          \
    extern "C" __global__ void dlr_bwd_##S(                \
        const T* __restrict__ z, const u32* __restrict__ labels,                               \
        const u32* __restrict__ targets, const T* __restrict__ g, T* __restrict__ dz,          \
        int rows, int cols, int group, int targeted) {                                         \
        adv::dlr_bwd<T>(z, labels, targets, g, dz, rows, cols, group, targeted);               \
    }                                                                                          \
    extern "C" __global__ void pick_fwd_##S(const T* __restrict__ x,                           \
                                            const u32* __restrict__ index, T* __restrict__ y,  \
                                            u64 rows, u64 cols) {                              \
        adv::pick_fwd<T>(x, index, y, rows, cols);                                             \
    }                                                                                          \
    extern "C" __global__ void pick_bwd_##S(const T* __restrict__ g,                           \
                                            const u32* __restrict__ index, T* __restrict__ dx, \
                                            u64 n, u64 cols) {                                 \
        adv::pick_bwd<T>(g, index, dx, n, cols);                                               \
    }                                                                                          \
    extern "C" __global__ void exp_map_##S(const T* __restrict__ x, T* __restrict__ y, u64 n) { \
        adv::exp_map<T>(x, y, n);                                                              \
    }                                                                                          \
    extern "C" __global__ void ln_map_##S(const T* __restrict__ x, T* __restrict__ y, u64 n) {  \
        adv::ln_map<T>(x, y, n);                                                               \
    }
ADV_ROBUST_LOSS(float, f32)
ADV_ROBUST_LOSS(double, f64)
