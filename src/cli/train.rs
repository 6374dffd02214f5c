//! `advgrad train`: train a network (MLP or CNN) on Fashion-MNIST and save it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use advgrad::checkpoint;
use advgrad::data::Split;
use advgrad::nn::{save_model_as, Activation, Model};
use advgrad::optim::{OptimConfig, OptimizerKind, Schedule};
use advgrad::train::{train_with, AdvTraining, Checkpointing, SaveEvery, TrainConfig};
use advgrad::{DType, Error, Result};

use super::common::{quiet, DataArgs, PrecisionArgs};

/// Options of `advgrad train`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    precision: PrecisionArgs,
    /// The type the saved model's parameters are stored in: f32, f16 or
    /// bf16 (half the size; rounded to nearest even, loaded back as f32).
    #[arg(long, default_value = "f32", value_parser = parse_save_dtype)]
    save_dtype: DType,
    /// The architecture: layer widths, input first (784-256-256-10), or
    /// an image input and its layers, such as
    /// 1x28x28-c16k5p2-mp2-c32k5p2-mp2-128-10 (cOkK[sS][pP] a convolution,
    /// mpK/apK max-/average-pooling, a number a linear layer).
    #[arg(long, default_value = "784-256-256-10")]
    arch: String,
    /// Activation between layers: relu, sigmoid or tanh.
    #[arg(long, default_value = "relu")]
    act: String,
    /// Passes over the training set.
    #[arg(long, default_value_t = 5)]
    epochs: usize,
    /// Mini-batch size.
    #[arg(long, default_value_t = 128)]
    batch: usize,
    /// Learning rate.
    #[arg(long, default_value_t = 0.1)]
    lr: f64,
    /// sgd, momentum or adam.
    #[arg(long, default_value = "sgd")]
    optim: String,
    /// Momentum μ (with --optim momentum).
    #[arg(long, default_value_t = 0.9)]
    momentum: f64,
    /// Nesterov momentum (with --optim momentum).
    #[arg(long)]
    nesterov: bool,
    /// L2 weight decay.
    #[arg(long, default_value_t = 0.0)]
    weight_decay: f64,
    /// Learning-rate schedule: constant, cosine or step:EVERY:GAMMA.
    #[arg(long, default_value = "constant")]
    schedule: String,
    /// Seed of the initialisation, shuffles and adversarial random starts.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Adversarial training: fgsm-rs, pgd, trades or mart.
    #[arg(long)]
    adv: Option<String>,
    /// The weight β of the KL term of TRADES and MART.
    #[arg(long, default_value_t = 6.0)]
    beta: f64,
    /// L∞ budget of adversarial training.
    #[arg(long, default_value_t = 0.1)]
    eps: f64,
    /// Steps of the inner maximisation of pgd, trades and mart.
    #[arg(long, default_value_t = 7)]
    adv_steps: usize,
    /// Their step size [default: 2.5·eps/steps].
    #[arg(long)]
    adv_alpha: Option<f64>,
    /// Train on the first N training examples only.
    #[arg(long)]
    limit: Option<usize>,
    /// Where to save the model (safetensors); an existing file is replaced
    /// only once the new one is complete.
    #[arg(long)]
    out: PathBuf,
    /// Save a checkpoint (model, optimiser state, position, random state,
    /// data order) to this file after each epoch, or every
    /// --checkpoint-every steps. Without it, Ctrl-C still saves one, to
    /// OUT with `.ckpt` before its extension.
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Save the checkpoint every N steps instead of after each epoch.
    #[arg(long, requires = "checkpoint", value_parser = clap::value_parser!(u64).range(1..))]
    checkpoint_every: Option<u64>,
    /// Continue the run saved in this checkpoint; the other options must be
    /// those the run was started with. The result is the same, bit for bit,
    /// as a run never interrupted (CPU backend).
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Print a JSON summary as the last line of stdout.
    #[arg(long)]
    json: bool,
    /// No progress bar or per-epoch lines.
    #[arg(long)]
    quiet: bool,
}

/// Parses the adversarial-training options.
pub fn adv_training(
    kind: Option<&str>,
    eps: f64,
    steps: usize,
    alpha: Option<f64>,
    beta: f64,
) -> Result<Option<AdvTraining>> {
    if eps.is_nan() || eps < 0.0 {
        return Err(Error::invalid(format!("--eps must be ≥ 0, got {eps}")));
    }
    if !(beta.is_finite() && beta >= 0.0) {
        return Err(Error::invalid(format!("--beta must be ≥ 0, got {beta}")));
    }
    let alpha = alpha.unwrap_or(2.5 * eps / steps.max(1) as f64);
    Ok(match kind {
        None => None,
        Some("fgsm-rs") => Some(AdvTraining::FgsmRs { eps }),
        Some("pgd") => Some(AdvTraining::Pgd {
            eps,
            steps: steps.max(1),
            alpha,
        }),
        Some("trades") => Some(AdvTraining::Trades {
            eps,
            steps: steps.max(1),
            alpha,
            beta,
        }),
        Some("mart") => Some(AdvTraining::Mart {
            eps,
            steps: steps.max(1),
            alpha,
            beta,
        }),
        Some(other) => {
            return Err(Error::invalid(format!(
                "unknown --adv `{other}`: expected fgsm-rs, pgd, trades or mart"
            )))
        }
    })
}

/// `--save-dtype`: f32, f16 or bf16.
fn parse_save_dtype(s: &str) -> std::result::Result<DType, String> {
    match s.to_ascii_lowercase().as_str() {
        "f32" => Ok(DType::F32),
        "f16" => Ok(DType::F16),
        "bf16" => Ok(DType::BF16),
        _ => Err(format!("unknown dtype `{s}`: expected f32, f16 or bf16")),
    }
}

pub fn run(args: Args) -> Result<ExitCode> {
    args.precision.clone().run(|| run_in_precision(args))
}

fn run_in_precision(mut args: Args) -> Result<ExitCode> {
    args.data.quiet = quiet(args.quiet, args.json);
    let kind: OptimizerKind = args.optim.parse()?;
    let mut optim = OptimConfig::new(kind, args.lr);
    optim.momentum = args.momentum;
    optim.nesterov = args.nesterov;
    optim.weight_decay = args.weight_decay;
    let cfg = TrainConfig {
        epochs: args.epochs,
        batch_size: args.batch,
        optim,
        schedule: args.schedule.parse::<Schedule>()?,
        seed: args.seed,
        adversarial: adv_training(
            args.adv.as_deref(),
            args.eps,
            args.adv_steps,
            args.adv_alpha,
            args.beta,
        )?,
        quiet: quiet(args.quiet, args.json),
    };
    let activation: Activation = args.act.parse()?;
    let device = args.data.device()?;
    let train_set = args.data.load(Split::Train, args.limit)?;
    let test_set = args.data.load(Split::Test, None)?;
    let mut model = Model::new(&args.arch, activation, args.seed)?.to_device(device)?;
    if !cfg.quiet {
        eprintln!(
            "training {} {} ({} parameters) on {} examples, device {device}, {} products",
            model.arch(),
            activation,
            model.num_params(),
            train_set.rows(),
            args.precision.precision
        );
    }
    let resume = args.resume.as_deref().map(checkpoint::load).transpose()?;
    let ckpt = Checkpointing {
        path: Some(
            args.checkpoint
                .clone()
                .unwrap_or_else(|| interrupt_checkpoint_path(&args.out)),
        ),
        every: match (&args.checkpoint, args.checkpoint_every) {
            (None, _) => SaveEvery::Never,
            (Some(_), None) => SaveEvery::Epoch,
            (Some(_), Some(n)) => SaveEvery::Steps(usize::try_from(n).unwrap_or(usize::MAX)),
        },
        resume,
        stop: Some(stop_on_ctrl_c()?),
    };
    if let Some(path) = &args.resume {
        if !cfg.quiet {
            eprintln!("resuming from {}", path.display());
        }
    }
    let report = train_with(&mut model, &train_set, Some(&test_set), &cfg, ckpt)?;
    save_model_as(&model, &args.out, args.save_dtype)?;
    let last = report.epochs.last().expect("at least one epoch");
    let test_accuracy = last.test_accuracy.unwrap_or(f64::NAN);
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "epochs": cfg.epochs,
                "train_loss": last.train_loss,
                "test_accuracy": test_accuracy,
                "seconds": report.seconds,
                "examples_per_second": report.examples_per_second,
            })
        );
    } else {
        println!(
            "test accuracy {:.2}% after {} epochs; {:.2} s in training steps ({:.2} s per epoch, {:.0} examples/s); saved {}",
            100.0 * test_accuracy,
            cfg.epochs,
            report.seconds,
            report.seconds / cfg.epochs as f64,
            report.examples_per_second,
            args.out.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Where Ctrl-C saves a checkpoint when no --checkpoint was given:
/// `model.safetensors` → `model.ckpt.safetensors`.
fn interrupt_checkpoint_path(out: &Path) -> PathBuf {
    let stem = out
        .file_stem()
        .map_or_else(|| "model".to_string(), |s| s.to_string_lossy().into_owned());
    out.with_file_name(format!("{stem}.ckpt.safetensors"))
}

/// A flag that Ctrl-C (SIGINT) or SIGTERM sets, so training stops after the
/// current step and saves a checkpoint; a second Ctrl-C quits at once.
fn stop_on_ctrl_c() -> Result<&'static AtomicBool> {
    static STOP: AtomicBool = AtomicBool::new(false);
    ctrlc::set_handler(|| {
        if STOP.swap(true, Ordering::SeqCst) {
            eprintln!("\nstopped without saving");
            std::process::exit(130);
        }
        eprintln!("\nstopping after this step to save a checkpoint (Ctrl-C again to quit at once)");
    })
    .map_err(|e| Error::invalid(format!("cannot install the Ctrl-C handler: {e}")))?;
    Ok(&STOP)
}
