//! Every CUDA kernel, run on the CPU SIMT emulator (`crates/simt`) from the
//! same launch plans the CUDA backend uses, on random odd sizes in f32 and
//! f64, compared with a straightforward reference computed in f64.
//!
//! Error measure: |got − want| ≤ tol · scale, with tol = 1e-5 (f32) or
//! 1e-12 (f64), and scale = max(|want|, 1) for elementwise results, the sum
//! of |terms| for sums and matrix products (the error bound of any
//! summation order). NaN must match NaN.
//!
//! TODO(phase 2): compare with advgrad's CPU backend once the core lands.

use simt::plan::{self, Activation, AdamStep, Binary, Elem};
use simt::Buf;

/// xorshift64*: a tiny deterministic generator.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [lo, hi).
    fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64)
    }
    fn below(&mut self, n: u32) -> u32 {
        (self.next_u64() % u64::from(n)) as u32
    }
}

/// The element types the kernels are instantiated for.
trait Real: Copy + std::fmt::Debug + 'static {
    const ELEM: Elem;
    const TOL: f64;
    fn from_f64(v: f64) -> Self;
    fn to_f64(self) -> f64;
    fn buf(s: &[Self]) -> Buf<'_>;
    fn buf_mut(s: &mut [Self]) -> Buf<'_>;
}

impl Real for f32 {
    const ELEM: Elem = Elem::F32;
    const TOL: f64 = 1e-5;
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn buf(s: &[Self]) -> Buf<'_> {
        Buf::F32(s)
    }
    fn buf_mut(s: &mut [Self]) -> Buf<'_> {
        Buf::F32Mut(s)
    }
}

impl Real for f64 {
    const ELEM: Elem = Elem::F64;
    const TOL: f64 = 1e-12;
    fn from_f64(v: f64) -> Self {
        v
    }
    fn to_f64(self) -> f64 {
        self
    }
    fn buf(s: &[Self]) -> Buf<'_> {
        Buf::F64(s)
    }
    fn buf_mut(s: &mut [Self]) -> Buf<'_> {
        Buf::F64Mut(s)
    }
}

fn rand_vec<T: Real>(rng: &mut Rng, n: usize, lo: f64, hi: f64) -> Vec<T> {
    (0..n).map(|_| T::from_f64(rng.uniform(lo, hi))).collect()
}

fn f64s<T: Real>(v: &[T]) -> Vec<f64> {
    v.iter().map(|x| x.to_f64()).collect()
}

/// Checks `got` against `want` with per-element scales (see the module doc).
#[track_caller]
fn check<T: Real>(what: &str, got: &[T], want: &[f64], scale: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut worst = 0.0f64;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let g = g.to_f64();
        if w.is_nan() {
            assert!(g.is_nan(), "{what}[{i}]: got {g}, want NaN");
            continue;
        }
        assert!(g.is_finite() || g == w, "{what}[{i}]: got {g}, want {w}");
        let err = (g - w).abs() / scale[i].max(f64::MIN_POSITIVE);
        worst = worst.max(err);
        assert!(
            err <= T::TOL,
            "{what}[{i}]: got {g}, want {w}, rel err {err:e} > {:e}",
            T::TOL
        );
    }
    let _ = worst;
}

#[track_caller]
fn check_ew<T: Real>(what: &str, got: &[T], want: &[f64]) {
    let scale: Vec<f64> = want.iter().map(|w| w.abs().max(1.0)).collect();
    check(what, got, want, &scale);
}

// ---------------------------------------------------------------- matmul

const MATMUL_SIZES: &[(usize, usize, usize)] = &[
    (37, 29, 41),
    (1, 1, 1),
    (130, 257, 65),
    (64, 64, 16),
    (70, 68, 36),
    (5, 3, 0),
    (0, 4, 3),
    (33, 1, 100),
];

fn matmul_case<T: Real>(m: usize, n: usize, k: usize, ta: bool, tb: bool, acc: bool, seed: u64) {
    let mut rng = Rng::new(seed);
    let a: Vec<T> = rand_vec(&mut rng, m * k, -1.0, 1.0);
    let b: Vec<T> = rand_vec(&mut rng, k * n, -1.0, 1.0);
    let c0: Vec<T> = rand_vec(&mut rng, m * n, -1.0, 1.0);
    let at = |i: usize, p: usize| if ta { a[p * m + i] } else { a[i * k + p] }.to_f64();
    let bt = |p: usize, j: usize| if tb { b[j * k + p] } else { b[p * n + j] }.to_f64();
    let mut want = vec![0.0; m * n];
    let mut scale = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            let (mut s, mut abs) = (0.0, 0.0);
            for p in 0..k {
                s += at(i, p) * bt(p, j);
                abs += (at(i, p) * bt(p, j)).abs();
            }
            if acc {
                s += c0[i * n + j].to_f64();
                abs += c0[i * n + j].to_f64().abs();
            }
            want[i * n + j] = s;
            scale[i * n + j] = abs.max(1e-3);
        }
    }
    let p = plan::matmul(T::ELEM, m, n, k, ta, tb, acc).unwrap();
    let mut c = c0.clone();
    simt::run(&p, &mut [T::buf(&a), T::buf(&b), T::buf_mut(&mut c)]).unwrap();
    check(&format!("matmul {m}x{n}x{k} ta={ta} tb={tb} acc={acc}"), &c, &want, &scale);
}

fn matmul_all<T: Real>() {
    for (s, &(m, n, k)) in MATMUL_SIZES.iter().enumerate() {
        matmul_case::<T>(m, n, k, false, false, false, s as u64);
    }
    for (ta, tb, acc) in [
        (true, false, false),
        (false, true, true),
        (true, true, false),
        (false, false, true),
    ] {
        matmul_case::<T>(37, 29, 41, ta, tb, acc, 7);
        matmul_case::<T>(70, 68, 36, ta, tb, acc, 8);
    }
    matmul_case::<T>(130, 257, 65, true, true, true, 9);
}

#[test]
fn matmul_f32() {
    matmul_all::<f32>();
}

#[test]
fn matmul_f64() {
    matmul_all::<f64>();
}

// ---------------------------------------------------------- elementwise

const EW_SIZES: &[usize] = &[1, 37 * 29, 4097];

fn elementwise_all<T: Real>() {
    let e = T::ELEM;
    for (s, &n) in EW_SIZES.iter().enumerate() {
        let mut rng = Rng::new(100 + s as u64);
        let a: Vec<T> = rand_vec(&mut rng, n, -3.0, 3.0);
        let b: Vec<T> = rand_vec(&mut rng, n, -3.0, 3.0);
        let (af, bf) = (f64s(&a), f64s(&b));
        let mut y = vec![T::from_f64(0.0); n];

        for (op, f) in [
            (Binary::Add, (|x, y| x + y) as fn(f64, f64) -> f64),
            (Binary::Sub, |x, y| x - y),
            (Binary::Mul, |x, y| x * y),
        ] {
            let p = plan::binary(op, e, n).unwrap();
            simt::run(&p, &mut [T::buf(&a), T::buf(&b), T::buf_mut(&mut y)]).unwrap();
            let want: Vec<f64> = af.iter().zip(&bf).map(|(&x, &y)| f(x, y)).collect();
            check_ew(&format!("{op:?} n={n}"), &y, &want);
        }

        let p = plan::affine(e, n, 0.5, -2.0).unwrap();
        simt::run(&p, &mut [T::buf(&a), T::buf_mut(&mut y)]).unwrap();
        let want: Vec<f64> = af.iter().map(|x| 0.5 * x - 2.0).collect();
        check_ew("affine", &y, &want);

        let mut yy = b.clone();
        let p = plan::axpy(e, n, -0.25).unwrap();
        simt::run(&p, &mut [T::buf(&a), T::buf_mut(&mut yy)]).unwrap();
        let want: Vec<f64> = af.iter().zip(&bf).map(|(x, y)| y - 0.25 * x).collect();
        check_ew("axpy", &yy, &want);

        let mut a0 = a.clone();
        a0[0] = T::from_f64(0.0);
        a0[n / 2] = T::from_f64(f64::NAN);
        let p = plan::sign(e, n).unwrap();
        simt::run(&p, &mut [T::buf(&a0), T::buf_mut(&mut y)]).unwrap();
        let want: Vec<f64> = f64s(&a0)
            .iter()
            .map(|&x| if x == 0.0 || x.is_nan() { x } else { x.signum() })
            .collect();
        check_ew("sign", &y, &want);

        let p = plan::clamp(e, n, -1.0, 0.5).unwrap();
        simt::run(&p, &mut [T::buf(&a0), T::buf_mut(&mut y)]).unwrap();
        let want: Vec<f64> = f64s(&a0)
            .iter()
            .map(|&x| if x.is_nan() { x } else { x.clamp(-1.0, 0.5) })
            .collect();
        check_ew("clamp", &y, &want);

        // x0 in [0, 1], x a perturbation of it.
        let x0: Vec<T> = rand_vec(&mut rng, n, 0.0, 1.0);
        let xa: Vec<T> = x0
            .iter()
            .map(|v| T::from_f64(v.to_f64() + rng.uniform(-0.3, 0.3)))
            .collect();
        let eps = 0.1;
        let p = plan::project_linf(e, n, eps).unwrap();
        simt::run(&p, &mut [T::buf(&xa), T::buf(&x0), T::buf_mut(&mut y)]).unwrap();
        let want: Vec<f64> = f64s(&xa)
            .iter()
            .zip(f64s(&x0))
            .map(|(&x, c)| {
                let lo = (T::from_f64(c - eps)).to_f64();
                let hi = (T::from_f64(c + eps)).to_f64();
                // The kernel computes x0 ± eps in T; mirror that rounding.
                let lo = T::from_f64(c - T::from_f64(eps).to_f64()).to_f64().max(lo.min(lo));
                let hi = T::from_f64(c + T::from_f64(eps).to_f64()).to_f64().min(hi.max(hi));
                x.max(lo).min(hi).clamp(0.0, 1.0)
            })
            .collect();
        check_ew("project_linf", &y, &want);
        for (v, c) in y.iter().zip(&x0) {
            let (v, c) = (v.to_f64(), c.to_f64());
            assert!((0.0..=1.0).contains(&v) && (v - c).abs() <= eps * (1.0 + 1e-6));
        }

        let p = plan::fill(e, n, 3.25).unwrap();
        simt::run(&p, &mut [T::buf_mut(&mut y)]).unwrap();
        check_ew("fill", &y, &vec![3.25; n]);

        let s = [T::from_f64(1.5)];
        let p = plan::fill_scalar(e, n, 1.0 / n as f64).unwrap();
        simt::run(&p, &mut [T::buf(&s), T::buf_mut(&mut y)]).unwrap();
        check_ew("fill_scalar", &y, &vec![1.5 / n as f64; n]);

        let p = plan::scale_scalar(e, n, 2.0).unwrap();
        simt::run(&p, &mut [T::buf(&a), T::buf(&s), T::buf_mut(&mut y)]).unwrap();
        let want: Vec<f64> = af.iter().map(|x| x * 3.0).collect();
        check_ew("scale_scalar", &y, &want);
    }
}

#[test]
fn elementwise_f32() {
    elementwise_all::<f32>();
}

#[test]
fn elementwise_f64() {
    elementwise_all::<f64>();
}

// ------------------------------------------------------------ bias add

const ROW_SIZES: &[(usize, usize)] = &[(37, 29), (1, 1), (130, 257), (9, 10), (3, 70)];

fn bias_all<T: Real>() {
    for (s, &(r, c)) in ROW_SIZES.iter().enumerate() {
        let mut rng = Rng::new(200 + s as u64);
        let x: Vec<T> = rand_vec(&mut rng, r * c, -2.0, 2.0);
        let b: Vec<T> = rand_vec(&mut rng, c, -2.0, 2.0);
        let mut y = vec![T::from_f64(0.0); r * c];
        let p = plan::add_row(T::ELEM, r, c).unwrap();
        simt::run(&p, &mut [T::buf(&x), T::buf(&b), T::buf_mut(&mut y)]).unwrap();
        let want: Vec<f64> = (0..r * c).map(|i| x[i].to_f64() + b[i % c].to_f64()).collect();
        check_ew(&format!("add_row {r}x{c}"), &y, &want);

        let mut out = vec![T::from_f64(0.0); c];
        let p = plan::sum_rows(T::ELEM, r, c).unwrap();
        simt::run(&p, &mut [T::buf(&x), T::buf_mut(&mut out)]).unwrap();
        let want: Vec<f64> = (0..c).map(|j| (0..r).map(|i| x[i * c + j].to_f64()).sum()).collect();
        let scale: Vec<f64> = (0..c)
            .map(|j| (0..r).map(|i| x[i * c + j].to_f64().abs()).sum::<f64>().max(1e-3))
            .collect();
        check(&format!("sum_rows {r}x{c}"), &out, &want, &scale);
    }
}

#[test]
fn bias_f32() {
    bias_all::<f32>();
}

#[test]
fn bias_f64() {
    bias_all::<f64>();
}

// --------------------------------------------------------- activations

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

fn activations_all<T: Real>() {
    for (s, &n) in EW_SIZES.iter().enumerate() {
        let mut rng = Rng::new(300 + s as u64);
        let mut x: Vec<T> = rand_vec(&mut rng, n, -6.0, 6.0);
        if n > 2 {
            x[1] = T::from_f64(f64::NAN);
        }
        let g: Vec<T> = rand_vec(&mut rng, n, -1.0, 1.0);
        let (xf, gf) = (f64s(&x), f64s(&g));
        for act in [Activation::Relu, Activation::Sigmoid, Activation::Tanh] {
            let mut y = vec![T::from_f64(0.0); n];
            let p = plan::activation_fwd(act, T::ELEM, n).unwrap();
            simt::run(&p, &mut [T::buf(&x), T::buf_mut(&mut y)]).unwrap();
            let want: Vec<f64> = xf
                .iter()
                .map(|&v| match act {
                    Activation::Relu => {
                        if v.is_nan() {
                            v
                        } else {
                            v.max(0.0)
                        }
                    }
                    Activation::Sigmoid => sigmoid(v),
                    Activation::Tanh => v.tanh(),
                })
                .collect();
            check_ew(&format!("{act:?} fwd n={n}"), &y, &want);

            let saved = if act == Activation::Relu { &x } else { &y };
            let sf = f64s(saved);
            let mut dx = vec![T::from_f64(0.0); n];
            let p = plan::activation_bwd(act, T::ELEM, n).unwrap();
            simt::run(&p, &mut [T::buf(saved), T::buf(&g), T::buf_mut(&mut dx)]).unwrap();
            let want: Vec<f64> = (0..n)
                .map(|i| match act {
                    Activation::Relu => {
                        if sf[i] > 0.0 {
                            gf[i]
                        } else {
                            0.0
                        }
                    }
                    Activation::Sigmoid => gf[i] * sf[i] * (1.0 - sf[i]),
                    Activation::Tanh => gf[i] * (1.0 - sf[i] * sf[i]),
                })
                .collect();
            check_ew(&format!("{act:?} bwd n={n}"), &dx, &want);
        }
    }
}

#[test]
fn activations_f32() {
    activations_all::<f32>();
}

#[test]
fn activations_f64() {
    activations_all::<f64>();
}

// ------------------------------------------------- softmax cross-entropy

fn softmax_xent_all<T: Real>() {
    for (s, &(r, c)) in ROW_SIZES.iter().enumerate() {
        let mut rng = Rng::new(400 + s as u64);
        let x: Vec<T> = rand_vec(&mut rng, r * c, -8.0, 8.0);
        let labels: Vec<u32> = (0..r).map(|_| rng.below(c as u32)).collect();
        let mut loss = vec![T::from_f64(0.0); r];
        let mut probs = vec![T::from_f64(0.0); r * c];
        let p = plan::softmax_xent_fwd(T::ELEM, r, c).unwrap();
        simt::run(
            &p,
            &mut [T::buf(&x), Buf::U32(&labels), T::buf_mut(&mut loss), T::buf_mut(&mut probs)],
        )
        .unwrap();
        let xf = f64s(&x);
        let mut want_loss = vec![0.0; r];
        let mut want_p = vec![0.0; r * c];
        for i in 0..r {
            let row = &xf[i * c..(i + 1) * c];
            let mx = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let lse = mx + row.iter().map(|v| (v - mx).exp()).sum::<f64>().ln();
            want_loss[i] = lse - row[labels[i] as usize];
            for j in 0..c {
                want_p[i * c + j] = (row[j] - lse).exp();
            }
        }
        check_ew(&format!("softmax_xent loss {r}x{c}"), &loss, &want_loss);
        check_ew(&format!("softmax_xent probs {r}x{c}"), &probs, &want_p);

        // Mean of the row losses through the two-pass reduction.
        let [p1, p2] = plan::sum(T::ELEM, r, true).unwrap();
        let mut partials = vec![T::from_f64(0.0); plan::reduce_blocks(r) as usize];
        let mut mean = [T::from_f64(0.0)];
        simt::run(&p1, &mut [T::buf(&loss), T::buf_mut(&mut partials)]).unwrap();
        simt::run(&p2, &mut [T::buf(&partials), T::buf_mut(&mut mean)]).unwrap();
        let m: f64 = want_loss.iter().sum::<f64>() / r as f64;
        check_ew("mean loss", &mean, &[m]);

        let g = [T::from_f64(0.75)];
        let mut dl = vec![T::from_f64(0.0); r * c];
        let p = plan::softmax_xent_bwd(T::ELEM, r, c).unwrap();
        simt::run(
            &p,
            &mut [T::buf(&probs), Buf::U32(&labels), T::buf(&g), T::buf_mut(&mut dl)],
        )
        .unwrap();
        let pf = f64s(&probs);
        let want: Vec<f64> = (0..r * c)
            .map(|i| {
                let onehot = if labels[i / c] as usize == i % c { 1.0 } else { 0.0 };
                0.75 * (pf[i] - onehot) / r as f64
            })
            .collect();
        check_ew(&format!("softmax_xent bwd {r}x{c}"), &dl, &want);
    }
}

#[test]
fn softmax_xent_f32() {
    softmax_xent_all::<f32>();
}

#[test]
fn softmax_xent_f64() {
    softmax_xent_all::<f64>();
}

#[test]
fn softmax_xent_propagates_nan_and_flags_bad_labels() {
    let x = [0.0f32, f32::NAN, 1.0, 2.0, 3.0, 4.0];
    let labels = [0u32, 7];
    let mut loss = [0f32; 2];
    let mut probs = [0f32; 6];
    let p = plan::softmax_xent_fwd(Elem::F32, 2, 3).unwrap();
    simt::run(
        &p,
        &mut [Buf::F32(&x), Buf::U32(&labels), Buf::F32Mut(&mut loss), Buf::F32Mut(&mut probs)],
    )
    .unwrap();
    assert!(loss[0].is_nan() && probs[..3].iter().all(|v| v.is_nan()));
    assert!(loss[1].is_nan(), "label 7 of 3 classes gives NaN");
    assert!(probs[3..].iter().all(|v| v.is_finite()));
}

// ------------------------------------------------------------ reductions

fn reductions_all<T: Real>() {
    for (s, &n) in [1usize, 37, 1073, 4097, 300_001].iter().enumerate() {
        let mut rng = Rng::new(500 + s as u64);
        let x: Vec<T> = rand_vec(&mut rng, n, -1.0, 1.0);
        let xf = f64s(&x);
        let abs: f64 = xf.iter().map(|v| v.abs()).sum();
        for mean in [false, true] {
            let [p1, p2] = plan::sum(T::ELEM, n, mean).unwrap();
            let mut partials = vec![T::from_f64(0.0); plan::reduce_blocks(n) as usize];
            let mut out = [T::from_f64(0.0)];
            simt::run(&p1, &mut [T::buf(&x), T::buf_mut(&mut partials)]).unwrap();
            simt::run(&p2, &mut [T::buf(&partials), T::buf_mut(&mut out)]).unwrap();
            let d = if mean { n as f64 } else { 1.0 };
            let want = xf.iter().sum::<f64>() / d;
            check(&format!("sum n={n} mean={mean}"), &out, &[want], &[abs / d]);
            // Same input, same bits.
            let mut again = [T::from_f64(0.0)];
            simt::run(&p1, &mut [T::buf(&x), T::buf_mut(&mut partials)]).unwrap();
            simt::run(&p2, &mut [T::buf(&partials), T::buf_mut(&mut again)]).unwrap();
            assert_eq!(out[0].to_f64().to_bits(), again[0].to_f64().to_bits());
        }
    }
}

#[test]
fn reductions_f32() {
    reductions_all::<f32>();
}

#[test]
fn reductions_f64() {
    reductions_all::<f64>();
}

fn argmax_all<T: Real>() {
    for (s, &(r, c)) in ROW_SIZES.iter().enumerate() {
        let mut rng = Rng::new(600 + s as u64);
        // Few distinct values, so ties happen.
        let mut x: Vec<T> = (0..r * c).map(|_| T::from_f64(rng.below(5) as f64)).collect();
        if r > 2 && c > 3 {
            x[c + 3] = T::from_f64(f64::NAN);
        }
        let mut out = vec![0u32; r];
        let p = plan::argmax_rows(T::ELEM, r, c).unwrap();
        simt::run(&p, &mut [T::buf(&x), Buf::U32Mut(&mut out)]).unwrap();
        for i in 0..r {
            let row = f64s(&x[i * c..(i + 1) * c]);
            let want = row.iter().position(|v| v.is_nan()).unwrap_or_else(|| {
                let mx = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                row.iter().position(|&v| v == mx).unwrap()
            });
            assert_eq!(out[i] as usize, want, "argmax row {i} of {r}x{c}: {row:?}");
        }
    }
}

#[test]
fn argmax_f32() {
    argmax_all::<f32>();
}

#[test]
fn argmax_f64() {
    argmax_all::<f64>();
}

// ------------------------------------------------------------ optimisers

fn optim_all<T: Real>() {
    let n = 1073;
    let mut rng = Rng::new(700);
    let w0: Vec<T> = rand_vec(&mut rng, n, -1.0, 1.0);
    let g: Vec<T> = rand_vec(&mut rng, n, -1.0, 1.0);
    let v0: Vec<T> = rand_vec(&mut rng, n, -0.1, 0.1);
    let m0: Vec<T> = rand_vec(&mut rng, n, -0.1, 0.1);
    let s0: Vec<T> = rand_vec(&mut rng, n, 0.0, 0.01);
    let (wf, gf, vf, mf, sf) = (f64s(&w0), f64s(&g), f64s(&v0), f64s(&m0), f64s(&s0));
    // The kernel computes in T with hyper-parameters rounded to T.
    let r = |v: f64| T::from_f64(v).to_f64();

    let (lr, wd) = (r(0.1), r(0.01));
    let mut w = w0.clone();
    let p = plan::sgd(T::ELEM, n, 0.1, 0.01).unwrap();
    simt::run(&p, &mut [T::buf_mut(&mut w), T::buf(&g)]).unwrap();
    let want: Vec<f64> = (0..n).map(|i| wf[i] - lr * (gf[i] + wd * wf[i])).collect();
    check_ew("sgd", &w, &want);

    for nesterov in [false, true] {
        let mu = r(0.9);
        let (mut w, mut v) = (w0.clone(), v0.clone());
        let p = plan::sgd_momentum(T::ELEM, n, 0.1, 0.9, 0.01, nesterov).unwrap();
        simt::run(&p, &mut [T::buf_mut(&mut w), T::buf(&g), T::buf_mut(&mut v)]).unwrap();
        let mut want_w = vec![0.0; n];
        let mut want_v = vec![0.0; n];
        for i in 0..n {
            let gi = gf[i] + wd * wf[i];
            want_v[i] = mu * vf[i] + gi;
            let d = if nesterov { gi + mu * want_v[i] } else { want_v[i] };
            want_w[i] = wf[i] - lr * d;
        }
        check_ew("sgd_momentum w", &w, &want_w);
        check_ew("sgd_momentum v", &v, &want_v);
    }

    for decoupled in [false, true] {
        let step = AdamStep {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
            decoupled,
            step: 3,
        };
        let (mut w, mut m, mut v) = (w0.clone(), m0.clone(), s0.clone());
        let p = plan::adam(T::ELEM, n, step).unwrap();
        simt::run(
            &p,
            &mut [T::buf_mut(&mut w), T::buf(&g), T::buf_mut(&mut m), T::buf_mut(&mut v)],
        )
        .unwrap();
        let (lr, b1, b2, eps, wd) = (r(1e-3), r(0.9), r(0.999), r(1e-8), r(0.01));
        let bc1 = r(1.0 - 0.9f64.powi(3));
        let bc2 = r(1.0 - 0.999f64.powi(3));
        for i in 0..n {
            let (mut wi, mut gi) = (wf[i], gf[i]);
            if decoupled {
                wi -= lr * wd * wi;
            } else {
                gi += wd * wi;
            }
            let mi = b1 * mf[i] + (1.0 - b1) * gi;
            let vi = b2 * sf[i] + (1.0 - b2) * gi * gi;
            let want_w = wi - lr * (mi / bc1) / ((vi / bc2).sqrt() + eps);
            check_ew("adam m", &m[i..i + 1], &[mi]);
            check_ew("adam v", &v[i..i + 1], &[vi]);
            check_ew("adam w", &w[i..i + 1], &[want_w]);
        }
    }
}

#[test]
fn optimisers_f32() {
    optim_all::<f32>();
}

#[test]
fn optimisers_f64() {
    optim_all::<f64>();
}
