//! The CPU kernels of robustness evaluation and training: row-wise
//! log-softmax, `exp`, `ln`, one pick per row, the KL divergence between
//! two rows of logits, the DLR loss, the APGD and FAB steps, and in-place
//! row updates. The math of each is on its [`BackendStorage`] method.
//!
//! Every kernel works on rows independently (rayon over fixed groups of
//! rows), so the bits of a row never depend on the other rows or on the
//! thread count. Row sums and norms are accumulated in f64.

use rayon::prelude::*;

use super::{labels_of, unsupported, CpuElement, CpuStorage};
use crate::backend::{pool, BackendStorage, Norm};
use crate::dtype::Float;
use crate::error::{Error, Result};

/// Rows per parallel task: about 16k values.
fn rows_per_task(cols: usize) -> usize {
    (16 * 1024 / cols.max(1)).max(1)
}

/// Checks that a buffer holds whole rows of `cols` values; returns the rows.
fn rows_of(op: &'static str, len: usize, cols: usize) -> Result<usize> {
    if cols == 0 || !len.is_multiple_of(cols) {
        return Err(Error::invalid(format!(
            "{op}: {len} values are not rows of {cols}"
        )));
    }
    Ok(len / cols)
}

/// Checks `n` u32 indices below `classes`.
fn indices<'a>(op: &'static str, s: &'a CpuStorage, n: usize, classes: usize) -> Result<&'a [u32]> {
    let idx = labels_of(op, s)?;
    if idx.len() != n {
        return Err(Error::invalid(format!(
            "{op}: {} indices for {n} rows",
            idx.len()
        )));
    }
    if let Some((row, &k)) = idx.iter().enumerate().find(|(_, &k)| k as usize >= classes) {
        return Err(Error::LabelOutOfRange {
            op,
            row,
            label: u64::from(k),
            classes,
        });
    }
    Ok(idx)
}

/// `out[i·cols..(i+1)·cols] = f(i, row i)` for every row, rows in parallel.
fn map_rows<U: Copy + Send + Sync + 'static>(
    rows: usize,
    cols: usize,
    zero: U,
    f: impl Fn(usize, &mut [U]) + Sync,
) -> Vec<U> {
    map_rows_with(rows, cols, zero, || (), |_, i, row| f(i, row))
}

/// [`map_rows`] with a scratch value made once per parallel task.
fn map_rows_with<U: Copy + Send + Sync + 'static, S>(
    rows: usize,
    cols: usize,
    zero: U,
    scratch: impl Fn() -> S + Sync,
    f: impl Fn(&mut S, usize, &mut [U]) + Sync,
) -> Vec<U> {
    let mut out = pool::filled(rows * cols, zero);
    if cols == 0 {
        return out;
    }
    let per = rows_per_task(cols);
    out.par_chunks_mut(per * cols)
        .enumerate()
        .for_each(|(c, chunk)| {
            let mut s = scratch();
            for (r, row) in chunk.chunks_mut(cols).enumerate() {
                f(&mut s, c * per + r, row);
            }
        });
    out
}

/// The zero of a slice's element type.
fn zero_of<T: Float>(_: &[T]) -> T {
    T::ZERO
}

/// Row max and `ln Σⱼ e^{xⱼ − m}`.
fn max_and_log_sum<T: Float>(x: &[T]) -> (f64, f64) {
    let m = x.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v.to_f64()));
    let s: f64 = x.iter().map(|&v| (v.to_f64() - m).exp()).sum();
    (m, s.ln())
}

pub(super) fn log_softmax(x: &CpuStorage, classes: usize) -> Result<CpuStorage> {
    with_floats!("log_softmax", (x), |x| {
        let n = rows_of("log_softmax", x.len(), classes)?;
        Ok(CpuElement::into_storage(map_rows(
            n,
            classes,
            zero_of(x),
            |i, out| {
                let row = &x[i * classes..(i + 1) * classes];
                let (m, lse) = max_and_log_sum(row);
                for (o, &v) in out.iter_mut().zip(row) {
                    *o = Float::from_f64(v.to_f64() - m - lse);
                }
            },
        )))
    })
}

pub(super) fn log_softmax_backward(
    g: &CpuStorage,
    y: &CpuStorage,
    classes: usize,
) -> Result<CpuStorage> {
    with_floats!("log_softmax_backward", (g, y), |g, y| {
        let n = rows_of("log_softmax_backward", g.len(), classes)?;
        Ok(CpuElement::into_storage(map_rows(
            n,
            classes,
            zero_of(g),
            |i, out| {
                let (g, y) = (
                    &g[i * classes..(i + 1) * classes],
                    &y[i * classes..(i + 1) * classes],
                );
                let total: f64 = g.iter().map(|v| v.to_f64()).sum();
                for ((o, &gv), &yv) in out.iter_mut().zip(g).zip(y) {
                    *o = Float::from_f64(gv.to_f64() - yv.to_f64().exp() * total);
                }
            },
        )))
    })
}

pub(super) fn map(x: &CpuStorage, op: &'static str, f: fn(f64) -> f64) -> Result<CpuStorage> {
    with_floats!(op, (x), |x| {
        let mut out = pool::filled(x.len(), zero_of(x));
        out.par_chunks_mut(64 * 1024)
            .zip(x.par_chunks(64 * 1024))
            .for_each(|(o, x)| {
                for (o, &v) in o.iter_mut().zip(x) {
                    *o = Float::from_f64(f(v.to_f64()));
                }
            });
        Ok(CpuElement::into_storage(out))
    })
}

pub(super) fn pick_rows(x: &CpuStorage, index: &CpuStorage, classes: usize) -> Result<CpuStorage> {
    with_floats!("pick", (x), |x| {
        let n = rows_of("pick", x.len(), classes)?;
        let idx = indices("pick", index, n, classes)?;
        let mut out = pool::take(n);
        out.extend(
            idx.iter()
                .enumerate()
                .map(|(i, &k)| x[i * classes + k as usize]),
        );
        Ok(CpuElement::into_storage(out))
    })
}

pub(super) fn pick_rows_backward(
    g: &CpuStorage,
    index: &CpuStorage,
    classes: usize,
) -> Result<CpuStorage> {
    with_floats!("pick_backward", (g), |g| {
        let idx = indices("pick_backward", index, g.len(), classes)?;
        let mut out = pool::filled(g.len() * classes, zero_of(g));
        for (i, (&k, &gv)) in idx.iter().zip(g.iter()).enumerate() {
            out[i * classes + k as usize] = gv;
        }
        Ok(CpuElement::into_storage(out))
    })
}

/// `ln p`, `ln q` and `KL(p ‖ q)` of one pair of logit rows.
fn kl_row<T: Float>(a: &[T], b: &[T], lp: &mut [f64], lq: &mut [f64]) -> f64 {
    let (ma, la) = max_and_log_sum(a);
    let (mb, lb) = max_and_log_sum(b);
    let mut kl = 0.0;
    for j in 0..a.len() {
        lp[j] = a[j].to_f64() - ma - la;
        lq[j] = b[j].to_f64() - mb - lb;
        kl += lp[j].exp() * (lp[j] - lq[j]);
    }
    kl
}

pub(super) fn kl_div_rows(a: &CpuStorage, b: &CpuStorage, classes: usize) -> Result<CpuStorage> {
    with_floats!("kl_div", (a, b), |a, b| {
        let n = rows_of("kl_div", a.len(), classes)?;
        if b.len() != a.len() {
            return Err(Error::invalid(
                "kl_div: the two logit buffers differ in length",
            ));
        }
        Ok(CpuElement::into_storage(map_rows(
            n,
            1,
            zero_of(a),
            |i, out| {
                let (mut lp, mut lq) = (vec![0.0; classes], vec![0.0; classes]);
                let r = i * classes..(i + 1) * classes;
                out[0] = Float::from_f64(kl_row(&a[r.clone()], &b[r], &mut lp, &mut lq));
            },
        )))
    })
}

pub(super) fn kl_div_rows_backward(
    a: &CpuStorage,
    b: &CpuStorage,
    g: &CpuStorage,
    classes: usize,
) -> Result<(CpuStorage, CpuStorage)> {
    with_floats!("kl_div_backward", (a, b, g), |a, b, g| {
        let n = rows_of("kl_div_backward", a.len(), classes)?;
        if b.len() != a.len() || g.len() != n {
            return Err(Error::invalid("kl_div_backward: buffer lengths disagree"));
        }
        let both = map_rows(n, 2 * classes, zero_of(a), |i, out| {
            let (mut lp, mut lq) = (vec![0.0; classes], vec![0.0; classes]);
            let r = i * classes..(i + 1) * classes;
            let kl = kl_row(&a[r.clone()], &b[r], &mut lp, &mut lq);
            let gi = g[i].to_f64();
            let (da, db) = out.split_at_mut(classes);
            for j in 0..classes {
                let (p, q) = (lp[j].exp(), lq[j].exp());
                da[j] = Float::from_f64(gi * p * (lp[j] - lq[j] - kl));
                db[j] = Float::from_f64(gi * (q - p));
            }
        });
        let (mut da, mut db) = (pool::take(a.len()), pool::take(a.len()));
        for row in both.chunks(2 * classes) {
            da.extend_from_slice(&row[..classes]);
            db.extend_from_slice(&row[classes..]);
        }
        pool::give(both);
        Ok((CpuElement::into_storage(da), CpuElement::into_storage(db)))
    })
}

/// The four largest entries' indices, largest first (lower index first on
/// ties); `classes ≥ 4` is not required: missing ones repeat the last.
fn top4<T: Float>(z: &[T]) -> [usize; 4] {
    let mut top = [usize::MAX; 4];
    for (j, &v) in z.iter().enumerate() {
        let v = v.to_f64();
        let mut k = 4;
        while k > 0 && (top[k - 1] == usize::MAX || z[top[k - 1]].to_f64() < v) {
            k -= 1;
        }
        if k < 4 {
            top.copy_within(k..3, k + 1);
            top[k] = j;
        }
    }
    let last = top
        .iter()
        .rposition(|&t| t != usize::MAX)
        .map_or(0, |p| top[p]);
    top.map(|t| if t == usize::MAX { last } else { t })
}

/// One row's DLR pieces: the numerator `n`, the denominator `D`, the class
/// subtracted in the numerator (`m` or the target), and `∂D` as
/// (index, coefficient) pairs.
struct DlrRow {
    num: f64,
    den: f64,
    other: usize,
    den_grad: [(usize, f64); 3],
}

fn dlr_row<T: Float>(z: &[T], y: usize, t: usize, targeted: bool) -> DlrRow {
    let top = top4(z);
    let v = |j: usize| z[j].to_f64();
    if targeted {
        DlrRow {
            num: v(y) - v(t),
            den: v(top[0]) - 0.5 * (v(top[2]) + v(top[3])) + 1e-12,
            other: t,
            den_grad: [(top[0], 1.0), (top[2], -0.5), (top[3], -0.5)],
        }
    } else {
        let m = if top[0] == y { top[1] } else { top[0] };
        DlrRow {
            num: v(y) - v(m),
            den: v(top[0]) - v(top[2]) + 1e-12,
            other: m,
            den_grad: [(top[0], 1.0), (top[2], -1.0), (top[0], 0.0)],
        }
    }
}

fn dlr_inputs<'a>(
    op: &'static str,
    z_len: usize,
    labels: &'a CpuStorage,
    targets: &'a CpuStorage,
    targeted: bool,
    classes: usize,
) -> Result<(usize, &'a [u32], &'a [u32])> {
    let n = rows_of(op, z_len, classes)?;
    let need = if targeted { 4 } else { 3 };
    if classes < need {
        return Err(Error::invalid(format!(
            "{op}: the {}DLR loss needs at least {need} classes, got {classes}",
            if targeted { "targeted " } else { "" }
        )));
    }
    let y = indices(op, labels, n, classes)?;
    let t = if targeted {
        indices(op, targets, n, classes)?
    } else {
        y
    };
    Ok((n, y, t))
}

pub(super) fn dlr_rows(
    z: &CpuStorage,
    labels: &CpuStorage,
    targets: &CpuStorage,
    targeted: bool,
    classes: usize,
) -> Result<CpuStorage> {
    with_floats!("dlr", (z), |z| {
        let (n, y, t) = dlr_inputs("dlr", z.len(), labels, targets, targeted, classes)?;
        Ok(CpuElement::into_storage(map_rows(
            n,
            1,
            zero_of(z),
            |i, out| {
                let row = dlr_row(
                    &z[i * classes..(i + 1) * classes],
                    y[i] as usize,
                    t[i] as usize,
                    targeted,
                );
                out[0] = Float::from_f64(-row.num / row.den);
            },
        )))
    })
}

pub(super) fn dlr_rows_backward(
    z: &CpuStorage,
    labels: &CpuStorage,
    targets: &CpuStorage,
    targeted: bool,
    g: &CpuStorage,
    classes: usize,
) -> Result<CpuStorage> {
    with_floats!("dlr_backward", (z, g), |z, g| {
        let (n, y, t) = dlr_inputs("dlr_backward", z.len(), labels, targets, targeted, classes)?;
        if g.len() != n {
            return Err(Error::invalid(
                "dlr_backward: one gradient per row expected",
            ));
        }
        Ok(CpuElement::into_storage(map_rows(
            n,
            classes,
            zero_of(z),
            |i, out| {
                let yi = y[i] as usize;
                let row = dlr_row(
                    &z[i * classes..(i + 1) * classes],
                    yi,
                    t[i] as usize,
                    targeted,
                );
                let gi = g[i].to_f64();
                let mut dz = [0.0f64; 64];
                let mut big;
                let dz: &mut [f64] = if classes <= 64 {
                    &mut dz[..classes]
                } else {
                    big = vec![0.0; classes];
                    &mut big
                };
                dz[yi] -= gi / row.den;
                dz[row.other] += gi / row.den;
                let c = gi * row.num / (row.den * row.den);
                for (j, coef) in row.den_grad {
                    dz[j] += c * coef;
                }
                for (o, &d) in out.iter_mut().zip(dz.iter()) {
                    *o = Float::from_f64(d);
                }
            },
        )))
    })
}

fn row_norm(v: impl Iterator<Item = f64>, norm: Norm) -> f64 {
    match norm {
        Norm::Linf => v.fold(0.0, |m, x| m.max(x.abs())),
        Norm::L2 => v.map(|x| x * x).sum::<f64>().sqrt(),
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) fn apgd_step(
    x: &CpuStorage,
    prev: &CpuStorage,
    g: &CpuStorage,
    c: &CpuStorage,
    step: &CpuStorage,
    momentum: f64,
    eps: f64,
    norm: Norm,
    cols: usize,
) -> Result<CpuStorage> {
    with_floats!("apgd_step", (x, prev, g, c, step), |x, prev, g, c, step| {
        let n = rows_of("apgd_step", x.len(), cols)?;
        if [prev.len(), g.len(), c.len()].iter().any(|&l| l != x.len()) || step.len() != n {
            return Err(Error::invalid("apgd_step: buffer lengths disagree"));
        }
        let a = momentum;
        Ok(CpuElement::into_storage(map_rows(
            n,
            cols,
            zero_of(x),
            |i, out| {
                let r = i * cols..(i + 1) * cols;
                let (x, prev, g, c) = (&x[r.clone()], &prev[r.clone()], &g[r.clone()], &c[r]);
                let eta = step[i].to_f64();
                match norm {
                    Norm::Linf => {
                        for j in 0..cols {
                            let (xj, cj) = (x[j].to_f64(), c[j].to_f64());
                            let (lo, hi) = ((cj - eps).max(0.0), (cj + eps).min(1.0));
                            let gj = g[j].to_f64();
                            let s = if gj > 0.0 {
                                1.0
                            } else if gj < 0.0 {
                                -1.0
                            } else {
                                0.0
                            };
                            let z = (xj + eta * s).clamp(lo, hi);
                            let v = xj + a * (z - xj) + (1.0 - a) * (xj - prev[j].to_f64());
                            out[j] = Float::from_f64(v.clamp(lo, hi));
                        }
                    }
                    Norm::L2 => {
                        let gn = row_norm(g.iter().map(|v| v.to_f64()), Norm::L2) + 1e-12;
                        // P(v): the L2 ball around c, then the box.
                        let project = |v: &mut [f64]| {
                            let dn =
                                row_norm(v.iter().zip(c).map(|(v, c)| v - c.to_f64()), Norm::L2);
                            let f = eps.min(dn) / (dn + 1e-12);
                            for (v, c) in v.iter_mut().zip(c) {
                                let c = c.to_f64();
                                *v = (c + (*v - c) * f).clamp(0.0, 1.0);
                            }
                        };
                        let mut z: Vec<f64> = (0..cols)
                            .map(|j| x[j].to_f64() + eta * g[j].to_f64() / gn)
                            .collect();
                        project(&mut z);
                        for (j, zj) in z.iter_mut().enumerate() {
                            let xj = x[j].to_f64();
                            *zj = xj + a * (*zj - xj) + (1.0 - a) * (xj - prev[j].to_f64());
                        }
                        project(&mut z);
                        for (o, &v) in out.iter_mut().zip(&z) {
                            *o = Float::from_f64(v);
                        }
                    }
                }
            },
        )))
    })
}

/// The smallest-norm step `d` with `w·(t + d) = b` and `t + d ∈ [0, 1]`
/// (or, where the box cannot reach the hyperplane, the box corner closest
/// to it), written to `d`; returns `‖d‖`.
///
/// With `c = b − w·t` (and `w`, `c` negated when `c < 0`), both norms give
/// `dⱼ = sign(wⱼ)·min(λ·κⱼ, rⱼ)` for the `λ ≥ 0` with
/// `g(λ) = Σⱼ min(λ·aⱼ, bⱼ) = c`, `aⱼ = |wⱼ|κⱼ`, `bⱼ = |wⱼ|rⱼ`, where `rⱼ`
/// is the room left in the box in the direction `sign(wⱼ)` and `κⱼ = 1`
/// (L∞) or `|wⱼ|` (L2). `g` is increasing, concave and piecewise linear,
/// so Newton's method from `λ = 0`, `λ ← (c − A(λ))/B(λ)` with `A` the caps
/// `bⱼ` already reached and `B` the slopes `aⱼ` of the rest, climbs to the
/// root from below and stops exactly on it, after a few passes.
fn project_onto_hyperplane(
    t: &[f64],
    w: &[f64],
    b: f64,
    norm: Norm,
    d: &mut [f64],
    s: &mut Slopes,
) -> f64 {
    let mut c = b - t.iter().zip(w).map(|(t, w)| t * w).sum::<f64>();
    let flip = if c < 0.0 { -1.0 } else { 1.0 };
    c *= flip;
    // Per coordinate: the room in the box along sign(w), and κ.
    let room_kappa = |tj: f64, wj: f64| {
        let room = if wj > 0.0 {
            1.0 - tj
        } else if wj < 0.0 {
            tj
        } else {
            0.0
        };
        let kappa = match norm {
            Norm::Linf => 1.0,
            Norm::L2 => wj.abs(),
        };
        (room, kappa)
    };
    s.a.clear();
    s.b.clear();
    let mut reach = 0.0;
    for (&tj, &wj) in t.iter().zip(w) {
        let (room, kappa) = room_kappa(tj, flip * wj);
        let (a, bb) = (wj.abs() * kappa, wj.abs() * room);
        reach += bb;
        s.a.push(a);
        s.b.push(bb);
    }
    let lambda = if c == 0.0 {
        0.0
    } else if reach <= c {
        f64::INFINITY
    } else {
        let mut lambda: f64 = 0.0;
        for _ in 0..64 {
            let (saturated, slope) = s.piece(lambda);
            // (A zero slope cannot happen below the root, where g < c.)
            let next = (c - saturated) / slope;
            if next.is_nan() || next <= lambda {
                break;
            }
            lambda = next;
        }
        lambda
    };
    for ((dj, &tj), &wj) in d.iter_mut().zip(t).zip(w) {
        let (room, kappa) = room_kappa(tj, flip * wj);
        *dj = if wj == 0.0 {
            0.0
        } else {
            (flip * wj).signum() * (lambda * kappa).min(room)
        };
    }
    row_norm(d.iter().copied(), norm)
}

/// The slopes `aⱼ` and caps `bⱼ` of `g(λ) = Σⱼ min(λ·aⱼ, bⱼ)`.
#[derive(Default)]
struct Slopes {
    a: Vec<f64>,
    b: Vec<f64>,
}

impl Slopes {
    /// At `λ`: the caps already reached (`Σ bⱼ` with `bⱼ ≤ λaⱼ`) and the
    /// slope of the rest (`Σ aⱼ`), in eight lanes so that it vectorises.
    fn piece(&self, lambda: f64) -> (f64, f64) {
        let (mut sat, mut slope) = ([0.0f64; 8], [0.0f64; 8]);
        let (a, b) = (self.a.chunks_exact(8), self.b.chunks_exact(8));
        let tail = a.remainder().iter().zip(b.remainder());
        for (a, b) in a.zip(b) {
            for k in 0..8 {
                let capped = b[k] <= lambda * a[k];
                sat[k] += if capped { b[k] } else { 0.0 };
                slope[k] += if capped { 0.0 } else { a[k] };
            }
        }
        let (mut s0, mut s1): (f64, f64) = (sat.iter().sum(), slope.iter().sum());
        for (&a, &b) in tail {
            if b <= lambda * a {
                s0 += b;
            } else {
                s1 += a;
            }
        }
        (s0, s1)
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) fn fab_step(
    x: &CpuStorage,
    x0: &CpuStorage,
    w: &CpuStorage,
    f: &CpuStorage,
    eta: f64,
    alpha_max: f64,
    norm: Norm,
    cols: usize,
) -> Result<(CpuStorage, CpuStorage)> {
    with_floats!("fab_step", (x, x0, w, f), |x, x0, w, f| {
        let n = rows_of("fab_step", x.len(), cols)?;
        if x0.len() != x.len() || w.len() != x.len() || f.len() != n {
            return Err(Error::invalid("fab_step: buffer lengths disagree"));
        }
        let scratch = || FabScratch {
            x: vec![0.0; cols],
            x0: vec![0.0; cols],
            w: vec![0.0; cols],
            d1: vec![0.0; cols],
            d2: vec![0.0; cols],
            slopes: Slopes::default(),
        };
        let points = map_rows_with(n, cols, zero_of(x), scratch, |s, i, out| {
            let r = i * cols..(i + 1) * cols;
            for (((sx, sx0), sw), j) in s.x.iter_mut().zip(&mut s.x0).zip(&mut s.w).zip(r) {
                (*sx, *sx0, *sw) = (x[j].to_f64(), x0[j].to_f64(), w[j].to_f64());
            }
            // The hyperplane f + w·(z − x⁽ᵏ⁾) = 0 as w·z = b.
            let b = s.x.iter().zip(&s.w).map(|(x, w)| x * w).sum::<f64>() - f[i].to_f64();
            let a1 = project_onto_hyperplane(&s.x, &s.w, b, norm, &mut s.d1, &mut s.slopes);
            let a2 = project_onto_hyperplane(&s.x0, &s.w, b, norm, &mut s.d2, &mut s.slopes);
            let (a1, a2) = (a1.max(1e-8), a2.max(1e-8));
            let alpha = (a1 / (a1 + a2)).clamp(0.0, alpha_max);
            for (j, o) in out.iter_mut().enumerate() {
                let v =
                    (1.0 - alpha) * (s.x[j] + eta * s.d1[j]) + alpha * (s.x0[j] + eta * s.d2[j]);
                *o = Float::from_f64(v.clamp(0.0, 1.0));
            }
        });
        // The distances of the stored (rounded) points.
        let mut dist = pool::filled(n, zero_of(x));
        for ((d, p), c) in dist
            .iter_mut()
            .zip(points.chunks(cols))
            .zip(x0.chunks(cols))
        {
            *d = Float::from_f64(row_norm(
                p.iter().zip(c).map(|(p, c)| p.to_f64() - c.to_f64()),
                norm,
            ));
        }
        Ok((
            CpuElement::into_storage(points),
            CpuElement::into_storage(dist),
        ))
    })
}

/// The per-task buffers of [`fab_step`].
struct FabScratch {
    x: Vec<f64>,
    x0: Vec<f64>,
    w: Vec<f64>,
    d1: Vec<f64>,
    d2: Vec<f64>,
    slopes: Slopes,
}

pub(super) fn lerp_rows(
    x: &mut CpuStorage,
    src: &CpuStorage,
    rows: &CpuStorage,
    t: f64,
    cols: usize,
) -> Result<()> {
    let n = rows_of("lerp_rows", x.len(), cols)?;
    if src.len() != x.len() {
        return Err(Error::invalid(
            "lerp_rows: the source is shaped differently",
        ));
    }
    let idx = labels_of("lerp_rows", rows)?;
    if let Some(&bad) = idx.iter().find(|&&i| i as usize >= n) {
        return Err(Error::invalid(format!(
            "lerp_rows: row {bad} of a buffer of {n} rows"
        )));
    }
    fn go<T: Float>(x: &mut [T], s: &[T], idx: &[u32], t: f64, cols: usize) {
        for &i in idx {
            let r = i as usize * cols..(i as usize + 1) * cols;
            if t == 0.0 {
                x[r.clone()].copy_from_slice(&s[r]);
            } else {
                for (v, &sv) in x[r.clone()].iter_mut().zip(&s[r]) {
                    *v = Float::from_f64(sv.to_f64() + t * (v.to_f64() - sv.to_f64()));
                }
            }
        }
    }
    let dtype = x.dtype();
    match (x, src) {
        (CpuStorage::F32(x), CpuStorage::F32(s)) => go(x, s, idx, t, cols),
        (CpuStorage::F64(x), CpuStorage::F64(s)) => go(x, s, idx, t, cols),
        (_, s) => {
            return Err(Error::DTypeMismatch {
                op: "lerp_rows",
                lhs: dtype,
                rhs: s.dtype(),
            })
        }
    }
    Ok(())
}
