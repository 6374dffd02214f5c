//! [`Gpu`]: one CUDA context, stream and set of loaded kernels per GPU
//! ordinal, created on first use and kept for the life of the process; it
//! is the [`Launcher`](super::Launcher) of `cuda:N` (see `buffer.rs`).
//!
//! `cudarc` loads `libcuda` dynamically and *panics* when it is missing, so
//! every entry point here first asks [`driver_present`] (cudarc's
//! `is_culib_present`), and context creation additionally runs under
//! `catch_unwind`: a machine without a GPU or driver gets an
//! [`Unavailable`], never a panic.

mod buffer;

use std::collections::HashMap;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaStream, DriverError};
use cudarc::nvrtc::Ptx;

use super::availability::Unavailable;
use super::ptx::{PTX_ARCH, PTX_MODULES};
use crate::error::{Error, Result};

pub use buffer::GpuBuffer;

/// A GPU ready to run advgrad's kernels: its context, the one stream every
/// buffer and launch of this ordinal uses, and every kernel entry point.
pub struct Gpu {
    ordinal: usize,
    stream: Arc<CudaStream>,
    functions: HashMap<String, CudaFunction>,
    // Keeps the modules (and so the functions) loaded.
    _modules: Vec<Arc<CudaModule>>,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gpu")
            .field("ordinal", &self.ordinal)
            .field("kernels", &self.functions.len())
            .finish()
    }
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

/// The driver's CUDA version as `major.minor`, or `unknown`.
fn driver_version() -> String {
    let mut v = 0;
    // SAFETY: one valid out-pointer; the driver library is loaded (a
    // context was created before this is asked).
    let rc = unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut v) };
    if rc == cudarc::driver::sys::CUresult::CUDA_SUCCESS {
        format!("{}.{}", v / 1000, (v % 1000) / 10)
    } else {
        "unknown".into()
    }
}

/// The `.version` (PTX ISA) line of a PTX module.
fn ptx_isa(ptx: &str) -> &str {
    ptx.lines()
        .find_map(|l| l.trim().strip_prefix(".version "))
        .unwrap_or("unknown")
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

    /// The entry point `name` (e.g. `matmul_f32`).
    pub fn function(&self, name: &str) -> Result<&CudaFunction> {
        self.functions.get(name).ok_or_else(|| {
            Error::Cuda(format!(
                "kernel `{name}` is not in the embedded PTX (rebuild advgrad with --features cuda)"
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
                        "no GPU: the CUDA driver {} reports no device",
                        driver_version()
                    )),
                    Ok(n) if (n as usize) <= ordinal => Unavailable::NoDevice(format!(
                        "no GPU cuda:{ordinal}: the driver reports {n} device(s)"
                    )),
                    _ => Unavailable::Broken(format!(
                        "creating a context on cuda:{ordinal} (driver {}): {e}",
                        driver_version()
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
        let device = match (ctx.name(), ctx.compute_capability()) {
            (Ok(name), Ok((major, minor))) => format!("{name}, sm_{major}{minor}"),
            _ => "unknown device".into(),
        };
        let mut modules = Vec::with_capacity(PTX_MODULES.len());
        let mut functions = HashMap::new();
        for module in kernels::MODULES {
            let name = module.name;
            let ptx = PTX_MODULES
                .iter()
                .find_map(|&(n, ptx)| (n == name).then_some(ptx))
                .ok_or_else(|| {
                    Unavailable::Broken(format!("kernels/{name}.cu has no embedded PTX"))
                })?;
            let loaded = ctx.load_module(Ptx::from_src(ptx)).map_err(|e| {
                Unavailable::Broken(format!(
                    "the driver (CUDA {}) could not load kernels/{name}.cu on cuda:{ordinal} \
                     ({device}): {e}. The PTX is ISA {}, target {PTX_ARCH}; a driver older \
                     than the NVRTC that wrote it rejects it: rebuild with an older NVRTC \
                     (ADVGRAD_CUDA_WHEELS=\"==12.4.*\" scripts/cuda-env.sh) or update the driver",
                    driver_version(),
                    ptx_isa(ptx)
                ))
            })?;
            for entry in module.entry_points() {
                let f = loaded
                    .load_function(&entry)
                    .map_err(broken(format!("kernels/{name}.cu: looking up `{entry}`")))?;
                functions.insert(entry, f);
            }
            modules.push(loaded);
        }
        Ok(Gpu {
            ordinal,
            stream,
            functions,
            _modules: modules,
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
    fn every_listed_entry_point_is_in_the_ptx() {
        for module in kernels::MODULES {
            let ptx = PTX_MODULES
                .iter()
                .find_map(|&(n, ptx)| (n == module.name).then_some(ptx))
                .unwrap_or_else(|| panic!("no PTX for {}", module.name));
            for entry in module.entry_points() {
                assert!(
                    ptx.contains(&format!(".entry {entry}(")),
                    "{entry} missing from the PTX of {}",
                    module.name
                );
            }
        }
        assert!(ptx_isa(PTX_MODULES[0].1).contains('.'));
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
