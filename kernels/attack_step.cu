// attack_step.cu — the update steps of APGD and FAB, and the in-place row
// update the attacks keep their best points with. The math is the CPU
// backend's (src/backend/cpu/robust.rs); rows are images of `cols` pixels,
// the box is [0, 1].
//
//   apgd_linf_step (grid-stride over elements, η per row, α the momentum):
//       lo = max(c − eps, 0), hi = min(c + eps, 1)
//       z  = min(max(x + η·sign g, lo), hi)
//       x' = min(max(x + α(z − x) + (1 − α)(x − x_prev), lo), hi)
//   apgd_l2_step (a group of lanes per row, in T): P(v) = clip₀¹(c + δ·f),
//       δ = v − c, f = min(eps, ‖δ‖₂)/(‖δ‖₂ + 1e−12);
//       z = P(x + η·g/(‖g‖₂ + 1e−12)),  x' = P(x + α(z − x) + (1 − α)(x − x_prev)).
//       Four passes over the row: ‖g‖, ‖δ‖ of the first point, the second
//       point (kept in the output row by the lane that later reads it back)
//       with its ‖δ‖, and the projection.
//   fab_step (a warp per row, in double as on the CPU: the hyperplane's
//       offsets are differences of dot products): the hyperplane
//       f + w·(z − x) = 0 as w·z = b; d₁, d₂ the smallest steps from x and
//       x₀ onto it inside the box (project_onto_hyperplane), a = ‖d₁‖/(‖d₁‖ +
//       ‖d₂‖) clipped to [0, α_max] (norms at least 1e−8),
//       x' = clip₀¹((1 − a)(x + η·d₁) + a(x₀ + η·d₂)), and ‖x' − x₀‖ of the
//       stored (rounded) x'.
//   lerp_rows (grid-stride over the listed rows' elements, in place):
//       x[i] ← t == 0 ? src[i] : src[i] + t·(x[i] − src[i]); each listed row
//       must appear once (the attacks list distinct rows).
// Blocks are 256 threads (attack_step.rs); no __launch_bounds__, with which
// ptxas 12.9 spilled FAB's f32 instantiation on sm_90.
#include "common.cuh"

namespace adv {

template <typename T>
__device__ __forceinline__ T sign_of(T v) {
    return v > T(0) ? T(1) : (v < T(0) ? T(-1) : T(0));
}

template <typename T>
__device__ __forceinline__ T clip(T v, T lo, T hi) {
    return min_(max_(v, lo), hi);
}

template <typename T>
__device__ __forceinline__ void apgd_linf_step(const T* __restrict__ x,
                                               const T* __restrict__ prev,
                                               const T* __restrict__ g,
                                               const T* __restrict__ center,
                                               const T* __restrict__ step, T* __restrict__ out,
                                               T eps, T momentum, u64 n, u64 cols) {
    ADV_FOR_EACH(i, n) {
        const T xi = x[i], ci = center[i];
        const T lo = max_(ci - eps, T(0)), hi = min_(ci + eps, T(1));
        const T z = clip(xi + step[i / cols] * sign_of(g[i]), lo, hi);
        const T v = xi + momentum * (z - xi) + (T(1) - momentum) * (xi - prev[i]);
        out[i] = clip(v, lo, hi);
    }
}

// The projection factor min(eps, ‖δ‖)/(‖δ‖ + 1e−12) from a lane's Σ δ².
template <typename T>
__device__ __forceinline__ T l2_factor(T squares, T eps, int group) {
    const T dn = sqrt_(group_sum(squares, group));
    return min_(eps, dn) / (dn + T(1e-12));
}

template <typename T>
__device__ __forceinline__ void apgd_l2_step(const T* __restrict__ x, const T* __restrict__ prev,
                                             const T* __restrict__ g,
                                             const T* __restrict__ center,
                                             const T* __restrict__ step, T* __restrict__ out,
                                             T eps, T momentum, int rows, int cols, int group) {
    const int row = (blockIdx.x * blockDim.x + threadIdx.x) / group;
    const int sub = threadIdx.x % group;
    const bool valid = row < rows;
    const int n = valid ? cols : 0;
    const u64 base = (u64)(valid ? row : 0) * cols;
    const T eta = valid ? step[row] : T(0);
    T s = T(0);
    for (int c = sub; c < n; c += group) s += g[base + c] * g[base + c];
    const T gn = sqrt_(group_sum(s, group)) + T(1e-12);
    s = T(0);
    for (int c = sub; c < n; c += group) {
        const T d = x[base + c] + eta * g[base + c] / gn - center[base + c];
        s += d * d;
    }
    const T f1 = l2_factor(s, eps, group);
    s = T(0);
    for (int c = sub; c < n; c += group) {
        const u64 i = base + c;
        const T xi = x[i], ci = center[i];
        const T z = clip(ci + (xi + eta * g[i] / gn - ci) * f1, T(0), T(1));
        const T v = xi + momentum * (z - xi) + (T(1) - momentum) * (xi - prev[i]);
        out[i] = v;
        s += (v - ci) * (v - ci);
    }
    const T f2 = l2_factor(s, eps, group);
    for (int c = sub; c < n; c += group) {
        const u64 i = base + c;
        const T ci = center[i];
        out[i] = clip(ci + (out[i] - ci) * f2, T(0), T(1));
    }
}

// A warp's view of one FAB row: its x, x₀ and w (read as double), its
// length, the lane, and the norm (L∞ or L2).
template <typename T>
struct FabRow {
    const T* x;
    const T* x0;
    const T* w;
    int cols;
    int lane;
    int linf;
};

// Per coordinate, for the direction sign(w'): the room left in the box and
// κ (1 for L∞, |w| for L2).
__device__ __forceinline__ void room_kappa(double t, double w_flipped, double w, int linf,
                                           double& room, double& kappa) {
    room = w_flipped > 0.0 ? 1.0 - t : (w_flipped < 0.0 ? t : 0.0);
    kappa = linf ? 1.0 : fabs(w);
}

// The smallest-norm step d from t onto {z : w·z = b} inside [0, 1] (the
// box corner nearest to the hyperplane where the box cannot reach it):
// d_j = sign(w_j)·min(λκ_j, r_j) for the λ ≥ 0 with
// Σ_j min(λa_j, b_j) = c (a_j = |w_j|κ_j, b_j = |w_j|r_j, c = b − w·t, w
// and c negated when c < 0), found by Newton's method from λ = 0, which
// climbs the concave piecewise-linear sum and stops on its root. The
// CPU's algorithm step for step; returns λ and the flip.
template <typename T>
__device__ __forceinline__ void hyperplane_lambda(const FabRow<T>& r, const T* t, double b,
                                                  double& lambda, double& flip) {
    double tw = 0.0;
    for (int j = r.lane; j < r.cols; j += ADV_WARP) tw += (double)t[j] * (double)r.w[j];
    double c = b - warp_sum(tw);
    flip = c < 0.0 ? -1.0 : 1.0;
    c *= flip;
    double reach = 0.0;
    for (int j = r.lane; j < r.cols; j += ADV_WARP) {
        const double w = r.w[j];
        double room, kappa;
        room_kappa((double)t[j], flip * w, w, r.linf, room, kappa);
        reach += fabs(w) * room;
    }
    reach = warp_sum(reach);
    if (c == 0.0) {
        lambda = 0.0;
        return;
    }
    if (reach <= c) {
        lambda = Limits<double>::infinity();
        return;
    }
    lambda = 0.0;
    for (int pass = 0; pass < 64; ++pass) {
        double saturated = 0.0, slope = 0.0;
        for (int j = r.lane; j < r.cols; j += ADV_WARP) {
            const double w = r.w[j];
            double room, kappa;
            room_kappa((double)t[j], flip * w, w, r.linf, room, kappa);
            const double a = fabs(w) * kappa, cap = fabs(w) * room;
            if (cap <= lambda * a)
                saturated += cap;
            else
                slope += a;
        }
        const double next = (c - warp_sum(saturated)) / warp_sum(slope);
        if (isnan_(next) || next <= lambda) break;
        lambda = next;
    }
}

// d_j of hyperplane_lambda's step at coordinate j.
__device__ __forceinline__ double hyperplane_step(double t, double w, double lambda, double flip,
                                                  int linf) {
    if (w == 0.0) return 0.0;
    double room, kappa;
    room_kappa(t, flip * w, w, linf, room, kappa);
    const double d = fmin(lambda * kappa, room);
    return flip * w > 0.0 ? d : -d;
}

// ‖d‖ over the warp from each lane's share (max of |d| or Σ d²).
template <typename T>
__device__ __forceinline__ double row_norm(const FabRow<T>& r, double part) {
    return r.linf ? warp_max(part) : sqrt_(warp_sum(part));
}

__device__ __forceinline__ double norm_part(double acc, double d, int linf) {
    return linf ? fmax(acc, fabs(d)) : acc + d * d;
}

template <typename T>
__device__ __forceinline__ void fab_step(const T* __restrict__ x, const T* __restrict__ x0,
                                         const T* __restrict__ w, const T* __restrict__ f,
                                         T* __restrict__ out, T* __restrict__ dist, double eta,
                                         double alpha_max, int rows, int cols, int linf) {
    const int row = (blockIdx.x * blockDim.x + threadIdx.x) / ADV_WARP;
    if (row >= rows) return;  // whole warps leave together
    const u64 base = (u64)row * cols;
    const FabRow<T> r{x + base, x0 + base, w + base, cols, (int)(threadIdx.x % ADV_WARP), linf};
    double xw = 0.0;
    for (int j = r.lane; j < cols; j += ADV_WARP) xw += (double)r.x[j] * (double)r.w[j];
    const double b = warp_sum(xw) - (double)f[row];
    double l1, f1, l2, f2;
    hyperplane_lambda(r, r.x, b, l1, f1);
    hyperplane_lambda(r, r.x0, b, l2, f2);
    double n1 = 0.0, n2 = 0.0;
    for (int j = r.lane; j < cols; j += ADV_WARP) {
        const double wj = r.w[j];
        n1 = norm_part(n1, hyperplane_step(r.x[j], wj, l1, f1, linf), linf);
        n2 = norm_part(n2, hyperplane_step(r.x0[j], wj, l2, f2, linf), linf);
    }
    const double a1 = fmax(row_norm(r, n1), 1e-8), a2 = fmax(row_norm(r, n2), 1e-8);
    const double alpha = fmin(fmax(a1 / (a1 + a2), 0.0), alpha_max);
    double nd = 0.0;
    for (int j = r.lane; j < cols; j += ADV_WARP) {
        const double xj = r.x[j], x0j = r.x0[j], wj = r.w[j];
        const double d1 = hyperplane_step(xj, wj, l1, f1, linf);
        const double d2 = hyperplane_step(x0j, wj, l2, f2, linf);
        const double v = (1.0 - alpha) * (xj + eta * d1) + alpha * (x0j + eta * d2);
        const T stored = (T)clip(v, 0.0, 1.0);
        out[base + j] = stored;
        nd = norm_part(nd, (double)stored - x0j, linf);
    }
    const double d = row_norm(r, nd);
    if (r.lane == 0) dist[row] = (T)d;
}

template <typename T>
__device__ __forceinline__ void lerp_rows(T* __restrict__ x, const T* __restrict__ src,
                                          const u32* __restrict__ index, T t, u64 n, u64 cols) {
    ADV_FOR_EACH(i, n) {
        const u64 k = i / cols;
        const u64 o = (u64)index[k] * cols + (i - k * cols);
        x[o] = t == T(0) ? src[o] : src[o] + t * (x[o] - src[o]);
    }
}

}  // namespace adv

#define ADV_ATTACK_STEP(T, S)                                                                  \
    extern "C" __global__ void apgd_linf_step_##S(                                             \
        const T* __restrict__ x, const T* __restrict__ prev, const T* __restrict__ g,          \
        const T* __restrict__ center, const T* __restrict__ step, T* __restrict__ out, T eps,  \
        T momentum, u64 n, u64 cols) {                                                         \
        adv::apgd_linf_step<T>(x, prev, g, center, step, out, eps, momentum, n, cols);         \
    }                                                                                          \
    extern "C" __global__ void apgd_l2_step_##S(           \
        const T* __restrict__ x, const T* __restrict__ prev, const T* __restrict__ g,          \
        const T* __restrict__ center, const T* __restrict__ step, T* __restrict__ out, T eps,  \
        T momentum, int rows, int cols, int group) {                                           \
        adv::apgd_l2_step<T>(x, prev, g, center, step, out, eps, momentum, rows, cols, group); \
    }                                                                                          \
    extern "C" __global__ void fab_step_##S(               \
        const T* __restrict__ x, const T* __restrict__ x0, const T* __restrict__ w,            \
        const T* __restrict__ f, T* __restrict__ out, T* __restrict__ dist, double eta,        \
        double alpha_max, int rows, int cols, int linf) {                                      \
        adv::fab_step<T>(x, x0, w, f, out, dist, eta, alpha_max, rows, cols, linf);            \
    }                                                                                          \
    extern "C" __global__ void lerp_rows_##S(T* __restrict__ x, const T* __restrict__ src,     \
                                             const u32* __restrict__ index, T t, u64 n,        \
                                             u64 cols) {                                       \
        adv::lerp_rows<T>(x, src, index, t, n, cols);                                          \
    }
ADV_ATTACK_STEP(float, f32)
ADV_ATTACK_STEP(double, f64)
