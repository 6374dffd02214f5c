//! The yardsticks for advgrad's kernels on a GPU, on the same stream and
//! sizes: the device-to-device copy (`cuMemcpyDtoD`, the bandwidth a
//! memory-bound kernel can hope for) and cuBLAS's SGEMM (what a matmul can
//! hope for). Each is set up once and then run by the caller as often as
//! its timing needs; `advgrad bench` times them like advgrad's own ops.
//!
//! cuBLAS is loaded dynamically (cudarc's `dynamic-loading`), and cudarc
//! panics when the library is missing, so [`Cublas::new`] asks first and
//! says why it cannot be used instead.

use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;

use cudarc::cublas::sys::{
    cublasComputeType_t, cublasGemmAlgo_t, cublasOperation_t, cudaDataType_t, libraryPropertyType,
};
use cudarc::cublas::{result as blas_result, CudaBlas, Gemm, GemmConfig};
use cudarc::driver::{CudaSlice, DevicePtr, DevicePtrMut};

use super::{driver_err, Gpu};
use crate::error::{Error, Result};

/// A device-to-device copy of a fixed number of bytes, between two
/// buffers allocated once.
pub struct DeviceCopy {
    gpu: Arc<Gpu>,
    src: CudaSlice<u8>,
    dst: CudaSlice<u8>,
}

impl DeviceCopy {
    /// Two buffers of `bytes` bytes on `gpu` (at least 1).
    pub fn new(gpu: &Arc<Gpu>, bytes: usize) -> Result<DeviceCopy> {
        let s = gpu.stream();
        let what = "allocating the copy benchmark's buffers";
        Ok(DeviceCopy {
            gpu: gpu.clone(),
            src: s.alloc_zeros(bytes.max(1)).map_err(driver_err(what))?,
            dst: s.alloc_zeros(bytes.max(1)).map_err(driver_err(what))?,
        })
    }

    /// Enqueues one copy (`cuMemcpyDtoDAsync`) on the GPU's stream.
    pub fn run(&mut self) -> Result<()> {
        self.gpu
            .stream()
            .memcpy_dtod(&self.src, &mut self.dst)
            .map_err(driver_err("cuMemcpyDtoD"))
    }
}

/// A cuBLAS handle bound to a GPU's stream.
pub struct Cublas {
    gpu: Arc<Gpu>,
    blas: CudaBlas,
    version: String,
}

impl std::fmt::Debug for Cublas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cublas")
            .field("version", &self.version)
            .finish()
    }
}

/// Whether libcublas can be loaded.
fn cublas_present() -> bool {
    // SAFETY: only tries to dlopen libcublas (running its initialisers, as
    // any use would) and drops the handle.
    unsafe { cudarc::cublas::sys::is_culib_present() }
}

/// `major.minor.patch` of the loaded libcublas.
fn cublas_version() -> String {
    let property = |p| {
        let mut v = 0;
        // SAFETY: one valid out-pointer; libcublas is present.
        let rc = unsafe { cudarc::cublas::sys::cublasGetProperty(p, &mut v) };
        (rc == cudarc::cublas::sys::cublasStatus_t::CUBLAS_STATUS_SUCCESS).then_some(v)
    };
    match (
        property(libraryPropertyType::MAJOR_VERSION),
        property(libraryPropertyType::MINOR_VERSION),
        property(libraryPropertyType::PATCH_LEVEL),
    ) {
        (Some(a), Some(b), Some(c)) => format!("{a}.{b}.{c}"),
        _ => "unknown".into(),
    }
}

impl Cublas {
    /// A cuBLAS handle on `gpu`'s stream, or why there is none (libcublas
    /// not found, or its initialisation failing).
    pub fn new(gpu: &Arc<Gpu>) -> std::result::Result<Cublas, String> {
        if !cublas_present() {
            let tried = cudarc::get_lib_name_candidates("cublas");
            return Err(format!(
                "libcublas not found (tried {} on the library path): put the folder holding \
                 libcublas.so.12 (a CUDA toolkit's lib64, a Python env's nvidia/cublas/lib, \
                 torch/lib) on LD_LIBRARY_PATH",
                tried
                    .iter()
                    .filter(|n| n.starts_with("libcublas.so"))
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let stream = gpu.stream().clone();
        let blas = panic::catch_unwind(AssertUnwindSafe(|| CudaBlas::new(stream)))
            .map_err(|_| "initialising cuBLAS panicked (a symbol missing from libcublas?)")?
            .map_err(|e| format!("cublasCreate failed: {e:?}"))?;
        Ok(Cublas {
            gpu: gpu.clone(),
            blas,
            version: cublas_version(),
        })
    }

    /// The loaded libcublas's version, `major.minor.patch`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// `C = A·B` for row-major `a: [m, k]` and `b: [k, n]` (copied to the
    /// GPU; no dimension 0), ready to run with `cublasSgemm`.
    pub fn sgemm(
        &self,
        a: &[f32],
        b: &[f32],
        (m, k, n): (usize, usize, usize),
    ) -> Result<Sgemm<'_>> {
        if a.len() != m * k || b.len() != k * n || m * k * n == 0 {
            return Err(Error::invalid(format!(
                "cuBLAS sgemm {m}×{k}·{k}×{n}: got {} and {} elements (none may be empty)",
                a.len(),
                b.len()
            )));
        }
        let dim = |d: usize| {
            i32::try_from(d)
                .map_err(|_| Error::invalid(format!("cuBLAS sgemm: dimension {d} exceeds i32")))
        };
        let s = self.gpu.stream();
        let what = "copying the cuBLAS benchmark's operands";
        Ok(Sgemm {
            cublas: self,
            a: s.clone_htod(a).map_err(driver_err(what))?,
            b: s.clone_htod(b).map_err(driver_err(what))?,
            c: s.alloc_zeros(m * n).map_err(driver_err(what))?,
            dims: (dim(m)?, dim(k)?, dim(n)?),
        })
    }
}

impl Cublas {
    /// `C = A·B` as [`Cublas::sgemm`], with A and B rounded to `half` (bf16
    /// or f16, to nearest even, on the host) and copied to the GPU in that
    /// type, ready to run with `cublasGemmEx`: f32 compute and an f32 C, as
    /// advgrad's tensor-core matmul.
    pub fn gemm_ex(
        &self,
        half: crate::dtype::DType,
        a: &[f32],
        b: &[f32],
        (m, k, n): (usize, usize, usize),
    ) -> Result<GemmEx<'_>> {
        let data_type = match half {
            crate::dtype::DType::BF16 => cudaDataType_t::CUDA_R_16BF,
            crate::dtype::DType::F16 => cudaDataType_t::CUDA_R_16F,
            other => {
                return Err(Error::invalid(format!(
                    "cublasGemmEx: operands in bf16 or f16, not {other}"
                )))
            }
        };
        let bits = |v: &[f32]| -> Vec<u16> {
            v.iter()
                .map(|&x| match half {
                    crate::dtype::DType::BF16 => half::bf16::from_f32(x).to_bits(),
                    _ => half::f16::from_f32(x).to_bits(),
                })
                .collect()
        };
        let (a16, b16) = (bits(a), bits(b));
        let f32s = self.sgemm(a, b, (m, k, n))?;
        let s = self.gpu.stream();
        let what = "copying the cuBLAS benchmark's operands";
        Ok(GemmEx {
            a: s.clone_htod(&a16).map_err(driver_err(what))?,
            b: s.clone_htod(&b16).map_err(driver_err(what))?,
            data_type,
            out: f32s,
        })
    }
}

/// One cuBLAS `cublasGemmEx` problem, half operands and an f32 product,
/// with its operands on the GPU.
pub struct GemmEx<'a> {
    a: CudaSlice<u16>,
    b: CudaSlice<u16>,
    data_type: cudaDataType_t,
    // The dimensions, the product's buffer and the handle.
    out: Sgemm<'a>,
}

impl GemmEx<'_> {
    /// Enqueues `C = A·B` (`cublasGemmEx`, half A and B, f32 C,
    /// `CUBLAS_COMPUTE_32F`, default algorithm) on the GPU's stream; B goes
    /// first as in [`Sgemm::run`].
    pub fn run(&mut self) -> Result<()> {
        let (m, k, n) = self.out.dims;
        let cublas = self.out.cublas;
        let stream = cublas.gpu.stream();
        let (alpha, beta) = (1.0f32, 0.0f32);
        let (a, _ra) = self.a.device_ptr(stream);
        let (b, _rb) = self.b.device_ptr(stream);
        let (c, _rc) = self.out.c.device_ptr_mut(stream);
        // SAFETY: b is k×n (column-major n×k with ld n) and a is m×k
        // (column-major k×m with ld k), both of `data_type`; c holds m·n
        // f32 (ld n); alpha and beta are f32 as CUBLAS_COMPUTE_32F needs,
        // and everything lives on the stream the handle is bound to.
        unsafe {
            blas_result::gemm_ex(
                *cublas.blas.handle(),
                cublasOperation_t::CUBLAS_OP_N,
                cublasOperation_t::CUBLAS_OP_N,
                n,
                m,
                k,
                (&alpha as *const f32).cast(),
                b as *const _,
                self.data_type,
                n,
                a as *const _,
                self.data_type,
                k,
                (&beta as *const f32).cast(),
                c as *mut _,
                cudaDataType_t::CUDA_R_32F,
                n,
                cublasComputeType_t::CUBLAS_COMPUTE_32F,
                cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .map_err(|e| Error::Cuda(format!("cublasGemmEx: {e:?}")))
    }

    /// The product, row-major `[m, n]`, once every launch has finished.
    pub fn result(&self) -> Result<Vec<f32>> {
        self.out.result()
    }
}

/// One cuBLAS SGEMM problem with its operands on the GPU.
pub struct Sgemm<'a> {
    cublas: &'a Cublas,
    a: CudaSlice<f32>,
    b: CudaSlice<f32>,
    c: CudaSlice<f32>,
    dims: (i32, i32, i32),
}

impl Sgemm<'_> {
    /// Enqueues `C = A·B` (`cublasSgemm`, FP32 math, no TF32) on the GPU's
    /// stream. Row-major `C = A·B` is column-major `Cᵀ = Bᵀ·Aᵀ`, so B goes
    /// first.
    pub fn run(&mut self) -> Result<()> {
        let (m, k, n) = self.dims;
        let cfg = GemmConfig {
            transa: cublasOperation_t::CUBLAS_OP_N,
            transb: cublasOperation_t::CUBLAS_OP_N,
            m: n,
            n: m,
            k,
            alpha: 1.0f32,
            lda: n,
            ldb: k,
            beta: 0.0f32,
            ldc: n,
        };
        // SAFETY: b is k×n (column-major n×k with ld n), a is m×k
        // (column-major k×m with ld k) and c holds m·n elements (ld n), all
        // allocated on the stream the handle is bound to.
        unsafe { self.cublas.blas.gemm(cfg, &self.b, &self.a, &mut self.c) }
            .map_err(|e| Error::Cuda(format!("cublasSgemm: {e:?}")))
    }

    /// The product, row-major `[m, n]`, once every launch has finished.
    pub fn result(&self) -> Result<Vec<f32>> {
        let s = self.cublas.gpu.stream();
        let what = "copying the cuBLAS product";
        let out = s.clone_dtoh(&self.c).map_err(driver_err(what))?;
        s.synchronize().map_err(driver_err(what))?;
        Ok(out)
    }
}
