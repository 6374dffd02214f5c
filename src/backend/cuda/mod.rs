//! The CUDA backend: one code path, two launchers.
//!
//! The kernels are `kernels/*.cu`; their launch plans (grid, block, shared
//! memory and argument order of every launch) live beside them in the
//! `kernels` crate. `CudaStorage` is a buffer of device memory, and its
//! [`BackendStorage`](crate::backend::BackendStorage) kernels check their
//! operands, plan the launch, allocate the outputs and launch — the same
//! Rust for both launchers behind the `Launcher` trait:
//!
//! | launcher | feature | device | memory | launches |
//! |---|---|---|---|---|
//! | `Gpu` | `cuda` | `cuda:N` | the GPU's, through cudarc | the embedded PTX, asynchronous on one stream |
//! | `Emulator` | `emu` | `emu` | host allocations between guard zones | the same `.cu` compiled as C++ by `crates/simt`, on CPU threads |
//!
//! So the copy-on-write of shared buffers, the launch-time buffer checks
//! and the label bounds run, on every change, in CI (on the emulator), and a
//! GPU run adds the driver and the GPU's arithmetic, not a first execution
//! of the glue.
//!
//! Modules:
//! - `launch`: the `Launcher` trait and `launch`, which checks every
//!   buffer against the plan before the launcher runs it;
//! - `storage`: `CudaStorage` and its host transfers;
//! - `ops`: the `BackendStorage` kernels;
//! - `driver` (feature `cuda`): `Gpu`, one context, stream and set of
//!   loaded modules per GPU ordinal (each module from the cubin that fits
//!   the device, else the PTX), and the yardsticks `advgrad bench` compares
//!   with (device-to-device copy, cuBLAS SGEMM);
//! - `emulator` (feature `emu`): `Emulator`, the one emulated device;
//! - `availability`: whether `cuda:N` and `emu` can be used, and why not.
//!
//! Everything stays on the device: a loss is a one-element device buffer,
//! the gradient fed to the softmax-cross-entropy backward is one too, and
//! optimiser updates run in place. Host round trips happen only in
//! `CudaStorage::to_host` and on the error path of a label check (see
//! `CudaStorage`).

mod availability;
#[cfg(feature = "cuda")]
mod driver;
#[cfg(feature = "emu")]
mod emulator;
#[cfg(any(feature = "cuda", feature = "emu"))]
mod launch;
#[cfg(any(feature = "cuda", feature = "emu"))]
mod memory;
#[cfg(any(feature = "cuda", feature = "emu"))]
mod ops;
#[cfg(any(feature = "cuda", feature = "emu"))]
mod storage;

#[cfg(not(feature = "emu"))]
pub(crate) use availability::emulator_unavailable;
#[cfg(not(feature = "cuda"))]
pub(crate) use availability::gpu_unavailable;
pub use availability::{
    ensure_available, ensure_emulator, gpu_required, is_available, parity_on_emulator, probe,
    verdict, Unavailable, Verdict, PARITY_EMU_VAR, REQUIRE_GPU_VAR,
};
#[cfg(feature = "cuda")]
pub use driver::{
    gpu, Cublas, DeviceCopy, GemmEx, Gpu, GpuBuffer, GpuInfo, LoadedModule, Sgemm, IMAGE_VAR,
};
#[cfg(feature = "emu")]
pub use emulator::{emulator, Emulator};
#[cfg(any(feature = "cuda", feature = "emu"))]
pub use launch::{launch, Arg, DeviceBuffer, Launcher};
#[cfg(any(feature = "cuda", feature = "emu"))]
pub use memory::{DeviceMemory, DeviceStats, POOL_BYTES};
#[cfg(any(feature = "cuda", feature = "emu"))]
pub use ops::{MATMUL_ROUND_FIRST_VAR, MATMUL_SPLITS_VAR, MATMUL_TILE_VAR};
#[cfg(any(feature = "cuda", feature = "emu"))]
pub use storage::CudaStorage;

/// The memory counters of `device` ([`DeviceStats`]): allocations,
/// reuses, uploads and blocking reads since the device was first used;
/// `None` for the CPU, a device this build lacks, or a GPU not yet used.
#[cfg(any(feature = "cuda", feature = "emu"))]
pub fn device_stats(device: crate::device::Device) -> Option<DeviceStats> {
    use crate::device::Device;
    match device {
        Device::Cpu => None,
        #[cfg(feature = "emu")]
        Device::Emu => Some(emulator().memory().stats()),
        #[cfg(feature = "cuda")]
        Device::Cuda(n) => driver::used(n).map(|g| g.memory().stats()),
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

/// A buffer on a GPU, launched through the driver.
#[cfg(feature = "cuda")]
pub type GpuStorage = CudaStorage<Gpu>;

/// A buffer on the emulated device.
#[cfg(feature = "emu")]
pub type EmuStorage = CudaStorage<Emulator>;

/// The kernel images embedded at build time, PTX and cubins (only with
/// the `cuda` feature).
#[cfg(feature = "cuda")]
pub mod ptx {
    include!(concat!(env!("OUT_DIR"), "/kernels.rs"));
}
