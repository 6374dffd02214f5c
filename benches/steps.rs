//! One training step and one PGD step of the 784-256-256-10 ReLU MLP, the
//! units every epoch and every attack is made of, on the CPU at rayon's
//! thread count (set `RAYON_NUM_THREADS`). Inputs are random pixels, so the
//! bench needs no data set; the work is the same as on Fashion-MNIST.
//!
//! - `step/train_sgd_b128`: forward, backward and an SGD update on a batch of
//!   128 (about 155 MFLOP), through [`gradient_step`], as `advgrad train`
//!   runs it.
//! - `step/pgd_linf_b1000`: one L∞ PGD step (eps 0.1, α 0.01) on a batch of
//!   1000: forward, the input gradient and the projected sign step (about
//!   1.07 GFLOP), as `advgrad attack` runs it.
//!
//! Each timed loop runs on a rayon pool thread, as the CLI's loops do.
//! Throughput is in FLOP/s ("elem/s"). `cargo bench --bench steps`;
//! `advgrad bench --op train_step|pgd` measures the same on the real data.

use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

use advgrad::attack::{Attack, AttackOptions};
use advgrad::backend::cpu::on_worker;
use advgrad::nn::{Activation, Model};
use advgrad::optim::{OptimConfig, Optimizer, OptimizerKind};
use advgrad::train::gradient_step;
use advgrad::{DType, Tape, Tensor};

const ARCH: &str = "784-256-256-10";

/// Multiply-adds of one forward pass of `ARCH` per example, in the first
/// layer and in the others.
const FIRST_MACS: u64 = 784 * 256;
const REST_MACS: u64 = 256 * 256 + 256 * 10;

/// A batch of `n` random pixels in [0, 1) and labels in 0..10.
fn batch(n: usize, seed: u64) -> (Tensor, Tensor) {
    let x = Tensor::rand_uniform([n, 784], 0.0, 1.0, seed, DType::F32);
    let labels: Vec<u32> = (0..n as u32).map(|i| (i * 7 + 3) % 10).collect();
    (x, Tensor::from_vec(labels, [n]).expect("n labels fill [n]"))
}

fn train_step(cr: &mut Criterion) {
    let mut group = cr.benchmark_group("step");
    let (x, y) = batch(128, 1);
    // Forward and weight gradient everywhere, input gradient past the
    // first layer: 155 MFLOP.
    group.throughput(Throughput::Elements(
        2 * 128 * (2 * FIRST_MACS + 3 * REST_MACS),
    ));
    let mut model = Model::new(ARCH, Activation::Relu, 0).expect("valid arch");
    let config = OptimConfig::new(OptimizerKind::Sgd, 0.01);
    let mut optimizer = Optimizer::new(config, &model.params()).expect("valid config");
    let mut tape = Tape::new();
    group.bench_function("train_sgd_b128", |b| {
        b.iter_custom(|iters| {
            on_worker(|| {
                let start = Instant::now();
                for _ in 0..iters {
                    gradient_step(&mut model, &mut optimizer, &mut tape, x.clone(), &y, 0.01)
                        .expect("a training step");
                }
                start.elapsed()
            })
        })
    });
    group.finish();
}

fn pgd_step(cr: &mut Criterion) {
    let mut group = cr.benchmark_group("step");
    let (x, y) = batch(1000, 2);
    // Forward and input gradient: two products per layer.
    group.throughput(Throughput::Elements(
        2 * 1000 * 2 * (FIRST_MACS + REST_MACS),
    ));
    let model = Model::new(ARCH, Activation::Relu, 0).expect("valid arch");
    let options = AttackOptions {
        steps: Some(1),
        alpha: Some(0.01),
        ..AttackOptions::default()
    };
    let attack = Attack::build("pgd", 0.1, &options).expect("valid attack");
    group.sample_size(30);
    group.bench_function("pgd_linf_b1000", |b| {
        b.iter_custom(|iters| {
            on_worker(|| {
                let start = Instant::now();
                for _ in 0..iters {
                    attack.run(&model, &x, &y, 0).expect("a PGD step");
                }
                start.elapsed()
            })
        })
    });
    group.finish();
}

criterion_group!(benches, train_step, pgd_step);
criterion_main!(benches);
