//! The CUDA backend against the CPU backend, on a real GPU.
//!
//! Every op of `BackendStorage`, forward and backward, on odd sizes in f32
//! and f64, run on `Device::Cuda(0)` and on the CPU from the same inputs;
//! then a whole training step (forward, backward, optimiser update) and a
//! PGD step, each staying on the device, against the same on the CPU;
//! and gradcheck (finite differences) of a small network on the GPU in f64.
//!
//! Without a GPU (or without a driver) every test prints why it skipped and
//! passes, so `cargo test --features cuda` runs on CPU-only CI; the GPU
//! bundle (`scripts/gpu-bundle.sh`) runs them where a GPU is.
//!
//! Error measure: |gpu − cpu| ≤ tol · scale with scale = max(|cpu|, 1) per
//! element, or the sum of |terms| for sums and matrix products; tol = 1e-5
//! (f32) / 1e-12 (f64) for single ops and 1e-4 / 1e-10 for the composite
//! training and attack steps (several kernels' roundings add up). NaN must
//! match NaN.
#![cfg(feature = "cuda")]

use advgrad::attack::{Attack, AttackOptions};
use advgrad::backend::cpu::CpuStorage;
use advgrad::backend::{cuda, BackendStorage, Binary, MatmulDims, Storage, Unary, UpdateRule};
use advgrad::nn::{Activation, Mlp};
use advgrad::optim::{OptimConfig, Optimizer, OptimizerKind};
use advgrad::{DType, Device, Tape, Tensor};

const GPU: Device = Device::Cuda(0);

/// Whether a GPU is present; prints the reason to skip when not.
fn gpu_or_skip(test: &str) -> bool {
    match cuda::ensure_available() {
        Ok(()) => true,
        Err(e) => {
            eprintln!("skipping {test}: no usable GPU ({e})");
            false
        }
    }
}

/// xorshift64*: a tiny deterministic generator.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * ((self.next() >> 11) as f64 / (1u64 << 53) as f64)
    }
    fn vec(&mut self, n: usize, lo: f64, hi: f64) -> Vec<f64> {
        (0..n).map(|_| self.uniform(lo, hi)).collect()
    }
    fn labels(&mut self, n: usize, classes: usize) -> Vec<u32> {
        (0..n)
            .map(|_| (self.next() % classes as u64) as u32)
            .collect()
    }
}

/// The same values on the CPU and on the GPU.
struct Pair {
    cpu: Storage,
    gpu: Storage,
}

fn pair(values: &[f64], dtype: DType) -> Pair {
    let cpu = Storage::Cpu(CpuStorage::from_f64_slice(values, dtype));
    let gpu = cpu.to_device(GPU).expect("upload");
    assert_eq!(gpu.device(), GPU);
    Pair { cpu, gpu }
}

fn labels_pair(labels: &[u32]) -> Pair {
    let cpu = Storage::Cpu(CpuStorage::U32(labels.to_vec()));
    let gpu = cpu.to_device(GPU).expect("upload");
    Pair { cpu, gpu }
}

fn tol(dtype: DType, composite: bool) -> f64 {
    match (dtype, composite) {
        (DType::F64, false) => 1e-12,
        (DType::F64, true) => 1e-10,
        (_, false) => 1e-5,
        (_, true) => 1e-4,
    }
}

/// Compares a GPU result (which must still be on the GPU) with the CPU's.
#[track_caller]
fn check(what: &str, gpu: &Storage, cpu: &Storage, scale: Option<&[f64]>, composite: bool) {
    assert_eq!(gpu.device(), GPU, "{what}: result left the GPU");
    assert_eq!(gpu.dtype(), cpu.dtype(), "{what}: dtype");
    let g = gpu.to_cpu().expect("download").to_f64_vec();
    let c = cpu.to_cpu().expect("cpu").to_f64_vec();
    assert_eq!(g.len(), c.len(), "{what}: length");
    let t = tol(cpu.dtype(), composite);
    for (i, (&g, &w)) in g.iter().zip(&c).enumerate() {
        if w.is_nan() {
            assert!(g.is_nan(), "{what}[{i}]: got {g}, want NaN");
            continue;
        }
        let s = scale.map_or(w.abs().max(1.0), |s| s[i].max(1e-3));
        let err = (g - w).abs() / s;
        assert!(
            err <= t,
            "{what}[{i}]: gpu {g}, cpu {w}, rel err {err:e} > {t:e}"
        );
    }
}

fn exact(what: &str, gpu: &Storage, cpu: &Storage) {
    assert_eq!(gpu.device(), GPU, "{what}: result left the GPU");
    assert_eq!(gpu.to_cpu().unwrap(), cpu.to_cpu().unwrap(), "{what}");
}

const DTYPES: [DType; 2] = [DType::F32, DType::F64];

#[test]
fn matmul_all_layouts() {
    if !gpu_or_skip("matmul_all_layouts") {
        return;
    }
    for dtype in DTYPES {
        for (s, &(m, n, k)) in [
            (37, 29, 41),
            (1, 1, 1),
            (130, 257, 65),
            (5, 3, 0),
            (33, 1, 100),
        ]
        .iter()
        .enumerate()
        {
            for (a_trans, b_trans) in [(false, false), (true, false), (false, true), (true, true)] {
                let mut rng = Rng::new(10 + s as u64);
                let (av, bv) = (rng.vec(m * k, -1.0, 1.0), rng.vec(k * n, -1.0, 1.0));
                let (a, b) = (pair(&av, dtype), pair(&bv, dtype));
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
                let scale: Vec<f64> = (0..m * n)
                    .map(|ij| (0..k).map(|p| (at(ij / n, p) * bt(p, ij % n)).abs()).sum())
                    .collect();
                check(
                    &format!("{dtype} matmul {m}x{n}x{k} ta={a_trans} tb={b_trans}"),
                    &a.gpu.matmul(&b.gpu, d).unwrap(),
                    &a.cpu.matmul(&b.cpu, d).unwrap(),
                    Some(&scale),
                    false,
                );
            }
        }
    }
}

#[test]
fn elementwise_and_activations() {
    if !gpu_or_skip("elementwise_and_activations") {
        return;
    }
    for dtype in DTYPES {
        for (s, &n) in [1usize, 1073, 70_001].iter().enumerate() {
            let mut rng = Rng::new(20 + s as u64);
            let mut xv = rng.vec(n, -6.0, 6.0);
            if n > 3 {
                xv[1] = f64::NAN;
                xv[2] = 0.0;
                xv[3] = -0.0;
            }
            let x = pair(&xv, dtype);
            let y = pair(&rng.vec(n, -3.0, 3.0), dtype);
            let g = pair(&rng.vec(n, -1.0, 1.0), dtype);
            for op in [Unary::Relu, Unary::Sigmoid, Unary::Tanh, Unary::Sign] {
                let (fg, fc) = (x.gpu.unary(op).unwrap(), x.cpu.unary(op).unwrap());
                check(&format!("{dtype} {op:?} n={n}"), &fg, &fc, None, false);
                // Backward reads the input (ReLU) or the output (others); both
                // sides get the CPU's saved value so only the kernel differs.
                let saved = if op == Unary::Relu { x.cpu.clone() } else { fc };
                let saved_gpu = saved.to_device(GPU).unwrap();
                check(
                    &format!("{dtype} {op:?} backward n={n}"),
                    &g.gpu.unary_backward(&saved_gpu, op).unwrap(),
                    &g.cpu.unary_backward(&saved, op).unwrap(),
                    None,
                    false,
                );
            }
            for op in [Binary::Add, Binary::Sub, Binary::Mul] {
                check(
                    &format!("{dtype} {op:?} n={n}"),
                    &x.gpu.binary(&y.gpu, op).unwrap(),
                    &x.cpu.binary(&y.cpu, op).unwrap(),
                    None,
                    false,
                );
            }
            for (mul, add) in [(0.5, -2.0), (-1.5, 0.0)] {
                check(
                    &format!("{dtype} affine({mul}, {add}) n={n}"),
                    &y.gpu.affine(mul, add).unwrap(),
                    &y.cpu.affine(mul, add).unwrap(),
                    None,
                    false,
                );
            }
            check(
                &format!("{dtype} clamp n={n}"),
                &x.gpu.clamp(-1.0, 0.5).unwrap(),
                &x.cpu.clamp(-1.0, 0.5).unwrap(),
                None,
                false,
            );
            let c = pair(&rng.vec(n, 0.0, 1.0), dtype);
            for (lo, hi) in [(0.0, 1.0), (0.2, 0.7)] {
                check(
                    &format!("{dtype} project_linf [{lo}, {hi}] n={n}"),
                    &y.gpu.project_linf(&c.gpu, 0.1, lo, hi).unwrap(),
                    &y.cpu.project_linf(&c.cpu, 0.1, lo, hi).unwrap(),
                    None,
                    false,
                );
            }
            let (mut ag, mut ac) = (y.gpu.clone(), y.cpu.clone());
            ag.axpy(-0.25, &g.gpu).unwrap();
            ac.axpy(-0.25, &g.cpu).unwrap();
            check(&format!("{dtype} axpy n={n}"), &ag, &ac, None, false);
            // In place on a clone: the original is unchanged.
            check(&format!("{dtype} axpy source"), &y.gpu, &y.cpu, None, false);
        }
    }
}

#[test]
fn rows_reductions_and_scalars() {
    if !gpu_or_skip("rows_reductions_and_scalars") {
        return;
    }
    for dtype in DTYPES {
        for (s, &(r, c)) in [(37, 29), (1, 1), (130, 257), (3, 70)].iter().enumerate() {
            let mut rng = Rng::new(30 + s as u64);
            let xv = rng.vec(r * c, -2.0, 2.0);
            let x = pair(&xv, dtype);
            let b = pair(&rng.vec(c, -2.0, 2.0), dtype);
            check(
                &format!("{dtype} add_row {r}x{c}"),
                &x.gpu.add_row(&b.gpu, c).unwrap(),
                &x.cpu.add_row(&b.cpu, c).unwrap(),
                None,
                false,
            );
            let col_abs: Vec<f64> = (0..c)
                .map(|j| (0..r).map(|i| xv[i * c + j].abs()).sum())
                .collect();
            check(
                &format!("{dtype} sum_rows {r}x{c}"),
                &x.gpu.sum_rows(c).unwrap(),
                &x.cpu.sum_rows(c).unwrap(),
                Some(&col_abs),
                false,
            );
            let abs: f64 = xv.iter().map(|v| v.abs()).sum();
            let (sg, sc) = (x.gpu.sum_all().unwrap(), x.cpu.sum_all().unwrap());
            check(
                &format!("{dtype} sum {r}x{c}"),
                &sg,
                &sc,
                Some(&[abs]),
                false,
            );
            // The backward of sum/mean: a broadcast of a device scalar.
            let n = r * c;
            check(
                &format!("{dtype} broadcast_scalar {n}"),
                &sc.to_device(GPU)
                    .unwrap()
                    .broadcast_scalar(n, 1.0 / n as f64)
                    .unwrap(),
                &sc.broadcast_scalar(n, 1.0 / n as f64).unwrap(),
                None,
                false,
            );
            // Argmax with ties and NaN.
            let mut tv: Vec<f64> = (0..r * c).map(|_| (rng.next() % 5) as f64).collect();
            if r > 2 && c > 3 {
                tv[c + 3] = f64::NAN;
                tv[2 * c + 1] = f64::NAN;
            }
            let t = pair(&tv, dtype);
            exact(
                &format!("{dtype} argmax {r}x{c}"),
                &t.gpu.argmax_rows(c).unwrap(),
                &t.cpu.argmax_rows(c).unwrap(),
            );
        }
    }
}

#[test]
fn softmax_cross_entropy_forward_and_backward() {
    if !gpu_or_skip("softmax_cross_entropy_forward_and_backward") {
        return;
    }
    for dtype in DTYPES {
        for (s, &(r, c)) in [(37, 29), (1, 1), (130, 257), (9, 10), (3, 70)]
            .iter()
            .enumerate()
        {
            let mut rng = Rng::new(40 + s as u64);
            let x = pair(&rng.vec(r * c, -8.0, 8.0), dtype);
            let y = labels_pair(&rng.labels(r, c));
            let (lg, pg) = x.gpu.softmax_xent(&y.gpu, c).unwrap();
            let (lc, pc) = x.cpu.softmax_xent(&y.cpu, c).unwrap();
            assert_eq!(lg.len(), 1);
            check(&format!("{dtype} xent loss {r}x{c}"), &lg, &lc, None, false);
            check(
                &format!("{dtype} xent probs {r}x{c}"),
                &pg,
                &pc,
                None,
                false,
            );
            // Backward from the CPU's probabilities and a device scalar g.
            let g = pair(&[0.75], dtype);
            let pcg = pc.to_device(GPU).unwrap();
            check(
                &format!("{dtype} xent backward {r}x{c}"),
                &pcg.softmax_xent_backward(&y.gpu, &g.gpu, c).unwrap(),
                &pc.softmax_xent_backward(&y.cpu, &g.cpu, c).unwrap(),
                None,
                false,
            );
        }
    }
    // An out-of-range label is the CPU's error, on the GPU too.
    let x = pair(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0], DType::F32);
    let y = labels_pair(&[1, 3]);
    let eg = x.gpu.softmax_xent(&y.gpu, 3).unwrap_err().to_string();
    let ec = x.cpu.softmax_xent(&y.cpu, 3).unwrap_err().to_string();
    assert_eq!(eg, ec);
}

#[test]
fn optimiser_updates_in_place() {
    if !gpu_or_skip("optimiser_updates_in_place") {
        return;
    }
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
            let (mut wp, gp) = (pair(&w, dtype), pair(&g, dtype));
            let mut s1 = pair(&m[..s1_len], dtype);
            let mut s2 = pair(&v[..s2_len], dtype);
            wp.gpu
                .update(&gp.gpu, &mut s1.gpu, &mut s2.gpu, rule)
                .unwrap();
            wp.cpu
                .update(&gp.cpu, &mut s1.cpu, &mut s2.cpu, rule)
                .unwrap();
            check(
                &format!("{dtype} {rule:?} w"),
                &wp.gpu,
                &wp.cpu,
                None,
                false,
            );
            check(
                &format!("{dtype} {rule:?} s1"),
                &s1.gpu,
                &s1.cpu,
                None,
                false,
            );
            check(
                &format!("{dtype} {rule:?} s2"),
                &s2.gpu,
                &s2.cpu,
                None,
                false,
            );
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

/// One forward/backward/update on `device`; returns the loss tensor (not
/// read) and the updated model.
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
    if !gpu_or_skip("training_step_stays_on_device") {
        return;
    }
    for dtype in DTYPES {
        for kind in [
            OptimizerKind::Sgd,
            OptimizerKind::Momentum,
            OptimizerKind::Adam,
        ] {
            let (model, x, y) = model_and_batch(dtype);
            let (lc, mc) = train_step(&model, &x, &y, kind);
            let gm = model.to_device(GPU).unwrap();
            let (lg, mg) = train_step(
                &gm,
                &x.to_device(GPU).unwrap(),
                &y.to_device(GPU).unwrap(),
                kind,
            );
            assert_eq!(mg.device(), GPU);
            let what = format!("{dtype} {kind:?} step");
            check(
                &format!("{what} loss"),
                lg.storage(),
                lc.storage(),
                None,
                true,
            );
            for ((pg, pc), name) in mg.params().iter().zip(mc.params()).zip(mc.param_names()) {
                check(
                    &format!("{what} {name}"),
                    pg.storage(),
                    pc.storage(),
                    None,
                    true,
                );
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
fn pgd_step_stays_on_device() {
    if !gpu_or_skip("pgd_step_stays_on_device") {
        return;
    }
    for dtype in DTYPES {
        let (model, x, y) = model_and_batch(dtype);
        let (gm, gx, gy) = (
            model.to_device(GPU).unwrap(),
            x.to_device(GPU).unwrap(),
            y.to_device(GPU).unwrap(),
        );
        let (eps, alpha) = (0.1, 0.025);
        let mut xc = x.clone();
        let mut xg = gx.clone();
        for _ in 0..3 {
            xc = pgd_step(&model, &x, &xc, &y, eps, alpha);
            xg = pgd_step(&gm, &gx, &xg, &gy, eps, alpha);
        }
        check(
            &format!("{dtype} 3 PGD steps"),
            xg.storage(),
            xc.storage(),
            None,
            true,
        );

        // The library's PGD end to end.
        let attack = Attack::build("pgd", eps, &AttackOptions::default()).unwrap();
        let ac = attack.run(&model, &x, &y, 1).unwrap();
        let ag = attack.run(&gm, &gx, &gy, 1).unwrap();
        check(
            &format!("{dtype} Attack::Pgd"),
            ag.storage(),
            ac.storage(),
            None,
            true,
        );
    }
}

#[test]
fn gradcheck_on_the_gpu_in_f64() {
    if !gpu_or_skip("gradcheck_on_the_gpu_in_f64") {
        return;
    }
    let mut rng = Rng::new(70);
    let (n, d, c) = (5, 7, 3);
    let on_gpu = |v: Vec<f64>, shape: [usize; 2]| {
        Tensor::from_vec(v, shape).unwrap().to_device(GPU).unwrap()
    };
    let x = on_gpu(rng.vec(n * d, -1.0, 1.0), [n, d]);
    let w = on_gpu(rng.vec(c * d, -1.0, 1.0), [c, d]);
    let b = Tensor::from_vec(rng.vec(c, -0.5, 0.5), [c])
        .unwrap()
        .to_device(GPU)
        .unwrap();
    let y = Tensor::from_vec(rng.labels(n, c), [n])
        .unwrap()
        .to_device(GPU)
        .unwrap();
    for act in [Activation::Sigmoid, Activation::Tanh, Activation::Relu] {
        let report = advgrad::gradcheck(
            |tape, v| {
                let h = advgrad::nn::Linear::record(tape, v[0], v[1], v[2])?;
                let h = act.record(tape, h)?;
                tape.softmax_cross_entropy(h, &y)
            },
            &[x.clone(), w.clone(), b.clone()],
            &advgrad::GradcheckOptions::default(),
        )
        .unwrap();
        assert!(report.passed(), "{act:?} on the GPU: {report}");
    }
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
    assert!(t.to_device(GPU).is_err());
}
