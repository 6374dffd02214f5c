//! The CPU kernels, generic over the float type.
//!
//! Elementwise kernels split their buffers in fixed chunks of [`CHUNK`]
//! elements and run the chunks on rayon; buffers shorter than one chunk run on
//! the calling thread. Reductions sum each fixed chunk in order and then add
//! the partial sums in order, so the bits do not depend on the thread count.

use std::mem::MaybeUninit;

use kernels::gelu::{A as GELU_A, K as GELU_K};
use rayon::prelude::*;

use super::gemm::Bf16Kernel;
use crate::backend::{pool, Activation, Binary, UpdateRule};
use crate::dtype::Float;
use crate::error::{Error, Result};
use crate::precision::Precision;

/// Elements per parallel work item.
pub const CHUNK: usize = 64 * 1024;

/// The most elements an optimiser update keeps on the calling thread: one
/// chunk, or four while this thread's products run in bf16 on AMX tiles
/// and no other thread spins for it.
///
/// Split, the other thread's chunks of a parameter end up in its core's
/// cache, and the next forward pass reads them from there. That pays where
/// the products are split across the threads too (f32), and where the
/// other threads spin through the loop ([`super::with_spinning_workers`]:
/// `train` and the bench's training ops), so that handing them chunks
/// wakes nobody. Where the products stay on one thread (the AMX kernel
/// keeps products below 384³ on one, see its `PAR_MIN_WORK`) and the other
/// threads sleep, it does not. Measured on a 2-vCPU Xeon guest with AMX,
/// one epoch of the MLP 784-256-256-10 (whose first weight has 200,704
/// values), before the threads spun: in bf16, updating it on one thread
/// made the epoch 8 % shorter; in f32, 6 % longer. With the threads
/// spinning, splitting it made the bf16 epoch 2–4 % shorter
/// (`benches/RESULTS.md`).
fn update_serial_max() -> usize {
    let on_tiles = Precision::current() == Precision::Bf16
        && matches!(Bf16Kernel::selected(), Ok(Bf16Kernel::Amx));
    if on_tiles && super::spinning_threads() == 0 {
        4 * CHUNK
    } else {
        CHUNK
    }
}

/// Rows per parallel work item for row kernels, chosen so a work item has
/// about [`CHUNK`] elements.
fn rows_per_task(cols: usize) -> usize {
    (CHUNK / cols.max(1)).max(1)
}

/// A vector of `n` elements, each written once by `fill(offset, chunk)` for
/// fixed chunks of [`CHUNK`] elements, in parallel when there is more than
/// one chunk. No zero-fill comes first.
fn fill_chunks<U: Send + 'static>(
    n: usize,
    fill: impl Fn(usize, &mut [MaybeUninit<U>]) + Sync,
) -> Vec<U> {
    let mut out = pool::take(n);
    let spare = &mut out.spare_capacity_mut()[..n];
    if n <= CHUNK {
        fill(0, spare);
    } else {
        spare
            .par_chunks_mut(CHUNK)
            .enumerate()
            .for_each(|(i, chunk)| fill(i * CHUNK, chunk));
    }
    // SAFETY: `fill` wrote every element of each chunk, and the chunks cover
    // the first `n` elements of the capacity.
    unsafe { out.set_len(n) };
    out
}

/// `out[i] = f(x[i])`.
fn map<T: Float, U: Send + Copy + 'static>(x: &[T], f: impl Fn(T) -> U + Sync) -> Vec<U> {
    fill_chunks(x.len(), |at, out| {
        for (o, &v) in out.iter_mut().zip(&x[at..]) {
            o.write(f(v));
        }
    })
}

/// `out[i] = f(a[i], b[i])`.
fn zip_map<T: Float>(a: &[T], b: &[T], f: impl Fn(T, T) -> T + Sync) -> Vec<T> {
    fill_chunks(a.len(), |at, out| {
        for ((o, &x), &y) in out.iter_mut().zip(&a[at..]).zip(&b[at..]) {
            o.write(f(x, y));
        }
    })
}

/// Evaluates `$body` with `$f` bound to the function of `act` (each arm
/// compiles its own loop): ReLU as `x ≤ 0 ? 0 : x` (NaN stays NaN, −0
/// becomes +0), sigmoid, tanh.
macro_rules! with_activation {
    ($act:expr, $t:ty, $f:ident => $body:expr) => {
        match $act {
            Activation::Relu => {
                let $f = |v: $t| if v <= <$t>::ZERO { <$t>::ZERO } else { v };
                $body
            }
            Activation::Sigmoid => {
                let $f = sigmoid::<$t>;
                $body
            }
            Activation::Tanh => {
                let $f = |v: $t| v.tanh();
                $body
            }
        }
    };
}

/// The logistic function `1 / (1 + e^-x)`, stable for large |x|.
#[inline]
pub fn sigmoid<T: Float>(x: T) -> T {
    if x >= T::ZERO {
        T::ONE / (T::ONE + (-x).exp())
    } else {
        let e = x.exp();
        e / (T::ONE + e)
    }
}

/// `sign x` ∈ {−1, 0, 1} (NaN stays NaN).
#[inline]
pub fn sign<T: Float>(x: T) -> T {
    if x > T::ZERO {
        T::ONE
    } else if x < T::ZERO {
        -T::ONE
    } else {
        x
    }
}

/// `y = f(x)` for the activation `act`.
pub fn activation<T: Float>(x: &[T], act: Activation) -> Vec<T> {
    with_activation!(act, T, f => map(x, f))
}

/// `y = sign x`.
pub fn signs<T: Float>(x: &[T]) -> Vec<T> {
    map(x, sign)
}

/// `dx = g ⊙ f'`, with `saved` the forward input (ReLU) or output (others).
pub fn activation_backward<T: Float>(g: &[T], saved: &[T], act: Activation) -> Vec<T> {
    match act {
        Activation::Relu => zip_map(g, saved, |g, x| if x > T::ZERO { g } else { T::ZERO }),
        Activation::Sigmoid => zip_map(g, saved, |g, y| g * y * (T::ONE - y)),
        Activation::Tanh => zip_map(g, saved, |g, y| g * (T::ONE - y * y)),
    }
}

/// `t = tanh(k·(x + a·x³))` of GELU's tanh form, in `T`, in the order of
/// `kernels/gelu.cu`.
#[inline]
fn gelu_tanh<T: Float>(x: T) -> T {
    let (k, a) = (T::from_f64(GELU_K), T::from_f64(GELU_A));
    (k * (x + a * x * x * x)).tanh()
}

/// `y = ½·x·(1 + t)`, 0 where `1 + t = 0` (see [`BackendStorage::gelu`]).
///
/// [`BackendStorage::gelu`]: crate::backend::BackendStorage::gelu
pub fn gelu<T: Float>(x: &[T]) -> Vec<T> {
    let half = T::from_f64(0.5);
    map(x, |v| {
        let h = T::ONE + gelu_tanh(v);
        if h == T::ZERO {
            T::ZERO
        } else {
            half * v * h
        }
    })
}

/// `dx = g·(½·(1 + t) + ½·x·(1 − t²)·k·(1 + 3a·x²))`, the second term 0
/// where `t = ±1` (see [`BackendStorage::gelu_backward`]).
///
/// [`BackendStorage::gelu_backward`]: crate::backend::BackendStorage::gelu_backward
pub fn gelu_backward<T: Float>(g: &[T], x: &[T]) -> Vec<T> {
    let (half, k, a3) = (
        T::from_f64(0.5),
        T::from_f64(GELU_K),
        T::from_f64(3.0 * GELU_A),
    );
    zip_map(g, x, |g, v| {
        let t = gelu_tanh(v);
        let slope = T::ONE - t * t;
        let inner = if slope == T::ZERO {
            T::ZERO
        } else {
            half * v * slope * k * (T::ONE + a3 * v * v)
        };
        g * (half * (T::ONE + t) + inner)
    })
}

/// `a ∘ b` elementwise.
pub fn binary<T: Float>(a: &[T], b: &[T], op: Binary) -> Vec<T> {
    match op {
        Binary::Add => zip_map(a, b, |x, y| x + y),
        Binary::Sub => zip_map(a, b, |x, y| x - y),
        Binary::Mul => zip_map(a, b, |x, y| x * y),
    }
}

/// `y = mul·x + add`.
pub fn affine<T: Float>(x: &[T], mul: f64, add: f64) -> Vec<T> {
    let (m, a) = (T::from_f64(mul), T::from_f64(add));
    if add == 0.0 {
        map(x, |v| v * m)
    } else {
        map(x, |v| v * m + a)
    }
}

/// `min(max(x, lo), hi)`.
pub fn clamp<T: Float>(x: &[T], lo: T, hi: T) -> Vec<T> {
    map(x, |v| v.max(lo).min(hi))
}

/// Projection onto `{y : |y − c|∞ ≤ eps} ∩ [lo, hi]ⁿ`.
pub fn project_linf<T: Float>(x: &[T], c: &[T], eps: f64, lo: f64, hi: f64) -> Vec<T> {
    let (eps, lo, hi) = (T::from_f64(eps), T::from_f64(lo), T::from_f64(hi));
    zip_map(x, c, |x, c| x.max((c - eps).max(lo)).min((c + eps).min(hi)))
}

/// `min(max(x + α·sign g, max(c − eps, lo)), min(c + eps, hi))` in one pass.
pub fn sign_step<T: Float>(
    x: &[T],
    g: &[T],
    c: &[T],
    alpha: f64,
    eps: f64,
    lo: f64,
    hi: f64,
) -> Vec<T> {
    let (alpha, eps, lo, hi) = (
        T::from_f64(alpha),
        T::from_f64(eps),
        T::from_f64(lo),
        T::from_f64(hi),
    );
    fill_chunks(x.len(), |at, out| {
        for (((o, &x), &g), &c) in out.iter_mut().zip(&x[at..]).zip(&g[at..]).zip(&c[at..]) {
            o.write(
                (x + alpha * sign(g))
                    .max((c - eps).max(lo))
                    .min((c + eps).min(hi)),
            );
        }
    })
}

/// `y[i, j] = x[i, j] + row[j]`, whole rows per work item.
pub fn add_row<T: Float>(x: &[T], row: &[T], cols: usize) -> Vec<T> {
    map_rows(x, row, cols, |v| v)
}

/// `y[i, j] = f(x[i, j] + row[j])` in one pass.
pub fn bias_act<T: Float>(x: &[T], row: &[T], cols: usize, act: Activation) -> Vec<T> {
    with_activation!(act, T, f => map_rows(x, row, cols, f))
}

/// In place: `c[j] ← f(c[j] + bias[j])`, for one stretch of a row.
pub fn bias_act_in_place<T: Float>(c: &mut [T], bias: &[T], act: Activation) {
    with_activation!(act, T, f => {
        for (v, &b) in c.iter_mut().zip(bias) {
            *v = f(*v + b);
        }
    })
}

/// `y[i, j] = f(x[i, j] + row[j])`, whole rows per work item, each element
/// written once.
fn map_rows<T: Float>(x: &[T], row: &[T], cols: usize, f: impl Fn(T) -> T + Sync) -> Vec<T> {
    if cols == 0 {
        return Vec::new();
    }
    let rows = rows_per_task(cols);
    let n = x.len();
    let mut out = pool::take(n);
    out.spare_capacity_mut()[..n]
        .par_chunks_mut(rows * cols)
        .zip(x.par_chunks(rows * cols))
        .for_each(|(o, x)| {
            for (o, x) in o.chunks_mut(cols).zip(x.chunks(cols)) {
                for ((o, &x), &b) in o.iter_mut().zip(x).zip(row) {
                    o.write(f(x + b));
                }
            }
        });
    // SAFETY: the chunks cover the first `n` elements and every one was
    // written.
    unsafe { out.set_len(n) };
    out
}

/// Column sums `s[j] = Σᵢ x[i, j]`, each column summed in row order.
pub fn sum_rows<T: Float>(x: &[T], cols: usize) -> Vec<T> {
    const COLS_PER_TASK: usize = 64;
    let mut out = pool::filled(cols, T::ZERO);
    if cols == 0 {
        return out;
    }
    let tasks = if x.len() <= CHUNK {
        cols
    } else {
        COLS_PER_TASK
    };
    out.par_chunks_mut(tasks)
        .enumerate()
        .for_each(|(task, acc)| {
            let c0 = task * tasks;
            let width = acc.len();
            for row in x.chunks_exact(cols) {
                for (a, &v) in acc.iter_mut().zip(&row[c0..c0 + width]) {
                    *a += v;
                }
            }
        });
    out
}

/// `Σᵢ xᵢ`: each fixed chunk is summed in order, then the chunk sums in order.
pub fn sum<T: Float>(x: &[T]) -> T {
    if x.len() <= CHUNK {
        return x.iter().copied().sum();
    }
    let mut partial = pool::take(x.len().div_ceil(CHUNK));
    partial.par_extend(x.par_chunks(CHUNK).map(|c| c.iter().copied().sum::<T>()));
    let total = partial.iter().copied().sum();
    pool::give(partial);
    total
}

/// Fused, numerically stable softmax cross-entropy over rows of `classes`
/// logits: returns the mean loss and the probabilities.
///
/// With `mᵢ = maxⱼ xᵢⱼ` and `sᵢ = Σⱼ e^{xᵢⱼ − mᵢ}`, row i's loss is
/// `mᵢ + ln sᵢ − xᵢ,yᵢ` and `pᵢⱼ = e^{xᵢⱼ − mᵢ} / sᵢ`; no exponent is ever
/// positive, so logits of ±1e4 are fine.
pub fn softmax_xent<T: Float>(x: &[T], labels: &[u32], classes: usize) -> Result<(T, Vec<T>)> {
    if let Some((row, &label)) = labels
        .iter()
        .enumerate()
        .find(|(_, &l)| l as usize >= classes)
    {
        return Err(Error::LabelOutOfRange {
            op: "softmax_cross_entropy",
            row,
            label: label as u64,
            classes,
        });
    }
    let mut probs = pool::filled(x.len(), T::ZERO);
    let mut losses = pool::filled(labels.len(), T::ZERO);
    let rows = rows_per_task(classes);
    probs
        .par_chunks_mut(rows * classes)
        .zip(x.par_chunks(rows * classes))
        .zip(losses.par_chunks_mut(rows).zip(labels.par_chunks(rows)))
        .for_each(|((p, x), (loss, labels))| {
            for (((p, x), loss), &y) in p
                .chunks_mut(classes)
                .zip(x.chunks(classes))
                .zip(loss.iter_mut())
                .zip(labels)
            {
                let m = x.iter().copied().fold(x[0], T::max);
                let mut s = T::ZERO;
                for (p, &v) in p.iter_mut().zip(x) {
                    *p = (v - m).exp();
                    s += *p;
                }
                let inv = T::ONE / s;
                p.iter_mut().for_each(|p| *p *= inv);
                *loss = m + s.ln() - x[y as usize];
            }
        });
    let n = T::from_f64(labels.len().max(1) as f64);
    let loss = sum(&losses) / n;
    pool::give(losses);
    Ok((loss, probs))
}

/// `dx = g·(p − onehot(y))/N`.
pub fn softmax_xent_backward<T: Float>(p: &[T], labels: &[u32], g: T, classes: usize) -> Vec<T> {
    let scale = g / T::from_f64(labels.len().max(1) as f64);
    let mut dx = pool::filled(p.len(), T::ZERO);
    let rows = rows_per_task(classes);
    dx.par_chunks_mut(rows * classes)
        .zip(p.par_chunks(rows * classes))
        .zip(labels.par_chunks(rows))
        .for_each(|((dx, p), labels)| {
            for ((dx, p), &y) in dx.chunks_mut(classes).zip(p.chunks(classes)).zip(labels) {
                for (d, &pv) in dx.iter_mut().zip(p) {
                    *d = pv * scale;
                }
                dx[y as usize] -= scale;
            }
        });
    dx
}

/// Index of each row's largest value (first on ties; a NaN wins).
pub fn argmax_rows<T: Float>(x: &[T], cols: usize) -> Vec<u32> {
    if cols == 0 {
        return Vec::new();
    }
    let mut out = pool::take(x.len() / cols);
    out.par_extend(x.par_chunks(cols).map(argmax_row));
    out
}

/// Index of the largest value of a row (first on ties; a NaN wins).
fn argmax_row<T: Float>(row: &[T]) -> u32 {
    let mut best = 0;
    for (j, &v) in row.iter().enumerate().skip(1) {
        let b = row[best];
        if v > b || (v.to_f64().is_nan() && !b.to_f64().is_nan()) {
            best = j;
        }
    }
    best as u32
}

/// Rows of `x` (`cols` values each) whose [`argmax_rows`] equals the label.
pub fn count_argmax_hits<T: Float>(x: &[T], cols: usize, labels: &[u32]) -> usize {
    if cols == 0 {
        return 0;
    }
    x.chunks(cols)
        .zip(labels)
        .filter(|(row, &y)| argmax_row(row) == y)
        .count()
}

/// Applies `f` to matching fixed chunks of a mutable and some read-only
/// buffers in parallel.
fn for_chunks<T: Float>(y: &mut [T], x: &[T], f: impl Fn(&mut [T], &[T]) + Sync) {
    if y.len() <= CHUNK {
        f(y, x);
    } else {
        y.par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK))
            .for_each(|(y, x)| f(y, x));
    }
}

/// `y ← y + alpha·x`.
pub fn axpy<T: Float>(y: &mut [T], alpha: f64, x: &[T]) {
    let a = T::from_f64(alpha);
    for_chunks(y, x, |y, x| {
        for (y, &x) in y.iter_mut().zip(x) {
            *y += a * x;
        }
    });
}

/// One in-place optimiser update (see [`UpdateRule`]), on the rayon
/// threads for a long parameter; the bits of [`update_serial`].
pub fn update<T: Float>(p: &mut [T], g: &[T], s1: &mut [T], s2: &mut [T], rule: UpdateRule) {
    let n = p.len();
    let (s1, s2) = (fit(s1, n), fit(s2, n));
    if n <= update_serial_max() {
        return update_wide(p, g, s1, s2, rule);
    }
    let apply = |p: &mut [T], g: &[T], s1: &mut [T], s2: &mut [T]| update_wide(p, g, s1, s2, rule);
    // SGD keeps no state and momentum one buffer: the unused ones are empty,
    // and the chunks of the parameter go to the threads without them.
    let chunks = p.par_chunks_mut(CHUNK).zip(g.par_chunks(CHUNK));
    match (s1.is_empty(), s2.is_empty()) {
        (true, true) => chunks.for_each(|(p, g)| apply(p, g, &mut [], &mut [])),
        (false, true) => chunks
            .zip(s1.par_chunks_mut(CHUNK))
            .for_each(|((p, g), s1)| apply(p, g, s1, &mut [])),
        (true, false) => chunks
            .zip(s2.par_chunks_mut(CHUNK))
            .for_each(|((p, g), s2)| apply(p, g, &mut [], s2)),
        (false, false) => chunks
            .zip(s1.par_chunks_mut(CHUNK).zip(s2.par_chunks_mut(CHUNK)))
            .for_each(|((p, g), (s1, s2))| apply(p, g, s1, s2)),
    }
}

/// [`update_serial`] compiled for the widest vectors the CPU has: the
/// same operations on each element (no contraction into fused
/// multiply-adds), so the same bits.
pub fn update_wide<T: Float>(p: &mut [T], g: &[T], s1: &mut [T], s2: &mut [T], rule: UpdateRule) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f")]
        fn avx512<T: Float>(p: &mut [T], g: &[T], s1: &mut [T], s2: &mut [T], rule: UpdateRule) {
            update_serial(p, g, s1, s2, rule)
        }
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F (checked above).
            return unsafe { avx512(p, g, s1, s2, rule) };
        }
    }
    update_serial(p, g, s1, s2, rule)
}

/// [`update`] on the calling thread alone, element by element:
///
/// - SGD: `g' = g + wd·p`; without momentum `p ← p − lr·g'`; with it
///   `v ← μ·v + g'` (in `s1`), then `p ← p − lr·v`, or `p ← p − lr·(g' + μ·v)`
///   (Nesterov);
/// - Adam: `g' = g + wd·p`, `m ← β₁·m + (1 − β₁)·g'` (in `s1`),
///   `v ← β₂·v + (1 − β₂)·g'²` (in `s2`),
///   `p ← p − (lr/(1 − β₁ᵗ))·m / (√(v/(1 − β₂ᵗ)) + ε)`.
///
/// A state buffer the rule does not use may be empty. Always inlined, so
/// that [`update_wide`]'s AVX-512 copy compiles these loops for AVX-512
/// (a plain `#[inline]` left it a call to the SSE2 code).
#[inline(always)]
pub fn update_serial<T: Float>(p: &mut [T], g: &[T], s1: &mut [T], s2: &mut [T], rule: UpdateRule) {
    match rule {
        UpdateRule::Sgd {
            lr,
            momentum,
            nesterov,
            weight_decay,
        } => {
            let (lr, mu, wd) = (
                T::from_f64(lr),
                T::from_f64(momentum),
                T::from_f64(weight_decay),
            );
            if momentum == 0.0 {
                for (p, &g) in p.iter_mut().zip(g) {
                    *p -= lr * (g + wd * *p);
                }
            } else {
                for ((p, &g), v) in p.iter_mut().zip(g).zip(s1.iter_mut()) {
                    let g = g + wd * *p;
                    *v = mu * *v + g;
                    *p -= lr * if nesterov { g + mu * *v } else { *v };
                }
            }
        }
        UpdateRule::Adam {
            lr,
            beta1,
            beta2,
            eps,
            weight_decay,
            t,
        } => {
            let c1 = 1.0 - beta1.powi(t as i32);
            let c2 = 1.0 - beta2.powi(t as i32);
            let (b1, b2, wd, e) = (
                T::from_f64(beta1),
                T::from_f64(beta2),
                T::from_f64(weight_decay),
                T::from_f64(eps),
            );
            let step = T::from_f64(lr / c1);
            let inv_c2 = T::from_f64(1.0 / c2);
            for (((p, &g), m), v) in p.iter_mut().zip(g).zip(s1.iter_mut()).zip(s2.iter_mut()) {
                let g = g + wd * *p;
                *m = b1 * *m + (T::ONE - b1) * g;
                *v = b2 * *v + (T::ONE - b2) * g * g;
                *p -= step * *m / ((*v * inv_c2).sqrt() + e);
            }
        }
    }
}

/// The state buffer if it has the parameter's length, else an empty slice
/// (plain SGD and momentum SGD need fewer buffers than Adam).
fn fit<T>(s: &mut [T], n: usize) -> &mut [T] {
    if s.len() == n {
        s
    } else {
        &mut []
    }
}

#[cfg(test)]
mod tests {
    use super::{update, update_serial, CHUNK};
    use crate::backend::UpdateRule;

    /// The threaded update (parameters longer than a chunk, in the widest
    /// vectors the CPU has) gives the bits of the portable update one
    /// element at a time, for each rule and the state buffers it keeps (SGD
    /// none, momentum one, Adam two; the unused ones empty).
    #[test]
    fn long_updates_match_the_update_of_each_element() {
        let n = if cfg!(miri) { CHUNK + 3 } else { 2 * CHUNK + 7 };
        let sgd = |momentum| UpdateRule::Sgd {
            lr: 0.1,
            momentum,
            nesterov: false,
            weight_decay: 1e-3,
        };
        let adam = UpdateRule::Adam {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            t: 3,
        };
        for (rule, states) in [(sgd(0.0), 0), (sgd(0.9), 1), (adam, 2)] {
            let value = |i: usize, k: u32| ((i as u32).wrapping_mul(2654435761) ^ k) as f32 / 4e9;
            let g: Vec<f32> = (0..n).map(|i| value(i, 1) - 0.5).collect();
            let state = |used: bool, k| {
                if used {
                    (0..n).map(|i| value(i, k).abs()).collect()
                } else {
                    Vec::new()
                }
            };
            let mut p: Vec<f32> = (0..n).map(|i| value(i, 2)).collect();
            let (mut s1, mut s2): (Vec<f32>, Vec<f32>) =
                (state(states > 0, 3), state(states > 1, 4));
            let (mut p_one, mut s1_one, mut s2_one) = (p.clone(), s1.clone(), s2.clone());
            update(&mut p, &g, &mut s1, &mut s2, rule);
            for i in 0..n {
                let one = |s: &mut Vec<f32>| if s.is_empty() { 0..0 } else { i..i + 1 };
                let (r1, r2) = (one(&mut s1_one), one(&mut s2_one));
                update_serial(
                    &mut p_one[i..i + 1],
                    &g[i..i + 1],
                    &mut s1_one[r1],
                    &mut s2_one[r2],
                    rule,
                );
            }
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&p), bits(&p_one), "{rule:?}: parameters");
            assert_eq!(bits(&s1), bits(&s1_one), "{rule:?}: first state");
            assert_eq!(bits(&s2), bits(&s2_one), "{rule:?}: second state");
        }
    }
}
