//! Subcommands of the `advgrad` binary.

mod gradcheck;

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
    /// Check every op's backward against finite differences in f64.
    Gradcheck(gradcheck::Args),
}

/// Runs the parsed command; the exit code reports failures that are not
/// errors (a failed gradient check).
pub fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Gradcheck(args) => gradcheck::run(args),
    }
}
