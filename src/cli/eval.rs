//! `advgrad eval`: accuracy and loss of a saved model.

use std::process::ExitCode;

use advgrad::data::Split;
use advgrad::train::evaluate;
use advgrad::{Error, Result};

use super::common::{DataArgs, ModelArgs, PrecisionArgs};

/// Options of `advgrad eval`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    precision: PrecisionArgs,
    /// test or train.
    #[arg(long, default_value = "test")]
    split: String,
    /// Evaluate the first N examples in file order.
    #[arg(long)]
    limit: Option<usize>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<ExitCode> {
    args.precision.clone().run(|| run_in_precision(args))
}

fn run_in_precision(mut args: Args) -> Result<ExitCode> {
    args.data.quiet = args.json;
    let model = args.model.load(args.data.device()?)?;
    let split: Split = args.split.parse()?;
    let data = args.data.load(split, args.limit)?;
    // A non-finite loss is the model's doing: name its file.
    let stats = evaluate(&model, &data, 1000).map_err(|e| match e {
        Error::NonFinite { .. } => Error::file(&args.model.model, e.to_string()),
        other => other,
    })?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&stats).expect("plain numbers serialise")
        );
    } else {
        println!(
            "{} {}: accuracy {:.2}%, loss {:.4} on {} {} examples",
            model.arch(),
            model.activation,
            100.0 * stats.accuracy,
            stats.loss,
            stats.n,
            split
        );
    }
    Ok(ExitCode::SUCCESS)
}
