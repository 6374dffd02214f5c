//! Chapter 5, reading the tape: a small model's tape after `backward`,
//! printed, and drawn as DOT and PNG with the gradient norm on every edge.
//!
//! ```text
//! cargo run --release --example 05_reading_the_tape [FOLDER]
//! ```
//!
//! writes `FOLDER/tape.dot` and `FOLDER/tape.png` (default folder
//! `advgrad-tape`). `advgrad tape --arch SPEC --dot FILE --png FILE` runs
//! the same code ([`record_model_pass`] and [`TapeGraph`]) for any
//! architecture. The PNG needs no Graphviz; `dot -Tsvg tape.dot` renders
//! the DOT where Graphviz is installed.
//!
//! How to read it: each box is one tape entry (op, shape, `‖∂L/∂v‖`); each
//! arrow points from an input to the op that read it and carries the norm
//! of the gradient that op's backward rule sends back along it. A node's
//! gradient is the sum of what comes back along its arrows. The arrow from
//! `input` is the gradient an attack follows (chapter 4); those from the
//! weights are what the optimiser follows (chapter 3).
//!
//! The second half reads the same numbers for a deeper network with ReLU
//! and with sigmoid: each sigmoid layer multiplies the gradient by
//! `σ'(z) ≤ 1/4`, so the gradient reaching the first layer shrinks with
//! depth, the vanishing gradient, while ReLU passes it through where a
//! unit is active.

use std::path::PathBuf;

use advgrad::nn::{Activation, Model};
use advgrad::report::tape_graph::{record_model_pass, TapeGraph};
use advgrad::{Error, Result};

/// `‖∂L/∂W‖` of each layer's weight, first layer first.
fn weight_gradient_norms(arch: &str, act: Activation) -> Result<Vec<f64>> {
    let model = Model::new(arch, act, 0)?;
    let (tape, _) = record_model_pass(&model, 16, 0)?;
    let graph = TapeGraph::of(&tape)?;
    let norms = graph
        .nodes
        .iter()
        .filter(|n| n.name.as_deref().is_some_and(|s| s.ends_with(".weight")))
        .map(|n| {
            n.grad_norm
                .ok_or_else(|| Error::invalid("a weight without a gradient"))
        })
        .collect();
    norms
}

fn main() -> Result<()> {
    let folder = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "advgrad-tape".into()),
    );
    std::fs::create_dir_all(&folder).map_err(|source| Error::Io {
        path: folder.clone(),
        source,
    })?;
    println!("Chapter 5: reading the tape\n");
    let model = Model::new("784-16-16-10", Activation::Relu, 0)?;
    let (tape, loss) = record_model_pass(&model, 4, 0)?;
    let graph = TapeGraph::of(&tape)?;
    println!("784-16-16-10 ReLU on a random batch of 4, loss {loss:.4}:\n{graph}");
    let (dot, png) = (folder.join("tape.dot"), folder.join("tape.png"));
    graph.save_dot(&dot)?;
    graph.save_png(&png, &format!("784-16-16-10 relu, batch 4: loss {loss:.4}"))?;
    println!("wrote {} and {}\n", dot.display(), png.display());

    let arch = "784-32-32-32-32-32-10";
    println!("|dL/dW| per layer of {arch}, first layer first, batch of 16:");
    for act in [Activation::Relu, Activation::Sigmoid] {
        let norms = weight_gradient_norms(arch, act)?;
        let cells: Vec<String> = norms.iter().map(|n| format!("{n:.2e}")).collect();
        let ratio = norms[0] / norms[norms.len() - 1];
        println!(
            "  {:<8} {}   first/last {ratio:.2e}",
            act.to_string(),
            cells.join("  ")
        );
    }
    Ok(())
}
