//! f16 and bf16 end to end: products through the tensor API within the
//! documented bound, the tape under autocast, model files stored in half
//! types, dynamic loss scaling on a planted case, mixed-precision training
//! and its checkpoints, and the clear errors of the devices without half
//! kernels.

mod sandbox;
mod support;

use std::collections::HashMap;

use advgrad::checkpoint;
use advgrad::data::Batches;
use advgrad::data::{Dataset, Split};
use advgrad::loss_scale::{scaled_gradient_step, LossScaler};
use advgrad::nn::{
    load_model, save_model, save_model_as, write_safetensors, Activation, Model, RawTensor,
};
use advgrad::optim::{OptimConfig, Optimizer, OptimizerKind, Schedule};
use advgrad::rng::Rng;
use advgrad::train::{
    evaluate, gradient_step, train, train_with, Checkpointing, SaveEvery, TrainConfig,
};
use advgrad::{autocast, DType, Device, Precision, Tape, Tensor};
use safetensors::{Dtype, SafeTensors};

/// The gemm's documented bound for one element against the products of
/// the f32 values before rounding: `γ(n)·Σ|a·b| + (2u_h + u_h²)·Σ|a·b|`,
/// `n = min(k, 256) + ⌈k/256⌉ + 1` (see `gemm::half`).
fn bound(k: usize, abs_sum: f64, precision: Precision) -> f64 {
    let u = 2f64.powi(-24);
    let n = (k.min(256) + k.div_ceil(256) + 1) as f64;
    let gamma = n * u / (1.0 - n * u);
    let uh = precision.unit_roundoff();
    // γ bounds the sums of the rounded operands, whose |a·b| exceed the
    // f32 ones by at most (1 + u_h)².
    gamma * abs_sum * (1.0 + uh).powi(2) + (2.0 * uh + uh * uh) * abs_sum
}

#[test]
fn bf16_and_f16_products_stay_within_the_bound_that_grows_with_k() {
    let mut rng = support::Rng::new(11);
    for precision in [Precision::Bf16, Precision::F16] {
        for &(m, k, n) in &[
            (7, 1, 5),
            (13, 300, 9),
            (33, 257, 17),
            (5, 1000, 3),
            (64, 784, 10),
        ] {
            for (a_trans, b_trans) in [(false, false), (false, true), (true, false), (true, true)] {
                let a = rng.vec(m * k, -2.0, 2.0);
                let b = rng.vec(k * n, -2.0, 2.0);
                let a32: Vec<f32> = a.iter().map(|&v| v as f32).collect();
                let b32: Vec<f32> = b.iter().map(|&v| v as f32).collect();
                let at =
                    Tensor::from_vec(a32.clone(), if a_trans { [k, m] } else { [m, k] }).unwrap();
                let bt =
                    Tensor::from_vec(b32.clone(), if b_trans { [n, k] } else { [k, n] }).unwrap();
                let c = at.matmul_in(&bt, a_trans, b_trans, precision).unwrap();
                assert_eq!(c.dtype(), DType::F32);
                let c = c.to_vec::<f32>().unwrap();
                // The same through stored half operands and through autocast.
                let (ah, bh) = (
                    at.to_dtype(precision.dtype()).unwrap(),
                    bt.to_dtype(precision.dtype()).unwrap(),
                );
                let stored = ah.matmul_ex(&bh, a_trans, b_trans).unwrap();
                assert_eq!(
                    stored.to_vec::<f32>().unwrap(),
                    c,
                    "{precision} stored operands"
                );
                let cast = autocast(precision, || at.matmul_ex(&bt, a_trans, b_trans)).unwrap();
                assert_eq!(cast.to_vec::<f32>().unwrap(), c, "{precision} autocast");
                let ai = |i: usize, p: usize| {
                    f64::from(a32[if a_trans { p * m + i } else { i * k + p }])
                };
                let bi = |p: usize, j: usize| {
                    f64::from(b32[if b_trans { j * k + p } else { p * n + j }])
                };
                let mut worst = 0.0f64;
                for i in 0..m {
                    for j in 0..n {
                        let exact: f64 = (0..k).map(|p| ai(i, p) * bi(p, j)).sum();
                        let abs: f64 = (0..k).map(|p| (ai(i, p) * bi(p, j)).abs()).sum();
                        let err = (f64::from(c[i * n + j]) - exact).abs();
                        let b = bound(k, abs, precision);
                        assert!(
                            err <= b,
                            "{precision} {m}x{k}x{n} ({a_trans},{b_trans}) [{i},{j}]: error {err:e} > bound {b:e}"
                        );
                        worst = worst.max(err / b);
                    }
                }
                assert!(worst > 0.0 || k == 1, "the products are rounded at all");
            }
        }
    }
    // f32 products stay exact f32 products: autocast f32 changes nothing.
    let a = Tensor::rand_uniform([9, 31], -1.0, 1.0, 3, DType::F32);
    let b = Tensor::rand_uniform([31, 4], -1.0, 1.0, 4, DType::F32);
    let plain = a.matmul(&b).unwrap().to_vec::<f32>().unwrap();
    let f32_in = a.matmul_in(&b, false, false, Precision::F32).unwrap();
    assert_eq!(f32_in.to_vec::<f32>().unwrap(), plain);
}

#[test]
fn half_tensors_multiply_but_other_ops_ask_for_f32() {
    let a = Tensor::rand_uniform([3, 4], -1.0, 1.0, 1, DType::F32);
    let b16 = a.to_dtype(DType::BF16).unwrap();
    let f16 = a.to_dtype(DType::F16).unwrap();
    assert_eq!(b16.dtype(), DType::BF16);
    let err = b16.matmul_ex(&f16, false, true).unwrap_err().to_string();
    assert!(err.contains("bf16") && err.contains("f16"), "{err}");
    let err = b16.relu().unwrap_err().to_string();
    assert!(err.contains("to_dtype(DType::F32)"), "{err}");
    let err = b16
        .matmul_ex(&a.to_dtype(DType::F64).unwrap(), false, true)
        .unwrap_err()
        .to_string();
    assert!(err.contains("f64"), "{err}");
    // f64 operands are never rounded, whatever the autocast setting.
    let a64 = a.to_dtype(DType::F64).unwrap();
    let exact = a64
        .matmul_ex(&a64, false, true)
        .unwrap()
        .to_vec::<f64>()
        .unwrap();
    let under = autocast(Precision::Bf16, || a64.matmul_ex(&a64, false, true)).unwrap();
    assert_eq!(under.to_vec::<f64>().unwrap(), exact);
}

#[test]
fn the_tape_records_the_precision_and_its_backward_products_use_it() {
    let x = Tensor::rand_uniform([6, 20], -1.0, 1.0, 5, DType::F32);
    let w = Tensor::rand_uniform([7, 20], -1.0, 1.0, 6, DType::F32);
    let b = Tensor::rand_uniform([7], -1.0, 1.0, 7, DType::F32);
    let labels = Tensor::from_vec(vec![0u32, 1, 2, 3, 4, 5], [6]).unwrap();
    let grads = |precision: Precision| {
        let mut tape = Tape::new();
        let (xv, wv, bv) = (
            tape.var(x.clone()),
            tape.var(w.clone()),
            tape.var(b.clone()),
        );
        let h = autocast(precision, || tape.linear_act(xv, wv, bv, Activation::Tanh)).unwrap();
        let loss = tape.softmax_cross_entropy(h, &labels).unwrap();
        // The backward pass runs outside the autocast scope: the recorded
        // precision decides.
        tape.backward(loss).unwrap();
        let printed = tape.to_string();
        let g = |v| tape.grad(v).unwrap().to_vec::<f32>().unwrap();
        (g(xv), g(wv), g(bv), printed)
    };
    let (gx32, gw32, gb32, _) = grads(Precision::F32);
    let (gx, gw, gb, printed) = grads(Precision::Bf16);
    assert!(printed.contains("@bf16"), "{printed}");
    // By hand: z̄ from the recorded bf16 forward, the products in bf16.
    let y = x
        .linear_act_in(&w, &b, Activation::Tanh, Precision::Bf16)
        .unwrap();
    let g = {
        let mut t = Tape::new();
        let yv = t.var(y.clone());
        let l = t.softmax_cross_entropy(yv, &labels).unwrap();
        t.backward(l).unwrap();
        t.grad(yv).unwrap().clone()
    };
    let z_bar = g.tanh_backward(&y).unwrap();
    let want_x = z_bar.matmul_in(&w, false, false, Precision::Bf16).unwrap();
    let want_w = z_bar.matmul_in(&x, true, false, Precision::Bf16).unwrap();
    assert_eq!(gx, want_x.to_vec::<f32>().unwrap());
    assert_eq!(gw, want_w.to_vec::<f32>().unwrap());
    assert_eq!(gb, z_bar.sum_rows().unwrap().to_vec::<f32>().unwrap());
    // And they differ from the f32 gradients, by a bf16-sized amount.
    let rel = |a: &[f32], b: &[f32]| {
        let d: f64 = a.iter().zip(b).map(|(x, y)| f64::from(x - y).powi(2)).sum();
        let n: f64 = b.iter().map(|y| f64::from(*y).powi(2)).sum();
        (d / n).sqrt()
    };
    let (rx, rw, rb) = (rel(&gx, &gx32), rel(&gw, &gw32), rel(&gb, &gb32));
    assert!(
        rx > 0.0 && rx < 0.05 && rw < 0.05 && rb < 0.05,
        "{rx} {rw} {rb}"
    );
}

#[test]
fn a_bf16_leaf_gets_an_f32_gradient() {
    let w = Tensor::rand_uniform([4, 3], -1.0, 1.0, 1, DType::F32)
        .to_dtype(DType::BF16)
        .unwrap();
    let x = Tensor::rand_uniform([2, 4], -1.0, 1.0, 2, DType::F32);
    let mut tape = Tape::new();
    let (xv, wv) = (tape.constant(x.clone()), tape.var(w.clone()));
    let y = tape.matmul(xv, wv).unwrap();
    let s = tape.sum(y).unwrap();
    tape.backward(s).unwrap();
    let g = tape.grad(wv).unwrap();
    assert_eq!(g.dtype(), DType::F32);
    // d(Σ x·W)/dW = xᵀ·1, with x rounded to bf16.
    let xr = x.to_dtype(DType::BF16).unwrap().to_f64_vec().unwrap();
    let g = g.to_f64_vec().unwrap();
    for r in 0..4 {
        for c in 0..3 {
            assert_eq!(g[r * 3 + c], xr[r] + xr[4 + r]);
        }
    }
}

/// A mixed-precision training run gathers its batches already rounded to
/// the half type (when the model's first layer is linear); that must give
/// the bits of rounding them inside the first layer's products: the same
/// loss, logits and gradients, and, stepped, the same weights.
#[test]
fn a_batch_rounded_as_gathered_gives_the_bits_of_an_f32_batch() {
    // Values with more bits than the half types keep, a tie and a
    // subnormal among them.
    let mut x = Tensor::rand_uniform([37, 64], 0.0, 1.0, 3, DType::F32)
        .to_vec::<f32>()
        .unwrap();
    x[5] = f32::from_bits(0x3F80_8000); // a bf16 tie: 1 + 2⁻⁸
    x[6] = 1e-40;
    let x = Tensor::from_vec(x, [37, 64]).unwrap();
    let labels = Tensor::from_vec((0..37u32).map(|i| i % 10).collect::<Vec<_>>(), [37]).unwrap();
    for precision in [Precision::Bf16, Precision::F16] {
        let rounded = x.to_dtype(precision.dtype()).unwrap();
        assert_ne!(
            rounded.to_f64_vec().unwrap(),
            x.to_f64_vec().unwrap(),
            "{precision}: the batch must need rounding"
        );
        let model = Model::new("64-48-32-10", Activation::Relu, 5).unwrap();
        assert!(model.first_layer_is_linear());
        let pass = |x: &Tensor| {
            autocast(precision, || {
                let step = model
                    .parameter_gradients(&mut Tape::new(), x.clone(), &labels)
                    .unwrap();
                let mut tensors = vec![step.loss, step.logits];
                tensors.extend(step.grads.iter().cloned());
                tensors
                    .iter()
                    .map(|t| t.to_vec::<f32>().unwrap())
                    .collect::<Vec<_>>()
            })
        };
        assert_eq!(pass(&x), pass(&rounded), "{precision}: gradients");
        let stepped = |x: &Tensor| {
            let mut model = model.clone();
            let mut opt = Optimizer::new(
                OptimConfig::new(OptimizerKind::Momentum, 0.05),
                &model.params(),
            )
            .unwrap();
            autocast(precision, || {
                for _ in 0..2 {
                    model
                        .optimizer_step(&mut Tape::new(), x.clone(), &labels, &mut opt, 0.05)
                        .unwrap();
                }
            });
            let params = model.params();
            params
                .iter()
                .map(|p| p.to_vec::<f32>().unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            stepped(&x),
            stepped(&rounded),
            "{precision}: stepped weights"
        );
    }
    let cnn = Model::new("1x12x10-c6k3p1-mp2-c8k3s2-16-4", Activation::Relu, 1).unwrap();
    assert!(!cnn.first_layer_is_linear());
}

/// `train` in bf16 and f16 (which gathers each batch rounded to the half
/// type) ends with the bits of the same steps taken by hand on f32
/// batches: the same shuffles and batches, `gradient_step` on each.
#[test]
fn mixed_precision_training_ends_as_steps_on_f32_batches_do() {
    let home = sandbox::temp_dir();
    let (train_set, _) = synthetic(home.path());
    let cfg = config(2, OptimizerKind::Sgd, 0.1);
    for precision in [Precision::Bf16, Precision::F16] {
        let mut trained = Model::new("64-32-10", Activation::Relu, 2).unwrap();
        autocast(precision, || train(&mut trained, &train_set, None, &cfg)).unwrap();

        let mut by_hand = Model::new("64-32-10", Activation::Relu, 2).unwrap();
        let mut opt = Optimizer::new(cfg.optim, &by_hand.params()).unwrap();
        let mut scaler = (precision == Precision::F16).then(LossScaler::new);
        let mut rng = Rng::new(cfg.seed);
        let mut tape = Tape::new();
        autocast(precision, || {
            for _ in 0..cfg.epochs {
                let order = rng.permutation(train_set.rows());
                for idx in Batches::new(&order, cfg.batch_size, false).unwrap() {
                    let (pixels, classes) = train_set.gather(idx).unwrap();
                    let x = Tensor::from_vec(pixels, [idx.len(), train_set.features()]).unwrap();
                    let y = Tensor::from_vec(classes, [idx.len()]).unwrap();
                    let (model, opt, tape) = (&mut by_hand, &mut opt, &mut tape);
                    match &mut scaler {
                        Some(s) => {
                            scaled_gradient_step(model, opt, tape, x, &y, 0.1, s).unwrap();
                        }
                        None => {
                            gradient_step(model, opt, tape, x, &y, 0.1).unwrap();
                        }
                    }
                }
            }
        });
        let bits = |m: &Model| {
            let params = m.params();
            params
                .iter()
                .map(|p| p.to_vec::<f32>().unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(bits(&trained), bits(&by_hand), "{precision}");
    }
}

/// A trained model of the test set's shape and the data to score it on.
fn trained_model() -> Option<(Model, Dataset)> {
    let train_set = support::fashion_mnist(Split::Train)?.limit(6000);
    let test_set = support::fashion_mnist(Split::Test)?.limit(2000);
    let mut model = Model::new("784-64-10", Activation::Relu, 3).unwrap();
    let cfg = TrainConfig {
        epochs: 1,
        batch_size: 64,
        optim: OptimConfig::new(OptimizerKind::Sgd, 0.1),
        schedule: Schedule::Constant,
        seed: 3,
        adversarial: None,
        quiet: true,
    };
    train(&mut model, &train_set, None, &cfg).unwrap();
    Some((model, test_set))
}

#[test]
fn f16_and_bf16_files_built_by_hand_load_and_score_like_the_f32_file() {
    let Some((model, test_set)) = trained_model() else {
        return;
    };
    let dir = sandbox::temp_dir();
    let f32_path = dir.path().join("f32.safetensors");
    save_model(&model, &f32_path).unwrap();
    let reference = evaluate(&load_model(&f32_path, None).unwrap(), &test_set, 500).unwrap();
    assert!(reference.accuracy > 0.6, "{reference:?}");
    for (dtype, name) in [(Dtype::F16, "f16"), (Dtype::BF16, "bf16")] {
        let raw: Vec<RawTensor> = model
            .param_names()
            .into_iter()
            .zip(model.params())
            .map(|(key, p)| {
                let v = p.to_vec::<f32>().unwrap();
                let bytes: Vec<u8> = match dtype {
                    Dtype::F16 => v
                        .iter()
                        .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
                        .collect(),
                    _ => v
                        .iter()
                        .flat_map(|&x| half::bf16::from_f32(x).to_le_bytes())
                        .collect(),
                };
                RawTensor {
                    name: key,
                    dtype,
                    shape: p.dims().to_vec(),
                    bytes,
                }
            })
            .collect();
        let path = dir.path().join(format!("{name}.safetensors"));
        let meta = HashMap::from([("activation".to_string(), "relu".to_string())]);
        write_safetensors(&path, &raw, meta).unwrap();
        let loaded = load_model(&path, None).unwrap();
        assert_eq!(loaded.params()[0].dtype(), DType::F32);
        let stats = evaluate(&loaded, &test_set, 500).unwrap();
        let points = 100.0 * (stats.accuracy - reference.accuracy).abs();
        assert!(points <= 0.5, "{name}: {stats:?} vs f32 {reference:?}");
        assert!(
            (stats.loss - reference.loss).abs() < 0.02,
            "{name}: {stats:?} vs {reference:?}"
        );
    }
}

#[test]
fn save_dtype_writes_half_tensors_that_load_back_rounded() {
    let model = Model::new("20-9-4", Activation::Sigmoid, 5).unwrap();
    let dir = sandbox::temp_dir();
    for (dtype, st) in [
        (DType::F32, Dtype::F32),
        (DType::F16, Dtype::F16),
        (DType::BF16, Dtype::BF16),
    ] {
        let path = dir.path().join(format!("{dtype}.safetensors"));
        save_model_as(&model, &path, dtype).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
        let meta = header.metadata().clone().unwrap();
        assert_eq!(meta["dtype"], dtype.to_string());
        let file = SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(file.tensor("0.weight").unwrap().dtype(), st);
        let data = dtype.size() * model.num_params();
        assert!(
            bytes.len() >= data && bytes.len() < data + 4096,
            "{dtype}: {} bytes",
            bytes.len()
        );
        let loaded = load_model(&path, None).unwrap();
        for (p, q) in model.params().iter().zip(loaded.params()) {
            let want = p.to_dtype(dtype).unwrap().to_dtype(DType::F32).unwrap();
            assert_eq!(q.to_vec::<f32>().unwrap(), want.to_vec::<f32>().unwrap());
        }
    }
    // f16 ends at 65504: a weight beyond it is named, not saved as ∞.
    let mut big = model.clone();
    let mut w = big.params()[0].to_vec::<f32>().unwrap();
    w[3] = 70000.0;
    *big.params_mut()[0] = Tensor::from_vec(w, [9, 20]).unwrap();
    let path = dir.path().join("big.safetensors");
    let err = save_model_as(&big, &path, DType::F16)
        .unwrap_err()
        .to_string();
    assert!(err.contains("0.weight") && err.contains("70000"), "{err}");
    assert!(!path.exists());
    save_model_as(&big, &path, DType::BF16).unwrap();
}

/// A model whose class 0 wins every input by a margin of about 20 logits.
fn confident_model() -> Model {
    let mut model = Model::new("8-6-3", Activation::Relu, 9).unwrap();
    let mut bias = vec![0.0f32; 3];
    bias[0] = 20.0;
    *model.params_mut()[3] = Tensor::from_vec(bias, [3]).unwrap();
    model
}

#[test]
fn loss_scaling_skips_exactly_the_planted_overflowing_steps() {
    // With one example per batch the gradient of the logits, scaled by
    // S = 2¹⁶, is S·(p − onehot(y)). For the label 0 that the model
    // predicts with p ≈ 1 it is tiny; for label 1 (p ≈ e⁻²⁰) its entry is
    // ≈ −65536, beyond f16's 65504: the f16 operand of the weight
    // gradient's product becomes −∞, and the step must be skipped. At
    // S = 2¹⁵ the same example is finite. Planted: label 1 at the steps
    // below; with a growth interval of 3 the scale comes back to 2¹⁶
    // after three clean steps.
    let planted = [0usize, 2, 4, 8, 9, 13];
    let steps = 16;
    let mut model = confident_model();
    let mut optimizer =
        Optimizer::new(OptimConfig::new(OptimizerKind::Adam, 1e-4), &model.params()).unwrap();
    let mut scaler = LossScaler::new().with_growth_interval(3);
    let mut model_scale = (65536.0f64, 0u32); // GradScaler's rule, by hand
    let mut tape = Tape::new();
    let x = Tensor::rand_uniform([1, 8], 0.0, 1.0, 4, DType::F32);
    let mut skipped = Vec::new();
    autocast(Precision::F16, || {
        for step in 0..steps {
            let label = u32::from(planted.contains(&step));
            let labels = Tensor::from_vec(vec![label], [1]).unwrap();
            let overflows = label == 1 && model_scale.0 >= 65536.0;
            let before: Vec<Vec<f32>> = model
                .params()
                .iter()
                .map(|p| p.to_vec::<f32>().unwrap())
                .collect();
            let adam_steps = optimizer.steps();
            let s = scaled_gradient_step(
                &mut model,
                &mut optimizer,
                &mut tape,
                x.clone(),
                &labels,
                1e-4,
                &mut scaler,
            )
            .unwrap();
            assert_eq!(s.scale, model_scale.0, "step {step}");
            assert!(s.stats.loss.is_finite());
            let after: Vec<Vec<f32>> = model
                .params()
                .iter()
                .map(|p| p.to_vec::<f32>().unwrap())
                .collect();
            if s.skipped {
                skipped.push(step);
                assert_eq!(before, after, "a skipped step {step} changed the model");
                assert_eq!(optimizer.steps(), adam_steps);
            } else {
                assert_ne!(before, after, "step {step} was taken but changed nothing");
                assert_eq!(optimizer.steps(), adam_steps + 1);
            }
            assert_eq!(
                s.skipped, overflows,
                "step {step} at scale {}",
                model_scale.0
            );
            // GradScaler: halve on overflow, double after 3 clean steps.
            model_scale = if overflows {
                (model_scale.0 / 2.0, 0)
            } else if model_scale.1 + 1 == 3 {
                (model_scale.0 * 2.0, 0)
            } else {
                (model_scale.0, model_scale.1 + 1)
            };
            assert_eq!((scaler.scale(), scaler.growth_tracker()), model_scale);
        }
    });
    // Step 0 overflows (2¹⁶ → 2¹⁵); 2 does not (2¹⁵); 1, 2, 3 clean bring
    // 2¹⁶ back before 4, which overflows; 8 comes after 5, 6, 7 clean and
    // overflows; 9 (2¹⁵) does not; 13 after 10, 11, 12 overflows.
    assert_eq!(skipped, vec![0, 4, 8, 13]);
    // Without autocast the same planted steps are all taken: the overflow
    // is f16's, not the loss's.
    let mut model = confident_model();
    let mut optimizer =
        Optimizer::new(OptimConfig::new(OptimizerKind::Adam, 1e-4), &model.params()).unwrap();
    let mut scaler = LossScaler::new();
    let labels = Tensor::from_vec(vec![1u32], [1]).unwrap();
    let s = scaled_gradient_step(
        &mut model,
        &mut optimizer,
        &mut tape,
        x,
        &labels,
        1e-4,
        &mut scaler,
    )
    .unwrap();
    assert!(!s.skipped);
}

fn synthetic(dir: &std::path::Path) -> (Dataset, Dataset) {
    sandbox::write_synthetic_data(dir, 600, 200, 8);
    (
        Dataset::load(dir, Split::Train).unwrap(),
        Dataset::load(dir, Split::Test).unwrap(),
    )
}

fn config(epochs: usize, kind: OptimizerKind, lr: f64) -> TrainConfig {
    TrainConfig {
        epochs,
        batch_size: 32,
        optim: OptimConfig::new(kind, lr),
        schedule: Schedule::Constant,
        seed: 2,
        adversarial: None,
        quiet: true,
    }
}

#[test]
fn mixed_precision_training_learns_and_differs_from_f32() {
    let home = sandbox::temp_dir();
    let (train_set, test_set) = synthetic(home.path());
    let mut finals = Vec::new();
    for precision in Precision::ALL {
        let mut model = Model::new("64-32-10", Activation::Relu, 2).unwrap();
        let report = autocast(precision, || {
            train(
                &mut model,
                &train_set,
                Some(&test_set),
                &config(3, OptimizerKind::Sgd, 0.1),
            )
        })
        .unwrap();
        let acc = report.epochs.last().unwrap().test_accuracy.unwrap();
        assert!(acc > 0.5, "{precision}: test accuracy {acc}");
        finals.push(model.params()[0].to_vec::<f32>().unwrap());
    }
    assert_ne!(finals[0], finals[1], "bf16 products changed nothing");
    assert_ne!(finals[0], finals[2], "f16 products changed nothing");
    assert_ne!(finals[1], finals[2]);
}

#[test]
fn an_f16_run_resumed_from_a_checkpoint_ends_with_the_same_bits_and_scale() {
    let home = sandbox::temp_dir();
    let (train_set, _) = synthetic(home.path());
    let cfg = config(2, OptimizerKind::Adam, 1e-2);
    let fresh = || Model::new("64-16-10", Activation::Relu, 4).unwrap();
    autocast(Precision::F16, || {
        let mut reference = fresh();
        train(&mut reference, &train_set, None, &cfg).unwrap();

        let path = home.path().join("f16.ckpt.safetensors");
        let mut first = fresh();
        let ckpt = Checkpointing {
            path: Some(path.clone()),
            every: SaveEvery::Steps(7),
            ..Checkpointing::default()
        };
        train_with(&mut first, &train_set, None, &cfg, ckpt).unwrap();
        let saved = checkpoint::load(&path).unwrap();
        assert_eq!(saved.progress.step, 35); // 19 steps per epoch
        let scaler = saved
            .loss_scaler
            .expect("an f16 checkpoint holds the scaler");
        assert_eq!((scaler.scale(), scaler.growth_tracker()), (65536.0, 35));
        assert_eq!(saved.settings["precision"], "f16");

        let mut resumed = fresh();
        let ckpt = Checkpointing {
            resume: Some(saved),
            ..Checkpointing::default()
        };
        train_with(&mut resumed, &train_set, None, &cfg, ckpt).unwrap();
        let bits = |m: &Model| -> Vec<Vec<f32>> {
            m.params()
                .iter()
                .map(|p| p.to_vec::<f32>().unwrap())
                .collect()
        };
        assert_eq!(bits(&resumed), bits(&reference));
    });
    // Resuming an f16 checkpoint in bf16 names the difference.
    let saved = checkpoint::load(&home.path().join("f16.ckpt.safetensors")).unwrap();
    let err = autocast(Precision::Bf16, || {
        let ckpt = Checkpointing {
            resume: Some(saved),
            ..Checkpointing::default()
        };
        train_with(&mut fresh(), &train_set, None, &cfg, ckpt)
    })
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("precision is f16 in the checkpoint, bf16 now"),
        "{err}"
    );
}

/// The emulated device runs half products on its tensor-core kernels
/// (`matmul_half.cu`): bf16 training there works, a bf16 tensor makes the
/// round trip, and an op without a half kernel says so.
#[test]
fn the_emulated_device_trains_with_half_products_and_holds_half_tensors() {
    let home = sandbox::temp_dir();
    let (train_set, _) = synthetic(home.path());
    let mut model = Model::new("64-16-10", Activation::Relu, 4)
        .unwrap()
        .to_device(Device::Emu)
        .unwrap();
    let before = model.params()[0].to_f64_vec().unwrap();
    autocast(Precision::Bf16, || {
        train(
            &mut model,
            &train_set.clone().limit(64),
            None,
            &config(1, OptimizerKind::Sgd, 0.1),
        )
    })
    .unwrap();
    assert_eq!(model.device(), Device::Emu);
    assert_ne!(model.params()[0].to_f64_vec().unwrap(), before);
    let t = Tensor::from_vec(vec![1.0f32, -2.5, 3.0], [3])
        .unwrap()
        .to_dtype(DType::BF16)
        .unwrap();
    let on_emu = t.to_device(Device::Emu).unwrap();
    assert_eq!(on_emu.dtype(), DType::BF16);
    assert_eq!(on_emu.to_f64_vec().unwrap(), [1.0, -2.5, 3.0]);
    let err = on_emu.relu().unwrap_err().to_string();
    assert!(err.contains("bf16"), "{err}");
}

#[test]
fn gradcheck_reports_reduced_precision_gradients_against_the_f64_reference() {
    let case = advgrad::gradcheck::suite::case("mlp").unwrap().unwrap();
    let mut errors = Vec::new();
    for precision in Precision::ALL {
        let options = advgrad::GradcheckOptions::for_precision(precision);
        let report = case.run_in(&options, precision).unwrap();
        assert!(report.passed(), "{precision}:\n{report}");
        assert_eq!(report.products, Some(precision));
        assert!(report
            .to_string()
            .contains(&format!("{precision} products")));
        errors.push(report.max_abs_err());
        if precision.is_half() {
            // At f32's tolerance the same gradient fails: the check sees
            // the rounding.
            let strict = advgrad::GradcheckOptions::for_precision(Precision::F32);
            assert!(
                !case.run_in(&strict, precision).unwrap().passed(),
                "{precision}"
            );
        }
    }
    // f32 < f16 < bf16, each by more than 4×.
    assert!(
        errors[0] * 4.0 < errors[2] && errors[2] * 4.0 < errors[1],
        "{errors:?}"
    );
}
