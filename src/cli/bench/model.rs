//! The training and attack ops of `advgrad bench`, on the peer
//! comparison's protocol (see the constants in the parent module).

use advgrad::attack::{Attack, AttackOptions};
use advgrad::data::{Dataset, Split};
use advgrad::nn::{Activation, Mlp};
use advgrad::optim::{OptimConfig, Optimizer, OptimizerKind, Schedule};
use advgrad::tally::StepTally;
use advgrad::train::{batch_tensors, tallied_step, train, TrainConfig};
use advgrad::{Result, Tape, Tensor};

use super::{report, Args, Timer, ARCH, ATTACK_BATCH, BATCH, EPS};

/// FLOPs of one training step of `ARCH` at `BATCH`: forward `2·B·Σ in·out`,
/// backward twice that, minus the input gradient of the first layer, which
/// training does not compute.
fn train_step_flops() -> f64 {
    let b = BATCH as f64;
    let macs: f64 = [(784.0, 256.0), (256.0, 256.0), (256.0, 10.0)]
        .iter()
        .map(|(i, o)| i * o)
        .sum();
    6.0 * b * macs - 2.0 * b * 784.0 * 256.0
}

/// One SGD step on the first batch of the training set, repeated back to
/// back (as many steps per timed repeat as [`Timer::per_call`] needs); the
/// time per step reported. The step is the training loop's: its loss and
/// correct count go to a device-side tally, nothing is read back.
pub(super) fn train_step(args: &Args, timer: Timer) -> Result<()> {
    let device = timer.device;
    let data = args.data.load(Split::Train, Some(BATCH))?;
    let idx: Vec<usize> = (0..data.rows()).collect();
    let (x, y) = batch_tensors(&data, &idx, device, &mut Vec::new(), &mut Vec::new())?;
    let mut model = Mlp::new(ARCH, Activation::Relu, 0)?.to_device(device)?;
    let mut opt = Optimizer::new(OptimConfig::new(OptimizerKind::Sgd, 0.1), &model.params())?;
    let mut tape = Tape::new();
    let mut tally = StepTally::new(device)?;
    let seconds = timer.per_call(|| {
        tallied_step(
            &mut model,
            &mut opt,
            &mut tape,
            x.clone(),
            &y,
            0.1,
            &mut tally,
        )
    })?;
    let flops = train_step_flops();
    let gflops = flops / seconds / 1e9;
    report(
        args.json,
        "train_step",
        device,
        seconds,
        serde_json::json!({"batch": BATCH, "mflop": flops / 1e6, "gflops": gflops}),
        &format!("batch {BATCH}  {gflops:.1} GFLOP/s"),
    );
    Ok(())
}

/// One epoch of SGD over the training set (or its first `--limit`
/// examples), as `advgrad train` runs it; the time `train` measures.
pub(super) fn epoch(args: &Args, timer: Timer) -> Result<()> {
    let device = timer.device;
    let train_set = args.data.load(Split::Train, args.limit)?;
    let cfg = TrainConfig {
        epochs: 1,
        batch_size: BATCH,
        optim: OptimConfig::new(OptimizerKind::Sgd, 0.1),
        schedule: Schedule::Constant,
        seed: 0,
        adversarial: None,
        quiet: true,
    };
    let mut times = Vec::new();
    for _ in 0..timer.repeat.max(1) {
        let mut model = Mlp::new(ARCH, Activation::Relu, 0)?.to_device(device)?;
        times.push(train(&mut model, &train_set, None, &cfg)?.seconds);
    }
    let seconds = super::median(times);
    let rows = train_set.rows();
    let rate = rows as f64 / seconds;
    report(
        args.json,
        "epoch",
        device,
        seconds,
        serde_json::json!({"examples": rows, "examples_per_second": rate}),
        &format!("{rows} examples  {rate:.0} examples/s"),
    );
    Ok(())
}

/// FGSM or PGD (`--steps` steps of alpha eps/10) over the test set (or its
/// first `--limit` examples) in batches of 1000, on an untrained model.
pub(super) fn attack(args: &Args, timer: Timer, name: &str) -> Result<()> {
    let device = timer.device;
    let test_set: Dataset = args.data.load(Split::Test, args.limit)?;
    let model = Mlp::new(ARCH, Activation::Relu, 0)?.to_device(device)?;
    let options = AttackOptions {
        steps: (name == "pgd").then_some(args.steps),
        alpha: (name == "pgd").then_some(EPS / 10.0),
        ..AttackOptions::default()
    };
    let attack = Attack::build(name, EPS, &options)?;
    let order: Vec<usize> = (0..test_set.rows()).collect();
    let batches: Vec<(Tensor, Tensor)> = order
        .chunks(ATTACK_BATCH)
        .map(|idx| batch_tensors(&test_set, idx, device, &mut Vec::new(), &mut Vec::new()))
        .collect::<Result<_>>()?;
    let seconds = timer.per_repeat(|| {
        for (x, y) in &batches {
            attack.run(&model, x, y, 0)?;
        }
        Ok(())
    })?;
    let op = match name {
        "pgd" => format!("pgd{}", args.steps),
        other => other.to_string(),
    };
    let rows = test_set.rows();
    report(
        args.json,
        &op,
        device,
        seconds,
        serde_json::json!({"examples": rows, "eps": EPS}),
        &format!("{rows} examples  eps {EPS}"),
    );
    Ok(())
}
