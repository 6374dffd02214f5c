//! `advgrad bench`: timings of the hot paths, for users comparing kernels
//! and for the peer comparison in `benches/peers/`.
//!
//! Each op is warmed up, then timed over repeats; the reported time is the
//! median repeat.

use std::process::ExitCode;
use std::time::Instant;

use advgrad::attack::{Attack, AttackOptions};
use advgrad::data::{Dataset, Split};
use advgrad::nn::{Activation, Mlp};
use advgrad::optim::{OptimConfig, Optimizer, OptimizerKind, Schedule};
use advgrad::train::{batch_tensors, train, TrainConfig};
use advgrad::{DType, Device, Error, Result, Tape, Tensor};

use super::common::DataArgs;

/// Options of `advgrad bench`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    data: DataArgs,
    /// train_step, epoch, fgsm, pgd or matmul.
    #[arg(long)]
    op: String,
    /// Timed repeats (the median is reported).
    #[arg(long, default_value_t = 5)]
    repeat: usize,
    /// Matrix sizes for `--op matmul` (square n×n·n×n).
    #[arg(long, value_delimiter = ',', default_value = "128,512,1024")]
    sizes: Vec<usize>,
    /// Print one JSON object per result.
    #[arg(long)]
    json: bool,
}

/// The protocol of the peer comparison: MLP 784-256-256-10 ReLU, SGD lr 0.1,
/// batch 128; attacks over the 10k test set in batches of 1000 at eps 0.1.
const ARCH: &str = "784-256-256-10";
const BATCH: usize = 128;
const ATTACK_BATCH: usize = 1000;
const EPS: f64 = 0.1;

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

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn time_repeats(repeat: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    let mut times = Vec::with_capacity(repeat);
    for _ in 0..repeat.max(1) {
        let start = Instant::now();
        f()?;
        times.push(start.elapsed().as_secs_f64());
    }
    Ok(median(times))
}

/// The process's peak resident memory in MiB (Linux `VmHWM`), if known.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn report(json: bool, op: &str, device: Device, seconds: f64, extra: serde_json::Value) {
    let peak = peak_rss_mib();
    if json {
        let mut obj = serde_json::json!({
            "op": op,
            "device": device.to_string(),
            "seconds": seconds,
            "peak_rss_mib": peak,
        });
        if let (Some(o), Some(e)) = (obj.as_object_mut(), extra.as_object()) {
            o.extend(e.clone());
        }
        println!("{obj}");
    } else {
        let peak = peak.map_or("?".into(), |p| format!("{p:.0} MiB"));
        println!(
            "{op:<12} {device}  {:>10.3} ms  peak RSS {peak}  {extra}",
            seconds * 1e3
        );
    }
}

fn bench_train_step(args: &Args, device: Device) -> Result<()> {
    let data = args.data.load(Split::Train, Some(BATCH))?;
    let idx: Vec<usize> = (0..BATCH).collect();
    let (x, y) = batch_tensors(&data, &idx, device, &mut Vec::new(), &mut Vec::new())?;
    let mut model = Mlp::new(ARCH, Activation::Relu, 0)?.to_device(device)?;
    let mut opt = Optimizer::new(OptimConfig::new(OptimizerKind::Sgd, 0.1), &model.params())?;
    let mut tape = Tape::new();
    let steps = 20;
    let seconds = time_repeats(args.repeat, || {
        for _ in 0..steps {
            let step = model.parameter_gradients(&mut tape, x.clone(), &y)?;
            opt.step(&mut model.params_mut(), &step.grads, 0.1)?;
        }
        Ok(())
    })? / steps as f64;
    let flops = train_step_flops();
    report(
        args.json,
        "train_step",
        device,
        seconds,
        serde_json::json!({"mflop": flops / 1e6, "gflops": flops / seconds / 1e9}),
    );
    Ok(())
}

fn bench_epoch(args: &Args, device: Device) -> Result<()> {
    let train_set = args.data.load(Split::Train, None)?;
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
    for _ in 0..args.repeat.max(1) {
        let mut model = Mlp::new(ARCH, Activation::Relu, 0)?.to_device(device)?;
        times.push(train(&mut model, &train_set, None, &cfg)?.seconds);
    }
    let seconds = median(times);
    report(
        args.json,
        "epoch",
        device,
        seconds,
        serde_json::json!({"examples_per_second": train_set.rows() as f64 / seconds}),
    );
    Ok(())
}

fn bench_attack(args: &Args, device: Device, name: &str) -> Result<()> {
    let test_set: Dataset = args.data.load(Split::Test, None)?;
    let model = Mlp::new(ARCH, Activation::Relu, 0)?.to_device(device)?;
    let options = AttackOptions {
        steps: (name == "pgd").then_some(20),
        alpha: (name == "pgd").then_some(EPS / 10.0),
        ..AttackOptions::default()
    };
    let attack = Attack::build(name, EPS, &options)?;
    let order: Vec<usize> = (0..test_set.rows()).collect();
    let batches: Vec<(Tensor, Tensor)> = order
        .chunks(ATTACK_BATCH)
        .map(|idx| batch_tensors(&test_set, idx, device, &mut Vec::new(), &mut Vec::new()))
        .collect::<Result<_>>()?;
    let seconds = time_repeats(args.repeat, || {
        for (x, y) in &batches {
            attack.run(&model, x, y, 0)?;
        }
        Ok(())
    })?;
    let op = if name == "pgd" { "pgd20" } else { name };
    report(
        args.json,
        op,
        device,
        seconds,
        serde_json::json!({"examples": test_set.rows(), "eps": EPS}),
    );
    Ok(())
}

fn bench_matmul(args: &Args, device: Device) -> Result<()> {
    for &n in &args.sizes {
        let a = Tensor::rand_uniform([n, n], -1.0, 1.0, 1, DType::F32).to_device(device)?;
        let b = Tensor::rand_uniform([n, n], -1.0, 1.0, 2, DType::F32).to_device(device)?;
        let reps = (2e9 / (2.0 * (n as f64).powi(3))).clamp(1.0, 1000.0) as usize;
        let seconds = time_repeats(args.repeat, || {
            let mut c = a.matmul(&b)?;
            for _ in 1..reps {
                c = a.matmul(&b)?;
            }
            // Reading one number waits for a GPU to finish.
            c.sum()?.to_scalar().map(drop)
        })? / reps as f64;
        let gflops = 2.0 * (n as f64).powi(3) / seconds / 1e9;
        report(
            args.json,
            "matmul",
            device,
            seconds,
            serde_json::json!({"n": n, "gflops": gflops}),
        );
    }
    Ok(())
}

pub fn run(args: Args) -> Result<ExitCode> {
    let device = args.data.device()?;
    match args.op.as_str() {
        "train_step" => bench_train_step(&args, device)?,
        "epoch" => bench_epoch(&args, device)?,
        "fgsm" | "pgd" => bench_attack(&args, device, &args.op.clone())?,
        "matmul" => bench_matmul(&args, device)?,
        other => {
            return Err(Error::invalid(format!(
                "unknown bench op `{other}`: expected train_step, epoch, fgsm, pgd or matmul"
            )))
        }
    }
    Ok(ExitCode::SUCCESS)
}
