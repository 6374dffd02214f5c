//! Stand-in for the CUDA backend when advgrad is built without the `cuda`
//! feature: the public API is the same, and asking for a GPU is a clear error.

use crate::error::{Error, Result};

/// Whether a CUDA device can be used: never, in a build without `cuda`.
pub fn is_available() -> bool {
    false
}

/// Fails with an error that says how to build advgrad with CUDA.
pub fn ensure_available() -> Result<()> {
    Err(Error::Cuda(
        "advgrad was built without the `cuda` feature; rebuild with \
         `eval \"$(scripts/cuda-env.sh)\" && cargo build --release --features cuda`, \
         or use --device cpu"
            .into(),
    ))
}

/// Launch plans of the CUDA kernels (pure Rust, compiled with or without
/// `cuda`, so they are unit-tested and drive the CPU emulation).
#[path = "cuda/plan.rs"]
pub mod plan;
