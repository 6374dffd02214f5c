//! [`CudaStorage`]: a buffer of device memory of one element type, on the
//! device of one launcher.

use std::fmt;
use std::sync::Arc;

use super::launch::{DeviceBuffer, Launcher};
use crate::backend::cpu::CpuStorage;
use crate::backend::BackendStorage;
use crate::device::Device;
use crate::dtype::DType;
use crate::error::{Error, Result};

/// A buffer in device memory: what a tensor on `cuda:N` (launcher
/// [`Gpu`](super::Gpu)) or on `emu` (launcher
/// [`Emulator`](super::Emulator)) holds.
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
pub struct CudaStorage<L: Launcher> {
    pub(crate) buf: Arc<L::Buffer>,
    pub(crate) len: usize,
    pub(crate) launcher: Arc<L>,
    /// For u32 buffers: every element is at most this (`None` when empty
    /// or unknown).
    pub(crate) label_bound: Option<u32>,
}

impl<L: Launcher> Clone for CudaStorage<L> {
    fn clone(&self) -> Self {
        CudaStorage {
            buf: self.buf.clone(),
            len: self.len,
            launcher: self.launcher.clone(),
            label_bound: self.label_bound,
        }
    }
}

impl<L: Launcher> fmt::Debug for CudaStorage<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CudaStorage")
            .field("device", &self.device())
            .field("dtype", &self.dtype_of())
            .field("len", &self.len)
            .finish()
    }
}

impl<L: Launcher> CudaStorage<L> {
    /// The device the buffer lives on.
    pub fn device(&self) -> Device {
        self.launcher.device()
    }

    pub(crate) fn dtype_of(&self) -> DType {
        self.buf.dtype()
    }

    /// Copies a host buffer to the device of `launcher`.
    pub fn upload(host: &CpuStorage, launcher: Arc<L>) -> Result<CudaStorage<L>> {
        let label_bound = match host {
            CpuStorage::U32(v) => v.iter().copied().max(),
            _ => None,
        };
        Ok(CudaStorage {
            buf: Arc::new(launcher.upload(host)?),
            len: host.len(),
            launcher,
            label_bound,
        })
    }

    /// A copy of the buffer in host memory (waits for the device).
    pub fn to_host(&self) -> Result<CpuStorage> {
        self.launcher.download(&self.buf, self.len)
    }

    /// A new allocation of `len` elements on the same device, to be fully
    /// written by a kernel.
    pub(crate) fn output(&self, dtype: DType, len: usize) -> Result<L::Buffer> {
        self.launcher.alloc(dtype, len)
    }

    /// Wraps an allocation a kernel has written.
    pub(crate) fn wrap(&self, buf: L::Buffer, len: usize) -> CudaStorage<L> {
        CudaStorage {
            buf: Arc::new(buf),
            len,
            launcher: self.launcher.clone(),
            label_bound: None,
        }
    }

    /// The allocation for an in-place update: copied first when a clone
    /// shares it.
    pub(crate) fn buf_mut(&mut self) -> Result<&mut L::Buffer> {
        if Arc::get_mut(&mut self.buf).is_none() {
            self.buf = Arc::new(self.launcher.duplicate(&self.buf)?);
        }
        Arc::get_mut(&mut self.buf)
            .ok_or_else(|| Error::Cuda("a device buffer is shared after copy-on-write".into()))
    }
}
