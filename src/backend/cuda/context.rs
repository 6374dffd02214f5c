//! One CUDA context, stream and set of loaded kernels per GPU ordinal,
//! created on first use and kept for the life of the process.
//!
//! `cudarc` loads `libcuda` dynamically and *panics* when it is missing, so
//! every entry point here first asks [`driver_present`] (cudarc's
//! `is_culib_present`), and context creation additionally runs under
//! `catch_unwind`: a machine without a GPU or driver gets an
//! [`Error::Cuda`], never a panic.

use std::collections::HashMap;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaStream, DriverError};
use cudarc::nvrtc::Ptx;

use super::ptx::{PTX_ARCH, PTX_MODULES};
use crate::error::{Error, Result};

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

    /// Creates the context and stream of `ordinal` and loads every module.
    fn create(ordinal: usize) -> Result<Gpu> {
        if !driver_present() {
            return Err(Error::Cuda(
                "no CUDA driver: libcuda.so could not be loaded (is an NVIDIA driver \
                 installed and on LD_LIBRARY_PATH?); use --device cpu"
                    .into(),
            ));
        }
        let ctx = panic::catch_unwind(AssertUnwindSafe(|| CudaContext::new(ordinal)))
            .map_err(|_| Error::Cuda(format!("creating a context on cuda:{ordinal} panicked")))?
            .map_err(|e| match CudaContext::device_count() {
                Ok(n) if (n as usize) <= ordinal => Error::Cuda(format!(
                    "no GPU cuda:{ordinal}: the driver reports {n} device(s)"
                )),
                _ => Error::Cuda(format!("creating a context on cuda:{ordinal}: {e}")),
            })?;
        // SAFETY: every buffer and launch of this context uses the one stream
        // created below, so stream order alone synchronises all uses; the
        // per-buffer events cudarc would otherwise record are not needed.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx
            .new_stream()
            .map_err(driver_err("creating a CUDA stream"))?;
        let mut modules = Vec::with_capacity(PTX_MODULES.len());
        let mut functions = HashMap::new();
        for &(name, src) in PTX_MODULES {
            let module = ctx.load_module(Ptx::from_src(src)).map_err(|e| {
                Error::Cuda(format!(
                    "loading the PTX of kernels/{name}.cu ({PTX_ARCH}) on cuda:{ordinal}: {e}. \
                     PTX from NVRTC 12.9 is ISA 8.8, which drivers older than CUDA 12.9 \
                     reject: rebuild with an older NVRTC (ADVGRAD_CUDA_WHEELS=\"==12.4.*\" \
                     scripts/cuda-env.sh) or update the driver"
                ))
            })?;
            for entry in entries(src) {
                let f = module
                    .load_function(entry)
                    .map_err(driver_err("looking up a kernel"))?;
                functions.insert(entry.to_string(), f);
            }
            modules.push(module);
        }
        Ok(Gpu {
            ordinal,
            stream,
            functions,
            _modules: modules,
        })
    }
}

/// The names of the `.entry` points of a PTX module.
fn entries(ptx: &str) -> impl Iterator<Item = &str> {
    ptx.lines().filter_map(|l| {
        let rest = l.trim_start().strip_prefix(".visible .entry ")?;
        let end = rest.find(|c: char| c == '(' || c.is_whitespace())?;
        Some(&rest[..end])
    })
}

type Registry = Mutex<HashMap<usize, Arc<Gpu>>>;

fn registry() -> &'static Registry {
    static GPUS: OnceLock<Registry> = OnceLock::new();
    GPUS.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The GPU with `ordinal`, created on first use. A failed creation is not
/// cached: the next call tries again.
pub fn gpu(ordinal: usize) -> Result<Arc<Gpu>> {
    let mut map = registry()
        .lock()
        .map_err(|_| Error::Cuda("the CUDA context registry is poisoned".into()))?;
    if let Some(g) = map.get(&ordinal) {
        return Ok(g.clone());
    }
    let g = Arc::new(Gpu::create(ordinal)?);
    map.insert(ordinal, g.clone());
    Ok(g)
}

/// Whether `cuda:0` can be used: the driver loads, a GPU is present, and the
/// embedded PTX loads on it.
pub fn is_available() -> bool {
    ensure_available().is_ok()
}

/// `Ok` when `cuda:0` can be used, else an error that says why.
pub fn ensure_available() -> Result<()> {
    gpu(0).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_entry_points() {
        let ptx = "//\n.visible .entry add_f32(\n\t.param .u64 a\n)\n\
                   .visible .entry sub_f64 (\n.func helper(\n";
        assert_eq!(entries(ptx).collect::<Vec<_>>(), ["add_f32", "sub_f64"]);
    }

    #[test]
    fn every_planned_kernel_is_in_the_ptx() {
        let all: Vec<&str> = PTX_MODULES.iter().flat_map(|(_, p)| entries(p)).collect();
        for base in super::super::plan::KERNELS {
            for s in ["f32", "f64"] {
                let k = format!("{base}_{s}");
                assert!(all.contains(&k.as_str()), "{k} missing from the PTX");
            }
        }
    }

    #[test]
    fn no_gpu_is_an_error_not_a_panic() {
        if !driver_present() {
            assert!(!is_available());
            let e = ensure_available().unwrap_err();
            assert!(e.to_string().contains("libcuda"), "{e}");
        }
    }
}
