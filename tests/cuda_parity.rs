//! The CUDA backend against the CPU backend, on every device that runs it.
//!
//! Every op of `BackendStorage`, forward and backward, on odd and on the MLP's
//! real sizes (including the shapes that take the matmul's float4 paths) in
//! f32 and f64, run on the CUDA backend and on the CPU from the same inputs;
//! then a whole training step (forward, backward, optimiser update) and PGD,
//! each staying on the device; and gradcheck (finite differences) of a layer
//! in f64 on the device.
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
use advgrad::backend::cuda::{self, Verdict};
use advgrad::backend::{Activation, BackendStorage, Binary, MatmulDims, Storage, UpdateRule};
use advgrad::nn::Mlp;
use advgrad::optim::{OptimConfig, Optimizer, OptimizerKind};
use advgrad::{DType, Device, Tape, Tensor};
use support::{assert_close, compare, Rng, Scale, Tolerance};

/// The devices a test runs on: the emulator (unless `ADVGRAD_PARITY_EMU=0`,
/// as in the GPU bundle), and `cuda:0` where this build has CUDA and a GPU
/// is present (see the module docs).
fn devices(test: &str) -> Vec<Device> {
    let mut v = Vec::new();
    if cuda::parity_on_emulator() {
        v.push(Device::Emu);
    }
    match cuda::verdict(0) {
        Verdict::Run => v.push(Device::Cuda(0)),
        Verdict::Skip(why) => eprintln!("{test}: cuda:0 skipped: {why}"),
        Verdict::Fail(why) => panic!("{test}: {why}"),
    }
    assert!(
        !v.is_empty(),
        "{test}: {}=0 leaves out the emulator and cuda:0 is skipped: nothing to test",
        cuda::PARITY_EMU_VAR
    );
    v
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
            let terms: Vec<f64> = (0..m * n)
                .map(|ij| (0..k).map(|p| (at(ij / n, p) * bt(p, ij % n)).abs()).sum())
                .collect();
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
            for act in Activation::ALL {
                let want = a.cpu.matmul_bias_act(&b.cpu, d, &bias.cpu, act).unwrap();
                // The product's terms, the bias, and f's own rounding (its
                // slope is at most 1).
                let terms: Vec<f64> = host(&want)
                    .iter()
                    .enumerate()
                    .map(|(ij, y)| {
                        let (i, j) = (ij / n, ij % n);
                        let p: f64 = (0..k).map(|p| (at(i, p) * bt(p, j)).abs()).sum();
                        p + biasv[j].abs() + y.abs()
                    })
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
                    check_op(
                        &format!("{dtype} {act} backward n={n}"),
                        &g.dev.activation_backward(&saved_dev, act).unwrap(),
                        &g.cpu.activation_backward(&saved, act).unwrap(),
                    );
                }
                check_op(
                    &format!("{dtype} sign n={n}"),
                    &x.dev.sign().unwrap(),
                    &x.cpu.sign().unwrap(),
                );
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
fn model_and_batch(dtype: DType) -> (Mlp, Tensor, Tensor) {
    let mut model = Mlp::new("37-29-11", Activation::Relu, 7).unwrap();
    if dtype == DType::F64 {
        for l in &mut model.layers {
            l.weight = l.weight.to_dtype(dtype).unwrap();
            l.bias = l.bias.to_dtype(dtype).unwrap();
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
fn train_step(model: &Mlp, x: &Tensor, y: &Tensor, kind: OptimizerKind) -> (Tensor, Mlp) {
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
                check(
                    &format!("{what} loss"),
                    ld.storage(),
                    lc.storage(),
                    Scale::Value,
                    t,
                );
                // Each parameter is its old value plus the update: those are
                // its terms.
                let before = model.params();
                for (((pd, pc), p0), name) in md
                    .params()
                    .iter()
                    .zip(mc.params())
                    .zip(before)
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
        }
    }
}

/// One L∞ PGD step by hand: `x' = Π(x + α·sign(∇ₓ loss))`.
fn pgd_step(model: &Mlp, x0: &Tensor, x: &Tensor, y: &Tensor, eps: f64, alpha: f64) -> Tensor {
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
