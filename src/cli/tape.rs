//! `advgrad tape`: the tape of one forward and backward pass of a tiny
//! seeded model, printed, and drawn as DOT and PNG.

use std::path::PathBuf;
use std::process::ExitCode;

use advgrad::nn::{parse_arch, Activation, LayerSpec, Model};
use advgrad::report::tape_graph::{record_model_pass, TapeGraph};
use advgrad::Result;

/// The widest layer and the most layers `advgrad tape` draws.
const MAX_WIDTH: usize = 4096;
const MAX_LAYERS: usize = 12;

/// Options of `advgrad tape`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The model: layer widths joined by '-', input first, classes last.
    #[arg(long, value_name = "SPEC", default_value = "784-32-32-10", value_parser = parse_spec)]
    arch: String,
    /// The activation between layers: relu, sigmoid or tanh.
    #[arg(long, default_value = "relu", value_parser = parse_activation)]
    act: Activation,
    /// Examples in the random batch.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=1024))]
    batch: u64,
    /// Seed of the weights, the batch and its labels.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Write the graph as Graphviz DOT to this file.
    #[arg(long, value_name = "FILE")]
    dot: Option<PathBuf>,
    /// Draw the graph as a PNG to this file (no Graphviz needed).
    #[arg(long, value_name = "FILE")]
    png: Option<PathBuf>,
}

/// An architecture small enough to draw: the spec's own checks, at most
/// [`MAX_LAYERS`] layers of at most [`MAX_WIDTH`] units.
fn parse_spec(spec: &str) -> std::result::Result<String, String> {
    let arch = parse_arch(spec).map_err(|e| e.to_string())?;
    let widest_layer = arch.layers.iter().map(|layer| match *layer {
        LayerSpec::Linear(n) => n,
        LayerSpec::Conv2d { out, .. } => out,
        LayerSpec::MaxPool2d(_) | LayerSpec::AvgPool2d(_) => 0,
    });
    let widest = widest_layer.chain([arch.input.size()]).max().unwrap_or(0);
    if arch.layers.len() > MAX_LAYERS || widest > MAX_WIDTH {
        return Err(format!(
            "`{spec}` is too big to draw: at most {MAX_LAYERS} layers of at most {MAX_WIDTH} units"
        ));
    }
    Ok(spec.to_string())
}

fn parse_activation(s: &str) -> std::result::Result<Activation, String> {
    s.parse::<Activation>().map_err(|e| e.to_string())
}

pub fn run(args: Args) -> Result<ExitCode> {
    let model = Model::new(&args.arch, args.act, args.seed)?;
    let batch = usize::try_from(args.batch).unwrap_or(usize::MAX);
    let (tape, loss) = record_model_pass(&model, batch, args.seed)?;
    let graph = TapeGraph::of(&tape)?;
    let title = format!(
        "{} {}, batch {batch}, seed {}: loss {loss:.4}",
        args.arch, args.act, args.seed
    );
    println!("tape of {title}\n{graph}");
    if let Some(path) = &args.dot {
        graph.save_dot(path)?;
        println!("wrote {}", path.display());
    }
    if let Some(path) = &args.png {
        graph.save_png(path, &title)?;
        println!("wrote {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}
