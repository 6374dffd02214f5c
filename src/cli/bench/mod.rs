//! `advgrad bench`: timings of the kernels and of the hot paths built on
//! them, for users comparing kernels and for the peer comparison in
//! `benches/peers/`.
//!
//! Every run first prints the machine (CPU model and threads; the GPU, its
//! driver and the kernel image it loaded). Each op is then warmed up and
//! timed over `--repeat` repeats, with the device synchronised around each
//! repeat so that a GPU's queued work counts; the reported time is the
//! median. Kernel ops ([`kernels`]) also time a yardstick on the same sizes
//! and device — a copy of the same bytes for memory-bound ops, cuBLAS for
//! matmul on a GPU — and print the ratio; the training and attack ops are in
//! [`model`].

mod kernels;
mod machine;
mod model;
mod sizes;
mod synthetic;

use std::process::ExitCode;
use std::time::Instant;

use advgrad::{Device, Result};

use super::common::{DataArgs, PrecisionArgs};

/// Options of `advgrad bench`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    precision: PrecisionArgs,
    /// What to time (`--list-ops` prints them one per line).
    #[arg(long, value_enum, required_unless_present = "list_ops")]
    op: Option<Op>,
    /// Print the ops `--op` accepts, one per line, and exit.
    #[arg(long)]
    list_ops: bool,
    /// Timed repeats (the median is reported).
    #[arg(long, default_value_t = 5)]
    repeat: usize,
    /// Sizes for the kernel ops: `N` (square: N×N·N×N for matmul, an N×N
    /// tensor for the others), `RxC` (a tensor), `MxKxN` (matmul), or `mlp`
    /// (the shapes the 784-256-256-10 MLP gives the op) [default:
    /// 1024,4096,mlp; on emu 64,mlp].
    #[arg(long, value_delimiter = ',')]
    sizes: Option<Vec<String>>,
    /// Examples used by epoch (training set), fgsm and pgd (test set)
    /// [default: all].
    #[arg(long)]
    limit: Option<usize>,
    /// Steps of `--op pgd` (its rows are named `pgd{steps}`).
    #[arg(long, default_value_t = 20)]
    steps: usize,
    /// The model of `train_step`, `epoch`, `fgsm` and `pgd`, e.g.
    /// `784-1024-1024-10` or `1x28x28-c16k5p2-mp2-c32k5p2-mp2-128-10`
    /// [default: the peer comparison's 784-256-256-10].
    #[arg(long)]
    arch: Option<String>,
    /// The batch size of `train_step` and `epoch` [default: 128].
    #[arg(long)]
    batch: Option<usize>,
    /// `epoch` on the lean protocol: synthetic data of MNIST's shape
    /// (60000×784, 10 classes, `--limit` rows), cut into full batches
    /// that are already tensors on the device before the clock starts, one
    /// gradient step per batch, no shuffle, no gather (see
    /// `benches/peers/lean.py`).
    #[arg(long)]
    synthetic: bool,
    /// Print one JSON object per result (the first describes the machine).
    #[arg(long)]
    json: bool,
}

/// What `advgrad bench` times.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
#[value(rename_all = "snake_case")]
pub enum Op {
    /// `C = A·B` in f32: GFLOP/s, beside cuBLAS on a GPU.
    Matmul,
    /// ReLU forward: GB/s beside a copy of the same bytes.
    Relu,
    /// Sigmoid forward: GB/s beside a copy of the same bytes.
    Sigmoid,
    /// Tanh forward: GB/s beside a copy of the same bytes.
    Tanh,
    /// GELU forward (tanh form, `kernels/gelu.cu` on a GPU): GB/s beside a
    /// copy of the same bytes.
    Gelu,
    /// Softmax cross-entropy forward (loss and probabilities): GB/s beside
    /// a copy of the same bytes.
    SoftmaxCrossEntropy,
    /// One SGD step of the MLP at batch 128 (with the GFLOP/s of its
    /// matrix products).
    TrainStep,
    /// One epoch of SGD training.
    Epoch,
    /// FGSM over the test set.
    Fgsm,
    /// PGD (20 steps, `--steps`) over the test set.
    Pgd,
    /// Only the machine: CPU, GPU, driver and kernel images.
    Machine,
}

impl Op {
    /// The name `--op` takes.
    fn name(self) -> String {
        clap::ValueEnum::to_possible_value(&self)
            .map(|v| v.get_name().to_string())
            .unwrap_or_default()
    }
}

/// The peer comparison's protocol: MLP 784-256-256-10 ReLU, SGD lr 0.1,
/// batch 128; attacks over the test set in batches of 1000 at eps 0.1.
const ARCH: &str = "784-256-256-10";
const BATCH: usize = 128;
const ATTACK_BATCH: usize = 1000;
const EPS: f64 = 0.1;

/// A timed repeat of a kernel op lasts at least this long: back-to-back
/// calls are added until it does.
const MIN_REPEAT_SECONDS: f64 = 0.05;
const MAX_CALLS: usize = 100_000;

/// Waits for `device` to finish its queued work (a GPU runs launches
/// asynchronously; the CPU and the emulator return when done).
fn synchronize(device: Device) -> Result<()> {
    match device {
        #[cfg(feature = "cuda")]
        Device::Cuda(n) => advgrad::backend::cuda::gpu(n)?.synchronize(),
        _ => Ok(()),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// How ops are timed on one device.
#[derive(Clone, Copy, Debug)]
struct Timer {
    device: Device,
    repeat: usize,
}

impl Timer {
    /// Seconds of one synchronised run of `calls` calls of `f`.
    fn run(&self, calls: usize, f: &mut impl FnMut() -> Result<()>) -> Result<f64> {
        synchronize(self.device)?;
        let start = Instant::now();
        for _ in 0..calls {
            f()?;
        }
        synchronize(self.device)?;
        Ok(start.elapsed().as_secs_f64())
    }

    /// The median seconds of `repeat` runs of `f`, after one warm-up run.
    fn per_repeat(&self, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
        self.run(1, &mut f)?;
        let times = (0..self.repeat.max(1))
            .map(|_| self.run(1, &mut f))
            .collect::<Result<Vec<_>>>()?;
        Ok(median(times))
    }

    /// The median seconds per call of `f`: a warm-up call, a timed call
    /// that sets how many back-to-back calls make a repeat of at least
    /// [`MIN_REPEAT_SECONDS`], then `repeat` such repeats.
    fn per_call(&self, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
        self.run(1, &mut f)?;
        let once = self.run(1, &mut f)?;
        let calls = (MIN_REPEAT_SECONDS / once.max(1e-9)).ceil() as usize;
        let calls = calls.clamp(1, MAX_CALLS);
        let times = (0..self.repeat.max(1))
            .map(|_| self.run(calls, &mut f).map(|t| t / calls as f64))
            .collect::<Result<Vec<_>>>()?;
        Ok(median(times))
    }
}

/// The process's peak resident memory in MiB (Linux `VmHWM`), if known.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// One result: a JSON object with `op`, `device`, `seconds`, `peak_rss_mib`
/// and `fields`, or a text line of `op`, `device`, the time and `text`.
fn report(
    json: bool,
    op: &str,
    device: Device,
    seconds: f64,
    fields: serde_json::Value,
    text: &str,
) {
    let peak = peak_rss_mib();
    if json {
        let mut obj = serde_json::json!({
            "op": op,
            "device": device.to_string(),
            "seconds": seconds,
            "peak_rss_mib": peak,
        });
        if let (Some(o), Some(e)) = (obj.as_object_mut(), fields.as_object()) {
            o.extend(e.clone());
        }
        println!("{obj}");
    } else {
        let peak = peak.map_or("?".into(), |p| format!("{p:.0} MiB"));
        println!(
            "{op:<21} {device:<7} {:>11.3} ms  {text}  peak RSS {peak}",
            seconds * 1e3
        );
    }
}

pub fn run(args: Args) -> Result<ExitCode> {
    args.precision.clone().run(|| run_in_precision(args))
}

fn run_in_precision(args: Args) -> Result<ExitCode> {
    if args.list_ops {
        for op in <Op as clap::ValueEnum>::value_variants() {
            println!("{}", op.name());
        }
        return Ok(ExitCode::SUCCESS);
    }
    let op = args
        .op
        .ok_or_else(|| advgrad::Error::invalid("advgrad bench: --op is required"))?;
    machine::print(&args.data.device, args.json);
    if op == Op::Machine {
        return Ok(ExitCode::SUCCESS);
    }
    let device = args.data.device()?;
    let timer = Timer {
        device,
        repeat: args.repeat,
    };
    let sizes = || sizes::parse(args.sizes.as_deref(), device, op);
    match op {
        Op::Matmul => kernels::matmul(&sizes()?, timer, args.json)?,
        Op::Relu | Op::Sigmoid | Op::Tanh | Op::Gelu | Op::SoftmaxCrossEntropy => {
            kernels::memory_bound(op, &sizes()?, timer, args.json)?
        }
        Op::TrainStep => model::train_step(&args, timer)?,
        Op::Epoch if args.synthetic => model::lean_epoch(&args, timer)?,
        Op::Epoch => model::epoch(&args, timer)?,
        Op::Fgsm => model::attack(&args, timer, "fgsm")?,
        Op::Pgd => model::attack(&args, timer, "pgd")?,
        Op::Machine => {}
    }
    Ok(ExitCode::SUCCESS)
}
