//! `advgrad grads`: the loss and every gradient of a saved model on the first
//! N test examples, saved for comparison with another framework (the
//! input gradient `[N, C, H, W]` for an image model).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use advgrad::data::Split;
use advgrad::nn::{save_tensors, Input};
use advgrad::train::batch_tensors;
use advgrad::{Error, Result, Tape, Tensor};

use super::common::{DataArgs, ModelArgs, PrecisionArgs};

/// Options of `advgrad grads`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    precision: PrecisionArgs,
    /// Number of test examples (the first N in file order).
    #[arg(long, default_value_t = 128)]
    limit: usize,
    /// Where to save the gradients (safetensors).
    #[arg(long)]
    out: PathBuf,
}

pub fn run(args: Args) -> Result<ExitCode> {
    args.precision.clone().run(|| run_in_precision(args))
}

fn run_in_precision(args: Args) -> Result<ExitCode> {
    let model = args.model.load(args.data.device()?)?;
    let data = args.data.load(Split::Test, Some(args.limit))?;
    let idx: Vec<usize> = (0..data.rows()).collect();
    let (x, y) = batch_tensors(
        &data,
        &idx,
        model.device(),
        &mut Vec::new(),
        &mut Vec::new(),
    )?;
    // An image model's input gradient keeps the image's shape.
    let x = match model.input {
        Input::Image {
            channels,
            height,
            width,
        } => x.reshape([data.rows(), channels, height, width])?,
        Input::Features(_) => x,
    };
    let mut tape = Tape::new();
    let xv = tape.var(x);
    let fwd = model.forward(&mut tape, xv, true)?;
    let loss = tape.softmax_cross_entropy(fwd.logits, &y)?;
    tape.backward(loss)?;
    let missing = || Error::Tape("a leaf received no gradient".into());
    let mut tensors: Vec<(String, Tensor)> = Vec::new();
    for (name, var) in model.param_names().into_iter().zip(&fwd.params) {
        tensors.push((name, tape.grad(*var).ok_or_else(missing)?.clone()));
    }
    tensors.push(("input".into(), tape.grad(xv).ok_or_else(missing)?.clone()));
    let value = tape.value(loss)?.to_scalar()?;
    let metadata = HashMap::from([
        ("loss".to_string(), format!("{value:.9}")),
        ("n".to_string(), data.rows().to_string()),
        (
            "precision".to_string(),
            args.precision.precision.to_string(),
        ),
        ("arch".to_string(), model.arch()),
        (
            "activation".to_string(),
            model.activation.name().to_string(),
        ),
    ]);
    save_tensors(&args.out, &tensors, metadata)?;
    println!(
        "loss {value:.9} over {} examples; gradients saved to {}",
        data.rows(),
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}
