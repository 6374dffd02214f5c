//! The training and attack ops of `advgrad bench`, on the peer
//! comparison's protocol (see the constants in the parent module).

use advgrad::attack::{Attack, AttackOptions};
use advgrad::data::{Dataset, Split};
use advgrad::nn::{parse_arch, Activation, Model};
use advgrad::optim::{OptimConfig, Optimizer, OptimizerKind, Schedule};
use advgrad::tally::StepTally;
use advgrad::train::{
    batch_tensors, fused_updates, tallied_step, train, with_loop_threads, TrainConfig,
};
use advgrad::{Result, Tape, Tensor};

use super::{report, synthetic, Args, Timer, ARCH, ATTACK_BATCH, BATCH, EPS};

impl Args {
    /// The model of the training and attack ops: `--arch`, or the peers'
    /// protocol's MLP.
    fn arch(&self) -> &str {
        self.arch.as_deref().unwrap_or(ARCH)
    }

    /// The batch size of the training ops: `--batch`, or the protocol's.
    fn batch(&self) -> Result<usize> {
        match self.batch {
            Some(0) => Err(advgrad::Error::invalid(
                "advgrad bench: --batch must be at least 1",
            )),
            Some(b) => Ok(b),
            None => Ok(BATCH),
        }
    }
}

/// FLOPs of one training step of the model `arch` at batch `b`: forward
/// `2·b·Σ macs` over its linear and convolution layers (`in·out` for a
/// linear layer, `O·OH·OW·C·K²` for a convolution), backward twice that,
/// minus the input gradient of the first layer, which training does not
/// compute.
fn train_step_flops(arch: &str, b: usize) -> Result<f64> {
    let layers = parse_arch(arch)?.layer_macs();
    let b = b as f64;
    let macs: f64 = layers.iter().map(|(m, _)| m).sum();
    let first: f64 = layers
        .iter()
        .filter(|(_, first)| *first)
        .map(|(m, _)| m)
        .sum();
    Ok(6.0 * b * macs - 2.0 * b * first)
}

/// One SGD step on the first batch of the training set, repeated back to
/// back (as many steps per timed repeat as [`Timer::per_call`] needs); the
/// time per step reported. The step is the training loop's: its loss and
/// correct count go to a device-side tally, nothing is read back.
pub(super) fn train_step(args: &Args, timer: Timer) -> Result<()> {
    let device = timer.device;
    let batch = args.batch()?;
    let data = args.data.load(Split::Train, Some(batch))?;
    let idx: Vec<usize> = (0..data.rows()).collect();
    let (x, y) = batch_tensors(&data, &idx, device, &mut Vec::new(), &mut Vec::new())?;
    let mut model = Model::new(args.arch(), Activation::Relu, 0)?.to_device(device)?;
    let mut opt = Optimizer::new(OptimConfig::new(OptimizerKind::Sgd, 0.1), &model.params())?;
    let mut tape = Tape::new();
    let mut tally = StepTally::new(device)?;
    let seconds = with_loop_threads(device, || {
        timer.per_call(|| {
            tallied_step(
                &mut model,
                &mut opt,
                &mut tape,
                x.clone(),
                &y,
                0.1,
                &mut tally,
            )
        })
    })?;
    let flops = train_step_flops(args.arch(), batch)?;
    let gflops = flops / seconds / 1e9;
    report(
        args.json,
        "train_step",
        device,
        seconds,
        serde_json::json!({"arch": args.arch(), "batch": batch, "mflop": flops / 1e6, "gflops": gflops}),
        &format!("{} batch {batch}  {gflops:.1} GFLOP/s", args.arch()),
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
        batch_size: args.batch()?,
        optim: OptimConfig::new(OptimizerKind::Sgd, 0.1),
        schedule: Schedule::Constant,
        seed: 0,
        adversarial: None,
        quiet: true,
    };
    let mut times = Vec::new();
    for _ in 0..timer.repeat.max(1) {
        let mut model = Model::new(args.arch(), Activation::Relu, 0)?.to_device(device)?;
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
        serde_json::json!({"examples": rows, "examples_per_second": rate, "arch": args.arch()}),
        &format!("{} {rows} examples  {rate:.0} examples/s", args.arch()),
    );
    Ok(())
}

/// One SGD step (lr 0.1) as training takes it (`tallied_step`: the
/// weights stepped inside their gradient products unless
/// `ADVGRAD_FUSED_UPDATE=0`, and no read of the loss, so a device runs the
/// steps back to back), without the loss and accuracy statistics.
fn lean_step(
    model: &mut Model,
    opt: &mut Optimizer,
    tape: &mut Tape,
    x: &Tensor,
    y: &Tensor,
) -> Result<()> {
    if fused_updates(opt) {
        model.optimizer_step_unchecked(tape, x.clone(), y, opt, 0.1)?;
    } else {
        let step = model.parameter_gradients_unchecked(tape, x.clone(), y)?;
        opt.step(&mut model.params_mut(), &step.grads, 0.1)?;
    }
    Ok(())
}

/// One epoch on the lean protocol (`--synthetic`): the synthetic training
/// set cut into full batches of `--batch`, each already a tensor on the
/// device; the clock runs over one SGD step (lr 0.1) per batch, nothing
/// else. One warm-up epoch, then the median of `--repeat` epochs, each on
/// a fresh model.
pub(super) fn lean_epoch(args: &Args, timer: Timer) -> Result<()> {
    let device = timer.device;
    let batch = args.batch()?;
    let rows = args.limit.unwrap_or(synthetic::ROWS);
    let arch = parse_arch(args.arch())?;
    let (features, classes) = (arch.input_size(), arch.classes());
    let batches = synthetic::batches(rows, features, classes, batch, device)?;
    if batches.is_empty() {
        return Err(advgrad::Error::invalid(format!(
            "advgrad bench: {rows} synthetic examples make no full batch of {batch}"
        )));
    }
    let steps = batches.len();
    // The seconds of one epoch, and the device's pool counters over it.
    let run_epoch = || -> Result<(f64, Option<serde_json::Value>)> {
        let mut model = Model::new(args.arch(), Activation::Relu, 0)?.to_device(device)?;
        let config = OptimConfig::new(OptimizerKind::Sgd, 0.1);
        let mut opt = Optimizer::new(config, &model.params())?;
        let mut tape = Tape::new();
        with_counters(device, steps, || {
            with_loop_threads(device, || {
                timer.run(1, &mut || {
                    for (x, y) in &batches {
                        lean_step(&mut model, &mut opt, &mut tape, x, y)?;
                    }
                    Ok(())
                })
            })
        })
    };
    run_epoch()?;
    let runs = (0..timer.repeat.max(1))
        .map(|_| run_epoch())
        .collect::<Result<Vec<_>>>()?;
    let times: Vec<f64> = runs.iter().map(|r| r.0).collect();
    let counters = runs.last().and_then(|r| r.1.clone());
    let seconds = super::median(times.clone());
    let flops = train_step_flops(args.arch(), batch)? * steps as f64;
    let gflops = flops / seconds / 1e9;
    report(
        args.json,
        "epoch",
        device,
        seconds,
        serde_json::json!({
            "protocol": "lean", "arch": args.arch(), "batch": batch, "steps": steps,
            "examples": steps * batch, "gflops": gflops, "all_seconds": times,
            "device_per_step": counters,
        }),
        &format!(
            "lean {} batch {batch}  {steps} steps  {gflops:.1} GFLOP/s",
            args.arch()
        ),
    );
    Ok(())
}

/// Runs `f` and returns its result with the device's buffer-pool counters
/// over it ([`advgrad::backend::cuda::DeviceStats`]) per step of `steps`,
/// as JSON: kernel outputs (fresh or reused buffers), fresh allocations,
/// uploads and blocking reads; `None` on the CPU or in a build without a
/// device backend.
fn with_counters<R>(
    device: advgrad::Device,
    steps: usize,
    f: impl FnOnce() -> Result<R>,
) -> Result<(R, Option<serde_json::Value>)> {
    #[cfg(any(feature = "cuda", feature = "emu"))]
    {
        use advgrad::backend::cuda::device_stats;
        let before = device_stats(device);
        let result = f()?;
        let counters = before.zip(device_stats(device)).map(|(before, after)| {
            let s = after.since(before);
            let per = |v: u64| v as f64 / steps.max(1) as f64;
            serde_json::json!({
                "kernel_outputs": per(s.allocations + s.reused),
                "allocations": per(s.allocations), "uploads": per(s.uploads),
                "blocking_reads": per(s.blocking_reads),
            })
        });
        Ok((result, counters))
    }
    #[cfg(not(any(feature = "cuda", feature = "emu")))]
    {
        let _ = (device, steps);
        Ok((f()?, None))
    }
}

/// FGSM or PGD (`--steps` steps of alpha eps/10) over the test set (or its
/// first `--limit` examples) in batches of 1000, on an untrained model of
/// `--arch`.
pub(super) fn attack(args: &Args, timer: Timer, name: &str) -> Result<()> {
    let device = timer.device;
    let test_set: Dataset = args.data.load(Split::Test, args.limit)?;
    let model = Model::new(args.arch(), Activation::Relu, 0)?.to_device(device)?;
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
        serde_json::json!({"examples": rows, "eps": EPS, "arch": args.arch()}),
        &format!("{} {rows} examples  eps {EPS}", args.arch()),
    );
    Ok(())
}
