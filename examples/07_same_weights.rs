//! Trains from given initial weights in a given batch order, then reports
//! test accuracy clean, under FGSM (eps 0.1) and under PGD-20 (step 0.01):
//! advgrad's half of `benches/peers/same_weights.py`, which compares it with
//! NumPy on the same weights and order.
//!
//! `cargo run --release --example 07_same_weights -- DIR EPOCHS [OPTIM LR]`,
//! where `DIR` holds `init.safetensors` (a model file, an MLP or a CNN) and
//! `order.u32` (one permutation of the 60k training examples per epoch,
//! little-endian u32), and `OPTIM LR` is the optimiser and its learning rate
//! (default `sgd 0.1`; `benches/peers/cnn_same_weights.py` uses `adam 1e-3`).

use std::path::PathBuf;

use advgrad::attack::{evaluate_attack, Attack, AttackOptions, EvalOptions};
use advgrad::data::{default_data_dir, Dataset, Split};
use advgrad::nn::load_model;
use advgrad::optim::{OptimConfig, Optimizer, OptimizerKind};
use advgrad::train::{batch_tensors, evaluate};
use advgrad::{Error, Result, Tape};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let usage = || Error::invalid("usage: 07_same_weights DIR EPOCHS [sgd|momentum|adam LR]");
    let (Some(dir), Some(epochs)) = (
        args.get(1),
        args.get(2).and_then(|e| e.parse::<usize>().ok()),
    ) else {
        return Err(usage());
    };
    let kind: OptimizerKind = args.get(3).map_or("sgd", String::as_str).parse()?;
    let lr = match args.get(4) {
        Some(lr) => lr.parse::<f64>().map_err(|_| usage())?,
        None => 0.1,
    };
    let dir = PathBuf::from(dir);
    let mut model = load_model(&dir.join("init.safetensors"), None)?;
    let path = dir.join("order.u32");
    let bytes = std::fs::read(&path).map_err(|source| Error::Io {
        path: path.clone(),
        source,
    })?;
    let order: Vec<usize> = bytes
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .collect();
    let train_set = Dataset::load(&default_data_dir(), Split::Train)?;
    let test_set = Dataset::load(&default_data_dir(), Split::Test)?;
    if order.len() != epochs * train_set.rows() {
        return Err(Error::file(
            path,
            format!("expected {epochs} permutations of {}", train_set.rows()),
        ));
    }

    let mut opt = Optimizer::new(OptimConfig::new(kind, lr), &model.params())?;
    let mut tape = Tape::new();
    let (mut images, mut labels) = (Vec::new(), Vec::new());
    for idx in order
        .chunks(train_set.rows())
        .flat_map(|epoch| epoch.chunks(128))
    {
        let (x, y) = batch_tensors(&train_set, idx, model.device(), &mut images, &mut labels)?;
        let pass = model.parameter_gradients(&mut tape, x, &y)?;
        opt.step(&mut model.params_mut(), &pass.grads, lr)?;
    }

    let clean = evaluate(&model, &test_set, 1000)?.accuracy;
    let eval = EvalOptions {
        batch_size: 1000,
        ..EvalOptions::default()
    };
    let mut robust = Vec::new();
    for (name, steps) in [("fgsm", None), ("pgd", Some(20))] {
        let options = AttackOptions {
            steps,
            alpha: steps.map(|_| 0.01),
            ..AttackOptions::default()
        };
        let attack = Attack::build(name, 0.1, &options)?;
        let report = evaluate_attack(&model, &test_set, &attack, &[0.1], &eval, &mut |_, _| {})?;
        robust.push(report.results[0].robust_accuracy);
    }
    println!(
        "advgrad : clean {clean:.4} fgsm {:.4} pgd20 {:.4}",
        robust[0], robust[1]
    );
    Ok(())
}
