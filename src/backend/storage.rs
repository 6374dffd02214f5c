//! [`Storage`], the device-tagged buffer a tensor holds, and the recycling of
//! the shared cells tensors keep it in.
//!
//! A tensor holds its storage in an `Arc` cell. When the last tensor holding
//! a cell is dropped, the cell comes back here ([`recycle`]) with its host
//! buffer handed to [`pool`], and the next tensor takes the empty cell
//! ([`cell`]) instead of allocating a new one. In steady state a training
//! step then makes no heap allocation at all (`tests/alloc_free.rs`).

use std::borrow::Cow;
use std::mem;
use std::sync::{Arc, Mutex, MutexGuard};

use super::cpu::CpuStorage;
use super::{cuda, pool, BackendStorage};
use crate::device::Device;
use crate::error::Result;

/// A buffer on some device: what a tensor holds.
#[derive(Clone, Debug)]
pub enum Storage {
    /// Host memory.
    Cpu(CpuStorage),
    /// GPU memory, through the CUDA driver.
    #[cfg(feature = "cuda")]
    Cuda(cuda::GpuStorage),
    /// The emulated device's memory: the CUDA backend on the SIMT emulator.
    #[cfg(feature = "emu")]
    Emu(cuda::EmuStorage),
}

impl Storage {
    /// An empty host buffer (no allocation).
    pub(crate) fn empty() -> Storage {
        Storage::Cpu(CpuStorage::F32(Vec::new()))
    }

    /// The device the buffer lives on.
    pub fn device(&self) -> Device {
        match self {
            Storage::Cpu(_) => Device::Cpu,
            #[cfg(feature = "cuda")]
            Storage::Cuda(s) => s.device(),
            #[cfg(feature = "emu")]
            Storage::Emu(s) => s.device(),
        }
    }

    /// The buffer in host memory: borrowed when it is there already, else a
    /// copy (which waits for the device).
    pub fn on_host(&self) -> Result<Cow<'_, CpuStorage>> {
        match self {
            Storage::Cpu(host) => Ok(Cow::Borrowed(host)),
            #[cfg(feature = "cuda")]
            Storage::Cuda(s) => s.to_host().map(Cow::Owned),
            #[cfg(feature = "emu")]
            Storage::Emu(s) => s.to_host().map(Cow::Owned),
        }
    }

    /// A copy of elements `lo..hi` on the same device (on a device, copied
    /// there: nothing crosses to the host).
    pub fn range(&self, lo: usize, hi: usize) -> Result<Storage> {
        match self {
            Storage::Cpu(host) => {
                if lo > hi || hi > host.len() {
                    return Err(crate::error::Error::invalid(format!(
                        "elements {lo}..{hi} of a buffer of {}",
                        host.len()
                    )));
                }
                Ok(Storage::Cpu(match host {
                    CpuStorage::F32(v) => CpuStorage::F32(v[lo..hi].to_vec()),
                    CpuStorage::F64(v) => CpuStorage::F64(v[lo..hi].to_vec()),
                    CpuStorage::U32(v) => CpuStorage::U32(v[lo..hi].to_vec()),
                    CpuStorage::F16(v) => CpuStorage::F16(v[lo..hi].to_vec()),
                    CpuStorage::BF16(v) => CpuStorage::BF16(v[lo..hi].to_vec()),
                }))
            }
            #[cfg(feature = "cuda")]
            Storage::Cuda(s) => s.range(lo, hi).map(Storage::Cuda),
            #[cfg(feature = "emu")]
            Storage::Emu(s) => s.range(lo, hi).map(Storage::Emu),
        }
    }

    /// Moves (copies) the buffer to `device`.
    pub fn to_device(&self, device: Device) -> Result<Storage> {
        let host = self.on_host()?;
        match device {
            Device::Cpu => Ok(Storage::Cpu(host.into_owned())),
            Device::Cuda(ordinal) => {
                #[cfg(feature = "cuda")]
                return Ok(Storage::Cuda(cuda::GpuStorage::upload(
                    &host,
                    cuda::gpu(ordinal)?,
                )?));
                #[cfg(not(feature = "cuda"))]
                return Err(cuda::gpu_unavailable(ordinal));
            }
            Device::Emu => {
                #[cfg(feature = "emu")]
                return Ok(Storage::Emu(cuda::EmuStorage::upload(
                    &host,
                    cuda::emulator(),
                )?));
                #[cfg(not(feature = "emu"))]
                return Err(cuda::emulator_unavailable());
            }
        }
    }
}

/// Cells tensors give back, at most.
const MAX_CELLS: usize = 256;

static CELLS: Mutex<Vec<Arc<Storage>>> = Mutex::new(Vec::new());

fn cells() -> MutexGuard<'static, Vec<Arc<Storage>>> {
    // A panic while the lock was held cannot leave the list inconsistent
    // (every mutation is a single push or pop), so a poisoned lock is still
    // usable.
    CELLS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A cell holding `storage`: a recycled one when free, a new `Arc`
/// otherwise.
pub(crate) fn cell(storage: Storage) -> Arc<Storage> {
    let recycled = cells().pop();
    match recycled {
        Some(mut cell) => match Arc::get_mut(&mut cell) {
            Some(slot) => {
                *slot = storage;
                cell
            }
            None => Arc::new(storage),
        },
        None => Arc::new(storage),
    }
}

/// Takes back a cell whose tensor is being dropped: if no other tensor
/// shares it, its host buffer goes to [`pool`] (a device buffer, once no
/// storage holds it, to its device's pool: `cuda::DeviceMemory`) and the
/// empty cell is kept for [`cell`].
pub(crate) fn recycle(mut cell: Arc<Storage>) {
    let Some(slot) = Arc::get_mut(&mut cell) else {
        return;
    };
    match mem::replace(slot, Storage::empty()) {
        Storage::Cpu(CpuStorage::F32(v)) => pool::give(v),
        Storage::Cpu(CpuStorage::F64(v)) => pool::give(v),
        Storage::Cpu(CpuStorage::U32(v)) => pool::give(v),
        Storage::Cpu(CpuStorage::BF16(v)) => pool::give(v),
        Storage::Cpu(CpuStorage::F16(v)) => pool::give(v),
        #[allow(unreachable_patterns)]
        _ => {}
    }
    let mut cells = cells();
    if cells.len() < MAX_CELLS {
        cells.push(cell);
    }
}
