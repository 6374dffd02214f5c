//! [`CudaStorage`]: a buffer of device memory of one element type, on the
//! device of one launcher.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use super::launch::{DeviceBuffer, Launcher};
use crate::backend::cpu::CpuStorage;
use crate::backend::BackendStorage;
use crate::device::Device;
use crate::dtype::DType;
use crate::error::{Error, Result};

/// A buffer in device memory: what a tensor on `cuda:N` (launcher
/// `Gpu`) or on `emu` (launcher
/// `Emulator`) holds.
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
///
/// Every transfer and allocation is counted in the launcher's
/// [`DeviceMemory`](super::DeviceMemory), and a buffer no storage uses any
/// more goes back to it for the next output of its size.
pub struct CudaStorage<L: Launcher> {
    pub(crate) buf: Arc<Pooled<L>>,
    pub(crate) len: usize,
    pub(crate) launcher: Arc<L>,
    /// For u32 buffers: every element is at most this (`None` when empty
    /// or unknown).
    pub(crate) label_bound: Option<u32>,
}

/// A device allocation that returns to its launcher's pool when dropped.
pub(crate) struct Pooled<L: Launcher> {
    // `None` only inside `drop`.
    buf: Option<L::Buffer>,
    launcher: Arc<L>,
}

impl<L: Launcher> Pooled<L> {
    fn new(buf: L::Buffer, launcher: &Arc<L>) -> Arc<Pooled<L>> {
        Arc::new(Pooled {
            buf: Some(buf),
            launcher: launcher.clone(),
        })
    }
}

impl<L: Launcher> Deref for Pooled<L> {
    type Target = L::Buffer;
    fn deref(&self) -> &L::Buffer {
        self.buf
            .as_ref()
            .unwrap_or_else(|| unreachable!("a pooled buffer is taken only when dropped"))
    }
}

impl<L: Launcher> DerefMut for Pooled<L> {
    fn deref_mut(&mut self) -> &mut L::Buffer {
        self.buf
            .as_mut()
            .unwrap_or_else(|| unreachable!("a pooled buffer is taken only when dropped"))
    }
}

impl<L: Launcher> Drop for Pooled<L> {
    fn drop(&mut self) {
        if let Some(buf) = self.buf.take() {
            self.launcher.memory().give(buf);
        }
    }
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
        launcher.memory().note_upload();
        Ok(CudaStorage {
            buf: Pooled::new(launcher.upload(host)?, &launcher),
            len: host.len(),
            launcher,
            label_bound,
        })
    }

    /// A copy of the buffer in host memory (waits for the device: a
    /// blocking read, counted).
    pub fn to_host(&self) -> Result<CpuStorage> {
        self.launcher.memory().note_read();
        self.launcher.download(&self.buf, self.len)
    }

    /// The counters of this buffer's device.
    pub fn device_stats(&self) -> super::DeviceStats {
        self.launcher.memory().stats()
    }

    /// An allocation of `len` elements on the same device, to be fully
    /// written by a kernel: a freed one of that size if the pool has one.
    pub(crate) fn output(&self, dtype: DType, len: usize) -> Result<L::Buffer> {
        let memory = self.launcher.memory();
        match memory.take(dtype, len) {
            Some(buf) => Ok(buf),
            None => {
                memory.note_allocation();
                self.launcher.alloc(dtype, len)
            }
        }
    }

    /// A scratch allocation of `len` elements on the same device (a split
    /// product's workspace, a reduction's partial sums, a stand-in
    /// argument): like an output it comes from the pool if it can, and it
    /// goes back to the pool when dropped, so a steady-state step that
    /// needs one allocates nothing.
    pub(crate) fn scratch(&self, dtype: DType, len: usize) -> Result<Pooled<L>> {
        Ok(Pooled {
            buf: Some(self.output(dtype, len)?),
            launcher: self.launcher.clone(),
        })
    }

    /// Elements `lo..hi` as a new buffer on the same device: a copy on the
    /// device, no host round trip. Labels keep their upper bound.
    pub fn range(&self, lo: usize, hi: usize) -> Result<CudaStorage<L>> {
        if lo > hi || hi > self.len {
            return Err(Error::invalid(format!(
                "elements {lo}..{hi} of a buffer of {}",
                self.len
            )));
        }
        let mut out = self.output(self.dtype_of(), hi - lo)?;
        self.launcher.copy_into(&self.buf, lo, &mut out, hi - lo)?;
        let mut piece = self.wrap(out, hi - lo);
        piece.label_bound = self.label_bound;
        Ok(piece)
    }

    /// Wraps an allocation a kernel has written.
    pub(crate) fn wrap(&self, buf: L::Buffer, len: usize) -> CudaStorage<L> {
        CudaStorage {
            buf: Pooled::new(buf, &self.launcher),
            len,
            launcher: self.launcher.clone(),
            label_bound: None,
        }
    }

    /// The allocation for an in-place update: copied first when a clone
    /// shares it.
    pub(crate) fn buf_mut(&mut self) -> Result<&mut L::Buffer> {
        if Arc::get_mut(&mut self.buf).is_none() {
            self.launcher.memory().note_allocation();
            let copy = self.launcher.duplicate(&self.buf)?;
            self.buf = Pooled::new(copy, &self.launcher);
        }
        Arc::get_mut(&mut self.buf)
            .map(|b| &mut **b)
            .ok_or_else(|| Error::Cuda("a device buffer is shared after copy-on-write".into()))
    }
}
