//! [`Gpu`]: one CUDA context, stream and set of loaded kernels per GPU
//! ordinal, created on first use and kept for the life of the process; it
//! is the [`Launcher`](super::Launcher) of `cuda:N` (see `buffer.rs`).
//!
//! - `image`: which embedded image (cubin or PTX) a device of a given
//!   compute capability runs — a pure function, unit-tested;
//! - `load`: loading each module from the first image the driver accepts;
//! - `buffer`: [`GpuBuffer`] and the launcher;
//! - `baseline`: the device-to-device copy and cuBLAS SGEMM that
//!   `advgrad bench` compares advgrad's kernels with.
//!
//! `cudarc` loads `libcuda` dynamically and *panics* when it is missing, so
//! every entry point here first asks [`driver_present`] (cudarc's
//! `is_culib_present`), and context creation additionally runs under
//! `catch_unwind`: a machine without a GPU or driver gets an
//! [`Unavailable`], never a panic. A device the driver reports but whose
//! kernels it cannot load is [`Unavailable::Broken`], with a message naming
//! the driver, the device, every image tried and the PTX ISA.

mod baseline;
mod buffer;
mod image;
mod load;

use std::collections::HashMap;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaStream, DriverError};
use serde::Serialize;

use super::availability::Unavailable;
use super::memory::DeviceMemory;
use crate::error::{Error, Result};
use image::Arch;

pub use baseline::{Cublas, DeviceCopy, GemmEx, Sgemm};
pub use buffer::GpuBuffer;
pub use image::IMAGE_VAR;
pub use load::LoadedModule;

/// A GPU ready to run advgrad's kernels: its context, the one stream every
/// buffer and launch of this ordinal uses, and every kernel entry point.
pub struct Gpu {
    ordinal: usize,
    stream: Arc<CudaStream>,
    functions: HashMap<String, CudaFunction>,
    info: GpuInfo,
    memory: DeviceMemory<GpuBuffer>,
    // Keeps the modules (and so the functions) loaded.
    _modules: Vec<Arc<CudaModule>>,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gpu")
            .field("ordinal", &self.ordinal)
            .field("name", &self.info.name)
            .field("kernels", &self.functions.len())
            .finish()
    }
}

/// What a GPU is and which kernel images it runs: for messages, benchmark
/// records and the GPU bundle's report.
#[derive(Clone, Debug, Serialize)]
pub struct GpuInfo {
    /// The device ordinal (`N` of `cuda:N`).
    pub ordinal: usize,
    /// The device's name, e.g. `NVIDIA H100 80GB HBM3`.
    pub name: String,
    /// Its compute capability, e.g. `9.0`.
    pub compute_capability: String,
    /// Its memory in bytes.
    pub memory_bytes: usize,
    /// The CUDA version the driver supports, e.g. `12.4`.
    pub driver_cuda: String,
    /// The kernel driver's version (`/proc/driver/nvidia/version`), e.g.
    /// `550.54.15`, if readable.
    pub driver_version: Option<String>,
    /// Which image of each kernel module was loaded.
    pub modules: Vec<LoadedModule>,
}

/// A driver error as an advgrad error naming what was being done.
pub(crate) fn driver_err(what: &str) -> impl Fn(DriverError) -> Error + '_ {
    move |e| Error::Cuda(format!("{what}: {e}"))
}

/// Whether the CUDA driver library (`libcuda.so`) can be loaded.
pub fn driver_present() -> bool {
    // SAFETY: `is_culib_present` only tries to dlopen libcuda (running its
    // initialisers, as any use of the driver would) and drops the handle.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// The CUDA version the driver supports, as `(major, minor)`.
fn driver_cuda() -> Option<(u32, u32)> {
    let mut v = 0;
    // SAFETY: one valid out-pointer; only called once libcuda loaded (a
    // context was created, or its creation failed with a driver error).
    let rc = unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut v) };
    (rc == cudarc::driver::sys::CUresult::CUDA_SUCCESS && v > 0)
        .then_some((v as u32 / 1000, (v as u32 % 1000) / 10))
}

/// The kernel module's version from `/proc/driver/nvidia/version`.
fn kernel_driver_version() -> Option<String> {
    let text = std::fs::read_to_string("/proc/driver/nvidia/version").ok()?;
    module_version(text.lines().find(|l| l.starts_with("NVRM version"))?)
}

/// The version in an `NVRM version` line: its first word made of digits
/// and dots with at least one dot, wherever the line puts it
/// (`... Kernel Module  550.54.15  ...`, `... Open Kernel Module for
/// x86_64  580.159.04  ...`).
fn module_version(line: &str) -> Option<String> {
    line.split_whitespace()
        .find(|w| w.contains('.') && w.chars().all(|c| c.is_ascii_digit() || c == '.'))
        .map(str::to_string)
}

/// The driver's versions for messages: `550.54.15, CUDA 12.4`.
fn driver_description() -> String {
    let cuda = driver_cuda().map_or("CUDA version unknown".into(), |(a, b)| {
        format!("CUDA {a}.{b}")
    });
    match kernel_driver_version() {
        Some(v) => format!("driver {v}, {cuda}"),
        None => format!("driver {cuda}"),
    }
}

impl Gpu {
    /// The device ordinal.
    pub fn ordinal(&self) -> usize {
        self.ordinal
    }

    /// The stream every buffer and launch on this GPU uses.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// What the GPU is and which kernel images it loaded.
    pub fn info(&self) -> &GpuInfo {
        &self.info
    }

    /// Waits until every launch and copy issued on this GPU has finished.
    pub fn synchronize(&self) -> Result<()> {
        self.stream
            .synchronize()
            .map_err(driver_err("waiting for the GPU"))
    }

    /// The entry point `name` (e.g. `matmul_f32`).
    pub fn function(&self, name: &str) -> Result<&CudaFunction> {
        self.functions.get(name).ok_or_else(|| {
            Error::Cuda(format!(
                "kernel `{name}` is not in the embedded kernel images (rebuild advgrad with --features cuda)"
            ))
        })
    }

    /// Creates the context and stream of `ordinal` and loads every module
    /// with every entry point the `kernels` crate lists.
    fn create(ordinal: usize) -> std::result::Result<Gpu, Unavailable> {
        if !driver_present() {
            return Err(Unavailable::NoDriver(
                "no CUDA driver: libcuda.so could not be loaded (is an NVIDIA driver \
                 installed and on LD_LIBRARY_PATH?); use --device cpu or --device emu"
                    .into(),
            ));
        }
        let ctx = panic::catch_unwind(AssertUnwindSafe(|| CudaContext::new(ordinal)))
            .map_err(|_| {
                Unavailable::Broken(format!("creating a context on cuda:{ordinal} panicked"))
            })?
            .map_err(|e| {
                let no_device = cudarc::driver::sys::CUresult::CUDA_ERROR_NO_DEVICE;
                match CudaContext::device_count() {
                    _ if e.0 == no_device => Unavailable::NoDevice(format!(
                        "no GPU: the CUDA driver ({}) reports no device",
                        driver_description()
                    )),
                    Ok(n) if (n as usize) <= ordinal => Unavailable::NoDevice(format!(
                        "no GPU cuda:{ordinal}: the driver reports {n} device(s)"
                    )),
                    _ => Unavailable::Broken(format!(
                        "creating a context on cuda:{ordinal} ({}): {e}",
                        driver_description()
                    )),
                }
            })?;
        let broken =
            |what: String| move |e: DriverError| Unavailable::Broken(format!("{what}: {e}"));
        // SAFETY: every buffer and launch of this context uses the one stream
        // created below, so stream order alone synchronises all uses; the
        // per-buffer events cudarc would otherwise record are not needed.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx
            .new_stream()
            .map_err(broken(format!("creating a stream on cuda:{ordinal}")))?;
        let name = ctx
            .name()
            .map_err(broken(format!("asking cuda:{ordinal} its name")))?;
        let (major, minor) = ctx.compute_capability().map_err(broken(format!(
            "asking cuda:{ordinal} its compute capability"
        )))?;
        let capability = Arch::new(major.max(0) as u32, minor.max(0) as u32);
        let device = format!("{name}, compute capability {capability}");
        let driver = driver_description();
        let target = load::Target {
            ordinal,
            device: &device,
            capability,
            driver: &driver,
            driver_cuda: driver_cuda(),
        };
        let loaded = load::load_modules(&ctx, &target)?;
        let info = GpuInfo {
            ordinal,
            name,
            compute_capability: capability.to_string(),
            memory_bytes: ctx.total_mem().unwrap_or(0),
            driver_cuda: driver_cuda().map_or("unknown".into(), |(a, b)| format!("{a}.{b}")),
            driver_version: kernel_driver_version(),
            modules: loaded.report,
        };
        Ok(Gpu {
            ordinal,
            stream,
            functions: loaded.functions,
            info,
            memory: DeviceMemory::default(),
            _modules: loaded.modules,
        })
    }
}

type Registry = Mutex<HashMap<usize, Arc<Gpu>>>;

fn registry() -> &'static Registry {
    static GPUS: OnceLock<Registry> = OnceLock::new();
    GPUS.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The GPU with `ordinal`, created on first use, or why it cannot be used.
/// A failed creation is not cached: the next call tries again.
fn get(ordinal: usize) -> std::result::Result<Arc<Gpu>, Unavailable> {
    let mut map = registry().lock().unwrap_or_else(|p| p.into_inner());
    if let Some(g) = map.get(&ordinal) {
        return Ok(g.clone());
    }
    let g = Arc::new(Gpu::create(ordinal)?);
    map.insert(ordinal, g.clone());
    Ok(g)
}

/// The GPU with `ordinal` if it has been created (never creates one).
pub(crate) fn used(ordinal: usize) -> Option<Arc<Gpu>> {
    let map = registry().lock().unwrap_or_else(|p| p.into_inner());
    map.get(&ordinal).cloned()
}

/// The GPU with `ordinal`, created on first use.
pub fn gpu(ordinal: usize) -> Result<Arc<Gpu>> {
    get(ordinal).map_err(|u| Error::Cuda(u.to_string()))
}

/// Whether `cuda:ordinal` can be used, or why not.
pub(crate) fn probe(ordinal: usize) -> std::result::Result<(), Unavailable> {
    get(ordinal).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_module_version_is_read_from_either_nvrm_line() {
        let proprietary = "NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.15  \
                           Tue Mar  5 22:23:56 UTC 2024";
        assert_eq!(module_version(proprietary).as_deref(), Some("550.54.15"));
        let open = "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.159.04  \
                    Release Build  (dvs-builder@U22-I3-AF03-09-1)  Sun Aug 10 2025";
        assert_eq!(module_version(open).as_deref(), Some("580.159.04"));
        assert_eq!(module_version("NVRM version: unknown"), None);
    }

    #[test]
    fn no_gpu_is_an_error_not_a_panic() {
        if !driver_present() {
            let e = probe(0).unwrap_err();
            assert!(matches!(e, Unavailable::NoDriver(_)), "{e:?}");
            assert!(e.to_string().contains("libcuda"), "{e}");
        }
    }
}
