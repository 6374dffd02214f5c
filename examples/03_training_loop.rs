//! Chapter 3, the training loop written out: minibatch SGD on Fashion-MNIST
//! with nothing but the public API.
//!
//! ```text
//! cargo run --release --example 03_training_loop [model.safetensors]
//! ```
//!
//! Each step records the forward pass on a tape, takes the mean softmax
//! cross-entropy, runs `backward`, reads the gradient of every parameter
//! and moves each parameter by `−lr·grad`. The shuffles come from the seeded
//! generator, one permutation per epoch. These are the choices
//! `advgrad train` makes, so with the same settings,
//!
//! ```text
//! advgrad train --arch 784-128-10 --act relu --optim sgd --lr 0.1 --batch 128 \
//!     --epochs 2 --seed 0 --out model.safetensors
//! ```
//!
//! ends with the same parameters, bit for bit (`tests/examples.rs` compares
//! every tensor of the two model files).
//! The data is found as advgrad finds it (`--data` aside): `$ADVGRAD_DATA`,
//! Debian's `/usr/share/datasets/fashion-mnist`, then the cache.

use std::path::PathBuf;

use advgrad::data::{default_data_dir, Batches, Dataset, Rng, Split};
use advgrad::nn::{save_model, Activation, Model};
use advgrad::optim::{OptimConfig, Optimizer, OptimizerKind};
use advgrad::train::{batch_tensors, evaluate};
use advgrad::{Device, Result, Tape, Tensor};

const ARCH: &str = "784-128-10";
const EPOCHS: usize = 2;
const BATCH: usize = 128;
const LR: f64 = 0.1;
const SEED: u64 = 0;

fn main() -> Result<()> {
    let dir = default_data_dir();
    let train_set = Dataset::load(&dir, Split::Train)?;
    let test_set = Dataset::load(&dir, Split::Test)?;
    let mut model = Model::new(ARCH, Activation::Relu, SEED)?;
    let mut optimizer = Optimizer::new(OptimConfig::new(OptimizerKind::Sgd, LR), &model.params())?;
    let mut rng = Rng::new(SEED);
    let mut tape = Tape::new();
    let (mut images, mut labels) = (Vec::new(), Vec::new());
    println!("Chapter 3: the training loop, {ARCH} ReLU, SGD lr {LR}, batch {BATCH}, seed {SEED}");
    println!(
        "on all {} training images, {EPOCHS} epochs\n",
        train_set.rows()
    );

    for epoch in 1..=EPOCHS {
        let order = rng.permutation(train_set.rows());
        let (mut loss_sum, mut correct) = (0.0, 0);
        for idx in Batches::new(&order, BATCH, false)? {
            let (x, y) = batch_tensors(&train_set, idx, Device::Cpu, &mut images, &mut labels)?;
            // Forward: the parameters go on the tape as variables.
            tape.clear();
            let x = tape.constant(x);
            let forward = model.forward(&mut tape, x, true)?;
            let loss = tape.softmax_cross_entropy(forward.logits, &y)?;
            // Backward: ∂loss/∂θ for every parameter θ.
            tape.backward(loss)?;
            let grads: Vec<Tensor> = forward
                .params
                .iter()
                .filter_map(|&p| tape.grad(p).cloned())
                .collect();
            loss_sum += tape.value(loss)?.to_scalar()? * idx.len() as f64;
            correct += tape.value(forward.logits)?.argmax_rows()?.count_equal(&y)?;
            // The tape shares the parameters' storage; drop it before the
            // update writes them in place.
            tape.clear();
            // θ ← θ − lr·∂loss/∂θ
            optimizer.step(&mut model.params_mut(), &grads, LR)?;
        }
        let test = evaluate(&model, &test_set, 1000)?;
        println!(
            "epoch {epoch}: train loss {:.4}, train accuracy {:.2}%, test accuracy {:.2}%",
            loss_sum / train_set.rows() as f64,
            100.0 * correct as f64 / train_set.rows() as f64,
            100.0 * test.accuracy
        );
    }
    if let Some(out) = std::env::args().nth(1).map(PathBuf::from) {
        save_model(&model, &out)?;
        println!("saved {}", out.display());
    }
    Ok(())
}
