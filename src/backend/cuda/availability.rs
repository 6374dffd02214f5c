//! Whether the CUDA backend's devices can be used here, why not, and an
//! honest verdict for runs that expect a GPU.
//!
//! A GPU can be absent (advgrad built without `cuda`, no driver, no device)
//! or present but broken (a context that cannot be created, a kernel module
//! the driver rejects). [`verdict`] turns that into what a test or a bundle
//! run should do: run, skip (absent, and [`REQUIRE_GPU_VAR`] unset), or
//! fail (broken, or absent where a GPU is required). A broken GPU is never
//! a skip.

use std::fmt;

use crate::error::{Error, Result};

/// Set to `1` (or any value but empty and `0`), every GPU skip becomes a
/// failure that says why: for runs where a GPU is expected.
pub const REQUIRE_GPU_VAR: &str = "ADVGRAD_REQUIRE_GPU";

/// Why `cuda:N` cannot be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unavailable {
    /// advgrad was built without the `cuda` feature.
    NotBuilt,
    /// No CUDA driver: `libcuda.so` could not be loaded.
    NoDriver(String),
    /// The driver loaded but reports no such device.
    NoDevice(String),
    /// A device is there but could not be set up: its context could not be
    /// created or a kernel module failed to load (the message names the
    /// driver version, the device and the PTX ISA).
    Broken(String),
}

impl Unavailable {
    /// Whether the GPU is simply absent here (not built in, no driver, no
    /// device), rather than present and failing.
    pub fn is_absent(&self) -> bool {
        !matches!(self, Unavailable::Broken(_))
    }
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unavailable::NotBuilt => f.write_str(
                "advgrad was built without the `cuda` feature; rebuild with \
                 `eval \"$(scripts/cuda-env.sh)\" && cargo build --release --features cuda`, \
                 or use --device cpu (or --device emu, the CUDA backend on the CPU emulator, \
                 in a build with `--features emu`)",
            ),
            Unavailable::NoDriver(m) | Unavailable::NoDevice(m) | Unavailable::Broken(m) => {
                f.write_str(m)
            }
        }
    }
}

/// Whether `cuda:ordinal` can be used: `Ok`, or why not. The first call
/// creates the device's context and loads every kernel module.
pub fn probe(ordinal: usize) -> std::result::Result<(), Unavailable> {
    #[cfg(feature = "cuda")]
    return super::driver::probe(ordinal);
    #[cfg(not(feature = "cuda"))]
    {
        let _ = ordinal;
        Err(Unavailable::NotBuilt)
    }
}

/// Whether `cuda:0` can be used.
pub fn is_available() -> bool {
    probe(0).is_ok()
}

/// `Ok` when `cuda:0` can be used, else an error that says why.
pub fn ensure_available() -> Result<()> {
    probe(0).map_err(|u| Error::Cuda(u.to_string()))
}

/// Set to `0`, the CUDA parity tests (`tests/cuda_parity.rs`) leave out the
/// emulated device and run on the GPU only: the GPU bundle sets it, since
/// CI runs every parity test on the emulator on every change.
pub const PARITY_EMU_VAR: &str = "ADVGRAD_PARITY_EMU";

/// Whether the parity tests run on the emulated device ([`PARITY_EMU_VAR`]
/// unset or not `0`).
pub fn parity_on_emulator() -> bool {
    std::env::var(PARITY_EMU_VAR).map_or(true, |v| v != "0")
}

/// Whether [`REQUIRE_GPU_VAR`] asks for a GPU.
pub fn gpu_required() -> bool {
    std::env::var(REQUIRE_GPU_VAR).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// What a run that wants `cuda:N` should do here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The GPU is usable.
    Run,
    /// The GPU is absent and not required: skip, saying why.
    Skip(String),
    /// The GPU is broken, or absent where [`REQUIRE_GPU_VAR`] requires one:
    /// fail, saying why.
    Fail(String),
}

/// The [`Verdict`] for `cuda:ordinal` (see the module docs).
pub fn verdict(ordinal: usize) -> Verdict {
    match probe(ordinal) {
        Ok(()) => Verdict::Run,
        Err(u) if u.is_absent() && !gpu_required() => Verdict::Skip(u.to_string()),
        Err(u) if u.is_absent() => Verdict::Fail(format!(
            "{REQUIRE_GPU_VAR} is set, but cuda:{ordinal} is not usable: {u}"
        )),
        Err(u) => Verdict::Fail(format!("cuda:{ordinal} is present but broken: {u}")),
    }
}

/// `Ok` when advgrad was built with the emulated device (feature `emu`).
pub fn ensure_emulator() -> Result<()> {
    #[cfg(feature = "emu")]
    return Ok(());
    #[cfg(not(feature = "emu"))]
    Err(emulator_unavailable())
}

/// The error for `--device emu` in a build without the `emu` feature.
#[cfg(not(feature = "emu"))]
pub(crate) fn emulator_unavailable() -> Error {
    Error::Cuda(
        "advgrad was built without the `emu` feature (the CUDA backend on the CPU SIMT \
         emulator); rebuild with `cargo build --release --features emu` (needs a C++ \
         compiler), or use --device cpu"
            .into(),
    )
}

/// The error for `cuda:N` in a build without the `cuda` feature.
#[cfg(not(feature = "cuda"))]
pub(crate) fn gpu_unavailable(ordinal: usize) -> Error {
    Error::Cuda(format!("cuda:{ordinal}: {}", Unavailable::NotBuilt))
}
