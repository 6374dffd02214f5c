//! Subcommands of the `advgrad` binary.

mod attack;
mod audit;
mod bench;
mod common;
mod demo;
mod eval;
mod gradcheck;
mod grads;
mod tape;
mod train;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use advgrad::Result;

/// advgrad: tape-based autodiff, training and adversarial attacks.
#[derive(Parser, Debug)]
#[command(name = "advgrad", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The end-to-end demo: train a standard and an adversarially trained
    /// model, attack both, print the table and write the pictures.
    Demo(demo::Args),
    /// Attack a saved model at several eps: robust accuracy, success rate,
    /// perturbation sizes; optional grid and curve pictures.
    Attack(Box<attack::Args>),
    /// Gradient-masking checks (Carlini et al.) of a saved model.
    Audit(audit::Args),
    /// Check every op's backward against finite differences in f64.
    Gradcheck(gradcheck::Args),
    /// Train a network (an MLP or a CNN) on Fashion-MNIST and save it as safetensors.
    Train(train::Args),
    /// Accuracy and loss of a saved model.
    Eval(eval::Args),
    /// Loss and gradients of a saved model on the first N test examples.
    Grads(grads::Args),
    /// Time the training step, an epoch, FGSM, PGD-20 or matmul.
    Bench(bench::Args),
    /// The tape of one forward and backward pass of a tiny model: printed
    /// with every gradient norm, and drawn as DOT and PNG.
    Tape(tape::Args),
}

/// Runs the parsed command; the exit code reports failures that are not
/// errors (a failed gradient check).
pub fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Attack(args) => attack::run(*args),
        Command::Demo(args) => demo::run(args),
        Command::Audit(args) => audit::run(args),
        Command::Gradcheck(args) => gradcheck::run(args),
        Command::Train(args) => train::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Grads(args) => grads::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Tape(args) => tape::run(args),
    }
}
