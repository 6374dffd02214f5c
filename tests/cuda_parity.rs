//! The CUDA backend against the CPU backend, on every device that runs it.
//!
//! Every op of `BackendStorage`, forward and backward, on odd and on the
//! MLP's and the small CNN's real sizes (including the shapes that take the
//! matmul's float4 paths) in f32 and f64, run on the CUDA backend and on the
//! CPU from the same inputs; then a whole training step (forward, backward,
//! optimiser update) of the MLP and of the CNN, and PGD, each staying on the
//! device; and gradcheck (finite differences) of a layer, of convolution and
//! pooling and of a small CNN in f64 on the device.
//!
//! Devices: `emu` (unless `ADVGRAD_PARITY_EMU=0`, which the GPU bundle sets)
//! — the real CUDA backend (`CudaStorage`, its ops, the
//! launch plans and checks, copy-on-write, label bounds) with the SIMT
//! emulator as launcher, so every test runs in plain `cargo test` (the
//! tests enable the `emu` feature themselves). With `--features cuda` and a
//! GPU, also `cuda:0`. Without a GPU the `cuda:0` part says why it is
//! skipped; `ADVGRAD_REQUIRE_GPU=1` turns that into a failure, and a GPU
//! that is present but cannot load the kernels always fails.
//!
//! Error measure: `tests/support`'s per-element tolerance
//! `|dev − cpu| ≤ tol·max(scale, floor)`, with tol 1e-5 (f32) / 1e-12 (f64)
//! for single ops and 1e-4 / 1e-10 for composite steps, floors 1e-6 /
//! 1e-12, and the scale |cpu| for elementwise results and the sum of |terms|
//! for sums, products and differences (each check says which).

mod support;

use advgrad::attack::{Attack, AttackOptions};
use advgrad::backend::cpu::CpuStorage;
use advgrad::backend::cuda;
use advgrad::backend::{
    Activation, BackendStorage, Binary, Conv2dDims, MatmulDims, PoolDims, Storage, UpdateRule,
};
use advgrad::nn::Model;
use advgrad::optim::{OptimConfig, Optimizer, OptimizerKind};
use advgrad::{DType, Device, Tape, Tensor};
use support::{assert_close, compare, parity_devices as devices, Rng, Scale, Tolerance};

/// `Σ_p |a[i,p]·b[p,j]|` for every element of the product `d` of the
/// row-major values `av` and `bv` (each transposed as `d` says): the scale
/// of a product's rounding error.
fn product_terms(av: &[f64], bv: &[f64], d: MatmulDims) -> Vec<f64> {
    let MatmulDims {
        m,
        n,
        k,
        a_trans,
        b_trans,
    } = d;
    let at = |i: usize, p: usize| {
        if a_trans {
            av[p * m + i]
        } else {
            av[i * k + p]
        }
    };
    let bt = |p: usize, j: usize| {
        if b_trans {
            bv[j * k + p]
        } else {
            bv[p * n + j]
        }
    };
    (0..m * n)
        .map(|ij| (0..k).map(|p| (at(ij / n, p) * bt(p, ij % n)).abs()).sum())
        .collect()
}

/// The same values on the CPU and on a device.
struct Pair {
    cpu: Storage,
    dev: Storage,
}

fn pair(values: &[f64], dtype: DType, device: Device) -> Pair {
    let cpu = Storage::Cpu(CpuStorage::from_f64_slice(values, dtype));
    let dev = cpu.to_device(device).expect("upload");
    assert_eq!(dev.device(), device);
    Pair { cpu, dev }
}

fn labels_pair(labels: &[u32], device: Device) -> Pair {
    let cpu = Storage::Cpu(CpuStorage::U32(labels.to_vec()));
    let dev = cpu.to_device(device).expect("upload");
    Pair { cpu, dev }
}

fn host(s: &Storage) -> Vec<f64> {
    s.to_cpu().expect("download").to_f64_vec()
}

/// Compares a device result (which must still be on its device) with the
/// CPU's.
#[track_caller]
fn check(what: &str, dev: &Storage, cpu: &Storage, scale: Scale<'_>, t: Tolerance) {
    assert_ne!(dev.device(), Device::Cpu, "{what}: result left the device");
    assert_eq!(dev.dtype(), cpu.dtype(), "{what}: dtype");
    let what = format!("{what} on {}", dev.device());
    assert_close(&what, &host(dev), &host(cpu), scale, t);
}

/// [`check`] of a single kernel's elementwise result.
#[track_caller]
fn check_op(what: &str, dev: &Storage, cpu: &Storage) {
    check(what, dev, cpu, Scale::Value, Tolerance::kernel(cpu.dtype()));
}

#[track_caller]
fn exact(what: &str, dev: &Storage, cpu: &Storage) {
    assert_ne!(dev.device(), Device::Cpu, "{what}: result left the device");
    assert_eq!(dev.to_cpu().unwrap(), cpu.to_cpu().unwrap(), "{what}");
}

const DTYPES: [DType; 2] = [DType::F32, DType::F64];

#[test]
fn the_tolerance_catches_a_45_percent_error_at_2e_5() {
    // A softmax-backward output near 2e-5, 45 % wrong: the old measure
    // (scale max(|cpu|, 1)) let it pass; a per-element relative one fails it.
    let (want, got) = (2.0e-5, 2.0e-5 * 1.45);
    let t = Tolerance::kernel(DType::F32);
    let e = compare("xent backward", &[got], &[want], Scale::Value, t).unwrap_err();
    assert!(e.contains("xent backward[0]"), "{e}");
    let terms = [want];
    assert!(compare("xent backward", &[got], &[want], Scale::Terms(&terms), t).is_err());
    assert!(
        (got - want) / want.abs().max(1.0) <= t.tol,
        "the old measure passed it"
    );
    // A few ulps pass, at that size and below the floor.
    let near = want * (1.0 + 4.0 * f32::EPSILON as f64);
    assert!(compare("ok", &[near], &[want], Scale::Value, t).is_ok());
    assert!(compare("tiny", &[1e-12], &[0.0], Scale::Value, t).is_ok());
    assert!(compare("tiny", &[1e-10], &[0.0], Scale::Value, t).is_err());
    // NaN matches only NaN.
    assert!(compare("nan", &[f64::NAN], &[f64::NAN], Scale::Value, t).is_ok());
    assert!(compare("nan", &[0.0], &[f64::NAN], Scale::Value, t).is_err());
}

/// Matrix products: every layout on odd sizes, the shapes that take the
/// float4 loads (B not transposed with N % 4 = 0, A transposed with
/// M % 4 = 0, K % 4 = 0 for the others) with odd edges, empty ones, and the
/// MLP's real layer 784 → 256 at batch 128, forward and weight gradient.
#[test]
fn matmul_all_layouts() {
    const LAYOUTS: [(bool, bool); 4] = [(false, false), (true, false), (false, true), (true, true)];
    let mut cases: Vec<(usize, usize, usize, bool, bool, DType)> = Vec::new();
    for dtype in DTYPES {
        for (m, n, k) in [
            (37, 29, 41),
            (1, 1, 1),
            (130, 257, 65),
            (5, 3, 0),
            (0, 4, 3),
            (33, 1, 100),
            (68, 36, 44),
            (72, 68, 37),
        ] {
            for (ta, tb) in LAYOUTS {
                cases.push((m, n, k, ta, tb, dtype));
            }
        }
    }
    // The MLP's first layer: x·Wᵀ forward, and dW = dZᵀ·x backward.
    cases.push((128, 256, 784, false, true, DType::F32));
    cases.push((256, 784, 128, true, false, DType::F32));
    for device in devices("matmul_all_layouts") {
        for (s, &(m, n, k, a_trans, b_trans, dtype)) in cases.iter().enumerate() {
            let mut rng = Rng::new(10 + s as u64);
            let (av, bv) = (rng.vec(m * k, -1.0, 1.0), rng.vec(k * n, -1.0, 1.0));
            let (a, b) = (pair(&av, dtype, device), pair(&bv, dtype, device));
            let d = MatmulDims {
                m,
                n,
                k,
                a_trans,
                b_trans,
            };
            let terms = product_terms(&av, &bv, d);
            check(
                &format!("{dtype} matmul {m}x{n}x{k} ta={a_trans} tb={b_trans}"),
                &a.dev.matmul(&b.dev, d).unwrap(),
                &a.cpu.matmul(&b.cpu, d).unwrap(),
                Scale::Terms(&terms),
                Tolerance::kernel(dtype),
            );
        }
    }
}

/// A linear layer's `f(op(A)·op(B) + bias)` as one product with the bias
/// and activation in its epilogue (after the split-K reduction where the
/// plan splits), against the CPU's fused layer: odd sizes in every layout,
/// sizes that take the 16-byte paths, and the MLP's layers at batch 128
/// (784 → 256 is split in depth ranges on the emulated H100).
#[test]
fn linear_act_fused() {
    const LAYOUTS: [(bool, bool); 4] = [(false, false), (true, false), (false, true), (true, true)];
    let mut cases: Vec<(usize, usize, usize, bool, bool, DType)> = Vec::new();
    for dtype in DTYPES {
        for (m, n, k) in [(37, 29, 41), (68, 36, 44), (1, 1, 1), (5, 3, 0)] {
            for (ta, tb) in LAYOUTS {
                cases.push((m, n, k, ta, tb, dtype));
            }
        }
        cases.push((13, 10, 29, false, true, dtype));
    }
    for (m, n, k) in [(128, 256, 784), (128, 256, 256), (128, 10, 256)] {
        cases.push((m, n, k, false, true, DType::F32));
    }
    for device in devices("linear_act_fused") {
        for (s, &(m, n, k, a_trans, b_trans, dtype)) in cases.iter().enumerate() {
            let mut rng = Rng::new(80 + s as u64);
            let (av, bv) = (rng.vec(m * k, -1.0, 1.0), rng.vec(k * n, -1.0, 1.0));
            let biasv = rng.vec(n, -1.0, 1.0);
            let (a, b) = (pair(&av, dtype, device), pair(&bv, dtype, device));
            let bias = pair(&biasv, dtype, device);
            let d = MatmulDims {
                m,
                n,
                k,
                a_trans,
                b_trans,
            };
            let product = product_terms(&av, &bv, d);
            for act in Activation::ALL {
                let want = a.cpu.matmul_bias_act(&b.cpu, d, &bias.cpu, act).unwrap();
                // The product's terms, the bias, and f's own rounding (its
                // slope is at most 1).
                let terms: Vec<f64> = host(&want)
                    .iter()
                    .enumerate()
                    .map(|(ij, y)| product[ij] + biasv[ij % n].abs() + y.abs())
                    .collect();
                check(
                    &format!("{dtype} linear_act {act} {m}x{n}x{k} ta={a_trans} tb={b_trans}"),
                    &a.dev.matmul_bias_act(&b.dev, d, &bias.dev, act).unwrap(),
                    &want,
                    Scale::Terms(&terms),
                    Tolerance::kernel(dtype),
                );
            }
        }
        // A bias of the wrong length is the CPU's error.
        let x = pair(&[1.0; 6], DType::F32, device);
        let w = pair(&[1.0; 6], DType::F32, device);
        let short = pair(&[1.0; 2], DType::F32, device);
        let d = MatmulDims {
            m: 2,
            n: 3,
            k: 2,
            a_trans: false,
            b_trans: true,
        };
        let relu = Activation::Relu;
        let ed = x
            .dev
            .matmul_bias_act(&w.dev, d, &short.dev, relu)
            .unwrap_err();
        let ec = x
            .cpu
            .matmul_bias_act(&w.cpu, d, &short.cpu, relu)
            .unwrap_err();
        assert_eq!(ed.to_string(), ec.to_string());
    }
}

/// The attacks' step `Π(x + α·sign g)` as one kernel, against the CPU's:
/// zeros and a NaN in the gradient, the [0, 1] box and one that cuts into
/// the ball, odd sizes and a Fashion-MNIST batch.
#[test]
fn sign_step_fused() {
    for device in devices("sign_step_fused") {
        for dtype in DTYPES {
            for (s, &n) in [1usize, 1073, 128 * 784].iter().enumerate() {
                let mut rng = Rng::new(90 + s as u64);
                let x0v = rng.vec(n, 0.0, 1.0);
                let xv: Vec<f64> = x0v.iter().map(|v| v + rng.uniform(-0.1, 0.1)).collect();
                let mut gv = rng.vec(n, -1.0, 1.0);
                gv[0] = 0.0;
                if n > 2 {
                    gv[n / 2] = f64::NAN;
                }
                let (x, g, x0) = (
                    pair(&xv, dtype, device),
                    pair(&gv, dtype, device),
                    pair(&x0v, dtype, device),
                );
                for (lo, hi) in [(0.0, 1.0), (0.2, 0.7)] {
                    check_op(
                        &format!("{dtype} sign_step [{lo}, {hi}] n={n}"),
                        &x.dev
                            .sign_step(&g.dev, &x0.dev, 0.01, 0.03, lo, hi)
                            .unwrap(),
                        &x.cpu
                            .sign_step(&g.cpu, &x0.cpu, 0.01, 0.03, lo, hi)
                            .unwrap(),
                    );
                }
            }
        }
    }
}

/// How an activation's backward result is measured. Tanh's `g·(1 − y²)`
/// cancels as |y| nears 1, and a GPU that contracts `1 − y·y` into one
/// fused multiply-add rounds once where the CPU rounds twice, so the two
/// differ by an ulp of `|g|·(1 + y²)`, not of the result (seen on an H200:
/// 2.2763000e-5 against 2.2764261e-5): four roundings of those terms.
/// Sigmoid's `g·y·(1 − y)` subtracts only exact values (`1 − y` is exact
/// for y ≥ ½) and ReLU none: they keep the per-value measure.
fn backward_measure(
    act: Activation,
    g: &[f64],
    y: &[f64],
    dtype: DType,
) -> (Option<Vec<f64>>, Tolerance) {
    match act {
        Activation::Tanh => (
            Some(
                g.iter()
                    .zip(y)
                    .map(|(g, y)| g.abs() * (1.0 + y * y))
                    .collect(),
            ),
            Tolerance::roundings(dtype, 4.0),
        ),
        Activation::Relu | Activation::Sigmoid => (None, Tolerance::kernel(dtype)),
    }
}

#[test]
fn elementwise_and_activations() {
    for device in devices("elementwise_and_activations") {
        for dtype in DTYPES {
            for (s, &n) in [1usize, 1073, 70_001].iter().enumerate() {
                let mut rng = Rng::new(20 + s as u64);
                let mut xv = rng.vec(n, -6.0, 6.0);
                if n > 3 {
                    xv[1] = f64::NAN;
                    xv[2] = 0.0;
                    xv[3] = -0.0;
                }
                let x = pair(&xv, dtype, device);
                let y = pair(&rng.vec(n, -3.0, 3.0), dtype, device);
                let g = pair(&rng.vec(n, -1.0, 1.0), dtype, device);
                for act in Activation::ALL {
                    let (fd, fc) = (
                        x.dev.activation(act).unwrap(),
                        x.cpu.activation(act).unwrap(),
                    );
                    check_op(&format!("{dtype} {act} n={n}"), &fd, &fc);
                    // Backward reads the input (ReLU) or the output (others);
                    // both sides get the CPU's saved value so only the kernel
                    // differs.
                    let saved = if act.saves_input() { x.cpu.clone() } else { fc };
                    let saved_dev = saved.to_device(device).unwrap();
                    let (terms, tol) = backward_measure(act, &host(&g.cpu), &host(&saved), dtype);
                    check(
                        &format!("{dtype} {act} backward n={n}"),
                        &g.dev.activation_backward(&saved_dev, act).unwrap(),
                        &g.cpu.activation_backward(&saved, act).unwrap(),
                        terms.as_deref().map_or(Scale::Value, Scale::Terms),
                        tol,
                    );
                }
                check_op(
                    &format!("{dtype} sign n={n}"),
                    &x.dev.sign().unwrap(),
                    &x.cpu.sign().unwrap(),
                );
                // Whatever x holds (a NaN among it): every element 1.5, in
                // x's type; the half types too (filled on the host).
                let want = x.cpu.full_like(1.5).unwrap();
                assert!(host(&want).iter().all(|&v| v == 1.5));
                exact(
                    &format!("{dtype} full_like n={n}"),
                    &x.dev.full_like(1.5).unwrap(),
                    &want,
                );
                for half in [DType::BF16, DType::F16] {
                    let h = pair(&xv, half, device);
                    exact(
                        &format!("{half} full_like n={n}"),
                        &h.dev.full_like(1.5).unwrap(),
                        &h.cpu.full_like(1.5).unwrap(),
                    );
                }
                for op in Binary::ALL {
                    check_op(
                        &format!("{dtype} {op:?} n={n}"),
                        &x.dev.binary(&y.dev, op).unwrap(),
                        &x.cpu.binary(&y.cpu, op).unwrap(),
                    );
                }
                for (mul, add) in [(0.5f64, -2.0f64), (-1.5, 0.0)] {
                    // A product plus a constant: its terms are both.
                    let terms: Vec<f64> = host(&y.cpu)
                        .iter()
                        .map(|v| (v * mul).abs() + add.abs())
                        .collect();
                    check(
                        &format!("{dtype} affine({mul}, {add}) n={n}"),
                        &y.dev.affine(mul, add).unwrap(),
                        &y.cpu.affine(mul, add).unwrap(),
                        Scale::Terms(&terms),
                        Tolerance::kernel(dtype),
                    );
                }
                check_op(
                    &format!("{dtype} clamp n={n}"),
                    &x.dev.clamp(-1.0, 0.5).unwrap(),
                    &x.cpu.clamp(-1.0, 0.5).unwrap(),
                );
                let c = pair(&rng.vec(n, 0.0, 1.0), dtype, device);
                for (lo, hi) in [(0.0, 1.0), (0.2, 0.7)] {
                    check_op(
                        &format!("{dtype} project_linf [{lo}, {hi}] n={n}"),
                        &y.dev.project_linf(&c.dev, 0.1, lo, hi).unwrap(),
                        &y.cpu.project_linf(&c.cpu, 0.1, lo, hi).unwrap(),
                    );
                }
                let (mut ad, mut ac) = (y.dev.clone(), y.cpu.clone());
                ad.axpy(-0.25, &g.dev).unwrap();
                ac.axpy(-0.25, &g.cpu).unwrap();
                let terms: Vec<f64> = host(&y.cpu)
                    .iter()
                    .zip(host(&g.cpu))
                    .map(|(y, g)| y.abs() + (0.25 * g).abs())
                    .collect();
                let t = Tolerance::kernel(dtype);
                check(
                    &format!("{dtype} axpy n={n}"),
                    &ad,
                    &ac,
                    Scale::Terms(&terms),
                    t,
                );
                // In place on a clone: the original is unchanged (copy-on-write).
                exact(&format!("{dtype} axpy source"), &y.dev, &y.cpu);
            }
        }
    }
}

/// GELU (`kernels/gelu.cu`) forward and backward through the backend, on
/// odd sizes and on the MLP's hidden activations at the training and the
/// attack batch (128×256, 1000×256), with ±0, ±∞, NaN and tails where
/// `tanh` rounds to ±1. The scale of each element is the sum of its terms,
/// `½|x|·(1 + |t|)` forward and
/// `|g|·(½(1 + |t|) + ½|x|(1 + t²)·k·(1 + 3a·x²))` backward
/// (`t = tanh(k·(x + a·x³))`): `1 + t` and `1 − t²` cancel in the tails,
/// where a result carries the rounding of its terms (CUDA's `tanhf` is
/// not libm's).
#[test]
fn gelu_forward_and_backward() {
    use kernels::gelu::{A, K};
    const SPECIALS: [f64; 9] = [
        0.0,
        -0.0,
        1e-30,
        40.0,
        -40.0,
        -9.5,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NAN,
    ];
    for device in devices("gelu_forward_and_backward") {
        for dtype in DTYPES {
            for (s, &(r, c)) in [
                (1, 1),
                (1, 7),
                (37, 29),
                (3, 70_001),
                (128, 256),
                (1000, 256),
            ]
            .iter()
            .enumerate()
            {
                let n = r * c;
                let mut rng = Rng::new(300 + s as u64);
                let mut xv = rng.vec(n, -8.0, 8.0);
                let specials = SPECIALS.len().min(n);
                xv[..specials].copy_from_slice(&SPECIALS[..specials]);
                let x = pair(&xv, dtype, device);
                let g = pair(&rng.vec(n, -2.0, 2.0), dtype, device);
                let (xh, gh) = (host(&x.cpu), host(&g.cpu));
                let t_of = |v: f64| (K * (v + A * v * v * v)).tanh();
                let terms: Vec<f64> = xh
                    .iter()
                    .map(|&v| 0.5 * v.abs() * (1.0 + t_of(v).abs()))
                    .collect();
                let terms_dx: Vec<f64> = xh
                    .iter()
                    .zip(&gh)
                    .map(|(&v, &g)| {
                        let t = t_of(v);
                        let inner = 0.5 * v.abs() * (1.0 + t * t) * K * (1.0 + 3.0 * A * v * v);
                        g.abs()
                            * (0.5 * (1.0 + t.abs()) + if inner.is_finite() { inner } else { 0.0 })
                    })
                    .collect();
                let t = Tolerance::kernel(dtype);
                check(
                    &format!("{dtype} gelu {r}x{c}"),
                    &x.dev.gelu().unwrap(),
                    &x.cpu.gelu().unwrap(),
                    Scale::Terms(&terms),
                    t,
                );
                check(
                    &format!("{dtype} gelu backward {r}x{c}"),
                    &g.dev.gelu_backward(&x.dev).unwrap(),
                    &g.cpu.gelu_backward(&x.cpu).unwrap(),
                    Scale::Terms(&terms_dx),
                    t,
                );
            }
            // The saved input must match the gradient's length and type.
            let (g, x) = (
                pair(&[1.0; 5], dtype, device),
                pair(&[1.0; 4], dtype, device),
            );
            let e = g.dev.gelu_backward(&x.dev).unwrap_err().to_string();
            assert!(e.contains("gelu_backward"), "{e}");
        }
        // The tape's rule on the device against finite differences, in f64.
        let case = advgrad::gradcheck::suite::case("gelu")
            .unwrap()
            .expect("a built-in case");
        let report = case
            .to_device(device)
            .unwrap()
            .run(&advgrad::GradcheckOptions::default())
            .unwrap();
        assert!(report.passed(), "gelu on {device}: {report}");
    }
}

#[test]
fn rows_reductions_and_scalars() {
    for device in devices("rows_reductions_and_scalars") {
        for dtype in DTYPES {
            for (s, &(r, c)) in [(37, 29), (1, 1), (130, 257), (3, 70), (128, 256)]
                .iter()
                .enumerate()
            {
                let mut rng = Rng::new(30 + s as u64);
                let xv = rng.vec(r * c, -2.0, 2.0);
                let x = pair(&xv, dtype, device);
                let bv = rng.vec(c, -2.0, 2.0);
                let b = pair(&bv, dtype, device);
                let add_terms: Vec<f64> =
                    (0..r * c).map(|i| xv[i].abs() + bv[i % c].abs()).collect();
                let t = Tolerance::kernel(dtype);
                check(
                    &format!("{dtype} add_row {r}x{c}"),
                    &x.dev.add_row(&b.dev, c).unwrap(),
                    &x.cpu.add_row(&b.cpu, c).unwrap(),
                    Scale::Terms(&add_terms),
                    t,
                );
                for act in Activation::ALL {
                    // The bias and activation in one pass (one fused kernel).
                    // f has a slope of at most 1: its error is the sum's plus
                    // its own rounding.
                    let want = x.cpu.bias_act(&b.cpu, c, act).unwrap();
                    let terms: Vec<f64> = host(&want)
                        .iter()
                        .zip(&add_terms)
                        .map(|(y, s)| y.abs() + s)
                        .collect();
                    check(
                        &format!("{dtype} bias_act {act} {r}x{c}"),
                        &x.dev.bias_act(&b.dev, c, act).unwrap(),
                        &want,
                        Scale::Terms(&terms),
                        t,
                    );
                }
                let col_abs: Vec<f64> = (0..c)
                    .map(|j| (0..r).map(|i| xv[i * c + j].abs()).sum())
                    .collect();
                check(
                    &format!("{dtype} sum_rows {r}x{c}"),
                    &x.dev.sum_rows(c).unwrap(),
                    &x.cpu.sum_rows(c).unwrap(),
                    Scale::Terms(&col_abs),
                    t,
                );
                let abs: f64 = xv.iter().map(|v| v.abs()).sum();
                let (sd, sc) = (x.dev.sum_all().unwrap(), x.cpu.sum_all().unwrap());
                check(
                    &format!("{dtype} sum {r}x{c}"),
                    &sd,
                    &sc,
                    Scale::Terms(&[abs]),
                    t,
                );
                // The backward of sum/mean: a broadcast of a device scalar.
                let n = r * c;
                check_op(
                    &format!("{dtype} broadcast_scalar {n}"),
                    &sc.to_device(device)
                        .unwrap()
                        .broadcast_scalar(n, 1.0 / n as f64)
                        .unwrap(),
                    &sc.broadcast_scalar(n, 1.0 / n as f64).unwrap(),
                );
                // Argmax with ties and NaN.
                let mut tv: Vec<f64> = (0..r * c).map(|_| rng.below(5) as f64).collect();
                if r > 2 && c > 3 {
                    tv[c + 3] = f64::NAN;
                    tv[2 * c + 1] = f64::NAN;
                }
                let tp = pair(&tv, dtype, device);
                exact(
                    &format!("{dtype} argmax {r}x{c}"),
                    &tp.dev.argmax_rows(c).unwrap(),
                    &tp.cpu.argmax_rows(c).unwrap(),
                );
            }
        }
    }
}

/// The terms of the softmax cross-entropy backward `p·gs − [c = label]·gs`
/// per element: `|p·gs|`, plus `|gs|` in each row's label column.
fn softmax_backward_terms(p: &[f64], labels: &[u32], gs: f64) -> Vec<f64> {
    let cols = p.len() / labels.len().max(1);
    p.iter()
        .enumerate()
        .map(|(i, v)| {
            let label = labels[i / cols] as usize == i % cols;
            (v * gs).abs() + if label { gs.abs() } else { 0.0 }
        })
        .collect()
}

#[test]
fn softmax_cross_entropy_forward_and_backward() {
    for device in devices("softmax_cross_entropy_forward_and_backward") {
        for dtype in DTYPES {
            for (s, &(r, c)) in [(37, 29), (1, 1), (130, 257), (9, 10), (3, 70), (128, 10)]
                .iter()
                .enumerate()
            {
                let mut rng = Rng::new(40 + s as u64);
                let xv = rng.vec(r * c, -8.0, 8.0);
                let x = pair(&xv, dtype, device);
                let lv = rng.labels(r, c);
                let y = labels_pair(&lv, device);
                let (ld, pd) = x.dev.softmax_xent(&y.dev, c).unwrap();
                let (lc, pc) = x.cpu.softmax_xent(&y.cpu, c).unwrap();
                assert_eq!(ld.len(), 1);
                // The mean loss sums, per row, log-sum-exp − the label's logit.
                let loss_terms: f64 = (0..r)
                    .map(|i| {
                        let row = &xv[i * c..(i + 1) * c];
                        let mx = row.iter().cloned().fold(f64::MIN, f64::max);
                        let lse = mx + row.iter().map(|v| (v - mx).exp()).sum::<f64>().ln();
                        lse.abs() + row[lv[i] as usize].abs()
                    })
                    .sum::<f64>()
                    / r as f64;
                let t = Tolerance::kernel(dtype);
                check(
                    &format!("{dtype} xent loss {r}x{c}"),
                    &ld,
                    &lc,
                    Scale::Terms(&[loss_terms]),
                    t,
                );
                check_op(&format!("{dtype} xent probs {r}x{c}"), &pd, &pc);
                // Backward from the CPU's probabilities and a device scalar g.
                let g = pair(&[0.75], dtype, device);
                let pcd = pc.to_device(device).unwrap();
                let terms = softmax_backward_terms(&host(&pc), &lv, 0.75 / r as f64);
                check(
                    &format!("{dtype} xent backward {r}x{c}"),
                    &pcd.softmax_xent_backward(&y.dev, &g.dev, c).unwrap(),
                    &pc.softmax_xent_backward(&y.cpu, &g.cpu, c).unwrap(),
                    Scale::Terms(&terms),
                    t,
                );
            }
        }
        // An out-of-range label is the CPU's error, on the device too (its
        // upload-time bound catches it, then the device copy names the row).
        let x = pair(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0], DType::F32, device);
        let y = labels_pair(&[1, 3], device);
        let ed = x.dev.softmax_xent(&y.dev, 3).unwrap_err().to_string();
        let ec = x.cpu.softmax_xent(&y.cpu, 3).unwrap_err().to_string();
        assert_eq!(ed, ec);
        // argmax output's bound (cols − 1) lets it be labels with no read.
        let am = x.dev.argmax_rows(3).unwrap();
        assert!(x.dev.softmax_xent(&am, 3).is_ok());
    }
}

#[test]
fn optimiser_updates_in_place() {
    for device in devices("optimiser_updates_in_place") {
        for dtype in DTYPES {
            let n = 1073;
            let mut rng = Rng::new(50);
            let (w, g) = (rng.vec(n, -1.0, 1.0), rng.vec(n, -1.0, 1.0));
            let (m, v) = (rng.vec(n, -0.1, 0.1), rng.vec(n, 0.0, 0.01));
            let rules = [
                UpdateRule::Sgd {
                    lr: 0.1,
                    momentum: 0.0,
                    nesterov: false,
                    weight_decay: 0.01,
                },
                UpdateRule::Sgd {
                    lr: 0.1,
                    momentum: 0.9,
                    nesterov: false,
                    weight_decay: 0.01,
                },
                UpdateRule::Sgd {
                    lr: 0.1,
                    momentum: 0.9,
                    nesterov: true,
                    weight_decay: 0.0,
                },
                UpdateRule::Adam {
                    lr: 1e-3,
                    beta1: 0.9,
                    beta2: 0.999,
                    eps: 1e-8,
                    weight_decay: 0.01,
                    t: 3,
                },
            ];
            for rule in rules {
                let (s1_len, s2_len) = match rule {
                    UpdateRule::Sgd { momentum: 0.0, .. } => (0, 0),
                    UpdateRule::Sgd { .. } => (n, 0),
                    UpdateRule::Adam { .. } => (n, n),
                };
                let (mut wp, gp) = (pair(&w, dtype, device), pair(&g, dtype, device));
                let mut s1 = pair(&m[..s1_len], dtype, device);
                let mut s2 = pair(&v[..s2_len], dtype, device);
                wp.dev
                    .update(&gp.dev, &mut s1.dev, &mut s2.dev, rule)
                    .unwrap();
                wp.cpu
                    .update(&gp.cpu, &mut s1.cpu, &mut s2.cpu, rule)
                    .unwrap();
                // Each state is its old value plus a change: those are its
                // terms.
                for (name, dev, cpu, before) in [
                    ("w", &wp.dev, &wp.cpu, &w[..]),
                    ("s1", &s1.dev, &s1.cpu, &m[..s1_len]),
                    ("s2", &s2.dev, &s2.cpu, &v[..s2_len]),
                ] {
                    let terms: Vec<f64> = host(cpu)
                        .iter()
                        .zip(before)
                        .map(|(a, b)| b.abs() + (a - b).abs())
                        .collect();
                    let t = Tolerance::kernel(dtype);
                    check(
                        &format!("{dtype} {rule:?} {name}"),
                        dev,
                        cpu,
                        Scale::Terms(&terms),
                        t,
                    );
                }
            }
        }
    }
}

/// A small MLP with odd sizes and its batch, on the CPU.
fn model_and_batch(dtype: DType) -> (Model, Tensor, Tensor) {
    let mut model = Model::new("37-29-11", Activation::Relu, 7).unwrap();
    if dtype == DType::F64 {
        for p in model.params_mut() {
            *p = p.to_dtype(dtype).unwrap();
        }
    }
    let mut rng = Rng::new(60);
    let n = 13;
    let x = Tensor::from_vec(rng.vec(n * 37, 0.0, 1.0), [n, 37])
        .unwrap()
        .to_dtype(dtype)
        .unwrap();
    let y = Tensor::from_vec(rng.labels(n, 11), [n]).unwrap();
    (model, x, y)
}

/// One forward/backward/update on the tensors' device; returns the loss
/// tensor (not read) and the updated model.
fn train_step(model: &Model, x: &Tensor, y: &Tensor, kind: OptimizerKind) -> (Tensor, Model) {
    let mut model = model.clone();
    let mut tape = Tape::new();
    let xv = tape.constant(x.clone());
    let fwd = model.forward(&mut tape, xv, true).unwrap();
    let loss = tape.softmax_cross_entropy(fwd.logits, y).unwrap();
    tape.backward(loss).unwrap();
    let grads: Vec<Tensor> = fwd
        .params
        .iter()
        .map(|&p| tape.grad(p).cloned().expect("a parameter gradient"))
        .collect();
    for g in &grads {
        assert_eq!(g.device(), x.device(), "a gradient left the device");
    }
    let loss = tape.value(loss).unwrap().clone();
    let mut opt = Optimizer::new(OptimConfig::new(kind, 0.05), &model.params()).unwrap();
    opt.step(&mut model.params_mut(), &grads, 0.05).unwrap();
    (loss, model)
}

#[test]
fn training_step_stays_on_device() {
    for device in devices("training_step_stays_on_device") {
        for dtype in DTYPES {
            for kind in [
                OptimizerKind::Sgd,
                OptimizerKind::Momentum,
                OptimizerKind::Adam,
            ] {
                let (model, x, y) = model_and_batch(dtype);
                let (lc, mc) = train_step(&model, &x, &y, kind);
                let dm = model.to_device(device).unwrap();
                let (ld, md) = train_step(
                    &dm,
                    &x.to_device(device).unwrap(),
                    &y.to_device(device).unwrap(),
                    kind,
                );
                assert_eq!(md.device(), device);
                let what = format!("{dtype} {kind:?} step");
                let t = Tolerance::composite(dtype);
                check_step(&what, (&ld, &md), (&lc, &mc), &model, t);
            }
        }
    }
}

/// A training step on the device `(ld, md)` (loss, updated model) against
/// the same step on the CPU `(lc, mc)`, from the parameters of `before`:
/// the loss as a value, each parameter with its old value and its update as
/// its terms.
fn check_step(
    what: &str,
    (ld, md): (&Tensor, &Model),
    (lc, mc): (&Tensor, &Model),
    before: &Model,
    t: Tolerance,
) {
    check(
        &format!("{what} loss"),
        ld.storage(),
        lc.storage(),
        Scale::Value,
        t,
    );
    for (((pd, pc), p0), name) in md
        .params()
        .iter()
        .zip(mc.params())
        .zip(before.params())
        .zip(mc.param_names())
    {
        let (after, before) = (pc.to_f64_vec().unwrap(), p0.to_f64_vec().unwrap());
        let terms: Vec<f64> = after
            .iter()
            .zip(&before)
            .map(|(a, b)| b.abs() + (a - b).abs())
            .collect();
        check(
            &format!("{what} {name}"),
            pd.storage(),
            pc.storage(),
            Scale::Terms(&terms),
            t,
        );
    }
}

/// One L∞ PGD step by hand: `x' = Π(x + α·sign(∇ₓ loss))`.
fn pgd_step(model: &Model, x0: &Tensor, x: &Tensor, y: &Tensor, eps: f64, alpha: f64) -> Tensor {
    let mut tape = Tape::new();
    let xv = tape.var(x.clone());
    let fwd = model.forward(&mut tape, xv, false).unwrap();
    let loss = tape.softmax_cross_entropy(fwd.logits, y).unwrap();
    tape.backward(loss).unwrap();
    let g = tape.grad(xv).expect("input gradient").sign().unwrap();
    let mut next = x.clone();
    next.axpy_(alpha, &g).unwrap();
    let out = next.project_linf(x0, eps, 0.0, 1.0).unwrap();
    assert_eq!(out.device(), x.device());
    out
}

#[test]
fn pgd_stays_on_device() {
    for device in devices("pgd_stays_on_device") {
        for dtype in DTYPES {
            let (model, x, y) = model_and_batch(dtype);
            let (dm, dx, dy) = (
                model.to_device(device).unwrap(),
                x.to_device(device).unwrap(),
                y.to_device(device).unwrap(),
            );
            let (eps, alpha) = (0.1, 0.025);
            let mut xc = x.clone();
            let mut xd = dx.clone();
            for _ in 0..3 {
                xc = pgd_step(&model, &x, &xc, &y, eps, alpha);
                xd = pgd_step(&dm, &dx, &xd, &dy, eps, alpha);
            }
            let t = Tolerance::composite(dtype);
            check(
                &format!("{dtype} 3 PGD steps"),
                xd.storage(),
                xc.storage(),
                Scale::Value,
                t,
            );

            // The library's PGD end to end (its fused sign step).
            let attack = Attack::build("pgd", eps, &AttackOptions::default()).unwrap();
            let ac = attack.run(&model, &x, &y, 1).unwrap();
            let ad = attack.run(&dm, &dx, &dy, 1).unwrap();
            check(
                &format!("{dtype} Attack::Pgd"),
                ad.storage(),
                ac.storage(),
                Scale::Value,
                t,
            );
        }
    }
}

#[test]
fn gradcheck_on_the_device_in_f64() {
    for device in devices("gradcheck_on_the_device_in_f64") {
        let mut rng = Rng::new(70);
        let (n, d, c) = (4, 5, 3);
        let on = |v: Vec<f64>, shape: &[usize]| {
            Tensor::from_vec(v, shape)
                .unwrap()
                .to_device(device)
                .unwrap()
        };
        let x = on(rng.vec(n * d, -1.0, 1.0), &[n, d]);
        let w = on(rng.vec(c * d, -1.0, 1.0), &[c, d]);
        let b = on(rng.vec(c, -0.5, 0.5), &[c]);
        let y = Tensor::from_vec(rng.labels(n, c), [n])
            .unwrap()
            .to_device(device)
            .unwrap();
        for act in Activation::ALL {
            let report = advgrad::gradcheck(
                |tape, v| {
                    let h = advgrad::nn::Linear::record(tape, v[0], v[1], v[2])?;
                    let h = tape.activation(act, h)?;
                    tape.softmax_cross_entropy(h, &y)
                },
                &[x.clone(), w.clone(), b.clone()],
                &advgrad::GradcheckOptions::default(),
            )
            .unwrap();
            assert!(report.passed(), "{act} on {device}: {report}");
        }
    }
}

#[test]
fn operands_on_different_devices_are_an_error() {
    let on_emu = pair(&[1.0, 2.0], DType::F32, Device::Emu);
    let e = on_emu.dev.binary(&on_emu.cpu, Binary::Add).unwrap_err();
    assert!(e.to_string().contains("device mismatch: emu vs cpu"), "{e}");
    let t = Tensor::from_vec(vec![1.0f32, 2.0], [2])
        .unwrap()
        .to_device(Device::Emu)
        .unwrap();
    assert_eq!(t.device(), Device::Emu);
    assert_eq!(Device::resolve("emu").unwrap(), Device::Emu);
}

#[test]
fn no_gpu_is_a_clear_error() {
    if cuda::is_available() {
        return;
    }
    let e = Device::resolve("cuda").unwrap_err().to_string();
    assert!(e.contains("CUDA"), "{e}");
    assert_eq!(Device::resolve("auto").unwrap(), Device::Cpu);
    let t = Tensor::from_vec(vec![1.0f32], [1]).unwrap();
    assert!(t.to_device(Device::Cuda(0)).is_err());
}

/// The training loop's tally (`tally_step`) and the device-side row slice
/// (`Storage::range`): the CPU's numbers exactly, on odd sizes, the MLP's
/// batch, rows with ties, and logits with NaNs.
#[test]
fn the_step_tally_and_row_slices_match_the_cpu_exactly() {
    for device in devices("the_step_tally_and_row_slices_match_the_cpu_exactly") {
        let mut rng = Rng::new(91);
        for dtype in [DType::F32, DType::F64] {
            for (rows, cols) in [(1, 1), (37, 7), (128, 10), (300, 3)] {
                // Values on a coarse grid, so rows have ties.
                let mut z: Vec<f64> = rng
                    .vec(rows * cols, -2.0, 2.0)
                    .into_iter()
                    .map(|v| (v * 2.0).round())
                    .collect();
                if rows > 3 {
                    z[cols + 1] = f64::NAN;
                }
                let z = pair(&z, dtype, device);
                let y = labels_pair(&rng.labels(rows, cols), device);
                let loss = pair(&[0.731], dtype, device);
                let mut cpu = CpuStorage::F64(vec![2.5, 3.0]);
                let mut dev = Storage::Cpu(cpu.clone()).to_device(device).unwrap();
                for _ in 0..3 {
                    let Storage::Cpu(l) = &loss.cpu else {
                        unreachable!()
                    };
                    let (Storage::Cpu(zc), Storage::Cpu(yc)) = (&z.cpu, &y.cpu) else {
                        unreachable!()
                    };
                    cpu.tally_step(l, zc, yc, cols).unwrap();
                    dev.tally_step(&loss.dev, &z.dev, &y.dev, cols).unwrap();
                }
                let what = format!("tally of {rows}×{cols} {dtype} on {device}");
                assert_eq!(dev.to_cpu().unwrap(), cpu, "{what}");

                let (lo, hi) = (rows / 3, rows - rows / 4);
                let got = z.dev.range(lo * cols, hi * cols).unwrap();
                assert_eq!(got.device(), device);
                let want = z.cpu.range(lo * cols, hi * cols).unwrap();
                let (g, w) = (got.to_cpu().unwrap(), want.to_cpu().unwrap());
                assert_eq!(
                    format!("{g:?}"),
                    format!("{w:?}"),
                    "rows {lo}..{hi} of {what}"
                );
            }
        }
        let labels = labels_pair(&[3, 1, 4, 1, 5], device);
        let piece = labels.dev.range(1, 4).unwrap().to_cpu().unwrap();
        assert_eq!(piece, CpuStorage::U32(vec![1, 4, 1]));
        assert!(labels.dev.range(4, 6).is_err());
    }
}

// The kernels of robustness evaluation and training (robust_loss.cu,
// attack_step.cu): each against the CPU, then their backward rules by
// gradcheck, the attacks and TRADES/MART training end to end.

/// Logits for the row-wise losses: uniform in ±4, and, when there are at
/// least 8 rows of 4 classes, rows with ties among the top classes (three
/// equal maxima; a tie for second and third; all equal), a NaN ranked
/// first and one ranked after the top four, a −inf and a +inf.
fn robust_logits(rows: usize, cols: usize, rng: &mut Rng) -> Vec<f64> {
    let mut v = rng.vec(rows * cols, -4.0, 4.0);
    if rows >= 8 && cols >= 4 {
        let at = |r: usize, c: usize| r * cols + c;
        for c in 1..4 {
            v[at(0, c)] = 5.0;
        }
        (v[at(1, 0)], v[at(1, 2)], v[at(1, cols - 1)]) = (6.0, 5.5, 5.5);
        v[at(2, 0)..at(3, 0)].fill(1.25);
        v[at(3, 0)] = f64::NAN;
        v[at(4, cols - 1)] = f64::NAN;
        v[at(5, 1)] = f64::NEG_INFINITY;
        v[at(6, 2)] = f64::INFINITY;
    }
    v
}

/// A device result equal to the CPU's bit for bit (NaNs of any payload).
#[track_caller]
fn same_bits(what: &str, dev: &Storage, cpu: &Storage) {
    let exactly = Tolerance {
        tol: 0.0,
        floor: f64::MIN_POSITIVE,
    };
    check(what, dev, cpu, Scale::Value, exactly);
}

/// The row max and `ln Σ e^{x − max}` over the finite values of a row.
fn max_and_lse(row: &[f64]) -> (f64, f64) {
    let finite = || row.iter().copied().filter(|v| v.is_finite());
    let m = finite().fold(f64::NEG_INFINITY, f64::max);
    (m, finite().map(|v| (v - m).exp()).sum::<f64>().ln())
}

/// The largest |value| among the finite values of a row.
fn max_abs(row: &[f64]) -> f64 {
    row.iter()
        .filter(|v| v.is_finite())
        .fold(0.0, |m, v| m.max(v.abs()))
}

/// The CPU's DLR of one row, for the error scales: numerator, denominator,
/// the class subtracted, ∂D as (class, coefficient), and the relative
/// error of D in roundings (its inputs' sum, when targeted, can cancel).
struct DlrReference {
    num: f64,
    den: f64,
    other: usize,
    den_grad: [(usize, f64); 3],
    den_roundings: f64,
}

fn dlr_reference(z: &[f64], y: usize, t: usize, targeted: bool) -> DlrReference {
    // The CPU's ranking: insertion in column order (a NaN stops there).
    let mut top = [usize::MAX; 4];
    for (j, &v) in z.iter().enumerate() {
        let mut k = 4;
        while k > 0 && (top[k - 1] == usize::MAX || z[top[k - 1]] < v) {
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
    let top = top.map(|t| if t == usize::MAX { last } else { t });
    if targeted {
        let den = z[top[0]] - 0.5 * (z[top[2]] + z[top[3]]) + 1e-12;
        DlrReference {
            num: z[y] - z[t],
            den,
            other: t,
            den_grad: [(top[0], 1.0), (top[2], -0.5), (top[3], -0.5)],
            den_roundings: 3.0 + (z[top[2]].abs() + z[top[3]].abs()) / den.abs(),
        }
    } else {
        let m = if top[0] == y { top[1] } else { top[0] };
        DlrReference {
            num: z[y] - z[m],
            den: z[top[0]] - z[top[2]] + 1e-12,
            other: m,
            den_grad: [(top[0], 1.0), (top[2], -1.0), (top[0], 0.0)],
            den_roundings: 3.0,
        }
    }
}

/// Log-softmax, `exp`, `ln`, pick and the KL divergence, forward and
/// backward, against the CPU: the real shapes (128 × 10, 1000 × 10), odd
/// ones, rows longer than a warp's 128 values, and rows with ties, NaN and
/// ±inf. Scales: each log-probability carries the rounding of
/// `|x| + |max| + |ln Σ|` (the row's `R`), a probability carries it
/// relatively.
#[test]
fn robust_losses_log_softmax_exp_ln_pick_kl() {
    const SHAPES: [(usize, usize); 5] = [(128, 10), (1000, 10), (37, 29), (9, 130), (3, 1)];
    for device in devices("robust_losses_log_softmax_exp_ln_pick_kl") {
        for dtype in DTYPES {
            let t = Tolerance::kernel(dtype);
            for (s, &(r, c)) in SHAPES.iter().enumerate() {
                let mut rng = Rng::new(200 + s as u64);
                let what = |op: &str| format!("{dtype} {op} {r}x{c}");
                let a = pair(&robust_logits(r, c, &mut rng), dtype, device);
                let b = pair(&robust_logits(r, c, &mut rng), dtype, device);
                let (av, bv) = (host(&a.cpu), host(&b.cpu));
                let row = |v: &[f64], i: usize| v[i * c..(i + 1) * c].to_vec();

                let y = a.cpu.log_softmax(c).unwrap();
                let terms: Vec<f64> = (0..r * c)
                    .map(|k| {
                        let (m, lse) = max_and_lse(&row(&av, k / c));
                        av[k].abs() + m.abs() + lse.abs()
                    })
                    .collect();
                let yd = a.dev.log_softmax(c).unwrap();
                check(&what("log_softmax"), &yd, &y, Scale::Terms(&terms), t);

                // Backward from the CPU's output: g − e^y·Σg.
                let g = pair(&rng.vec(r * c, -1.0, 1.0), dtype, device);
                let (gv, yv) = (host(&g.cpu), host(&y));
                let terms: Vec<f64> = (0..r * c)
                    .map(|k| {
                        let abs_sum: f64 = row(&gv, k / c).iter().map(|v| v.abs()).sum();
                        gv[k].abs() + yv[k].exp() * abs_sum
                    })
                    .collect();
                let yc = y.to_device(device).unwrap();
                check(
                    &what("log_softmax_backward"),
                    &g.dev.log_softmax_backward(&yc, c).unwrap(),
                    &g.cpu.log_softmax_backward(&y, c).unwrap(),
                    Scale::Terms(&terms),
                    t,
                );

                check_op(&what("exp"), &a.dev.exp().unwrap(), &a.cpu.exp().unwrap());
                // ln of positive values, zeros (−inf) and negatives (NaN).
                // Both sides take the CPU's exp: near 1, ln turns the ulp or
                // two by which the GPU's exp differs into a relative error
                // of 1/|ln x| times as much (seen on an H200: 1.9e-5 at
                // 6.2e-3), which would test exp again, not ln.
                let e = a.cpu.exp().unwrap();
                check_op(
                    &what("ln"),
                    &e.to_device(device).unwrap().ln().unwrap(),
                    &e.ln().unwrap(),
                );
                check_op(&what("ln ±"), &a.dev.ln().unwrap(), &a.cpu.ln().unwrap());

                let k = labels_pair(&rng.labels(r, c), device);
                same_bits(
                    &what("pick"),
                    &a.dev.pick_rows(&k.dev, c).unwrap(),
                    &a.cpu.pick_rows(&k.cpu, c).unwrap(),
                );
                let gr = pair(&rng.vec(r, -1.0, 1.0), dtype, device);
                same_bits(
                    &what("pick_backward"),
                    &gr.dev.pick_rows_backward(&k.dev, c).unwrap(),
                    &gr.cpu.pick_rows_backward(&k.cpu, c).unwrap(),
                );

                // KL(p ‖ q): R·Σ p(1 + |lp − lq|); its gradients' terms.
                let grv = host(&gr.cpu);
                let mut kl_terms = vec![0.0; r];
                let (mut da_terms, mut db_terms) = (vec![0.0; r * c], vec![0.0; r * c]);
                for i in 0..r {
                    let (ra, rb) = (row(&av, i), row(&bv, i));
                    let ((ma, la), (mb, lb)) = (max_and_lse(&ra), max_and_lse(&rb));
                    let big_r = 2.0 * (max_abs(&ra) + max_abs(&rb)) + la.abs() + lb.abs() + 1.0;
                    let lp: Vec<f64> = ra.iter().map(|v| v - ma - la).collect();
                    let lq: Vec<f64> = rb.iter().map(|v| v - mb - lb).collect();
                    let kl: f64 = (0..c).map(|j| lp[j].exp() * (lp[j] - lq[j])).sum();
                    kl_terms[i] = big_r
                        * (0..c)
                            .map(|j| lp[j].exp() * (1.0 + (lp[j] - lq[j]).abs()))
                            .sum::<f64>();
                    for j in 0..c {
                        let (p, q) = (lp[j].exp(), lq[j].exp());
                        let gi = grv[i].abs();
                        da_terms[i * c + j] =
                            gi * p * (big_r * (1.0 + (lp[j] - lq[j] - kl).abs()) + kl_terms[i]);
                        db_terms[i * c + j] = gi * (p + q) * big_r;
                    }
                }
                check(
                    &what("kl_div"),
                    &a.dev.kl_div_rows(&b.dev, c).unwrap(),
                    &a.cpu.kl_div_rows(&b.cpu, c).unwrap(),
                    Scale::Terms(&kl_terms),
                    t,
                );
                let (dad, dbd) = a.dev.kl_div_rows_backward(&b.dev, &gr.dev, c).unwrap();
                let (dac, dbc) = a.cpu.kl_div_rows_backward(&b.cpu, &gr.cpu, c).unwrap();
                check(
                    &what("kl_div_backward da"),
                    &dad,
                    &dac,
                    Scale::Terms(&da_terms),
                    t,
                );
                check(
                    &what("kl_div_backward db"),
                    &dbd,
                    &dbc,
                    Scale::Terms(&db_terms),
                    t,
                );
            }
        }
        // Bad indices and shapes are the CPU's errors.
        let x = pair(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0], DType::F32, device);
        let k = labels_pair(&[1, 3], device);
        for (dev, cpu) in [
            (x.dev.pick_rows(&k.dev, 3), x.cpu.pick_rows(&k.cpu, 3)),
            (x.dev.log_softmax(4), x.cpu.log_softmax(4)),
        ] {
            assert_eq!(dev.unwrap_err().to_string(), cpu.unwrap_err().to_string());
        }
    }
}

/// The DLR loss, untargeted and targeted, and its gradient against the
/// CPU, with ties among the top classes, a target equal to the label, NaN
/// and ±inf rows. The gradient's nonzero entries must sit where the CPU's
/// do (a wrong rank among tied classes moves them); its values are
/// measured against their terms `|g/D|` and `|g·n/D²|`, times the
/// roundings of n and D.
#[test]
fn robust_losses_dlr() {
    const SHAPES: [(usize, usize); 5] = [(128, 10), (1000, 10), (37, 29), (9, 130), (5, 4)];
    for device in devices("robust_losses_dlr") {
        for dtype in DTYPES {
            let tol = Tolerance::kernel(dtype);
            for (s, &(r, c)) in SHAPES.iter().enumerate() {
                let mut rng = Rng::new(300 + s as u64);
                let z = pair(&robust_logits(r, c, &mut rng), dtype, device);
                let zv = host(&z.cpu);
                let yv = rng.labels(r, c);
                let mut tv = rng.labels(r, c);
                tv[r / 2] = yv[r / 2];
                let (y, tg) = (labels_pair(&yv, device), labels_pair(&tv, device));
                let g = pair(&rng.vec(r, -1.0, 1.0), dtype, device);
                let gv = host(&g.cpu);
                for targeted in [false, true] {
                    let what = |op: &str| format!("{dtype} {op} targeted={targeted} {r}x{c}");
                    let refs: Vec<DlrReference> = (0..r)
                        .map(|i| {
                            let row = &zv[i * c..(i + 1) * c];
                            dlr_reference(row, yv[i] as usize, tv[i] as usize, targeted)
                        })
                        .collect();
                    let want = z.cpu.dlr_rows(&y.cpu, &tg.cpu, targeted, c).unwrap();
                    let terms: Vec<f64> = refs
                        .iter()
                        .map(|d| (d.num / d.den).abs() * (3.0 + d.den_roundings))
                        .collect();
                    let got = z.dev.dlr_rows(&y.dev, &tg.dev, targeted, c).unwrap();
                    check(&what("dlr"), &got, &want, Scale::Terms(&terms), tol);

                    let want = z
                        .cpu
                        .dlr_rows_backward(&y.cpu, &tg.cpu, targeted, &g.cpu, c);
                    let want = want.unwrap();
                    let mut terms = vec![0.0; r * c];
                    for (i, d) in refs.iter().enumerate() {
                        let step = (gv[i] / d.den).abs();
                        let curve = (gv[i] * d.num / (d.den * d.den)).abs();
                        let roundings = 3.0 + 2.0 * d.den_roundings;
                        terms[i * c + yv[i] as usize] += step * roundings;
                        terms[i * c + d.other] += step * roundings;
                        for (k, coef) in d.den_grad {
                            terms[i * c + k] += curve * coef.abs() * roundings;
                        }
                    }
                    let got = z
                        .dev
                        .dlr_rows_backward(&y.dev, &tg.dev, targeted, &g.dev, c)
                        .unwrap();
                    // An entry is there when it is more than a rounding of
                    // the row's terms |g/D| + |g·n/D²| (a cancellation to zero
                    // may leave 1e-13 in the CPU's f64 and 0 in f32).
                    let (gh, wh) = (host(&got), host(&want));
                    let there = |v: f64, k: usize| {
                        let d = &refs[k / c];
                        let (i, den) = (k / c, d.den);
                        let size = (gv[i] / den).abs() + (gv[i] * d.num / (den * den)).abs();
                        v.abs() > tol.tol * size.max(tol.floor)
                    };
                    let moved = |k: usize| there(gh[k], k) != there(wh[k], k);
                    if let Some(k) = (0..r * c).find(|&k| moved(k)) {
                        panic!(
                            "{}[{k}]: got {}, want {}: a gradient entry moved",
                            what("dlr_backward"),
                            gh[k],
                            wh[k]
                        );
                    }
                    check(
                        &what("dlr_backward"),
                        &got,
                        &want,
                        Scale::Terms(&terms),
                        tol,
                    );
                }
            }
        }
        // Too few classes and a label out of range are the CPU's errors.
        let z = pair(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0], DType::F32, device);
        let (ok, bad) = (labels_pair(&[0, 1], device), labels_pair(&[0, 3], device));
        for (dev, cpu) in [
            (
                z.dev.dlr_rows(&ok.dev, &ok.dev, true, 3),
                z.cpu.dlr_rows(&ok.cpu, &ok.cpu, true, 3),
            ),
            (
                z.dev.dlr_rows(&bad.dev, &bad.dev, false, 3),
                z.cpu.dlr_rows(&bad.cpu, &bad.cpu, false, 3),
            ),
        ] {
            assert_eq!(dev.unwrap_err().to_string(), cpu.unwrap_err().to_string());
        }
    }
}

/// Clean images in [0, 1] and points within `radius` of them (clipped to
/// the box), `rows × cols`.
fn images_and_points(rows: usize, cols: usize, radius: f64, rng: &mut Rng) -> (Vec<f64>, Vec<f64>) {
    let c = rng.vec(rows * cols, 0.0, 1.0);
    let x = c
        .iter()
        .map(|v| (v + rng.uniform(-radius, radius)).clamp(0.0, 1.0))
        .collect();
    (c, x)
}

/// APGD's step in L∞ and L2 against the CPU: a Fashion-MNIST batch
/// (128 × 784) and odd sizes, zeros in the gradient and a row whose
/// gradient is all zero. Every intermediate is bounded by
/// `|x| + |x_prev| + |c| + eps + η`: that is each element's scale.
#[test]
fn apgd_step_fused() {
    use advgrad::backend::Norm;
    for device in devices("apgd_step_fused") {
        for dtype in DTYPES {
            for (s, &(r, c)) in [(128, 784), (7, 13), (1, 1)].iter().enumerate() {
                if dtype == DType::F64 && r == 128 {
                    continue;
                }
                let mut rng = Rng::new(400 + s as u64);
                for (norm, eps) in [(Norm::Linf, 0.1), (Norm::L2, 1.0)] {
                    let (cv, xv) = images_and_points(r, c, eps / 2.0, &mut rng);
                    let prev: Vec<f64> = cv
                        .iter()
                        .map(|v| (v + rng.uniform(-eps / 2.0, eps / 2.0)).clamp(0.0, 1.0))
                        .collect();
                    let mut gv = rng.vec(r * c, -1.0, 1.0);
                    gv[0] = 0.0;
                    if r > 2 {
                        gv[c..2 * c].fill(0.0);
                    }
                    let etas = rng.vec(r, 0.01, 0.2);
                    let [x, p, g, cc, eta] =
                        [&xv, &prev, &gv, &cv, &etas].map(|v| pair(v, dtype, device));
                    let terms: Vec<f64> = (0..r * c)
                        .map(|k| xv[k].abs() + prev[k].abs() + cv[k] + eps + etas[k / c])
                        .collect();
                    check(
                        &format!("{dtype} apgd_step {norm:?} {r}x{c}"),
                        &x.dev
                            .apgd_step(&p.dev, &g.dev, &cc.dev, &eta.dev, 0.75, eps, norm, c)
                            .unwrap(),
                        &x.cpu
                            .apgd_step(&p.cpu, &g.cpu, &cc.cpu, &eta.cpu, 0.75, eps, norm, c)
                            .unwrap(),
                        Scale::Terms(&terms),
                        Tolerance::kernel(dtype),
                    );
                }
            }
        }
    }
}

/// FAB's step in L∞ and L2 against the CPU (both compute in f64): a
/// batch of Fashion-MNIST rows and odd sizes, zeros in the hyperplane's
/// normal, a row on the hyperplane (f = 0) and one the box cannot reach.
/// The new points are pixel-sized combinations of pixels (scale
/// `1 + |x| + |x₀|`); the distances are measured on the stored points.
#[test]
fn fab_step_fused() {
    use advgrad::backend::Norm;
    for device in devices("fab_step_fused") {
        for dtype in DTYPES {
            for (s, &(r, c)) in [(32, 784), (5, 7), (1, 1)].iter().enumerate() {
                let mut rng = Rng::new(500 + s as u64);
                let (x0v, xv) = images_and_points(r, c, 0.05, &mut rng);
                let wv: Vec<f64> = (0..r * c)
                    .map(|_| {
                        let w = rng.uniform(-1.0, 1.0);
                        if w.abs() < 0.1 {
                            0.0
                        } else {
                            w
                        }
                    })
                    .collect();
                let mut fv = rng.vec(r, -2.0, 2.0);
                if r > 2 {
                    fv[1] = 0.0;
                    fv[2] = 1e4;
                }
                let [x, x0, w, f] = [&xv, &x0v, &wv, &fv].map(|v| pair(v, dtype, device));
                let terms: Vec<f64> = (0..r * c).map(|k| 1.0 + xv[k] + x0v[k]).collect();
                for norm in [Norm::Linf, Norm::L2] {
                    let what = format!("{dtype} fab_step {norm:?} {r}x{c}");
                    let (pd, dd) = x
                        .dev
                        .fab_step(&x0.dev, &w.dev, &f.dev, 1.05, 0.1, norm, c)
                        .unwrap();
                    let (pc, dc) = x
                        .cpu
                        .fab_step(&x0.cpu, &w.cpu, &f.cpu, 1.05, 0.1, norm, c)
                        .unwrap();
                    let t = Tolerance::kernel(dtype);
                    check(&format!("{what} point"), &pd, &pc, Scale::Terms(&terms), t);
                    check(&format!("{what} distance"), &dd, &dc, Scale::Value, t);
                }
            }
        }
    }
}

/// The in-place update of listed rows against the CPU, for t = 0 (a copy)
/// and t = 0.5; a clone keeps its values (copy-on-write), and a row past
/// the end is the CPU's error.
#[test]
fn lerp_rows_in_place() {
    for device in devices("lerp_rows_in_place") {
        for dtype in DTYPES {
            let (r, c) = (10, 13);
            let mut rng = Rng::new(600);
            let (xv, sv) = (rng.vec(r * c, -1.0, 1.0), rng.vec(r * c, -1.0, 1.0));
            let (x, src) = (pair(&xv, dtype, device), pair(&sv, dtype, device));
            let rows = labels_pair(&[7, 2, 9, 0], device);
            for t in [0.0, 0.5] {
                let (mut xd, mut xc) = (x.dev.clone(), x.cpu.clone());
                xd.lerp_rows(&src.dev, &rows.dev, t, c).unwrap();
                xc.lerp_rows(&src.cpu, &rows.cpu, t, c).unwrap();
                let terms: Vec<f64> = (0..r * c)
                    .map(|k| sv[k].abs() + t * (xv[k] - sv[k]).abs() + xv[k].abs())
                    .collect();
                let what = format!("{dtype} lerp_rows t={t}");
                check(
                    &what,
                    &xd,
                    &xc,
                    Scale::Terms(&terms),
                    Tolerance::kernel(dtype),
                );
                same_bits(&format!("{what} source"), &x.dev, &x.cpu);
            }
            let past = labels_pair(&[3, 10], device);
            let (mut xd, mut xc) = (x.dev.clone(), x.cpu.clone());
            let ed = xd.lerp_rows(&src.dev, &past.dev, 0.0, c).unwrap_err();
            let ec = xc.lerp_rows(&src.cpu, &past.cpu, 0.0, c).unwrap_err();
            assert_eq!(ed.to_string(), ec.to_string());
        }
    }
}

/// The backward rules of the robustness losses by finite differences, in
/// f64 on the device: the gradcheck suite's cases at their full (odd,
/// non-square) sizes, as `advgrad gradcheck` checks them.
#[test]
fn gradcheck_robust_losses_on_the_device() {
    use advgrad::gradcheck::suite::{self, CaseSize};
    let names = [
        "log_softmax",
        "exp",
        "ln",
        "pick",
        "kl_div",
        "dlr",
        "dlr_targeted",
    ];
    for device in devices("gradcheck_robust_losses_on_the_device") {
        for name in names {
            let case = suite::case_sized(name, CaseSize::Full)
                .unwrap()
                .expect("a built-in case");
            let report = case
                .to_device(device)
                .unwrap()
                .run(&advgrad::GradcheckOptions::default())
                .unwrap();
            assert!(report.passed(), "{name} on {device}: {report}");
        }
    }
}

/// `n` noisy copies of five fixed 4×4 templates (labels cycling), for the
/// attack and training tests: no data download, and small enough for the
/// emulator.
fn tiny_images(n: usize, seed: u64) -> advgrad::data::Dataset {
    const D: usize = 16;
    const CLASSES: usize = 5;
    let mut templates = Rng::new(1);
    let t = templates.vec(CLASSES * D, 0.2, 0.8);
    let mut rng = Rng::new(seed);
    let mut images = Vec::with_capacity(n * D);
    for i in 0..n {
        let c = i % CLASSES;
        for j in 0..D {
            let v = t[c * D + j] + rng.uniform(-0.3, 0.3);
            images.push(v.clamp(0.0, 1.0) as f32);
        }
    }
    let labels = (0..n).map(|i| (i % CLASSES) as u32).collect();
    advgrad::data::Dataset::from_parts(images, labels, D, CLASSES).unwrap()
}

fn tiny_config(
    epochs: usize,
    adversarial: Option<advgrad::train::AdvTraining>,
) -> advgrad::train::TrainConfig {
    advgrad::train::TrainConfig {
        epochs,
        batch_size: 50,
        optim: OptimConfig::new(OptimizerKind::Sgd, 0.1),
        schedule: advgrad::optim::Schedule::Constant,
        seed: 3,
        adversarial,
        quiet: true,
    }
}

/// The evaluation attacks end to end on the device: APGD-CE, APGD-DLR,
/// APGD-T, FAB-T, Square and the AutoAttack ensemble (and APGD-CE and
/// FAB-T in L2) on a 16-12-5 MLP trained on the CPU, the same seed on
/// both sides, give the CPU's robust accuracy.
#[test]
fn evaluation_attacks_give_the_cpus_robust_accuracy() {
    use advgrad::backend::Norm;
    let mut model = Model::new("16-12-5", Activation::Relu, 7).unwrap();
    advgrad::train::train(
        &mut model,
        &tiny_images(500, 2),
        None,
        &tiny_config(20, None),
    )
    .unwrap();
    let data = tiny_images(24, 99);
    let n = data.labels().len();
    let x = Tensor::from_vec(data.images().to_vec(), [n, 16]).unwrap();
    let y = Tensor::from_vec(data.labels().to_vec(), [n]).unwrap();
    let cases = [
        ("apgd-ce", Norm::Linf, 0.05),
        ("apgd-dlr", Norm::Linf, 0.05),
        ("apgd-t", Norm::Linf, 0.05),
        ("fab-t", Norm::Linf, 0.05),
        ("square", Norm::Linf, 0.05),
        ("autoattack", Norm::Linf, 0.05),
        ("apgd-ce", Norm::L2, 0.25),
        ("fab-t", Norm::L2, 0.25),
    ];
    for device in devices("evaluation_attacks_give_the_cpus_robust_accuracy") {
        let (dm, dx, dy) = (
            model.to_device(device).unwrap(),
            x.to_device(device).unwrap(),
            y.to_device(device).unwrap(),
        );
        for (name, norm, eps) in cases {
            let options = AttackOptions {
                norm: Some(norm),
                // Few steps and queries: each is several launches on the
                // emulator, and the comparison needs only the same path.
                steps: (name != "square").then_some(5),
                queries: matches!(name, "square" | "autoattack").then_some(50),
                targets: matches!(name, "apgd-t" | "fab-t").then_some(3),
                ..AttackOptions::default()
            };
            let attack = Attack::build(name, eps, &options).unwrap();
            let on_cpu = attack.outcome(&model, &x, &y, 5).unwrap();
            let on_dev = attack.outcome(&dm, &dx, &dy, 5).unwrap();
            assert_eq!(
                on_dev.adv.device(),
                device,
                "{name}: the points left the device"
            );
            let robust = |fooled: &[bool]| fooled.iter().filter(|f| !**f).count();
            let differ = (0..n)
                .filter(|&i| on_cpu.fooled[i] != on_dev.fooled[i])
                .count();
            assert_eq!(
                robust(&on_dev.fooled),
                robust(&on_cpu.fooled),
                "{name} {norm:?} eps {eps} on {device}: robust points (of {n}), {differ} differ"
            );
            let clean = model.predict(&x).unwrap().to_vec::<u32>().unwrap();
            let correct = clean
                .iter()
                .zip(data.labels())
                .filter(|(p, l)| p == l)
                .count();
            eprintln!(
                "{name} {norm:?} eps {eps}: {} of {n} robust on cpu and {device} ({correct} correct clean)",
                robust(&on_cpu.fooled)
            );
        }
    }
}

/// TRADES and MART training on the device: a few steps from the same
/// weights give the CPU's losses and weights (a chain of kernels: the
/// composite tolerance).
#[test]
fn trades_and_mart_train_on_the_device() {
    use advgrad::train::{train, AdvTraining};
    let data = tiny_images(100, 2);
    for device in devices("trades_and_mart_train_on_the_device") {
        for adv in [
            AdvTraining::Trades {
                eps: 0.1,
                steps: 3,
                alpha: 0.05,
                beta: 6.0,
            },
            AdvTraining::Mart {
                eps: 0.1,
                steps: 3,
                alpha: 0.05,
                beta: 6.0,
            },
        ] {
            let start = Model::new("16-12-5", Activation::Relu, 7).unwrap();
            let (mut mc, mut md) = (start.clone(), start.to_device(device).unwrap());
            let rc = train(&mut mc, &data, None, &tiny_config(1, Some(adv))).unwrap();
            let rd = train(&mut md, &data, None, &tiny_config(1, Some(adv))).unwrap();
            assert_eq!(md.device(), device);
            let t = Tolerance::composite(DType::F32);
            let (lc, ld) = (rc.epochs[0].train_loss, rd.epochs[0].train_loss);
            assert_close(
                &format!("{adv:?} loss on {device}"),
                &[ld],
                &[lc],
                Scale::Value,
                t,
            );
            for ((pd, pc), name) in md.params().iter().zip(mc.params()).zip(mc.param_names()) {
                check(
                    &format!("{adv:?} {name} on {device}"),
                    pd.storage(),
                    pc.storage(),
                    Scale::Value,
                    t,
                );
            }
        }
    }
}

/// The bound of `|dev − cpu|` for a half product, per unit of `Σ|a·b|`:
/// both round the operands to the half type the same way (to nearest
/// even) and multiply them exactly, so they differ only in the order of
/// their f32 sums, each within `γ(k + 16)·(1 + u_h)²` of the exact product
/// of the rounded operands (README's bound; the 16 covers the CPU's
/// blocked sums and the device's split-K reduction).
fn half_product_tolerance(k: usize, half: DType) -> Tolerance {
    let u = 2f64.powi(-24);
    let n = (k + 16) as f64;
    let gamma = n * u / (1.0 - n * u);
    let u_h = if half == DType::BF16 {
        2f64.powi(-8)
    } else {
        2f64.powi(-11)
    };
    Tolerance {
        tol: 2.0 * gamma * (1.0 + u_h).powi(2),
        floor: 1e-30,
    }
}

/// The tensor-core matmul (`matmul_half.cu`) against the CPU's half gemm:
/// bf16 and f16, with f32 operands under autocast (rounded while staged),
/// half operands on the device, and one of each; every transpose on odd,
/// non-square sizes (edges of every kind, k not a multiple of 16 or 32,
/// empty products), and the MLP's real shapes at batch 128 (forward
/// 784 → 256, split in depth ranges, its weight gradient, and the
/// 256 → 10 head), through `matmul` and `linear_act` with each activation.
#[test]
fn half_matmul_matches_the_cpu_half_gemm() {
    use advgrad::precision::Precision;
    const LAYOUTS: [(bool, bool); 4] = [(false, false), (true, false), (false, true), (true, true)];
    let mut shapes: Vec<(usize, usize, usize, bool, bool)> = Vec::new();
    for (m, n, k) in [
        (37, 29, 41),
        (1, 1, 1),
        (130, 67, 65),
        (5, 3, 0),
        (0, 4, 3),
        (33, 1, 100),
        (64, 64, 32),
        (72, 40, 48),
        // Aligned half operands over 7 unsplit slices: the cp.async
        // stages refilled while the other is multiplied.
        (64, 72, 200),
    ] {
        for (ta, tb) in LAYOUTS {
            shapes.push((m, n, k, ta, tb));
        }
    }
    shapes.push((128, 256, 784, false, true));
    shapes.push((256, 784, 128, true, false));
    shapes.push((128, 10, 256, false, true));
    for device in devices("half_matmul_matches_the_cpu_half_gemm") {
        for half in [DType::BF16, DType::F16] {
            let precision = Precision::of_dtype(half);
            for (s, &(m, n, k, a_trans, b_trans)) in shapes.iter().enumerate() {
                // The emulator runs tensor-core kernels slowly (a warp
                // barrier per WMMA call), so to stay within seconds: f32
                // operands under autocast everywhere, and alternately
                // both in the half type or A half and B f32, each on every
                // layout of half the odd shapes; f16 (the same kernel
                // template) on half the odd shapes, bf16 on all and on the
                // MLP's.
                let big = m * n * k > 1 << 20;
                let alternate = (s / LAYOUTS.len()) % 2 == 1;
                if half == DType::F16 && (big || alternate) {
                    continue;
                }
                let mixed = if alternate {
                    (half, DType::F32)
                } else {
                    (half, half)
                };
                let storages: &[(DType, DType)] = if big {
                    &[(DType::F32, DType::F32)]
                } else {
                    &[(DType::F32, DType::F32), mixed]
                };
                for (v, &(sa, sb)) in storages.iter().enumerate() {
                    let mut rng = Rng::new(500 + 10 * s as u64 + v as u64);
                    let (av, bv) = (rng.vec(m * k, -1.0, 1.0), rng.vec(k * n, -1.0, 1.0));
                    let (a, b) = (pair(&av, sa, device), pair(&bv, sb, device));
                    let d = MatmulDims {
                        m,
                        n,
                        k,
                        a_trans,
                        b_trans,
                    };
                    let terms = product_terms(&av, &bv, d);
                    let what =
                        format!("{half} matmul {m}x{n}x{k} ta={a_trans} tb={b_trans} {sa}·{sb}");
                    let t = half_product_tolerance(k, half);
                    let dev = a.dev.matmul_in(&b.dev, d, precision).unwrap();
                    let cpu = a.cpu.matmul_in(&b.cpu, d, precision).unwrap();
                    assert_eq!(cpu.dtype(), DType::F32);
                    check(&what, &dev, &cpu, Scale::Terms(&terms), t);
                    if v == 0 && s % 3 == 0 {
                        // linear_act: the bias and activation in f32 after
                        // the half product (and after the split-K sum).
                        let act = Activation::ALL[s % 9 / 3];
                        let bias = pair(&rng.vec(n, -0.5, 0.5), DType::F32, device);
                        let dev = a
                            .dev
                            .matmul_bias_act_in(&b.dev, d, &bias.dev, act, precision)
                            .unwrap();
                        let cpu = a
                            .cpu
                            .matmul_bias_act_in(&b.cpu, d, &bias.cpu, act, precision)
                            .unwrap();
                        let terms: Vec<f64> = terms.iter().map(|t| t + 0.5).collect();
                        check(
                            &format!("{what} +bias {act}"),
                            &dev,
                            &cpu,
                            Scale::Terms(&terms),
                            t,
                        );
                    }
                }
            }
        }
    }
}

/// A half bias is refused with a message that says what to do, and a
/// half device tensor makes the round trip.
#[test]
fn half_products_on_the_device_take_an_f32_bias() {
    use advgrad::precision::Precision;
    for device in devices("half_products_on_the_device_take_an_f32_bias") {
        let a = pair(&[1.0, 2.0, 3.0, 4.0], DType::BF16, device);
        assert_eq!(a.dev.dtype(), DType::BF16);
        assert_eq!(host(&a.dev), [1.0, 2.0, 3.0, 4.0]);
        let bias = pair(&[0.5, 0.5], DType::BF16, device);
        let d = MatmulDims {
            m: 2,
            n: 2,
            k: 2,
            a_trans: false,
            b_trans: false,
        };
        let e = a
            .dev
            .matmul_bias_act_in(&a.dev, d, &bias.dev, Activation::Relu, Precision::F32)
            .unwrap_err()
            .to_string();
        assert!(e.contains("f32 bias"), "{e}");
    }
}

/// One SGD step of an MLP with bf16 products (autocast) on the device
/// against the same step on the CPU: forward, backward (both products of
/// each layer in bf16) and update. The two differ only in the order of f32
/// sums, but a sum that lands on the other side of a bf16 rounding
/// boundary changes that operand of a later product by an ulp of bf16, so
/// the bound is a few bf16 unit roundoffs (2⁻⁸) of each value's terms.
#[test]
fn bf16_training_step_matches_the_cpu() {
    use advgrad::precision::{autocast, Precision};
    for device in devices("bf16_training_step_matches_the_cpu") {
        for kind in [OptimizerKind::Sgd, OptimizerKind::Adam] {
            let (model, x, y) = model_and_batch(DType::F32);
            let (lc, mc) = autocast(Precision::Bf16, || train_step(&model, &x, &y, kind));
            let dm = model.to_device(device).unwrap();
            let (xd, yd) = (x.to_device(device).unwrap(), y.to_device(device).unwrap());
            let (ld, md) = autocast(Precision::Bf16, || train_step(&dm, &xd, &yd, kind));
            let t = Tolerance {
                tol: 4.0 * 2f64.powi(-8),
                floor: 1e-3,
            };
            let what = format!("bf16 {kind:?} step");
            check(
                &format!("{what} loss"),
                ld.storage(),
                lc.storage(),
                Scale::Value,
                t,
            );
            for ((pd, pc), name) in md.params().iter().zip(mc.params()).zip(mc.param_names()) {
                check(
                    &format!("{what} {name}"),
                    pd.storage(),
                    pc.storage(),
                    Scale::Value,
                    t,
                );
            }
            // And bf16 products differ from f32 ones by more than the
            // bound of the parity above allows between two f32 runs.
            let (lf, _) = train_step(&model, &x, &y, kind);
            let (l16, l32) = (host(lc.storage())[0], host(lf.storage())[0]);
            assert!(l16 != l32, "the bf16 step computed in f32");
        }
    }
}

// The kernels of convolutional networks (conv.cu, pool.cu): each against
// the CPU on odd geometries and on the small CNN's real layers, then a
// training step of that CNN and the gradient checks of the ops.

/// Convolutions: odd ones (stride 2, padding, KH ≠ KW, H ≠ W, channel
/// counts off the 64-wide tiles, a kernel larger than the input), then the
/// small CNN's `1x28x28-c16k5p2` and `16x14x14-c32k5p2` at batch 4.
fn conv_geometries() -> Vec<Conv2dDims> {
    let d = |n, c, (h, w), o, (kh, kw), stride, padding| Conv2dDims {
        batch: n,
        in_channels: c,
        height: h,
        width: w,
        out_channels: o,
        kernel_h: kh,
        kernel_w: kw,
        stride,
        padding,
    };
    vec![
        d(3, 5, (9, 7), 70, (3, 2), 2, 1),
        d(2, 3, (11, 13), 5, (5, 3), 1, 2),
        d(2, 2, (2, 3), 3, (4, 5), 1, 2),
        d(1, 4, (8, 10), 6, (5, 5), 2, 2),
        d(4, 1, (28, 28), 16, (5, 5), 1, 2),
        d(4, 16, (14, 14), 32, (5, 5), 1, 2),
    ]
}

/// `|v|` on the CPU in f64: operands whose products are the terms.
fn abs_cpu(v: &[f64]) -> Storage {
    let a: Vec<f64> = v.iter().map(|x| x.abs()).collect();
    Storage::Cpu(CpuStorage::from_f64_slice(&a, DType::F64))
}

#[test]
fn conv2d_forward_and_backward() {
    for device in devices("conv2d_forward_and_backward") {
        for dtype in DTYPES {
            for (s, d) in conv_geometries().into_iter().enumerate() {
                let mut rng = Rng::new(80 + s as u64);
                let xv = rng.vec(d.input_len(), -1.0, 1.0);
                let wv = rng.vec(d.weight_len(), -1.0, 1.0);
                let bv = rng.vec(d.out_channels, -1.0, 1.0);
                let gv = rng.vec(d.output_len(), -1.0, 1.0);
                let (x, w) = (pair(&xv, dtype, device), pair(&wv, dtype, device));
                let (b, g) = (pair(&bv, dtype, device), pair(&gv, dtype, device));
                // The terms: the same sums over the magnitudes, in f64.
                let (ax, aw, ab, ag) = (abs_cpu(&xv), abs_cpu(&wv), abs_cpu(&bv), abs_cpu(&gv));
                let terms = |s: Storage| host(&s);
                let t = Tolerance::kernel(dtype);
                let what = |k: &str| format!("{dtype} conv2d {k} {d:?}");

                let y_terms = terms(ax.conv2d(&aw, &ab, d).unwrap());
                check(
                    &what("y"),
                    &x.dev.conv2d(&w.dev, &b.dev, d).unwrap(),
                    &x.cpu.conv2d(&w.cpu, &b.cpu, d).unwrap(),
                    Scale::Terms(&y_terms),
                    t,
                );
                let dx_terms = terms(ag.conv2d_backward_input(&aw, d).unwrap());
                check(
                    &what("dx"),
                    &g.dev.conv2d_backward_input(&w.dev, d).unwrap(),
                    &g.cpu.conv2d_backward_input(&w.cpu, d).unwrap(),
                    Scale::Terms(&dx_terms),
                    t,
                );
                let (dw_terms, db_terms) = ag.conv2d_backward_params(&ax, d).unwrap();
                let (dw_terms, db_terms) = (terms(dw_terms), terms(db_terms));
                let (dwd, dbd) = g.dev.conv2d_backward_params(&x.dev, d).unwrap();
                let (dwc, dbc) = g.cpu.conv2d_backward_params(&x.cpu, d).unwrap();
                check(&what("dw"), &dwd, &dwc, Scale::Terms(&dw_terms), t);
                check(&what("db"), &dbd, &dbc, Scale::Terms(&db_terms), t);
            }
        }
    }
}

/// Wrong lengths and mixed types are errors on the device, as on the CPU.
#[test]
fn conv2d_checks_its_operands() {
    let d = conv_geometries()[0];
    for device in devices("conv2d_checks_its_operands") {
        let x = pair(&vec![0.5; d.input_len()], DType::F32, device);
        let w = pair(&vec![0.5; d.weight_len()], DType::F32, device);
        let short = pair(&vec![0.5; d.out_channels - 1], DType::F32, device);
        let e = x.dev.conv2d(&w.dev, &short.dev, d).unwrap_err();
        assert!(e.to_string().contains("the bias has 69 elements"), "{e}");
        let b64 = pair(&vec![0.5; d.out_channels], DType::F64, device);
        let e = x.dev.conv2d(&w.dev, &b64.dev, d).unwrap_err();
        assert!(matches!(e, advgrad::Error::DTypeMismatch { .. }), "{e}");
        let e = w.dev.conv2d_backward_params(&x.dev, d).unwrap_err();
        assert!(e.to_string().contains("conv2d_backward"), "{e}");
        let p = PoolDims {
            planes: 3,
            height: 4,
            width: 4,
            kernel: 2,
        };
        let e = x.dev.max_pool2d(p).unwrap_err();
        assert!(e.to_string().contains("max_pool2d: the input has"), "{e}");
    }
}

#[test]
fn pooling_forward_and_backward() {
    // Odd planes with leftover rows and columns, K = 3, and the small
    // CNN's pools at batch 4 (16×28×28 and 32×14×14).
    let cases = [
        (6, 7, 5, 2),
        (3, 9, 10, 3),
        (64, 28, 28, 2),
        (128, 14, 14, 2),
    ];
    for device in devices("pooling_forward_and_backward") {
        for dtype in DTYPES {
            for (s, &(planes, height, width, kernel)) in cases.iter().enumerate() {
                let d = PoolDims {
                    planes,
                    height,
                    width,
                    kernel,
                };
                let mut rng = Rng::new(90 + s as u64);
                // Ties and a NaN in the windows.
                let mut xv: Vec<f64> = (0..d.input_len())
                    .map(|_| f64::from(rng.below(5)) * 0.25)
                    .collect();
                xv[3] = f64::NAN;
                let gv = rng.vec(d.output_len(), -1.0, 1.0);
                let (x, g) = (pair(&xv, dtype, device), pair(&gv, dtype, device));
                let what = |k: &str| format!("{dtype} {k} {d:?}");
                same_bits(
                    &what("max_pool2d"),
                    &x.dev.max_pool2d(d).unwrap(),
                    &x.cpu.max_pool2d(d).unwrap(),
                );
                same_bits(
                    &what("max_pool2d backward"),
                    &g.dev.max_pool2d_backward(&x.dev, d).unwrap(),
                    &g.cpu.max_pool2d_backward(&x.cpu, d).unwrap(),
                );
                same_bits(
                    &what("avg_pool2d"),
                    &x.dev.avg_pool2d(d).unwrap(),
                    &x.cpu.avg_pool2d(d).unwrap(),
                );
                same_bits(
                    &what("avg_pool2d backward"),
                    &g.dev.avg_pool2d_backward(d).unwrap(),
                    &g.cpu.avg_pool2d_backward(d).unwrap(),
                );
            }
        }
    }
}

/// The small CNN `1x28x28-c16k5p2-mp2-c32k5p2-mp2-128-10` (and an odd one
/// with a stride-2 convolution and average pooling) in f32 and f64 at
/// batch 4.
fn cnn_and_batch(arch: &str, dtype: DType, seed: u64) -> (Model, Tensor, Tensor) {
    let mut model = Model::new(arch, Activation::Relu, seed).unwrap();
    for p in model.params_mut() {
        *p = p.to_dtype(dtype).unwrap();
    }
    let dims: Vec<usize> = arch
        .split('-')
        .next()
        .unwrap()
        .split('x')
        .map(|d| d.parse().unwrap())
        .collect();
    let classes: usize = arch.rsplit('-').next().unwrap().parse().unwrap();
    let n = 4;
    let mut rng = Rng::new(seed + 1);
    let len = n * dims.iter().product::<usize>();
    let x = Tensor::from_vec(rng.vec(len, 0.0, 1.0), [n, dims[0], dims[1], dims[2]])
        .unwrap()
        .to_dtype(dtype)
        .unwrap();
    let y = Tensor::from_vec(rng.labels(n, classes), [n]).unwrap();
    (model, x, y)
}

#[test]
fn cnn_training_step_stays_on_device() {
    let archs = [
        "1x28x28-c16k5p2-mp2-c32k5p2-mp2-128-10",
        "2x11x9-c5k3s2p1-ap2-c7k2-6-3",
    ];
    for device in devices("cnn_training_step_stays_on_device") {
        for dtype in DTYPES {
            // Adam's first step is lr·g/(|g| + ε): for a weight whose
            // gradient is near ε (ReLU and max-pooling leave many), the
            // f32 rounding of g, summed in another order on the device,
            // moves the step by far more than 1e-4 of the weight. In f32
            // the steps that are linear in g are compared.
            let kinds = match dtype {
                DType::F64 => [OptimizerKind::Sgd, OptimizerKind::Adam],
                _ => [OptimizerKind::Sgd, OptimizerKind::Momentum],
            };
            for (a, arch) in archs.iter().enumerate() {
                for kind in kinds {
                    let (model, x, y) = cnn_and_batch(arch, dtype, 110 + a as u64);
                    let (lc, mc) = train_step(&model, &x, &y, kind);
                    let dm = model.to_device(device).unwrap();
                    let (xd, yd) = (x.to_device(device).unwrap(), y.to_device(device).unwrap());
                    let (ld, md) = train_step(&dm, &xd, &yd, kind);
                    assert_eq!(md.device(), device);
                    let what = format!("{dtype} {arch} {kind:?} step");
                    let t = Tolerance::composite(dtype);
                    check_step(&what, (&ld, &md), (&lc, &mc), &model, t);
                }
            }
        }
    }
}

/// The backward rules of conv2d and the pools by finite differences, in
/// f64 on the device: the gradcheck suite's cases at their full (odd,
/// non-square) sizes, as `advgrad gradcheck` checks them. The suite's whole
/// CNN runs on the emulator in `tests/cli.rs` (`gradcheck --device emu`).
#[test]
fn gradcheck_conv_and_pool_on_the_device() {
    use advgrad::gradcheck::suite::{self, CaseSize};
    for device in devices("gradcheck_conv_and_pool_on_the_device") {
        for name in ["conv2d", "conv2d_same", "max_pool2d", "avg_pool2d"] {
            let case = suite::case_sized(name, CaseSize::Full)
                .unwrap()
                .expect("a built-in case");
            let report = case
                .to_device(device)
                .unwrap()
                .run(&advgrad::GradcheckOptions::default())
                .unwrap();
            assert!(report.passed(), "{name} on {device}: {report}");
        }
    }
}
