//! The CUDA backend: hand-written kernels (`kernels/*.cu`) compiled to PTX
//! by `build.rs` through NVRTC and launched through `cudarc`.
//!
//! [`plan`] (grid, block, shared memory and argument order of every launch)
//! is pure Rust and compiled with or without the `cuda` feature; the CPU
//! SIMT emulator in `crates/simt` runs the same plans in tests, and
//! [`CudaStorage`] launches them on the GPU.
//!
//! Modules:
//! - [`context`]: one lazily created context, stream and set of loaded PTX
//!   modules per GPU ordinal, and the driver check that turns a missing
//!   `libcuda` into an error instead of a panic;
//! - [`storage`]: the device buffer ([`CudaStorage`]) and host transfers;
//! - [`launch`]: runs a [`plan::LaunchPlan`] with device buffers, checking
//!   every buffer against the plan first;
//! - `ops`: the [`crate::backend::BackendStorage`] kernels.
//!
//! Everything stays on the device: a loss is a one-element device buffer,
//! the gradient fed to the softmax-cross-entropy backward is one too, and
//! optimiser updates run in place. Host round trips happen only in
//! [`CudaStorage::to_cpu`] and on the error path of a label check (see
//! [`CudaStorage`]).

pub mod context;
pub mod launch;
mod ops;
pub mod plan;
pub mod storage;

pub use context::{ensure_available, is_available};
pub use storage::CudaStorage;

/// The PTX embedded at build time (only with the `cuda` feature).
pub mod ptx {
    include!(concat!(env!("OUT_DIR"), "/kernels.rs"));
}
