//! The optimiser step fused into the weight-gradient product
//! (`Model::optimizer_step`, `Tape::backward_deferring`,
//! `GradientProduct::step`, `BackendStorage::matmul_update`) leaves the parameters and the optimiser
//! state bit for bit where the gradients followed by `Optimizer::step`
//! leave them, for every rule and under bf16 and f16 autocast (where the
//! weights are stepped after the pass); a weight read by two ops is not
//! fused and keeps its gradient.

use advgrad::backend::cpu::CpuStorage;
use advgrad::backend::{BackendStorage, MatmulDims};
use advgrad::nn::{Activation, Model};
use advgrad::optim::{OptimConfig, Optimizer, OptimizerKind};
use advgrad::precision::{autocast, Precision};
use advgrad::tape::DeferredWeight;
use advgrad::{DType, Tape, Tensor};

fn configs() -> Vec<OptimConfig> {
    let sgd = OptimConfig::new(OptimizerKind::Sgd, 0.1);
    let momentum = OptimConfig::new(OptimizerKind::Momentum, 0.05);
    let adam = OptimConfig::new(OptimizerKind::Adam, 1e-3);
    vec![
        sgd,
        OptimConfig {
            weight_decay: 1e-2,
            ..sgd
        },
        momentum,
        OptimConfig {
            nesterov: true,
            weight_decay: 5e-4,
            ..momentum
        },
        adam,
        OptimConfig {
            weight_decay: 1e-4,
            ..adam
        },
    ]
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.to_vec::<f32>()
        .unwrap()
        .iter()
        .map(|v| v.to_bits())
        .collect()
}

/// A batch of `rows` examples of a model with `features` inputs.
fn batch(rows: usize, features: usize, classes: u32, seed: u64) -> (Tensor, Tensor) {
    let x = Tensor::rand_uniform([rows, features], 0.0, 1.0, seed, DType::F32);
    let y: Vec<u32> = (0..rows as u32)
        .map(|i| (i * 7 + seed as u32) % classes)
        .collect();
    (x, Tensor::from_vec(y, [rows]).unwrap())
}

#[test]
fn fused_steps_give_the_bits_of_gradients_then_update() {
    // Odd sizes (edge tiles in every direction) and a wide layer; weight
    // gradients split across threads summed in one `k` block (batch 256)
    // and in several (batch 600, a layer 1100 wide).
    for (arch, rows) in [
        ("13-37-29-5", 33),
        ("40-300-10", 33),
        ("200-700-10", 256),
        ("50-1100-10", 600),
    ] {
        for config in configs() {
            let mut plain = Model::new(arch, Activation::Relu, 3).unwrap();
            let mut fused = plain.clone();
            let mut plain_opt = Optimizer::new(config, &plain.params()).unwrap();
            let mut fused_opt = Optimizer::new(config, &fused.params()).unwrap();
            let mut tape = Tape::new();
            let features = plain.input_size();
            for step in 0..4 {
                let (x, y) = batch(rows + step, features, plain.classes() as u32, step as u64);
                let pass = plain.parameter_gradients(&mut tape, x.clone(), &y).unwrap();
                plain_opt
                    .step(&mut plain.params_mut(), &pass.grads, config.lr)
                    .unwrap();
                let (loss, logits) = fused
                    .optimizer_step(&mut tape, x, &y, &mut fused_opt, config.lr)
                    .unwrap();
                assert_eq!(bits(&loss), bits(&pass.loss), "{arch} {config:?}: loss");
                assert_eq!(
                    bits(&logits),
                    bits(&pass.logits),
                    "{arch} {config:?}: logits"
                );
                for (name, (p, f)) in plain
                    .param_names()
                    .iter()
                    .zip(plain.params().iter().zip(fused.params()))
                {
                    assert_eq!(bits(p), bits(f), "{arch} {config:?} step {step}: {name}");
                }
                for ((p1, p2), (f1, f2)) in plain_opt.buffers().iter().zip(fused_opt.buffers()) {
                    assert_eq!(bits(p1), bits(f1), "{arch} {config:?}: state 1");
                    assert_eq!(bits(p2), bits(f2), "{arch} {config:?}: state 2");
                }
            }
            assert_eq!(plain_opt.steps(), fused_opt.steps());
        }
    }
}

/// Under bf16 or f16 autocast the weight products have no fused form: the
/// weights are stepped from their gradients once the tape lets go of them,
/// and land on the same bits as the plain step.
#[test]
fn half_precision_steps_give_the_bits_of_gradients_then_update() {
    for precision in [Precision::Bf16, Precision::F16] {
        autocast(precision, || {
            for config in [configs()[0], configs()[4]] {
                let mut plain = Model::new("13-37-29-5", Activation::Relu, 5).unwrap();
                let mut fused = plain.clone();
                let mut plain_opt = Optimizer::new(config, &plain.params()).unwrap();
                let mut fused_opt = Optimizer::new(config, &fused.params()).unwrap();
                let mut tape = Tape::new();
                for step in 0..3 {
                    let (x, y) = batch(29 + step, 13, 5, step as u64);
                    let pass = plain.parameter_gradients(&mut tape, x.clone(), &y).unwrap();
                    plain_opt
                        .step(&mut plain.params_mut(), &pass.grads, config.lr)
                        .unwrap();
                    let (loss, _) = fused
                        .optimizer_step(&mut tape, x, &y, &mut fused_opt, config.lr)
                        .unwrap();
                    assert_eq!(bits(&loss), bits(&pass.loss), "{precision:?}: loss");
                    for (p, f) in plain.params().iter().zip(fused.params()) {
                        assert_eq!(bits(p), bits(f), "{precision:?} {config:?} step {step}");
                    }
                }
                let before = Model::new("13-37-29-5", Activation::Relu, 5).unwrap();
                assert_ne!(
                    bits(before.params()[0]),
                    bits(fused.params()[0]),
                    "{precision:?}: the first weight was never stepped"
                );
            }
        });
    }
}

#[test]
fn matmul_update_matches_matmul_then_update_for_every_operand_layout() {
    // One `k` block on one thread; several blocks; one block split across
    // threads.
    for (m, n, k) in [(37, 45, 19), (40, 1100, 600), (300, 200, 256)] {
        for config in configs() {
            let mut opt = Optimizer::new(config, &[]).unwrap();
            let (rule, _) = opt.begin_step(config.lr);
            for (a_trans, b_trans) in [(false, false), (false, true), (true, false), (true, true)] {
                let case = format!("{m}x{n}x{k} {a_trans} {b_trans} {config:?}");
                let a_shape = if a_trans { [k, m] } else { [m, k] };
                let b_shape = if b_trans { [n, k] } else { [k, n] };
                let a = Tensor::rand_uniform(a_shape, -1.0, 1.0, 1, DType::F32);
                let b = Tensor::rand_uniform(b_shape, -1.0, 1.0, 2, DType::F32);
                let p = Tensor::rand_uniform([m, n], -1.0, 1.0, 3, DType::F32);
                let (s1, s2) = match config.kind {
                    OptimizerKind::Sgd => (
                        Tensor::zeros([0], DType::F32),
                        Tensor::zeros([0], DType::F32),
                    ),
                    OptimizerKind::Momentum => (
                        Tensor::rand_uniform([m, n], -0.1, 0.1, 4, DType::F32),
                        Tensor::zeros([0], DType::F32),
                    ),
                    OptimizerKind::Adam => (
                        Tensor::rand_uniform([m, n], -0.1, 0.1, 4, DType::F32),
                        Tensor::rand_uniform([m, n], 0.0, 0.1, 5, DType::F32),
                    ),
                };
                let dims = MatmulDims {
                    m,
                    n,
                    k,
                    a_trans,
                    b_trans,
                };

                let (mut p_plain, mut s1_plain, mut s2_plain) = (p.clone(), s1.clone(), s2.clone());
                let grad = a.matmul_ex(&b, a_trans, b_trans).unwrap();
                p_plain
                    .storage_mut()
                    .update(
                        grad.storage(),
                        s1_plain.storage_mut(),
                        s2_plain.storage_mut(),
                        rule,
                    )
                    .unwrap();

                let (mut p_fused, mut s1_fused, mut s2_fused) = (p.clone(), s1.clone(), s2.clone());
                p_fused
                    .storage_mut()
                    .matmul_update(
                        a.storage(),
                        b.storage(),
                        dims,
                        s1_fused.storage_mut(),
                        s2_fused.storage_mut(),
                        rule,
                    )
                    .unwrap();
                assert!(
                    matches!(p_fused.storage().to_cpu().unwrap(), CpuStorage::F32(_)),
                    "{case}: matmul_update changed the dtype"
                );
                assert_ne!(
                    bits(&p_fused),
                    bits(&p),
                    "{case}: the parameter was not stepped"
                );
                assert_eq!(bits(&p_fused), bits(&p_plain), "{case}: parameter");
                assert_eq!(bits(&s1_fused), bits(&s1_plain), "{case}: state 1");
                assert_eq!(bits(&s2_fused), bits(&s2_plain), "{case}: state 2");
            }
        }
    }
}

#[test]
fn a_weight_read_by_two_ops_keeps_its_gradient() {
    let w = Tensor::rand_uniform([4, 6], -1.0, 1.0, 5, DType::F32);
    let (x, y) = batch(3, 6, 4, 1);
    let mut tape = Tape::new();
    let wv = tape.var(w.clone());
    let xv = tape.constant(x);
    let h = tape.matmul_ex(xv, wv, false, true).unwrap();
    let h2 = tape.matmul_ex(xv, wv, false, true).unwrap();
    let z = tape.add(h, h2).unwrap();
    let loss = tape.softmax_cross_entropy(z, &y).unwrap();
    let mut weights = [DeferredWeight::new(wv)];
    tape.backward_deferring(loss, &mut weights).unwrap();
    assert!(
        weights[0].product.is_none(),
        "a shared weight's gradient was left as one of its products"
    );
    let grad = tape.grad(wv).expect("the shared weight keeps its gradient");
    let mut reference = Tape::new();
    let wr = reference.var(w);
    let xr = reference.constant(tape.value(xv).unwrap().clone());
    let h = reference.matmul_ex(xr, wr, false, true).unwrap();
    let h2 = reference.matmul_ex(xr, wr, false, true).unwrap();
    let z = reference.add(h, h2).unwrap();
    let loss = reference.softmax_cross_entropy(z, &y).unwrap();
    reference.backward(loss).unwrap();
    assert_eq!(bits(grad), bits(reference.grad(wr).unwrap()));
}
