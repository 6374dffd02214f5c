//! Every CUDA kernel, run on the CPU SIMT emulator (`crates/simt`) from the
//! same launch plans the CUDA backend uses, on random odd sizes in f32 and
//! f64, compared with advgrad's CPU backend (`CpuStorage` through the
//! `BackendStorage` trait), the reference implementation.
//!
//! These run the plans directly, so they also reach what the backend does
//! not use (a matmul that accumulates into C, `scale_scalar`, AdamW's
//! decoupled decay, the per-row losses before the mean); those are compared
//! with a reference computed in f64. `tests/cuda_parity.rs` runs the whole
//! CUDA backend on the emulator.
//!
//! Error measure: the per-element tolerance of `tests/support` (1e-5 in
//! f32, 1e-12 in f64, relative to |want| for elementwise results and to
//! the sum of |terms| for sums and products, with an absolute floor of 1e-6
//! / 1e-12). NaN must match NaN.
mod support;

use advgrad::backend::cpu::CpuStorage;
use advgrad::backend::{Activation, BackendStorage, Binary, MatmulDims, UpdateRule};
use advgrad::DType;
use kernels::grid_stride::Extent;
use kernels::matmul::{Epilogue, MatmulPlan, Tile, Tuning};
use kernels::optim::AdamStep;
use kernels::{activation, elementwise, matmul, optim, reduce, softmax_xent};
use simt::Buf;
use support::{assert_close, Rng, Scale, Tolerance};

/// The element types the kernels are instantiated for.
trait Real: Copy + std::fmt::Debug + 'static {
    const DTYPE: DType;
    fn from_f64(v: f64) -> Self;
    fn to_f64(self) -> f64;
    fn buf(s: &[Self]) -> Buf<'_>;
    fn buf_mut(s: &mut [Self]) -> Buf<'_>;
    fn cpu(v: &[Self]) -> CpuStorage;
}

/// The f64 values of a CPU-backend result.
fn cpu_f64(r: advgrad::Result<CpuStorage>) -> Vec<f64> {
    r.expect("CPU backend").to_f64_vec()
}

impl Real for f32 {
    const DTYPE: DType = DType::F32;
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
    fn cpu(v: &[Self]) -> CpuStorage {
        CpuStorage::F32(v.to_vec())
    }
}

impl Real for f64 {
    const DTYPE: DType = DType::F64;
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
    fn cpu(v: &[Self]) -> CpuStorage {
        CpuStorage::F64(v.to_vec())
    }
}

fn rand_vec<T: Real>(rng: &mut Rng, n: usize, lo: f64, hi: f64) -> Vec<T> {
    (0..n).map(|_| T::from_f64(rng.uniform(lo, hi))).collect()
}

fn f64s<T: Real>(v: &[T]) -> Vec<f64> {
    v.iter().map(|x| x.to_f64()).collect()
}

/// Checks `got` against `want` with per-element scales: the sums of the
/// |terms| (see `tests/support`).
#[track_caller]
fn check<T: Real>(what: &str, got: &[T], want: &[f64], terms: &[f64]) {
    let t = Tolerance::kernel(T::DTYPE);
    assert_close(what, &f64s(got), want, Scale::Terms(terms), t);
}

/// Checks an elementwise result against `want`, relative to |want|.
#[track_caller]
fn check_ew<T: Real>(what: &str, got: &[T], want: &[f64]) {
    let t = Tolerance::kernel(T::DTYPE);
    assert_close(what, &f64s(got), want, Scale::Value, t);
}

// ---------------------------------------------------------------- matmul

/// Runs a matmul plan — the product, and the split-K reduction when it has
/// one — on the emulator, with `c` the output (read too when accumulating).
fn run_matmul<T: Real>(p: &MatmulPlan, a: &[T], b: &[T], bias: &[T], c: &mut [T]) {
    match &p.reduce {
        None => simt::run(
            &p.product,
            &mut [T::buf(a), T::buf(b), T::buf(bias), T::buf_mut(c)],
        ),
        Some(reduce) => {
            let mut partial = vec![T::from_f64(0.0); p.workspace_len()];
            simt::run(
                &p.product,
                &mut [T::buf(a), T::buf(b), T::buf(bias), T::buf_mut(&mut partial)],
            )
            .and_then(|()| simt::run(reduce, &mut [T::buf(&partial), T::buf(bias), T::buf_mut(c)]))
        }
    }
    .unwrap_or_else(|e| panic!("{}: {e}", p.product.kernel));
}

/// One product on the emulator against the CPU backend: `epilogue`
/// (stored, accumulated into random values, or bias and activation) with
/// the tiling `tuning` gives.
fn matmul_case<T: Real>(
    (m, n, k): (usize, usize, usize),
    (ta, tb): (bool, bool),
    epilogue: Epilogue,
    tuning: Tuning,
    seed: u64,
) {
    let mut rng = Rng::new(seed);
    let a: Vec<T> = rand_vec(&mut rng, m * k, -1.0, 1.0);
    let b: Vec<T> = rand_vec(&mut rng, k * n, -1.0, 1.0);
    let c0: Vec<T> = rand_vec(&mut rng, m * n, -1.0, 1.0);
    let bias: Vec<T> = rand_vec(&mut rng, n, -1.0, 1.0);
    let dims = MatmulDims {
        m,
        n,
        k,
        a_trans: ta,
        b_trans: tb,
    };
    let (ca, cb) = (T::cpu(&a), T::cpu(&b));
    // The scale: Σ_p |a_ip·b_pj|, plus |c0_ij| when accumulating, or
    // |bias_j| and the output's own size with an activation (slope ≤ 1).
    let at = |i: usize, p: usize| if ta { a[p * m + i] } else { a[i * k + p] }.to_f64();
    let bt = |p: usize, j: usize| if tb { b[j * k + p] } else { b[p * n + j] }.to_f64();
    let mut want = match epilogue {
        Epilogue::BiasAct(act) => cpu_f64(ca.matmul_bias_act(&cb, dims, &T::cpu(&bias), act)),
        _ => cpu_f64(ca.matmul(&cb, dims)),
    };
    let mut scale = vec![0.0; m * n];
    for i in 0..m {
        for (j, bias_j) in bias.iter().enumerate() {
            let ij = i * n + j;
            scale[ij] = (0..k).map(|p| (at(i, p) * bt(p, j)).abs()).sum();
            match epilogue {
                Epilogue::Accumulate => {
                    want[ij] += c0[ij].to_f64();
                    scale[ij] += c0[ij].to_f64().abs();
                }
                Epilogue::BiasAct(_) => scale[ij] += bias_j.to_f64().abs() + want[ij].abs(),
                Epilogue::Store => {}
            }
        }
    }
    let p = matmul::matmul(T::DTYPE, dims, epilogue, tuning).unwrap();
    let mut c = c0.clone();
    run_matmul(&p, &a, &b, &bias, &mut c);
    let t = p.tiling;
    check(
        &format!(
            "matmul {m}x{n}x{k} ta={ta} tb={tb} {epilogue:?} {:?} splits={} k_chunk={}",
            t.tile, t.splits, t.k_chunk
        ),
        &c,
        &want,
        &scale,
    );
}

/// Odd edges; one block; sizes that take the 16-byte paths of every
/// operand (m, n, k multiples of 4) with partial tiles; a k that is not a
/// multiple of 4 (scalar loads for the k-inner operands) and one that is
/// not a multiple of the stage depth; empty products; a single column.
const MATMUL_SIZES: &[(usize, usize, usize)] = &[
    (37, 29, 41),
    (1, 1, 1),
    (130, 257, 65),
    (68, 36, 44),
    (72, 68, 37),
    (5, 3, 0),
    (0, 4, 3),
    (33, 1, 100),
];

const LAYOUTS: [(bool, bool); 4] = [(false, false), (true, false), (false, true), (true, true)];

fn forced(tile: Tile, splits: u32) -> Tuning {
    Tuning {
        tile: Some(tile),
        splits: Some(splits),
        ..Tuning::default()
    }
}

fn matmul_all<T: Real>() {
    for (s, &size) in MATMUL_SIZES.iter().enumerate() {
        for (l, &layout) in LAYOUTS.iter().enumerate() {
            for tile in Tile::ALL {
                let seed = (s * 8 + l * 2) as u64;
                matmul_case::<T>(size, layout, Epilogue::Store, forced(tile, 1), seed);
            }
        }
    }
    // Split-K: depth ranges of 16 or 8 values (or 48 / 24, leaving a
    // partial last range), every epilogue applied after the reduction.
    let epilogues = [
        Epilogue::Store,
        Epilogue::Accumulate,
        Epilogue::BiasAct(Activation::Relu),
        Epilogue::BiasAct(Activation::Sigmoid),
        Epilogue::BiasAct(Activation::Tanh),
    ];
    for (l, &layout) in LAYOUTS.iter().enumerate() {
        for (e, &epilogue) in epilogues.iter().enumerate() {
            let seed = 100 + (l * 8 + e) as u64;
            matmul_case::<T>(
                (70, 68, 100),
                layout,
                epilogue,
                forced(Tile::T64x64, 3),
                seed,
            );
            matmul_case::<T>(
                (37, 29, 41),
                layout,
                epilogue,
                forced(Tile::T128x128, 1),
                seed,
            );
        }
    }
    matmul_case::<T>(
        (37, 130, 65),
        (false, true),
        Epilogue::Accumulate,
        forced(Tile::T128x128, 5),
        200,
    );
}

#[test]
fn matmul_f32() {
    matmul_all::<f32>();
}

#[test]
fn matmul_f64() {
    matmul_all::<f64>();
}

/// The MLP's products (batch 128, 784 → 256 → 256 → 10) as the plan
/// tiles them for an H100 (132 SMs) and an A100 (108): the forward split
/// in depth ranges with the bias and ReLU after the reduction, the input
/// and weight gradients.
#[test]
fn matmul_mlp_shapes_f32() {
    let relu = Epilogue::BiasAct(Activation::Relu);
    for sms in [132, 108] {
        let tuning = Tuning::for_device(sms);
        matmul_case::<f32>((128, 256, 784), (false, true), relu, tuning, 300);
        matmul_case::<f32>((128, 10, 256), (false, true), Epilogue::Store, tuning, 301);
        matmul_case::<f32>((256, 784, 128), (true, false), Epilogue::Store, tuning, 302);
        matmul_case::<f32>(
            (128, 784, 256),
            (false, false),
            Epilogue::Store,
            tuning,
            303,
        );
    }
    let p = matmul::matmul(
        DType::F32,
        MatmulDims {
            m: 128,
            n: 256,
            k: 784,
            a_trans: false,
            b_trans: true,
        },
        relu,
        Tuning::for_device(132),
    )
    .unwrap();
    assert!(
        p.tiling.splits > 1,
        "the MLP's first layer is split: {:?}",
        p.tiling
    );
}

// ---------------------------------------------------------- elementwise

const EW_SIZES: &[usize] = &[1, 37 * 29, 4097];

fn elementwise_all<T: Real>() {
    let e = T::DTYPE;
    let flat = Extent::flat;
    for (s, &n) in EW_SIZES.iter().enumerate() {
        let mut rng = Rng::new(100 + s as u64);
        let a: Vec<T> = rand_vec(&mut rng, n, -3.0, 3.0);
        let b: Vec<T> = rand_vec(&mut rng, n, -3.0, 3.0);
        let (ca, cb) = (T::cpu(&a), T::cpu(&b));
        let mut y = vec![T::from_f64(0.0); n];

        for op in Binary::ALL {
            let p = elementwise::binary(op).plan(e, flat(n), &[]).unwrap();
            simt::run(&p, &mut [T::buf(&a), T::buf(&b), T::buf_mut(&mut y)]).unwrap();
            check_ew(&format!("{op:?} n={n}"), &y, &cpu_f64(ca.binary(&cb, op)));
        }

        let p = elementwise::AFFINE.plan(e, flat(n), &[0.5, -2.0]).unwrap();
        simt::run(&p, &mut [T::buf(&a), T::buf_mut(&mut y)]).unwrap();
        check_ew("affine", &y, &cpu_f64(ca.affine(0.5, -2.0)));

        let mut yy = b.clone();
        let p = elementwise::AXPY.plan(e, flat(n), &[-0.25]).unwrap();
        simt::run(&p, &mut [T::buf(&a), T::buf_mut(&mut yy)]).unwrap();
        let mut want = cb.clone();
        want.axpy(-0.25, &ca).unwrap();
        check_ew("axpy", &yy, &want.to_f64_vec());

        let mut a0 = a.clone();
        a0[0] = T::from_f64(0.0);
        a0[n / 2] = T::from_f64(f64::NAN);
        let ca0 = T::cpu(&a0);
        let p = elementwise::SIGN.plan(e, flat(n), &[]).unwrap();
        simt::run(&p, &mut [T::buf(&a0), T::buf_mut(&mut y)]).unwrap();
        check_ew("sign", &y, &cpu_f64(ca0.sign()));

        let p = elementwise::CLAMP.plan(e, flat(n), &[-1.0, 0.5]).unwrap();
        simt::run(&p, &mut [T::buf(&a0), T::buf_mut(&mut y)]).unwrap();
        check_ew("clamp", &y, &cpu_f64(ca0.clamp(-1.0, 0.5)));

        // x0 in [0, 1], x a perturbation of it; the default [0, 1] box and
        // a tighter one that cuts into the ball.
        let x0: Vec<T> = rand_vec(&mut rng, n, 0.0, 1.0);
        let xa: Vec<T> = x0
            .iter()
            .map(|v| T::from_f64(v.to_f64() + rng.uniform(-0.3, 0.3)))
            .collect();
        let eps = 0.1;
        for (lo, hi) in [(0.0, 1.0), (0.2, 0.7)] {
            let p = elementwise::PROJECT_LINF
                .plan(e, flat(n), &[eps, lo, hi])
                .unwrap();
            simt::run(&p, &mut [T::buf(&xa), T::buf(&x0), T::buf_mut(&mut y)]).unwrap();
            let want = cpu_f64(T::cpu(&xa).project_linf(&T::cpu(&x0), eps, lo, hi));
            check_ew(&format!("project_linf [{lo}, {hi}]"), &y, &want);
            // Where the ball meets the box, y lies in both.
            for (v, c) in y.iter().zip(&x0) {
                let (v, c) = (v.to_f64(), c.to_f64());
                if c + eps >= lo && c - eps <= hi {
                    assert!((lo..=hi).contains(&v), "{v} outside [{lo}, {hi}]");
                    assert!(
                        (v - c).abs() <= eps * (1.0 + 1e-6),
                        "{v} outside {c} ± {eps}"
                    );
                }
            }
        }

        // The fused attack step, against the CPU's, from a gradient with
        // zeros and a NaN (sign 0 and NaN) and x a perturbation of x0.
        let mut g: Vec<T> = rand_vec(&mut rng, n, -1.0, 1.0);
        g[0] = T::from_f64(0.0);
        g[n / 2] = T::from_f64(if n > 1 { f64::NAN } else { 0.0 });
        for (lo, hi) in [(0.0, 1.0), (0.2, 0.7)] {
            let values = [0.025, eps, lo, hi];
            let p = elementwise::SIGN_STEP.plan(e, flat(n), &values).unwrap();
            simt::run(
                &p,
                &mut [T::buf(&xa), T::buf(&g), T::buf(&x0), T::buf_mut(&mut y)],
            )
            .unwrap();
            let want =
                cpu_f64(T::cpu(&xa).sign_step(&T::cpu(&g), &T::cpu(&x0), 0.025, eps, lo, hi));
            check_ew(&format!("sign_step [{lo}, {hi}] n={n}"), &y, &want);
        }

        let p = elementwise::FILL.plan(e, flat(n), &[-0.5]).unwrap();
        simt::run(&p, &mut [T::buf_mut(&mut y)]).unwrap();
        check_ew("fill", &y, &vec![-0.5; n]);

        let s = [T::from_f64(1.5)];
        let p = elementwise::FILL_SCALAR
            .plan(e, flat(n), &[1.0 / n as f64])
            .unwrap();
        simt::run(&p, &mut [T::buf(&s), T::buf_mut(&mut y)]).unwrap();
        let want = cpu_f64(T::cpu(&s).broadcast_scalar(n, 1.0 / n as f64));
        check_ew("fill_scalar", &y, &want);

        let p = elementwise::SCALE_SCALAR.plan(e, flat(n), &[2.0]).unwrap();
        simt::run(&p, &mut [T::buf(&a), T::buf(&s), T::buf_mut(&mut y)]).unwrap();
        let want: Vec<f64> = f64s(&a).iter().map(|x| x * 3.0).collect();
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
        let p = elementwise::ADD_ROW
            .plan(T::DTYPE, Extent::matrix(r, c), &[])
            .unwrap();
        simt::run(&p, &mut [T::buf(&x), T::buf(&b), T::buf_mut(&mut y)]).unwrap();
        let want = cpu_f64(T::cpu(&x).add_row(&T::cpu(&b), c));
        check_ew(&format!("add_row {r}x{c}"), &y, &want);

        // Bias and activation in one pass: f has a slope of at most 1, so
        // its error is the sum's plus its own rounding.
        for act in Activation::ALL {
            let p = activation::bias_act_kernel(act)
                .plan(T::DTYPE, Extent::matrix(r, c), &[])
                .unwrap();
            simt::run(&p, &mut [T::buf(&x), T::buf(&b), T::buf_mut(&mut y)]).unwrap();
            let want = cpu_f64(T::cpu(&x).bias_act(&T::cpu(&b), c, act));
            let terms: Vec<f64> = (0..r * c)
                .map(|i| x[i].to_f64().abs() + b[i % c].to_f64().abs() + want[i].abs())
                .collect();
            check(&format!("bias_{act} {r}x{c}"), &y, &want, &terms);
        }

        let mut out = vec![T::from_f64(0.0); c];
        let p = reduce::sum_rows(T::DTYPE, r, c).unwrap();
        simt::run(&p, &mut [T::buf(&x), T::buf_mut(&mut out)]).unwrap();
        let want = cpu_f64(T::cpu(&x).sum_rows(c));
        let scale: Vec<f64> = (0..c)
            .map(|j| (0..r).map(|i| x[i * c + j].to_f64().abs()).sum::<f64>())
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

fn activations_all<T: Real>() {
    for (s, &n) in EW_SIZES.iter().enumerate() {
        let mut rng = Rng::new(300 + s as u64);
        let mut x: Vec<T> = rand_vec(&mut rng, n, -6.0, 6.0);
        if n > 2 {
            x[1] = T::from_f64(f64::NAN);
            x[2] = T::from_f64(-0.0);
        }
        let g: Vec<T> = rand_vec(&mut rng, n, -1.0, 1.0);
        let (cx, cg) = (T::cpu(&x), T::cpu(&g));
        for act in Activation::ALL {
            let mut y = vec![T::from_f64(0.0); n];
            let p = activation::forward_kernel(act)
                .plan(T::DTYPE, Extent::flat(n), &[])
                .unwrap();
            simt::run(&p, &mut [T::buf(&x), T::buf_mut(&mut y)]).unwrap();
            let want = cx.activation(act).unwrap();
            check_ew(&format!("{act:?} fwd n={n}"), &y, &want.to_f64_vec());
            if act == Activation::Relu && n > 2 {
                // relu(−0) = +0, as on the CPU.
                assert_eq!(y[2].to_f64().to_bits(), 0.0f64.to_bits());
            }

            // Backward from what forward saved: the input for ReLU, the
            // output otherwise (the CPU's, so both sides see the same y).
            let (saved, csaved) = if act == Activation::Relu {
                (x.clone(), cx.clone())
            } else {
                let v: Vec<T> = want.to_f64_vec().iter().map(|&v| T::from_f64(v)).collect();
                (v.clone(), T::cpu(&v))
            };
            let mut dx = vec![T::from_f64(0.0); n];
            let p = activation::backward_kernel(act)
                .plan(T::DTYPE, Extent::flat(n), &[])
                .unwrap();
            simt::run(&p, &mut [T::buf(&saved), T::buf(&g), T::buf_mut(&mut dx)]).unwrap();
            let want = cpu_f64(cg.activation_backward(&csaved, act));
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

/// Rows that fit in registers (1 to 32 lanes each, up to 4 or, in the wide
/// forward, 16 values per lane) and rows that take the online softmax
/// (more than 512 classes).
const SOFTMAX_SIZES: &[(usize, usize)] = &[
    (37, 29),
    (1, 1),
    (130, 257),
    (9, 10),
    (3, 70),
    (6, 128),
    (5, 129),
    (5, 512),
    (4, 513),
    (3, 1500),
];

fn softmax_xent_all<T: Real>() {
    for (s, &(r, c)) in SOFTMAX_SIZES.iter().enumerate() {
        let mut rng = Rng::new(400 + s as u64);
        let x: Vec<T> = rand_vec(&mut rng, r * c, -8.0, 8.0);
        let labels: Vec<u32> = (0..r).map(|_| rng.below(c as u32)).collect();
        let cl = CpuStorage::U32(labels.clone());
        let (cpu_loss, cpu_probs) = T::cpu(&x).softmax_xent(&cl, c).unwrap();
        let mut loss = vec![T::from_f64(0.0); r];
        let mut probs = vec![T::from_f64(0.0); r * c];
        let p = softmax_xent::forward(T::DTYPE, r, c).unwrap();
        simt::run(
            &p,
            &mut [
                T::buf(&x),
                Buf::U32(&labels),
                T::buf_mut(&mut loss),
                T::buf_mut(&mut probs),
            ],
        )
        .unwrap();
        check_ew(
            &format!("softmax_xent probs {r}x{c}"),
            &probs,
            &cpu_probs.to_f64_vec(),
        );
        // Per-row losses (no CPU counterpart): an f64 reference.
        let xf = f64s(&x);
        let want_rows: Vec<f64> = (0..r)
            .map(|i| {
                let row = &xf[i * c..(i + 1) * c];
                let mx = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                mx + row.iter().map(|v| (v - mx).exp()).sum::<f64>().ln() - row[labels[i] as usize]
            })
            .collect();
        check_ew(
            &format!("softmax_xent row losses {r}x{c}"),
            &loss,
            &want_rows,
        );

        // The mean through the two-pass reduction, against the CPU's loss.
        let [p1, p2] = reduce::sum(T::DTYPE, r, true).unwrap();
        let mut partials = vec![T::from_f64(0.0); reduce::partials(r) as usize];
        let mut mean = [T::from_f64(0.0)];
        simt::run(&p1, &mut [T::buf(&loss), T::buf_mut(&mut partials)]).unwrap();
        simt::run(&p2, &mut [T::buf(&partials), T::buf_mut(&mut mean)]).unwrap();
        // Each row's loss is itself a difference (log-sum-exp − the label's
        // logit): its terms are those two.
        let terms = (0..r)
            .map(|i| {
                let picked = xf[i * c + labels[i] as usize];
                (want_rows[i] + picked).abs() + picked.abs()
            })
            .sum::<f64>()
            / r as f64;
        check("mean loss", &mean, &cpu_loss.to_f64_vec(), &[terms]);

        // Backward from the CPU's probabilities, so only the kernel differs.
        let pin: Vec<T> = cpu_probs
            .to_f64_vec()
            .iter()
            .map(|&v| T::from_f64(v))
            .collect();
        let g = [T::from_f64(0.75)];
        let mut dl = vec![T::from_f64(0.0); r * c];
        let p = softmax_xent::BACKWARD
            .plan(T::DTYPE, Extent::matrix(r, c), &[])
            .unwrap();
        simt::run(
            &p,
            &mut [
                T::buf(&pin),
                Buf::U32(&labels),
                T::buf(&g),
                T::buf_mut(&mut dl),
            ],
        )
        .unwrap();
        let want = cpu_f64(T::cpu(&pin).softmax_xent_backward(&cl, &T::cpu(&g), c));
        let terms = softmax_backward_terms(&f64s(&pin), &labels, 0.75 / r as f64);
        check(&format!("softmax_xent bwd {r}x{c}"), &dl, &want, &terms);
    }
}

/// The terms of the softmax cross-entropy backward `p·gs − [c = label]·gs`
/// per element: `|p·gs|`, plus `|gs|` in each row's label column.
fn softmax_backward_terms(p: &[f64], labels: &[u32], gs: f64) -> Vec<f64> {
    let cols = p.len() / labels.len().max(1);
    p.iter()
        .enumerate()
        .map(|(i, v)| {
            (v * gs).abs()
                + if labels[i / cols] as usize == i % cols {
                    gs.abs()
                } else {
                    0.0
                }
        })
        .collect()
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
    let p = softmax_xent::forward(DType::F32, 2, 3).unwrap();
    simt::run(
        &p,
        &mut [
            Buf::F32(&x),
            Buf::U32(&labels),
            Buf::F32Mut(&mut loss),
            Buf::F32Mut(&mut probs),
        ],
    )
    .unwrap();
    assert!(loss[0].is_nan() && probs[..3].iter().all(|v| v.is_nan()));
    // The CUDA backend rejects such labels before launching (as the CPU
    // does); the kernel itself still never reads out of bounds.
    assert!(loss[1].is_nan(), "label 7 of 3 classes gives NaN");
    assert!(probs[3..].iter().all(|v| v.is_finite()));
    // NaN rows agree with the CPU.
    let (_, cpu) = CpuStorage::F32(x[..3].to_vec())
        .softmax_xent(&CpuStorage::U32(vec![0]), 3)
        .unwrap();
    assert!(cpu.to_f64_vec().iter().all(|v| v.is_nan()));
}

/// Rows with a NaN, with infinities, and all −∞, held in registers (7 and
/// 300 classes) and through the online softmax (600): the probabilities of
/// the CPU, NaN where it gives NaN.
#[test]
fn softmax_xent_non_finite_rows_match_the_cpu() {
    for cols in [7usize, 300, 600] {
        let mut rng = Rng::new(450 + cols as u64);
        let mut x: Vec<f32> = rand_vec(&mut rng, 5 * cols, -4.0, 4.0);
        x[cols / 2] = f32::NAN;
        x[cols + cols / 3] = f32::NEG_INFINITY;
        x[2 * cols + 1] = f32::INFINITY;
        x[3 * cols..4 * cols].fill(f32::NEG_INFINITY);
        let labels = vec![0u32; 5];
        let (_, want) = CpuStorage::F32(x.clone())
            .softmax_xent(&CpuStorage::U32(labels.clone()), cols)
            .unwrap();
        let mut loss = vec![0f32; 5];
        let mut probs = vec![0f32; 5 * cols];
        let p = softmax_xent::forward(DType::F32, 5, cols).unwrap();
        simt::run(
            &p,
            &mut [
                Buf::F32(&x),
                Buf::U32(&labels),
                Buf::F32Mut(&mut loss),
                Buf::F32Mut(&mut probs),
            ],
        )
        .unwrap();
        check_ew(
            &format!("non-finite rows of {cols}"),
            &probs,
            &want.to_f64_vec(),
        );
        let nan_rows: Vec<bool> = loss.iter().map(|l| l.is_nan()).collect();
        assert_eq!(
            nan_rows,
            [true, false, true, true, false],
            "{cols}: {loss:?}"
        );
    }
}

// ------------------------------------------------------------ reductions

fn reductions_all<T: Real>() {
    for (s, &n) in [1usize, 37, 1073, 4097, 70_001].iter().enumerate() {
        let mut rng = Rng::new(500 + s as u64);
        let x: Vec<T> = rand_vec(&mut rng, n, -1.0, 1.0);
        let abs: f64 = f64s(&x).iter().map(|v| v.abs()).sum();
        let cpu_sum = cpu_f64(T::cpu(&x).sum_all())[0];
        for mean in [false, true] {
            let [p1, p2] = reduce::sum(T::DTYPE, n, mean).unwrap();
            let mut partials = vec![T::from_f64(0.0); reduce::partials(n) as usize];
            let mut out = [T::from_f64(0.0)];
            simt::run(&p1, &mut [T::buf(&x), T::buf_mut(&mut partials)]).unwrap();
            simt::run(&p2, &mut [T::buf(&partials), T::buf_mut(&mut out)]).unwrap();
            let d = if mean { n as f64 } else { 1.0 };
            check(
                &format!("sum n={n} mean={mean}"),
                &out,
                &[cpu_sum / d],
                &[abs / d],
            );
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
        let mut x: Vec<T> = (0..r * c)
            .map(|_| T::from_f64(rng.below(5) as f64))
            .collect();
        if r > 2 && c > 3 {
            x[c + 3] = T::from_f64(f64::NAN);
            x[2 * c + 1] = T::from_f64(f64::NAN);
            x[2 * c + 2] = T::from_f64(f64::NAN);
        }
        let mut out = vec![0u32; r];
        let p = reduce::argmax_rows(T::DTYPE, r, c).unwrap();
        simt::run(&p, &mut [T::buf(&x), Buf::U32Mut(&mut out)]).unwrap();
        let want = T::cpu(&x).argmax_rows(c).unwrap();
        assert_eq!(
            CpuStorage::U32(out),
            want,
            "argmax of {r}x{c} (first on ties, first NaN wins)"
        );
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
    let empty = T::cpu(&[]);

    // Plain SGD: the CPU backend gets empty state buffers.
    let rule = UpdateRule::Sgd {
        lr: 0.1,
        momentum: 0.0,
        nesterov: false,
        weight_decay: 0.01,
    };
    let mut w = w0.clone();
    let p = optim::SGD
        .plan(T::DTYPE, Extent::flat(n), &[0.1, 0.01])
        .unwrap();
    simt::run(&p, &mut [T::buf_mut(&mut w), T::buf(&g)]).unwrap();
    let mut cw = T::cpu(&w0);
    cw.update(&T::cpu(&g), &mut empty.clone(), &mut empty.clone(), rule)
        .unwrap();
    check_ew("sgd", &w, &cw.to_f64_vec());

    for nesterov in [false, true] {
        let rule = UpdateRule::Sgd {
            lr: 0.1,
            momentum: 0.9,
            nesterov,
            weight_decay: 0.01,
        };
        let (mut w, mut v) = (w0.clone(), v0.clone());
        let flag = if nesterov { 1.0 } else { 0.0 };
        let p = optim::SGD_MOMENTUM
            .plan(T::DTYPE, Extent::flat(n), &[0.1, 0.9, 0.01, flag])
            .unwrap();
        simt::run(
            &p,
            &mut [T::buf_mut(&mut w), T::buf(&g), T::buf_mut(&mut v)],
        )
        .unwrap();
        let (mut cw, mut cv) = (T::cpu(&w0), T::cpu(&v0));
        cw.update(&T::cpu(&g), &mut cv, &mut empty.clone(), rule)
            .unwrap();
        check_ew("sgd_momentum w", &w, &cw.to_f64_vec());
        check_ew("sgd_momentum v", &v, &cv.to_f64_vec());
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
        let p = optim::adam(T::DTYPE, n, step).unwrap();
        simt::run(
            &p,
            &mut [
                T::buf_mut(&mut w),
                T::buf(&g),
                T::buf_mut(&mut m),
                T::buf_mut(&mut v),
            ],
        )
        .unwrap();
        let (want_w, want_m, want_v) = if decoupled {
            adamw_reference::<T>(&w0, &g, &m0, &s0, step)
        } else {
            let rule = UpdateRule::Adam {
                lr: step.lr,
                beta1: step.beta1,
                beta2: step.beta2,
                eps: step.eps,
                weight_decay: step.weight_decay,
                t: step.step,
            };
            let (mut cw, mut cm, mut cv) = (T::cpu(&w0), T::cpu(&m0), T::cpu(&s0));
            cw.update(&T::cpu(&g), &mut cm, &mut cv, rule).unwrap();
            (cw.to_f64_vec(), cm.to_f64_vec(), cv.to_f64_vec())
        };
        check_ew(&format!("adam m decoupled={decoupled}"), &m, &want_m);
        check_ew(&format!("adam v decoupled={decoupled}"), &v, &want_v);
        check_ew(&format!("adam w decoupled={decoupled}"), &w, &want_w);
    }
}

/// AdamW (decoupled decay; no CPU counterpart), in f64 with the
/// hyper-parameters rounded to T as the kernel sees them.
fn adamw_reference<T: Real>(
    w0: &[T],
    g: &[T],
    m0: &[T],
    v0: &[T],
    s: AdamStep,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let r = |v: f64| T::from_f64(v).to_f64();
    let t = s.step as i32;
    let (lr, b1, b2, eps, wd) = (r(s.lr), r(s.beta1), r(s.beta2), r(s.eps), r(s.weight_decay));
    let step = r(s.lr / (1.0 - s.beta1.powi(t)));
    let inv_bc2 = r(1.0 / (1.0 - s.beta2.powi(t)));
    let (mut w, mut m, mut v) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..w0.len() {
        let wi = w0[i].to_f64() - lr * wd * w0[i].to_f64();
        let gi = g[i].to_f64();
        let mi = b1 * m0[i].to_f64() + (1.0 - b1) * gi;
        let vi = b2 * v0[i].to_f64() + (1.0 - b2) * gi * gi;
        w.push(wi - step * mi / ((vi * inv_bc2).sqrt() + eps));
        m.push(mi);
        v.push(vi);
    }
    (w, m, v)
}

#[test]
fn optimisers_f32() {
    optim_all::<f32>();
}

#[test]
fn optimisers_f64() {
    optim_all::<f64>();
}
