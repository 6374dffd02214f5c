//! [`CudaStorage`]: a device buffer of one element type on one GPU.

use std::fmt;
use std::sync::Arc;

use cudarc::driver::{CudaSlice, DeviceRepr};

use super::context::{driver_err, gpu, Gpu};
use super::plan::Elem;
use crate::backend::cpu::CpuStorage;
use crate::device::Device;
use crate::dtype::DType;
use crate::error::{Error, Result};

/// The device allocation behind a [`CudaStorage`], by element type.
///
/// Allocations hold at least one element (the driver rejects empty ones);
/// the logical length lives in [`CudaStorage`].
#[derive(Debug)]
pub enum Buffer {
    /// f32 elements.
    F32(CudaSlice<f32>),
    /// f64 elements.
    F64(CudaSlice<f64>),
    /// u32 elements (labels, class indices).
    U32(CudaSlice<u32>),
}

impl Buffer {
    /// The kernel element type.
    pub fn elem(&self) -> Elem {
        match self {
            Buffer::F32(_) => Elem::F32,
            Buffer::F64(_) => Elem::F64,
            Buffer::U32(_) => Elem::U32,
        }
    }

    /// Allocated elements (at least the logical length, at least 1).
    pub fn capacity(&self) -> usize {
        match self {
            Buffer::F32(s) => s.len(),
            Buffer::F64(s) => s.len(),
            Buffer::U32(s) => s.len(),
        }
    }

    /// An allocation of `len` (at least 1) elements whose contents are
    /// unspecified: only for buffers a kernel overwrites before anything
    /// reads them (plan outputs with `Access::Write`, reduction partials).
    pub(crate) fn uninit(gpu: &Gpu, elem: Elem, len: usize) -> Result<Buffer> {
        let s = gpu.stream();
        let n = len.max(1);
        let what = "allocating device memory";
        // SAFETY: the memory is uninitialised, but plain f32/f64/u32 have no
        // invalid bit patterns and, by this function's contract, a kernel
        // writes every element the buffer is ever read at before any read.
        unsafe {
            Ok(match elem {
                Elem::F32 => Buffer::F32(s.alloc::<f32>(n).map_err(driver_err(what))?),
                Elem::F64 => Buffer::F64(s.alloc::<f64>(n).map_err(driver_err(what))?),
                Elem::U32 => Buffer::U32(s.alloc::<u32>(n).map_err(driver_err(what))?),
            })
        }
    }

    /// A device copy of this allocation (stream-ordered).
    fn try_clone(&self) -> Result<Buffer> {
        let what = "copying a device buffer";
        Ok(match self {
            Buffer::F32(s) => Buffer::F32(s.try_clone().map_err(driver_err(what))?),
            Buffer::F64(s) => Buffer::F64(s.try_clone().map_err(driver_err(what))?),
            Buffer::U32(s) => Buffer::U32(s.try_clone().map_err(driver_err(what))?),
        })
    }
}

/// A buffer in the memory of one GPU: what a tensor on `Device::Cuda(n)`
/// holds.
///
/// Cloning is cheap (the allocation is shared); an in-place update
/// ([`axpy`](crate::backend::BackendStorage::axpy),
/// [`update`](crate::backend::BackendStorage::update)) of a shared buffer
/// first copies it on the device, so clones behave as independent values,
/// like [`CpuStorage`].
///
/// Labels (u32 buffers) carry an upper bound of their values, known without
/// reading the device: the maximum computed on upload from the host, or
/// `cols − 1` for the output of `argmax_rows`. The softmax-cross-entropy
/// kernels check it against the number of classes before they launch, so an
/// out-of-range label is the same [`Error::LabelOutOfRange`] as on the CPU
/// (the labels are read back only on that error path, to name the row),
/// and valid labels cost no host round trip.
#[derive(Clone)]
pub struct CudaStorage {
    pub(crate) buf: Arc<Buffer>,
    pub(crate) len: usize,
    pub(crate) gpu: Arc<Gpu>,
    /// For u32 buffers: every element is at most this (`None` when empty
    /// or unknown).
    pub(crate) label_bound: Option<u32>,
}

impl fmt::Debug for CudaStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CudaStorage")
            .field("device", &self.device())
            .field("dtype", &self.dtype_of())
            .field("len", &self.len)
            .finish()
    }
}

fn upload<T: DeviceRepr>(gpu: &Gpu, host: &[T]) -> Result<CudaSlice<T>> {
    let s = gpu.stream();
    let what = "copying to the GPU";
    // SAFETY: the allocation is overwritten by the copy below (its first
    // `host.len()` elements); a padding element of an empty buffer is never
    // read (every kernel stays within the logical length).
    let mut dst = unsafe { s.alloc::<T>(host.len().max(1)) }.map_err(driver_err(what))?;
    if !host.is_empty() {
        s.memcpy_htod(host, &mut dst).map_err(driver_err(what))?;
    }
    Ok(dst)
}

fn download<T: DeviceRepr + Default + Clone>(
    gpu: &Gpu,
    src: &CudaSlice<T>,
    len: usize,
) -> Result<Vec<T>> {
    let mut out = vec![T::default(); len];
    if len > 0 {
        let s = gpu.stream();
        let what = "copying from the GPU";
        s.memcpy_dtoh(&src.slice(..len), &mut out)
            .map_err(driver_err(what))?;
        s.synchronize().map_err(driver_err(what))?;
    }
    Ok(out)
}

impl CudaStorage {
    /// The device the buffer lives on.
    pub fn device(&self) -> Device {
        Device::Cuda(self.gpu.ordinal())
    }

    pub(crate) fn dtype_of(&self) -> DType {
        match &*self.buf {
            Buffer::F32(_) => DType::F32,
            Buffer::F64(_) => DType::F64,
            Buffer::U32(_) => DType::U32,
        }
    }

    /// Copies a host buffer to GPU `ordinal` (creating its context on first
    /// use).
    pub fn from_cpu(cpu: &CpuStorage, ordinal: usize) -> Result<CudaStorage> {
        let gpu = gpu(ordinal)?;
        let (buf, label_bound) = match cpu {
            CpuStorage::F32(v) => (Buffer::F32(upload(&gpu, v)?), None),
            CpuStorage::F64(v) => (Buffer::F64(upload(&gpu, v)?), None),
            CpuStorage::U32(v) => (Buffer::U32(upload(&gpu, v)?), v.iter().copied().max()),
        };
        Ok(CudaStorage {
            buf: Arc::new(buf),
            len: cpu_len(cpu),
            gpu,
            label_bound,
        })
    }

    /// A copy of the buffer in host memory (waits for the GPU).
    pub fn to_host(&self) -> Result<CpuStorage> {
        Ok(match &*self.buf {
            Buffer::F32(s) => CpuStorage::F32(download(&self.gpu, s, self.len)?),
            Buffer::F64(s) => CpuStorage::F64(download(&self.gpu, s, self.len)?),
            Buffer::U32(s) => CpuStorage::U32(download(&self.gpu, s, self.len)?),
        })
    }

    /// A new buffer of `len` elements on the same GPU, to be fully written
    /// by a kernel.
    pub(crate) fn output(&self, elem: Elem, len: usize) -> Result<Buffer> {
        Buffer::uninit(&self.gpu, elem, len)
    }

    /// Wraps a buffer a kernel has written.
    pub(crate) fn wrap(&self, buf: Buffer, len: usize) -> CudaStorage {
        CudaStorage {
            buf: Arc::new(buf),
            len,
            gpu: self.gpu.clone(),
            label_bound: None,
        }
    }

    /// The allocation for an in-place update: copied first when a clone
    /// shares it.
    pub(crate) fn buf_mut(&mut self) -> Result<&mut Buffer> {
        if Arc::get_mut(&mut self.buf).is_none() {
            self.buf = Arc::new(self.buf.try_clone()?);
        }
        Arc::get_mut(&mut self.buf)
            .ok_or_else(|| Error::Cuda("a device buffer is shared after copy-on-write".into()))
    }
}

fn cpu_len(cpu: &CpuStorage) -> usize {
    match cpu {
        CpuStorage::F32(v) => v.len(),
        CpuStorage::F64(v) => v.len(),
        CpuStorage::U32(v) => v.len(),
    }
}
