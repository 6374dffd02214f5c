//! `advgrad train`: train an MLP on Fashion-MNIST and save it.

use std::path::PathBuf;
use std::process::ExitCode;

use advgrad::data::Split;
use advgrad::nn::{save_model, Activation, Mlp};
use advgrad::optim::{OptimConfig, OptimizerKind, Schedule};
use advgrad::train::{train, AdvTraining, TrainConfig};
use advgrad::{Error, Result};

use super::common::{quiet, DataArgs};

/// Options of `advgrad train`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    data: DataArgs,
    /// Layer widths, input first.
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
    /// Adversarial training: fgsm-rs or pgd.
    #[arg(long)]
    adv: Option<String>,
    /// L∞ budget of adversarial training.
    #[arg(long, default_value_t = 0.1)]
    eps: f64,
    /// PGD steps of adversarial training.
    #[arg(long, default_value_t = 7)]
    adv_steps: usize,
    /// PGD step size of adversarial training [default: 2.5·eps/steps].
    #[arg(long)]
    adv_alpha: Option<f64>,
    /// Train on the first N training examples only.
    #[arg(long)]
    limit: Option<usize>,
    /// Where to save the model (safetensors).
    #[arg(long)]
    out: PathBuf,
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
) -> Result<Option<AdvTraining>> {
    if eps.is_nan() || eps < 0.0 {
        return Err(Error::invalid(format!("--eps must be ≥ 0, got {eps}")));
    }
    Ok(match kind {
        None => None,
        Some("fgsm-rs") => Some(AdvTraining::FgsmRs { eps }),
        Some("pgd") => Some(AdvTraining::Pgd {
            eps,
            steps: steps.max(1),
            alpha: alpha.unwrap_or(2.5 * eps / steps.max(1) as f64),
        }),
        Some(other) => {
            return Err(Error::invalid(format!(
                "unknown --adv `{other}`: expected fgsm-rs or pgd"
            )))
        }
    })
}

pub fn run(mut args: Args) -> Result<ExitCode> {
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
        )?,
        quiet: quiet(args.quiet, args.json),
    };
    let activation: Activation = args.act.parse()?;
    let device = args.data.device()?;
    let train_set = args.data.load(Split::Train, args.limit)?;
    let test_set = args.data.load(Split::Test, None)?;
    let mut model = Mlp::new(&args.arch, activation, args.seed)?.to_device(device)?;
    if !cfg.quiet {
        eprintln!(
            "training {} {} ({} parameters) on {} examples, device {device}",
            model.arch(),
            activation,
            model.num_params(),
            train_set.rows()
        );
    }
    let report = train(&mut model, &train_set, Some(&test_set), &cfg)?;
    save_model(&model, &args.out)?;
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
