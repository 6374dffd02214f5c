//! The `advgrad` command line.
//!
//! Exit codes: 0 on success, 1 for a runtime error (one `error:` line on
//! stderr, naming the file or option at fault), 2 for a usage error (from
//! clap), 130 when training stops on Ctrl-C after saving a checkpoint. A
//! panic (101) on any input is a bug.

mod cli;

use std::process::ExitCode;

use advgrad::Error;
use clap::Parser;

/// mimalloc keeps freed large blocks for reuse, so the per-op buffers of a
/// training or attack step do not go back to the kernel (and fault in again,
/// zeroed) on every step, as they do with glibc's allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match advgrad::backend::cpu::on_worker(|| cli::run(args)) {
        Ok(code) => code,
        // Stopped by Ctrl-C or SIGTERM after saving a checkpoint: the
        // shell's convention for SIGINT, 128 + 2.
        Err(e @ Error::Interrupted(_)) => {
            eprintln!("{e}; to continue, run the same command with --resume and that file");
            ExitCode::from(130)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
