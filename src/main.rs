//! The `advgrad` command line.

mod cli;

use std::process::ExitCode;

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
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
