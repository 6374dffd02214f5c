//! An attack in twenty lines: FGSM on a few Fashion-MNIST test images.
//!
//! ```text
//! cargo run --release --example attack_in_twenty_lines [model.safetensors]
//! ```
//!
//! With a model file (from `advgrad train`) it attacks that model; without,
//! it first trains a small MLP for one epoch (a few seconds).

use advgrad::attack::{Attack, Fgsm};
use advgrad::data::{default_data_dir, Dataset, Split, FASHION_MNIST_CLASSES as NAMES};
use advgrad::nn::{load_model, Activation, Model};
use advgrad::optim::{OptimConfig, OptimizerKind, Schedule};
use advgrad::train::{train, TrainConfig};
use advgrad::{Result, Tensor};

fn main() -> Result<()> {
    let dir = default_data_dir();
    let model = match std::env::args().nth(1) {
        Some(path) => load_model(path.as_ref(), None)?,
        None => train_quickly(&Dataset::load(&dir, Split::Train)?)?,
    };
    // Eight test images, their labels, and FGSM with eps = 0.1:
    // x' = clip(x + 0.1·sign ∇ₓ loss).
    let test = Dataset::load(&dir, Split::Test)?.limit(8);
    let x = Tensor::from_vec(test.images().to_vec(), [test.rows(), test.features()])?;
    let y = Tensor::from_vec(test.labels().to_vec(), [test.rows()])?;
    let x_adv = Attack::Fgsm(Fgsm::new(0.1)).run(&model, &x, &y, 0)?;

    let clean = model.predict(&x)?.to_vec::<u32>()?;
    let adv = model.predict(&x_adv)?.to_vec::<u32>()?;
    println!("{:<12} {:<12} {:<12}", "true", "clean pred", "FGSM pred");
    for ((&t, &c), &a) in test.labels().iter().zip(&clean).zip(&adv) {
        let mark = if a != t { "  <- fooled" } else { "" };
        println!(
            "{:<12} {:<12} {:<12}{mark}",
            NAMES[t as usize], NAMES[c as usize], NAMES[a as usize]
        );
    }
    Ok(())
}

/// One epoch of plain SGD (lr 0.1, batches of 64) on `784-128-10`.
fn train_quickly(train_set: &Dataset) -> Result<Model> {
    let mut model = Model::new("784-128-10", Activation::Relu, 0)?;
    let cfg = TrainConfig {
        epochs: 1,
        batch_size: 64,
        optim: OptimConfig::new(OptimizerKind::Sgd, 0.1),
        schedule: Schedule::Constant,
        seed: 0,
        adversarial: None,
        quiet: true,
    };
    train(&mut model, train_set, None, &cfg)?;
    Ok(model)
}
